//! Connections to the backends: pipelined and shared, dedicated to one session, or
//! plain request/reply for the proxy's own questions.
//!
//! One concern per file:
//!
//! - [`conn`]: a [`Conn`], one pipelined connection to one Redis. A session appends a
//!   run of request bytes to the connection's outbox under a short lock, together with
//!   one [`Waiter`] that says where the run's replies go; the connection's task writes
//!   everything queued in one write, reads replies, delimits them with the
//!   [`ReplyScanner`](crate::protocol::ReplyScanner), and copies each run of replies
//!   into its session's [`Inbox`] slot. Nothing is allocated per request: buffers and
//!   queues keep their capacity. In stream mode (a dedicated connection for pub/sub or
//!   `MONITOR`) every frame goes to one inbox slot without request matching. The
//!   [`watchdog`] fails a connection whose oldest request waited `command_timeout_ms`;
//!   it watches one proxy's [`LiveConns`], the registry its pools' connections join.
//! - [`inbox`]: where replies are delivered: a session's [`Inbox`] of [`SlotQueue`]s,
//!   the [`Sink`] that owns it, and the [`Signal`] that wakes the session.
//! - [`handshake`]: [`ConnParams`] (how to reach a backend) and [`ConnKey`] (database
//!   and protocol), and the connect-and-handshake every kind of connection runs
//!   (TCP, TLS, `HELLO` with `AUTH` and the client id, `SELECT`, `CLIENT SETNAME`).
//! - [`pool`]: a backend's [`Pool`]: `size` shared connections per [`ConnKey`], replaced
//!   after a failure with exponential backoff and jitter between failed attempts, and
//!   new dedicated connections for one session alone (transactions, blocking commands,
//!   pub/sub).
//! - [`gate`]: a backend's [`Gate`], which keeps requests in the order sessions sent them
//!   across its connections while one of them opens (a blocking command on a new
//!   dedicated connection is not overtaken by another client's later push).
//! - [`control`]: a [`ControlConn`], not pipelined and not shared, for the replication
//!   monitor, Sentinel and start-up checks.
//! - [`error`]: [`BackendError`]: a connection that fails (refused, closed, protocol
//!   garbage, or a request unanswered for `command_timeout_ms`) fails every waiter with
//!   one, naming the role and address.
//!
//! Everything public is re-exported here, so `crate::backend::X` names every type.

pub mod conn;
pub mod control;
pub mod error;
pub mod gate;
pub mod handshake;
pub mod inbox;
pub mod pool;

pub use conn::{next_read_size, watchdog, Conn, LiveConns};
pub use control::ControlConn;
pub use error::{BackendError, ErrorKind};
pub use gate::Gate;
pub use handshake::{ConnKey, ConnParams, Login};
pub use inbox::{Front, Inbox, InboxState, Signal, Sink, SlotQueue, Waiter, PUSHES};
pub use pool::Pool;

/// The role a node plays, for routing and for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The master.
    Master,
    /// A replica.
    Replica,
    /// A Sentinel (the proxy's own questions only; never routed to).
    Sentinel,
}

impl Role {
    /// `master` or `replica`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Replica => "replica",
            Role::Sentinel => "sentinel",
        }
    }
}
