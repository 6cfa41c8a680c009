//! Durable writes and `WAIT`: replies held until enough replicas hold the write.

use super::*;

impl Session {
    // ---------------------------------------------------------------- WAIT

    pub(super) fn wait_command(
        &mut self,
        req: &Request,
        _settings: &Settings,
        view: &View,
        now: Instant,
    ) -> Stop {
        if req.argc() != 3 {
            self.push_local_error("ERR wrong number of arguments for 'wait' command");
            return Stop::More;
        }
        let (Some(n), Some(t)) = (parse_int(req.arg(1)), parse_int(req.arg(2))) else {
            self.push_local_error("ERR value is not an integer or out of range");
            return Stop::More;
        };
        if t < 0 {
            self.push_local_error("ERR timeout is negative");
            return Stop::More;
        }
        if self.replica_reads_in_flight > 0 || self.dedicated_in_flight > 0 {
            return Stop::Wait;
        }
        let Some(m) = view.master.as_ref() else {
            self.push_local_error(crate::error::NO_MASTER);
            return Stop::More;
        };
        let backend = m.backend.clone();
        let n = u32::try_from(n.max(0)).unwrap_or(u32::MAX);
        self.send_bytes_shared(
            &backend,
            ROLE,
            Kind::RoleProbe {
                // Beyond `u32::MAX` ms (49 days), the wait is that long.
                wait: Some((n, u32::try_from(t).unwrap_or(u32::MAX))),
            },
            now,
        );
        self.proxy.monitor.poll_now();
        Stop::More
    }

    pub(super) fn count_replicas_at(&self, target: u64, master: Option<u32>) -> u32 {
        router::replicas_holding(&self.proxy.view.load_full().holding(master), target, master)
    }

    /// Check a held reply; `true` when it was released.
    pub(super) fn check_held(&mut self, now: Instant) -> bool {
        let Some(h) = &self.held else { return true };
        let have = self.count_replicas_at(h.target, h.master);
        let done = have >= h.replicas;
        let expired = h.deadline.is_some_and(|d| now >= d);
        if !done && !expired {
            if self.view_rx.is_none() {
                self.view_rx = Some(self.proxy.view_version.subscribe());
            }
            if let Some(rx) = self.view_rx.as_mut() {
                rx.mark_unchanged();
            }
            self.proxy.monitor.poll_now();
            return false;
        }
        let Some(h) = self.held.take() else {
            return true;
        };
        self.held_sleep = None;
        self.view_rx = None;
        let mut out = BytesMut::new();
        match h.reply {
            Some(reply) => {
                if done {
                    self.proxy
                        .metrics
                        .durable_ok
                        .fetch_add(1, Ordering::Relaxed);
                    out.extend_from_slice(&reply);
                } else {
                    self.proxy
                        .metrics
                        .durable_timeout
                        .fetch_add(1, Ordering::Relaxed);
                    self.stats().errors += 1;
                    Value::error(format!(
                        "ERR redsplit: write applied on the master but reached only {have} of {} replicas within {} ms",
                        h.replicas,
                        now.duration_since(h.started).as_millis()
                    ))
                    .encode(self.client.resp3, &mut out);
                }
            }
            None => Value::Int(i64::from(have)).encode(self.client.resp3, &mut out),
        }
        if h.part {
            self.merge_part(&out);
        } else if !h.silent {
            self.wbuf.extend_from_slice(&out);
            self.stats().replies += 1;
        }
        true
    }
}
