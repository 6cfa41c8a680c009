//! The checks of [`Config::validate`] and the wording of every error.
//!
//! Each check yields a [`Problem`]: the path of the setting at fault, used to find its
//! line and column, and a message that names the setting, says what is wrong and how to
//! fix it.

use super::source::Pos;
use super::{known_command, CommandAccess, Config, Consistency, LevelConfig};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One thing wrong with a configuration.
#[derive(Debug)]
pub(crate) struct Problem {
    /// Path of the setting at fault (`routing.rules[2].max_lag_ms`).
    pub path: String,
    /// Another setting to point at when the file does not give `path` itself (a
    /// default budget that only became too small because of the poll interval).
    pub also: Option<String>,
    /// What is wrong and how to fix it.
    pub message: String,
}

struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            also: None,
            message: message.into(),
        });
    }

    /// A setting that must not be 0.
    fn positive(&mut self, path: &str, value: u64, why: &str) {
        if value == 0 {
            self.add(
                path,
                format!("`{path}` is 0, but {why}: give a positive value"),
            );
        }
    }

    fn address(&mut self, path: &str, addr: &str, allow_port_zero: bool) {
        if let Err(why) = check_address(addr, allow_port_zero) {
            let eg = if allow_port_zero {
                "127.0.0.1:7480, 0.0.0.0:7480 or [::1]:7480"
            } else {
                "127.0.0.1:6379, redis-1:6379 or [::1]:6379"
            };
            self.add(
                path,
                format!(
                    "`{path}` is not a valid address ({addr:?}): {why}; write host:port, e.g. {eg}"
                ),
            );
        }
    }

    fn glob(&mut self, path: &str, pattern: &str) {
        if let Err(why) = check_glob(pattern) {
            self.add(
                path,
                format!("`{path}` is not a valid key pattern ({pattern:?}): {why}"),
            );
        }
    }

    fn command(&mut self, path: &str, name: &str) {
        if let Err(why) = check_command_name(name) {
            self.add(
                path,
                format!("`{path}` is not a command name ({name:?}): {why}"),
            );
        } else if !known_command(name) {
            self.add(
                path,
                format!("`{path}` names no Redis command ({name:?}): check the spelling"),
            );
        }
    }

    /// A level's budget, once inheritance is resolved. `at` is the level's own path;
    /// `ms` and `bytes` are, for each budget, the path of the setting it comes from
    /// (where the problem is reported) and how to name it in the message.
    fn level(
        &mut self,
        cfg: &Config,
        at: &str,
        level: &LevelConfig,
        ms: (&str, &str),
        bytes: (&str, &str),
    ) {
        let poll = cfg.replication.poll_interval_ms;
        if level.consistency != Consistency::Replica {
            return;
        }
        if level.max_lag_ms.is_none() && level.max_lag_bytes.is_none() {
            let hint = if at == "routing.default" {
                ""
            } else {
                " (neither the rule nor routing.default sets one)"
            };
            self.add(
                at,
                format!(
                    "`{at}` has consistency replica but no staleness budget{hint}: add max_lag_ms (e.g. 1000) or max_lag_bytes, or use consistency any to accept any lag"
                ),
            );
        }
        if let Some(v) = level.max_lag_ms.filter(|&v| v < poll) {
            self.0.push(Problem {
                path: ms.0.to_string(),
                also: Some("replication.poll_interval_ms".into()),
                message: format!(
                    "{} is {v} ms, less than `replication.poll_interval_ms` ({poll} ms): replicas are polled only that often, so none could be shown to be this fresh; raise max_lag_ms to at least {poll}, lower poll_interval_ms, or use consistency master",
                    ms.1
                ),
            });
        }
        if level.max_lag_bytes == Some(0) {
            self.add(
                bytes.0,
                format!(
                    "{} is 0, but a master's offset moves even without client writes (pings), so no replica would qualify: give a budget of some kilobytes, use max_lag_ms, or use consistency master",
                    bytes.1
                ),
            );
        }
    }
}

/// Every problem of `cfg`, in the order the settings appear in the schema.
pub(crate) fn problems(cfg: &Config) -> Vec<Problem> {
    let mut p = Problems(Vec::new());

    // Listeners.
    if cfg.listen.is_empty() {
        p.add("listen", "`listen` is empty: give the address clients connect to, e.g. 127.0.0.1:7480 or 0.0.0.0:7480");
    } else {
        p.address("listen", &cfg.listen, true);
    }
    if !cfg.admin.listen.is_empty() {
        p.address("admin.listen", &cfg.admin.listen, true);
        if same_socket(&cfg.listen, &cfg.admin.listen) {
            p.add(
                "admin.listen",
                format!(
                    "`admin.listen` is the same address as `listen` ({}): give the admin endpoint its own port (e.g. 127.0.0.1:7481), or set it to \"\" to disable it",
                    cfg.listen
                ),
            );
        }
    }

    // TLS: the files must load.
    if let Some(t) = &cfg.tls {
        if let Err(e) = crate::tls::server_config(t) {
            p.add(
                "tls.cert",
                format!("`tls`: {e}; give PEM files the proxy can read"),
            );
        }
        if !t.client_ca.is_empty() && t.cert.is_empty() {
            p.add(
                "tls.cert",
                "`tls.cert` is empty: give the certificate the proxy presents",
            );
        }
    }
    if let Some(t) = &cfg.backend.tls {
        if let Err(e) = crate::tls::backend_target(t, "localhost:6379") {
            p.add(
                "backend.tls.ca",
                format!("`backend.tls`: {e}; give PEM files the proxy can read"),
            );
        }
        if t.cert.is_empty() != t.key.is_empty() {
            p.add("backend.tls.cert", "`backend.tls` gives only one of cert and key: give both (a client certificate) or neither");
        }
    }

    // Backends.
    let b = &cfg.backend;
    let has_static = b.master.is_some() || !b.replicas.is_empty();
    match (&b.sentinel, has_static) {
        (Some(_), true) => p.add(
            "backend.sentinel",
            "`backend` gives both static addresses (master/replicas) and `sentinel`: keep one, either backend.master with backend.replicas, or backend.sentinel",
        ),
        (None, false) => p.add(
            "backend",
            "`backend` names no Redis server: set backend.master (and backend.replicas), or backend.sentinel with its addresses and master_name",
        ),
        _ => {}
    }
    if b.sentinel.is_none() && b.master.is_none() && !b.replicas.is_empty() {
        p.add(
            "backend.replicas",
            "`backend.replicas` is set but `backend.master` is not: add backend.master, the server every write goes to",
        );
    }
    let mut seen: HashMap<String, String> = HashMap::new();
    let statics = b
        .master
        .iter()
        .map(|m| ("backend.master".to_string(), m))
        .chain(
            b.replicas
                .iter()
                .enumerate()
                .map(|(i, r)| (format!("backend.replicas[{i}]"), r)),
        );
    for (path, addr) in statics {
        p.address(&path, addr, false);
        if let Some(first) = seen.get(&addr.to_ascii_lowercase()) {
            p.add(
                &path,
                format!("`{path}` repeats {addr} (already `{first}`): list each server once"),
            );
        } else {
            seen.insert(addr.to_ascii_lowercase(), path);
        }
    }
    if let Some(s) = &b.sentinel {
        if s.addresses.is_empty() {
            p.add(
                "backend.sentinel.addresses",
                "`backend.sentinel.addresses` is empty: list at least one Sentinel, e.g. [\"127.0.0.1:26379\"]",
            );
        }
        for (i, a) in s.addresses.iter().enumerate() {
            p.address(&format!("backend.sentinel.addresses[{i}]"), a, false);
        }
        if s.master_name.trim().is_empty() {
            p.add(
                "backend.sentinel.master_name",
                "`backend.sentinel.master_name` is empty: give the name the Sentinels know the master by (as in `sentinel monitor NAME …`), e.g. mymaster",
            );
        }
        p.positive(
            "backend.sentinel.refresh_ms",
            s.refresh_ms,
            "the topology would be re-read without pause",
        );
    }
    p.positive(
        "backend.connections",
        b.connections as u64,
        "every backend needs at least one shared connection",
    );
    p.positive(
        "backend.connect_timeout_ms",
        b.connect_timeout_ms,
        "every connection attempt would time out at once",
    );
    p.positive(
        "backend.command_timeout_ms",
        b.command_timeout_ms,
        "every request would time out at once",
    );
    p.positive(
        "backend.reconnect_min_ms",
        b.reconnect_min_ms,
        "a failing backend would be retried in a busy loop",
    );
    p.positive(
        "backend.reconnect_max_ms",
        b.reconnect_max_ms,
        "a failing backend would be retried in a busy loop",
    );
    if b.reconnect_max_ms < b.reconnect_min_ms && b.reconnect_max_ms > 0 {
        p.add(
            "backend.reconnect_max_ms",
            format!(
                "`backend.reconnect_max_ms` ({} ms) is less than `backend.reconnect_min_ms` ({} ms): make it at least as large",
                b.reconnect_max_ms, b.reconnect_min_ms
            ),
        );
    }

    // Replication monitor.
    let r = &cfg.replication;
    p.positive(
        "replication.poll_interval_ms",
        r.poll_interval_ms,
        "backends would be polled in a busy loop",
    );
    p.positive(
        "replication.poll_timeout_ms",
        r.poll_timeout_ms,
        "every poll would fail at once",
    );
    p.positive(
        "replication.history_secs",
        r.history_secs,
        "the status page needs some staleness history",
    );

    // Routing.
    let routing = &cfg.routing;
    p.level(
        cfg,
        "routing.default",
        &routing.default,
        ("routing.default.max_lag_ms", "`routing.default.max_lag_ms`"),
        (
            "routing.default.max_lag_bytes",
            "`routing.default.max_lag_bytes`",
        ),
    );
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, rule) in routing.rules.iter().enumerate() {
        let at = format!("routing.rules[{i}]");
        if rule.name.trim().is_empty() {
            p.add(
                format!("{at}.name"),
                format!("`{at}.name` is empty: give the rule a name; it is shown in PROXY EXPLAIN, /status and metrics"),
            );
        } else if let Some(first) = names.get(rule.name.as_str()) {
            p.add(
                format!("{at}.name"),
                format!(
                    "`{at}.name` repeats the rule name {:?} (already routing.rules[{first}]): give each rule its own name",
                    rule.name
                ),
            );
        } else {
            names.insert(&rule.name, i);
        }
        if rule.keys.is_empty() && rule.commands.is_empty() {
            p.add(
                &at,
                format!(
                    "`{at}` ({:?}) has neither keys nor commands, so it would match every read and hide the rules after it: add keys or commands, or put its level in routing.default",
                    rule.name
                ),
            );
        }
        for (k, pattern) in rule.keys.iter().enumerate() {
            p.glob(&format!("{at}.keys[{k}]"), pattern);
        }
        for (c, name) in rule.commands.iter().enumerate() {
            p.command(&format!("{at}.commands[{c}]"), name);
        }
        // A budget the rule inherits is reported at the rule, naming where it comes from.
        let source = |own: bool, field: &str| {
            if own {
                (format!("{at}.{field}"), format!("`{at}.{field}`"))
            } else {
                (
                    at.clone(),
                    format!("`routing.default.{field}` (inherited by `{at}`)"),
                )
            }
        };
        let ms = source(rule.max_lag_ms.is_some(), "max_lag_ms");
        let bytes = source(rule.max_lag_bytes.is_some(), "max_lag_bytes");
        let level = crate::policy::effective_level(rule, &routing.default);
        p.level(cfg, &at, &level, (&ms.0, &ms.1), (&bytes.0, &bytes.1));
        if let Some(w) = &rule.wait {
            let wp = format!("{at}.wait.replicas");
            if w.replicas == 0 {
                p.add(
                    &wp,
                    format!("`{wp}` is 0: a durable write needs at least 1 replica to hold it; remove `wait` to reply at once"),
                );
            } else if b.sentinel.is_none() && w.replicas as usize > b.replicas.len() {
                p.add(
                    &wp,
                    format!(
                        "`{wp}` is {}, but backend.replicas lists {}: no write could ever be confirmed; lower it to at most {}",
                        w.replicas,
                        b.replicas.len(),
                        b.replicas.len()
                    ),
                );
            }
            p.positive(
                &format!("{at}.wait.timeout_ms"),
                w.timeout_ms,
                "every durable write would fail at once",
            );
        }
    }

    // Users.
    let mut users: HashMap<&str, usize> = HashMap::new();
    for (i, u) in cfg.users.iter().enumerate() {
        let at = format!("users[{i}]");
        if u.name.is_empty() {
            p.add(format!("{at}.name"), format!("`{at}.name` is empty: give the user a name (`default` is the one AUTH <password> uses)"));
        } else if let Some(first) = users.get(u.name.as_str()) {
            p.add(
                format!("{at}.name"),
                format!("`{at}.name` repeats the user {:?} (already users[{first}]): give each user once", u.name),
            );
        } else {
            users.insert(&u.name, i);
        }
        if u.password.is_empty() {
            p.add(
                format!("{at}.password"),
                format!(
                    "`{at}.password` is empty: give a password (e.g. password: ${{APP_PASSWORD}}), or remove the user; with no users at all, no authentication is required"
                ),
            );
        }
        if let CommandAccess::List(list) = &u.commands {
            for (c, name) in list.iter().enumerate() {
                p.command(&format!("{at}.commands[{c}]"), name);
            }
        }
        for (k, pattern) in u.keys.iter().enumerate() {
            p.glob(&format!("{at}.keys[{k}]"), pattern);
        }
    }

    for (i, name) in cfg.deny_commands.iter().enumerate() {
        p.command(&format!("deny_commands[{i}]"), name);
    }

    // Limits.
    let l = &cfg.limits;
    p.positive(
        "limits.max_clients",
        l.max_clients as u64,
        "no client could connect",
    );
    p.positive(
        "limits.max_pipeline",
        l.max_pipeline as u64,
        "no request could ever be read",
    );
    p.positive(
        "limits.proto_max_bulk_len",
        l.proto_max_bulk_len.0,
        "every request with an argument would be refused",
    );
    p.positive(
        "limits.max_multibulk_len",
        l.max_multibulk_len,
        "every request would be refused",
    );
    p.positive(
        "limits.client_query_buffer_limit",
        l.client_query_buffer_limit.0,
        "every client would be closed",
    );
    p.positive(
        "limits.client_output_buffer_limit",
        l.client_output_buffer_limit.0,
        "every client would be closed",
    );
    p.positive(
        "limits.pubsub_output_buffer_limit",
        l.pubsub_output_buffer_limit.0,
        "every subscriber would be closed",
    );

    p.0
}

/// Whether two listen addresses would bind the same socket. Port 0 asks the system for
/// a free port, so two of them never clash.
fn same_socket(a: &str, b: &str) -> bool {
    match (split_address(a), split_address(b)) {
        (Ok((ha, pa)), Ok((hb, pb))) => pa != 0 && pa == pb && ha.eq_ignore_ascii_case(hb),
        _ => false,
    }
}

/// Split `host:port` or `[v6]:port` into host (without brackets) and port.
fn split_address(addr: &str) -> Result<(&str, u16), String> {
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let Some((h, after)) = rest.split_once(']') else {
            return Err("the `[` of the IPv6 address is not closed".into());
        };
        if h.parse::<Ipv6Addr>().is_err() {
            return Err(format!("{h:?} is not an IPv6 address"));
        }
        let Some(port) = after.strip_prefix(':') else {
            return Err("the port is missing after `]`".into());
        };
        (h, port)
    } else {
        let Some((h, port)) = addr.rsplit_once(':') else {
            return Err("the port is missing".into());
        };
        if h.contains(':') {
            return Err("an IPv6 address goes in brackets, as in [::1]:6379".into());
        }
        (h, port)
    };
    if host.is_empty() {
        return Err("the host is missing (write 0.0.0.0 for every interface)".into());
    }
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("the port {port:?} is not a number"));
    }
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("the port {port} is out of range 1-65535"))?;
    Ok((host, port))
}

/// Check an address: `host:port`, `[ipv6]:port`, with an IPv4 address, a bracketed
/// IPv6 address or a hostname (letters, digits, `-`, `_`, dot-separated labels) and a
/// port from 1 to 65535 (or 0 where `allow_port_zero`, for listeners that take any
/// free port). The error says what is wrong.
pub fn check_address(addr: &str, allow_port_zero: bool) -> Result<(), String> {
    let (host, port) = split_address(addr)?;
    if port == 0 && !allow_port_zero {
        return Err("the port 0 is out of range 1-65535".into());
    }
    if addr.starts_with('[') || host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let labels: Vec<&str> = host.strip_suffix('.').unwrap_or(host).split('.').collect();
    if labels
        .iter()
        .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
    {
        if host.parse::<Ipv4Addr>().is_err() {
            return Err(format!("{host:?} is not an IPv4 address"));
        }
        return Ok(());
    }
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if host.len() > 253 || !labels.iter().all(label_ok) {
        return Err(format!("{host:?} is not a valid hostname or IP address"));
    }
    Ok(())
}

/// Check a key pattern in Redis glob syntax, as `KEYS` and `SCAN MATCH` use it: `*`
/// (any run), `?` (any one character), `[abc]`, `[^a]`, `[a-z]` (a class, negated with
/// `^`) and `\x` (a literal `x`). Rejected: an empty pattern, a `[` never closed, an
/// empty class, and a trailing lone `\`. The error says what is wrong and how to fix it.
pub fn check_glob(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("it is empty; write \"*\" to match every key".into());
    }
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        match c {
            '\\' => {
                if i + 1 == chars.len() {
                    return Err("it ends with a lone \\; write \\\\ for a literal backslash".into());
                }
                i += 2;
            }
            '[' => {
                let open = i;
                i += 1;
                if chars.get(i) == Some(&'^') {
                    i += 1;
                }
                let first = i;
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(format!(
                                "the [ at character {} is never closed; close it with ], or write \\[ for a literal [",
                                open + 1
                            ))
                        }
                        Some(']') if i == first => {
                            return Err(format!(
                                "the class at character {} is empty and matches nothing; write \\[\\] for a literal []",
                                open + 1
                            ))
                        }
                        Some(']') => break,
                        Some('\\') => {
                            if i + 1 == chars.len() {
                                return Err("it ends with a lone \\; write \\\\ for a literal backslash".into());
                            }
                            i += 2;
                        }
                        Some(_) => i += 1,
                    }
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Check that `name` looks like a command name: letters, digits, `_` and `-`,
/// starting with a letter, with `|` between a command and its subcommand
/// (`CONFIG|GET`). Case does not matter.
pub fn check_command_name(name: &str) -> Result<(), String> {
    const HOW: &str = "a name is letters, digits, _ and -, starting with a letter, with | before a subcommand (e.g. GET, CONFIG|GET)";
    if name.is_empty() {
        return Err(format!("it is empty; {HOW}"));
    }
    for part in name.split('|') {
        let ok = part.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok {
            return Err(HOW.to_string());
        }
    }
    if name.split('|').count() > 2 {
        return Err(HOW.to_string());
    }
    Ok(())
}

/// How to name the mapping at `path` in a sentence.
pub(crate) fn describe_path(path: &str) -> String {
    if path.is_empty() {
        "the top level".into()
    } else {
        format!("`{path}`")
    }
}

/// The edit distance between two short strings, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    // `row` has `b.len() + 1` entries: every `get` below is in range.
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = i;
        let mut left = i + 1;
        if let Some(first) = row.first_mut() {
            *first = left;
        }
        for (j, &cb) in b.iter().enumerate() {
            let Some(cell) = row.get_mut(j + 1) else {
                break;
            };
            let cur = *cell;
            *cell = (prev + usize::from(ca != cb)).min(left + 1).min(cur + 1);
            left = *cell;
            prev = cur;
        }
    }
    row.last().copied().unwrap_or(0)
}

/// Names between backticks in `text`, as serde lists expected fields and variants.
fn backticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// Serde's words for a type, in the file's terms.
fn plain_type(t: &str) -> String {
    let t = t.trim();
    match t {
        "usize" | "u64" | "u32" | "u16" | "u8" => "a whole number (0 or more)".into(),
        "a boolean" => "true or false".into(),
        "a sequence" => "a list".into(),
        "map" | "a map" => "a mapping".into(),
        "sequence" => "a list".into(),
        "unit value" => "nothing (null)".into(),
        _ if t.starts_with("struct ") => "a mapping of settings".into(),
        _ => t.to_string(),
    }
}

/// Rewrite a `serde_yaml` error (its `Display`, with the path it starts with and the
/// `at line L column C` it ends with) into a sentence that says how to fix the text.
/// `pos` is the error's own position; `remap` moves any other position it quotes back
/// to the text the user wrote.
pub(crate) fn friendly_serde_error(
    raw: &str,
    pos: Option<Pos>,
    remap: &dyn Fn(Pos) -> Pos,
) -> String {
    let (path, body) = split_path(raw);
    let body = rewrite_positions(body, pos, remap);
    let at = if path.is_empty() {
        "the file".to_string()
    } else {
        format!("`{path}`")
    };
    if let Some(rest) = body.strip_prefix("unknown field `") {
        let field = rest.split('`').next().unwrap_or_default();
        let allowed = backticked(rest.split_once(", expected").map_or("", |(_, e)| e));
        let best = allowed.iter().map(|a| (distance(field, a), *a)).min();
        let hint = match best {
            Some((d, a)) if d <= 2.max(field.len() / 3) => format!("did you mean `{a}`? "),
            _ => String::new(),
        };
        let list = if allowed.is_empty() {
            "none".to_string()
        } else {
            allowed.join(", ")
        };
        return format!(
            "unknown field `{field}` in {}: {hint}fix the spelling or remove it (allowed here: {list})",
            describe_path(path)
        );
    }
    if let Some(rest) = body.strip_prefix("unknown variant `") {
        let value = rest.split('`').next().unwrap_or_default();
        let allowed = backticked(rest.split_once(", expected").map_or("", |(_, e)| e));
        return format!(
            "{at} cannot be `{value}`: write one of {}",
            allowed.join(", ")
        );
    }
    for kind in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = body.strip_prefix(kind) {
            let (found, expected) = rest
                .rsplit_once(", expected ")
                .unwrap_or((rest, "another type"));
            if path.is_empty() {
                return format!(
                    "the file must be a mapping of settings (listen: …, backend: …, routing: …), but it is a {found}: start each top-level setting with its name and a colon"
                );
            }
            let negative = found.starts_with("integer `-") && expected.starts_with('u');
            let hint = if negative {
                " (it cannot be negative)"
            } else {
                ""
            };
            return format!(
                "{at} has the wrong type: expected {}, found {found}{hint}; fix the value",
                plain_type(expected)
            );
        }
    }
    if let Some(rest) = body.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or_default();
        let holder = if path.is_empty() {
            "the top level".to_string()
        } else {
            format!("`{path}`")
        };
        return format!("{holder} is missing the required field `{field}`: add it");
    }
    if let Some(rest) = body.strip_prefix("duplicate field `") {
        let field = rest.split('`').next().unwrap_or_default();
        return format!(
            "field `{field}` is given twice in {}: keep one of them",
            describe_path(path)
        );
    }
    if !path.is_empty() {
        // A message of our own deserializers (sizes, command access).
        return format!("`{path}`: {body}");
    }
    if body.contains("more than one document") {
        return "the file holds more than one YAML document: remove the `---` separators and keep one".into();
    }
    format!(
        "YAML syntax error: {body}; check the indentation (spaces, not tabs), quotes and brackets"
    )
}

/// Split serde_yaml's `path: message` (the path is absent for errors at the top).
fn split_path(raw: &str) -> (&str, &str) {
    if let Some((p, rest)) = raw.split_once(": ") {
        let is_path = !p.is_empty()
            && p.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']' | '?' | '-')
            })
            && !matches!(p, "invalid type" | "invalid value");
        if is_path {
            return (p, rest);
        }
    }
    ("", raw)
}

/// Drop the `at line L column C` that repeats the error's own position, and move every
/// other quoted position back to the text the user wrote.
fn rewrite_positions(body: &str, pos: Option<Pos>, remap: &dyn Fn(Pos) -> Pos) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some(i) = rest.find(" at line ") {
        out.push_str(&rest[..i]);
        let after = &rest[i + " at line ".len()..];
        let parsed = after.split_once(" column ").and_then(|(l, tail)| {
            let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
            let line = l.parse::<usize>().ok()?;
            let column = tail[..digits].parse::<usize>().ok()?;
            Some((Pos { line, column }, &tail[digits..]))
        });
        match parsed {
            Some((p, tail)) => {
                if Some(p) != pos {
                    let q = remap(p);
                    out.push_str(&format!(" at line {} column {}", q.line, q.column));
                }
                rest = tail;
            }
            None => {
                out.push_str(" at line ");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for ok in [
            "*", "user:*", "a?c", "[abc]", "[^a]x", "[a-z]*", "\\*", "a\\[b", "[\\]]", "x]",
        ] {
            assert_eq!(check_glob(ok), Ok(()), "{ok}");
        }
        assert!(check_glob("").unwrap_err().contains("empty"));
        assert!(check_glob("user:[abc")
            .unwrap_err()
            .contains("the [ at character 6 is never closed"));
        assert!(check_glob("[^").unwrap_err().contains("never closed"));
        assert!(check_glob("[a\\").unwrap_err().contains("lone \\"));
        assert!(check_glob("ab\\").unwrap_err().contains("lone \\"));
        assert!(check_glob("a[]")
            .unwrap_err()
            .contains("empty and matches nothing"));
        assert!(check_glob("a[^]").unwrap_err().contains("empty"));
        assert!(check_glob("[]\\]]x").unwrap_err().contains("empty"));
    }

    #[test]
    fn addresses() {
        for ok in [
            "127.0.0.1:6379",
            "[::1]:6379",
            "localhost:1",
            "redis-master.svc.cluster.local:65535",
            "redis_1:6379",
            "host.:1",
        ] {
            assert_eq!(check_address(ok, false), Ok(()), "{ok}");
        }
        assert_eq!(check_address("127.0.0.1:0", true), Ok(()));
        assert!(check_address("127.0.0.1:0", false)
            .unwrap_err()
            .contains("out of range"));
        assert!(check_address("127.0.0.1:65536", false)
            .unwrap_err()
            .contains("out of range"));
        assert!(check_address("127.0.0.1", false)
            .unwrap_err()
            .contains("port is missing"));
        assert!(check_address("::1:6379", false)
            .unwrap_err()
            .contains("brackets"));
        assert!(check_address("[::1]", false)
            .unwrap_err()
            .contains("missing"));
        assert!(check_address("[::g]:1", false)
            .unwrap_err()
            .contains("not an IPv6"));
        assert!(check_address(":6379", false)
            .unwrap_err()
            .contains("host is missing"));
        assert!(check_address("a b:1", false)
            .unwrap_err()
            .contains("hostname"));
        assert!(check_address("-a:1", false)
            .unwrap_err()
            .contains("hostname"));
        assert!(check_address("300.1.1.1:1", false)
            .unwrap_err()
            .contains("IPv4"));
        assert!(check_address("h:x", false)
            .unwrap_err()
            .contains("not a number"));
        assert!(same_socket("127.0.0.1:7480", "127.0.0.1:7480"));
        assert!(!same_socket("127.0.0.1:0", "127.0.0.1:0"));
        assert!(!same_socket("127.0.0.1:7480", "127.0.0.1:7481"));
    }

    #[test]
    fn command_names() {
        for ok in ["GET", "get", "CONFIG|GET", "client|no-evict", "x_1"] {
            assert_eq!(check_command_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "GET SET", "1GET", "|GET", "A||B", "A|B|C", "GET*"] {
            assert!(check_command_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn serde_messages() {
        let id = |p: Pos| p;
        let p = Some(Pos { line: 4, column: 3 });
        let m = friendly_serde_error(
            "backend: unknown field `pasword`, expected one of `master`, `password` at line 4 column 3",
            p,
            &id,
        );
        assert_eq!(
            m,
            "unknown field `pasword` in `backend`: did you mean `password`? fix the spelling or remove it (allowed here: master, password)"
        );
        let m = friendly_serde_error(
            "workers: invalid type: integer `-1`, expected usize at line 1 column 10",
            Some(Pos {
                line: 1,
                column: 10,
            }),
            &id,
        );
        assert!(m.contains("`workers` has the wrong type: expected a whole number (0 or more), found integer `-1` (it cannot be negative)"), "{m}");
        let m = friendly_serde_error(
            "found a tab character at line 2 column 1, while scanning a plain scalar at line 1 column 9",
            Some(Pos { line: 2, column: 1 }),
            &|p| Pos { line: p.line + 10, column: p.column },
        );
        assert_eq!(
            m,
            "YAML syntax error: found a tab character, while scanning a plain scalar at line 11 column 9; check the indentation (spaces, not tabs), quotes and brackets"
        );
        assert_eq!(distance("pasword", "password"), 1);
    }
}
