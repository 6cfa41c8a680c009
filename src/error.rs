//! The errors the proxy answers itself, as one enum whose `Display` is the RESP error
//! line a client receives (without the leading `-` and the CRLF).
//!
//! [`ProxyError`] names every such answer: no master known, a failover under way, a
//! failed replica read with nowhere to retry it, and each way a backend can fail
//! (unreachable, no connection within the connect timeout, TLS or handshake failure,
//! handshake refused, no answer within the command timeout, connection lost, closed by
//! the proxy, reconnecting). A [`BackendError`](crate::backend::BackendError) carries
//! one, so callers can match on what happened instead of parsing a message, and the
//! node (`master 127.0.0.1:6379`) and what happened to it are kept apart
//! ([`ProxyError::detail`]).

use crate::backend::ErrorKind;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

/// `ERR redsplit: no master is known`: a write (or `WAIT`, a transaction, a blocking
/// command) while no master is known.
pub const NO_MASTER: &str = "ERR redsplit: no master is known";

/// `ERR redsplit: no master is known (a failover is under way)`: as [`NO_MASTER`],
/// while Sentinel promotes a replica and the write hold (`hold_writes_ms`) is over.
pub const FAILOVER_UNDER_WAY: &str = "ERR redsplit: no master is known (a failover is under way)";

/// `ERR redsplit: the replica failed and no master is known`: a replica read failed and
/// there is neither a master nor another healthy replica to retry it on.
pub const REPLICA_FAILED_NO_MASTER: &str =
    "ERR redsplit: the replica failed and no master is known";

/// `ERR redsplit: the master failed and no master answered within command_timeout_ms`:
/// a read on the master whose connection failed, retried until `command_timeout_ms`
/// after it was sent without a master to answer it.
pub const MASTER_FAILED: &str =
    "ERR redsplit: the master failed and no master answered within command_timeout_ms";

/// An error the proxy answers itself. `Display` is the RESP error line, e.g.
/// `ERR redsplit: no master is known`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// No master is known.
    #[error("ERR redsplit: no master is known")]
    NoMaster,
    /// No master is known because Sentinel is promoting a replica.
    #[error("ERR redsplit: no master is known (a failover is under way)")]
    FailoverUnderWay,
    /// A replica read failed and nothing can take its retry.
    #[error("ERR redsplit: the replica failed and no master is known")]
    ReplicaFailedNoMaster,
    /// The backend could not be reached (refused, no route, reset while connecting).
    #[error("ERR redsplit: {node} unreachable: {detail}")]
    Unreachable {
        /// `master 127.0.0.1:6379`.
        node: Arc<str>,
        /// The system's reason, e.g. `Connection refused (os error 111)`.
        detail: Arc<str>,
    },
    /// No connection and handshake within `connect_timeout_ms`.
    #[error("ERR redsplit: {node} unreachable: no connection within {ms} ms")]
    ConnectTimeout {
        /// `master 127.0.0.1:6379`.
        node: Arc<str>,
        /// The connect timeout.
        ms: u64,
    },
    /// Connected, but the setup failed: TLS misconfigured or its handshake failed, the
    /// handshake broke off, or the pool had no position for the connection.
    #[error("ERR redsplit: {node} {detail}")]
    ConnectFailed {
        /// `master 127.0.0.1:6379`.
        node: Arc<str>,
        /// E.g. `TLS handshake failed: …`.
        detail: Arc<str>,
    },
    /// The backend answered the handshake (`HELLO`/`AUTH`/`SELECT`/…) with an error.
    #[error("ERR redsplit: {node} refused the handshake: {reply}")]
    HandshakeRefused {
        /// `master 127.0.0.1:6379`.
        node: Arc<str>,
        /// The backend's error line, e.g. `WRONGPASS invalid username-password pair`.
        reply: Arc<str>,
    },
    /// A request went unanswered for the command (or poll) timeout.
    #[error("ERR redsplit: {node} did not answer within {ms} ms")]
    Timeout {
        /// `master 127.0.0.1:6379`.
        node: Arc<str>,
        /// The timeout.
        ms: u64,
    },
    /// The connection broke: closed by the backend, reset, or bad data.
    #[error("ERR redsplit: {node} {detail}")]
    Lost {
        /// `master 127.0.0.1:6379`.
        node: Arc<str>,
        /// E.g. `closed the connection`, `sent a bad reply: …`.
        detail: Arc<str>,
    },
    /// The proxy closed the connection (topology change, shutdown).
    #[error("ERR redsplit: {node} {reason}")]
    Closed {
        /// `master 127.0.0.1:6379`.
        node: Arc<str>,
        /// E.g. `was removed from the topology`.
        reason: Arc<str>,
    },
    /// The backend's connection failed and the pool waits before the next attempt.
    #[error("ERR redsplit: {node} is reconnecting")]
    Reconnecting {
        /// `master 127.0.0.1:6379`.
        node: Arc<str>,
    },
}

impl ProxyError {
    /// [`ProxyError::NoMaster`], or [`ProxyError::FailoverUnderWay`] while `switching`
    /// (Sentinel promoting a replica in a planned failover).
    pub fn no_master(switching: bool) -> ProxyError {
        if switching {
            ProxyError::FailoverUnderWay
        } else {
            ProxyError::NoMaster
        }
    }

    /// The error line; borrowed (no allocation) for the errors without a node.
    pub fn line(&self) -> Cow<'static, str> {
        match self {
            ProxyError::NoMaster => Cow::Borrowed(NO_MASTER),
            ProxyError::FailoverUnderWay => Cow::Borrowed(FAILOVER_UNDER_WAY),
            ProxyError::ReplicaFailedNoMaster => Cow::Borrowed(REPLICA_FAILED_NO_MASTER),
            other => Cow::Owned(other.to_string()),
        }
    }

    /// The node the error is about (`master 127.0.0.1:6379`), for a backend failure.
    pub fn node(&self) -> Option<&str> {
        match self {
            ProxyError::NoMaster
            | ProxyError::FailoverUnderWay
            | ProxyError::ReplicaFailedNoMaster => None,
            ProxyError::Unreachable { node, .. }
            | ProxyError::ConnectTimeout { node, .. }
            | ProxyError::ConnectFailed { node, .. }
            | ProxyError::HandshakeRefused { node, .. }
            | ProxyError::Timeout { node, .. }
            | ProxyError::Lost { node, .. }
            | ProxyError::Closed { node, .. }
            | ProxyError::Reconnecting { node } => Some(node),
        }
    }

    /// What happened, without `ERR redsplit:` and the node: `unreachable: Connection
    /// refused`, `did not answer within 500 ms`. For logs that name the node themselves.
    pub fn detail(&self) -> String {
        let line = self.to_string();
        let rest = line.strip_prefix("ERR redsplit: ").unwrap_or(&line);
        match self.node() {
            Some(node) => rest
                .strip_prefix(node)
                .map_or(rest, str::trim_start)
                .to_string(),
            None => rest.to_string(),
        }
    }

    /// How a backend request failed, for a backend failure.
    pub fn backend_kind(&self) -> Option<ErrorKind> {
        match self {
            ProxyError::NoMaster
            | ProxyError::FailoverUnderWay
            | ProxyError::ReplicaFailedNoMaster => None,
            ProxyError::Unreachable { .. }
            | ProxyError::ConnectTimeout { .. }
            | ProxyError::ConnectFailed { .. }
            | ProxyError::HandshakeRefused { .. }
            | ProxyError::Reconnecting { .. } => Some(ErrorKind::Connect),
            ProxyError::Timeout { .. } => Some(ErrorKind::Timeout),
            ProxyError::Lost { .. } => Some(ErrorKind::Lost),
            ProxyError::Closed { .. } => Some(ErrorKind::Closed),
        }
    }
}

/// Milliseconds of `d`, saturated, for messages.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_what_clients_read() {
        assert_eq!(ProxyError::NoMaster.to_string(), NO_MASTER);
        assert_eq!(ProxyError::no_master(false).line(), NO_MASTER);
        assert_eq!(ProxyError::no_master(true).line(), FAILOVER_UNDER_WAY);
        assert_eq!(
            ProxyError::ReplicaFailedNoMaster.to_string(),
            REPLICA_FAILED_NO_MASTER
        );
        let node: Arc<str> = "master 127.0.0.1:6379".into();
        let e = ProxyError::Unreachable {
            node: node.clone(),
            detail: "Connection refused".into(),
        };
        assert_eq!(
            e.to_string(),
            "ERR redsplit: master 127.0.0.1:6379 unreachable: Connection refused"
        );
        assert_eq!(e.node(), Some("master 127.0.0.1:6379"));
        assert_eq!(e.detail(), "unreachable: Connection refused");
        assert_eq!(e.backend_kind(), Some(ErrorKind::Connect));
        let t = ProxyError::Timeout { node, ms: 500 };
        assert_eq!(
            t.to_string(),
            "ERR redsplit: master 127.0.0.1:6379 did not answer within 500 ms"
        );
        assert_eq!(t.detail(), "did not answer within 500 ms");
        assert_eq!(ProxyError::NoMaster.detail(), "no master is known");
        assert_eq!(ProxyError::NoMaster.backend_kind(), None);
    }
}
