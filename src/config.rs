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
//! 3. `serde_yaml` builds the structs (one module per section, re-exported here); every
//!    struct denies unknown keys, and its messages are rewritten into sentences.
//! 4. [`Config::validate`] checks values (addresses, key globs, command names, sizes)
//!    and the rules that tie several settings together; each problem is reported at the
//!    position of the setting it names.
//!
//! Secrets ([`Secret`]) never print: not in `Debug`, not in [`Config::masked_yaml`],
//! not in an error message, even when they came from the environment.
//!
//! Here: the top level ([`Config`], `admin`, `tls`), [`ConfigError`], and what a reload
//! may change ([`Config::restart_required`]). One module per section: `backend`
//! (with Sentinel and backend TLS), `replication`, `routing`, `users`, `limits`; the
//! value types `size` ([`ByteSize`]) and `secret` ([`Secret`], and the redaction of
//! error messages); `load` (the four steps above), with `vars` (step 1), `source`
//! (step 2) and `validate` (step 4, and the wording of serde's errors).

mod backend;
mod limits;
mod load;
mod replication;
mod routing;
mod secret;
mod size;
mod source;
mod users;
mod validate;
mod vars;

pub use backend::{BackendConfig, BackendTlsConfig, ClusterConfig, HedgeAfter, SentinelConfig};
pub use limits::LimitsConfig;
pub use load::{check, process_env};
pub use replication::ReplicationConfig;
pub use routing::{
    Consistency, Fallback, LevelConfig, OnMasterDown, ReadYourWrites, ReplicaChoice, RoutingConfig,
    RuleConfig, WaitConfig, DEFAULT_KEY_FENCE_CAPACITY,
};
pub use secret::Secret;
pub use size::{parse_size, ByteSize};
pub use users::{AccessClass, CommandAccess, UserConfig};
pub use validate::{check_address, check_command_name, check_glob};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// The whole configuration file.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address clients connect to. Changing it needs a restart.
    pub listen: String,
    /// Worker threads of the runtime: 1 (the default) is one event loop, which keeps
    /// the order of requests between clients exact; 0 means one per available core
    /// (see [`crate::server::runtime`]). Restart needed.
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

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:7480".into(),
            workers: 1,
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
    /// `connect_timeout_ms`, `command_timeout_ms`, `master_command_timeout_ms`,
    /// `reconnect_min_ms`,
    /// `reconnect_max_ms`, which a backend kept across the reload takes too;
    /// `hedge_after_ms`, which sessions read per batch),
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
