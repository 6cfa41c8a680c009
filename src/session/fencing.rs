//! The session's side of the key fence ([`crate::fence`]): which keys a write fences,
//! the hashes of its writes in flight (from send to reply), and the fence a
//! `read_your_writes: key` read must pass.
//!
//! A write's keys are fenced (pending) just before it is sent, and its [`Pending`] entry
//! carries a tag: how many hashes it pushed on `fence_keys`, or that it fenced the whole
//! keyspace, or nothing. Writes complete in the order they were sent (the pending queue
//! is a FIFO), so on completion the entry's hashes are the oldest in `fence_keys`. Keys
//! of writes queued in a transaction are collected until `EXEC`, which fences them all.

use super::*;
use crate::fence::{key_hash, Fenced};

/// Not a fenced write (a read, a reply made here, or a write sent while no rule had
/// `read_your_writes: key`).
pub(super) const FENCE_NONE: u16 = 0;
/// A write looked at that fences nothing (it changes no key: `CONFIG SET`, `INFO`).
pub(super) const FENCE_NOTHING: u16 = u16::MAX - 1;
/// A write that fences the whole keyspace (the global fence).
pub(super) const FENCE_GLOBAL: u16 = u16::MAX;
/// Most keys one write fences one by one; a write with more fences the keyspace.
const MAX_FENCED_KEYS: usize = (u16::MAX - 2) as usize;

/// Which keys a write changes, as far as the proxy can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    /// The keys the command table finds in it.
    Keys,
    /// Keys it does not name: the whole keyspace.
    Keyspace,
    /// None.
    Nothing,
}

/// Which keys `req` (command `cmd`, `None`: unknown to the table) changes. Unknown
/// commands, `MOVE` and `COPY … DB` (they write another database), and keyless commands
/// that may write (the `write` flag: `FLUSHDB`, `FLUSHALL`, `SWAPDB`, `FUNCTION LOAD`; or
/// scripts and functions, `EVAL`/`FCALL` with no declared key) change the keyspace.
/// Scripts with declared keys fence those keys: Redis requires a script to declare the
/// keys it touches.
fn scope(cmd: Option<&Command>, req: &Request) -> Scope {
    let Some(cmd) = cmd else {
        return Scope::Keyspace;
    };
    let other_db = match cmd.name {
        "move" => true,
        "copy" => (3..req.argc()).any(|i| req.arg(i).eq_ignore_ascii_case(b"db")),
        _ => false,
    };
    if other_db {
        return Scope::Keyspace;
    }
    let mut any = false;
    commands::for_each_key(cmd, req, |_| any = true);
    if any {
        Scope::Keys
    } else if cmd.flags.contains(commands::Flags::WRITE)
        || commands::touches_undeclared_keys(cmd, req)
    {
        Scope::Keyspace
    } else {
        Scope::Nothing
    }
}

impl Session {
    /// Fence the keys of the write `req` (command `cmd`) in database `db`, before it is
    /// sent, and set the tag the next pending entry takes (`next_fence`). After the send,
    /// [`Session::fence_unsent`] releases the fence if no entry took it.
    pub(super) fn fence_write(&mut self, cmd: Option<&Command>, req: &Request, db: u32) {
        let tag = match scope(cmd, req) {
            Scope::Nothing => FENCE_NOTHING,
            Scope::Keyspace => self.fence_global(),
            Scope::Keys => {
                let fence = &self.proxy.key_fence;
                let keys = &mut self.fence_keys;
                let mut n = 0usize;
                if let Some(cmd) = cmd {
                    commands::for_each_key(cmd, req, |i| {
                        if n < MAX_FENCED_KEYS {
                            let h = key_hash(db, req.arg(i));
                            fence.begin(h);
                            keys.push_back(h);
                        }
                        n += 1;
                    });
                }
                if n > MAX_FENCED_KEYS {
                    // Too many to carry: the whole keyspace instead.
                    self.fence_pop_newest(MAX_FENCED_KEYS, Instant::now());
                    self.fence_global()
                } else {
                    n as u16
                }
            }
        };
        self.next_fence = tag;
    }

    fn fence_global(&mut self) -> u16 {
        self.proxy.key_fence.begin_global();
        self.fence_globals += 1;
        FENCE_GLOBAL
    }

    /// After a send that [`Session::fence_write`] prepared: if no pending entry took the
    /// tag (the request was answered here, e.g. it could not be sent), end its fence now.
    pub(super) fn fence_unsent(&mut self, now: Instant) {
        let tag = std::mem::take(&mut self.next_fence);
        match tag {
            FENCE_NONE | FENCE_NOTHING => {}
            FENCE_GLOBAL => self.fence_end_global(now),
            n => self.fence_pop_newest(usize::from(n), now),
        }
    }

    /// End the fences of the newest `n` hashes (just pushed).
    fn fence_pop_newest(&mut self, n: usize, now: Instant) {
        for _ in 0..n {
            if let Some(h) = self.fence_keys.pop_back() {
                self.proxy.key_fence.end(h, now);
            }
        }
    }

    fn fence_end_global(&mut self, now: Instant) {
        if self.fence_globals > 0 {
            self.fence_globals -= 1;
            self.proxy.key_fence.end_global(now);
        }
    }

    /// The write of pending entry `p` was answered (or failed) at `now`: its keys are
    /// acknowledged. A write sent before `read_your_writes: key` was turned on, answered
    /// after, raises the global fence (its keys were not recorded).
    #[inline]
    pub(super) fn fence_done(&mut self, p: &Pending, now: Instant) {
        match p.fence {
            FENCE_NONE => {
                if matches!(p.kind, Kind::Write { .. } | Kind::Durable(_) | Kind::Exec)
                    && self.proxy.key_fence.enabled()
                {
                    self.proxy.key_fence.raise(now);
                }
            }
            FENCE_NOTHING => {}
            FENCE_GLOBAL => self.fence_end_global(now),
            n => {
                for _ in 0..n {
                    if let Some(h) = self.fence_keys.pop_front() {
                        self.proxy.key_fence.end(h, now);
                    }
                }
            }
        }
    }

    /// A write queued inside `MULTI` (in database `db`): its keys are fenced when `EXEC`
    /// is sent.
    pub(super) fn fence_queue(&mut self, cmd: Option<&Command>, req: &Request, db: u32) {
        match scope(cmd, req) {
            Scope::Nothing => {}
            Scope::Keyspace => self.tx_fence_global = true,
            Scope::Keys => {
                if let Some(cmd) = cmd {
                    let keys = &mut self.tx_fence;
                    commands::for_each_key(cmd, req, |i| keys.push(key_hash(db, req.arg(i))));
                }
            }
        }
    }

    /// `EXEC` is about to be sent: fence what its transaction writes.
    pub(super) fn fence_exec(&mut self) {
        let keyspace =
            std::mem::take(&mut self.tx_fence_global) || self.tx_fence.len() > MAX_FENCED_KEYS;
        let tag = if keyspace {
            self.tx_fence.clear();
            self.fence_global()
        } else if self.tx_fence.is_empty() {
            FENCE_NOTHING
        } else {
            let fence = &self.proxy.key_fence;
            let n = self.tx_fence.len();
            for h in self.tx_fence.drain(..) {
                fence.begin(h);
                self.fence_keys.push_back(h);
            }
            n as u16
        };
        self.next_fence = tag;
    }

    /// Forget the keys of the transaction being queued (`MULTI`, `DISCARD`).
    pub(super) fn fence_tx_clear(&mut self) {
        self.tx_fence.clear();
        self.tx_fence_global = false;
    }

    /// The session ends with writes in flight: nobody will see their replies, so their
    /// fences end now.
    pub(super) fn fence_release_all(&mut self) {
        let now = Instant::now();
        while let Some(h) = self.fence_keys.pop_front() {
            self.proxy.key_fence.end(h, now);
        }
        while self.fence_globals > 0 {
            self.fence_end_global(now);
        }
    }

    /// The fence a `read_your_writes: key` read of `req` must pass: the latest ack (and
    /// whether a write is in flight) of its keys in this connection's database, and the
    /// global fence.
    pub(super) fn read_fence(&self, cmd: &Command, req: &Request) -> Fenced {
        let fence = &self.proxy.key_fence;
        let db = self.client.db;
        let mut f = Fenced::default();
        commands::for_each_key(cmd, req, |i| {
            fence.add_key(key_hash(db, req.arg(i)), &mut f)
        });
        fence.with_global(f)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::protocol::OwnedRequest;

    fn scope_of(args: &[&str]) -> Scope {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let owned = OwnedRequest::new(&args);
        let req = owned.request();
        scope(commands::lookup(&req), &req)
    }

    #[test]
    fn which_writes_fence_keys_and_which_the_keyspace() {
        assert_eq!(scope_of(&["SET", "k", "v"]), Scope::Keys);
        assert_eq!(scope_of(&["MSET", "a", "1", "b", "2"]), Scope::Keys);
        assert_eq!(scope_of(&["EVAL", "return 1", "1", "k"]), Scope::Keys);
        assert_eq!(scope_of(&["BLPOP", "q", "0"]), Scope::Keys);
        assert_eq!(scope_of(&["COPY", "a", "b"]), Scope::Keys);
        for keyspace in [
            &["FLUSHDB"][..],
            &["FLUSHALL", "ASYNC"],
            &["SWAPDB", "0", "1"],
            &["EVAL", "return 1", "0"],
            &["FCALL", "f", "0"],
            &["MOVE", "k", "1"],
            &["COPY", "a", "b", "DB", "2"],
            &["FUNCTION", "LOAD", "x"],
            &["SOMEMODULE.WRITE", "k"],
        ] {
            assert_eq!(scope_of(keyspace), Scope::Keyspace, "{keyspace:?}");
        }
        assert_eq!(scope_of(&["CONFIG", "SET", "x", "y"]), Scope::Nothing);
        assert_eq!(scope_of(&["INFO"]), Scope::Nothing);
    }

    #[test]
    fn a_pending_entry_stays_small() {
        // 48 bytes, as before it carried the fence tag (which fits in padding).
        assert!(
            std::mem::size_of::<Pending>() <= 48,
            "{}",
            std::mem::size_of::<Pending>()
        );
    }
}
