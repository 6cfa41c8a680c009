//! Observed reply latency, kept cheaply for routing: a smoothed latency per backend
//! ([`Smoothed`], which the `balanced` replica choice weighs) and one decaying histogram
//! of replica read latencies ([`Sketch`], whose 99th percentile sets the hedge delay
//! when `backend.hedge_after_ms` is `auto`).
//!
//! Both are plain atomics. Sessions tally their samples locally ([`LocalSketch`], and a
//! sum and count per backend) and add them once per batch, so the hot path touches the
//! shared cache lines a few times per batch rather than per reply. Updates racing with
//! each other may lose a sample; an estimate loses nothing that matters by it.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::Instant;

/// Buckets per power of two (each about 19% wide).
const PER_OCTAVE: u32 = 4;
/// The first bucket holds everything up to 2^`FIRST_OCTAVE` µs (16 µs).
const FIRST_OCTAVE: u32 = 4;
/// Number of buckets: up to 2^20 µs (about 1 s) in steps; the last holds the rest.
pub const BUCKETS: usize = 65;
/// Samples after which every count is halved, so the sketch follows recent traffic.
const DECAY_EVERY: u64 = 4096;
/// Samples needed before a percentile is reported at all.
const MIN_SAMPLES: u64 = 100;

/// The bucket of a latency of `us` microseconds.
#[inline]
pub fn bucket(us: u64) -> usize {
    if us <= 1 << FIRST_OCTAVE {
        return 0;
    }
    let octave = 63 - us.leading_zeros(); // floor(log2(us)) ≥ FIRST_OCTAVE
                                          // The two bits below the leading one pick the quarter of the octave.
    let sub = ((us >> octave.saturating_sub(2)) & 0b11) as u32;
    let i = (octave - FIRST_OCTAVE) * PER_OCTAVE + sub + 1;
    (i as usize).min(BUCKETS - 1)
}

/// The upper bound (µs) of bucket `i`: every latency in it is at most this.
#[inline]
pub fn bucket_bound(i: usize) -> u64 {
    if i == 0 {
        return 1 << FIRST_OCTAVE;
    }
    if i >= BUCKETS - 1 {
        return u64::MAX;
    }
    let k = (i - 1) as u32;
    let octave = FIRST_OCTAVE + k / PER_OCTAVE;
    let sub = u64::from(k % PER_OCTAVE);
    // Bucket (octave, sub) holds [2^o·(4+sub)/4, 2^o·(5+sub)/4), less the first
    // bucket's 16 µs.
    ((1u64 << octave) * (5 + sub)) / 4 - 1
}

/// One session's replica read latencies between flushes.
#[derive(Debug, Clone)]
pub struct LocalSketch {
    counts: [u32; BUCKETS],
    n: u32,
}

impl Default for LocalSketch {
    fn default() -> Self {
        LocalSketch {
            counts: [0; BUCKETS],
            n: 0,
        }
    }
}

impl LocalSketch {
    /// Record a latency of `us` microseconds.
    #[inline]
    pub fn observe(&mut self, us: u64) {
        if let Some(c) = self.counts.get_mut(bucket(us)) {
            *c += 1;
        }
        self.n += 1;
    }

    /// Whether nothing was recorded.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

/// A decaying histogram of replica read latencies, shared by all sessions, with its 99th
/// percentile kept ready to read.
#[derive(Debug)]
pub struct Sketch {
    counts: [AtomicU32; BUCKETS],
    total: AtomicU64,
    /// The last computed 99th percentile (µs); 0 while too few samples were seen.
    p99_us: AtomicU64,
}

impl Default for Sketch {
    fn default() -> Self {
        Sketch {
            counts: std::array::from_fn(|_| AtomicU32::new(0)),
            total: AtomicU64::new(0),
            p99_us: AtomicU64::new(0),
        }
    }
}

impl Sketch {
    /// Add a session's tally. The percentile is recomputed every 64 samples or so, and
    /// every `DECAY_EVERY` samples all counts are halved.
    pub fn add(&self, local: &LocalSketch) {
        if local.is_empty() {
            return;
        }
        for (a, c) in self.counts.iter().zip(local.counts.iter()) {
            if *c > 0 {
                a.fetch_add(*c, Ordering::Relaxed);
            }
        }
        let n = u64::from(local.n);
        let before = self.total.fetch_add(n, Ordering::Relaxed);
        let after = before + n;
        if after >= DECAY_EVERY
            && self
                .total
                .compare_exchange(after, after / 2, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            for a in &self.counts {
                let _ = a.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| Some(c / 2));
            }
        }
        if before / 64 != after / 64 || before < MIN_SAMPLES {
            self.p99_us
                .store(self.quantile(0.99).unwrap_or(0), Ordering::Relaxed);
        }
    }

    /// The latest 99th percentile (µs), `None` while too few samples were seen.
    #[inline]
    pub fn p99_us(&self) -> Option<u64> {
        match self.p99_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(us),
        }
    }

    /// The `q` quantile (0 < q ≤ 1) of the samples held, as its bucket's upper bound
    /// (µs); `None` below `MIN_SAMPLES` samples.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let count = |c: &AtomicU32| u64::from(c.load(Ordering::Relaxed));
        let total: u64 = self.counts.iter().map(count).sum();
        if total < MIN_SAMPLES {
            return None;
        }
        let want = ((total as f64) * q).ceil() as u64;
        let mut acc = 0;
        for (i, c) in self.counts.iter().enumerate() {
            acc += count(c);
            if acc >= want.max(1) {
                return Some(bucket_bound(i).min(u64::MAX / 2));
            }
        }
        None
    }
}

/// The clock `Smoothed` stamps its updates with.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Milliseconds since the process's latency epoch at `at` (0 before it).
#[inline]
pub fn epoch_ms(at: Instant) -> u64 {
    at.saturating_duration_since(*EPOCH).as_millis() as u64
}

/// A smoothed (exponentially weighted) reply latency of one backend, and when it last
/// took a sample.
#[derive(Debug, Default)]
pub struct Smoothed {
    /// The smoothed latency (µs); 0: never measured.
    us: AtomicU64,
    /// When the last sample came, as [`epoch_ms`] (+1, so that 0 means never).
    at_ms: AtomicU64,
}

impl Smoothed {
    /// Fold in `n` samples whose mean is `mean_us`, at `now`: each sample moves the
    /// estimate an eighth of the way towards itself (a never-measured backend takes
    /// the mean as it is).
    pub fn observe(&self, mean_us: u64, n: u32, now: Instant) {
        let old = self.us.load(Ordering::Relaxed);
        let new = smooth(old, mean_us, n);
        self.us.store(new.max(1), Ordering::Relaxed);
        self.at_ms.store(epoch_ms(now) + 1, Ordering::Relaxed);
    }

    /// The smoothed latency (µs; 0: never measured) and how long ago (ms) its last
    /// sample came, at `now` (`u64::MAX`: never).
    #[inline]
    pub fn get(&self, now: Instant) -> (u64, u64) {
        let us = self.us.load(Ordering::Relaxed);
        let at = self.at_ms.load(Ordering::Relaxed);
        let age = if at == 0 {
            u64::MAX
        } else {
            epoch_ms(now).saturating_sub(at - 1)
        };
        (us, age)
    }
}

/// `old` moved towards `sample` by 1/8 per sample, for `n` samples (0: unchanged; an
/// `old` of 0, never measured, becomes `sample`).
#[inline]
pub fn smooth(old: u64, sample: u64, n: u32) -> u64 {
    if n == 0 {
        return old;
    }
    if old == 0 {
        return sample;
    }
    // Weight of the old value after n steps of 7/8 (at most 8 steps counted: beyond,
    // the old value's weight is below 35% and the batch's mean dominates anyway).
    let mut w_old: u64 = 1 << 24;
    for _ in 0..n.min(8) {
        w_old = w_old * 7 / 8;
    }
    let w_new = (1u64 << 24) - w_old;
    ((u128::from(old) * u128::from(w_old) + u128::from(sample) * u128::from(w_new)) >> 24) as u64
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_bound_their_values() {
        let mut last = 0;
        for us in [
            0u64,
            1,
            16,
            17,
            20,
            31,
            32,
            100,
            999,
            1000,
            5000,
            1 << 19,
            1 << 20,
        ] {
            let i = bucket(us);
            assert!(i >= last, "{us} µs fell in bucket {i} after {last}");
            assert!(
                us <= bucket_bound(i),
                "{us} µs above the bound of bucket {i}"
            );
            if i > 0 {
                assert!(us > bucket_bound(i - 1), "{us} µs belongs below bucket {i}");
            }
            last = i;
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        // About 19% resolution: a value's bound is within a quarter above it.
        for us in [100u64, 1234, 56_789] {
            assert!(bucket_bound(bucket(us)) <= us + us / 4 + 1, "{us}");
        }
    }

    #[test]
    fn the_99th_percentile_follows_recent_samples() {
        let s = Sketch::default();
        let mut l = LocalSketch::default();
        for _ in 0..50 {
            l.observe(300);
        }
        s.add(&l);
        assert_eq!(s.p99_us(), None, "too few samples");
        let mut l = LocalSketch::default();
        for i in 0..1000 {
            l.observe(if i % 100 == 0 { 20_000 } else { 300 });
        }
        s.add(&l);
        let p99 = s.p99_us().unwrap();
        assert!((300..400).contains(&p99), "p99 {p99} µs");
        // A slower regime takes over as the counts decay.
        for _ in 0..20 {
            let mut l = LocalSketch::default();
            for _ in 0..500 {
                l.observe(8_000);
            }
            s.add(&l);
        }
        let p99 = s.p99_us().unwrap();
        assert!((8_000..10_000).contains(&p99), "p99 {p99} µs");
        assert!(s.total.load(Ordering::Relaxed) < 2 * DECAY_EVERY);
    }

    #[test]
    fn smoothing_moves_an_eighth_per_sample() {
        assert_eq!(smooth(0, 500, 1), 500, "the first sample is taken as it is");
        assert_eq!(smooth(800, 0, 0), 800);
        let one = smooth(800, 1600, 1);
        assert!((899..=900).contains(&one), "{one}");
        let many = smooth(800, 1600, 100);
        assert!(many > 1300 && many < 1600, "{many}");
        let s = Smoothed::default();
        let now = Instant::now();
        assert_eq!(s.get(now), (0, u64::MAX));
        s.observe(250, 3, now);
        assert_eq!(s.get(now).0, 250);
        assert!(s.get(now).1 < 5);
    }
}
