//! Checks of `replication`: the monitor's intervals must be positive.

use super::{Config, Problems};

/// `replication`.
pub(super) fn check(p: &mut Problems, cfg: &Config) {
    let r = &cfg.replication;
    p.positive(
        "replication.poll_interval_ms",
        r.poll_interval_ms,
        "backends would be polled in a busy loop",
    );
    p.positive(
        "replication.poll_timeout_ms",
        r.poll_timeout_ms,
        "every poll would fail at once",
    );
    p.positive(
        "replication.history_secs",
        r.history_secs,
        "the status page needs some staleness history",
    );
}
