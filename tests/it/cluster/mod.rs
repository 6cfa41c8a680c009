//! Redis Cluster: the harness's own checks ([`RedisCluster`] against real nodes, no
//! proxy), and redsplit in front of a real cluster.
//!
//! [`RedisCluster`]: crate::common::RedisCluster

mod harness;
mod proxied;
