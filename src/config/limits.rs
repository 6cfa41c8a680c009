//! The `limits` section: how many clients may connect, how long one may idle, and how
//! large its requests, buffers and pipeline may grow.

use super::ByteSize;
use serde::{Deserialize, Serialize};

/// Per-client limits.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Most client connections at once; past it new clients get an error and are closed.
    pub max_clients: usize,
    /// Close a client idle this long; 0: never (ms).
    pub idle_timeout_ms: u64,
    /// Largest bulk string in a request (bytes).
    pub proto_max_bulk_len: ByteSize,
    /// Largest argument count of a request.
    pub max_multibulk_len: u64,
    /// Largest buffered, not yet forwarded, request data of one client (bytes).
    pub client_query_buffer_limit: ByteSize,
    /// Largest reply data waiting for a client to read it (bytes); a client over it is
    /// disconnected. It also bounds what one client has in flight on shared backend
    /// connections, by the size of its recent replies.
    pub client_output_buffer_limit: ByteSize,
    /// The same for a client in pub/sub or MONITOR mode (bytes).
    pub pubsub_output_buffer_limit: ByteSize,
    /// Most requests of one client in flight at once; past it the proxy stops reading.
    pub max_pipeline: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_clients: 10_000,
            idle_timeout_ms: 0,
            proto_max_bulk_len: ByteSize(512 * 1024 * 1024),
            max_multibulk_len: i32::MAX as u64,
            client_query_buffer_limit: ByteSize(1024 * 1024 * 1024),
            client_output_buffer_limit: ByteSize(256 * 1024 * 1024),
            pubsub_output_buffer_limit: ByteSize(32 * 1024 * 1024),
            max_pipeline: 4096,
        }
    }
}
