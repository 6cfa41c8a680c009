//! Following Sentinel: real `redis-sentinel` processes (three) watch a master and two
//! replicas, all on free ports with short timeouts, and the proxy knows only the
//! Sentinels. The tests fail the master over (killed, or gracefully with `SENTINEL
//! FAILOVER`), restart the old master, and kill a Sentinel, and check the outcome on the
//! backends themselves.
//!
//! Replicas replicate directly (no relays): Sentinel re-points every replica at the
//! master it knows, which would bypass a relay.

use crate::common::*;
use redsplit::topology::{Health, View};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod credentials;
mod failover;
mod master_kill;

const NAME: &str = "redsplit";
/// Sentinel's `down-after-milliseconds`.
const DOWN_AFTER_MS: u64 = 500;
/// Sentinel's `failover-timeout`.
const FAILOVER_TIMEOUT_MS: u64 = 3000;
/// The read budget of the default rule.
const BUDGET_MS: u64 = 1000;
const DWELL_MS: u64 = 300;
/// How long a failover may take before a test gives up. Normally two seconds or so; a
/// machine that stalls for more than 2 s puts Sentinel in TILT mode, where it does
/// nothing for 30 s.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(45);

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A proxy configured with the Sentinels only.
fn sentinel_yaml(sentinels: &Sentinels, rules: &str) -> String {
    let addrs: Vec<String> = sentinels
        .addrs()
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect();
    format!(
        "backend:\n  sentinel:\n    addresses: [{}]\n    master_name: {NAME}\n    refresh_ms: 200\n\
         replication: {{poll_interval_ms: 50, dwell_ms: {DWELL_MS}}}\n\
         routing:\n  default: {{consistency: replica, max_lag_ms: {BUDGET_MS}}}\n{rules}",
        addrs.join(", ")
    )
}

/// A replica set, three Sentinels watching it, and the proxy in front, with both
/// replicas in the read pool. Dropped proxy first, servers last.
struct World {
    proxy: ProxyUnderTest,
    sentinels: Sentinels,
    set: ReplicaSet,
}

impl World {
    fn start(rules: &str) -> World {
        World::start_yaml(|s| sentinel_yaml(s, rules))
    }

    fn start_yaml(yaml: impl FnOnce(&Sentinels) -> String) -> World {
        init_logs();
        let set = ReplicaSet::start(2, false);
        let sentinels = Sentinels::start(3, &set.master, NAME, DOWN_AFTER_MS, FAILOVER_TIMEOUT_MS);
        let proxy = ProxyUnderTest::start(&yaml(&sentinels));
        proxy.wait_in_pool(2);
        let v = proxy.state().view.load();
        assert_eq!(
            v.master.as_ref().map(|m| m.backend.addr.clone()),
            Some(set.master.addr().to_string()),
            "the proxy found the master through Sentinel"
        );
        World {
            proxy,
            sentinels,
            set,
        }
    }

    /// The server listening at `addr`.
    fn server(&self, addr: SocketAddr) -> &RedisServer {
        std::iter::once(&self.set.master)
            .chain(&self.set.replicas)
            .find(|s| s.addr() == addr)
            .unwrap_or_else(|| panic!("no server at {addr}"))
    }

    fn view(&self) -> Arc<View> {
        self.proxy.state().view.load_full()
    }

    /// Wait until the proxy writes to a confirmed master other than `old`, that the
    /// live Sentinels name too; returns it and when the proxy was seen using it.
    fn wait_new_master(&self, old: SocketAddr) -> (SocketAddr, Instant) {
        let mut seen = None;
        wait_until("the proxy follows the failover", FAILOVER_DEADLINE, || {
            let v = self.view();
            let Some(m) = v.master.as_ref() else {
                return false;
            };
            if m.backend.addr == old.to_string() {
                return false;
            }
            seen.get_or_insert_with(Instant::now);
            m.up && self.sentinels.master_addr().map(|a| a.to_string())
                == Some(m.backend.addr.clone())
        });
        let addr: SocketAddr = self
            .view()
            .master
            .as_ref()
            .unwrap()
            .backend
            .addr
            .parse()
            .unwrap();
        (addr, seen.unwrap())
    }
}

/// When each Sentinel published `+switch-master`, from a subscription per Sentinel.
struct SwitchWatch {
    seen: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl SwitchWatch {
    fn start(sentinels: &Sentinels) -> SwitchWatch {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let threads = sentinels
            .addrs()
            .into_iter()
            .map(|addr| {
                let (seen, stop, ready) = (seen.clone(), stop.clone(), ready_tx.clone());
                std::thread::spawn(move || {
                    let Ok(mut c) = try_connect(addr) else {
                        let _ = ready.send(());
                        return;
                    };
                    let mut ps = c.as_pubsub();
                    ps.subscribe("+switch-master").expect("subscribe");
                    ps.set_read_timeout(Some(Duration::from_millis(50)))
                        .unwrap();
                    let _ = ready.send(());
                    while !stop.load(Ordering::Relaxed) {
                        match ps.get_message() {
                            Ok(_) => seen.lock().unwrap().push(Instant::now()),
                            Err(e) if e.is_timeout() => {}
                            Err(_) => return,
                        }
                    }
                })
            })
            .collect::<Vec<_>>();
        for _ in 0..threads.len() {
            ready_rx.recv().unwrap();
        }
        SwitchWatch {
            seen,
            stop,
            threads,
        }
    }

    /// The first and last `+switch-master`, once at least one was published.
    fn first_and_last(&self) -> Option<(Instant, Instant)> {
        let s = self.seen.lock().unwrap();
        Some((*s.iter().min()?, *s.iter().max()?))
    }

    /// Waits until `n` Sentinels published `+switch-master`.
    fn wait_published_by(&self, n: usize) {
        wait_until(
            &format!("{n} Sentinels published +switch-master"),
            FAILOVER_DEADLINE,
            || self.seen.lock().unwrap().len() >= n,
        );
    }

    /// Waits until a Sentinel publishes `+switch-master`.
    fn wait_published(&self) {
        wait_until(
            "a Sentinel published +switch-master",
            FAILOVER_DEADLINE,
            || self.first_and_last().is_some(),
        );
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
    }
}

/// One request of a load loop.
#[derive(Clone, Debug)]
struct Op {
    n: u64,
    sent: Instant,
    done: Instant,
    err: Option<String>,
}

/// A load loop in the background ([`load`]).
struct Load {
    thread: JoinHandle<Vec<Op>>,
    /// Requests that succeeded so far.
    ok: Arc<AtomicU64>,
}

impl Load {
    /// Waits until `n` more requests succeeded than when called.
    fn wait_ok(&self, n: u64, what: &str) {
        let from = self.ok.load(Ordering::Relaxed);
        wait_until(what, FAILOVER_DEADLINE, || {
            self.ok.load(Ordering::Relaxed) >= from + n
        });
    }

    /// Every request, in order, once `stop` is set.
    fn join(self) -> std::thread::Result<Vec<Op>> {
        self.thread.join()
    }
}

/// Run `f(conn, n)` for n = 1, 2, … through the proxy until `stop`, pausing `pace`
/// between requests; reconnects after a broken connection.
fn load(
    addr: SocketAddr,
    stop: &Arc<AtomicBool>,
    pace: Duration,
    f: impl Fn(&mut redis::Connection, u64) -> redis::RedisResult<()> + Send + 'static,
) -> Load {
    let stop = stop.clone();
    let ok = Arc::new(AtomicU64::new(0));
    let counted = ok.clone();
    let thread = std::thread::spawn(move || {
        let mut ops = Vec::new();
        let mut conn = connect(addr);
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let sent = Instant::now();
            let r = f(&mut conn, n);
            let done = Instant::now();
            let broken = r
                .as_ref()
                .is_err_and(|e| e.is_unrecoverable_error() || e.is_timeout());
            if r.is_ok() {
                counted.fetch_add(1, Ordering::Relaxed);
            }
            ops.push(Op {
                n,
                sent,
                done,
                err: r.err().map(|e| e.to_string()),
            });
            if broken {
                conn = connect(addr);
            }
            std::thread::sleep(pace);
        }
        ops
    });
    Load { thread, ok }
}

/// Sample the proxy's view every millisecond until `stop`: a replica in the read pool
/// must be healthy (link up, same replication history as the master) with a known
/// staleness within budget (plus the time until the monitor's next publication), under
/// whichever master. Returns the number of samples.
fn pool_sampler(w: &World, stop: &Arc<AtomicBool>) -> JoinHandle<usize> {
    let (state, stop) = (w.proxy.state().clone(), stop.clone());
    std::thread::spawn(move || {
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            let v = state.view.load_full();
            let now = Instant::now();
            for r in v.replicas.iter().filter(|r| r.in_pool & 1 == 1) {
                let staleness = r.staleness_ms(now);
                assert!(
                    r.health == Health::Ok
                        && staleness.is_some_and(|s| s <= BUDGET_MS + 200)
                        && v.master.as_ref().is_none_or(|m| m.replid.is_some()),
                    "{} in the pool with health {:?}, staleness {staleness:?}",
                    r.backend.addr,
                    r.health,
                );
            }
            n += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
        n
    })
}

/// From the first failure's start to the last failure's end.
fn failure_window(ops: &[Op]) -> Option<(Instant, Instant)> {
    let first = ops.iter().find(|o| o.err.is_some())?;
    let last = ops.iter().rev().find(|o| o.err.is_some())?;
    Some((first.sent, last.done))
}

/// The longest run of consecutive failures, from its first start to its last end.
fn longest_failure_streak(ops: &[Op]) -> Duration {
    let mut longest = Duration::ZERO;
    let mut start: Option<Instant> = None;
    for o in ops {
        match (&o.err, start) {
            (Some(_), None) => {
                start = Some(o.sent);
                longest = longest.max(o.done - o.sent);
            }
            (Some(_), Some(s)) => longest = longest.max(o.done - s),
            (None, _) => start = None,
        }
    }
    longest
}

/// Distinct error messages and how often each came.
fn error_kinds(ops: &[Op]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for e in ops.iter().filter_map(|o| o.err.as_ref()) {
        *out.entry(e.clone()).or_default() += 1;
    }
    out
}

/// The values of `keys` on `server`, read directly.
fn values_on(server: &RedisServer, keys: &[String]) -> Vec<Option<String>> {
    let mut c = server.conn();
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(500) {
        let v: Vec<Option<String>> = redis::cmd("MGET").arg(chunk).query(&mut c).unwrap();
        out.extend(v);
    }
    out
}

/// Acknowledged writes of `ops` (keys `prefix{n}` holding `n`) missing on `server`.
fn missing_on(server: &RedisServer, prefix: &str, ops: &[&Op]) -> Vec<u64> {
    let keys: Vec<String> = ops.iter().map(|o| format!("{prefix}{}", o.n)).collect();
    values_on(server, &keys)
        .into_iter()
        .zip(ops)
        .filter(|(v, o)| v.as_deref() != Some(o.n.to_string().as_str()))
        .map(|(_, o)| o.n)
        .collect()
}
