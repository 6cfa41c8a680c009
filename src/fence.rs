//! The key fence: read-your-writes across connections (`read_your_writes: key`).
//!
//! For each key recently written through the proxy, by any connection, the fence keeps
//! when that write was acknowledged (the instant the proxy saw the master's reply). A
//! read of that key may go to a replica only once the replica holds every write made
//! before a later instant (`fresh_as_of > ack`, the same test as a connection's own
//! read-your-writes); otherwise it goes to the master. While a write is sent but not yet
//! answered its keys are *pending*, and reads of them go to the master.
//!
//! A key is identified by a 64-bit hash of its database and name ([`key_hash`]): two keys
//! with the same hash share an entry, which only sends some reads to the master.
//!
//! Writes whose keys the proxy cannot name (`FLUSHDB`, `FLUSHALL`, `SWAPDB`, `MOVE`,
//! scripts and functions that declare no keys, unknown commands) raise the **global
//! fence**, one instant that every key-fenced read must also be past
//! ([`KeyFence::begin_global`], [`KeyFence::end_global`]).
//!
//! Memory is bounded twice. [`KeyFence::sweep`] (run by [`sweeper`] as the monitor
//! publishes topology views) drops the entries every healthy replica holds; and once
//! more than the capacity (`routing.key_fence_capacity`) are kept, the next sweep drops
//! every answered entry. In both cases the global fence is raised to each dropped ack
//! before its entry goes, so a replica that was not counted (unhealthy now, or added
//! later) still cannot serve a dropped key before it holds that write: forgetting a key
//! never allows a stale read.
//!
//! The map is a [`DashMap`] (sharded locks, no global lock); a write costs one entry
//! update when it is sent and one when it is answered, and no allocation once its key
//! has an entry.

use crate::topology::{Health, View};
use dashmap::DashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The hash that identifies the key `key` of database `db` in the fence.
#[inline]
pub fn key_hash(db: u32, key: &[u8]) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    h.write_u32(db);
    h.write(key);
    // FxHash mixes its low bits poorly; the map picks shards and buckets by them.
    fmix64(h.finish())
}

/// MurmurHash3's 64-bit finalizer.
#[inline]
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// A hasher for keys that are hashes already ([`key_hash`]).
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// One fenced key.
#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    /// Writes of it sent and not yet answered.
    pending: u32,
    /// The latest ack of a write of it ([`KeyFence::tick`]; 0: none yet).
    ack: u64,
}

/// What the fence says about one read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fenced {
    /// The latest acknowledged write the read must see (of its keys, or keyspace-wide):
    /// a replica serves it only if it is fresh as of a later instant.
    pub ack: Option<Instant>,
    /// A write of one of its keys (or a keyspace-wide one) is sent but not answered.
    pub pending: bool,
}

/// Counts for metrics and status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FenceStats {
    /// Keys remembered now.
    pub entries: usize,
    /// Times a keyspace-wide write raised the global fence.
    pub keyspace_raises: u64,
    /// Times the capacity was exceeded and every answered entry was dropped.
    pub capacity_raises: u64,
}

/// The key fence shared by all sessions (owned by [`crate::proxy::Proxy`]).
#[derive(Debug)]
pub struct KeyFence {
    /// Instants are kept as nanoseconds since this one, plus 1 (0 is "none").
    base: Instant,
    map: DashMap<u64, Entry, BuildHasherDefault<PassThrough>>,
    /// Entries in `map` (kept beside it: `DashMap::len` locks every shard).
    len: AtomicUsize,
    capacity: AtomicUsize,
    /// The global fence ([`KeyFence::tick`]; 0: never raised).
    global: AtomicU64,
    /// Keyspace-wide writes sent and not yet answered.
    global_pending: AtomicU32,
    /// Whether the running policy has `read_your_writes: key` anywhere.
    enabled: AtomicBool,
    keyspace_raises: AtomicU64,
    capacity_raises: AtomicU64,
    /// Woken when the capacity is exceeded, so the sweeper runs before the next view.
    over: tokio::sync::Notify,
}

impl KeyFence {
    /// An empty fence that holds at most `capacity` keys.
    pub fn new(capacity: usize) -> KeyFence {
        KeyFence {
            base: Instant::now(),
            map: DashMap::with_hasher_and_shard_amount(BuildHasherDefault::default(), 64),
            len: AtomicUsize::new(0),
            capacity: AtomicUsize::new(capacity),
            global: AtomicU64::new(0),
            global_pending: AtomicU32::new(0),
            enabled: AtomicBool::new(false),
            keyspace_raises: AtomicU64::new(0),
            capacity_raises: AtomicU64::new(0),
            over: tokio::sync::Notify::new(),
        }
    }

    /// Take the settings of a (re)loaded policy: whether key mode is in use, and the
    /// capacity. When key mode is turned on, the writes acknowledged before were not
    /// recorded: the global fence is raised to `now` to cover them.
    pub fn configure(&self, enabled: bool, capacity: usize, now: Instant) {
        self.capacity.store(capacity, Ordering::Relaxed);
        let was = self.enabled.swap(enabled, Ordering::SeqCst);
        if enabled && !was {
            self.raise(now);
        }
        if self.len.load(Ordering::Relaxed) > capacity {
            self.over.notify_one();
        }
    }

    /// Whether the running policy has `read_your_writes: key` anywhere.
    #[inline]
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    #[inline]
    fn tick(&self, t: Instant) -> u64 {
        let ns = t.saturating_duration_since(self.base).as_nanos();
        u64::try_from(ns).unwrap_or(u64::MAX - 1).saturating_add(1)
    }

    #[inline]
    fn instant(&self, tick: u64) -> Option<Instant> {
        tick.checked_sub(1)
            .map(|ns| self.base + Duration::from_nanos(ns))
    }

    /// A write of the key with hash `h` is about to be sent: reads of it go to the
    /// master until [`KeyFence::end`].
    #[inline]
    pub fn begin(&self, h: u64) {
        let mut added = false;
        self.map
            .entry(h)
            .and_modify(|e| e.pending = e.pending.saturating_add(1))
            .or_insert_with(|| {
                added = true;
                Entry { pending: 1, ack: 0 }
            });
        if added {
            let n = self.len.fetch_add(1, Ordering::Relaxed) + 1;
            if n > self.capacity.load(Ordering::Relaxed) {
                self.over.notify_one();
            }
        }
    }

    /// The write of `h` begun with [`KeyFence::begin`] was answered at `ack`.
    #[inline]
    pub fn end(&self, h: u64, ack: Instant) {
        let t = self.tick(ack);
        if let Some(mut e) = self.map.get_mut(&h) {
            e.pending = e.pending.saturating_sub(1);
            e.ack = e.ack.max(t);
        }
    }

    /// A write whose keys are not known is about to be sent: every fenced read goes to
    /// the master until [`KeyFence::end_global`].
    pub fn begin_global(&self) {
        self.global_pending.fetch_add(1, Ordering::SeqCst);
    }

    /// The write begun with [`KeyFence::begin_global`] was answered at `ack`: the global
    /// fence is raised to it.
    pub fn end_global(&self, ack: Instant) {
        self.raise(ack);
        self.keyspace_raises.fetch_add(1, Ordering::Relaxed);
        // After the raise: a reader that sees no pending write sees the new fence.
        let _ = self
            .global_pending
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }

    /// Raise the global fence to `t` (it never moves back).
    pub fn raise(&self, t: Instant) {
        self.global.fetch_max(self.tick(t), Ordering::SeqCst);
    }

    /// The global fence: the latest keyspace-wide ack, and whether a keyspace-wide write
    /// is in flight.
    #[inline]
    pub fn global(&self) -> Fenced {
        Fenced {
            pending: self.global_pending.load(Ordering::SeqCst) > 0,
            ack: self.instant(self.global.load(Ordering::SeqCst)),
        }
    }

    /// Fold the entry of the key with hash `h` into `f` (the later ack; pending if
    /// either is). Call it for each key of a read, then [`KeyFence::with_global`]: the
    /// global fence is read after the keys, because a sweep raises it before it drops
    /// entries.
    #[inline]
    pub fn add_key(&self, h: u64, f: &mut Fenced) {
        if let Some(e) = self.map.get(&h) {
            f.pending |= e.pending > 0;
            if let Some(t) = self.instant(e.ack) {
                f.ack = f.ack.max(Some(t));
            }
        }
    }

    /// `f` with the global fence folded in.
    #[inline]
    pub fn with_global(&self, mut f: Fenced) -> Fenced {
        let g = self.global();
        f.pending |= g.pending;
        f.ack = f.ack.max(g.ack);
        f
    }

    /// The fence for a read of the keys with hashes `keys` (the keys' entries, then the
    /// global fence).
    pub fn read(&self, keys: impl IntoIterator<Item = u64>) -> Fenced {
        let mut f = Fenced::default();
        for h in keys {
            self.add_key(h, &mut f);
        }
        self.with_global(f)
    }

    /// Counts for metrics.
    pub fn stats(&self) -> FenceStats {
        FenceStats {
            entries: self.len.load(Ordering::Relaxed),
            keyspace_raises: self.keyspace_raises.load(Ordering::Relaxed),
            capacity_raises: self.capacity_raises.load(Ordering::Relaxed),
        }
    }

    /// Drop what the replicas of `view` hold, then enforce the capacity. See
    /// [`KeyFence::sweep_held`].
    pub fn sweep(&self, view: &View) {
        let healthy = view
            .replicas
            .iter()
            .filter(|r| r.health == Health::Ok)
            .map(|r| r.fresh_as_of);
        self.sweep_held(healthy);
    }

    /// Drop the answered entries every replica of `fresh` holds (each is a healthy
    /// replica's `fresh_as_of`; none, or one unknown: nothing is held by all), the
    /// global fence rising to each one's ack before it goes (so it ends at the newest);
    /// then, if more than the capacity remain, drop every answered entry the same way.
    pub fn sweep_held(&self, fresh: impl IntoIterator<Item = Option<Instant>>) {
        let mut held: Option<Instant> = None;
        let mut any = false;
        for f in fresh {
            any = true;
            match f {
                Some(t) => held = Some(held.map_or(t, |h| h.min(t))),
                None => {
                    held = None;
                    break;
                }
            }
        }
        if let Some(held) = held.filter(|_| any) {
            // Held by all: acked strictly before `held`.
            self.drop_answered(self.tick(held).saturating_sub(1));
        }
        if self.len.load(Ordering::Relaxed) > self.capacity.load(Ordering::Relaxed) {
            self.drop_answered(u64::MAX);
            self.capacity_raises.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Drop every answered entry acked at or before `limit` (a tick), each after the
    /// global fence was raised to its ack (one pass over the map, shard by shard).
    fn drop_answered(&self, limit: u64) {
        let mut raised = 0u64;
        let mut removed = 0usize;
        self.map.retain(|_, e| {
            let drop = e.pending == 0 && e.ack <= limit;
            if drop {
                if e.ack > raised {
                    // Before the entry goes: a reader that misses it sees the fence.
                    self.global.fetch_max(e.ack, Ordering::SeqCst);
                    raised = e.ack;
                }
                removed += 1;
            }
            !drop
        });
        if removed > 0 {
            let _ = self
                .len
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_sub(removed))
                });
        }
    }

    /// Wait until the capacity is exceeded (for the sweeper).
    pub async fn over_capacity(&self) {
        self.over.notified().await
    }
}

/// The sweeper: on every topology view the monitor publishes (and whenever the capacity
/// is exceeded), drop the entries all healthy replicas hold; at most once per
/// `replication.poll_interval_ms` (replicas' freshness moves no faster), except when
/// over the capacity. Ends when `stop` changes.
pub async fn sweeper(
    proxy: std::sync::Arc<crate::proxy::Proxy>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut views = proxy.view_version.subscribe();
    loop {
        tokio::select! {
            r = views.changed() => if r.is_err() { return },
            _ = proxy.key_fence.over_capacity() => {}
            _ = stop.changed() => return,
        }
        proxy.key_fence.sweep(&proxy.view.load());
        let pause = proxy.settings.load().config.replication.poll_interval_ms;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(pause)) => {}
            _ = proxy.key_fence.over_capacity() => proxy.key_fence.sweep(&proxy.view.load()),
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_write_is_pending_then_fenced_until_every_replica_holds_it() {
        let f = KeyFence::new(100);
        let t0 = Instant::now();
        let k = key_hash(0, b"cart:1");
        assert_eq!(f.read([k]), Fenced::default());
        f.begin(k);
        assert_eq!(
            f.read([k]),
            Fenced {
                ack: None,
                pending: true
            }
        );
        f.end(k, t0 + ms(10));
        let r = f.read([k]);
        assert!(!r.pending);
        assert_eq!(r.ack, Some(t0 + ms(10)));
        // Another key, and the same name in another database, are not fenced.
        assert_eq!(f.read([key_hash(0, b"cart:2")]), Fenced::default());
        assert_eq!(f.read([key_hash(1, b"cart:1")]), Fenced::default());
        // One replica holds it, the other does not: kept.
        f.sweep_held([Some(t0 + ms(11)), Some(t0 + ms(9))]);
        assert_eq!(f.stats().entries, 1);
        // An unknown replica holds nothing.
        f.sweep_held([Some(t0 + ms(11)), None]);
        assert_eq!(f.stats().entries, 1);
        // No replica: nothing is held by all.
        f.sweep_held([]);
        assert_eq!(f.stats().entries, 1);
        // Both hold it: dropped, and the global fence takes its ack.
        f.sweep_held([Some(t0 + ms(11)), Some(t0 + ms(12))]);
        assert_eq!(f.stats().entries, 0);
        assert_eq!(f.read([k]).ack, Some(t0 + ms(10)));
        assert_eq!(f.read([key_hash(0, b"other")]).ack, Some(t0 + ms(10)));
    }

    #[test]
    fn a_pending_key_is_never_swept_and_the_latest_ack_wins() {
        let f = KeyFence::new(100);
        let t0 = Instant::now();
        let k = key_hash(3, b"k");
        f.begin(k);
        f.begin(k);
        f.end(k, t0 + ms(20));
        assert!(f.read([k]).pending, "one of two writes is still in flight");
        f.sweep_held([Some(t0 + ms(100))]);
        assert_eq!(f.stats().entries, 1);
        f.end(k, t0 + ms(5));
        let r = f.read([k]);
        assert!(!r.pending);
        assert_eq!(r.ack, Some(t0 + ms(20)), "an older ack does not lower it");
    }

    #[test]
    fn keyspace_wide_writes_raise_the_global_fence() {
        let f = KeyFence::new(100);
        let t0 = Instant::now();
        let k = key_hash(0, b"a");
        f.begin_global();
        assert!(f.read([k]).pending);
        assert!(f.read([]).pending);
        f.end_global(t0 + ms(7));
        assert_eq!(
            f.read([k]),
            Fenced {
                ack: Some(t0 + ms(7)),
                pending: false
            }
        );
        // A key acked later than the global fence: the later one counts.
        f.begin(k);
        f.end(k, t0 + ms(9));
        assert_eq!(f.read([k]).ack, Some(t0 + ms(9)));
        assert_eq!(f.read([key_hash(0, b"b")]).ack, Some(t0 + ms(7)));
        // The fence never moves back.
        f.raise(t0);
        assert_eq!(f.global().ack, Some(t0 + ms(7)));
        assert_eq!(f.stats().keyspace_raises, 1);
    }

    #[test]
    fn past_the_capacity_entries_are_dropped_under_the_global_fence() {
        let f = KeyFence::new(10);
        let t0 = Instant::now();
        for i in 0..10u64 {
            let k = key_hash(0, &i.to_be_bytes());
            f.begin(k);
            f.end(k, t0 + ms(i));
        }
        let still = key_hash(0, b"in flight");
        f.sweep_held([None]);
        assert_eq!(f.stats().entries, 10, "at the capacity: kept");
        f.begin(still);
        assert_eq!(f.stats().entries, 11);
        // No replica holds anything, yet the capacity is kept.
        f.sweep_held([None]);
        let s = f.stats();
        assert_eq!(s.entries, 1, "only the write in flight stays");
        assert_eq!(s.capacity_raises, 1);
        assert_eq!(f.global().ack, Some(t0 + ms(9)), "the newest dropped ack");
        for i in 0..10u64 {
            let r = f.read([key_hash(0, &i.to_be_bytes())]);
            assert!(r.ack >= Some(t0 + ms(i)), "key {i} is still covered");
        }
        assert!(f.read([still]).pending);
    }

    #[test]
    fn turning_key_mode_on_fences_what_came_before() {
        let f = KeyFence::new(10);
        let t0 = Instant::now();
        f.configure(false, 10, t0);
        assert!(!f.enabled());
        assert_eq!(f.global().ack, None);
        f.configure(true, 10, t0 + ms(3));
        assert!(f.enabled());
        assert_eq!(f.global().ack, Some(t0 + ms(3)));
        // Reconfiguring while on does not raise it again.
        f.configure(true, 10, t0 + ms(50));
        assert_eq!(f.global().ack, Some(t0 + ms(3)));
    }

    #[test]
    fn key_hashes_spread_over_shards() {
        let f = KeyFence::new(100_000);
        for i in 0..10_000u32 {
            f.begin(key_hash(0, format!("user:{i}").as_bytes()));
        }
        assert_eq!(f.stats().entries, 10_000);
        assert_eq!(f.map.len(), 10_000);
    }
}
