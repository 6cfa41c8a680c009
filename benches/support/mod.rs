//! Fixtures shared by the benchmarks: a proxy state built from the shipped `proxy.yaml`
//! with a healthy master and two fresh replicas, the wire bytes of typical requests and
//! replies, and [`route_one`], the per-request decisions a session makes for a plain
//! command, in the order it makes them.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use redsplit::backend::Role;
use redsplit::commands::{self, Class};
use redsplit::config::Config;
use redsplit::protocol::{encode_command, Request};
use redsplit::proxy::Proxy;
use redsplit::router::{self, Decision, SessionReads};
use redsplit::topology::{Backend, MasterView, ReplicaView, View};

/// A key no rule of the shipped `proxy.yaml` matches: it walks every rule and lands on
/// `routing.default` (replica, 1000 ms, read-your-writes), the common case.
pub const KEY: &[u8] = b"key:000000001234";
/// A key the `feeds` rule of the shipped `proxy.yaml` matches.
pub const FEED_KEY: &[u8] = b"feed:000000001234";

/// The proxy state a session reads per request: settings (policy, deny list, limits) and
/// the topology snapshot, both behind `ArcSwap` as in the running proxy.
pub struct World {
    /// Shared state, its `view` holding [`World::now`]'s snapshot.
    pub proxy: Arc<Proxy>,
    /// The instant the snapshot's staleness figures are relative to.
    pub now: Instant,
}

/// The shipped `proxy.yaml` (its defaults: master 127.0.0.1:6379, replicas :6380 and
/// :6381), with a view in which the master is up and both replicas are healthy, 20 ms
/// and 40 ms stale, in every pool.
pub fn world() -> World {
    let cfg = Config::from_yaml(include_str!("../../proxy.yaml")).expect("proxy.yaml loads");
    let now = Instant::now();
    let view = view(&cfg, now);
    let proxy = Proxy::new(cfg, None).expect("settings build");
    proxy.view.store(Arc::new(view));
    World { proxy, now }
}

fn view(cfg: &Config, now: Instant) -> View {
    let master = cfg.backend.master.clone().expect("a static master");
    let replicas = cfg
        .backend
        .replicas
        .iter()
        .enumerate()
        .map(|(i, addr)| ReplicaView {
            backend: Backend::new(addr, Role::Replica, cfg, &Default::default()),
            health: redsplit::topology::Health::Ok,
            reachable: true,
            offset: Some(1_000_000),
            lag_bytes: Some(14 * i as u64),
            fresh_as_of: Some(now - Duration::from_millis(20 * (i as u64 + 1))),
            in_pool: u64::MAX,
        })
        .collect();
    View {
        epoch: 1,
        taken: now,
        master: Some(MasterView {
            backend: Backend::new(&master, Role::Master, cfg, &Default::default()),
            up: true,
            down: false,
            offset: Some(1_000_000),
            replid: None,
        }),
        replicas,
        // `Proxy::new` compiles the policy as generation 1.
        policy_gen: 1,
        write_rate: 0.0,
        shard: 0,
        switching: false,
        cluster: None,
    }
}

/// The RESP encoding of a command.
pub fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_command(&mut out, args.iter().copied());
    out
}

/// `GET key`.
pub fn get(key: &[u8]) -> Vec<u8> {
    command(&[b"GET", key])
}

/// `SET key <value of value_len bytes>`.
pub fn set(key: &[u8], value_len: usize) -> Vec<u8> {
    command(&[b"SET", key, &vec![b'x'; value_len]])
}

/// `MGET` of `n` keys, the first a `feeds` key and the rest default keys.
pub fn mget(n: usize) -> Vec<u8> {
    let keys: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            if i == 0 {
                FEED_KEY.to_vec()
            } else {
                format!("key:{i:012}").into_bytes()
            }
        })
        .collect();
    let mut args: Vec<&[u8]> = vec![b"MGET"];
    args.extend(keys.iter().map(|k| k.as_slice()));
    command(&args)
}

/// `n` copies of `one`, back to back: a client pipeline.
pub fn pipeline(one: &[u8], n: usize) -> Vec<u8> {
    one.repeat(n)
}

/// A bulk-string reply of `len` bytes.
pub fn bulk_reply(len: usize) -> Vec<u8> {
    let mut out = format!("${len}\r\n").into_bytes();
    out.resize(out.len() + len, b'x');
    out.extend_from_slice(b"\r\n");
    out
}

/// A nested array reply shaped like `XRANGE` output: 10 entries, each an id and a field
/// list of 4 bulk strings.
pub fn nested_reply() -> Vec<u8> {
    let mut out = b"*10\r\n".to_vec();
    for i in 0..10 {
        let id = format!("1700000000000-{i}");
        out.extend_from_slice(format!("*2\r\n${}\r\n{id}\r\n*4\r\n", id.len()).as_bytes());
        for f in ["field", "value-of-16-bytes", "count", "12"] {
            out.extend_from_slice(format!("${}\r\n{f}\r\n", f.len()).as_bytes());
        }
    }
    out
}

/// What routing decided for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routed {
    /// A read, routed by the policy and the snapshot.
    Read(Decision),
    /// A write (to the master unless there is none), with its durability rule if any.
    Write(Decision, bool),
    /// Anything else (connection, transaction, pub/sub, blocking, denied, unknown): not
    /// what these benchmarks exercise.
    Other,
}

/// The decisions a session makes for one plain request once it is parsed: look the
/// command up, check the deny list, classify, find its keys, resolve the policy level
/// and route it against the snapshot. Mirrors `Session::dispatch` for the classes a
/// plain GET or SET takes; the snapshots are loaded once per batch, as there.
pub fn route_one(
    req: &Request,
    settings: &redsplit::proxy::Settings,
    view: &View,
    sess: &SessionReads,
    now: Instant,
) -> Routed {
    let Some(cmd) = commands::lookup(req) else {
        return Routed::Other;
    };
    if settings.deny.denies(cmd) || commands::is_blocking(cmd, req) {
        return Routed::Other;
    }
    let policy = &settings.policy;
    match cmd.class {
        Class::Read => {
            let resolved =
                policy.resolve(cmd, |f| commands::for_each_key(cmd, req, |i| f(req.arg(i))));
            policy.count_hit(resolved.rule);
            Routed::Read(router::route_read(&resolved.level, sess, policy, view, now))
        }
        Class::Write | Class::Admin => {
            let wait = if policy.rules.iter().any(|r| r.wait.is_some()) {
                policy
                    .resolve(cmd, |f| commands::for_each_key(cmd, req, |i| f(req.arg(i))))
                    .wait
            } else {
                None
            };
            Routed::Write(router::route_write(view), wait.is_some())
        }
        _ => Routed::Other,
    }
}
