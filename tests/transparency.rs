//! Transparency checks that a byte-for-byte comparison with a direct Redis cannot make on
//! its own: state that must survive the proxy's own mechanisms (parking an idle client),
//! and commands the proxy must refuse because applied they would cut it off its
//! backends.
mod common;

use common::*;
use redis::Value;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn text(v: &Value) -> String {
    value_text(v).unwrap_or_else(|| format!("{v:?}"))
}

#[test]
fn a_parked_client_keeps_its_name_database_and_protocol_state() {
    let set = ReplicaSet::start(1, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(&set, ""));
    proxy.wait_healthy(1);
    let mut c = proxy.conn();
    assert_eq!(
        text(&query(&mut c, &["CLIENT", "SETNAME", "worker-7"]).unwrap()),
        "OK"
    );
    assert_eq!(text(&query(&mut c, &["SELECT", "3"]).unwrap()), "OK");
    let id = match query(&mut c, &["CLIENT", "ID"]).unwrap() {
        Value::Int(n) => u64::try_from(n).expect("an id"),
        other => panic!("CLIENT ID: {other:?}"),
    };
    // The janitor asks an idle client to give up its session; once the request was
    // taken (and not re-armed by activity), the client is parked.
    let state = proxy.state().clone();
    wait_until("the idle client is parked", Duration::from_secs(10), || {
        state.sessions.get(&id).is_some_and(|h| {
            h.inbox.trimmed.load(Ordering::Relaxed) && !h.inbox.trim.load(Ordering::Relaxed)
        })
    });
    assert_eq!(
        text(&query(&mut c, &["CLIENT", "GETNAME"]).unwrap()),
        "worker-7",
        "the name survives parking"
    );
    let info = text(&query(&mut c, &["CLIENT", "INFO"]).unwrap());
    assert!(info.contains(" name=worker-7 "), "{info}");
    assert!(info.contains(" db=3 "), "{info}");
    // And RESET clears it, as Redis's does.
    assert_eq!(text(&query(&mut c, &["RESET"]).unwrap()), "RESET");
    assert_eq!(query(&mut c, &["CLIENT", "GETNAME"]).unwrap(), Value::Nil);
    let info = text(&query(&mut c, &["CLIENT", "INFO"]).unwrap());
    assert!(
        info.contains(" name= ") && info.contains(" db=0 "),
        "{info}"
    );
}

#[test]
fn commands_that_would_lock_the_proxy_out_are_refused_and_change_nothing() {
    let set = ReplicaSet::start(1, false);
    let proxy = ProxyUnderTest::start(&proxy_yaml(&set, ""));
    proxy.wait_healthy(1);
    let mut c = proxy.conn();
    for args in [
        &["CONFIG", "SET", "requirepass", "s3cret"][..],
        &[
            "CONFIG",
            "SET",
            "maxmemory-policy",
            "noeviction",
            "requirepass",
            "x",
        ][..],
        &["ACL", "SETUSER", "default", "resetpass"][..],
        &["ACL", "DELUSER", "someone", "default"][..],
    ] {
        let err = query(&mut c, args).expect_err("refused");
        let msg = format!("{err}");
        assert!(msg.contains("redsplit"), "{args:?}: {msg}");
    }
    assert_eq!(
        set.master.cmd(&["CONFIG", "GET", "requirepass"]),
        Value::Array(vec![
            Value::BulkString(b"requirepass".to_vec()),
            Value::BulkString(Vec::new())
        ]),
        "the master's password is untouched"
    );
    // Other CONFIG SETs and ACL users go through, and new backend connections still work.
    assert_eq!(
        text(&query(&mut c, &["CONFIG", "SET", "maxmemory-policy", "noeviction"]).unwrap()),
        "OK"
    );
    assert_eq!(
        text(
            &query(
                &mut c,
                &["ACL", "SETUSER", "reporter", "on", ">pw", "+get", "~r:*"]
            )
            .unwrap()
        ),
        "OK"
    );
    let mut t = proxy.conn();
    assert_eq!(text(&query(&mut t, &["MULTI"]).unwrap()), "OK");
    assert_eq!(text(&query(&mut t, &["INCR", "n"]).unwrap()), "QUEUED");
    assert_eq!(
        query(&mut t, &["EXEC"]).unwrap(),
        Value::Array(vec![Value::Int(1)])
    );
}
