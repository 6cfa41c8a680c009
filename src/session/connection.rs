//! The connection loop: read requests, write replies, wake on replies, a changed view,
//! a held reply's deadline, a replica read's hedge delay or a waiting retry; and the
//! buffer limits checked on each turn.

use super::*;

impl Session {
    pub(super) async fn serve<S: AsyncRead + AsyncWrite + Unpin>(&mut self, stream: &mut S) -> End {
        loop {
            if self.handle.inbox.kill.load(Ordering::Relaxed) {
                let _ = Box::pin(flush_now(stream, &mut self.wbuf)).await;
                return End::Dropped("killed".into());
            }
            if self.handle.inbox.trim.swap(false, Ordering::Relaxed) {
                self.trim_buffers();
                if self.parkable().is_some() {
                    return End::Parked;
                }
            }
            // Work until nothing more can be done without waiting.
            let mut rounds = 0;
            loop {
                let before = (self.pending.len(), self.rbuf.len(), self.wbuf.len());
                if let Err(e) = self.process() {
                    self.closing = true;
                    self.push_local_error(&format!("ERR {}", e.0));
                }
                self.drain();
                self.send_due_hedges();
                rounds += 1;
                if before == (self.pending.len(), self.rbuf.len(), self.wbuf.len()) || rounds > 64 {
                    break;
                }
            }
            if let Some(st) = self.stats.as_mut() {
                st.flush(&self.proxy.metrics);
            }
            self.flush_latencies();
            self.publish();
            let limits = &self.proxy.settings.load().config.limits;
            let out_limit = if self.mode == Mode::Tunnel {
                limits.pubsub_output_buffer_limit.0
            } else {
                limits.client_output_buffer_limit.0
            };
            self.wbuf_held = self.wbuf_held.max(self.wbuf.len());
            let held = self.wbuf_held;
            if out_limit > 0 && held as u64 > out_limit {
                return self.limited("output", held);
            }
            // Replies still in the inbox count too: it may take what the limit leaves.
            let budget = (out_limit > 0).then(|| out_limit.saturating_sub(held as u64));
            if self.handle.inbox.set_budget(budget) {
                return self.limited("output", held);
            }
            if self.rbuf.len() as u64 > limits.client_query_buffer_limit.0 {
                return self.limited("query", self.rbuf.len());
            }
            if self.closing && self.pending.is_empty() {
                let _ = Box::pin(flush_now(stream, &mut self.wbuf)).await;
                return End::Closed;
            }
            let draining = self.handle.inbox.drain.load(Ordering::Relaxed);
            if draining && self.pending.is_empty() && self.wbuf.is_empty() {
                return End::Closed;
            }
            // Wait for the next thing to do.
            let can_read = !self.closing
                && !draining
                && self.rbuf.len() < read_allowance(self, limits.max_pipeline);
            // An idle client holds no read buffer: the first read after idling goes to
            // the stack and only data that arrived is kept.
            if can_read && self.rbuf.capacity() > 0 {
                let want = if self.rbuf.is_empty() {
                    4096
                } else {
                    self.read_chunk
                };
                if self.rbuf.capacity() - self.rbuf.len() < want / 4 {
                    self.rbuf.reserve(want);
                }
            }
            self.arm_hedge_timer();
            let hold = self.holds_output();
            let mut view_changed = self.view_rx.as_mut().map(|rx| Box::pin(rx.changed()));
            let event = std::future::poll_fn(|cx| {
                if !self.wbuf.is_empty() && !hold {
                    match Pin::new(&mut *stream).poll_write(cx, &self.wbuf) {
                        Poll::Ready(Ok(0)) => return Poll::Ready(Event::Closed),
                        Poll::Ready(Ok(n)) => {
                            self.wbuf.advance(n);
                            if self.wbuf.is_empty() {
                                self.wbuf_held = 0;
                            }
                            // As in Redis, replies written count as activity.
                            self.handle
                                .last_active_ms
                                .store(self.proxy.uptime_ms(self.replies_at), Ordering::Relaxed);
                            return Poll::Ready(Event::Progress);
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Event::Error(e.to_string())),
                        Poll::Pending => {}
                    }
                }
                if can_read && self.rbuf.capacity() == 0 {
                    let mut tmp = [0u8; 2048];
                    let mut rb = tokio::io::ReadBuf::new(&mut tmp);
                    match Pin::new(&mut *stream).poll_read(cx, &mut rb) {
                        Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                            return Poll::Ready(Event::Closed)
                        }
                        Poll::Ready(Ok(())) => {
                            self.rbuf.reserve(4096);
                            self.rbuf.extend_from_slice(rb.filled());
                            return Poll::Ready(Event::Progress);
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Event::Error(e.to_string())),
                        Poll::Pending => {}
                    }
                } else if can_read {
                    let spare = self.rbuf.capacity() - self.rbuf.len();
                    match tokio_util::io::poll_read_buf(Pin::new(&mut *stream), cx, &mut self.rbuf)
                    {
                        Poll::Ready(Ok(0)) => return Poll::Ready(Event::Closed),
                        Poll::Ready(Ok(n)) => {
                            self.read_chunk =
                                next_read_size(self.read_chunk, n, spare, MIN_READ, MAX_READ);
                            return Poll::Ready(Event::Progress);
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Event::Error(e.to_string())),
                        Poll::Pending => {}
                    }
                }
                if self.handle.inbox.notify.poll(cx).is_ready() {
                    return Poll::Ready(Event::Progress);
                }
                if let Some(s) = self.held_sleep.as_mut() {
                    if s.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Event::Progress);
                    }
                }
                if let Some(w) = self.retry_wait.as_mut() {
                    if w.sleep.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Event::Progress);
                    }
                }
                if let Some((_, sleep)) = self.read_wait.as_mut() {
                    if sleep.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Event::Progress);
                    }
                }
                if self.hedge_at.is_some() {
                    if let Some(s) = self.hedge_sleep.as_mut() {
                        if s.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(Event::Progress);
                        }
                    }
                }
                if let Some(f) = view_changed.as_mut() {
                    if f.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Event::Progress);
                    }
                }
                Poll::Pending
            })
            .await;
            drop(view_changed);
            match event {
                Event::Progress => {}
                Event::Closed => return End::Closed,
                Event::Error(e) => return End::Dropped(e),
            }
        }
    }

    /// A client over one of its buffer limits is closed, as Redis closes it.
    pub(super) fn limited(&self, which: &str, bytes: usize) -> End {
        self.proxy
            .metrics
            .clients_limited
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            client = self.id,
            bytes,
            "client {which} buffer limit reached; closing"
        );
        End::Dropped(format!("{which} buffer limit"))
    }

    pub(super) fn trim_buffers(&mut self) {
        if let Some(st) = self.stats.take() {
            let mut st = st;
            st.flush(&self.proxy.metrics);
        }
        if self.rbuf.is_empty() {
            self.rbuf = BytesMut::new();
        }
        if self.wbuf.is_empty() {
            self.wbuf = BytesMut::new();
        }
        if self.retry_buf.is_empty() {
            self.retry_buf = BytesMut::new();
        }
        if self.redirect_buf.is_empty() {
            self.redirect_buf = BytesMut::new();
        }
        if self.pending.is_empty() {
            self.pending = VecDeque::new();
            // The hedge timer is kept (allocating and registering one per batch costs more
            // than the rare early wake-up of a stale one).
            self.hedge_at = None;
            self.local.trim();
            self.handle.inbox.state.lock().trim();
        }
        self.parser.args = Vec::new();
        self.parser.inline_buf = Vec::new();
    }
}

/// Events that wake the session.
pub(super) enum Event {
    Progress,
    Closed,
    Error(String),
}

/// How much unparsed request data the session reads ahead: a little while it may not
/// dispatch (a blocking command or a held reply outstanding, `max_pipeline` requests in
/// flight, or its window full), so that a deep pipeline waits in the client's socket,
/// not in the proxy.
pub(super) fn read_allowance(s: &Session, max_pipeline: usize) -> usize {
    if s.blocking_in_flight
        || s.held.is_some()
        || s.pending.len() >= max_pipeline.min(4096)
        || s.shared_in_flight >= s.window
    {
        // Keep reading a little, to notice a client that goes away while it waits.
        64 * 1024
    } else {
        usize::MAX
    }
}

/// Write whatever is buffered, ignoring errors (the connection is closing).
pub(super) async fn flush_now<S: AsyncWrite + Unpin>(
    stream: &mut S,
    wbuf: &mut BytesMut,
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    if !wbuf.is_empty() {
        let res = tokio::time::timeout(Duration::from_secs(1), stream.write_all(wbuf)).await;
        wbuf.clear();
        res.map_err(|_| std::io::Error::other("timeout"))??;
    }
    stream.flush().await
}
