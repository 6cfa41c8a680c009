//! The `backend` section: where the Redis master and replicas are (static addresses, or
//! Sentinel) and how the proxy talks to them (credentials, pool, timeouts, TLS).

use super::Secret;
use serde::{Deserialize, Serialize};

/// Backends: a static master and replicas, or Sentinel.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackendConfig {
    /// The master's address (static topology).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    /// The replicas' addresses (static topology).
    pub replicas: Vec<String>,
    /// Discover the topology from Sentinel instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sentinel: Option<SentinelConfig>,
    /// Discover a Redis Cluster from these seed nodes instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterConfig>,
    /// ACL user for backend connections; empty: the default user.
    pub username: String,
    /// Password for backend connections; empty: none.
    pub password: Secret,
    /// Shared connections per backend, per selected database and protocol version. A
    /// reload resizes running pools: connections beyond a smaller size leave the pool
    /// (sessions using one finish with it first).
    pub connections: usize,
    /// Connect (and handshake) timeout (ms). A reload applies it to connections made
    /// from then on.
    pub connect_timeout_ms: u64,
    /// A replica connection whose oldest request has waited this long is declared dead
    /// and its requests fail (reads are retried on the master) (ms).
    pub command_timeout_ms: u64,
    /// A plain replica read unanswered this long is also sent to the master (or, while
    /// the master is unavailable, to another healthy replica); the first reply wins.
    /// `0`: never; `auto` (the default): the 99th percentile of recent replica read
    /// latencies, at least 5 ms and at most half of `command_timeout_ms` (ms).
    pub hedge_after_ms: HedgeAfter,
    /// The same for master connections (ms); 0 (the default): none, a request waits for
    /// the master as a direct client's would (a slow script or `KEYS` is not a failure).
    pub master_command_timeout_ms: u64,
    /// First reconnect delay after a failure; doubles up to `reconnect_max_ms` (ms).
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay (ms).
    pub reconnect_max_ms: u64,
    /// TLS to the backends; unset: plain TCP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<BackendTlsConfig>,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            master: None,
            replicas: Vec::new(),
            sentinel: None,
            cluster: None,
            username: String::new(),
            password: Secret::default(),
            connections: 2,
            connect_timeout_ms: 1000,
            command_timeout_ms: 3000,
            hedge_after_ms: HedgeAfter::Auto,
            master_command_timeout_ms: 0,
            reconnect_min_ms: 50,
            reconnect_max_ms: 2000,
            tls: None,
        }
    }
}

/// When a replica read is hedged: `backend.hedge_after_ms`, a number of milliseconds
/// (`0`: never) or `auto`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HedgeAfter {
    /// From the observed replica read latency.
    #[default]
    Auto,
    /// After this many milliseconds; 0: hedging is off.
    Ms(u64),
}

impl<'de> Deserialize<'de> for HedgeAfter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = HedgeAfter;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number of milliseconds (0: no hedging) or auto")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<HedgeAfter, E> {
                Ok(HedgeAfter::Ms(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<HedgeAfter, E> {
                u64::try_from(v).map(HedgeAfter::Ms).map_err(|_| {
                    E::custom(format!(
                        "invalid hedge delay {v}: give a number of milliseconds (0: no hedging) or auto"
                    ))
                })
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<HedgeAfter, E> {
                if s.trim().eq_ignore_ascii_case("auto") {
                    return Ok(HedgeAfter::Auto);
                }
                s.trim().parse().map(HedgeAfter::Ms).map_err(|_| {
                    E::custom(format!(
                        "invalid hedge delay {s:?}: give a number of milliseconds (0: no hedging) or auto"
                    ))
                })
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<HedgeAfter, E> {
                Ok(HedgeAfter::Auto)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for HedgeAfter {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            HedgeAfter::Auto => s.serialize_str("auto"),
            HedgeAfter::Ms(ms) => s.serialize_u64(*ms),
        }
    }
}

/// Sentinel discovery.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SentinelConfig {
    /// Sentinel addresses; any that answers is used.
    pub addresses: Vec<String>,
    /// The monitored master's name.
    pub master_name: String,
    /// ACL user for Sentinel connections.
    #[serde(default)]
    pub username: String,
    /// Password for Sentinel connections.
    #[serde(default)]
    pub password: Secret,
    /// How often the topology is re-read even without events (ms).
    #[serde(default = "default_sentinel_refresh_ms")]
    pub refresh_ms: u64,
    /// During a planned failover (Sentinel promotes a replica while the master still
    /// answers) writes wait this long for the new master instead of failing; 0 fails
    /// them at once (ms).
    #[serde(default = "default_hold_writes_ms")]
    pub hold_writes_ms: u64,
}

/// A Redis Cluster as the backend: its shards are discovered from any seed that answers
/// (`CLUSTER SHARDS`, or `CLUSTER SLOTS` on Redis 6).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Addresses of cluster nodes to discover the cluster from; any that answers is used
    /// (and every node discovered since).
    pub seeds: Vec<String>,
    /// How often the slot map is re-read even without a `MOVED` or a failure (ms).
    #[serde(default = "default_cluster_refresh_ms")]
    pub refresh_ms: u64,
}

fn default_cluster_refresh_ms() -> u64 {
    2000
}

fn default_sentinel_refresh_ms() -> u64 {
    1000
}

fn default_hold_writes_ms() -> u64 {
    3000
}

/// TLS from the proxy to its backends.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackendTlsConfig {
    /// PEM CA certificates the backends' certificates must chain to.
    pub ca: String,
    /// Name sent in SNI and checked against each backend's certificate; empty: the
    /// host part of the backend's address.
    #[serde(default)]
    pub server_name: String,
    /// PEM client certificate to present (for `tls-auth-clients yes`); empty: none.
    #[serde(default)]
    pub cert: String,
    /// PEM private key of the client certificate.
    #[serde(default)]
    pub key: String,
}

impl BackendConfig {
    /// Whether the topology comes from Sentinel rather than static addresses.
    pub fn uses_sentinel(&self) -> bool {
        self.sentinel.is_some()
    }

    /// Whether the backend is a Redis Cluster.
    pub fn uses_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// Whether the set of backends is fixed by the configuration (not discovered from
    /// Sentinel or a cluster).
    pub fn is_static(&self) -> bool {
        self.sentinel.is_none() && self.cluster.is_none()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(v: &str) -> Result<HedgeAfter, String> {
        let yaml = format!("hedge_after_ms: {v}\n");
        serde_yaml::from_str::<BackendConfig>(&yaml)
            .map(|b| b.hedge_after_ms)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn hedge_after_is_a_number_of_ms_or_auto() {
        assert_eq!(BackendConfig::default().hedge_after_ms, HedgeAfter::Auto);
        assert_eq!(parse("auto"), Ok(HedgeAfter::Auto));
        assert_eq!(parse("AUTO"), Ok(HedgeAfter::Auto));
        assert_eq!(parse("0"), Ok(HedgeAfter::Ms(0)));
        assert_eq!(parse("20"), Ok(HedgeAfter::Ms(20)));
        assert_eq!(parse("'35'"), Ok(HedgeAfter::Ms(35)));
        assert!(parse("-1").unwrap_err().contains("milliseconds"));
        assert!(parse("soon").unwrap_err().contains("or auto"));
        for h in [HedgeAfter::Auto, HedgeAfter::Ms(0), HedgeAfter::Ms(20)] {
            let b = BackendConfig {
                hedge_after_ms: h,
                ..Default::default()
            };
            let text = serde_yaml::to_string(&b).unwrap();
            let back: BackendConfig = serde_yaml::from_str(&text).unwrap();
            assert_eq!(back.hedge_after_ms, h, "{text}");
        }
    }
}
