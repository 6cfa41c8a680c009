//! Counters and histograms, kept as plain atomics.
//!
//! Sessions count into a [`Local`] tally while they work through a batch of requests and
//! add it to the shared [`Metrics`] once per batch, so the hot path touches shared cache
//! lines a few times per batch rather than per request. The admin endpoint renders them
//! in the Prometheus text format.

use crate::commands::Class;
use crate::latency::{LocalSketch, Sketch};
use crate::router::Reason;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Command classes counted separately (the [`Class`] variants, then unknown commands).
pub const CLASSES: [&str; 7] = [
    "read",
    "write",
    "admin",
    "pubsub",
    "transaction",
    "connection",
    "unknown",
];

/// Index of a class in [`CLASSES`].
#[inline]
pub fn class_index(c: Option<Class>) -> usize {
    match c {
        Some(Class::Read) => 0,
        Some(Class::Write) => 1,
        Some(Class::Admin) => 2,
        Some(Class::PubSub) => 3,
        Some(Class::Transaction) => 4,
        Some(Class::Connection) => 5,
        None => 6,
    }
}

/// Where routed requests went.
pub const TARGETS: [&str; 3] = ["master", "replica", "rejected"];

/// Upper bounds (seconds) of the latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Upper bounds (ms) of the served-staleness histogram buckets.
pub const STALENESS_BUCKETS: [f64; 12] = [
    10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0,
];

/// A histogram with fixed buckets (the last, implicit bucket is +Inf).
#[derive(Debug)]
pub struct Histogram<const N: usize> {
    /// Per-bucket counts (not cumulative), `N` bounds plus +Inf.
    pub counts: [AtomicU64; 16],
    /// Sum of observations, in the histogram's unit × 1e6 (µs for seconds).
    pub sum_micros: AtomicU64,
}

impl<const N: usize> Default for Histogram<N> {
    fn default() -> Self {
        Histogram {
            counts: Default::default(),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl<const N: usize> Histogram<N> {
    /// Add a local tally.
    pub fn add(&self, local: &LocalHistogram) {
        for (i, c) in local.counts.iter().enumerate() {
            if *c > 0 {
                if let Some(a) = self.counts.get(i) {
                    a.fetch_add(u64::from(*c), Ordering::Relaxed);
                }
            }
        }
        self.sum_micros
            .fetch_add(local.sum_micros, Ordering::Relaxed);
    }

    /// Cumulative counts per bound, then the total (for `le="+Inf"`).
    pub fn cumulative(&self) -> (Vec<u64>, u64) {
        let mut acc = 0;
        let mut out = Vec::with_capacity(N);
        for i in 0..N {
            acc += self
                .counts
                .get(i)
                .map(|c| c.load(Ordering::Relaxed))
                .unwrap_or(0);
            out.push(acc);
        }
        let total = acc
            + self
                .counts
                .get(N)
                .map(|c| c.load(Ordering::Relaxed))
                .unwrap_or(0);
        (out, total)
    }
}

/// A histogram tally kept by one session between flushes.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalHistogram {
    counts: [u32; 16],
    sum_micros: u64,
    n: u32,
}

impl LocalHistogram {
    /// Record `micros` (µs, or the histogram's unit × 1000 for ms-based ones) against
    /// `bounds` given in the histogram's unit × 1e6.
    #[inline]
    pub fn observe(&mut self, value_micros: u64, bounds_micros: &[u64]) {
        let i = bounds_micros
            .iter()
            .position(|b| value_micros <= *b)
            .unwrap_or(bounds_micros.len());
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        self.sum_micros += value_micros;
        self.n += 1;
    }

    /// Whether anything was recorded.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

/// Latency bucket bounds in µs.
pub const LATENCY_BOUNDS_US: [u64; 14] = [
    100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000,
];
/// Staleness bucket bounds in µs (of ms values × 1000).
pub const STALENESS_BOUNDS_US: [u64; 12] = [
    10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
    30_000_000, 60_000_000,
];

/// A session's tally between flushes.
#[derive(Debug, Default, Clone)]
pub struct Local {
    /// Requests by class.
    pub requests: [u32; 7],
    /// Routed requests by target and reason.
    pub routed: [[u32; 10]; 3],
    /// Error replies sent.
    pub errors: u32,
    /// Replies sent.
    pub replies: u32,
    /// Replica reads retried on the master.
    pub retries: u32,
    /// Requests failed because a backend failed.
    pub backend_failures: u32,
    /// Replica reads also sent elsewhere after the hedge delay.
    pub hedges_sent: u32,
    /// Hedged reads answered by the hedge.
    pub hedges_won: u32,
    /// Hedged reads answered by the replica first.
    pub hedges_lost: u32,
    /// Latency of replica reads answered by their replica (for the hedge delay).
    pub replica_latency: LocalSketch,
    /// Read latency.
    pub read_latency: LocalHistogram,
    /// Write latency.
    pub write_latency: LocalHistogram,
    /// Staleness bound of replica-served reads.
    pub staleness: LocalHistogram,
    dirty: bool,
}

impl Local {
    /// Count one routed request.
    #[inline]
    pub fn route(&mut self, target: usize, reason: Reason) {
        // `Reason::ALL` lists the variants in declaration order.
        let r = reason as usize;
        if let Some(row) = self.routed.get_mut(target) {
            if let Some(c) = row.get_mut(r) {
                *c += 1;
            }
        }
        self.dirty = true;
    }

    /// Count one request of a class.
    #[inline]
    pub fn request(&mut self, class: usize) {
        if let Some(c) = self.requests.get_mut(class) {
            *c += 1;
        }
        self.dirty = true;
    }

    /// Mark that something was recorded.
    #[inline]
    pub fn touch(&mut self) {
        self.dirty = true;
    }

    /// Add everything to `m` and reset.
    pub fn flush(&mut self, m: &Metrics) {
        // Replies and latencies are recorded without `touch`: a batch that only delivered
        // replies must still be flushed, or an idle client's last reply is never counted.
        let recorded = self.replies > 0
            || self.errors > 0
            || self.retries > 0
            || self.backend_failures > 0
            || self.hedges_sent > 0
            || self.hedges_won > 0
            || self.hedges_lost > 0
            || !self.replica_latency.is_empty()
            || !self.read_latency.is_empty()
            || !self.write_latency.is_empty()
            || !self.staleness.is_empty();
        if !self.dirty && !recorded {
            return;
        }
        for (a, v) in m.requests.iter().zip(self.requests.iter()) {
            if *v > 0 {
                a.fetch_add(u64::from(*v), Ordering::Relaxed);
            }
        }
        for (row, vals) in m.routed.iter().zip(self.routed.iter()) {
            for (a, v) in row.iter().zip(vals.iter()) {
                if *v > 0 {
                    a.fetch_add(u64::from(*v), Ordering::Relaxed);
                }
            }
        }
        let add = |a: &AtomicU64, v: u32| {
            if v > 0 {
                a.fetch_add(u64::from(v), Ordering::Relaxed);
            }
        };
        add(&m.errors, self.errors);
        add(&m.replies, self.replies);
        add(&m.retries, self.retries);
        add(&m.backend_failures, self.backend_failures);
        add(&m.hedges_sent, self.hedges_sent);
        add(&m.hedges_won, self.hedges_won);
        add(&m.hedges_lost, self.hedges_lost);
        m.replica_read_latency.add(&self.replica_latency);
        if !self.read_latency.is_empty() {
            m.read_latency.add(&self.read_latency);
        }
        if !self.write_latency.is_empty() {
            m.write_latency.add(&self.write_latency);
        }
        if !self.staleness.is_empty() {
            m.served_staleness.add(&self.staleness);
        }
        *self = Local::default();
    }
}

/// Every metric the proxy exports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests by command class.
    pub requests: [AtomicU64; 7],
    /// Routed requests by target (master, replica, rejected) and reason.
    pub routed: [[AtomicU64; 10]; 3],
    /// Replies sent to clients.
    pub replies: AtomicU64,
    /// Error replies sent to clients.
    pub errors: AtomicU64,
    /// Reads sent again after their backend failed (replica reads elsewhere, master
    /// reads on the next master).
    pub retries: AtomicU64,
    /// Requests that failed because their backend failed.
    pub backend_failures: AtomicU64,
    /// Replica reads also sent elsewhere (the master, or another replica) because their
    /// replica had not answered within the hedge delay.
    pub hedges_sent: AtomicU64,
    /// Hedged reads the hedge answered (it came first, or the replica failed).
    pub hedges_won: AtomicU64,
    /// Hedged reads their replica answered first (the hedge's reply was discarded).
    pub hedges_lost: AtomicU64,
    /// Recent latencies of replica reads answered by their replica: their 99th
    /// percentile is the hedge delay when `backend.hedge_after_ms` is `auto`.
    pub replica_read_latency: Sketch,
    /// Client connections open now.
    pub clients_connected: AtomicI64,
    /// Idle client connections held in the parking lot (no task of their own).
    pub clients_parked: AtomicI64,
    /// Client connections accepted.
    pub clients_accepted: AtomicU64,
    /// Client connections refused (over `max_clients`).
    pub clients_rejected: AtomicU64,
    /// Clients disconnected for exceeding a limit.
    pub clients_limited: AtomicU64,
    /// Config reloads applied.
    pub reloads_ok: AtomicU64,
    /// Config reloads rejected (invalid file).
    pub reloads_rejected: AtomicU64,
    /// Replicas entering or leaving a read pool.
    pub pool_changes: AtomicU64,
    /// Master changes (failovers followed).
    pub topology_changes: AtomicU64,
    /// Durable writes confirmed.
    pub durable_ok: AtomicU64,
    /// Durable writes that timed out.
    pub durable_timeout: AtomicU64,
    /// Read latency (seconds).
    pub read_latency: Histogram<14>,
    /// Write latency (seconds).
    pub write_latency: Histogram<14>,
    /// Staleness bound of reads served by replicas (ms).
    pub served_staleness: Histogram<12>,
}
