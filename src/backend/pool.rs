//! [`Pool`]: a backend's shared connections (`size` per [`ConnKey`], chosen by a
//! session's hint), replaced after a failure with exponential backoff and full jitter
//! between failed attempts; and new dedicated connections for one session alone.

use super::{BackendError, Conn, ConnKey, ConnParams, ErrorKind};
use parking_lot::Mutex;
use std::sync::atomic::AtomicU64;
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
#[derive(Debug)]
pub struct Pool {
    params: Arc<ConnParams>,
    size: usize,
    backoff: (Duration, Duration),
    slots: dashmap::DashMap<ConnKey, Arc<Vec<Mutex<PoolSlot>>>>,
    /// Requests in flight on this backend's connections.
    pub outstanding: Arc<AtomicU64>,
}

impl Pool {
    /// A pool that opens connections on first use.
    pub fn new(
        params: ConnParams,
        size: usize,
        backoff_min: Duration,
        backoff_max: Duration,
    ) -> Pool {
        Pool {
            params: Arc::new(params),
            size: size.max(1),
            backoff: (backoff_min, backoff_max),
            slots: dashmap::DashMap::new(),
            outstanding: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The connection parameters.
    pub fn params(&self) -> &Arc<ConnParams> {
        &self.params
    }

    /// A usable shared connection for `key`, chosen by `hint`. Fails fast while the
    /// backend is in reconnect backoff.
    pub fn get(&self, key: ConnKey, hint: u64) -> Result<Arc<Conn>, BackendError> {
        let slots = self
            .slots
            .entry(key)
            .or_insert_with(|| {
                Arc::new(
                    (0..self.size)
                        .map(|_| {
                            Mutex::new(PoolSlot {
                                conn: None,
                                failures: 0,
                                next_attempt: None,
                                last_error: None,
                            })
                        })
                        .collect(),
                )
            })
            .clone();
        let idx = (hint % slots.len() as u64) as usize;
        let Some(slot) = slots.get(idx) else {
            return Err(BackendError::new(
                ErrorKind::Connect,
                &self.params.label(),
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
                let base = self.backoff.0.as_millis() as u64;
                let exp = base.saturating_mul(1u64 << s.failures.min(16).saturating_sub(1));
                let capped = exp.min(self.backoff.1.as_millis() as u64).max(1);
                // Full jitter in [capped/2, capped].
                let delay = capped / 2 + fastrand::u64(0..=capped / 2);
                s.next_attempt = Some(Instant::now() + Duration::from_millis(delay));
            }
            s.last_error = err;
            s.conn = None;
        }
        if let Some(t) = s.next_attempt {
            if Instant::now() < t {
                return Err(s.last_error.clone().unwrap_or_else(|| {
                    BackendError::new(ErrorKind::Connect, &self.params.label(), "is reconnecting")
                }));
            }
        }
        let c = Conn::spawn(self.params.clone(), key, self.outstanding.clone(), false);
        s.conn = Some(c.clone());
        Ok(c)
    }

    /// A new connection for one session alone.
    pub fn dedicated(&self, key: ConnKey) -> Arc<Conn> {
        Conn::spawn(self.params.clone(), key, Arc::new(AtomicU64::new(0)), true)
    }

    /// Close every shared connection (topology change, shutdown).
    pub fn close_all(&self, reason: &str) {
        for e in self.slots.iter() {
            for s in e.value().iter() {
                if let Some(c) = s.lock().conn.take() {
                    c.close(reason);
                }
            }
        }
    }
}
