//! Checks of `routing`: each level's staleness budget (there is one, and the poll
//! interval can show a replica to be within it), rule names (given, unique), what a rule
//! matches (keys or commands; valid globs, known command names), and durable writes (a
//! replica count that can be met, a positive timeout), and the key fence's capacity.

use super::{Config, Problems};
use std::collections::HashMap;

/// `routing.default` and `routing.rules`.
pub(super) fn check(p: &mut Problems, cfg: &Config) {
    let b = &cfg.backend;
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
    p.positive(
        "routing.key_fence_capacity",
        routing.key_fence_capacity as u64,
        "the key fence of `read_your_writes: key` could remember no key and would send every such read to the master after any write",
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
            } else if b.is_static() && w.replicas as usize > b.replicas.len() {
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
}
