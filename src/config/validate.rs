//! The checks of [`Config::validate`] and the wording of every error.
//!
//! Each check yields a [`Problem`]: the path of the setting at fault, used to find its
//! line and column, and a message that names the setting, says what is wrong and how to
//! fix it.
//!
//! Here: [`Problem`], the helpers that word the common checks, and [`problems`], which
//! runs the checks of each section in turn: `listeners` (`listen`, `admin.listen`,
//! `tls`), `backend`, `replication`, `routing`, `users` (with `deny_commands`) and
//! `limits`. `values` checks single values (addresses, globs,
//! command names); `serde_errors` rewords serde's errors.

mod backend;
mod limits;
mod listeners;
mod replication;
mod routing;
mod serde_errors;
mod users;
mod values;

pub(crate) use serde_errors::{describe_path, friendly_serde_error};
pub use values::{check_address, check_command_name, check_glob};

use super::{CommandAccess, Config, Consistency, LevelConfig};

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
        if let Some(v) = level.max_lag_ms.filter(|&v| v < 2 * poll) {
            self.0.push(Problem {
                path: ms.0.to_string(),
                also: Some("replication.poll_interval_ms".into()),
                message: format!(
                    "{} is {v} ms, less than twice `replication.poll_interval_ms` ({poll} ms): a caught-up replica's staleness bound climbs to one poll period (plus a round trip) before each poll, so a budget under {min} ms would keep replicas leaving the pool; raise max_lag_ms to at least {min}, lower poll_interval_ms to at most {half}, or use consistency master",
                    ms.1,
                    min = 2 * poll,
                    half = v / 2,
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

/// Whether `name` is a command of the command table (or a module command registered
/// from the master). Validation calls it for every command name in the file.
fn known_command(name: &str) -> bool {
    crate::commands::is_known_name(name)
}

/// Every problem of `cfg`, in the order the settings appear in the schema.
pub(crate) fn problems(cfg: &Config) -> Vec<Problem> {
    let mut p = Problems(Vec::new());
    listeners::check(&mut p, cfg);
    backend::check(&mut p, cfg);
    replication::check(&mut p, cfg);
    routing::check(&mut p, cfg);
    users::check(&mut p, cfg);
    limits::check(&mut p, cfg);
    p.0
}
