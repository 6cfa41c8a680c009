//! `proxy.yaml`: the shipped file and every fixture load or fail as they should.
//!
//! Each file in `tests/config/invalid/` starts with `# expect: LINE:COL: fragment`; the
//! error must read `FILE:LINE:COL: …fragment…`.

use redsplit::config::{
    self, Config, ConfigError, Consistency, LevelConfig, ReadYourWrites, Secret,
};
use redsplit::policy::{effective_level, Policy};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// No environment at all: what the files must load with.
fn no_env(_: &str) -> Option<String> {
    None
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn load_with(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).unwrap();
    Config::from_yaml_env(&text, Some(&path.display().to_string()), env)
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    files
}

fn from_env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name: &str| map.get(name).cloned()
}

const BACKEND: &str = "backend:\n  master: 127.0.0.1:6379\n  replicas: [\"127.0.0.1:6380\"]\n";

#[test]
fn shipped_proxy_yaml_loads_with_no_environment() {
    let path = root().join("proxy.yaml");
    let cfg = load_with(&path, &no_env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.listen, "127.0.0.1:7480");
    assert_eq!(cfg.admin.listen, "127.0.0.1:7481");
    assert_eq!(cfg.backend.master.as_deref(), Some("127.0.0.1:6379"));
    assert_eq!(cfg.backend.replicas, ["127.0.0.1:6380", "127.0.0.1:6381"]);
    assert!(cfg.backend.password.is_empty());
    assert!(cfg.users.is_empty());

    // The use cases of the design.
    let r = &cfg.routing;
    assert_eq!(r.default.consistency, Consistency::Replica);
    assert_eq!(r.default.max_lag_ms, Some(1000));
    let inventory = r.rule("inventory").unwrap();
    assert_eq!(inventory.consistency, Some(Consistency::Master));
    assert_eq!(inventory.wait.map(|w| w.replicas), Some(1));
    assert_eq!(
        effective_level(r.rule("sessions").unwrap(), &r.default).read_your_writes,
        ReadYourWrites::Key
    );
    assert_eq!(r.key_fence_capacity, 100_000);
    assert_eq!(r.rule("feeds").unwrap().max_lag_ms, Some(5000));
    assert!(r.rule("leaderboards").is_some());
    let analytics = r.rule("analytics").unwrap();
    assert_eq!(analytics.consistency, Some(Consistency::Any));
    assert!(analytics.names_command("scan") && analytics.names_command("KEYS"));

    // Every setting is written out in the file, and equals its default except where the
    // shipped file chooses otherwise (rules, replicas).
    let defaults = Config::default();
    assert_eq!(cfg.limits, defaults.limits);
    assert_eq!(cfg.replication, defaults.replication);
    assert_eq!(cfg.deny_commands, defaults.deny_commands);
    assert_eq!(cfg.routing.default, defaults.routing.default);
    assert_eq!(cfg.shutdown_grace_ms, defaults.shutdown_grace_ms);
    let text = std::fs::read_to_string(&path).unwrap();
    for key in [
        "listen:",
        "workers:",
        "shutdown_grace_ms:",
        "token:",
        "master:",
        "replicas:",
        "sentinel:",
        "addresses:",
        "master_name:",
        "refresh_ms:",
        "username:",
        "password:",
        "connections:",
        "connect_timeout_ms:",
        "command_timeout_ms:",
        "hedge_after_ms:",
        "master_command_timeout_ms:",
        "reconnect_min_ms:",
        "reconnect_max_ms:",
        "poll_interval_ms:",
        "poll_timeout_ms:",
        "dwell_ms:",
        "history_secs:",
        "consistency:",
        "max_lag_ms:",
        "max_lag_bytes:",
        "read_your_writes:",
        "key_fence_capacity:",
        "replica_choice:",
        "fallback:",
        "on_master_down:",
        "wait:",
        "users:",
        "commands:",
        "keys:",
        "admin:",
        "deny_commands:",
        "max_clients:",
        "idle_timeout_ms:",
        "proto_max_bulk_len:",
        "max_multibulk_len:",
        "client_query_buffer_limit:",
        "client_output_buffer_limit:",
        "pubsub_output_buffer_limit:",
        "max_pipeline:",
    ] {
        assert!(text.contains(key), "proxy.yaml does not show {key}");
    }
}

#[test]
fn shipped_proxy_yaml_takes_container_addresses() {
    let env = from_env(&[
        ("REDSPLIT_LISTEN", "0.0.0.0:6379"),
        ("REDSPLIT_ADMIN_LISTEN", "0.0.0.0:9121"),
        ("REDSPLIT_MASTER", "redis-master:6379"),
        (
            "REDSPLIT_REPLICAS",
            "redis-replica-1:6379, redis-replica-2:6379, redis-replica-3:6379",
        ),
        ("REDIS_PASSWORD", "hunter2"),
        ("REDSPLIT_ADMIN_TOKEN", "t0ken"),
    ]);
    let cfg = load_with(&root().join("proxy.yaml"), &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.listen, "0.0.0.0:6379");
    assert_eq!(cfg.admin.listen, "0.0.0.0:9121");
    assert_eq!(cfg.backend.master.as_deref(), Some("redis-master:6379"));
    assert_eq!(cfg.backend.replicas.len(), 3);
    assert_eq!(cfg.backend.password.expose(), "hunter2");
    assert_eq!(cfg.admin.token.expose(), "t0ken");
    let shown = cfg.masked_yaml();
    assert!(
        !shown.contains("hunter2") && !shown.contains("t0ken"),
        "{shown}"
    );
}

#[test]
fn check_reads_the_shipped_file() {
    // `check` reads the process environment; the file has a default for every variable.
    let path = root().join("proxy.yaml");
    if std::env::vars().any(|(k, _)| k.starts_with("REDSPLIT_") || k.starts_with("REDIS_")) {
        return;
    }
    config::check(&path).unwrap_or_else(|e| panic!("{e}"));
    let err = config::check(&root().join("tests/config/no-such-file.yaml")).unwrap_err();
    assert!(
        err.to_string()
            .contains("no-such-file.yaml: cannot read the file"),
        "{err}"
    );
}

#[test]
fn valid_files_load() {
    let mut n = 0;
    for dir in ["examples", "tests/config/valid"] {
        for path in yaml_files(&root().join(dir)) {
            load_with(&path, &no_env).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    // The compose example's proxy configuration.
    load_with(&root().join("deploy/redsplit/proxy.yaml"), &no_env)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(n >= 5, "only {n} valid files");
}

#[test]
fn invalid_files_fail_with_their_message() {
    let files = yaml_files(&root().join("tests/config/invalid"));
    assert!(files.len() >= 40, "only {} invalid files", files.len());
    let mut failures = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| {
                panic!(
                    "{}: the first line must be `# expect: LINE:COL: text`",
                    path.display()
                )
            });
        let name = path.display().to_string();
        match Config::from_yaml_env(&text, Some(&name), &no_env) {
            Ok(_) => failures.push(format!("{name}: accepted, expected {expect}")),
            Err(e) => {
                let shown = e.to_string();
                if !shown.contains(&format!("{name}:{expect}")) {
                    failures.push(format!("{name}:\n  expected {expect}\n  got      {shown}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn env_set_unset_and_default() {
    let text = "listen: ${LISTEN:-127.0.0.1:7000}\nbackend:\n  master: ${MASTER}\n  replicas: [${REPLICAS:-}]\n";
    let cfg = Config::from_yaml_env(text, None, &from_env(&[("MASTER", "10.1.1.1:6379")])).unwrap();
    assert_eq!(cfg.listen, "127.0.0.1:7000");
    assert_eq!(cfg.backend.master.as_deref(), Some("10.1.1.1:6379"));
    assert!(cfg.backend.replicas.is_empty());

    let env = from_env(&[
        ("MASTER", "10.1.1.1:6379"),
        ("LISTEN", "0.0.0.0:1"),
        ("REPLICAS", "a:1, b:2"),
    ]);
    let cfg = Config::from_yaml_env(text, None, &env).unwrap();
    assert_eq!(cfg.listen, "0.0.0.0:1");
    assert_eq!(cfg.backend.replicas, ["a:1", "b:2"]);

    // Set but empty: the default applies.
    let env = from_env(&[("MASTER", "10.1.1.1:6379"), ("LISTEN", "")]);
    assert_eq!(
        Config::from_yaml_env(text, None, &env).unwrap().listen,
        "127.0.0.1:7000"
    );

    let err = Config::from_yaml_env(text, Some("p.yaml"), &no_env).unwrap_err();
    assert_eq!(
        err.to_string(),
        "p.yaml:3:11: environment variable MASTER is not set; set it or write ${MASTER:-value}"
    );

    // `$$` is a literal `$`.
    let text = format!("{BACKEND}  password: p$$ss\n");
    let cfg = Config::from_yaml_env(&text, None, &no_env).unwrap();
    assert_eq!(cfg.backend.password.expose(), "p$ss");
}

#[test]
fn positions_stay_right_after_interpolation() {
    // A long value earlier on the line and a multi-line value earlier in the file.
    let text = "backend:\n  username: ${USER_LIST}\n  master: ${M:-127.0.0.1:6379}\n  replicas: [${R}, \"bad\"]\n";
    let env = from_env(&[
        ("R", "a-very-long-replica-name.example.internal:6380"),
        ("USER_LIST", "\"x\n   y\""),
    ]);
    let err = Config::from_yaml_env(text, Some("f"), &env).unwrap_err();
    assert_eq!((err.line, err.column), (Some(4), Some(20)), "{err}");
    assert!(
        err.message
            .contains("`backend.replicas[1]` is not a valid address"),
        "{err}"
    );

    // An error inside a substituted value points at its `${`.
    let env = from_env(&[("M", "nonsense"), ("USER_LIST", "u")]);
    let err = Config::from_yaml_env(text.replace("${R}, \"bad\"", "").as_str(), Some("f"), &env)
        .unwrap_err();
    assert_eq!((err.line, err.column), (Some(3), Some(11)), "{err}");
}

#[test]
fn secrets_never_appear_in_errors() {
    // A secret-named variable used where an error quotes it.
    let text = format!("{BACKEND}workers: ${{REDIS_PASSWORD}}\n");
    let err = Config::from_yaml_env(&text, None, &from_env(&[("REDIS_PASSWORD", "hunter2")]))
        .unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(err.to_string().contains("***"), "{err}");

    // A value written at a secret's place, quoted by an error elsewhere.
    let text = format!("listen: ${{L}}\n{BACKEND}  password: ${{P}}\n");
    let env = from_env(&[("L", "sw0rdfish"), ("P", "sw0rdfish")]);
    let err = Config::from_yaml_env(&text, None, &env).unwrap_err();
    assert!(!err.to_string().contains("sw0rdfish"), "{err}");

    // A user's password, literal in the file.
    let text = format!("{BACKEND}users:\n  - name: app\n    password: \"open sesame\"\n    keys: [\"open sesame[\"]\n");
    let err = Config::from_yaml_env(&text, None, &no_env).unwrap_err();
    assert!(err.message.contains("not a valid key pattern"), "{err}");
    assert!(!err.to_string().contains("open sesame"), "{err}");

    // Broken YAML: any value from the environment is masked.
    let text = format!("{BACKEND}  username: ${{U}}\n");
    let err = Config::from_yaml_env(&text, None, &from_env(&[("U", "[zebra")])).unwrap_err();
    assert!(!err.to_string().contains("zebra"), "{err}");
}

fn full_secret_config() -> Config {
    let text = "listen: 127.0.0.1:7480
admin:
  listen: 127.0.0.1:7481
  token: adm1n-t0ken
backend:
  sentinel:
    addresses: [\"127.0.0.1:26379\"]
    master_name: mymaster
    password: s3ntinel-pw
  password: backend-pw
users:
  - name: default
    password: default-pw
  - name: reader
    password: reader-pw
    commands: read
    keys: [\"feed:*\"]
";
    Config::from_yaml_env(text, None, &no_env).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn masked_yaml_never_shows_a_secret() {
    let cfg = full_secret_config();
    let shown = cfg.masked_yaml();
    for secret in [
        "adm1n-t0ken",
        "s3ntinel-pw",
        "backend-pw",
        "default-pw",
        "reader-pw",
    ] {
        assert!(!shown.contains(secret), "{secret} in\n{shown}");
        assert!(!format!("{cfg:?}").contains(secret));
    }
    assert_eq!(shown.matches("***").count(), 5, "{shown}");
    // The masked YAML is itself a valid configuration, with the same shape.
    let back =
        Config::from_yaml_env(&shown, None, &no_env).unwrap_or_else(|e| panic!("{e}\n{shown}"));
    assert_eq!(back.masked_yaml(), shown);
    assert_eq!(back.users.len(), 2);
    let shipped = load_with(&root().join("proxy.yaml"), &no_env).unwrap();
    let again = Config::from_yaml_env(&shipped.masked_yaml(), None, &no_env).unwrap();
    assert_eq!(again, shipped);
}

#[test]
fn fingerprint_is_short_stable_and_tracks_changes() {
    let a = Config::from_yaml_env(BACKEND, None, &no_env).unwrap();
    let spelled_out =
        format!("{BACKEND}listen: 127.0.0.1:7480\nlimits:\n  proto_max_bulk_len: 512mb\n");
    let b = Config::from_yaml_env(&spelled_out, None, &no_env).unwrap();
    assert_eq!(a.fingerprint(), b.fingerprint());
    assert_eq!(a.fingerprint().len(), 16);
    assert!(a.fingerprint().bytes().all(|c| c.is_ascii_hexdigit()));
    let c = Config::from_yaml_env(
        &format!("{BACKEND}routing:\n  default: {{max_lag_ms: 900}}\n"),
        None,
        &no_env,
    )
    .unwrap();
    assert_ne!(a.fingerprint(), c.fingerprint());
    // A password change is seen by `==`, not by the fingerprint.
    let mut d = a.clone();
    d.backend.password = Secret::new("x");
    let mut e = a.clone();
    e.backend.password = Secret::new("y");
    assert_eq!(d.fingerprint(), e.fingerprint());
    assert_ne!(d, e);
}

#[test]
fn restart_required_lists_only_startup_settings() {
    let a = Config::from_yaml_env(BACKEND, None, &no_env).unwrap();
    let mut b = a.clone();
    b.routing.default.max_lag_ms = Some(2000);
    b.backend.replicas.push("127.0.0.1:6390".into());
    b.backend.master = Some("127.0.0.1:6400".into());
    b.limits.max_clients = 5;
    b.deny_commands.clear();
    b.users.clear();
    // Pool settings apply to running backends on reload.
    b.backend.connections = 9;
    b.backend.connect_timeout_ms = 250;
    b.backend.command_timeout_ms = 900;
    b.backend.reconnect_min_ms = 5;
    b.backend.reconnect_max_ms = 50;
    assert!(a.restart_required(&b).is_empty());
    b.listen = "127.0.0.1:1".into();
    b.workers = 3;
    b.admin.listen = String::new();
    b.shutdown_grace_ms += 1;
    assert_eq!(
        a.restart_required(&b),
        ["listen", "workers", "admin.listen", "shutdown_grace_ms"]
    );
}

#[test]
fn validate_without_source_names_the_setting() {
    let mut cfg = Config::from_yaml_env(BACKEND, None, &no_env).unwrap();
    assert_eq!(cfg.validate(), Ok(()));
    cfg.routing.default.max_lag_ms = Some(10);
    let err = cfg.validate().unwrap_err();
    assert_eq!((err.line, err.column), (None, None));
    assert!(
        err.message
            .starts_with("`routing.default.max_lag_ms` is 10 ms"),
        "{err}"
    );
    assert!(err.to_string().starts_with("<config>: "), "{err}");
}

#[test]
fn the_key_fence_needs_room_for_a_key() {
    let mut cfg = Config::from_yaml_env(BACKEND, None, &no_env).unwrap();
    cfg.routing.key_fence_capacity = 0;
    let err = cfg.validate().unwrap_err();
    assert!(
        err.message.starts_with("`routing.key_fence_capacity` is 0"),
        "{err}"
    );
    let text = format!("{BACKEND}routing:\n  default: {{consistency: replica, max_lag_ms: 800, read_your_writes: keys}}\n");
    let err = Config::from_yaml_env(&text, None, &no_env).unwrap_err();
    assert!(
        err.to_string().contains("`connection`, `key`, `off`"),
        "{err}"
    );
}

#[test]
fn rules_inherit_from_the_default() {
    let text = format!(
        "{BACKEND}routing:\n  default: {{consistency: replica, max_lag_ms: 800, read_your_writes: false}}\n  rules:\n    - {{name: a, keys: [\"a:*\"], max_lag_bytes: 4096}}\n    - {{name: b, keys: [\"b:*\"], consistency: master}}\n    - {{name: c, keys: [\"c:*\"]}}\n"
    );
    let cfg = Config::from_yaml_env(&text, None, &no_env).unwrap();
    let r = &cfg.routing;
    let levels: Vec<LevelConfig> = r
        .rules
        .iter()
        .map(|rule| effective_level(rule, &r.default))
        .collect();
    assert_eq!(
        levels[0],
        LevelConfig {
            consistency: Consistency::Replica,
            max_lag_ms: None,
            max_lag_bytes: Some(4096),
            read_your_writes: ReadYourWrites::Off
        }
    );
    assert_eq!(levels[2].max_lag_ms, Some(800));
    assert_eq!(levels[1].consistency, Consistency::Master);
    // A command with keys under both `a` and `b` takes the stricter level: master.
    let policy = Policy::compile(&cfg, 1);
    let mget = redsplit::commands::lookup_name(b"mget").unwrap();
    let resolved = policy.resolve(mget, |f| {
        f(b"a:1");
        f(b"b:1");
    });
    assert_eq!(resolved.level.consistency, Consistency::Master);
    assert_eq!(resolved.rule, Some(1));
}
