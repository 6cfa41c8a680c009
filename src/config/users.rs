//! The `users` section: the users clients authenticate as, and which commands and keys
//! each may use.

use super::Secret;
use serde::{Deserialize, Serialize};
use std::fmt;

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
