//! Checks of single values, also used outside the file's validation: addresses
//! ([`check_address`]), key globs ([`check_glob`]) and command names
//! ([`check_command_name`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether two listen addresses would bind the same socket. Port 0 asks the system for
/// a free port, so two of them never clash.
pub(super) fn same_socket(a: &str, b: &str) -> bool {
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
    fn globs_of_the_examples() {
        for ok in [
            "*",
            "user:*:cart",
            "h?llo",
            "h[ae]llo",
            "h[^e]llo",
            "h[a-b]llo",
            "\\*literal",
            "[\\]]",
        ] {
            assert_eq!(check_glob(ok), Ok(()), "{ok}");
        }
        assert!(check_glob("").is_err());
        assert!(check_glob("user:[ab").is_err());
        assert!(check_glob("user:\\").is_err());
        assert!(check_glob("[]").is_err());
    }
}
