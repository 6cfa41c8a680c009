//! [`RedisCluster`]: a real Redis Cluster (masters, their replicas), created with
//! `redis-cli --cluster create`, with slot migration, failover and replication-lag
//! injection for one shard.
//!
//! Each node is a [`RedisServer`] (its own temp dir, killed on drop) started with
//! `--cluster-enabled yes`. A node's cluster bus listens on its port + 10000, so ports come
//! from [`free_cluster_port`], which checks both, and a start that loses either port to
//! another process retries on new ones.
//!
//! Lag for real: with [`ClusterOptions::relay_replica_of_shard`], the master of that
//! shard announces a [`Relay`]'s port to the cluster (`--cluster-announce-port`; its bus
//! port is announced unchanged, so cluster gossip goes straight to it). Every node, and
//! so its replica (which replicates from the address the cluster gives for its master),
//! and every client that follows `CLUSTER SLOTS`, `-MOVED` or `-ASK`, reaches it through
//! the relay. The relay is [`Relay::start_replication_only`]: it holds or delays only the
//! replication link (the connection whose client sent `REPLCONF`/`PSYNC`), while client
//! connections through it keep flowing. [`RedisCluster::pause_replication`] holds the
//! stream: the replica's link stays up (up to `repl-timeout`, 10 s) and its offset stays
//! behind.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};

use redis::Value;

use super::client::{connect, parse_info, value_text};
use super::process::run_program;
use super::redis_server::RedisServer;
use super::relay::Relay;
use super::{local_addr, wait_until};

/// Deadline for a cluster to form (or to settle again after a failover or a migration):
/// every node `cluster_state:ok`, every view of the slots the same, every replica linked.
pub const CLUSTER_TIMEOUT: Duration = Duration::from_secs(30);

/// Number of hash slots of Redis Cluster.
pub const SLOT_COUNT: u16 = 16384;

/// A node's bus port is its client port plus this (Redis's default `cluster-port`).
const BUS_PORT_OFFSET: u16 = 10000;

/// Highest client port a node may get: its bus port must still be a port.
const MAX_NODE_PORT: u16 = u16::MAX - BUS_PORT_OFFSET - 1;

/// Fresh ports a node start tries when the process exits before serving.
const NODE_START_ATTEMPTS: usize = 5;

/// Poll interval of the cluster-wide checks, each a few commands per node: slower than
/// [`POLL_INTERVAL`](super::POLL_INTERVAL) so that polling does not load the nodes it
/// watches.
const CLUSTER_POLL: Duration = Duration::from_millis(20);

/// `MIGRATE`'s timeout, in milliseconds.
const MIGRATE_TIMEOUT_MS: u64 = 5000;

/// How [`RedisCluster::start_with`] builds the cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// `cluster-node-timeout` of every node: how long a node may be unreachable before it
    /// is flagged failing; a failover takes about 2 to 3 times this.
    pub node_timeout_ms: u64,
    /// Put the master of shard `i` (shards ordered by their first slot) behind a
    /// replication-only [`Relay`], so that [`RedisCluster::pause_replication`] can hold
    /// its replica's stream.
    pub relay_replica_of_shard: Option<usize>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            node_timeout_ms: 2000,
            relay_replica_of_shard: None,
        }
    }
}

/// A port `p` on 127.0.0.1 that was free a moment ago together with `p + 10000`, the bus
/// port a cluster node opens beside it; `p` stays below 55535.
pub fn free_cluster_port() -> u16 {
    for _ in 0..10_000 {
        let Ok(listener) = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)) else {
            continue;
        };
        let Ok(port) = listener.local_addr().map(|a| a.port()) else {
            continue;
        };
        if port <= MAX_NODE_PORT
            && TcpListener::bind((Ipv4Addr::LOCALHOST, port + BUS_PORT_OFFSET)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port p with p + {BUS_PORT_OFFSET} free too");
}

/// One range of `CLUSTER SLOTS`, as one node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotRange {
    /// First slot.
    pub start: u16,
    /// Last slot (inclusive).
    pub end: u16,
    /// The master serving it, at the address the cluster announces.
    pub master: SocketAddr,
    /// Its replicas that are not flagged failed, sorted.
    pub replicas: Vec<SocketAddr>,
}

impl SlotRange {
    /// Whether `slot` is in this range.
    pub fn contains(&self, slot: u16) -> bool {
        (self.start..=self.end).contains(&slot)
    }
}

/// What [`RedisCluster::replicas_of`] reads of one line of `CLUSTER NODES`.
struct NodeEntry {
    id: String,
    /// `myself`, `master`, `slave`, `fail?`, `fail`, `noaddr`, ...
    flags: Vec<String>,
    /// The master's id, for a replica.
    master_id: Option<String>,
}

impl NodeEntry {
    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

/// One node of the cluster.
struct Node {
    /// The address the cluster knows it by: its own, or the relay's for the relayed master.
    addr: SocketAddr,
    /// Its cluster node id (stable across restarts: it is kept in `nodes-<port>.conf`).
    id: String,
    server: RedisServer,
    /// False once [`RedisCluster::kill`] killed it (until [`RedisCluster::restart`]).
    alive: bool,
    /// Slot ranges it served when it was killed, for [`RedisCluster::wait_failover`].
    slots_at_kill: Vec<(u16, u16)>,
}

/// A Redis Cluster of real `redis-server` processes on 127.0.0.1, every one killed on
/// drop.
///
/// Nodes are named by the address the cluster announces for them (what `CLUSTER SLOTS`,
/// `-MOVED` and `-ASK` give): for the relayed master that is the relay's address. Methods
/// that take an address also accept a node's own port.
///
/// Nodes run with [`DEFAULT_REDIS_ARGS`](super::DEFAULT_REDIS_ARGS) plus
/// `cluster-allow-replica-migration no` (a replica never moves to another master, so the
/// shards keep the replicas they started with).
pub struct RedisCluster {
    /// Declared first: dropped before the servers.
    relay: Option<Relay>,
    /// In start order: the masters of shards 0, 1, ... first, then the replicas.
    nodes: Vec<Node>,
    /// Index in `nodes` of the node behind `relay`.
    relayed: Option<usize>,
    node_timeout: Duration,
}

impl RedisCluster {
    /// `masters` masters (at least 3, as `redis-cli --cluster create` wants) with
    /// `replicas_per_master` replicas each and the default [`ClusterOptions`].
    pub fn start(masters: usize, replicas_per_master: usize) -> RedisCluster {
        Self::start_with(masters, replicas_per_master, ClusterOptions::default())
    }

    /// Starts the nodes, creates the cluster with `redis-cli --cluster create` and returns
    /// once every node reports `cluster_state:ok`, every node gives the same `CLUSTER
    /// SLOTS` (replicas included), and every replica has its link up and has received a
    /// write its master made after the link came up (so the stream flows).
    ///
    /// Shard `i` (the one with the `i`-th lowest slots) has the `i`-th seed as master;
    /// which replica goes to which master is `redis-cli`'s choice (it shuffles them), ask
    /// [`RedisCluster::replicas_of`].
    pub fn start_with(
        masters: usize,
        replicas_per_master: usize,
        opts: ClusterOptions,
    ) -> RedisCluster {
        assert!(
            masters >= 3,
            "redis-cli --cluster create needs at least 3 masters"
        );
        if let Some(shard) = opts.relay_replica_of_shard {
            assert!(shard < masters, "no shard {shard} among {masters}");
        }
        let mut relay = None;
        let mut nodes = Vec::new();
        for i in 0..masters * (1 + replicas_per_master) {
            let relayed = opts.relay_replica_of_shard == Some(i);
            let (server, node_relay) = start_node(opts.node_timeout_ms, relayed);
            let addr = node_relay.as_ref().map_or(server.addr(), Relay::addr);
            let id = value_text(&server.cmd(&["CLUSTER", "MYID"])).expect("CLUSTER MYID");
            if node_relay.is_some() {
                relay = node_relay;
            }
            nodes.push(Node {
                addr,
                id,
                server,
                alive: true,
                slots_at_kill: Vec::new(),
            });
        }
        let cluster = RedisCluster {
            relay,
            nodes,
            relayed: opts.relay_replica_of_shard,
            node_timeout: Duration::from_millis(opts.node_timeout_ms),
        };

        let mut cmd = Command::new("redis-cli");
        cmd.args(["--cluster", "create"])
            .args(cluster.seeds().iter().map(SocketAddr::to_string))
            .args(["--cluster-replicas", &replicas_per_master.to_string()])
            .arg("--cluster-yes");
        let created = run_program("redis-cli --cluster create", cmd, CLUSTER_TIMEOUT);
        assert!(
            created.status.success() && created.stdout.contains("All 16384 slots covered"),
            "redis-cli --cluster create failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            created.status,
            created.stdout,
            created.stderr
        );

        cluster.wait_ready(CLUSTER_TIMEOUT);
        let expected: Vec<SocketAddr> = cluster.nodes[..masters].iter().map(|n| n.addr).collect();
        assert_eq!(
            cluster.masters(),
            expected,
            "redis-cli gives shard i to the i-th seed"
        );
        for master in &expected {
            assert_eq!(
                cluster.replicas_of(*master).len(),
                replicas_per_master,
                "replicas of {master}"
            );
        }
        cluster.wait_streaming(CLUSTER_TIMEOUT);
        cluster
    }

    // -----------------------------------------------------------------------------------
    // Nodes
    // -----------------------------------------------------------------------------------

    /// Every node's address, in start order (masters of shards 0, 1, ... first), killed
    /// ones included: seeds for a cluster client.
    pub fn seeds(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.addr).collect()
    }

    /// `cluster-node-timeout` of the nodes.
    pub fn node_timeout(&self) -> Duration {
        self.node_timeout
    }

    fn index_of(&self, addr: SocketAddr) -> usize {
        self.nodes
            .iter()
            .position(|n| n.addr == addr || n.server.addr() == addr)
            .unwrap_or_else(|| panic!("{addr} is not a node of this cluster"))
    }

    fn live(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.alive)
    }

    /// The node at `addr` (announced or own address). Its helpers (`cmd`, `info`,
    /// `repl_offset`, ...) talk to its own port, never through the relay.
    ///
    /// # Panics
    /// When no node has that address.
    pub fn node(&self, addr: SocketAddr) -> &RedisServer {
        &self.nodes[self.index_of(addr)].server
    }

    /// The cluster node id of the node at `addr`.
    pub fn node_id(&self, addr: SocketAddr) -> &str {
        &self.nodes[self.index_of(addr)].id
    }

    /// Whether the node at `addr` runs (was not [`RedisCluster::kill`]ed).
    pub fn is_alive(&self, addr: SocketAddr) -> bool {
        self.nodes[self.index_of(addr)].alive
    }

    /// A new blocking connection to the node at its announced address (through the relay
    /// for the relayed master, as a cluster client would connect).
    pub fn conn(&self, addr: SocketAddr) -> redis::Connection {
        connect(self.nodes[self.index_of(addr)].addr)
    }

    /// Runs one command on the node at `addr`, panicking on any error reply.
    pub fn cmd(&self, addr: SocketAddr, args: &[&str]) -> Value {
        self.node(addr).cmd(args)
    }

    /// SIGKILLs the node at `addr`. A master's slots are remembered for
    /// [`RedisCluster::wait_failover`]. The other nodes flag it failed after the node
    /// timeout.
    pub fn kill(&mut self, addr: SocketAddr) {
        let i = self.index_of(addr);
        let slots = self.slots_of(self.nodes[i].addr);
        let node = &mut self.nodes[i];
        node.server.kill();
        node.alive = false;
        node.slots_at_kill = slots;
    }

    /// Starts a killed node again, on the same port with the same `nodes-<port>.conf`: it
    /// rejoins with its old id (a master whose slots were failed over comes back as a
    /// replica of the new master). Returns at once; [`RedisCluster::wait_ready`] waits
    /// until the cluster agrees on it again.
    pub fn restart(&mut self, addr: SocketAddr) {
        let i = self.index_of(addr);
        let node = &mut self.nodes[i];
        node.server.restart();
        node.alive = true;
        node.slots_at_kill.clear();
    }

    // -----------------------------------------------------------------------------------
    // Topology, as the cluster tells it
    // -----------------------------------------------------------------------------------

    /// Asks `f` of the live nodes in start order and returns the first answer.
    fn ask<T>(&self, what: &str, mut f: impl FnMut(&Node) -> Result<T, String>) -> T {
        let mut errors = Vec::new();
        for node in self.live() {
            match f(node) {
                Ok(answer) => return answer,
                Err(e) => errors.push(format!("{}: {e}", node.addr)),
            }
        }
        panic!("no live node answers {what}: {errors:?}")
    }

    /// `CLUSTER SLOTS` of the node at `addr`, sorted by first slot.
    pub fn slots_view(&self, addr: SocketAddr) -> Result<Vec<SlotRange>, String> {
        slots_view(self.node(addr))
    }

    /// `CLUSTER SLOTS` as the first live node answers it.
    pub fn slot_ranges(&self) -> Vec<SlotRange> {
        self.ask("CLUSTER SLOTS", |n| slots_view(&n.server))
    }

    /// The masters that serve slots now, ordered by their first slot (asked from the
    /// cluster).
    pub fn masters(&self) -> Vec<SocketAddr> {
        let mut masters: Vec<SocketAddr> = Vec::new();
        for range in self.slot_ranges() {
            if !masters.contains(&range.master) {
                masters.push(range.master);
            }
        }
        masters
    }

    /// The replicas of `master` now (from `CLUSTER NODES`: not flagged failed, not
    /// killed), in start order.
    pub fn replicas_of(&self, master: SocketAddr) -> Vec<SocketAddr> {
        let id = self.node_id(master).to_owned();
        let entries = self.ask("CLUSTER NODES", |n| nodes_view(&n.server));
        self.nodes
            .iter()
            .filter(|n| n.alive)
            .filter(|n| {
                entries.iter().any(|e| {
                    e.id == n.id
                        && e.master_id.as_deref() == Some(id.as_str())
                        && !e.has_flag("fail")
                        && !e.has_flag("noaddr")
                })
            })
            .map(|n| n.addr)
            .collect()
    }

    /// The slot ranges `master` serves now (empty for a replica).
    pub fn slots_of(&self, master: SocketAddr) -> Vec<(u16, u16)> {
        let master = self.nodes[self.index_of(master)].addr;
        self.slot_ranges()
            .into_iter()
            .filter(|r| r.master == master)
            .map(|r| (r.start, r.end))
            .collect()
    }

    /// The hash slot of `key` (CRC16 of the key, or of its `{hash tag}`, mod 16384).
    pub fn slot_of(key: &str) -> u16 {
        redis_protocol::redis_keyslot(key.as_bytes())
    }

    /// The master that serves `slot` now (asked with `CLUSTER SLOTS`).
    pub fn owner_of_slot(&self, slot: u16) -> SocketAddr {
        self.slot_ranges()
            .into_iter()
            .find(|r| r.contains(slot))
            .map(|r| r.master)
            .unwrap_or_else(|| panic!("no master serves slot {slot}"))
    }

    /// A key `<prefix><n>` whose slot `master` serves now.
    pub fn key_in_slot_of(&self, master: SocketAddr, prefix: &str) -> String {
        let slots = self.slots_of(master);
        assert!(!slots.is_empty(), "{master} serves no slots");
        find_key(prefix, |slot| {
            slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
        })
    }

    /// A key `<prefix><n>` in `slot`.
    pub fn key_in_slot(slot: u16, prefix: &str) -> String {
        find_key(prefix, |s| s == slot)
    }

    // -----------------------------------------------------------------------------------
    // Waiting for the cluster
    // -----------------------------------------------------------------------------------

    /// Why the cluster is not settled, or `Ok`: every live node reports
    /// `cluster_state:ok`, every live node gives the same `CLUSTER SLOTS`, whose replicas
    /// are exactly the live nodes that report `role:slave`, each with its link up.
    pub fn check_ready(&self) -> Result<(), String> {
        let mut first: Option<(SocketAddr, Vec<SlotRange>)> = None;
        let mut replicas = BTreeSet::new();
        for node in self.live() {
            let info = node
                .server
                .try_cmd(&["CLUSTER", "INFO"])
                .map_err(|e| format!("CLUSTER INFO on {}: {e}", node.addr))?;
            let info = parse_info(&value_text(&info).unwrap_or_default());
            let state = info.get("cluster_state").map_or("?", String::as_str);
            if state != "ok" {
                return Err(format!("{} reports cluster_state:{state}", node.addr));
            }
            let view = slots_view(&node.server)?;
            match &first {
                None => first = Some((node.addr, view)),
                Some((a, seen)) if *seen != view => {
                    return Err(format!(
                        "{a} and {} disagree on CLUSTER SLOTS: {seen:?} vs {view:?}",
                        node.addr
                    ))
                }
                Some(_) => {}
            }
            let repl = node
                .server
                .try_cmd(&["INFO", "replication"])
                .map_err(|e| format!("INFO on {}: {e}", node.addr))?;
            let repl = parse_info(&value_text(&repl).unwrap_or_default());
            if repl.get("role").map(String::as_str) == Some("slave") {
                let link = repl.get("master_link_status").map_or("?", String::as_str);
                if link != "up" {
                    return Err(format!(
                        "replica {} has master_link_status:{link}",
                        node.addr
                    ));
                }
                replicas.insert(node.addr);
            }
        }
        let Some((_, view)) = first else {
            return Err("no node is alive".to_owned());
        };
        let listed: BTreeSet<SocketAddr> = view
            .iter()
            .flat_map(|r| r.replicas.iter().copied())
            .collect();
        if listed != replicas {
            return Err(format!(
                "CLUSTER SLOTS lists replicas {listed:?}, the nodes with role:slave are {replicas:?}"
            ));
        }
        Ok(())
    }

    /// Waits until [`RedisCluster::check_ready`] holds.
    ///
    /// # Panics
    /// After `timeout`, with the last reason it did not hold.
    pub fn wait_ready(&self, timeout: Duration) {
        poll("the cluster is ready", timeout, || self.check_ready());
    }

    /// Each shard now: its master and the live replicas `CLUSTER SLOTS` lists for it.
    fn shards(&self) -> Vec<(SocketAddr, Vec<SocketAddr>)> {
        let mut shards: Vec<(SocketAddr, Vec<SocketAddr>)> = Vec::new();
        for range in self.slot_ranges() {
            if !shards.iter().any(|(m, _)| *m == range.master) {
                let replicas = range
                    .replicas
                    .into_iter()
                    .filter(|r| self.is_alive(*r))
                    .collect();
                shards.push((range.master, replicas));
            }
        }
        shards
    }

    /// Waits until every live replica has processed what its master had written when
    /// this was called (`slave_repl_offset ≥ master_repl_offset`).
    pub fn wait_synced(&self, timeout: Duration) {
        self.wait_offsets(timeout, 0);
    }

    /// Waits until every live replica has processed something its master wrote after
    /// this call (the master pings its replicas every second): after a diskless sync a
    /// replica's link is up before its master streams to it.
    fn wait_streaming(&self, timeout: Duration) {
        self.wait_offsets(timeout, 1);
    }

    fn wait_offsets(&self, timeout: Duration, beyond: u64) {
        let targets: Vec<(SocketAddr, SocketAddr, u64)> = self
            .shards()
            .into_iter()
            .flat_map(|(master, replicas)| {
                let target = self.node(master).repl_offset() + beyond;
                replicas.into_iter().map(move |r| (master, r, target))
            })
            .collect();
        for (master, replica, target) in targets {
            let server = self.node(replica);
            wait_until(
                &format!("replica {replica} of {master} reaches offset {target}"),
                timeout,
                || server.link_up() && server.repl_offset() >= target,
            );
        }
    }

    /// Waits until a replica of `old_master` (killed, or otherwise failing) serves all the
    /// slots `old_master` served and the cluster is ready again
    /// ([`RedisCluster::check_ready`]); returns the promoted replica.
    ///
    /// # Panics
    /// After `timeout`; or when `old_master` served no slots.
    pub fn wait_failover(&self, old_master: SocketAddr, timeout: Duration) -> SocketAddr {
        let i = self.index_of(old_master);
        let old = &self.nodes[i];
        let slots = if old.slots_at_kill.is_empty() {
            self.slots_of(old.addr)
        } else {
            old.slots_at_kill.clone()
        };
        assert!(!slots.is_empty(), "{old_master} serves no slots");
        poll(
            &format!("a replica of {old_master} takes over its slots"),
            timeout,
            || {
                self.check_ready()?;
                let ranges = self.slot_ranges();
                let owners: BTreeSet<SocketAddr> = ranges
                    .iter()
                    .filter(|r| slots.iter().any(|&(a, b)| r.start <= b && a <= r.end))
                    .map(|r| r.master)
                    .collect();
                match owners.into_iter().collect::<Vec<_>>().as_slice() {
                    [owner] if *owner != old.addr => Ok(*owner),
                    owners => Err(format!("the slots {slots:?} are served by {owners:?}")),
                }
            },
        )
    }

    // -----------------------------------------------------------------------------------
    // Slot migration
    // -----------------------------------------------------------------------------------

    /// Starts moving `slot` from `from` to `to`: `CLUSTER SETSLOT slot IMPORTING` on `to`,
    /// then `MIGRATING` on `from`. From now on `from` answers `-ASK` for keys of the slot
    /// it does not hold, and `to` serves them only after `ASKING`.
    pub fn begin_migration(&self, slot: u16, from: SocketAddr, to: SocketAddr) {
        let slot = slot.to_string();
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        self.cmd(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", from_id]);
        self.cmd(from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", to_id]);
    }

    /// Moves every key of `slot` from `from` to `to`, `batch` keys at a time (`CLUSTER
    /// GETKEYSINSLOT`, then `MIGRATE ... KEYS`, to `to`'s own port); returns how many.
    /// Needs [`RedisCluster::begin_migration`] first.
    pub fn migrate_keys(&self, slot: u16, from: SocketAddr, to: SocketAddr, batch: usize) -> usize {
        assert!(batch > 0, "a batch moves at least one key");
        let target = self.node(to).addr();
        let mut conn = connect(self.node(from).addr());
        let mut moved = 0;
        loop {
            let keys: Vec<Vec<u8>> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(batch)
                .query(&mut conn)
                .unwrap_or_else(|e| panic!("CLUSTER GETKEYSINSLOT {slot} on {from}: {e}"));
            if keys.is_empty() {
                return moved;
            }
            let _: Value = redis::cmd("MIGRATE")
                .arg(target.ip().to_string())
                .arg(target.port())
                .arg("")
                .arg(0)
                .arg(MIGRATE_TIMEOUT_MS)
                .arg("KEYS")
                .arg(&keys)
                .query(&mut conn)
                .unwrap_or_else(|e| panic!("MIGRATE of slot {slot} from {from} to {to}: {e}"));
            moved += keys.len();
        }
    }

    /// Ends a migration of `slot` to `to`: `CLUSTER SETSLOT slot NODE <to>` on `to` first,
    /// then on every other master; returns once every live node says `to` serves `slot`
    /// and the cluster is ready. The source must have no key of the slot left.
    pub fn finish_migration(&self, slot: u16, to: SocketAddr) {
        let to = self.nodes[self.index_of(to)].addr;
        let slot_text = slot.to_string();
        let to_id = self.node_id(to);
        let mut order = vec![to];
        order.extend(self.masters().into_iter().filter(|m| *m != to));
        for master in order {
            self.cmd(master, &["CLUSTER", "SETSLOT", &slot_text, "NODE", to_id]);
        }
        poll(
            &format!("every node says {to} serves slot {slot}"),
            CLUSTER_TIMEOUT,
            || {
                for node in self.live() {
                    let view = slots_view(&node.server)?;
                    let owner = view.iter().find(|r| r.contains(slot)).map(|r| r.master);
                    if owner != Some(to) {
                        return Err(format!("{} says {owner:?} serves it", node.addr));
                    }
                }
                self.check_ready()
            },
        );
    }

    /// Moves `slot` and its keys to `to` from the master serving it now: the three steps
    /// above in one.
    pub fn move_slot(&self, slot: u16, to: SocketAddr) {
        let from = self.owner_of_slot(slot);
        let to = self.nodes[self.index_of(to)].addr;
        assert_ne!(from, to, "{to} already serves slot {slot}");
        self.begin_migration(slot, from, to);
        self.migrate_keys(slot, from, to, 100);
        self.finish_migration(slot, to);
    }

    // -----------------------------------------------------------------------------------
    // Replication lag of the relayed shard
    // -----------------------------------------------------------------------------------

    /// The replication-only relay in front of the relayed master.
    ///
    /// # Panics
    /// When the cluster was started without [`ClusterOptions::relay_replica_of_shard`].
    pub fn relay(&self) -> &Relay {
        self.relay
            .as_ref()
            .expect("started without ClusterOptions::relay_replica_of_shard")
    }

    /// The address (the relay's) of the node started as master of the relayed shard.
    pub fn relayed_node(&self) -> Option<SocketAddr> {
        self.relayed.map(|i| self.nodes[i].addr)
    }

    /// Holds the relayed master's replication stream (its replica's link stays up, its
    /// offset stops). Clients going through the relay are not held.
    pub fn pause_replication(&self) {
        self.relay().pause();
    }

    /// Releases the held stream: the replica catches up.
    pub fn resume_replication(&self) {
        self.relay().resume();
    }

    /// Delays the relayed master's replication stream by `delay` (zero: off).
    pub fn set_replication_delay(&self, delay: Duration) {
        self.relay().set_delay(delay);
    }
}

/// Starts one cluster node on a port from [`free_cluster_port`], behind a new
/// replication-only relay when `relayed`; retries on new ports when it exits first.
fn start_node(node_timeout_ms: u64, relayed: bool) -> (RedisServer, Option<Relay>) {
    for _ in 0..NODE_START_ATTEMPTS {
        let port = free_cluster_port();
        let relay = relayed.then(|| Relay::start_replication_only(local_addr(port)));
        let mut args: Vec<String> = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            // Relative to the node's --dir: its own temp dir.
            &format!("nodes-{port}.conf"),
            "--cluster-node-timeout",
            &node_timeout_ms.to_string(),
            "--cluster-allow-replica-migration",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(relay) = &relay {
            args.extend([
                "--cluster-announce-port".to_owned(),
                relay.addr().port().to_string(),
                "--cluster-announce-bus-port".to_owned(),
                (port + BUS_PORT_OFFSET).to_string(),
            ]);
        }
        if let Some(server) = RedisServer::try_start_on(port, &args) {
            return (server, relay);
        }
    }
    panic!("no cluster node started in {NODE_START_ATTEMPTS} attempts (ports taken?)");
}

/// Polls `check` every [`CLUSTER_POLL`] until it returns `Ok`.
///
/// # Panics
/// When `timeout` passes first, with `what` and the last error.
fn poll<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let error = match check() {
            Ok(value) => return value,
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting until {what}: {error}");
        }
        std::thread::sleep(CLUSTER_POLL);
    }
}

/// The first key `<prefix><n>` whose slot satisfies `want`.
fn find_key(prefix: &str, want: impl Fn(u16) -> bool) -> String {
    (0..1_000_000u32)
        .map(|n| format!("{prefix}{n}"))
        .find(|key| want(RedisCluster::slot_of(key)))
        .unwrap_or_else(|| panic!("no key {prefix}<n> in the wanted slots (a hash tag?)"))
}

/// `CLUSTER SLOTS` of `server`, sorted by first slot, replicas sorted.
fn slots_view(server: &RedisServer) -> Result<Vec<SlotRange>, String> {
    let reply = server
        .try_cmd(&["CLUSTER", "SLOTS"])
        .map_err(|e| format!("CLUSTER SLOTS on {}: {e}", server.addr()))?;
    let bad = || format!("CLUSTER SLOTS on {}: unexpected {reply:?}", server.addr());
    let Value::Array(entries) = &reply else {
        return Err(bad());
    };
    let mut ranges = Vec::new();
    for entry in entries {
        let Value::Array(parts) = entry else {
            return Err(bad());
        };
        let [Value::Int(start), Value::Int(end), master, replicas @ ..] = parts.as_slice() else {
            return Err(bad());
        };
        let mut replicas: Vec<SocketAddr> = replicas
            .iter()
            .map(|r| slot_node_addr(r).ok_or_else(bad))
            .collect::<Result<_, _>>()?;
        replicas.sort();
        ranges.push(SlotRange {
            start: u16::try_from(*start).map_err(|_| bad())?,
            end: u16::try_from(*end).map_err(|_| bad())?,
            master: slot_node_addr(master).ok_or_else(bad)?,
            replicas,
        });
    }
    ranges.sort_by_key(|r| r.start);
    Ok(ranges)
}

/// The `ip:port` of a node entry of `CLUSTER SLOTS` (`[ip, port, id, {metadata}]`).
fn slot_node_addr(node: &Value) -> Option<SocketAddr> {
    let Value::Array(fields) = node else {
        return None;
    };
    let [ip, Value::Int(port), ..] = fields.as_slice() else {
        return None;
    };
    Some(SocketAddr::new(
        value_text(ip)?.parse().ok()?,
        u16::try_from(*port).ok()?,
    ))
}

/// `CLUSTER NODES` of `server`.
fn nodes_view(server: &RedisServer) -> Result<Vec<NodeEntry>, String> {
    let reply = server
        .try_cmd(&["CLUSTER", "NODES"])
        .map_err(|e| format!("CLUSTER NODES on {}: {e}", server.addr()))?;
    let text = value_text(&reply)
        .ok_or_else(|| format!("CLUSTER NODES on {}: {reply:?}", server.addr()))?;
    Ok(text.lines().filter_map(parse_node_line).collect())
}

/// One line of `CLUSTER NODES`: `<id> <ip:port@cport[,hostname]> <flags> <master> <ping>
/// <pong> <epoch> <link> <slot>...`.
fn parse_node_line(line: &str) -> Option<NodeEntry> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [id, _addr, flags, master, ..] = fields.as_slice() else {
        return None;
    };
    Some(NodeEntry {
        id: (*id).to_owned(),
        flags: flags.split(',').map(str::to_owned).collect(),
        master_id: (*master != "-").then(|| (*master).to_owned()),
    })
}
