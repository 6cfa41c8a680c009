//! Checks of `backend`: its TLS files, static addresses, Sentinel or a cluster (one of
//! them, no address twice), and the pool's sizes and timeouts (the hedge delay below
//! the command timeout).

use super::{Config, Problems};
use std::collections::HashMap;

/// `backend`, `backend.tls`, `backend.sentinel` and `backend.cluster`.
pub(super) fn check(p: &mut Problems, cfg: &Config) {
    // TLS to the backends: the files must load.
    if let Some(t) = &cfg.backend.tls {
        if let Err(e) = crate::tls::backend_target(t, "localhost:6379") {
            p.add(
                "backend.tls.ca",
                format!("`backend.tls`: {e}; give PEM files the proxy can read"),
            );
        }
        if t.cert.is_empty() != t.key.is_empty() {
            p.add("backend.tls.cert", "`backend.tls` gives only one of cert and key: give both (a client certificate) or neither");
        }
    }

    // Backends.
    let b = &cfg.backend;
    let has_static = b.master.is_some() || !b.replicas.is_empty();
    let modes = [has_static, b.sentinel.is_some(), b.cluster.is_some()]
        .iter()
        .filter(|m| **m)
        .count();
    if modes > 1 {
        p.add(
            if b.cluster.is_some() { "backend.cluster" } else { "backend.sentinel" },
            "`backend` gives more than one of static addresses (master/replicas), `sentinel` and `cluster`: keep one",
        );
    } else if modes == 0 {
        p.add(
            "backend",
            "`backend` names no Redis server: set backend.master (and backend.replicas), backend.sentinel with its addresses and master_name, or backend.cluster with its seeds",
        );
    }
    if b.is_static() && b.master.is_none() && !b.replicas.is_empty() {
        p.add(
            "backend.replicas",
            "`backend.replicas` is set but `backend.master` is not: add backend.master, the server every write goes to",
        );
    }
    if let Some(c) = &b.cluster {
        if c.seeds.is_empty() {
            p.add(
                "backend.cluster.seeds",
                "`backend.cluster.seeds` is empty: list at least one cluster node, e.g. [\"127.0.0.1:7000\"]",
            );
        }
        for (i, a) in c.seeds.iter().enumerate() {
            p.address(&format!("backend.cluster.seeds[{i}]"), a, false);
        }
        p.positive(
            "backend.cluster.refresh_ms",
            c.refresh_ms,
            "the slot map would be re-read without pause",
        );
    }
    let mut seen: HashMap<String, String> = HashMap::new();
    let statics = b
        .master
        .iter()
        .map(|m| ("backend.master".to_string(), m))
        .chain(
            b.replicas
                .iter()
                .enumerate()
                .map(|(i, r)| (format!("backend.replicas[{i}]"), r)),
        );
    for (path, addr) in statics {
        p.address(&path, addr, false);
        if let Some(first) = seen.get(&addr.to_ascii_lowercase()) {
            p.add(
                &path,
                format!("`{path}` repeats {addr} (already `{first}`): list each server once"),
            );
        } else {
            seen.insert(addr.to_ascii_lowercase(), path);
        }
    }
    if let Some(s) = &b.sentinel {
        if s.addresses.is_empty() {
            p.add(
                "backend.sentinel.addresses",
                "`backend.sentinel.addresses` is empty: list at least one Sentinel, e.g. [\"127.0.0.1:26379\"]",
            );
        }
        for (i, a) in s.addresses.iter().enumerate() {
            p.address(&format!("backend.sentinel.addresses[{i}]"), a, false);
        }
        if s.master_name.trim().is_empty() {
            p.add(
                "backend.sentinel.master_name",
                "`backend.sentinel.master_name` is empty: give the name the Sentinels know the master by (as in `sentinel monitor NAME …`), e.g. mymaster",
            );
        }
        p.positive(
            "backend.sentinel.refresh_ms",
            s.refresh_ms,
            "the topology would be re-read without pause",
        );
    }
    p.positive(
        "backend.connections",
        b.connections as u64,
        "every backend needs at least one shared connection",
    );
    p.positive(
        "backend.connect_timeout_ms",
        b.connect_timeout_ms,
        "every connection attempt would time out at once",
    );
    p.positive(
        "backend.command_timeout_ms",
        b.command_timeout_ms,
        "every request would time out at once",
    );
    if let crate::config::HedgeAfter::Ms(ms) = b.hedge_after_ms {
        if ms > 0 && ms >= b.command_timeout_ms && b.command_timeout_ms > 0 {
            p.add(
                "backend.hedge_after_ms",
                format!(
                    "`backend.hedge_after_ms` ({ms} ms) is not below `backend.command_timeout_ms` ({} ms): a stalled replica's reads would be retried before they are hedged; make it smaller, 0 (no hedging) or auto",
                    b.command_timeout_ms
                ),
            );
        }
    }
    p.positive(
        "backend.reconnect_min_ms",
        b.reconnect_min_ms,
        "a failing backend would be retried in a busy loop",
    );
    p.positive(
        "backend.reconnect_max_ms",
        b.reconnect_max_ms,
        "a failing backend would be retried in a busy loop",
    );
    if b.reconnect_max_ms < b.reconnect_min_ms && b.reconnect_max_ms > 0 {
        p.add(
            "backend.reconnect_max_ms",
            format!(
                "`backend.reconnect_max_ms` ({} ms) is less than `backend.reconnect_min_ms` ({} ms): make it at least as large",
                b.reconnect_max_ms, b.reconnect_min_ms
            ),
        );
    }
}
