//! The one parser of `COMMAND` / `COMMAND INFO` replies, shared by the generator (which
//! renders what it parses as Rust) and by run-time registration (which leaks it into
//! `&'static` entries).

use redis_protocol::resp2::types::OwnedFrame;

use super::gen::getkeys_proc_for;
use super::{
    classify, BeginSearch, Class, Command, FindKeys, Flags, GetKeysProc, KeyFlags, KeySpec,
    FLAG_NAMES, KEY_FLAG_NAMES,
};

/// One command (or subcommand) as the server describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct CommandInfo {
    /// Lowercase name (`client|setname` for a subcommand).
    pub name: String,
    pub arity: i32,
    pub flags: Flags,
    /// Flag names this version does not know.
    pub unknown_flags: Vec<String>,
    pub first_key: i32,
    pub last_key: i32,
    pub key_step: i32,
    pub key_specs: Vec<KeySpecInfo>,
    /// Sorted by name.
    pub subcommands: Vec<CommandInfo>,
}

/// One key spec, owning its keyword.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct KeySpecInfo {
    pub flags: KeyFlags,
    pub unknown_flags: Vec<String>,
    pub begin_search: BeginSearchInfo,
    pub find_keys: FindKeys,
}

/// [`BeginSearch`] with an owned keyword.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum BeginSearchInfo {
    Index(i32),
    Keyword { keyword: String, startfrom: i32 },
    Unknown,
}

impl CommandInfo {
    /// The class the proxy gives it.
    pub fn class(&self) -> Class {
        classify(&self.name, self.flags)
    }

    /// Redis's key-finding procedure for it.
    pub fn getkeys_proc(&self) -> GetKeysProc {
        getkeys_proc_for(&self.name)
    }

    /// Flag names this version does not know, in it or any of its specs or subcommands.
    pub fn all_unknown_flags(&self) -> Vec<String> {
        let mut out = self.unknown_flags.clone();
        for s in &self.key_specs {
            out.extend(s.unknown_flags.iter().cloned());
        }
        for sub in &self.subcommands {
            out.extend(sub.all_unknown_flags());
        }
        out
    }

    /// A `'static` table entry, leaking the strings and slices it needs.
    pub fn leak(self) -> Command {
        let class = self.class();
        let getkeys_proc = self.getkeys_proc();
        let key_specs: Vec<KeySpec> = self
            .key_specs
            .into_iter()
            .map(|s| KeySpec {
                flags: s.flags,
                begin_search: match s.begin_search {
                    BeginSearchInfo::Index(i) => BeginSearch::Index(i),
                    BeginSearchInfo::Keyword { keyword, startfrom } => BeginSearch::Keyword {
                        keyword: Box::leak(keyword.into_boxed_str()),
                        startfrom,
                    },
                    BeginSearchInfo::Unknown => BeginSearch::Unknown,
                },
                find_keys: s.find_keys,
            })
            .collect();
        let subcommands: Vec<Command> = self
            .subcommands
            .into_iter()
            .map(CommandInfo::leak)
            .collect();
        Command {
            name: Box::leak(self.name.into_boxed_str()),
            arity: self.arity,
            flags: self.flags,
            class,
            first_key: self.first_key,
            last_key: self.last_key,
            key_step: self.key_step,
            key_specs: Box::leak(key_specs.into_boxed_slice()),
            getkeys_proc,
            subcommands: Box::leak(subcommands.into_boxed_slice()),
        }
    }
}

/// A `COMMAND` or `COMMAND INFO` reply this crate cannot read; `Display` says where
/// and what was found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unreadable COMMAND reply: {0}")]
pub struct CommandInfoError(pub String);

/// Parse a `COMMAND` or `COMMAND INFO` reply: one entry per command, sorted by name; nil
/// entries (names the server does not know) are skipped.
pub(super) fn parse_reply(reply: &OwnedFrame) -> Result<Vec<CommandInfo>, CommandInfoError> {
    parse_entries(reply).map_err(CommandInfoError)
}

fn parse_entries(reply: &OwnedFrame) -> Result<Vec<CommandInfo>, String> {
    let OwnedFrame::Array(entries) = reply else {
        return Err(format!(
            "COMMAND reply is not an array: {}",
            describe(reply)
        ));
    };
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        if matches!(e, OwnedFrame::Null) {
            continue;
        }
        out.push(parse_command(e)?);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// One command entry: name, arity, flags, first key, last key, step, ACL categories,
/// tips, key specs, subcommands (the last three from Redis 7).
fn parse_command(frame: &OwnedFrame) -> Result<CommandInfo, String> {
    let OwnedFrame::Array(fields) = frame else {
        return Err(format!(
            "command entry is not an array: {}",
            describe(frame)
        ));
    };
    let name = match fields.first() {
        Some(f) => string(f)?.to_ascii_lowercase(),
        None => return Err("empty command entry".into()),
    };
    let ctx = |what: &str| format!("command {name:?}: {what}");
    let field = |i: usize, what: &str| fields.get(i).ok_or_else(|| ctx(&format!("no {what}")));
    let arity = int32(field(1, "arity")?).map_err(|e| ctx(&e))?;
    let (flags, unknown_flags) =
        flag_set(field(2, "flags")?, FLAG_NAMES, Flags::union, Flags::NONE).map_err(|e| ctx(&e))?;
    let first_key = int32(field(3, "first key")?).map_err(|e| ctx(&e))?;
    let last_key = int32(field(4, "last key")?).map_err(|e| ctx(&e))?;
    let key_step = int32(field(5, "key step")?).map_err(|e| ctx(&e))?;
    let key_specs = match fields.get(8) {
        None => Vec::new(),
        Some(f) => array(f)
            .and_then(|specs| specs.iter().map(parse_key_spec).collect())
            .map_err(|e| ctx(&format!("key specs: {e}")))?,
    };
    let mut subcommands = match fields.get(9) {
        None => Vec::new(),
        Some(f) => array(f)
            .and_then(|subs| subs.iter().map(parse_command).collect())
            .map_err(|e| ctx(&format!("subcommands: {e}")))?,
    };
    subcommands.sort_by(|a, b| a.name.cmp(&b.name));
    for sub in &subcommands {
        if !sub.name.starts_with(&format!("{name}|")) {
            return Err(ctx(&format!(
                "subcommand {:?} is not named {name}|…",
                sub.name
            )));
        }
    }
    Ok(CommandInfo {
        name,
        arity,
        flags,
        unknown_flags,
        first_key,
        last_key,
        key_step,
        key_specs,
        subcommands,
    })
}

/// A key spec: a map (flattened in RESP2) with `flags`, `begin_search`, `find_keys` and
/// optional `notes`.
fn parse_key_spec(frame: &OwnedFrame) -> Result<KeySpecInfo, String> {
    let mut flags = None;
    let mut begin_search = None;
    let mut find_keys = None;
    for (k, v) in pairs(frame)? {
        match k.as_str() {
            "flags" => {
                flags = Some(flag_set(
                    v,
                    KEY_FLAG_NAMES,
                    KeyFlags::union,
                    KeyFlags::NONE,
                )?)
            }
            "begin_search" => begin_search = Some(parse_begin_search(v)?),
            "find_keys" => find_keys = Some(parse_find_keys(v)?),
            _ => {}
        }
    }
    let (flags, unknown_flags) = flags.unwrap_or_default();
    Ok(KeySpecInfo {
        flags,
        unknown_flags,
        begin_search: begin_search.ok_or("key spec without begin_search")?,
        find_keys: find_keys.ok_or("key spec without find_keys")?,
    })
}

/// A decoded RESP2 map: its keys (strings) and values, in order.
type Map<'a> = Vec<(String, &'a OwnedFrame)>;

/// The `type` and the `spec` map of a `begin_search` or `find_keys` map.
fn typed_spec(frame: &OwnedFrame) -> Result<(String, Map<'_>), String> {
    let mut kind = None;
    let mut spec = Vec::new();
    for (k, v) in pairs(frame)? {
        match k.as_str() {
            "type" => kind = Some(string(v)?),
            "spec" => spec = pairs(v)?,
            _ => {}
        }
    }
    Ok((kind.ok_or("spec without type")?, spec))
}

/// The integer `name` of a spec map.
fn spec_int(spec: &[(String, &OwnedFrame)], name: &str) -> Result<i32, String> {
    let (_, v) = spec
        .iter()
        .find(|(k, _)| k == name)
        .ok_or_else(|| format!("spec without {name}"))?;
    int32(v)
}

fn parse_begin_search(frame: &OwnedFrame) -> Result<BeginSearchInfo, String> {
    let (kind, spec) = typed_spec(frame)?;
    Ok(match kind.as_str() {
        "index" => BeginSearchInfo::Index(spec_int(&spec, "index")?),
        "keyword" => {
            let (_, kw) = spec
                .iter()
                .find(|(k, _)| k == "keyword")
                .ok_or("keyword spec without keyword")?;
            BeginSearchInfo::Keyword {
                keyword: string(kw)?,
                startfrom: spec_int(&spec, "startfrom")?,
            }
        }
        // "unknown", and any kind a later Redis adds: only the command knows.
        _ => BeginSearchInfo::Unknown,
    })
}

fn parse_find_keys(frame: &OwnedFrame) -> Result<FindKeys, String> {
    let (kind, spec) = typed_spec(frame)?;
    Ok(match kind.as_str() {
        "range" => FindKeys::Range {
            lastkey: spec_int(&spec, "lastkey")?,
            keystep: spec_int(&spec, "keystep")?,
            limit: spec_int(&spec, "limit")?,
        },
        "keynum" => FindKeys::Keynum {
            keynumidx: spec_int(&spec, "keynumidx")?,
            firstkey: spec_int(&spec, "firstkey")?,
            keystep: spec_int(&spec, "keystep")?,
        },
        _ => FindKeys::Unknown,
    })
}

/// A set of flags by name; names not in `names` are returned apart.
fn flag_set<F: Copy>(
    frame: &OwnedFrame,
    names: &[(&str, &str, F)],
    union: fn(F, F) -> F,
    none: F,
) -> Result<(F, Vec<String>), String> {
    let mut set = none;
    let mut unknown = Vec::new();
    for f in array(frame)? {
        let s = string(f)?;
        match names.iter().find(|(n, _, _)| *n == s) {
            Some((_, _, flag)) => set = union(set, *flag),
            None => unknown.push(s),
        }
    }
    Ok((set, unknown))
}

fn array(frame: &OwnedFrame) -> Result<&[OwnedFrame], String> {
    match frame {
        OwnedFrame::Array(a) => Ok(a),
        other => Err(format!("expected an array, got {}", describe(other))),
    }
}

/// A RESP2 map: an array of alternating keys and values.
fn pairs(frame: &OwnedFrame) -> Result<Map<'_>, String> {
    let a = array(frame)?;
    if a.len() % 2 != 0 {
        return Err("map with an odd number of elements".into());
    }
    a.chunks_exact(2)
        .map(|kv| match kv {
            [k, v] => Ok((string(k)?, v)),
            _ => Err("map with an odd number of elements".into()),
        })
        .collect()
}

fn string(frame: &OwnedFrame) -> Result<String, String> {
    match frame {
        OwnedFrame::SimpleString(s) | OwnedFrame::BulkString(s) => {
            String::from_utf8(s.clone()).map_err(|_| "string is not UTF-8".to_string())
        }
        other => Err(format!("expected a string, got {}", describe(other))),
    }
}

fn int32(frame: &OwnedFrame) -> Result<i32, String> {
    match frame {
        OwnedFrame::Integer(i) => {
            i32::try_from(*i).map_err(|_| format!("integer {i} out of range"))
        }
        other => Err(format!("expected an integer, got {}", describe(other))),
    }
}

/// A short description of a frame for error messages.
fn describe(frame: &OwnedFrame) -> String {
    match frame {
        OwnedFrame::SimpleString(s) => format!("+{}", String::from_utf8_lossy(s)),
        OwnedFrame::Error(e) => format!("error {e:?}"),
        OwnedFrame::Integer(i) => format!("integer {i}"),
        OwnedFrame::BulkString(s) => format!("string {:?}", String::from_utf8_lossy(s)),
        OwnedFrame::Array(a) => format!("array of {}", a.len()),
        OwnedFrame::Null => "nil".into(),
    }
}
