//! Sizes in bytes as the file writes them: `4096`, `64kb`, `512mb`, `1gb`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A size in bytes: an integer, or a string with a `kb`/`mb`/`gb` suffix (powers of
/// 1024; `b` is also accepted). It prints back in the largest unit that divides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: a number of bytes, or a number with kb, mb or gb (e.g. 64mb)")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v).map(ByteSize).map_err(|_| {
                    E::custom(format!(
                        "invalid size {v}: a size cannot be negative; write e.g. 64mb"
                    ))
                })
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ByteSize, E> {
                parse_size(s).map(ByteSize).ok_or_else(|| {
                    E::custom(format!(
                        "invalid size {s:?}: write a number of bytes, or a number with kb, mb or gb (e.g. 64mb)"
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 % 1024 == 0 && self.0 != 0 {
            s.serialize_str(&self.to_string())
        } else {
            s.serialize_u64(self.0)
        }
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, size) in [("gb", 1u64 << 30), ("mb", 1 << 20), ("kb", 1 << 10)] {
            if n != 0 && n % size == 0 {
                return write!(f, "{}{unit}", n / size);
            }
        }
        write!(f, "{n}")
    }
}

/// An optional byte count written as a number or a size (`64kb`).
pub(super) fn optional_size<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<u64>, D::Error> {
    Ok(Option::<ByteSize>::deserialize(d)?.map(|b| b.0))
}

/// Parse `123`, `123b`, `64kb`, `64mb`, `1gb` (case-insensitive, spaces allowed before
/// the unit) into bytes; `None` if it is not such a size or overflows.
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mult) = if let Some(n) = t.strip_suffix("gb") {
        (n, 1u64 << 30)
    } else if let Some(n) = t.strip_suffix("mb") {
        (n, 1 << 20)
    } else if let Some(n) = t.strip_suffix("kb") {
        (n, 1 << 10)
    } else if let Some(n) = t.strip_suffix('b') {
        (n, 1)
    } else {
        (t.as_str(), 1)
    };
    let num = num.trim();
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    num.parse::<u64>().ok()?.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Some(0));
        assert_eq!(parse_size("123"), Some(123));
        assert_eq!(parse_size("123b"), Some(123));
        assert_eq!(parse_size("64kb"), Some(64 << 10));
        assert_eq!(parse_size("64 MB"), Some(64 << 20));
        assert_eq!(parse_size(" 2gb "), Some(2 << 30));
        for bad in [
            "",
            "mb",
            "-1",
            "+5",
            "1.5mb",
            "12zb",
            "1 2mb",
            "99999999999999gb",
        ] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
        assert_eq!(ByteSize(512 << 20).to_string(), "512mb");
        assert_eq!(ByteSize(1 << 30).to_string(), "1gb");
        assert_eq!(ByteSize(1536).to_string(), "1536");
        assert_eq!(ByteSize(1000).to_string(), "1000");
        let s: ByteSize = serde_yaml::from_str("32mb").unwrap();
        assert_eq!(s, ByteSize(32 << 20));
        let s: ByteSize = serde_yaml::from_str("4096").unwrap();
        assert_eq!(serde_yaml::to_string(&s).unwrap().trim(), "4kb");
        assert!(serde_yaml::from_str::<ByteSize>("-4").is_err());
    }
}
