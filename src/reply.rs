//! Replies the proxy makes itself, and the few backend replies it reads.
//!
//! A [`Value`] is encoded as RESP2 or RESP3 (per the client's `HELLO`) by `redis-protocol`.
//! Backend replies the proxy must understand (`ROLE`, `INFO`, `CLIENT ID`, Sentinel
//! answers) are decoded with `redis-protocol` too; they are off the hot path.

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::types::{BytesFrame as Frame2, OwnedFrame as Owned2};
use redis_protocol::resp3::types::{
    BytesFrame as Frame3, FrameMap, OwnedFrame as Owned3, VerbatimStringFormat,
};

/// Reply that means success.
pub const OK: &[u8] = b"+OK\r\n";
/// Reply to `PING` without argument.
pub const PONG: &[u8] = b"+PONG\r\n";
/// `+RESET`.
pub const RESET: &[u8] = b"+RESET\r\n";
/// Redis's reply to a command from a client that must authenticate first.
pub const NOAUTH: &[u8] = b"-NOAUTH Authentication required.\r\n";
/// Redis's reply to a wrong user name or password.
pub const WRONGPASS: &[u8] = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n";

/// A reply value, independent of protocol version.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `+text`
    Simple(String),
    /// `-text` (the text includes the error code, e.g. `ERR ...`).
    Error(String),
    /// `:n`
    Int(i64),
    /// `$len` bulk string.
    Bulk(Bytes),
    /// Null (`$-1` in RESP2, `_` in RESP3).
    Null,
    /// `*n`
    Array(Vec<Value>),
    /// A map (RESP3 `%`); a flat key, value, … array in RESP2.
    Map(Vec<(Value, Value)>),
    /// A push (RESP3 `>`); an array in RESP2.
    Push(Vec<Value>),
    /// Verbatim text (RESP3 `=txt:`); a bulk string in RESP2.
    Verbatim(String),
    /// A double (RESP3 `,`); a bulk string in RESP2.
    Double(f64),
}

impl Value {
    /// A bulk string from text.
    pub fn bulk(s: impl AsRef<[u8]>) -> Value {
        Value::Bulk(Bytes::copy_from_slice(s.as_ref()))
    }

    /// A simple string.
    pub fn simple(s: impl Into<String>) -> Value {
        Value::Simple(s.into())
    }

    /// An error; `msg` starts with the error code (`ERR`, `NOPERM`, …).
    pub fn error(msg: impl Into<String>) -> Value {
        let mut m: String = msg.into();
        // An error is one line.
        m.retain(|c| c != '\r' && c != '\n');
        Value::Error(m)
    }

    /// Append this value's encoding to `out`.
    pub fn encode(&self, resp3: bool, out: &mut BytesMut) {
        // Encoding a frame we built cannot fail except on allocation.
        if resp3 {
            let _ = redis_protocol::resp3::encode::complete::extend_encode(
                out,
                &self.to_resp3(),
                false,
            );
        } else {
            let _ = redis_protocol::resp2::encode::extend_encode(out, &self.to_resp2(), false);
        }
    }

    /// This value's encoding as a new buffer.
    pub fn to_bytes(&self, resp3: bool) -> BytesMut {
        let mut out = BytesMut::new();
        self.encode(resp3, &mut out);
        out
    }

    fn to_resp2(&self) -> Frame2 {
        match self {
            Value::Simple(s) => Frame2::SimpleString(Bytes::copy_from_slice(s.as_bytes())),
            Value::Error(s) => Frame2::Error(s.as_str().into()),
            Value::Int(n) => Frame2::Integer(*n),
            Value::Bulk(b) => Frame2::BulkString(b.clone()),
            Value::Null => Frame2::Null,
            Value::Array(v) | Value::Push(v) => {
                Frame2::Array(v.iter().map(Value::to_resp2).collect())
            }
            Value::Map(kv) => Frame2::Array(
                kv.iter()
                    .flat_map(|(k, v)| [k.to_resp2(), v.to_resp2()])
                    .collect(),
            ),
            Value::Verbatim(s) => Frame2::BulkString(Bytes::copy_from_slice(s.as_bytes())),
            Value::Double(d) => Frame2::BulkString(Bytes::from(format_double(*d))),
        }
    }

    fn to_resp3(&self) -> Frame3 {
        match self {
            Value::Simple(s) => Frame3::SimpleString {
                data: Bytes::copy_from_slice(s.as_bytes()),
                attributes: None,
            },
            Value::Error(s) => Frame3::SimpleError {
                data: s.as_str().into(),
                attributes: None,
            },
            Value::Int(n) => Frame3::Number {
                data: *n,
                attributes: None,
            },
            Value::Bulk(b) => Frame3::BlobString {
                data: b.clone(),
                attributes: None,
            },
            Value::Null => Frame3::Null,
            Value::Array(v) => Frame3::Array {
                data: v.iter().map(Value::to_resp3).collect(),
                attributes: None,
            },
            Value::Push(v) => Frame3::Push {
                data: v.iter().map(Value::to_resp3).collect(),
                attributes: None,
            },
            Value::Map(kv) => {
                let mut m = FrameMap::with_capacity(kv.len());
                for (k, v) in kv {
                    m.insert(k.to_resp3(), v.to_resp3());
                }
                Frame3::Map {
                    data: m,
                    attributes: None,
                }
            }
            Value::Verbatim(s) => Frame3::VerbatimString {
                data: Bytes::copy_from_slice(s.as_bytes()),
                format: VerbatimStringFormat::Text,
                attributes: None,
            },
            Value::Double(d) => Frame3::Double {
                data: *d,
                attributes: None,
            },
        }
    }
}

fn format_double(d: f64) -> String {
    if d.is_infinite() {
        if d > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }
    } else {
        format!("{d}")
    }
}

/// A decoded backend reply, protocol-independent, for the replies the proxy reads.
#[derive(Clone, Debug, PartialEq)]
pub enum Decoded {
    /// A simple, bulk or verbatim string.
    Str(Bytes),
    /// An error reply.
    Error(String),
    /// An integer.
    Int(i64),
    /// Null.
    Null,
    /// An array, set or push.
    Array(Vec<Decoded>),
    /// A map (as pairs).
    Map(Vec<(Decoded, Decoded)>),
    /// A double, boolean or big number, as text.
    Other(String),
}

impl Decoded {
    /// Decode one complete reply (RESP2 or RESP3 syntax).
    pub fn parse(buf: &[u8], resp3: bool) -> Option<Decoded> {
        if resp3 {
            let (f, _) = redis_protocol::resp3::decode::complete::decode(buf).ok()??;
            Some(from3(f))
        } else {
            let (f, _) = redis_protocol::resp2::decode::decode(buf).ok()??;
            Some(from2(f))
        }
    }

    /// The value as UTF-8 text if it is a string or number.
    pub fn as_str(&self) -> Option<String> {
        match self {
            Decoded::Str(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Decoded::Int(n) => Some(n.to_string()),
            Decoded::Other(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// The value as an integer (an integer reply, or a string holding one).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Decoded::Int(n) => Some(*n),
            Decoded::Str(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            _ => None,
        }
    }

    /// The elements of an array (or the flattened pairs of a map).
    pub fn into_items(self) -> Option<Vec<Decoded>> {
        match self {
            Decoded::Array(v) => Some(v),
            Decoded::Map(kv) => Some(kv.into_iter().flat_map(|(k, v)| [k, v]).collect()),
            _ => None,
        }
    }
}

fn from2(f: Owned2) -> Decoded {
    match f {
        Owned2::SimpleString(b) | Owned2::BulkString(b) => Decoded::Str(Bytes::from(b)),
        Owned2::Error(e) => Decoded::Error(e),
        Owned2::Integer(n) => Decoded::Int(n),
        Owned2::Null => Decoded::Null,
        Owned2::Array(v) => Decoded::Array(v.into_iter().map(from2).collect()),
    }
}

fn from3(f: Owned3) -> Decoded {
    match f {
        Owned3::SimpleString { data, .. } | Owned3::BlobString { data, .. } => {
            Decoded::Str(Bytes::from(data))
        }
        Owned3::VerbatimString { data, .. } => Decoded::Str(Bytes::from(data)),
        Owned3::SimpleError { data, .. } => Decoded::Error(data),
        Owned3::BlobError { data, .. } => {
            Decoded::Error(String::from_utf8_lossy(&data).into_owned())
        }
        Owned3::Number { data, .. } => Decoded::Int(data),
        Owned3::Null => Decoded::Null,
        Owned3::Array { data, .. } | Owned3::Push { data, .. } => {
            Decoded::Array(data.into_iter().map(from3).collect())
        }
        Owned3::Set { data, .. } => Decoded::Array(data.into_iter().map(from3).collect()),
        Owned3::Map { data, .. } => Decoded::Map(
            data.into_iter()
                .map(|(k, v)| (from3(k), from3(v)))
                .collect(),
        ),
        Owned3::Double { data, .. } => Decoded::Other(format_double(data)),
        Owned3::Boolean { data, .. } => Decoded::Other(if data { "1".into() } else { "0".into() }),
        Owned3::BigNumber { data, .. } => {
            Decoded::Other(String::from_utf8_lossy(&data).into_owned())
        }
        other => Decoded::Other(format!("{other:?}")),
    }
}

/// The `key:value` lines of an `INFO` reply's text, borrowed from it: the replication
/// monitor reads a few fields of every poll's reply, without copying any.
#[derive(Debug, Default)]
pub struct Info<'a>(Vec<(&'a str, &'a str)>);

impl<'a> Info<'a> {
    /// Parse the text of an `INFO` reply (section headers and blank lines skipped).
    pub fn parse(text: &'a str) -> Info<'a> {
        Info(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k, v.trim_end()))
                .collect(),
        )
    }

    /// The value of field `key`, if the reply has it.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

/// A reply's bytes as text: borrowed when they are UTF-8 (as `INFO` is), else with
/// replacement characters.
pub fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields_are_read_from_the_reply_text() {
        let raw = "# Replication\r\nrole:slave\r\nmaster_link_status:up\r\n\r\n# Persistence\r\nloading:0\r\nslave_repl_offset:1234\r\n";
        let info = Info::parse(raw);
        assert_eq!(info.get("role"), Some("slave"));
        assert_eq!(info.get("master_link_status"), Some("up"));
        assert_eq!(info.get("slave_repl_offset"), Some("1234"));
        assert_eq!(info.get("loading"), Some("0"));
        assert_eq!(info.get("# Replication"), None);
        assert_eq!(info.get("master_repl_offset"), None);
        assert!(matches!(
            text(b"role:master"),
            std::borrow::Cow::Borrowed("role:master")
        ));
        assert_eq!(text(b"a\xffb"), "a\u{fffd}b");
    }

    #[test]
    fn map_is_flat_in_resp2_and_map_in_resp3() {
        let v = Value::Map(vec![
            (Value::bulk("server"), Value::bulk("redis")),
            (Value::bulk("proto"), Value::Int(3)),
        ]);
        assert_eq!(
            &v.to_bytes(false)[..],
            b"*4\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n"
        );
        assert_eq!(
            &v.to_bytes(true)[..],
            b"%2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n"
        );
        assert_eq!(&Value::Null.to_bytes(false)[..], b"$-1\r\n");
        assert_eq!(&Value::Null.to_bytes(true)[..], b"_\r\n");
        assert_eq!(
            &Value::error("ERR a\r\nb").to_bytes(false)[..],
            b"-ERR ab\r\n"
        );
    }

    #[test]
    fn decode_role() {
        let d = Decoded::parse(b"*3\r\n$6\r\nmaster\r\n:42\r\n*0\r\n", false).unwrap();
        let items = d.into_items().unwrap();
        assert_eq!(items[0].as_str().unwrap(), "master");
        assert_eq!(items[1].as_int(), Some(42));
    }
}
