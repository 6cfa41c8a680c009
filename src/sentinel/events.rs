//! Sentinel events: one subscriber task per Sentinel listens for the events that
//! announce a topology change and wakes the refresher, reconnecting with backoff.

use super::Target;
use crate::backend::ControlConn;
use crate::reply::Decoded;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

/// The Sentinel events that make the refresher look again at once.
const EVENTS: &[&str] = &[
    "+switch-master",
    "+sdown",
    "-sdown",
    "+odown",
    "-odown",
    "+slave",
    "+convert-to-slave",
    "+fix-slave-config",
    "+role-change",
    "-role-change",
    "+reboot",
    "+failover-state-select-slave",
    "+selected-slave",
    "+failover-state-send-slaveof-noone",
    "+failover-state-wait-promotion",
    "+promoted-slave",
    "+failover-state-reconf-slaves",
    "+slave-reconf-done",
    "+failover-end",
    "+failover-end-for-timeout",
    "-failover-abort-no-good-slave",
    "-failover-abort-not-elected",
];

/// A subscriber sends `PING` after this long without a frame, and reconnects when the
/// next period passes without one either.
const SUBSCRIBER_IDLE: Duration = Duration::from_secs(5);

/// First and longest delay between a subscriber's reconnection attempts.
const SUBSCRIBER_BACKOFF: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(2));

/// One subscriber task per Sentinel; aborted when dropped.
#[derive(Debug, Default)]
pub(super) struct Subscribers {
    tasks: HashMap<String, (Target, AbortHandle)>,
}

impl Subscribers {
    /// Run exactly one subscriber per target (restarting those whose settings changed).
    pub(super) fn sync(&mut self, targets: &[Target], wake: &Arc<Notify>) {
        self.tasks.retain(|addr, (t, h)| {
            let keep = targets.iter().any(|n| n == t && n.addr == *addr);
            if !keep {
                h.abort();
            }
            keep
        });
        for t in targets {
            if !self.tasks.contains_key(&t.addr) {
                let h = tokio::spawn(subscriber(t.clone(), wake.clone()));
                self.tasks
                    .insert(t.addr.clone(), (t.clone(), h.abort_handle()));
            }
        }
    }
}

impl Drop for Subscribers {
    fn drop(&mut self) {
        for (_, h) in self.tasks.values() {
            h.abort();
        }
    }
}

/// Listen to one Sentinel's events for as long as the task lives, reconnecting with
/// exponential backoff.
async fn subscriber(t: Target, wake: Arc<Notify>) {
    let mut backoff = SUBSCRIBER_BACKOFF.0;
    let mut failing = false;
    loop {
        let mut subscribed = false;
        let err = listen(&t, &wake, &mut subscribed).await;
        if subscribed {
            backoff = SUBSCRIBER_BACKOFF.0;
            failing = false;
            // Events may be missed until the subscription is back: look now.
            wake.notify_one();
        }
        if !failing {
            tracing::warn!(sentinel = %t.addr, error = %err, "no subscription to Sentinel events; retrying");
            failing = true;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(SUBSCRIBER_BACKOFF.1);
    }
}

/// Subscribe and wake the refresher on every event about our master; returns why the
/// subscription ended. Sets `subscribed` once Sentinel confirmed the subscription.
async fn listen(t: &Target, wake: &Notify, subscribed: &mut bool) -> String {
    let mut c = match ControlConn::connect(&t.params()).await {
        Ok(c) => c,
        Err(e) => return t.reason(&e),
    };
    let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
    args.extend(EVENTS.iter().map(|e| e.as_bytes()));
    if let Err(e) = c.send(&args).await {
        return t.reason(&e);
    }
    let mut ping_sent = false;
    loop {
        let frame = match tokio::time::timeout(SUBSCRIBER_IDLE, c.read_frame()).await {
            Err(_) if ping_sent => return "no answer to PING".into(),
            Err(_) => {
                if let Err(e) = c.send(&[b"PING"]).await {
                    return t.reason(&e);
                }
                ping_sent = true;
                continue;
            }
            Ok(Err(e)) => return t.reason(&e),
            Ok(Ok(frame)) => frame,
        };
        ping_sent = false;
        match frame {
            Decoded::Error(e) => return format!("refused the subscription: {e}"),
            Decoded::Array(items) => match items.as_slice() {
                // The last channel's confirmation.
                [kind, _, count]
                    if kind.as_str().as_deref() == Some("subscribe")
                        && count.as_int() == Some(EVENTS.len() as i64) =>
                {
                    *subscribed = true;
                    tracing::info!(sentinel = %t.addr, "subscribed to Sentinel events");
                    // Events may have been missed while not subscribed.
                    wake.notify_one();
                }
                [kind, channel, payload] if kind.as_str().as_deref() == Some("message") => {
                    let channel = channel.as_str().unwrap_or_default();
                    let payload = payload.as_str().unwrap_or_default();
                    if concerns(&payload, &t.master_name) {
                        tracing::debug!(sentinel = %t.addr, event = %channel, %payload, "Sentinel event");
                        wake.notify_one();
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }
}

/// Whether an event's payload names the master (`+switch-master NAME …`, or
/// `… @ NAME ip port` / `master NAME ip port` for the others).
fn concerns(payload: &str, master_name: &str) -> bool {
    payload.split_whitespace().any(|w| w == master_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_about_the_master() {
        assert!(concerns(
            "slave 127.0.0.1:1 127.0.0.1 1 @ mymaster 127.0.0.1 2",
            "mymaster"
        ));
        assert!(concerns("mymaster 127.0.0.1 1 127.0.0.1 2", "mymaster"));
        assert!(!concerns("master other 127.0.0.1 2", "mymaster"));
    }
}
