//! Clients of the harness: `redis` connections with [`CMD_TIMEOUT`], reply helpers, and raw
//! client sockets that read exact bytes or whole RESP replies.

use std::collections::HashMap;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::sync::{Mutex, MutexGuard};

use redis::Value;

use super::CMD_TIMEOUT;

// ---------------------------------------------------------------------------------------
// Redis clients
// ---------------------------------------------------------------------------------------

/// A `redis::Client` for `addr` that does not send `CLIENT SETINFO` on connect, so the
/// harness adds no commands of its own to what a server or proxy sees (and twemproxy,
/// which rejects unknown commands, keeps the connection).
pub fn client(addr: SocketAddr) -> redis::Client {
    let info = redis::ConnectionAddr::Tcp(addr.ip().to_string(), addr.port());
    let info = redis::IntoConnectionInfo::into_connection_info(info)
        .expect("connection info")
        .set_redis_settings(redis::RedisConnectionInfo::default().set_skip_set_lib_name());
    redis::Client::open(info).expect("redis client")
}

/// A blocking connection to `addr` with [`CMD_TIMEOUT`] for connect, reads and writes.
pub fn try_connect(addr: SocketAddr) -> redis::RedisResult<redis::Connection> {
    let conn = client(addr).get_connection_with_timeout(CMD_TIMEOUT)?;
    conn.set_read_timeout(Some(CMD_TIMEOUT))?;
    conn.set_write_timeout(Some(CMD_TIMEOUT))?;
    Ok(conn)
}

/// [`try_connect`], panicking with the address on failure.
pub fn connect(addr: SocketAddr) -> redis::Connection {
    try_connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// A multiplexed async connection to `addr` (tokio), with [`CMD_TIMEOUT`] for connect
/// and for each response.
pub async fn connect_async(addr: SocketAddr) -> redis::aio::MultiplexedConnection {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CMD_TIMEOUT))
        .set_response_timeout(Some(CMD_TIMEOUT));
    client(addr)
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// Sends one command, given as its words (`&["SET", "k", "v"]`), on `conn`.
///
/// A server error reply (`-ERR ...`) comes back as `Err`.
pub fn query(conn: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<Value> {
    let (name, rest) = args.split_first().expect("a command needs a name");
    redis::cmd(name).arg(rest).query(conn)
}

/// The text of a string-like reply (bulk, simple or verbatim string, `OK`), else `None`
/// (including for nil).
pub fn value_text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Okay => Some("OK".to_owned()),
        _ => None,
    }
}

/// Parses an `INFO` reply into its `field:value` lines (section headers dropped).
pub fn parse_info(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

/// Parses a RESP2 flat field/value array (as in `SENTINEL REPLICAS` entries).
pub(super) fn parse_flat_map(value: &Value) -> HashMap<String, String> {
    let Value::Array(items) = value else {
        return HashMap::new();
    };
    items
        .chunks(2)
        .filter_map(|pair| match pair {
            [k, v] => Some((value_text(k)?, value_text(v)?)),
            _ => None,
        })
        .collect()
}

/// One lazily opened, reused blocking connection, so that tight polling loops do not
/// open (and leave in `TIME_WAIT`) a socket per poll. Dropped after any error, so a
/// timed-out or broken connection is never reused.
pub(super) struct CachedConn {
    addr: SocketAddr,
    conn: Mutex<Option<redis::Connection>>,
}

impl CachedConn {
    pub(super) fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            conn: Mutex::new(None),
        }
    }

    fn slot(&self) -> MutexGuard<'_, Option<redis::Connection>> {
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `args` on the cached connection. If a reused connection turns out closed
    /// (the server was restarted, or ran `CLIENT KILL`, as Sentinel does on promotion),
    /// the command is sent once more on a new connection; a timeout is not retried.
    pub(super) fn query(&self, args: &[&str]) -> redis::RedisResult<Value> {
        let mut slot = self.slot();
        let reused = slot.is_some();
        let conn = match slot.as_mut() {
            Some(conn) => conn,
            None => slot.insert(try_connect(self.addr)?),
        };
        match query(conn, args) {
            Ok(reply) => Ok(reply),
            Err(e) if reused && e.is_connection_dropped() && !e.is_timeout() => {
                *slot = None;
                let conn = slot.insert(try_connect(self.addr)?);
                let reply = query(conn, args);
                if reply.is_err() {
                    *slot = None;
                }
                reply
            }
            Err(e) => {
                *slot = None;
                Err(e)
            }
        }
    }

    pub(super) fn reset(&self) {
        *self.slot() = None;
    }
}

// ---------------------------------------------------------------------------------------
// Raw client sockets and replies
// ---------------------------------------------------------------------------------------

/// The text of a reply ([`value_text`]), or its debug form for other kinds.
pub fn text(v: &Value) -> String {
    value_text(v).unwrap_or_else(|| format!("{v:?}"))
}

/// A raw client socket to `addr` with [`CMD_TIMEOUT`] on reads and writes, no Nagle.
pub fn raw(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(CMD_TIMEOUT)).expect("read timeout");
    s.set_write_timeout(Some(CMD_TIMEOUT))
        .expect("write timeout");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// Reads exactly `n` bytes, or fewer if the peer closes or a read times out first.
pub fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < n {
        match s.read(&mut buf[..(n - out.len()).min(4096)]) {
            Ok(0) | Err(_) => break,
            Ok(got) => out.extend_from_slice(&buf[..got]),
        }
    }
    out
}

/// Reads until at least `want` bytes arrived (all of the last read is kept), the peer
/// closed or a read timed out; what arrived.
pub fn read_at_least(s: &mut TcpStream, want: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < want {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(got) => out.extend_from_slice(&buf[..got]),
        }
    }
    out
}

/// Reads one whole RESP reply (e.g. a `HELLO` map) and returns its bytes.
///
/// # Panics
/// When the peer closes, a read times out or the bytes are not RESP. The peer must not
/// have sent anything after that reply yet (what follows in the same read is dropped).
pub fn read_reply(s: &mut TcpStream) -> Vec<u8> {
    let mut scanner = redsplit::protocol::ReplyScanner::new();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(len) = scanner.scan(&got).expect("a RESP reply") {
            got.truncate(len);
            return got;
        }
        match s.read(&mut buf) {
            Ok(0) => panic!("closed after {got:?}, in the middle of a reply"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("reading a reply after {got:?}: {e}"),
        }
    }
}
