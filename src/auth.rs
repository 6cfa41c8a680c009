//! Who a client is, and what it may do: users from `proxy.yaml`, passwords compared in
//! constant time, command and key permissions, and the deny list; and Redis's own ACL
//! users (`redis_users`), whose permissions Redis checks on connections logged in as
//! them, but for the commands the proxy answers itself ([`User::refusal`]).

use crate::backend::Login;
use crate::commands::{Class, Command};
use crate::config::{AccessClass, CommandAccess, Config, Secret};
use crate::policy::Glob;
use rustc_hash::FxHashSet as HashSet;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// A Redis ACL user's refusals of commands the proxy answers itself: each command's
/// table name, and the error line Redis gave for it.
pub type Refusals = Vec<(&'static str, Box<str>)>;

/// A user clients authenticate as.
#[derive(Debug)]
pub struct User {
    /// The name.
    pub name: String,
    password: Secret,
    commands: Commands,
    keys: Vec<Glob>,
    all_keys: bool,
    admin: bool,
    /// A Redis ACL user: its connections log in as it, so Redis applies its permissions.
    pub login: Option<Arc<Login>>,
    /// A Redis ACL user's refusals of the commands the proxy answers itself: the
    /// command's table name and the error line Redis gave when the login was checked.
    refused: Refusals,
}

#[derive(Debug)]
enum Commands {
    All,
    Read,
    List(HashSet<String>),
}

/// Why a command is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// The command is not allowed.
    Command,
    /// A key is outside the user's patterns.
    Key,
}

impl User {
    /// A Redis ACL user the master accepted; `refused` holds the commands answered by
    /// the proxy that Redis refuses it, with Redis's error line for each.
    pub fn redis(login: Arc<Login>, refused: Refusals) -> User {
        User {
            name: login.user.clone(),
            password: Secret::default(),
            commands: Commands::All,
            keys: Vec::new(),
            all_keys: true,
            admin: true,
            login: Some(login),
            refused,
        }
    }

    /// For a Redis ACL user, Redis's error line refusing `cmd` (a command the proxy
    /// answers itself); `None`: allowed.
    pub fn refusal(&self, cmd: &Command) -> Option<&str> {
        self.refused
            .iter()
            .find(|(n, _)| *n == cmd.name)
            .map(|(_, e)| &**e)
    }

    /// Whether this user may run `cmd` (the table entry) at all.
    pub fn may_run(&self, cmd: &Command) -> bool {
        let base = cmd.name.split('|').next().unwrap_or(cmd.name);
        if needs_admin(cmd, base) && !self.admin {
            return false;
        }
        match &self.commands {
            Commands::All => true,
            Commands::Read => {
                matches!(
                    cmd.class,
                    Class::Read | Class::Connection | Class::Transaction
                ) || (cmd.class == Class::PubSub
                    && !base.eq_ignore_ascii_case("publish")
                    && !base.eq_ignore_ascii_case("spublish"))
            }
            Commands::List(set) => {
                set.contains(cmd.name) || set.contains(base) || cmd.class == Class::Connection
            }
        }
    }

    /// Whether this user may touch `key`.
    #[inline]
    pub fn may_touch(&self, key: &[u8]) -> bool {
        self.all_keys || self.keys.iter().any(|g| g.matches(key))
    }

    /// Whether the user may run admin commands.
    pub fn is_admin(&self) -> bool {
        self.admin
    }

    /// Whether the user may touch every key (no per-key check needed).
    pub fn all_keys(&self) -> bool {
        self.all_keys
    }
}

/// Whether running `cmd` takes the `admin` permission: commands Redis flags `admin`, and
/// the ones that wipe or swap whole databases (Redis flags them only `write`, but counts
/// them `@dangerous` with the admin commands).
fn needs_admin(cmd: &Command, base: &str) -> bool {
    cmd.class == Class::Admin || matches!(base, "flushall" | "flushdb" | "swapdb")
}

/// The users of the current configuration.
#[derive(Debug, Default)]
pub struct Users {
    users: Vec<Arc<User>>,
    redis: bool,
}

impl Users {
    /// Build from the configuration.
    pub fn from_config(cfg: &Config) -> Users {
        let users = cfg
            .users
            .iter()
            .map(|u| {
                let commands = match &u.commands {
                    CommandAccess::Class(AccessClass::All) | CommandAccess::Unset => Commands::All,
                    CommandAccess::Class(AccessClass::Read) => Commands::Read,
                    CommandAccess::List(l) => {
                        Commands::List(l.iter().map(|c| c.to_ascii_lowercase()).collect())
                    }
                };
                Arc::new(User {
                    name: u.name.clone(),
                    password: u.password.clone(),
                    commands,
                    all_keys: u.keys.iter().any(|k| k == "*"),
                    keys: u.keys.iter().map(|k| Glob::new(k)).collect(),
                    admin: u.admin,
                    login: None,
                    refused: Vec::new(),
                })
            })
            .collect();
        Users {
            users,
            redis: cfg.redis_users(),
        }
    }

    /// Whether clients may log in as Redis's own ACL users (checked by the master).
    pub fn redis(&self) -> bool {
        self.redis
    }

    /// Whether clients must authenticate.
    pub fn required(&self) -> bool {
        !self.users.is_empty()
    }

    /// Check a name and password in constant time (every user's password is compared, so
    /// timing tells nothing about which users exist).
    pub fn check(&self, name: &[u8], password: &[u8]) -> Option<Arc<User>> {
        let mut found = None;
        for u in &self.users {
            let name_ok = u.name.as_bytes().ct_eq(name);
            let pass_ok = u.password.expose().as_bytes().ct_eq(password);
            if bool::from(name_ok & pass_ok) {
                found = Some(u.clone());
            }
        }
        found
    }

    /// Find a user by name (re-resolving a session's user after a reload).
    pub fn by_name(&self, name: &str) -> Option<Arc<User>> {
        self.users.iter().find(|u| u.name == name).cloned()
    }
}

/// The deny list: the table entries it names (a container covers its subcommands), and
/// the names themselves for commands registered at run time.
#[derive(Debug, Default)]
pub struct DenyList {
    names: HashSet<String>,
    ids: HashSet<usize>,
}

impl DenyList {
    /// Build from the configuration.
    pub fn from_config(cfg: &Config) -> DenyList {
        DenyList {
            names: cfg
                .deny_commands
                .iter()
                .map(|c| c.to_ascii_lowercase())
                .collect(),
            ids: crate::policy::command_ids(&cfg.deny_commands),
        }
    }

    /// Whether `cmd` is denied (by its own name or its container's).
    #[inline]
    pub fn denies(&self, cmd: &Command) -> bool {
        if self.names.is_empty() {
            return false;
        }
        if self.ids.contains(&crate::policy::command_id(cmd)) {
            return true;
        }
        if cmd.flags.contains(crate::commands::Flags::MODULE) {
            let base = cmd.name.split('|').next().unwrap_or(cmd.name);
            return self.names.contains(cmd.name) || self.names.contains(base);
        }
        false
    }
}
