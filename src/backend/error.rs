//! [`BackendError`]: why a request to a backend failed, with a message fit for a client.

use std::sync::Arc;

/// Why a backend request failed.
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

/// A backend failure, with a message fit to send to a client after `-ERR `.
#[derive(Clone, Debug)]
pub struct BackendError {
    /// What happened.
    pub kind: ErrorKind,
    /// E.g. `redsplit: master 127.0.0.1:6379 unreachable: Connection refused`.
    pub message: Arc<str>,
}

impl BackendError {
    /// An error of `kind` about the backend `label` (`master 127.0.0.1:6379`): the
    /// message is `redsplit: {label} {what}`.
    pub(super) fn new(kind: ErrorKind, label: &str, what: impl std::fmt::Display) -> Self {
        BackendError {
            kind,
            message: format!("redsplit: {label} {what}").into(),
        }
    }
}
