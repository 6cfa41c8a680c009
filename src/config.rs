//! `proxy.yaml`: the schema, its defaults, `${ENV}` interpolation and validation.
//!
//! Loading a file goes through four steps, each of which can stop it with a
//! [`ConfigError`] that names the file, line and column and says how to fix the text:
//!
//! 1. `${VAR}`, `${VAR:-default}` and `$$` are replaced in the raw text (outside
//!    comments); a map from the new text back to the original keeps positions right.
//! 2. The text is read once more as a tree of positioned YAML nodes, so that a setting
//!    can be found by its path (`routing.rules[2].max_lag_ms`) and duplicate keys are
//!    caught.
//! 3. `serde_yaml` builds the structs below; every struct denies unknown keys, and its
//!    messages are rewritten into sentences.
//! 4. [`Config::validate`] checks values (addresses, key globs, command names, sizes)
//!    and the rules that tie several settings together; each problem is reported at the
//!    position of the setting it names.
//!
//! Secrets ([`Secret`]) never print: not in `Debug`, not in [`Config::masked_yaml`],
//! not in an error message, even when they came from the environment.

mod source;
mod validate;
mod vars;

pub use validate::{check_address, check_command_name, check_glob};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::Path;

/// The whole configuration file.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address clients connect to. Changing it needs a restart.
    pub listen: String,
    /// Worker threads of the runtime; 0 means one per available core. Restart needed.
    pub workers: usize,
    /// How long SIGTERM waits for in-flight replies before closing connections (ms).
    /// Restart needed.
    pub shutdown_grace_ms: u64,
    /// The admin HTTP endpoint.
    pub admin: AdminConfig,
    /// Where the Redis master and replicas are and how to talk to them.
    pub backend: BackendConfig,
    /// The replication monitor.
    pub replication: ReplicationConfig,
    /// Read routing policy.
    pub routing: RoutingConfig,
    /// Users clients authenticate as. Empty: no authentication is required.
    pub users: Vec<UserConfig>,
    /// Whether a client may also log in as one of Redis's own ACL users (`AUTH`/`HELLO
    /// AUTH` checked by the master; the session's connections then log in as that user,
    /// so Redis applies its permissions). Unset: yes when `users` is empty, no otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_users: Option<bool>,
    /// Commands refused to every client.
    pub deny_commands: Vec<String>,
    /// Per-client limits.
    pub limits: LimitsConfig,
    /// TLS for client connections: when set, `listen` accepts TLS only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsConfig>,
}

/// TLS for clients connecting to the proxy.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsConfig {
    /// PEM certificate chain the proxy presents.
    pub cert: String,
    /// PEM private key of that certificate.
    pub key: String,
    /// PEM CA certificates; when set, clients must present a certificate signed by one.
    #[serde(default)]
    pub client_ca: String,
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

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:7480".into(),
            workers: 0,
            shutdown_grace_ms: 10_000,
            admin: AdminConfig::default(),
            backend: BackendConfig::default(),
            replication: ReplicationConfig::default(),
            routing: RoutingConfig::default(),
            users: Vec::new(),
            redis_users: None,
            deny_commands: default_deny_commands(),
            limits: LimitsConfig::default(),
            tls: None,
        }
    }
}

/// Commands denied by default: they reconfigure or stop the servers behind the proxy, or
/// (`MONITOR`) show every client's traffic.
pub fn default_deny_commands() -> Vec<String> {
    [
        "SHUTDOWN",
        "REPLICAOF",
        "SLAVEOF",
        "FAILOVER",
        "DEBUG",
        "SYNC",
        "PSYNC",
        "CLUSTER",
        "MONITOR",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The admin HTTP endpoint (`/metrics`, `/healthz`, `/readyz`, `/status`, `/`).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the admin endpoint; empty disables it.
    pub listen: String,
    /// Bearer token required on every admin request; empty: none.
    pub token: Secret,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:7481".into(),
            token: Secret::default(),
        }
    }
}

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
    /// A shared connection whose oldest request has waited this long is declared dead
    /// and its requests fail (reads to replicas are retried on the master) (ms).
    pub command_timeout_ms: u64,
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
            username: String::new(),
            password: Secret::default(),
            connections: 2,
            connect_timeout_ms: 1000,
            command_timeout_ms: 3000,
            reconnect_min_ms: 50,
            reconnect_max_ms: 2000,
            tls: None,
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

fn default_sentinel_refresh_ms() -> u64 {
    1000
}

fn default_hold_writes_ms() -> u64 {
    3000
}

/// The replication monitor: how offsets are polled and how replicas enter the pool.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationConfig {
    /// Time between polls of each backend's replication state (ms).
    pub poll_interval_ms: u64,
    /// A poll without an answer for this long counts as a failure (ms).
    pub poll_timeout_ms: u64,
    /// A replica back within budget rejoins the pool only after staying within it this
    /// long (ms).
    pub dwell_ms: u64,
    /// How much staleness history the status page keeps (seconds).
    pub history_secs: u64,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            poll_interval_ms: 50,
            poll_timeout_ms: 1000,
            dwell_ms: 1000,
            history_secs: 300,
        }
    }
}

/// How reads pick a backend.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// The level of every read no rule matches.
    pub default: LevelConfig,
    /// How to choose among qualifying replicas.
    pub replica_choice: ReplicaChoice,
    /// What to do when no replica qualifies for a replica read.
    pub fallback: Fallback,
    /// What reads do while the master is down.
    pub on_master_down: OnMasterDown,
    /// Rules checked in order; the first that matches a key decides for it.
    pub rules: Vec<RuleConfig>,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            default: LevelConfig::default(),
            replica_choice: ReplicaChoice::LeastOutstanding,
            fallback: Fallback::Master,
            on_master_down: OnMasterDown::ServeReplicas,
            rules: Vec::new(),
        }
    }
}

/// A consistency level and its budget.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LevelConfig {
    /// `master`, `replica` (bounded staleness) or `any` (any healthy replica).
    pub consistency: Consistency,
    /// Largest staleness a replica may have to serve the read (ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_lag_ms: Option<u64>,
    /// Largest offset gap a replica may have to serve the read (bytes; in YAML also a
    /// size such as `64kb`).
    #[serde(
        deserialize_with = "optional_size",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_lag_bytes: Option<u64>,
    /// After a client's write, its reads wait for replicas to catch up to it.
    pub read_your_writes: bool,
}

impl Default for LevelConfig {
    fn default() -> Self {
        LevelConfig {
            consistency: Consistency::Replica,
            max_lag_ms: Some(1000),
            max_lag_bytes: None,
            read_your_writes: true,
        }
    }
}

/// One routing rule.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// A name shown in `PROXY EXPLAIN`, `/status` and metrics.
    pub name: String,
    /// Key patterns (Redis glob syntax); the rule matches a key that matches any.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Command names; if given, the rule matches only these commands.
    #[serde(default)]
    pub commands: Vec<String>,
    /// The level for reads this rule matches; unset fields come from `routing.default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<Consistency>,
    /// Budget in ms. With `max_lag_bytes`, the rule's budget: when the rule sets
    /// neither, both come from `routing.default` (see
    /// [`crate::policy::effective_level`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lag_ms: Option<u64>,
    /// Budget in bytes (in YAML also a size such as `64kb`). Inherited together with
    /// `max_lag_ms`, as a pair.
    #[serde(
        default,
        deserialize_with = "optional_size",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_lag_bytes: Option<u64>,
    /// Read-your-writes for reads this rule matches (inherits when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_your_writes: Option<bool>,
    /// Durable writes: hold a write's reply until this many replicas hold it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitConfig>,
}

/// Durable-write settings of a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WaitConfig {
    /// Replicas that must hold the write before the client gets the reply.
    pub replicas: u32,
    /// How long to wait before replying with an error (ms).
    pub timeout_ms: u64,
}

/// A consistency level.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// Reads go to the master.
    Master,
    /// Reads go to a replica within the budget, else per `fallback`.
    Replica,
    /// Reads go to any healthy replica, however far behind.
    Any,
}

/// How to pick among qualifying replicas.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaChoice {
    /// The replica with the smallest staleness.
    LeastLag,
    /// Each in turn.
    RoundRobin,
    /// The replica with the fewest requests in flight.
    LeastOutstanding,
}

/// What a read does when no replica qualifies.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// Serve it from the master.
    Master,
    /// Reply with an error saying why.
    Error,
}

/// What reads do while the master is down.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnMasterDown {
    /// Keep serving reads from replicas (their staleness grows).
    ServeReplicas,
    /// Fail reads too.
    Error,
}

/// A user clients authenticate as.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// User name (`default` is the one `AUTH <password>` uses).
    pub name: String,
    /// The password.
    pub password: Secret,
    /// `all`, `read` (read-only commands), or a list of command names.
    #[serde(default)]
    pub commands: CommandAccess,
    /// Key patterns the user may touch.
    #[serde(default = "all_keys")]
    pub keys: Vec<String>,
    /// Whether the user may run admin commands: those Redis flags `admin` (`CONFIG`,
    /// `DEBUG`, `MONITOR`, …) and `FLUSHALL`, `FLUSHDB`, `SWAPDB`.
    #[serde(default)]
    pub admin: bool,
}

fn all_keys() -> Vec<String> {
    vec!["*".into()]
}

/// Which commands a user may run.
///
/// In YAML: `all`, `read`, or a list of command names.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum CommandAccess {
    /// `all` or `read`.
    Class(AccessClass),
    /// Exactly these commands.
    List(Vec<String>),
    /// Everything not admin (`all`).
    #[default]
    Unset,
}

impl<'de> Deserialize<'de> for CommandAccess {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = CommandAccess;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`all`, `read` or a list of command names")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<CommandAccess, E> {
                match v {
                    "all" => Ok(CommandAccess::Class(AccessClass::All)),
                    "read" => Ok(CommandAccess::Class(AccessClass::Read)),
                    _ => Err(E::custom(format!(
                        "unknown command class `{v}`: write `all`, `read`, or a list of command names such as [GET, SET]"
                    ))),
                }
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<CommandAccess, A::Error> {
                let mut names = Vec::new();
                while let Some(n) = seq.next_element::<String>()? {
                    names.push(n);
                }
                Ok(CommandAccess::List(names))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for CommandAccess {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            CommandAccess::Class(c) => c.serialize(s),
            CommandAccess::List(l) => l.serialize(s),
            CommandAccess::Unset => AccessClass::All.serialize(s),
        }
    }
}

/// A named class of commands.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AccessClass {
    /// Every command (admin ones only with `admin: true`).
    All,
    /// Read-only commands.
    Read,
}

/// Per-client limits.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Most client connections at once; past it new clients get an error and are closed.
    pub max_clients: usize,
    /// Close a client idle this long; 0: never (ms).
    pub idle_timeout_ms: u64,
    /// Largest bulk string in a request (bytes).
    pub proto_max_bulk_len: ByteSize,
    /// Largest argument count of a request.
    pub max_multibulk_len: u64,
    /// Largest buffered, not yet forwarded, request data of one client (bytes).
    pub client_query_buffer_limit: ByteSize,
    /// Largest reply data waiting for a client to read it (bytes); a client over it is
    /// disconnected. It also bounds what one client has in flight on shared backend
    /// connections, by the size of its recent replies.
    pub client_output_buffer_limit: ByteSize,
    /// The same for a client in pub/sub or MONITOR mode (bytes).
    pub pubsub_output_buffer_limit: ByteSize,
    /// Most requests of one client in flight at once; past it the proxy stops reading.
    pub max_pipeline: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_clients: 10_000,
            idle_timeout_ms: 0,
            proto_max_bulk_len: ByteSize(512 * 1024 * 1024),
            max_multibulk_len: i32::MAX as u64,
            client_query_buffer_limit: ByteSize(1024 * 1024 * 1024),
            client_output_buffer_limit: ByteSize(256 * 1024 * 1024),
            pubsub_output_buffer_limit: ByteSize(32 * 1024 * 1024),
            max_pipeline: 4096,
        }
    }
}

/// A size in bytes: an integer, or a string with a `kb`/`mb`/`gb` suffix (powers of
/// 1024; `b` is also accepted). It prints back in the largest unit that divides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: a number of bytes, or a number with kb, mb or gb (e.g. 64mb)")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v).map(ByteSize).map_err(|_| {
                    E::custom(format!(
                        "invalid size {v}: a size cannot be negative; write e.g. 64mb"
                    ))
                })
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ByteSize, E> {
                parse_size(s).map(ByteSize).ok_or_else(|| {
                    E::custom(format!(
                        "invalid size {s:?}: write a number of bytes, or a number with kb, mb or gb (e.g. 64mb)"
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 % 1024 == 0 && self.0 != 0 {
            s.serialize_str(&self.to_string())
        } else {
            s.serialize_u64(self.0)
        }
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, size) in [("gb", 1u64 << 30), ("mb", 1 << 20), ("kb", 1 << 10)] {
            if n != 0 && n % size == 0 {
                return write!(f, "{}{unit}", n / size);
            }
        }
        write!(f, "{n}")
    }
}

/// An optional byte count written as a number or a size (`64kb`).
fn optional_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(Option::<ByteSize>::deserialize(d)?.map(|b| b.0))
}

/// Parse `123`, `123b`, `64kb`, `64mb`, `1gb` (case-insensitive, spaces allowed before
/// the unit) into bytes; `None` if it is not such a size or overflows.
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mult) = if let Some(n) = t.strip_suffix("gb") {
        (n, 1u64 << 30)
    } else if let Some(n) = t.strip_suffix("mb") {
        (n, 1 << 20)
    } else if let Some(n) = t.strip_suffix("kb") {
        (n, 1 << 10)
    } else if let Some(n) = t.strip_suffix('b') {
        (n, 1)
    } else {
        (t.as_str(), 1)
    };
    let num = num.trim();
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// A secret string (password, token). It never prints: `Debug`, `Display` and
/// `Serialize` show `***` when set.
#[derive(Clone, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Whether no secret is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Wrap a string.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
}

impl Serialize for Secret {
    /// A set secret serializes as `***`, so no serialized config ever holds one.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "***" })
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "" } else { "***" })
    }
}

/// An error in a configuration file, with where it is and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, if the text came from one.
    pub file: Option<String>,
    /// 1-based line, if known.
    pub line: Option<usize>,
    /// 1-based column, if known.
    pub column: Option<usize>,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.as_deref().unwrap_or("<config>");
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{file}:{l}:{c}: {}", self.message),
            (Some(l), None) => write!(f, "{file}:{l}: {}", self.message),
            _ => write!(f, "{file}: {}", self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// An error with neither file nor position.
    fn plain(message: String) -> Self {
        ConfigError {
            file: None,
            line: None,
            column: None,
            message,
        }
    }
}

/// Read, parse and validate `path`: what `redsplit check FILE` runs. On success the
/// file is exactly what `redsplit run` would accept; on failure the error reads
/// `FILE:LINE:COL: what is wrong and how to fix it`.
pub fn check(path: &Path) -> Result<Config, ConfigError> {
    Config::load(path)
}

/// Look a variable up in the process environment, as interpolation does by default.
/// A variable whose value is not valid UTF-8 counts as unset.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Whether one start-up setting differs between two configurations.
type Differs = fn(&Config, &Config) -> bool;

/// Settings that only take effect at start-up, with the name
/// [`Config::restart_required`] reports for each.
const RESTART_ONLY: [(&str, Differs); 4] = [
    ("listen", |a, b| a.listen != b.listen),
    ("workers", |a, b| a.workers != b.workers),
    ("admin.listen", |a, b| a.admin.listen != b.admin.listen),
    ("shutdown_grace_ms", |a, b| {
        a.shutdown_grace_ms != b.shutdown_grace_ms
    }),
];

impl Config {
    /// Parse and validate YAML text, interpolating from the process environment.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml_env(text, None, &process_env)
    }

    /// Parse and validate YAML text, looking `${VAR}` up with `env` instead of the
    /// process environment (tests, or a caller with its own variables). `file` names
    /// the text in errors.
    pub fn from_yaml_env(
        text: &str,
        file: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        parse(text, env).map_err(|mut e| {
            e.file = file.map(str::to_string);
            e
        })
    }

    /// Read, parse and validate a file, interpolating from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: Some(name.clone()),
            line: None,
            column: None,
            message: format!("cannot read the file: {e}"),
        })?;
        Config::from_yaml_env(&text, Some(&name), &process_env)
    }

    /// Check the values and the rules that tie settings together (see the module
    /// docs). Without the source text there is no position: the message names the
    /// setting by its path. [`Config::from_yaml`] and [`Config::load`] run the same
    /// checks and add the file, line and column.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match validate::problems(self).into_iter().next() {
            Some(p) => Err(ConfigError::plain(p.message)),
            None => Ok(()),
        }
    }

    /// The configuration as YAML, every default filled in and every secret shown as
    /// `***` (an unset one as `""`): safe for logs and the status page.
    pub fn masked_yaml(&self) -> String {
        serde_yaml::to_string(self)
            .unwrap_or_else(|e| format!("# cannot serialize the configuration: {e}\n"))
    }

    /// A short, stable hash of the effective configuration (16 hex digits of a
    /// SHA-256), to show which version of the file is running. Equal configurations,
    /// however written, have equal fingerprints. Secrets count only as set or unset,
    /// so the fingerprint reveals nothing about them; to tell whether anything at all
    /// changed, passwords included, compare two configurations with `==`.
    pub fn fingerprint(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        Sha256::digest(&json)
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Whether clients may log in as Redis's own ACL users: `redis_users`, or when it
    /// is unset, whether `users` is empty.
    pub fn redis_users(&self) -> bool {
        self.redis_users.unwrap_or(self.users.is_empty())
    }

    /// The settings that differ between `self` (running) and `new` but take effect only
    /// after a restart: `listen`, `workers` and `admin.listen` (sockets and threads made
    /// at start-up), and `shutdown_grace_ms` (read once, when the signal handler is set
    /// up). A reload keeps their running values. Everything else — backends (addresses,
    /// Sentinel, credentials, TLS, and the pool settings `connections`,
    /// `connect_timeout_ms`, `command_timeout_ms`, `reconnect_min_ms`,
    /// `reconnect_max_ms`, which a backend kept across the reload takes too),
    /// replication, routing, users, `deny_commands`, `limits` (including
    /// `max_clients`) and `admin.token` — is applied live by a reload. Switching
    /// between static backends and Sentinel is refused by the reload itself (see
    /// [`crate::reload`]).
    pub fn restart_required(&self, new: &Config) -> Vec<&'static str> {
        RESTART_ONLY
            .iter()
            .filter(|(_, changed)| changed(self, new))
            .map(|(name, _)| *name)
            .collect()
    }
}

/// The loading pipeline of the module docs; errors carry positions in `text`.
fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let src_lines = source::LineIndex::new(text);
    let located = |pos: Option<source::Pos>, message: String| ConfigError {
        file: None,
        line: pos.map(|p| p.line),
        column: pos.map(|p| p.column),
        message,
    };
    let expanded = vars::interpolate(text, env)
        .map_err(|e| located(Some(src_lines.pos(e.offset)), e.message))?;
    let out_lines = source::LineIndex::new(&expanded.text);
    // A position in the expanded text, moved back to the text the user wrote.
    let place = |p: source::Pos| src_lines.pos(expanded.source_offset(out_lines.offset(p)));
    let parsed = source::SourceMap::parse(&expanded.text);
    let tree = parsed.as_ref().ok();
    let secrets = secrets(tree, &expanded);
    let fail = |pos: Option<source::Pos>, message: String| {
        located(pos.map(place), redact(message, &secrets))
    };

    if let Some(t) = tree {
        if let Some(dup) = t.duplicates.first() {
            let first = place(dup.first);
            let where_ = validate::describe_path(&dup.parent);
            return Err(fail(
                Some(dup.again),
                format!(
                    "duplicate key `{}` in {where_} (first given at line {}): keep one of them",
                    dup.key, first.line
                ),
            ));
        }
        if let Some(at) = t.second_document {
            return Err(fail(
                Some(at),
                "a second YAML document starts here: a configuration is one document; remove the `---` and what follows, or merge the two".into(),
            ));
        }
    }
    let cfg: Config = serde_yaml::from_str(&expanded.text).map_err(|e| match &parsed {
        // Not well-formed YAML: the parser's own error is the one to show; serde_yaml
        // may first stumble on a type mismatch the broken syntax makes.
        Err(syntax) => fail(
            Some(syntax.pos),
            format!(
                "YAML syntax error: {}; check the indentation (spaces, not tabs), quotes and brackets",
                syntax.message
            ),
        ),
        Ok(_) => {
            let pos = e.location().map(|l| source::Pos { line: l.line(), column: l.column() });
            fail(pos, validate::friendly_serde_error(&e.to_string(), pos, &place))
        }
    })?;
    let mut problems: Vec<(Option<source::Pos>, usize, String)> = validate::problems(&cfg)
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let pos = tree.and_then(|t| {
                t.find(&p.path)
                    .or_else(|| p.also.as_deref().and_then(|a| t.find(a)))
                    .or_else(|| t.locate(&p.path))
            });
            (pos, i, p.message)
        })
        .collect();
    // Report the problem nearest the top of the file; unplaced ones come last.
    problems.sort_by_key(|(pos, i, _)| (pos.is_none(), pos.map(|p| (p.line, p.column)), *i));
    match problems.into_iter().next() {
        Some((pos, _, message)) => Err(fail(pos, message)),
        None => Ok(cfg),
    }
}

/// Values no error message may show: every scalar at a secret's path, every value
/// taken from a variable whose name looks secret, and, when the text is not even
/// well-formed YAML (so paths are unknown), every value taken from the environment.
fn secrets(tree: Option<&source::SourceMap>, expanded: &vars::Expanded) -> Vec<String> {
    let mut out: Vec<String> = match tree {
        Some(t) => t
            .scalars()
            .filter(|(path, _)| is_secret_path(path))
            .map(|(_, v)| v.to_string())
            .collect(),
        None => expanded.inserted.iter().map(|i| i.value.clone()).collect(),
    };
    out.extend(
        expanded
            .inserted
            .iter()
            .filter(|i| vars::secret_name(&i.name))
            .map(|i| i.value.clone()),
    );
    out.retain(|s| !s.is_empty());
    // Longest first, so a secret containing another is masked whole.
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup();
    out
}

/// Whether a YAML path holds a [`Secret`].
fn is_secret_path(path: &str) -> bool {
    matches!(
        path,
        "admin.token" | "backend.password" | "backend.sentinel.password"
    ) || (path.starts_with("users[") && path.ends_with("].password"))
}

/// `message` with every secret replaced by `***`. A secret of fewer than
/// [`MIN_SUBSTRING_SECRET`] characters is replaced only where it stands alone (not
/// inside a word), so that a one-letter password does not garble the message.
fn redact(message: String, secrets: &[String]) -> String {
    let mut message = message;
    for s in secrets {
        if s.chars().count() >= MIN_SUBSTRING_SECRET {
            message = message.replace(s.as_str(), "***");
            continue;
        }
        let mut out = String::with_capacity(message.len());
        let mut rest = message.as_str();
        while let Some(i) = rest.find(s.as_str()) {
            let before = rest[..i]
                .chars()
                .next_back()
                .or_else(|| out.chars().next_back());
            let after = rest[i + s.len()..].chars().next();
            let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
            out.push_str(&rest[..i]);
            out.push_str(if word(before) || word(after) {
                s
            } else {
                "***"
            });
            rest = &rest[i + s.len()..];
        }
        out.push_str(rest);
        message = out;
    }
    message
}

/// Secrets at least this long are masked wherever they appear in a message.
const MIN_SUBSTRING_SECRET: usize = 4;

/// Whether `name` is a command of the command table (or a module command registered
/// from the master). Validation calls it for every command name in the file.
fn known_command(name: &str) -> bool {
    crate::commands::is_known_name(name)
}

impl RuleConfig {
    /// Whether the rule names this command (case-insensitive). A rule without a
    /// `commands` list names every command.
    pub fn names_command(&self, command: &str) -> bool {
        self.commands.is_empty()
            || self
                .commands
                .iter()
                .any(|c| c.eq_ignore_ascii_case(command))
    }
}

impl RoutingConfig {
    /// The rule with this name.
    pub fn rule(&self, name: &str) -> Option<&RuleConfig> {
        self.rules.iter().find(|r| r.name == name)
    }
}

impl BackendConfig {
    /// Whether the topology comes from Sentinel rather than static addresses.
    pub fn uses_sentinel(&self) -> bool {
        self.sentinel.is_some()
    }
}

impl UserConfig {
    /// The effective command access: an unset `commands` means `all`.
    pub fn access(&self) -> CommandAccess {
        match &self.commands {
            CommandAccess::Unset => CommandAccess::Class(AccessClass::All),
            other => other.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Some(0));
        assert_eq!(parse_size("123"), Some(123));
        assert_eq!(parse_size("123b"), Some(123));
        assert_eq!(parse_size("64kb"), Some(64 << 10));
        assert_eq!(parse_size("64 MB"), Some(64 << 20));
        assert_eq!(parse_size(" 2gb "), Some(2 << 30));
        for bad in [
            "",
            "mb",
            "-1",
            "+5",
            "1.5mb",
            "12zb",
            "1 2mb",
            "99999999999999gb",
        ] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
        assert_eq!(ByteSize(512 << 20).to_string(), "512mb");
        assert_eq!(ByteSize(1 << 30).to_string(), "1gb");
        assert_eq!(ByteSize(1536).to_string(), "1536");
        assert_eq!(ByteSize(1000).to_string(), "1000");
        let s: ByteSize = serde_yaml::from_str("32mb").unwrap();
        assert_eq!(s, ByteSize(32 << 20));
        let s: ByteSize = serde_yaml::from_str("4096").unwrap();
        assert_eq!(serde_yaml::to_string(&s).unwrap().trim(), "4kb");
        assert!(serde_yaml::from_str::<ByteSize>("-4").is_err());
    }

    #[test]
    fn globs() {
        for ok in [
            "*",
            "user:*:cart",
            "h?llo",
            "h[ae]llo",
            "h[^e]llo",
            "h[a-b]llo",
            "\\*literal",
            "[\\]]",
        ] {
            assert_eq!(check_glob(ok), Ok(()), "{ok}");
        }
        assert!(check_glob("").is_err());
        assert!(check_glob("user:[ab").is_err());
        assert!(check_glob("user:\\").is_err());
        assert!(check_glob("[]").is_err());
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("pw");
        assert_eq!(format!("{s} {s:?}"), "*** \"***\"");
        assert_eq!(serde_yaml::to_string(&s).unwrap().trim(), "'***'");
        assert_eq!(format!("{:?}", Secret::default()), "\"\"");
    }

    #[test]
    fn redaction() {
        let secrets = vec!["hunter2".to_string(), "pw".to_string()];
        assert_eq!(
            redact("a hunter2b \"pw\" pwx pw".into(), &secrets),
            "a ***b \"***\" pwx ***"
        );
        assert_eq!(redact("pwpw pw".into(), &secrets), "pwpw ***");
    }

    #[test]
    fn command_access_parses() {
        let u: UserConfig = serde_yaml::from_str("name: a\npassword: b\ncommands: read\n").unwrap();
        assert_eq!(u.commands, CommandAccess::Class(AccessClass::Read));
        let u: UserConfig =
            serde_yaml::from_str("name: a\npassword: b\ncommands: [GET]\n").unwrap();
        assert_eq!(u.commands, CommandAccess::List(vec!["GET".into()]));
        let u: UserConfig = serde_yaml::from_str("name: a\npassword: b\n").unwrap();
        assert_eq!(u.commands, CommandAccess::Unset);
        assert_eq!(u.access(), CommandAccess::Class(AccessClass::All));
        assert!(
            serde_yaml::from_str::<UserConfig>("name: a\npassword: b\ncommands: some\n").is_err()
        );
    }
}
