//! [`ControlConn`]: a plain request/reply connection for the proxy's own questions
//! (the replication monitor, Sentinel, start-up checks).

use super::handshake::{connect, open};
use super::{BackendError, ConnKey, ConnParams};
use crate::protocol::{encode_command, ReplyScanner};
use crate::reply::Decoded;
use crate::tls::BackendStream;
use bytes::BytesMut;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A plain request/reply connection for the proxy's own questions (the replication
/// monitor, Sentinel, start-up checks). Not pipelined, not shared.
#[derive(Debug)]
pub struct ControlConn {
    stream: BackendStream,
    buf: BytesMut,
    scanner: ReplyScanner,
    label: String,
}

impl ControlConn {
    /// Connect (and authenticate) within `params.connect_timeout`.
    pub async fn connect(params: &ConnParams) -> Result<ControlConn, BackendError> {
        let key = ConnKey::default();
        Self::within(params, async {
            connect(params, &key, false).await.map(|(stream, _)| stream)
        })
        .await
    }

    /// Connect within `params.connect_timeout` and send nothing: the first command
    /// runs unauthenticated, as a new client's does (a client's `AUTH`, checked by
    /// the server itself).
    pub async fn connect_bare(params: &ConnParams) -> Result<ControlConn, BackendError> {
        Self::within(params, open(params)).await
    }

    /// A control connection over the stream `setup` makes, within the connect timeout.
    async fn within(
        params: &ConnParams,
        setup: impl std::future::Future<Output = Result<BackendStream, BackendError>>,
    ) -> Result<ControlConn, BackendError> {
        let label = params.label();
        let stream = tokio::time::timeout(params.connect_timeout, setup)
            .await
            .map_err(|_| BackendError::connect_timeout(&label, params.connect_timeout))??;
        Ok(ControlConn {
            stream,
            buf: BytesMut::with_capacity(4096),
            scanner: ReplyScanner::new(),
            label,
        })
    }

    /// Send one command and read its reply, within `timeout`.
    pub async fn call(
        &mut self,
        args: &[&[u8]],
        timeout: Duration,
    ) -> Result<Decoded, BackendError> {
        let frame = self.call_raw(args, timeout).await?;
        Decoded::parse(&frame, false)
            .ok_or_else(|| BackendError::lost(&self.label, "sent a reply that does not decode"))
    }

    /// Send one command and return its reply's raw bytes, within `timeout`.
    pub async fn call_raw(
        &mut self,
        args: &[&[u8]],
        timeout: Duration,
    ) -> Result<BytesMut, BackendError> {
        let mut replies = self.call_many(&[args], timeout).await?;
        replies
            .pop()
            .ok_or_else(|| BackendError::lost(&self.label, "sent no reply"))
    }

    /// Send several commands in one write and return their replies' raw bytes, in
    /// order, within `timeout` in all.
    pub async fn call_many(
        &mut self,
        commands: &[&[&[u8]]],
        timeout: Duration,
    ) -> Result<Vec<BytesMut>, BackendError> {
        let mut req = Vec::new();
        for args in commands {
            encode_command(&mut req, args.iter().copied());
        }
        let label = self.label.clone();
        let fut = async {
            self.stream
                .write_all(&req)
                .await
                .map_err(|e| BackendError::lost(&label, format_args!("connection lost: {e}")))?;
            let mut out = Vec::with_capacity(commands.len());
            for _ in commands {
                out.push(self.read_raw().await?);
            }
            Ok(out)
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| BackendError::timeout(&self.label, timeout))?
    }

    /// Read the next frame (for subscriptions).
    pub async fn read_frame(&mut self) -> Result<Decoded, BackendError> {
        let frame = self.read_raw().await?;
        Decoded::parse(&frame, false)
            .ok_or_else(|| BackendError::lost(&self.label, "sent a reply that does not decode"))
    }

    async fn read_raw(&mut self) -> Result<BytesMut, BackendError> {
        loop {
            match self.scanner.scan(&self.buf) {
                Ok(Some(n)) => return Ok(self.buf.split_to(n)),
                Ok(None) => {}
                Err(e) => {
                    return Err(BackendError::lost(
                        &self.label,
                        format_args!("sent a bad reply: {e}"),
                    ))
                }
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) => return Err(BackendError::lost(&self.label, "closed the connection")),
                Ok(_) => {}
                Err(e) => {
                    return Err(BackendError::lost(
                        &self.label,
                        format_args!("connection lost: {e}"),
                    ))
                }
            }
        }
    }

    /// Send a command without waiting for its reply (e.g. `SUBSCRIBE`).
    pub async fn send(&mut self, args: &[&[u8]]) -> Result<(), BackendError> {
        let mut req = Vec::new();
        encode_command(&mut req, args.iter().copied());
        self.stream
            .write_all(&req)
            .await
            .map_err(|e| BackendError::lost(&self.label, format_args!("connection lost: {e}")))
    }
}
