//! How to reach a backend ([`ConnParams`]), what each connection is set up for
//! ([`ConnKey`]), and the connect-and-handshake every connection runs: TCP, TLS when
//! configured, then `HELLO 2|3 [AUTH …]`, `SELECT`, `CLIENT SETNAME` and, for a
//! client's own Redis ACL user, `AUTH <user> <password>`, pipelined in one write. `HELLO` is allowed while the server runs a busy script and tells the backend's
//! client id, and a `CLIENT SETNAME` refused with `BUSY` is let go, so a connection to
//! the default database can be made while the server is `BUSY` (to reach it with
//! `SCRIPT KILL`, or to queue a transaction as a direct client can).

use super::{BackendError, Role};
use crate::config::Secret;
use crate::protocol::{encode_command, ReplyScanner};
use crate::reply::Decoded;
use crate::tls::BackendStream;
use bytes::BytesMut;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How to reach and set up a connection to one backend.
#[derive(Clone, Debug)]
pub struct ConnParams {
    /// `host:port`.
    pub addr: String,
    /// The backend's role, for messages.
    pub role: Role,
    /// ACL user (empty: default).
    pub username: String,
    /// Password (empty: none).
    pub password: Secret,
    /// Connect and handshake timeout.
    pub connect_timeout: Duration,
    /// TLS towards this backend (or why it cannot be set up).
    pub tls: Option<Result<crate::tls::Target, Arc<str>>>,
    /// The configuration `tls` was built from (to tell whether a reload changed it).
    pub tls_source: Option<crate::config::BackendTlsConfig>,
    /// A Redis Cluster replica: connections send `READONLY`, so that it serves reads of
    /// its shard's slots instead of redirecting them to the master.
    pub readonly: bool,
}

impl ConnParams {
    /// `master 127.0.0.1:6379`.
    pub fn label(&self) -> String {
        format!("{} {}", self.role.as_str(), self.addr)
    }
}

/// Per-connection setup: which database, which protocol version, which Redis user.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// Selected database.
    pub db: u32,
    /// RESP3 (`HELLO 3`) or RESP2.
    pub resp3: bool,
    /// The Redis ACL user a client logged in as, when it is not the backend's own
    /// (`backend.username`/`password`); `None`: the backend's.
    pub login: Option<Arc<Login>>,
}

/// A Redis ACL user and password a client authenticated with (verified by the master
/// first): its connections authenticate as it, so Redis applies that user's permissions.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Login {
    /// The ACL user name (`default` for `AUTH <password>`).
    pub user: String,
    /// Its password (never printed).
    pub password: Secret,
}

/// Connect and run the handshake: `HELLO 2|3 [AUTH …]`, `SELECT`, `CLIENT SETNAME`,
/// `READONLY` for a cluster replica, `AUTH` as the client's ACL user when the key has one;
/// the backend's client id from `HELLO` when `want_client_id`.
pub(super) async fn connect(
    params: &ConnParams,
    key: &ConnKey,
    want_client_id: bool,
) -> Result<(BackendStream, Option<i64>), BackendError> {
    let label = params.label();
    let mut stream = open(params).await?;
    let mut hs = Vec::new();
    let mut expect = 0;
    // The connection logs in as the backend's own user first, selects its database and
    // names itself, and only then authenticates as a client's ACL user: `AUTH` keeps the
    // database, as it does for a direct client, and the client's user needs no
    // permission for `SELECT` or `CLIENT SETNAME`.
    let (user, password) = if params.username.is_empty() {
        ("default", &params.password)
    } else {
        (params.username.as_str(), &params.password)
    };
    {
        let mut args: Vec<&[u8]> = vec![b"HELLO", if key.resp3 { b"3" } else { b"2" }];
        if !password.is_empty() {
            args.extend([
                b"AUTH".as_slice(),
                user.as_bytes(),
                password.expose().as_bytes(),
            ]);
        }
        encode_command(&mut hs, args.into_iter());
        expect += 1;
    }
    if key.db != 0 {
        encode_command(
            &mut hs,
            [b"SELECT".as_slice(), key.db.to_string().as_bytes()].into_iter(),
        );
        expect += 1;
    }
    encode_command(
        &mut hs,
        [b"CLIENT".as_slice(), b"SETNAME", b"redsplit"].into_iter(),
    );
    expect += 1;
    let setname = expect;
    if params.readonly {
        encode_command(&mut hs, [b"READONLY".as_slice()].into_iter());
        expect += 1;
    }
    if let Some(login) = &key.login {
        encode_command(
            &mut hs,
            [
                b"AUTH".as_slice(),
                login.user.as_bytes(),
                login.password.expose().as_bytes(),
            ]
            .into_iter(),
        );
        expect += 1;
    }
    let io = |e: std::io::Error| {
        BackendError::connect_failed(&label, format_args!("handshake failed: {e}"))
    };
    stream.write_all(&hs).await.map_err(io)?;
    let mut buf = BytesMut::with_capacity(1024);
    let mut scanner = ReplyScanner::new();
    let mut client_id = None;
    let mut got = 0;
    while got < expect {
        if stream.read_buf(&mut buf).await.map_err(io)? == 0 {
            return Err(BackendError::connect_failed(
                &label,
                "closed the connection during the handshake",
            ));
        }
        while got < expect {
            let Some(n) = scanner.scan(&buf).map_err(|e| {
                BackendError::connect_failed(&label, format_args!("handshake failed: {e}"))
            })?
            else {
                break;
            };
            let frame = buf.split_to(n);
            got += 1;
            if got == setname && frame.starts_with(b"-BUSY") {
                continue;
            }
            if let Some(b'-') = frame.first() {
                let line = frame
                    .get(1..frame.len().saturating_sub(2))
                    .unwrap_or_default();
                let text = String::from_utf8_lossy(line).into_owned();
                return Err(BackendError::refused(&label, text));
            }
            if want_client_id && got == 1 {
                client_id = hello_id(&frame, key.resp3);
            }
        }
    }
    Ok((stream, client_id))
}

/// Connect to the backend, over TLS when configured; no Redis handshake.
pub(super) async fn open(params: &ConnParams) -> Result<BackendStream, BackendError> {
    let label = params.label();
    let tcp = TcpStream::connect(&params.addr)
        .await
        .map_err(|e| BackendError::unreachable(&label, e))?;
    let _ = tcp.set_nodelay(true);
    let target = match &params.tls {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            return Err(BackendError::connect_failed(
                &label,
                format_args!("TLS is misconfigured: {e}"),
            ))
        }
    };
    BackendStream::wrap(tcp, target).await.map_err(|e| {
        BackendError::connect_failed(&label, format_args!("TLS handshake failed: {e}"))
    })
}

/// The `id` field of a `HELLO` reply.
fn hello_id(frame: &[u8], resp3: bool) -> Option<i64> {
    let items = Decoded::parse(frame, resp3)?.into_items()?;
    let mut it = items.chunks_exact(2);
    it.find(|kv| kv.first().and_then(|k| k.as_str()).as_deref() == Some("id"))?
        .get(1)?
        .as_int()
}
