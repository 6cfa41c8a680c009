//! redsplit: a read/write-splitting Redis proxy that sends each read to a replica only
//! when that replica is provably fresh enough for it.
//!
//! # A tour
//!
//! A client's bytes arrive in a [`session`]: [`protocol`] delimits requests in place (no
//! copy, no allocation), [`commands`] classifies each from Redis's own command table
//! (read, write, admin, pub/sub, transaction, connection; which arguments are keys),
//! [`policy`] finds the rule for its keys (a consistency level: master, replica within a
//! budget, or any), and [`router`] — one pure function — picks the master or a replica
//! from the current [`topology::View`] (weighing, by default, each replica's requests in
//! flight and its smoothed reply latency from [`latency`]). The session hands each
//! batch's requests, gathered per connection, to pipelined [`backend`] connections
//! shared by all clients, and puts replies back in request order; a replica read unanswered after the hedge delay is
//! also sent to the master, and the first reply wins; transactions, blocking commands,
//! pub/sub and the writes a client pause holds ([`proxy::ClientPause`]) get a
//! dedicated connection, and RESP3 pushes a connection owes no request for (a tracking
//! redirect's invalidations) reach their client as they come. A
//! client's Redis-visible state (name, database, protocol, user, flags, subscriptions)
//! is one [`session::ClientState`], and SCAN-family cursors carry the node that issued
//! them ([`cursor`]), so an iteration continues where it started.
//!
//! A read under `read_your_writes: key` also consults the [`fence`]: when each key
//! recently written through the proxy, by any connection, was acknowledged, so that a
//! replica serves it only once it holds that write.
//!
//! All of that runs on one event loop by default ([`server::runtime`], `workers: 1`), as
//! in Redis, so requests of different clients reach Redis in the order they reached the
//! proxy; a backend's write [`backend::Gate`] keeps that order while one of its
//! connections is still opening.
//!
//! Off the hot path, on a thread of its own (so that busy clients do not delay its
//! samples), [`replication`] samples the master's replication offset four times
//! a poll period and polls each replica right after one of those samples, and publishes
//! a new `View` (each replica's staleness bound, offset gap, health and pool
//! membership) with one atomic swap; [`sentinel`] keeps the set of backends in step with
//! Sentinel through failovers; in front of a Redis Cluster, [`cluster`] reads the slot
//! map, runs one such monitor per shard and publishes one `View` holding every shard's
//! (a request's slot picks the shard's view, and the router decides within it; `MOVED`
//! and `ASK` are followed, and multi-key commands across slots are split and merged in
//! the session); [`reload`] validates an edited `proxy.yaml` ([`config`])
//! and swaps the settings in ([`proxy::Settings`]); [`admin`] serves `/metrics`
//! ([`metrics`]), health and a status page; [`introspect`] answers `PROXY STATUS`,
//! `PROXY EXPLAIN` and `PROXY CONFIG` from the same snapshot and routing function.
//! [`auth`] checks users and permissions (the proxy's own, and Redis ACL users whose
//! logins the master checks and whose connections log in as them); the commands the
//! proxy answers itself are decided by pure functions of the client state (the
//! session's `own` module), [`reply`] builds their replies ([`error`] names the errors
//! it answers itself, each with its RESP error line), and [`server`] runs the
//! listener, limits and graceful shutdown, and parks idle clients (a client with
//! nothing in flight keeps only its socket until its next byte or a push for it: a
//! plain one in the
//! [`parking`] lot, one epoll set for all of them, a TLS one with a small task; its
//! [`session::ClientState`] stays published in its handle, and the session is rebuilt
//! around it then, inside a tracing span naming the client), and hands the memory such
//! clients freed back to the system ([`alloc`]).
//! Everything shared lives in [`proxy::Proxy`].
#![warn(missing_docs)]

pub mod admin;
// The one module with `unsafe` code (the allocator's control interface).
#[allow(unsafe_code)]
pub mod alloc;
pub mod auth;
pub mod backend;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod cursor;
pub mod error;
pub mod fence;
pub mod introspect;
pub mod latency;
pub mod metrics;
pub mod parking;
pub mod policy;
pub mod protocol;
pub mod proxy;
pub mod reload;
pub mod replication;
pub mod reply;
pub mod router;
pub mod sentinel;
pub mod server;
pub mod session;
pub mod tls;
pub mod topology;
