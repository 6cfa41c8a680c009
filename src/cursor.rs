//! SCAN-family cursors that remember their node.
//!
//! A `SCAN`/`SSCAN`/`HSCAN`/`ZSCAN` cursor is an index into one server's hash table (each
//! server has its own table sizes and seed), so an iteration must be continued on the
//! node that issued the cursor, or it loses and repeats elements. The proxy therefore
//! hands clients cursors that carry the node: a backend cursor `c ≠ 0` issued by the
//! backend with tag `t` becomes `c << 16 | t`. Cursor `0` (start, and end of an
//! iteration) stays `0`, so clients see Redis's contract unchanged: start at 0, stop
//! at 0, treat everything in between as opaque.
//!
//! In front of a Redis Cluster, `SCAN` walks every master in turn: when one ends its
//! iteration (cursor 0) and another follows, the client gets the cursor `t` alone (the
//! next master's tag with backend cursor 0), which continues on that master from its
//! start; the last master's 0 ends the whole iteration.
//!
//! Redis's cursors are below its table size (at most a few times the number of keys),
//! so 48 bits are far more than any real table needs; a backend cursor that does not
//! fit is refused rather than silently truncated.

use crate::protocol::{encode_command, Request};
use crate::topology::{Backend, View};
use std::sync::Arc;

/// The tag of backend `id`: 1 to 65535 (0 marks no tag).
pub fn tag(id: u32) -> u16 {
    // In range by construction: 1 + (id mod 65535) is at most 65535.
    (1 + id % 65535) as u16
}

/// Which argument of a SCAN-family command is its cursor, or `None` for other commands.
pub fn cursor_arg(name: &str) -> Option<usize> {
    match name {
        "scan" => Some(1),
        "sscan" | "hscan" | "zscan" => Some(2),
        _ => None,
    }
}

/// The client cursor for backend cursor `c` from the backend tagged `t`; `None` if `c`
/// does not fit in 48 bits.
pub fn encode(c: u64, t: u16) -> Option<u64> {
    if c == 0 {
        return Some(0);
    }
    (c < 1 << 48).then_some(c << 16 | u64::from(t))
}

/// A client cursor's backend cursor and node tag; `None` if it is not a number or
/// carries no tag (so no node of this proxy issued it).
pub fn decode(cursor: &[u8]) -> Option<(u64, u16)> {
    let n: u64 = std::str::from_utf8(cursor).ok()?.parse().ok()?;
    let t = (n & 0xffff) as u16;
    (t != 0).then_some((n >> 16, t))
}

/// The backend in `view` (or in a cluster, any of its shards) with tag `t`, with
/// whether it is a master.
pub fn node(view: &View, t: u16) -> Option<(Arc<Backend>, bool)> {
    view.shard_views().find_map(|v| {
        if let Some(m) = v.master.as_ref().filter(|m| tag(m.backend.id) == t) {
            return Some((m.backend.clone(), true));
        }
        v.replicas
            .iter()
            .find(|r| tag(r.backend.id) == t)
            .map(|r| (r.backend.clone(), false))
    })
}

/// In a cluster, the tag of the master of the shard after the one holding backend
/// `id`, where a `SCAN` that `id` ended goes on (`None`: the last shard, or no cluster).
pub fn next_node(view: &View, id: u32) -> Option<u16> {
    let c = view.cluster.as_ref()?;
    let i = c
        .shards
        .iter()
        .position(|v| v.backend_ids().any(|b| b == id))?;
    let next = c.shards.get(i + 1)?;
    next.master.as_ref().map(|m| tag(m.backend.id))
}

/// `req` with its argument `pos` replaced by `cursor`, as RESP.
pub fn with_cursor(req: &Request, pos: usize, cursor: u64) -> Vec<u8> {
    let c = cursor.to_string();
    let mut out = Vec::with_capacity(req.buf.len() + 8);
    encode_command(
        &mut out,
        (0..req.argc()).map(|i| if i == pos { c.as_bytes() } else { req.arg(i) }),
    );
    out
}

/// A SCAN-family reply with its cursor re-tagged for the backend tagged `t`, or `None`
/// when `frame` is not such a reply (an error) or its cursor does not fit.
pub fn tag_reply(frame: &[u8], t: u16) -> Option<Vec<u8>> {
    tag_reply_then(frame, t, None)
}

/// As [`tag_reply`]; a backend cursor 0 (the node's iteration is over) becomes `next`
/// alone when given (the iteration goes on from the start of the node tagged `next`).
pub fn tag_reply_then(frame: &[u8], t: u16, next: Option<u16>) -> Option<Vec<u8>> {
    let rest = frame.strip_prefix(b"*2\r\n$")?;
    let end = memchr::memchr(b'\r', rest)?;
    let len: usize = std::str::from_utf8(rest.get(..end)?).ok()?.parse().ok()?;
    let digits = rest.get(end + 2..end + 2 + len)?;
    let after = rest.get(end + 2 + len..)?;
    let c: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let new = match (c, next) {
        (0, Some(n)) => u64::from(n),
        _ => encode(c, t)?,
    }
    .to_string();
    let mut out = Vec::with_capacity(frame.len() + 8);
    out.extend_from_slice(b"*2\r\n$");
    out.extend_from_slice(new.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(new.as_bytes());
    out.extend_from_slice(after);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_zero_stays_zero() {
        for id in [0u32, 1, 7, 65534, 65535, 70000] {
            let t = tag(id);
            assert_ne!(t, 0);
            for c in [1u64, 5, 1023, (1 << 48) - 1] {
                let e = encode(c, t).expect("fits");
                assert_eq!(decode(e.to_string().as_bytes()), Some((c, t)));
            }
            assert_eq!(encode(0, t), Some(0));
        }
        assert_eq!(encode(1 << 48, 1), None);
        assert_eq!(decode(b"0"), None);
        assert_eq!(decode(b"65536"), None, "no tag");
        assert_eq!(decode(b"x"), None);
    }

    #[test]
    fn a_reply_is_retagged_and_the_rest_kept() {
        let r = b"*2\r\n$2\r\n12\r\n*1\r\n$1\r\nk\r\n";
        let out = tag_reply(r, 3).expect("a scan reply");
        let want = format!(
            "*2\r\n${}\r\n{}\r\n*1\r\n$1\r\nk\r\n",
            (12u64 << 16 | 3).to_string().len(),
            12u64 << 16 | 3
        );
        assert_eq!(out, want.as_bytes());
        assert_eq!(
            tag_reply(b"*2\r\n$1\r\n0\r\n*0\r\n", 3).as_deref(),
            Some(&b"*2\r\n$1\r\n0\r\n*0\r\n"[..])
        );
        assert_eq!(tag_reply(b"-ERR no\r\n", 3), None);
    }

    #[test]
    fn the_cursor_argument_is_replaced() {
        let o = crate::protocol::OwnedRequest::new(["SSCAN", "s", "77", "COUNT", "5"]);
        let out = with_cursor(&o.request(), 2, 9);
        assert_eq!(
            out,
            b"*5\r\n$5\r\nSSCAN\r\n$1\r\ns\r\n$1\r\n9\r\n$5\r\nCOUNT\r\n$1\r\n5\r\n"
        );
    }
}
