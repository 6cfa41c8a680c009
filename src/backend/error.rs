//! [`BackendError`]: why a request to a backend failed, as the [`ProxyError`] a client
//! is answered with.

use crate::error::{millis, ProxyError};
use std::sync::Arc;
use std::time::Duration;

/// Why a backend request failed, coarsely (what the pool and logging need).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Could not connect or complete the handshake.
    Connect,
    /// The connection broke (closed, reset, bad data).
    Lost,
    /// A request went unanswered for too long.
    Timeout,
    /// The connection was closed by the proxy (topology change, shutdown).
    Closed,
}

/// A backend failure. Cheap to clone: every request waiting on a failed connection gets
/// a copy.
#[derive(Clone, Debug)]
pub struct BackendError {
    /// What happened, coarsely.
    pub kind: ErrorKind,
    /// The error line without its `ERR ` prefix, e.g. `redsplit: master 127.0.0.1:6379
    /// unreachable: Connection refused` (what a client gets after `-ERR `).
    pub message: Arc<str>,
    /// What happened, as the proxy answers it.
    pub error: Arc<ProxyError>,
}

impl BackendError {
    /// A backend failure answered as `error` (a backend variant of [`ProxyError`]; any
    /// other counts as [`ErrorKind::Connect`]).
    pub fn new(error: ProxyError) -> BackendError {
        let line = error.to_string();
        BackendError {
            kind: error.backend_kind().unwrap_or(ErrorKind::Connect),
            message: line.strip_prefix("ERR ").unwrap_or(&line).into(),
            error: Arc::new(error),
        }
    }

    /// `node` could not be reached: `detail` is the system's reason.
    pub(super) fn unreachable(node: &str, detail: impl std::fmt::Display) -> Self {
        Self::new(ProxyError::Unreachable {
            node: node.into(),
            detail: detail.to_string().into(),
        })
    }

    /// No connection to `node` within `timeout`.
    pub(super) fn connect_timeout(node: &str, timeout: Duration) -> Self {
        Self::new(ProxyError::ConnectTimeout {
            node: node.into(),
            ms: millis(timeout),
        })
    }

    /// Setting up the connection to `node` failed after it connected.
    pub(super) fn connect_failed(node: &str, detail: impl std::fmt::Display) -> Self {
        Self::new(ProxyError::ConnectFailed {
            node: node.into(),
            detail: detail.to_string().into(),
        })
    }

    /// `node` answered the handshake with the error `reply`.
    pub(super) fn refused(node: &str, reply: impl std::fmt::Display) -> Self {
        Self::new(ProxyError::HandshakeRefused {
            node: node.into(),
            reply: reply.to_string().into(),
        })
    }

    /// `node` did not answer within `timeout`.
    pub(super) fn timeout(node: &str, timeout: Duration) -> Self {
        Self::new(ProxyError::Timeout {
            node: node.into(),
            ms: millis(timeout),
        })
    }

    /// The connection to `node` broke.
    pub(super) fn lost(node: &str, detail: impl std::fmt::Display) -> Self {
        Self::new(ProxyError::Lost {
            node: node.into(),
            detail: detail.to_string().into(),
        })
    }

    /// The proxy closed the connection to `node`.
    pub(super) fn closed(node: &str, reason: &str) -> Self {
        Self::new(ProxyError::Closed {
            node: node.into(),
            reason: reason.into(),
        })
    }

    /// The pool of `node` waits before its next connection attempt.
    pub(super) fn reconnecting(node: &str) -> Self {
        Self::new(ProxyError::Reconnecting { node: node.into() })
    }

    /// What happened, without the node (for logs that name it themselves).
    pub fn detail(&self) -> String {
        self.error.detail()
    }
}

/// The RESP error line, as [`ProxyError`]'s.
impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ERR {}", self.message)
    }
}

impl std::error::Error for BackendError {}

impl From<BackendError> for ProxyError {
    fn from(e: BackendError) -> ProxyError {
        Arc::unwrap_or_clone(e.error)
    }
}
