//! Checks of `limits`: every limit must be positive.

use super::{Config, Problems};

/// `limits`.
pub(super) fn check(p: &mut Problems, cfg: &Config) {
    let l = &cfg.limits;
    p.positive(
        "limits.max_clients",
        l.max_clients as u64,
        "no client could connect",
    );
    p.positive(
        "limits.max_pipeline",
        l.max_pipeline as u64,
        "no request could ever be read",
    );
    p.positive(
        "limits.proto_max_bulk_len",
        l.proto_max_bulk_len.0,
        "every request with an argument would be refused",
    );
    p.positive(
        "limits.max_multibulk_len",
        l.max_multibulk_len,
        "every request would be refused",
    );
    p.positive(
        "limits.client_query_buffer_limit",
        l.client_query_buffer_limit.0,
        "every client would be closed",
    );
    p.positive(
        "limits.client_output_buffer_limit",
        l.client_output_buffer_limit.0,
        "every client would be closed",
    );
    p.positive(
        "limits.pubsub_output_buffer_limit",
        l.pubsub_output_buffer_limit.0,
        "every subscriber would be closed",
    );
}
