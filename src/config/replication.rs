//! The `replication` section: how the monitor polls the backends' replication state
//! and when a replica enters the read pool.

use serde::{Deserialize, Serialize};

/// The replication monitor: how offsets are polled and how replicas enter the pool.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationConfig {
    /// Time between polls of each backend's replication state (ms).
    pub poll_interval_ms: u64,
    /// A poll without an answer for this long counts as a failure (ms).
    pub poll_timeout_ms: u64,
    /// A replica back within budget rejoins the pool only after staying within it this
    /// long (ms).
    pub dwell_ms: u64,
    /// How much staleness history the status page keeps (seconds).
    pub history_secs: u64,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            poll_interval_ms: 50,
            poll_timeout_ms: 1000,
            dwell_ms: 1000,
            history_secs: 300,
        }
    }
}
