//! [`Pool`]: a backend's shared connections (`size` per [`ConnKey`], chosen by a
//! session's hint), replaced after a failure with exponential backoff and full jitter
//! between failed attempts; and new dedicated connections for one session alone. A
//! reload changes a running pool's connect timeout, size and backoff in place
//! ([`Pool::reconfigure`]).

use super::{BackendError, Conn, ConnKey, ConnParams, Gate, LiveConns, Role};
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Reconnect bookkeeping for one pool position.
#[derive(Debug)]
struct PoolSlot {
    conn: Option<Arc<Conn>>,
    failures: u32,
    next_attempt: Option<Instant>,
    last_error: Option<BackendError>,
}

/// Shared connections to one backend: `size` per database and protocol version.
///
/// Its settings (connect timeout, size, reconnect backoff) can change while it runs
/// ([`Pool::reconfigure`], on a reload); the address, role, credentials and TLS cannot:
/// a change of those makes a new backend with a new pool.
#[derive(Debug)]
pub struct Pool {
    params: ArcSwap<ConnParams>,
    size: AtomicUsize,
    backoff_min_ms: AtomicU64,
    backoff_max_ms: AtomicU64,
    slots: dashmap::DashMap<ConnKey, Arc<Vec<Mutex<PoolSlot>>>>,
    /// One dedicated connection per key already set up, for the next session that needs
    /// one: a blocking command or `SUBSCRIBE` is written at once instead of after a
    /// connect and handshake, so commands other clients send after it cannot overtake it.
    spare: dashmap::DashMap<ConnKey, Arc<Conn>>,
    /// Requests in flight on this backend's connections.
    pub outstanding: Arc<AtomicU64>,
    /// Where its connections register for the proxy's timeout watchdog.
    live: Arc<LiveConns>,
    /// The write order of its connections while one of them opens.
    gate: Arc<Gate>,
}

impl PoolSlot {
    fn empty() -> Mutex<PoolSlot> {
        Mutex::new(PoolSlot {
            conn: None,
            failures: 0,
            next_attempt: None,
            last_error: None,
        })
    }
}

/// Milliseconds of `d`, saturated.
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Pool {
    /// A pool that opens connections on first use, registering them in `live`.
    pub fn new(
        params: ConnParams,
        size: usize,
        backoff_min: Duration,
        backoff_max: Duration,
        live: Arc<LiveConns>,
    ) -> Pool {
        Pool {
            params: ArcSwap::from_pointee(params),
            size: AtomicUsize::new(size.max(1)),
            backoff_min_ms: AtomicU64::new(ms(backoff_min)),
            backoff_max_ms: AtomicU64::new(ms(backoff_max)),
            slots: dashmap::DashMap::new(),
            spare: dashmap::DashMap::new(),
            outstanding: Arc::new(AtomicU64::new(0)),
            live,
            gate: Arc::default(),
        }
    }

    /// The connection parameters new connections are made with.
    pub fn params(&self) -> arc_swap::Guard<Arc<ConnParams>> {
        self.params.load()
    }

    /// The number of shared connections per [`ConnKey`].
    pub fn size(&self) -> usize {
        self.size.load(Ordering::Relaxed)
    }

    /// The first and the longest delay between failed connection attempts.
    pub fn backoff(&self) -> (Duration, Duration) {
        (
            Duration::from_millis(self.backoff_min_ms.load(Ordering::Relaxed)),
            Duration::from_millis(self.backoff_max_ms.load(Ordering::Relaxed)),
        )
    }

    /// Apply new settings (a reload): connections made from now on use
    /// `connect_timeout`, the next reconnect delay uses the new backoff, and the next
    /// [`Pool::get`] for each [`ConnKey`] resizes its positions to `size`. Connections
    /// at the positions that remain are kept; those beyond a smaller size leave the
    /// pool unclosed (requests in flight on them finish, and sessions that hold one
    /// keep using it until it fails or they let it go). Returns whether anything
    /// changed.
    pub fn reconfigure(
        &self,
        connect_timeout: Duration,
        size: usize,
        backoff_min: Duration,
        backoff_max: Duration,
    ) -> bool {
        let mut changed = false;
        let params = self.params.load();
        if params.connect_timeout != connect_timeout {
            self.params.store(Arc::new(ConnParams {
                connect_timeout,
                ..(**params).clone()
            }));
            changed = true;
        }
        let size = size.max(1);
        changed |= self.size.swap(size, Ordering::Relaxed) != size;
        changed |= self.backoff_min_ms.swap(ms(backoff_min), Ordering::Relaxed) != ms(backoff_min);
        changed |= self.backoff_max_ms.swap(ms(backoff_max), Ordering::Relaxed) != ms(backoff_max);
        changed
    }

    /// A usable shared connection for `key`, chosen by `hint`. Fails fast while the
    /// backend is in reconnect backoff.
    pub fn get(&self, key: &ConnKey, hint: u64) -> Result<Arc<Conn>, BackendError> {
        let size = self.size();
        let slots = {
            let mut entry = self
                .slots
                .entry(key.clone())
                .or_insert_with(|| Arc::new((0..size).map(|_| PoolSlot::empty()).collect()));
            if entry.len() != size {
                // Resized by a reload: keep what the remaining positions hold.
                let resized: Vec<Mutex<PoolSlot>> = (0..size)
                    .map(|i| match entry.get(i) {
                        Some(old) => {
                            let mut old = old.lock();
                            Mutex::new(PoolSlot {
                                conn: old.conn.take(),
                                failures: old.failures,
                                next_attempt: old.next_attempt,
                                last_error: old.last_error.take(),
                            })
                        }
                        None => PoolSlot::empty(),
                    })
                    .collect();
                *entry = Arc::new(resized);
            }
            entry.clone()
        };
        let idx = (hint % slots.len() as u64) as usize;
        let Some(slot) = slots.get(idx) else {
            return Err(BackendError::connect_failed(
                &self.params.load().label(),
                "has no connection slot",
            ));
        };
        let mut s = slot.lock();
        if let Some(c) = &s.conn {
            if !c.is_failed() {
                return Ok(c.clone());
            }
            let err = c.failure();
            if c.became_ready() {
                s.failures = 0;
                s.next_attempt = None;
            } else {
                s.failures = s.failures.saturating_add(1);
                let base = self.backoff_min_ms.load(Ordering::Relaxed);
                let exp = base.saturating_mul(1u64 << s.failures.min(16).saturating_sub(1));
                let capped = exp.min(self.backoff_max_ms.load(Ordering::Relaxed)).max(1);
                // Full jitter in [capped/2, capped].
                let delay = capped / 2 + fastrand::u64(0..=capped / 2);
                s.next_attempt = Some(Instant::now() + Duration::from_millis(delay));
            }
            s.last_error = err;
            s.conn = None;
        }
        if let Some(t) = s.next_attempt {
            if Instant::now() < t {
                return Err(s
                    .last_error
                    .clone()
                    .unwrap_or_else(|| BackendError::reconnecting(&self.params.load().label())));
            }
        }
        let params = self.params.load_full();
        if params.role == Role::Master && !self.spare.contains_key(key) {
            // Clients using this key may soon need a dedicated connection: have one ready.
            self.spare.insert(
                key.clone(),
                Conn::spawn(
                    params.clone(),
                    key.clone(),
                    Arc::new(AtomicU64::new(0)),
                    true,
                    &self.live,
                    &self.gate,
                ),
            );
        }
        let c = Conn::spawn(
            params,
            key.clone(),
            self.outstanding.clone(),
            false,
            &self.live,
            &self.gate,
        );
        s.conn = Some(c.clone());
        Ok(c)
    }

    /// A connection for one session alone: the spare one for `key` if it is alive
    /// (already connected, usually), and a new spare is started in its place.
    pub fn dedicated(&self, key: &ConnKey) -> Arc<Conn> {
        let fresh = || {
            Conn::spawn(
                self.params.load_full(),
                key.clone(),
                Arc::new(AtomicU64::new(0)),
                true,
                &self.live,
                &self.gate,
            )
        };
        let taken = self.spare.insert(key.clone(), fresh());
        match taken {
            Some(c) if !c.is_failed() => c,
            _ => fresh(),
        }
    }

    /// Close every shared connection (topology change, shutdown).
    pub fn close_all(&self, reason: &str) {
        for e in self.spare.iter() {
            e.value().close(reason);
        }
        self.spare.clear();
        for e in self.slots.iter() {
            for s in e.value().iter() {
                if let Some(c) = s.lock().conn.take() {
                    c.close(reason);
                }
            }
        }
    }
}
