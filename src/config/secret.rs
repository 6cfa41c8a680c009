//! Secrets: the [`Secret`] type, which never prints, and how loading keeps every secret
//! value (also one taken from the environment) out of its error messages.

use super::{source, vars};
use serde::{Deserialize, Serialize};
use std::fmt;

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

/// Values no error message may show: every scalar at a secret's path, every value
/// taken from a variable whose name looks secret, and, when the text is not even
/// well-formed YAML (so paths are unknown), every value taken from the environment.
pub(super) fn secrets(tree: Option<&source::SourceMap>, expanded: &vars::Expanded) -> Vec<String> {
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
pub(super) fn redact(message: String, secrets: &[String]) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
