//! Following Sentinel: real `redis-sentinel` processes (three) watch a master and two
//! replicas, all on free ports with short timeouts, and the proxy knows only the
//! Sentinels. The tests fail the master over (killed, or gracefully with `SENTINEL
//! FAILOVER`), restart the old master, and kill a Sentinel, and check the outcome on the
//! backends themselves.
//!
//! Replicas replicate directly (no relays): Sentinel re-points every replica at the
//! master it knows, which would bypass a relay.

use crate::common::*;
use redis::Value;
use redsplit::topology::{Health, View};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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

#[test]
fn master_killed_under_load_writes_move_to_the_new_master() {
    let mut w = World::start(
        "  rules:\n    - {name: durable, keys: ['d:*'], consistency: master, wait: {replicas: 1, timeout_ms: 1000}}\n",
    );
    let old = w.set.master.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let addr = w.proxy.addr;
    let writer = load(addr, &stop, Duration::from_millis(2), |c, n| {
        query(c, &["SET", &format!("w:{n}"), &n.to_string()]).map(drop)
    });
    let durable = load(addr, &stop, Duration::from_millis(2), |c, n| {
        query(c, &["SET", &format!("d:{n}"), &n.to_string()]).map(drop)
    });
    let reader = load(addr, &stop, Duration::from_millis(1), |c, n| {
        query(c, &["GET", &format!("w:{}", n % 500)]).map(drop)
    });
    let pool = pool_sampler(&w, &stop);
    let watch = SwitchWatch::start(&w.sentinels);
    writer.wait_ok(100, "writes flow");
    reader.wait_ok(100, "reads flow");
    let killed = Instant::now();
    w.set.master.kill();
    let (new, adopted) = w.wait_new_master(old);
    watch.wait_published();
    // Keep the load going on the new master for a while.
    writer.wait_ok(300, "writes flow on the new master");
    reader.wait_ok(300, "reads flow after the failover");
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().unwrap();
    let durables = durable.join().unwrap();
    let reads = reader.join().unwrap();
    let samples = pool.join().unwrap();
    // Every Sentinel switches (the last ones on the others' hello messages).
    watch.wait_published_by(w.sentinels.addrs().len());
    let (first_switch, last_switch) = watch.first_and_last().unwrap();
    watch.stop();

    let new_master = w.server(new);
    assert_eq!(new_master.role(), "master");
    let (fail_start, fail_end) =
        failure_window(&writes).expect("writes failed while no master was known");
    let window = fail_end - fail_start;
    let first_ok_after = writes
        .iter()
        .find(|o| o.err.is_none() && o.sent > killed)
        .map(|o| o.done - killed);
    let read_streak = longest_failure_streak(&reads);
    let slowest = writes
        .iter()
        .chain(&durables)
        .chain(&reads)
        .map(|o| o.done - o.sent)
        .max()
        .unwrap();
    eprintln!(
        "killed master: Sentinel +switch-master after {:?} (first) / {:?} (last); proxy used the new master after {:?}; \
         writes failed for {:?} (from {:?} to {:?} after the kill), first write ok on the new master {:?} after the kill; \
         longest read failure streak {:?}; slowest request {:?}",
        first_switch - killed,
        last_switch - killed,
        adopted - killed,
        window,
        fail_start.saturating_duration_since(killed),
        fail_end - killed,
        first_ok_after,
        read_streak,
        slowest,
    );
    eprintln!("{samples} views sampled: no replica was in the read pool without a known lag within budget");
    eprintln!(
        "writes: {} ok, {} failed {:?}; durable: {} ok, {} failed {:?}; reads: {} ok, {} failed {:?}",
        writes.iter().filter(|o| o.err.is_none()).count(),
        writes.iter().filter(|o| o.err.is_some()).count(),
        error_kinds(&writes),
        durables.iter().filter(|o| o.err.is_none()).count(),
        durables.iter().filter(|o| o.err.is_some()).count(),
        error_kinds(&durables),
        reads.iter().filter(|o| o.err.is_none()).count(),
        reads.iter().filter(|o| o.err.is_some()).count(),
        error_kinds(&reads),
    );

    // Writes failed only around the failover, and failed fast, never hanging.
    assert!(
        writes.iter().all(|o| o.err.is_none() || o.done >= killed),
        "no write failed before the kill"
    );
    assert!(
        slowest < Duration::from_secs(3),
        "no request hung: {slowest:?}"
    );
    for e in writes.iter().filter_map(|o| o.err.as_ref()) {
        assert!(e.contains("redsplit"), "a clear error from the proxy: {e}");
    }
    // After the window, every write was acknowledged and is on the new master.
    let after: Vec<&Op> = writes.iter().filter(|o| o.sent > fail_end).collect();
    assert!(
        after.len() > 100,
        "the load went on after the failover ({} writes)",
        after.len()
    );
    assert!(after.iter().all(|o| o.err.is_none()));
    let missing = missing_on(new_master, "w:", &after);
    assert!(
        missing.is_empty(),
        "acknowledged writes missing on the new master: {missing:?}"
    );
    // No durable write the proxy acknowledged was lost.
    let acked: Vec<&Op> = durables.iter().filter(|o| o.err.is_none()).collect();
    assert!(
        acked.iter().any(|o| o.sent > fail_end),
        "durable writes resumed"
    );
    let missing = missing_on(new_master, "d:", &acked);
    assert!(
        missing.is_empty(),
        "acknowledged durable writes lost: {missing:?}"
    );
    // Reads never failed for longer than writes did.
    assert!(
        read_streak <= window,
        "reads failed for {read_streak:?}, writes for {window:?}"
    );
    assert!(
        reads
            .iter()
            .filter(|o| o.sent > killed && o.done < fail_end && o.err.is_none())
            .count()
            > 0,
        "reads were served during the failover"
    );
    // The change was counted, and the old master left the topology.
    let v = w.view();
    assert!(v.replicas.iter().all(|r| r.backend.addr != old.to_string()));
    assert!(
        w.proxy
            .state()
            .metrics
            .topology_changes
            .load(Ordering::Relaxed)
            >= 1
    );
}

/// Reads never fail while the master is killed and Sentinel fails it over: a read whose
/// replica fails (Sentinel closes the client connections of each replica it
/// reconfigures) while no master is known goes to another replica that can answer, or
/// waits for the new master. Writes may fail in the gap.
#[test]
fn reads_never_fail_through_a_master_kill() {
    let mut w = World::start("");
    let old = w.set.master.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let addr = w.proxy.addr;
    let writer = load(addr, &stop, Duration::from_millis(2), |c, n| {
        query(c, &["SET", &format!("w:{n}"), &n.to_string()]).map(drop)
    });
    let readers: Vec<Load> = (0..2)
        .map(|i| {
            load(addr, &stop, Duration::from_millis(1), move |c, n| {
                query(c, &["GET", &format!("w:{}", (n + i) % 500)]).map(drop)
            })
        })
        .collect();
    for r in &readers {
        r.wait_ok(100, "reads flow");
    }
    writer.wait_ok(100, "writes flow");
    let killed = Instant::now();
    w.set.master.kill();
    let (new, adopted) = w.wait_new_master(old);
    // Past the reconfiguration of the other replica too.
    for r in &readers {
        r.wait_ok(500, "reads flow after the failover");
    }
    writer.wait_ok(300, "writes flow on the new master");
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().unwrap();
    let reads: Vec<Op> = readers
        .into_iter()
        .flat_map(|r| r.join().unwrap())
        .collect();
    let failed: Vec<&Op> = reads.iter().filter(|o| o.err.is_some()).collect();
    let during = reads
        .iter()
        .filter(|o| o.sent >= killed && o.done <= adopted)
        .count();
    let slowest = reads.iter().map(|o| o.done - o.sent).max().unwrap();
    eprintln!(
        "master killed: new master {new} used after {:?}; reads: {} ({during} while no new master was used), {} failed {:?}, slowest {slowest:?}; writes: {} failed {:?}",
        adopted - killed,
        reads.len(),
        failed.len(),
        error_kinds(&reads),
        writes.iter().filter(|o| o.err.is_some()).count(),
        error_kinds(&writes),
    );
    assert!(during > 0, "reads were sent during the failover");
    assert!(
        failed.is_empty(),
        "{} reads failed: {:?}",
        failed.len(),
        error_kinds(&reads)
    );
    assert_eq!(w.server(new).role(), "master");
}

/// Reads that a rule sends to the master, in flight on it when it is killed, are sent
/// again once Sentinel's new master is in use: none fails with the old master's lost
/// connection. Reads sent while no master can be used (none known, or the old one
/// refusing connections) are refused at once (their rule allows no replica), as writes
/// are.
#[test]
fn master_reads_in_flight_through_a_master_kill_are_retried() {
    let mut w =
        World::start("  rules:\n    - {name: strong, keys: ['m:*'], consistency: master}\n");
    let old = w.set.master.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let addr = w.proxy.addr;
    let readers: Vec<Load> = (0..3)
        .map(|i| {
            load(addr, &stop, Duration::ZERO, move |c, n| {
                // A pipeline, so that reads are always in flight on the master.
                let mut pipe = redis::pipe();
                for k in 0..8 {
                    pipe.cmd("GET").arg(format!("m:{}", (n * 8 + k + i) % 500));
                }
                pipe.query::<Vec<Option<String>>>(c).map(drop)
            })
        })
        .collect();
    for r in &readers {
        r.wait_ok(100, "reads flow");
    }
    let retries_before = w.proxy.state().metrics.retries.load(Ordering::Relaxed);
    w.set.master.kill();
    let (new, _) = w.wait_new_master(old);
    for r in &readers {
        r.wait_ok(300, "reads flow on the new master");
    }
    stop.store(true, Ordering::Relaxed);
    let reads: Vec<Op> = readers
        .into_iter()
        .flat_map(|r| r.join().unwrap())
        .collect();
    let kinds = error_kinds(&reads);
    let retries = w.proxy.state().metrics.retries.load(Ordering::Relaxed) - retries_before;
    eprintln!(
        "master killed, new master {new}: {} read pipelines, {retries} reads retried; failures {kinds:?}",
        reads.len()
    );
    // Refused before being sent: no master, or the old one refusing connections.
    let refused = |e: &str| {
        ["master is down", "no master", "unreachable", "reconnecting"]
            .iter()
            .any(|r| e.contains(r))
    };
    let lost: Vec<&String> = kinds.keys().filter(|e| !refused(e)).collect();
    assert!(
        lost.is_empty(),
        "reads failed with the old master's connection: {kinds:?}"
    );
    assert!(retries > 0, "no read was in flight on the killed master");
}

#[test]
fn graceful_failover() {
    let w = World::start("");
    let old = w.set.master.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let addr = w.proxy.addr;
    let writer = load(addr, &stop, Duration::from_millis(2), |c, n| {
        query(c, &["SET", &format!("w:{n}"), &n.to_string()]).map(drop)
    });
    let reader = load(addr, &stop, Duration::from_millis(1), |c, n| {
        query(c, &["GET", &format!("w:{}", n % 500)]).map(drop)
    });
    let watch = SwitchWatch::start(&w.sentinels);
    writer.wait_ok(100, "writes flow");
    reader.wait_ok(100, "reads flow");
    let started = Instant::now();
    w.sentinels.cmd(1, &["SENTINEL", "FAILOVER", NAME]);
    let (new, adopted) = w.wait_new_master(old);
    watch.wait_published();
    writer.wait_ok(300, "writes flow on the new master");
    reader.wait_ok(300, "reads flow after the failover");
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().unwrap();
    let reads = reader.join().unwrap();
    let (first_switch, _) = watch.first_and_last().unwrap();
    watch.stop();

    let failed: Vec<&Op> = writes.iter().filter(|o| o.err.is_some()).collect();
    let window = failure_window(&writes).map(|(a, b)| b - a);
    eprintln!(
        "SENTINEL FAILOVER: +switch-master after {:?}; proxy used the new master after {:?}; \
         {} of {} writes failed {:?} over {window:?}; {} reads failed {:?}",
        first_switch - started,
        adopted - started,
        failed.len(),
        writes.len(),
        error_kinds(&writes),
        reads.iter().filter(|o| o.err.is_some()).count(),
        error_kinds(&reads),
    );
    // No write fails: while the replica is promoted (the old master would lose what it
    // took then), writes wait for the new master instead.
    assert!(
        failed.is_empty(),
        "writes failed: {:?}",
        error_kinds(&writes)
    );
    let slowest = writes
        .iter()
        .map(|o| o.done - o.sent)
        .max()
        .unwrap_or_default();
    eprintln!("slowest write across the switch: {slowest:?}");
    assert!(
        slowest < Duration::from_secs(4),
        "a write waited {slowest:?} (hold is 3 s)"
    );
    // Every write the proxy acknowledged, before and after the switch, is on the new
    // master: none was taken by the old master once the new one was promoted.
    let new_master = w.server(new);
    let acked: Vec<&Op> = writes.iter().filter(|o| o.err.is_none()).collect();
    let missing = missing_on(new_master, "w:", &acked);
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
    // Reads kept being served.
    let read_streak = longest_failure_streak(&reads);
    assert!(
        read_streak < Duration::from_secs(1),
        "reads failed for {read_streak:?}"
    );
}

#[test]
fn old_master_restarted_rejoins_as_a_replica_once_in_sync() {
    let mut w = World::start("");
    let old = w.set.master.addr();
    let mut c = w.proxy.conn();
    for i in 0..100 {
        query(&mut c, &["SET", &format!("k:{i}"), &i.to_string()]).unwrap();
    }
    w.set.master.kill();
    let (new, _) = w.wait_new_master(old);
    // Written to the new master while the old one is away.
    query(&mut c, &["SET", "after", "failover"]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = load(w.proxy.addr, &stop, Duration::from_millis(1), |c, n| {
        query(c, &["GET", &format!("k:{}", n % 100)]).map(drop)
    });
    w.set.master.restart();
    let restarted = Instant::now();
    let old_server = &w.set.master;
    // It comes back as a master with no data, until Sentinel converts it.
    let mut in_view_as: Option<Instant> = None;
    let mut joined: Option<Instant> = None;
    let mut samples = 0;
    // Sentinel converts it after 8 s (longer in TILT mode, see FAILOVER_DEADLINE).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if Instant::now() >= deadline {
            panic!(
                "the old master did not rejoin the read pool; its INFO: {:?}; Sentinel 0 lists {:?} (INFO {:?}); the proxy sees {:?}",
                old_server.info("replication"),
                w.sentinels.replicas(0),
                w.sentinels.cmd(0, &["INFO", "sentinel"]),
                w.view().replicas,
            );
        }
        samples += 1;
        let served = old_server.calls("get");
        let v = w.view();
        assert!(
            v.master
                .as_ref()
                .is_some_and(|m| m.backend.addr == new.to_string()),
            "the master stays"
        );
        let entry = v
            .replicas
            .iter()
            .find(|r| r.backend.addr == old.to_string());
        if let Some(r) = entry {
            if in_view_as.is_none() {
                in_view_as = Some(Instant::now());
                let info = old_server.info("replication");
                assert_eq!(info["role"], "slave", "it joined only as a replica");
            }
            if r.in_pool & 1 == 1 && joined.is_none() {
                joined = Some(Instant::now());
                // Link up to the new master, same history, lag within budget.
                let info = old_server.info("replication");
                assert_eq!(info["master_link_status"], "up");
                assert_eq!(
                    format!("{}:{}", info["master_host"], info["master_port"]),
                    new.to_string()
                );
                assert_eq!(r.health, Health::Ok);
                let staleness = r.staleness_ms(Instant::now()).expect("known staleness");
                assert!(staleness <= BUDGET_MS, "staleness {staleness} ms");
            }
        }
        if joined.is_none() {
            assert_eq!(
                served, 0,
                "no read went to the old master before it joined the pool"
            );
        } else if served > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().unwrap();
    let joined = joined.unwrap();
    eprintln!(
        "old master restarted: in the topology after {:?}, in the read pool after {:?} ({samples} samples); {} reads, {} failed",
        in_view_as.map(|t| t - restarted),
        joined - restarted,
        reads.len(),
        reads.iter().filter(|o| o.err.is_some()).count(),
    );
    assert!(
        reads.iter().all(|o| o.err.is_none()),
        "reads kept being served"
    );
    // It holds the data, the write made while it was away included.
    assert_eq!(old_server.get("after").as_deref(), Some("failover"));
    assert_eq!(old_server.get("k:7").as_deref(), Some("7"));
    // PROXY STATUS shows it as a healthy replica in the pool.
    let status = query(&mut c, &["PROXY", "STATUS"]).unwrap();
    let Value::Array(rows) = status else {
        panic!("{status:?}")
    };
    let row = rows
        .iter()
        .map(|r| format!("{r:?}"))
        .find(|r| r.contains(&old.to_string()))
        .expect("the old master has a row");
    assert!(row.contains("replica") && row.contains("\"ok\""), "{row}");
}

#[test]
fn one_sentinel_down_the_proxy_still_follows() {
    let mut w = World::start("");
    let old = w.set.master.addr();
    // The first Sentinel of the list goes away before the failover.
    w.sentinels.kill(0);
    let mut c = w.proxy.conn();
    query(&mut c, &["SET", "before", "1"]).unwrap();
    w.set.master.kill();
    let killed = Instant::now();
    let (new, adopted) = w.wait_new_master(old);
    eprintln!(
        "one Sentinel down: the proxy used the new master {:?} after the kill",
        adopted - killed
    );
    let new_master = w.server(new);
    assert_eq!(new_master.role(), "master");
    // Writes go to the new master.
    wait_until(
        "a write through the proxy succeeds",
        Duration::from_secs(5),
        || query(&mut c, &["SET", "after", "2"]).is_ok(),
    );
    assert_eq!(new_master.get("after").as_deref(), Some("2"));
    assert_eq!(new_master.get("before").as_deref(), Some("1"));
    assert!(w
        .view()
        .replicas
        .iter()
        .all(|r| r.backend.addr != old.to_string()));
}

#[test]
fn sentinel_and_backend_credentials_are_used() {
    init_logs();
    let set = ReplicaSet::start(2, false);
    let sentinels = Sentinels::start(3, &set.master, NAME, DOWN_AFTER_MS, FAILOVER_TIMEOUT_MS);
    for i in 0..3 {
        sentinels.cmd(
            i,
            &[
                "ACL",
                "SETUSER",
                "watcher",
                "on",
                ">sentinel-pw",
                "allchannels",
                "+@all",
            ],
        );
    }
    for s in std::iter::once(&set.master).chain(&set.replicas) {
        s.cmd(&[
            "ACL",
            "SETUSER",
            "app",
            "on",
            ">node-pw",
            "allkeys",
            "allchannels",
            "+@all",
        ]);
    }
    let yaml = |sentinel_pw: &str| {
        sentinel_yaml(&sentinels, "").replacen(
            "backend:\n  sentinel:\n",
            &format!(
                "backend:\n  username: app\n  password: node-pw\n  sentinel:\n    username: watcher\n    password: {sentinel_pw}\n"
            ),
            1,
        )
    };
    let proxy = ProxyUnderTest::start(&yaml("sentinel-pw"));
    proxy.wait_in_pool(2);
    let mut c = proxy.conn();
    query(&mut c, &["SET", "k", "v"]).unwrap();
    assert_eq!(set.master.get("k").as_deref(), Some("v"));
    // The proxy's connections (named `redsplit`) authenticated as the configured users.
    let users = |list: Value| -> Vec<String> {
        value_text(&list)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("name=redsplit"))
            .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("user=")))
            .map(String::from)
            .collect()
    };
    for i in 0..3 {
        let u = users(sentinels.cmd(i, &["CLIENT", "LIST"]));
        assert!(
            !u.is_empty() && u.iter().all(|u| u == "watcher"),
            "sentinel {i}: {u:?}"
        );
    }
    for s in std::iter::once(&set.master).chain(&set.replicas) {
        let u = users(s.cmd(&["CLIENT", "LIST"]));
        assert!(
            !u.is_empty() && u.iter().all(|u| u == "app"),
            "{}: {u:?}",
            s.addr()
        );
    }
    // With a wrong Sentinel password nothing is discovered: writes fail fast.
    for i in 0..3 {
        sentinels.cmd(i, &["ACL", "LOG", "RESET"]);
    }
    let wrong = ProxyUnderTest::start(&yaml("wrong"));
    // Every Sentinel refuses the proxy's login several times: the refresher asks all of
    // them at start and again every 100 ms while nothing is discovered, whereas a
    // subscriber alone, backing off, is refused five times only after 1.5 s. So the
    // refresher has been refused too, and found no master.
    wait_until(
        "every Sentinel refused the wrong password five times",
        Duration::from_secs(10),
        || (0..3).all(|i| refused_logins(&sentinels, i, "watcher") >= 5),
    );
    assert!(wrong.state().view.load().master.is_none());
    let e = query(&mut wrong.conn(), &["SET", "k", "w"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("no master is known"), "{e}");
}

/// How many logins as `user` Sentinel `i` refused since its `ACL LOG` was last reset
/// (the log counts repeats of one refusal in a single entry).
fn refused_logins(sentinels: &Sentinels, i: usize, user: &str) -> i64 {
    let Ok(Value::Array(entries)) = sentinels.try_cmd(i, &["ACL", "LOG"]) else {
        return 0;
    };
    let field = |entry: &[Value], name: &str| {
        entry
            .chunks(2)
            .find(|kv| kv.first().and_then(value_text).as_deref() == Some(name))
            .and_then(|kv| kv.get(1).cloned())
    };
    let text = |entry: &[Value], name: &str| field(entry, name).as_ref().and_then(value_text);
    entries
        .iter()
        .filter_map(|e| match e {
            Value::Array(entry)
                if text(entry, "reason").as_deref() == Some("auth")
                    && text(entry, "username").as_deref() == Some(user) =>
            {
                match field(entry, "count") {
                    Some(Value::Int(n)) => Some(n),
                    _ => None,
                }
            }
            _ => None,
        })
        .sum()
}

#[test]
fn readonly_from_the_master_triggers_a_check_at_once() {
    // Periodic refreshes are a minute apart: only the READONLY reply can trigger a check.
    let w =
        World::start_yaml(|s| sentinel_yaml(s, "").replace("refresh_ms: 200", "refresh_ms: 60000"));
    let elsewhere = RedisServer::start();
    let mut c = w.proxy.conn();
    query(&mut c, &["SET", "k", "1"]).unwrap();
    // The master becomes a replica behind the proxy's and Sentinel's backs.
    let port = elsewhere.port().to_string();
    w.set.master.cmd(&["REPLICAOF", "127.0.0.1", &port]);
    let e = query(&mut c, &["SET", "k", "2"]).unwrap_err().to_string();
    assert!(
        e.contains("read only replica"),
        "the write got READONLY: {e}"
    );
    let refused = Instant::now();
    let state = w.proxy.state().clone();
    wait_until(
        "the proxy stops writing to a node that says it is a replica",
        Duration::from_secs(2),
        || state.view.load().master.is_none(),
    );
    let took = refused.elapsed();
    eprintln!("READONLY: the proxy dropped the master {took:?} after the refused write");
    assert!(took < Duration::from_secs(1), "{took:?}");
    let e = query(&mut c, &["SET", "k", "3"]).unwrap_err().to_string();
    assert!(e.contains("no master is known"), "{e}");
}
