//! RESP frames (boundaries, decoding, encoding, escaping) and [`RespConn`], the raw client
//! that sends exact bytes and reads whole reply frames.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::*;

use super::READ_TIMEOUT;

/// How long a send-only step waits for the server to read what was sent.
const CONSUME_TIMEOUT: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------
// RESP frames
// ---------------------------------------------------------------------------------------

/// Position of the `\r\n` ending the line that starts at `from`.
pub(super) fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|i| from + i)
}

/// Parses a RESP length or integer line.
fn parse_len(line: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad length {:?}", line.escape_ascii().to_string()))
}

/// The end of the complete RESP2/RESP3 frame starting at `pos`: `Ok(None)` while it is
/// incomplete, `Err` when the bytes are not RESP. Handles every type, nulls (`$-1`,
/// `*-1`, `_`), nested aggregates, pushes (`>`), attributes (`|`, which precede the
/// value they annotate: both are one frame) and streamed strings/aggregates (`$?`, `*?`).
pub(super) fn frame_end(buf: &[u8], pos: usize) -> Result<Option<usize>, String> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let Some(eol) = find_crlf(buf, pos + 1) else {
        return Ok(None);
    };
    let line = &buf[pos + 1..eol];
    let next = eol + 2;
    match kind {
        b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => Ok(Some(next)),
        b'$' | b'!' | b'=' => {
            if line == b"?" {
                // Streamed string: `;len\r\n<data>\r\n` chunks until `;0\r\n`.
                let mut p = next;
                loop {
                    let Some(ceol) = find_crlf(buf, p + 1) else {
                        return Ok(None);
                    };
                    if buf[p] != b';' {
                        return Err("streamed string chunk without ';'".into());
                    }
                    let n = parse_len(&buf[p + 1..ceol])?;
                    if n == 0 {
                        return Ok(Some(ceol + 2));
                    }
                    let end = ceol + 2 + usize::try_from(n).map_err(|e| e.to_string())? + 2;
                    if buf.len() < end {
                        return Ok(None);
                    }
                    p = end;
                }
            }
            let n = parse_len(line)?;
            if n < 0 {
                return if kind == b'$' && n == -1 {
                    Ok(Some(next))
                } else {
                    Err(format!("negative length {n}"))
                };
            }
            let end = next + usize::try_from(n).map_err(|e| e.to_string())? + 2;
            if buf.len() < end {
                return Ok(None);
            }
            if &buf[end - 2..end] != b"\r\n" {
                return Err("bulk string not followed by CRLF".into());
            }
            Ok(Some(end))
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let per = if matches!(kind, b'%' | b'|') { 2 } else { 1 };
            let mut p = next;
            if line == b"?" {
                loop {
                    match buf.get(p) {
                        None => return Ok(None),
                        Some(b'.') => {
                            return match find_crlf(buf, p + 1) {
                                Some(e) if e == p + 1 => Ok(Some(e + 2)),
                                Some(_) => Err("bad end of streamed aggregate".into()),
                                None => Ok(None),
                            };
                        }
                        Some(_) => match frame_end(buf, p)? {
                            Some(e) => p = e,
                            None => return Ok(None),
                        },
                    }
                }
            }
            let n = parse_len(line)?;
            if n < 0 {
                return if kind == b'*' && n == -1 {
                    Ok(Some(next))
                } else {
                    Err(format!("negative count {n}"))
                };
            }
            for _ in 0..n * per {
                match frame_end(buf, p)? {
                    Some(e) => p = e,
                    None => return Ok(None),
                }
            }
            if kind == b'|' {
                // The attribute is followed by the reply it annotates.
                return frame_end(buf, p);
            }
            Ok(Some(p))
        }
        other => Err(format!("unexpected type byte {:?}", other as char)),
    }
}

/// A decoded reply, as much as the harness needs to look inside one (SCAN replies,
/// integers to capture); comparisons always use the raw bytes.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Val {
    /// `+`, `-`, `,`, `(`, `#`, `_` and other one-line types: the line.
    Line(u8, Vec<u8>),
    /// `:`.
    Int(i64),
    /// `$`, `=`, `!`; `None` for `$-1`.
    Bulk(Option<Vec<u8>>),
    /// `*`, `~`, `>`, `%` (flattened), `|` skipped; `None` for `*-1`.
    Agg(Option<Vec<Val>>),
}

/// Decodes one complete frame (as returned by [`RespConn::read_reply`]).
pub(super) fn decode(buf: &[u8]) -> Option<Val> {
    decode_at(buf, 0).map(|(v, _)| v)
}

fn decode_at(buf: &[u8], pos: usize) -> Option<(Val, usize)> {
    let kind = *buf.get(pos)?;
    let eol = find_crlf(buf, pos + 1)?;
    let line = &buf[pos + 1..eol];
    let next = eol + 2;
    match kind {
        b':' => Some((Val::Int(parse_len(line).ok()?), next)),
        b'$' | b'=' | b'!' => {
            let n = parse_len(line).ok()?;
            if n < 0 {
                return Some((Val::Bulk(None), next));
            }
            let end = next + usize::try_from(n).ok()?;
            Some((Val::Bulk(Some(buf.get(next..end)?.to_vec())), end + 2))
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = parse_len(line).ok()?;
            if n < 0 {
                return Some((Val::Agg(None), next));
            }
            let per = if matches!(kind, b'%' | b'|') { 2 } else { 1 };
            let mut p = next;
            let mut items = Vec::new();
            for _ in 0..n * per {
                let (v, e) = decode_at(buf, p)?;
                items.push(v);
                p = e;
            }
            if kind == b'|' {
                return decode_at(buf, p);
            }
            Some((Val::Agg(Some(items)), p))
        }
        _ => Some((Val::Line(kind, line.to_vec()), next)),
    }
}

/// The bytes of a bulk (or simple) string value.
pub(super) fn val_bytes(v: &Val) -> Option<&[u8]> {
    match v {
        Val::Bulk(Some(b)) | Val::Line(b'+', b) => Some(b),
        _ => None,
    }
}

/// RESP array of bulk strings for `args`.
pub(super) fn encode(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Bytes shown escaped (`\r\n` visible), for messages.
pub(super) fn esc(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

// ---------------------------------------------------------------------------------------
// The raw client
// ---------------------------------------------------------------------------------------

/// A raw RESP client: sends exact bytes, reads exactly one complete reply frame at a time
/// as raw bytes, with [`READ_TIMEOUT`] per frame so a missing reply fails a comparison
/// instead of hanging the test.
pub(super) struct RespConn {
    stream: TcpStream,
    /// Received bytes not yet returned as frames.
    buf: Vec<u8>,
    /// Set once a read timed out, the connection closed, or garbage arrived: what every
    /// later read returns at once.
    dead: Option<Vec<u8>>,
}

impl RespConn {
    /// Connects to `addr` (with [`CMD_TIMEOUT`]).
    pub(super) fn connect(addr: SocketAddr) -> RespConn {
        let stream = TcpStream::connect_timeout(&addr, CMD_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_write_timeout(Some(CMD_TIMEOUT))
            .expect("write timeout");
        RespConn {
            stream,
            buf: Vec::new(),
            dead: None,
        }
    }

    /// Writes `bytes` in one `write_all`.
    pub(super) fn send(&mut self, bytes: &[u8]) {
        if self.dead.is_some() {
            return;
        }
        if let Err(e) = self.stream.write_all(bytes) {
            self.dead = Some(format!("<write failed: {e}>").into_bytes());
        }
    }

    /// Sends `args` as a RESP array and reads its reply.
    pub(super) fn call(&mut self, args: &[&str]) -> Vec<u8> {
        let args: Vec<Vec<u8>> = args.iter().map(|a| a.as_bytes().to_vec()).collect();
        self.send(&encode(&args));
        self.read_reply(READ_TIMEOUT)
    }

    /// Reads one complete frame; a marker in `<...>` (never valid RESP) when there is
    /// none within `timeout`, the connection closed, or the bytes are not RESP.
    pub(super) fn read_reply(&mut self, timeout: Duration) -> Vec<u8> {
        if let Some(dead) = &self.dead {
            return dead.clone();
        }
        let deadline = Instant::now() + timeout;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match frame_end(&self.buf, 0) {
                Ok(Some(end)) => return self.buf.drain(..end).collect(),
                Ok(None) => {}
                Err(e) => {
                    let marker = format!("<not RESP ({e}): {}>", esc(&self.buf)).into_bytes();
                    self.dead = Some(b"<not read: garbage arrived earlier>".to_vec());
                    return marker;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let marker = if self.buf.is_empty() {
                    format!("<no reply within {timeout:?}>")
                } else {
                    format!("<incomplete reply after {timeout:?}: {}>", esc(&self.buf))
                };
                self.dead = Some(b"<not read: an earlier reply timed out>".to_vec());
                return marker.into_bytes();
            }
            self.stream
                .set_read_timeout(Some(left))
                .expect("read timeout");
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    let marker = if self.buf.is_empty() {
                        b"<connection closed>".to_vec()
                    } else {
                        format!("<connection closed mid-frame: {}>", esc(&self.buf)).into_bytes()
                    };
                    self.dead = Some(b"<connection closed>".to_vec());
                    return marker;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset && self.buf.is_empty() => {
                    // Closed with a reset instead of a FIN (the server closed while
                    // bytes of ours were unread): to a client, the same closed connection.
                    self.dead = Some(b"<connection closed>".to_vec());
                    return b"<connection closed>".to_vec();
                }
                Err(e) => {
                    let marker = format!("<read error: {e}>").into_bytes();
                    self.dead = Some(marker.clone());
                    return marker;
                }
            }
        }
    }

    /// Waits (up to [`CONSUME_TIMEOUT`]) until the server end of this connection has read
    /// everything sent on it: nothing is left unsent on the client side (`SIOCOUTQNSD`;
    /// on loopback, sent bytes are in the peer's receive queue) and the server side's
    /// receive queue in `/proc/net/tcp` is empty. The server then holds the command in
    /// its own hands (Redis has run it or blocked on it; the proxy has received it).
    /// Giving up is not an error: whatever follows shows the difference, if any.
    pub(super) fn wait_consumed(&self) {
        let (Ok(local), Ok(peer)) = (self.stream.local_addr(), self.stream.peer_addr()) else {
            return;
        };
        let deadline = Instant::now() + CONSUME_TIMEOUT;
        while Instant::now() < deadline {
            let server_rx = tcp_rx_queues().get(&(peer.port(), local.port())).copied();
            if self.unsent() == 0 && server_rx.unwrap_or(0) == 0 {
                return;
            }

            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Bytes written on this socket that the kernel has not sent yet.
    fn unsent(&self) -> libc::c_int {
        use std::os::fd::AsRawFd;
        /// `SIOCOUTQNSD` from `linux/sockios.h`.
        const SIOCOUTQNSD: libc::c_ulong = 0x894B;
        let mut n: libc::c_int = 0;
        // SAFETY: the ioctl writes one int through the pointer, on our own socket.
        let rc = unsafe { libc::ioctl(self.stream.as_raw_fd(), SIOCOUTQNSD, &mut n) };
        if rc == 0 {
            n
        } else {
            0
        }
    }
}

/// `(local port, remote port) → rx_queue` (bytes received, not yet read by the
/// application) of the 127.0.0.1 sockets in `/proc/net/tcp`.
fn tcp_rx_queues() -> HashMap<(u16, u16), u64> {
    // Read in big chunks: each read of this seq_file walks the socket table again.
    let mut raw = Vec::new();
    if let Ok(mut file) = std::fs::File::open("/proc/net/tcp") {
        let mut chunk = vec![0u8; 4 << 20];
        while let Ok(n @ 1..) = file.read(&mut chunk) {
            raw.extend_from_slice(&chunk[..n]);
        }
    }
    let text = String::from_utf8_lossy(&raw);
    let mut out = HashMap::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 {
            continue;
        }
        let port = |a: &str| -> Option<u16> {
            let (ip, port) = a.split_once(':')?;
            (ip == "0100007F").then_some(())?;
            u16::from_str_radix(port, 16).ok()
        };
        let (Some(l), Some(r)) = (port(f[1]), port(f[2])) else {
            continue;
        };
        let Some(rx) = f[4]
            .split_once(':')
            .and_then(|(_, rx)| u64::from_str_radix(rx, 16).ok())
        else {
            continue;
        };
        out.insert((l, r), rx);
    }
    out
}
