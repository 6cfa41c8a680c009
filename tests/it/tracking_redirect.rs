//! `CLIENT TRACKING on REDIRECT`: the target of a redirect gets the invalidations Redis
//! would give it, on raw sockets compared byte for byte with a direct Redis, whatever
//! the proxy does to give it a master connection of its own.
use crate::common::*;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// `CLIENT TRACKING on REDIRECT` to a client that has not subscribed yet (so, through
/// the proxy, has no master connection of its own) is accepted as on Redis: the
/// invalidations before it subscribes are dropped, the later ones reach it. The same
/// session, on raw sockets, gives the same bytes directly and through the proxy.
#[test]
fn a_tracking_redirect_reaches_a_target_that_subscribes_later() {
    let (master, proxy) = master_only();
    let mut seen = Vec::new();
    // Through the proxy the target gets a master connection when the redirect comes (in
    // database 5, a new one; in 0, maybe one the pool set up ahead): the redirect waits
    // until Redis knows it.
    for (addr, db) in [
        (master.addr(), "0"),
        (proxy.addr, "0"),
        (master.addr(), "5"),
        (proxy.addr, "5"),
    ] {
        let (mut a, mut b, mut c) = (raw(addr), raw(addr), raw(addr));
        let say = |s: &mut TcpStream, args: &[&str]| {
            let mut out = Vec::new();
            redsplit::protocol::encode_command(&mut out, args.iter().map(|a| a.as_bytes()));
            s.write_all(&out).unwrap();
            read_reply(s)
        };
        assert_eq!(say(&mut b, &["SELECT", db]), b"+OK\r\n");
        assert_eq!(say(&mut c, &["SELECT", db]), b"+OK\r\n");
        assert_eq!(say(&mut a, &["SELECT", db]), b"+OK\r\n");
        let id = say(&mut b, &["CLIENT", "ID"]);
        let id = String::from_utf8_lossy(&id[1..id.len() - 2]).into_owned();
        let mut got = vec![
            say(&mut a, &["CLIENT", "TRACKING", "on", "REDIRECT", &id]),
            say(&mut a, &["CLIENT", "GETREDIR"]),
        ];
        // Before the target subscribes: Redis drops this invalidation.
        got.push(say(&mut a, &["GET", "rd:early"]));
        got.push(say(&mut c, &["SET", "rd:early", "1"]));
        got.push(say(&mut b, &["SUBSCRIBE", "__redis__:invalidate"]));
        got.push(say(&mut a, &["GET", "rd:late"]));
        got.push(say(&mut c, &["SET", "rd:late", "1"]));
        // The first message the target gets names the later key only.
        got.push(read_reply(&mut b));
        got.push(say(&mut a, &["CLIENT", "GETREDIR"]));
        let getredir = String::from_utf8_lossy(&got[1]).into_owned();
        assert_eq!(getredir, format!(":{id}\r\n"), "GETREDIR names the target");
        // Ids differ by nature between the two worlds; the rest must not.
        got.remove(1);
        got.pop();
        seen.push(got);
        for k in ["rd:early", "rd:late"] {
            say(&mut c, &["DEL", k]);
        }
    }
    let show = |v: &Vec<Vec<u8>>| {
        v.iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect::<Vec<_>>()
    };
    for pair in seen.chunks(2) {
        assert_eq!(
            show(&pair[1]),
            show(&pair[0]),
            "proxied (left) vs direct (right)"
        );
        assert!(
            String::from_utf8_lossy(pair[0].last().unwrap()).contains("rd:late"),
            "{:?}",
            show(&pair[0])
        );
    }
}

/// A RESP3 target of `CLIENT TRACKING on REDIRECT` gets the invalidations pushed to it as
/// they come, subscribed or not, as from Redis: while idle, while (through the proxy) it
/// is parked without a task of its own, and inside its own `MULTI`. The same session,
/// on raw sockets, gives the same bytes directly and through the proxy.
#[test]
fn a_resp3_tracking_redirect_target_gets_its_invalidations_unsubscribed() {
    let (master, proxy) = master_only();
    let state = proxy.state().clone();
    let parked = || state.metrics.clients_parked.load(Ordering::Relaxed);
    let mut seen = Vec::new();
    for (addr, proxied) in [(master.addr(), false), (proxy.addr, true)] {
        let (mut a, mut t) = (raw(addr), raw(addr));
        let say = |s: &mut TcpStream, args: &[&str]| {
            let mut out = Vec::new();
            redsplit::protocol::encode_command(&mut out, args.iter().map(|a| a.as_bytes()));
            s.write_all(&out).unwrap();
            read_reply(s)
        };
        // The target's HELLO names the server (its id and version differ by nature).
        assert!(say(&mut t, &["HELLO", "3"]).starts_with(b"%"));
        let id = say(&mut t, &["CLIENT", "ID"]);
        let id = String::from_utf8_lossy(&id[1..id.len() - 2]).into_owned();
        let mut got = vec![say(&mut a, &["CLIENT", "TRACKING", "on", "REDIRECT", &id])];
        // Idle: the push comes alone.
        got.push(say(&mut a, &["GET", "r3:idle"]));
        got.push(say(&mut a, &["SET", "r3:idle", "1"]));
        got.push(read_reply(&mut t));
        // Parked (through the proxy): the push brings it back.
        got.push(say(&mut a, &["GET", "r3:parked"]));
        if proxied {
            wait_until("the idle target is parked", Duration::from_secs(15), || {
                parked() == 1
            });
        }
        got.push(say(&mut a, &["SET", "r3:parked", "1"]));
        got.push(read_reply(&mut t));
        got.push(say(&mut t, &["PING"]));
        // Inside its transaction: pushed between the replies.
        got.push(say(&mut t, &["MULTI"]));
        got.push(say(&mut a, &["GET", "r3:multi"]));
        got.push(say(&mut a, &["SET", "r3:multi", "1"]));
        got.push(read_reply(&mut t));
        got.push(say(&mut t, &["INCR", "r3:n"]));
        got.push(say(&mut t, &["EXEC"]));
        got.push(say(&mut a, &["CLIENT", "TRACKINGINFO"]));
        seen.push(got);
        for k in ["r3:idle", "r3:multi", "r3:parked", "r3:n"] {
            say(&mut a, &["DEL", k]);
        }
    }
    let show = |v: &Vec<Vec<u8>>| {
        v.iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect::<Vec<_>>()
    };
    // TRACKINGINFO names the target by id, which differs by nature.
    let info = |v: &mut Vec<Vec<u8>>| String::from_utf8_lossy(&v.pop().unwrap()).into_owned();
    let (direct_info, proxied_info) = (info(&mut seen[0]), info(&mut seen[1]));
    for i in [&direct_info, &proxied_info] {
        assert!(!i.contains("broken_redirect"), "the redirect holds: {i}");
    }
    assert_eq!(
        show(&seen[1]),
        show(&seen[0]),
        "proxied (left) vs direct (right)"
    );
    for key in ["r3:idle", "r3:multi", "r3:parked"] {
        assert!(
            seen[0]
                .iter()
                .any(|r| r.starts_with(b">2") && String::from_utf8_lossy(r).contains(key)),
            "{key} invalidated: {:?}",
            show(&seen[0])
        );
    }
}
