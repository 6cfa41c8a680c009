//! RESP framing for the hot path.
//!
//! Requests are scanned in place: a [`RequestParser`] finds where one request ends and
//! records each argument as a [`Span`] into the client's read buffer, so the request can
//! be forwarded as the bytes it arrived as. Replies from backends are only delimited,
//! never decoded, by a [`ReplyScanner`]. Both keep their progress between calls, so a
//! request or reply that arrives in many reads is scanned once, and neither allocates for
//! what a peer merely declares: a `*1000000` header costs a counter, not a vector.
//!
//! `redis-protocol` decodes into trees (a `Vec` per array), which is right for the
//! proxy's own replies and for the replies the monitor reads ([`crate::reply`]), and is the
//! reference these scanners are tested against, but would cost an allocation per request
//! here.
#![deny(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::fmt;

/// A byte range `[start, end)` inside a request buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    /// Offset of the first byte.
    pub start: u32,
    /// Offset one past the last byte.
    pub end: u32,
}

impl Span {
    /// The bytes this span covers in `buf` (empty if out of range).
    #[inline]
    pub fn of<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }
}

/// A parsed request: its argument spans over the buffer they point into.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The buffer the spans point into.
    pub buf: &'a [u8],
    /// One span per argument; the first is the command name.
    pub args: &'a [Span],
}

impl<'a> Request<'a> {
    /// Number of arguments, the command name included.
    #[inline]
    pub fn argc(&self) -> usize {
        self.args.len()
    }

    /// Argument `i` (0 is the command name); empty if out of range.
    #[inline]
    pub fn arg(&self, i: usize) -> &'a [u8] {
        self.args.get(i).map(|s| s.of(self.buf)).unwrap_or_default()
    }
}

/// A request built from separate arguments (`PROXY EXPLAIN`, tests): the arguments back
/// to back in one buffer, with their spans.
#[derive(Clone, Debug, Default)]
pub struct OwnedRequest {
    buf: Vec<u8>,
    args: Vec<Span>,
}

impl OwnedRequest {
    /// The request made of `args` (the first is the command name).
    pub fn new<A: AsRef<[u8]>>(args: impl IntoIterator<Item = A>) -> OwnedRequest {
        let mut r = OwnedRequest::default();
        for a in args {
            let start = r.buf.len() as u32;
            r.buf.extend_from_slice(a.as_ref());
            r.args.push(Span {
                start,
                end: r.buf.len() as u32,
            });
        }
        r
    }

    /// The request, as the parser would have returned it.
    pub fn request(&self) -> Request<'_> {
        Request {
            buf: &self.buf,
            args: &self.args,
        }
    }
}

/// Limits applied while scanning client requests, as Redis applies them.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest bulk string a request may carry (Redis `proto-max-bulk-len`).
    pub max_bulk_len: u64,
    /// Largest argument count a request may declare.
    pub max_multibulk_len: u64,
    /// Largest inline request line, and largest `*`/`$` header line (Redis: 64 KiB).
    pub max_inline_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 512 * 1024 * 1024,
            max_multibulk_len: i32::MAX as u64,
            max_inline_len: 64 * 1024,
        }
    }
}

/// A protocol violation. The message is what Redis says after `-ERR `; the connection
/// is closed after it is sent, as Redis does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProtocolError {}

fn perr(msg: &str) -> ProtocolError {
    ProtocolError(format!("Protocol error: {msg}"))
}

/// What [`RequestParser::parse`] found at the start of the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A complete multibulk request of `len` bytes; its arguments are in
    /// [`RequestParser::args`], relative to the start of the buffer.
    Multibulk {
        /// Bytes the request occupies.
        len: usize,
    },
    /// A complete inline request of `len` bytes (one line). It was re-encoded as a
    /// multibulk request in [`RequestParser::inline_buf`]; the argument spans point there.
    Inline {
        /// Bytes the line occupies in the input.
        len: usize,
    },
    /// `len` bytes that carry no command (an empty line, `*0`, `*-1`); Redis ignores them.
    Empty {
        /// Bytes to skip.
        len: usize,
    },
}

/// Resumable scanner for client requests (RESP multibulk or inline).
#[derive(Debug, Default)]
pub struct RequestParser {
    /// Argument spans of the request most recently returned.
    pub args: Vec<Span>,
    /// The RESP encoding of the last inline request.
    pub inline_buf: Vec<u8>,
    /// Arguments still expected for a multibulk request in progress (0: none started).
    expect: u64,
    /// Offset where scanning resumes inside the request in progress.
    pos: usize,
    /// Set when the client has not authenticated yet and the proxy requires it; Redis then
    /// allows only small requests.
    pub unauthenticated: bool,
}

const UNAUTH_MAX_MULTIBULK: u64 = 10;
const UNAUTH_MAX_BULK: u64 = 16384;

impl RequestParser {
    /// A parser with no request in progress.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forget any partial request (after the buffer it referred to was dropped).
    pub fn reset(&mut self) {
        self.args.clear();
        self.expect = 0;
        self.pos = 0;
    }

    /// Scan the request at the start of `buf`. `Ok(None)` means more bytes are needed;
    /// the scanner remembers how far it got, so the next call with the same buffer
    /// (grown) resumes there. After `Ok(Some(_))` the caller drops the request's bytes
    /// from the front of its buffer before the next call.
    pub fn parse(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<Parsed>, ProtocolError> {
        if self.expect == 0 && self.pos == 0 {
            match buf.first() {
                None => return Ok(None),
                Some(b'*') => {}
                Some(_) => return self.parse_inline(buf, limits),
            }
            // Header line: *<count>\r\n
            let Some(line_end) = find_cr(buf, 1, limits.max_inline_len) else {
                if buf.len() > limits.max_inline_len {
                    return Err(perr("too big mbulk count string"));
                }
                return Ok(None);
            };
            if line_end + 1 >= buf.len() {
                return Ok(None);
            }
            let count = parse_int(buf.get(1..line_end).unwrap_or_default())
                .filter(|n| *n <= i32::MAX as i64)
                .ok_or_else(|| perr("invalid multibulk length"))?;
            let after = line_end + 2;
            if count <= 0 {
                return Ok(Some(Parsed::Empty { len: after }));
            }
            let count = count as u64;
            if self.unauthenticated && count > UNAUTH_MAX_MULTIBULK {
                return Err(perr("unauthenticated multibulk length"));
            }
            if count > limits.max_multibulk_len {
                return Err(perr("invalid multibulk length"));
            }
            self.args.clear();
            self.expect = count;
            self.pos = after;
        }
        while self.expect > 0 {
            let pos = self.pos;
            let Some(&first) = buf.get(pos) else {
                return Ok(None);
            };
            if first != b'$' {
                return Err(ProtocolError(format!(
                    "Protocol error: expected '$', got '{}'",
                    char::from(first)
                )));
            }
            let Some(line_end) = find_cr(buf, pos + 1, limits.max_inline_len) else {
                if buf.len() - pos > limits.max_inline_len {
                    return Err(perr("too big bulk count string"));
                }
                return Ok(None);
            };
            if line_end + 1 >= buf.len() {
                return Ok(None);
            }
            let len = parse_int(buf.get(pos + 1..line_end).unwrap_or_default())
                .filter(|n| *n >= 0 && (*n as u64) <= limits.max_bulk_len)
                .ok_or_else(|| perr("invalid bulk length"))? as u64;
            if self.unauthenticated && len > UNAUTH_MAX_BULK {
                return Err(perr("unauthenticated bulk length"));
            }
            let start = line_end + 2;
            let end = start as u64 + len;
            // The two bytes after the payload are skipped unchecked, as Redis does.
            if (buf.len() as u64) < end + 2 {
                return Ok(None);
            }
            let (Ok(s), Ok(e)) = (u32::try_from(start), u32::try_from(end)) else {
                return Err(perr("invalid bulk length"));
            };
            self.args.push(Span { start: s, end: e });
            self.pos = end as usize + 2;
            self.expect -= 1;
        }
        let len = self.pos;
        self.pos = 0;
        Ok(Some(Parsed::Multibulk { len }))
    }

    fn parse_inline(
        &mut self,
        buf: &[u8],
        limits: &Limits,
    ) -> Result<Option<Parsed>, ProtocolError> {
        let Some(nl) = memchr::memchr(b'\n', buf) else {
            if buf.len() > limits.max_inline_len {
                return Err(perr("too big inline request"));
            }
            return Ok(None);
        };
        if nl > limits.max_inline_len {
            return Err(perr("too big inline request"));
        }
        let mut line = buf.get(..nl).unwrap_or_default();
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        let words = split_args(line).ok_or_else(|| perr("unbalanced quotes in request"))?;
        if words.is_empty() {
            return Ok(Some(Parsed::Empty { len: nl + 1 }));
        }
        self.args.clear();
        self.inline_buf.clear();
        encode_command(&mut self.inline_buf, words.iter().map(|w| w.as_slice()));
        // Re-scan our own encoding to get the spans.
        let mut inner = RequestParser::new();
        let generous = Limits {
            max_bulk_len: u64::MAX,
            max_multibulk_len: u64::MAX,
            max_inline_len: usize::MAX,
        };
        match inner.parse(&self.inline_buf, &generous) {
            Ok(Some(Parsed::Multibulk { .. })) => {
                self.args = inner.args;
                Ok(Some(Parsed::Inline { len: nl + 1 }))
            }
            _ => Err(perr("invalid inline request")),
        }
    }
}

/// Append the RESP multibulk encoding of `args` to `out`.
pub fn encode_command<'a>(out: &mut Vec<u8>, args: impl ExactSizeIterator<Item = &'a [u8]>) {
    out.push(b'*');
    push_decimal(out, args.len() as i64);
    out.extend_from_slice(b"\r\n");
    for a in args {
        out.push(b'$');
        push_decimal(out, a.len() as i64);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Append the decimal digits of `n` to `out` without allocating.
pub fn push_decimal(out: &mut Vec<u8>, n: i64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    let neg = n < 0;
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        if let Some(slot) = tmp.get_mut(i) {
            *slot = b'0' + (v % 10) as u8;
        }
        v /= 10;
        if v == 0 || i == 0 {
            break;
        }
    }
    if neg {
        out.push(b'-');
    }
    out.extend_from_slice(tmp.get(i..).unwrap_or_default());
}

/// Find the `\r` that ends a header line starting at `from`, looking at most `max`
/// bytes ahead.
#[inline]
fn find_cr(buf: &[u8], from: usize, max: usize) -> Option<usize> {
    let end = buf.len().min(from.saturating_add(max));
    let hay = buf.get(from..end)?;
    memchr::memchr(b'\r', hay).map(|i| i + from)
}

/// Parse a decimal integer exactly as Redis's `string2ll` does: optional `-`, no `+`,
/// no leading zeros, no spaces, within `i64`.
pub fn parse_int(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.first() {
        Some(b'-') => (true, s.get(1..)?),
        Some(_) => (false, s),
        None => return None,
    };
    match digits {
        [] => return None,
        [b'0'] => return if neg { None } else { Some(0) },
        [b'0', ..] => return None,
        _ => {}
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if neg {
        if v <= i64::MAX as u64 + 1 {
            Some((v as i128).wrapping_neg() as i64)
        } else {
            None
        }
    } else {
        i64::try_from(v).ok()
    }
}

/// Split an inline command line the way Redis's `sdssplitargs` does: words separated by
/// whitespace, `"..."` with backslash escapes (`\n`, `\xHH`, …), and `'...'` with only
/// `\'` escaped. `None` on unbalanced quotes (or a closing quote not followed by a
/// space). As in C, where the line is a NUL-terminated string, a NUL byte ends it.
pub fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut i = 0;
    let n = memchr::memchr(0, line).unwrap_or(line.len());
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    loop {
        while i < n && is_c_space(at(i)) {
            i += 1;
        }
        if i >= n {
            return Some(out);
        }
        let mut cur = Vec::new();
        let mut inq = false;
        let mut insq = false;
        loop {
            if inq {
                if i >= n {
                    return None;
                }
                let c = at(i);
                if c == b'\\'
                    && at(i + 1) == b'x'
                    && is_hex(at(i + 2))
                    && is_hex(at(i + 3))
                    && i + 3 < n
                {
                    cur.push(hex_val(at(i + 2)) * 16 + hex_val(at(i + 3)));
                    i += 3;
                } else if c == b'\\' && i + 1 < n {
                    i += 1;
                    cur.push(match at(i) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        other => other,
                    });
                } else if c == b'"' {
                    if i + 1 < n && !is_c_space(at(i + 1)) {
                        return None;
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(c);
                }
            } else if insq {
                if i >= n {
                    return None;
                }
                let c = at(i);
                if c == b'\\' && at(i + 1) == b'\'' && i + 1 < n {
                    i += 1;
                    cur.push(b'\'');
                } else if c == b'\'' {
                    if i + 1 < n && !is_c_space(at(i + 1)) {
                        return None;
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(c);
                }
            } else {
                if i >= n {
                    break;
                }
                match at(i) {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => break,
                    b'"' => inq = true,
                    b'\'' => insq = true,
                    c => cur.push(c),
                }
            }
            i += 1;
        }
        out.push(cur);
    }
}

/// C's `isspace`: what `sdssplitargs` skips between words and wants after a closing
/// quote.
fn is_c_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn is_hex(c: u8) -> bool {
    c.is_ascii_hexdigit()
}

fn hex_val(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
    }
}

/// Resumable delimiter of RESP2/RESP3 replies. It checks structure (type bytes, lengths,
/// line ends) but builds nothing: nested aggregates are tracked by one counter of
/// elements still owed.
#[derive(Debug, Default, Clone)]
pub struct ReplyScanner {
    pos: usize,
    owed: u64,
    started: bool,
    /// After `Ok(None)` inside a bulk string: the buffer length it needs (0 otherwise).
    need: usize,
}

/// The kind of a reply, from its first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyKind {
    /// `-` or `!`: an error.
    Error,
    /// `>`: an out-of-band push (RESP3 pub/sub and invalidation messages).
    Push,
    /// Anything else.
    Value,
}

impl ReplyKind {
    /// Classify a complete reply by its first byte.
    #[inline]
    pub fn of(frame: &[u8]) -> ReplyKind {
        match frame.first() {
            Some(b'-') | Some(b'!') => ReplyKind::Error,
            Some(b'>') => ReplyKind::Push,
            _ => ReplyKind::Value,
        }
    }
}

impl ReplyScanner {
    /// A scanner at the start of a reply.
    pub fn new() -> Self {
        Self::default()
    }

    /// The buffer length the reply in progress needs at least, when the last
    /// [`ReplyScanner::scan`] stopped inside a bulk string whose length it knows (0
    /// otherwise): a reader can make room for a large reply once instead of growing its
    /// buffer step by step.
    pub fn needs(&self) -> usize {
        self.need
    }

    /// Find the end of the reply at the start of `buf`. `Ok(Some(len))` when complete
    /// (the scanner is then ready for the next reply, which starts at `buf[len..]` once
    /// the caller has consumed these bytes); `Ok(None)` when more bytes are needed.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        self.need = 0;
        if !self.started {
            self.started = true;
            self.pos = 0;
            self.owed = 1;
        }
        while self.owed > 0 {
            let pos = self.pos;
            let Some(&kind) = buf.get(pos) else {
                return Ok(None);
            };
            let Some(cr) = find_cr(buf, pos + 1, usize::MAX) else {
                return Ok(None);
            };
            if cr + 1 >= buf.len() {
                return Ok(None);
            }
            if buf.get(cr + 1) != Some(&b'\n') {
                return Err(perr("reply line not terminated by CRLF"));
            }
            let line = buf.get(pos + 1..cr).unwrap_or_default();
            let next = cr + 2;
            self.owed -= 1;
            match kind {
                b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => {
                    self.pos = next;
                }
                b'$' | b'!' | b'=' => {
                    let n = parse_int(line).ok_or_else(|| perr("invalid bulk length in reply"))?;
                    if n < 0 {
                        self.pos = next;
                    } else {
                        let end = (next as u64).saturating_add(n as u64);
                        if (buf.len() as u64) < end.saturating_add(2) {
                            // Not all here yet: come back to this element.
                            self.owed += 1;
                            self.need = usize::try_from(end.saturating_add(2)).unwrap_or(0);
                            return Ok(None);
                        }
                        let end = end as usize;
                        if buf.get(end..end + 2) != Some(b"\r\n") {
                            return Err(perr("bulk reply not terminated by CRLF"));
                        }
                        self.pos = end + 2;
                    }
                }
                b'*' | b'~' | b'>' | b'%' | b'|' => {
                    let n =
                        parse_int(line).ok_or_else(|| perr("invalid aggregate length in reply"))?;
                    self.pos = next;
                    if n > 0 {
                        let n = n as u64;
                        let add = match kind {
                            b'%' => n.saturating_mul(2),
                            // An attribute map precedes the element it describes.
                            b'|' => n.saturating_mul(2).saturating_add(1),
                            _ => n,
                        };
                        self.owed = self.owed.saturating_add(add);
                    } else if kind == b'|' {
                        self.owed += 1;
                    }
                }
                other => {
                    return Err(ProtocolError(format!(
                        "Protocol error: unexpected reply type byte {:?}",
                        char::from(other)
                    )));
                }
            }
        }
        self.started = false;
        Ok(Some(self.pos))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    fn args_of(p: &RequestParser, buf: &[u8]) -> Vec<Vec<u8>> {
        p.args.iter().map(|s| s.of(buf).to_vec()).collect()
    }

    #[test]
    fn multibulk_whole_and_split() {
        let req = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n";
        for cut in 0..req.len() {
            let mut p = RequestParser::new();
            let l = Limits::default();
            assert_eq!(p.parse(&req[..cut], &l).unwrap(), None, "cut {cut}");
            assert_eq!(
                p.parse(req, &l).unwrap(),
                Some(Parsed::Multibulk { len: req.len() })
            );
            assert_eq!(
                args_of(&p, req),
                vec![b"SET".to_vec(), b"k".to_vec(), b"hello".to_vec()]
            );
        }
    }

    #[test]
    fn inline_commands() {
        let mut p = RequestParser::new();
        let l = Limits::default();
        let got = p.parse(b"set  k \"a b\\x41\"\r\n", &l).unwrap();
        assert_eq!(got, Some(Parsed::Inline { len: 18 }));
        let buf = p.inline_buf.clone();
        assert_eq!(
            args_of(&p, &buf),
            vec![b"set".to_vec(), b"k".to_vec(), b"a bA".to_vec()]
        );
        assert_eq!(
            p.parse(b"\r\n", &l).unwrap(),
            Some(Parsed::Empty { len: 2 })
        );
        assert_eq!(p.parse(b"PING", &l).unwrap(), None);
        assert_eq!(
            p.parse(b"get \"abc\r\n", &l).unwrap_err().0,
            "Protocol error: unbalanced quotes in request"
        );
    }

    #[test]
    fn inline_nul_ends_the_line_as_in_c() {
        let l = Limits::default();
        let mut p = RequestParser::new();
        assert_eq!(
            p.parse(b"GET a\0b c\r\n", &l).unwrap(),
            Some(Parsed::Inline { len: 11 })
        );
        let buf = p.inline_buf.clone();
        assert_eq!(args_of(&p, &buf), vec![b"GET".to_vec(), b"a".to_vec()]);
        assert_eq!(
            p.parse(b"\0PING\r\n", &l).unwrap(),
            Some(Parsed::Empty { len: 7 })
        );
        assert_eq!(
            p.parse(b"GET \"a\0\"\r\n", &l).unwrap_err().0,
            "Protocol error: unbalanced quotes in request"
        );
        // C's isspace is skipped before a word; inside one, only space, tab, CR and LF
        // end it.
        assert_eq!(
            split_args(b"\x0bGET\x0bk"),
            Some(vec![b"GET\x0bk".to_vec()])
        );
    }

    #[test]
    fn redis_error_strings() {
        let l = Limits::default();
        let e = |b: &[u8]| RequestParser::new().parse(b, &l).unwrap_err().0;
        assert_eq!(e(b"*x\r\n"), "Protocol error: invalid multibulk length");
        assert_eq!(e(b"*1\r\n:1\r\n"), "Protocol error: expected '$', got ':'");
        assert_eq!(e(b"*1\r\n$-5\r\n"), "Protocol error: invalid bulk length");
        assert_eq!(
            e(b"*1\r\n$536870913\r\n"),
            "Protocol error: invalid bulk length"
        );
        assert_eq!(
            e(b"*3000000000\r\n"),
            "Protocol error: invalid multibulk length"
        );
        let long = vec![b'1'; 70 * 1024];
        let mut hdr = b"*".to_vec();
        hdr.extend_from_slice(&long);
        assert_eq!(e(&hdr), "Protocol error: too big mbulk count string");
        let mut p = RequestParser::new();
        p.unauthenticated = true;
        assert_eq!(
            p.parse(b"*11\r\n", &l).unwrap_err().0,
            "Protocol error: unauthenticated multibulk length"
        );
    }

    #[test]
    fn declared_length_allocates_nothing() {
        let mut p = RequestParser::new();
        let l = Limits::default();
        assert_eq!(p.parse(b"*1000000\r\n$3\r\nGET\r\n", &l).unwrap(), None);
        assert_eq!(p.args.len(), 1);
        assert!(p.args.capacity() < 1000);
    }

    #[test]
    fn empty_multibulk_is_skipped() {
        let l = Limits::default();
        assert_eq!(
            RequestParser::new().parse(b"*0\r\n", &l).unwrap(),
            Some(Parsed::Empty { len: 4 })
        );
        assert_eq!(
            RequestParser::new().parse(b"*-1\r\n", &l).unwrap(),
            Some(Parsed::Empty { len: 5 })
        );
    }

    #[test]
    fn replies_resp2_and_resp3() {
        let cases: &[&[u8]] = &[
            b"+OK\r\n",
            b"-ERR x\r\n",
            b":12\r\n",
            b"$-1\r\n",
            b"*-1\r\n",
            b"$3\r\nabc\r\n",
            b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n",
            b"%1\r\n+k\r\n*2\r\n_\r\n,1.5\r\n",
            b"|1\r\n+ttl\r\n:3\r\n$2\r\nhi\r\n",
            b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n",
            b"=8\r\ntxt:abcd\r\n",
            b"*0\r\n",
            b"~0\r\n",
        ];
        for c in cases {
            for cut in 0..c.len() {
                let mut s = ReplyScanner::new();
                assert_eq!(
                    s.scan(&c[..cut]).unwrap(),
                    None,
                    "{:?} cut {cut}",
                    String::from_utf8_lossy(c)
                );
                assert_eq!(s.scan(c).unwrap(), Some(c.len()));
            }
        }
        let mut s = ReplyScanner::new();
        assert!(s.scan(b"?\r\n").is_err());
    }

    #[test]
    fn parse_int_is_strict() {
        assert_eq!(parse_int(b"0"), Some(0));
        assert_eq!(parse_int(b"-12"), Some(-12));
        assert_eq!(parse_int(b"012"), None);
        assert_eq!(parse_int(b"+1"), None);
        assert_eq!(parse_int(b"-0"), None);
        assert_eq!(parse_int(b""), None);
        assert_eq!(parse_int(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_int(b"9223372036854775808"), None);
        assert_eq!(parse_int(b"-9223372036854775808"), Some(i64::MIN));
    }
}
