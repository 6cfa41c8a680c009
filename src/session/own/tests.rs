//! Unit tests of [`super`]: every argument check and reply of the commands the proxy
//! answers itself, compared byte for byte with what the client gets.

use super::*;
use crate::backend::Login as BackendLogin;
use crate::config::{CommandAccess, Config, Secret, UserConfig};
use crate::protocol::OwnedRequest;

/// The request made of `args`.
fn req(args: &[&str]) -> OwnedRequest {
    OwnedRequest::new(args.iter().map(|a| a.as_bytes()))
}

/// The RESP2 bytes of `a`.
fn resp2(a: &Answer) -> Vec<u8> {
    a.to_bytes(false)
}

/// The RESP2 bytes of the error `msg` (`-msg\r\n`).
fn err(msg: &str) -> Vec<u8> {
    format!("-{msg}\r\n").into_bytes()
}

/// The error of a `Result`'s `Err`, as RESP2 bytes.
fn err_of<T: std::fmt::Debug>(r: Result<T, Value>) -> Vec<u8> {
    resp2(&Answer::Reply(r.unwrap_err()))
}

/// Users from `proxy.yaml`: `(name, password, admin)`; `redis`: `redis_users`.
fn users(list: &[(&str, &str, bool)], redis: Option<bool>) -> Users {
    let cfg = Config {
        users: list
            .iter()
            .map(|(n, p, admin)| UserConfig {
                name: (*n).into(),
                password: Secret::new(*p),
                commands: CommandAccess::Unset,
                keys: vec!["*".into()],
                admin: *admin,
            })
            .collect(),
        redis_users: redis,
        ..Config::default()
    };
    Users::from_config(&cfg)
}

// ------------------------------------------------------------------ connection commands

#[test]
fn arity_is_checked_against_the_table() {
    let select = crate::commands::lookup_name(b"select").unwrap();
    assert!(check_arity(select, 2).is_ok());
    assert_eq!(
        err_of(check_arity(select, 3)),
        err("ERR wrong number of arguments for 'select' command")
    );
    let kill = crate::commands::lookup_name(b"client|kill").unwrap();
    assert!(check_arity(kill, 3).is_ok());
    assert!(check_arity(kill, 7).is_ok());
    assert_eq!(
        err_of(check_arity(kill, 2)),
        err("ERR wrong number of arguments for 'client|kill' command")
    );
}

#[test]
fn an_unknown_subcommand_names_the_table_entry() {
    assert_eq!(
        resp2(&unknown_subcommand("client|foo")),
        err("ERR unknown subcommand or wrong number of arguments for 'client|foo'")
    );
}

#[test]
fn ping_and_echo() {
    assert_eq!(resp2(&ping(&req(&["PING"]).request())), b"+PONG\r\n");
    assert_eq!(
        resp2(&ping(&req(&["PING", "hi"]).request())),
        b"$2\r\nhi\r\n"
    );
    assert_eq!(
        resp2(&ping(&req(&["PING", "a", "b"]).request())),
        err("ERR wrong number of arguments for 'ping' command")
    );
    assert_eq!(
        resp2(&echo(&req(&["ECHO", "hello"]).request())),
        b"$5\r\nhello\r\n"
    );
    assert_eq!(resp2(&echo(&req(&["ECHO", ""]).request())), b"$0\r\n\r\n");
}

#[test]
fn select_checks_the_count_the_integer_and_the_range() {
    let r = req(&["SELECT", "3"]);
    assert_eq!(check_select(&r.request(), 16).unwrap(), 3);
    assert_eq!(
        check_select(&req(&["SELECT", "0"]).request(), 16).unwrap(),
        0
    );
    assert_eq!(
        check_select(&req(&["SELECT", "15"]).request(), 16).unwrap(),
        15
    );
    let range = err("ERR DB index is out of range");
    assert_eq!(
        err_of(check_select(&req(&["SELECT", "16"]).request(), 16)),
        range
    );
    assert_eq!(
        err_of(check_select(&req(&["SELECT", "-1"]).request(), 16)),
        range
    );
    assert_eq!(
        err_of(check_select(&req(&["SELECT", "99999999999"]).request(), 16)),
        range
    );
    let not_int = err("ERR value is not an integer or out of range");
    for bad in ["x", "1.5", "01", " 1", ""] {
        assert_eq!(
            err_of(check_select(&req(&["SELECT", bad]).request(), 16)),
            not_int,
            "{bad:?}"
        );
    }
    assert_eq!(
        err_of(check_select(&req(&["SELECT", "1", "2"]).request(), 16)),
        err("ERR wrong number of arguments for 'select' command")
    );
}

#[test]
fn select_sets_the_database_only_when_it_is_valid() {
    let mut c = ClientState::new(true);
    assert_eq!(
        select(&mut c, &req(&["SELECT", "5"]).request(), 16),
        Answer::OK
    );
    assert_eq!(c.db, 5);
    let a = select(&mut c, &req(&["SELECT", "16"]).request(), 16);
    assert_eq!(resp2(&a), err("ERR DB index is out of range"));
    assert_eq!(c.db, 5);
}

#[test]
fn names_are_printable_ascii_without_spaces() {
    assert!(valid_name(b"worker-1").is_ok());
    assert!(valid_name(b"").is_ok());
    assert!(valid_name(b"!~").is_ok());
    let e = err("ERR Client names cannot contain spaces, newlines or special characters.");
    for bad in [&b"a b"[..], b"a\nb", b"a\tb", b"\x7f", "é".as_bytes()] {
        assert_eq!(err_of(valid_name(bad)), e, "{bad:?}");
    }
}

// ------------------------------------------------------------------ AUTH and HELLO

#[test]
fn auth_takes_a_password_or_a_user_and_a_password() {
    let r = req(&["AUTH", "pw"]);
    assert_eq!(
        parse_auth(&r.request()).unwrap(),
        (&b"default"[..], &b"pw"[..])
    );
    let r = req(&["AUTH", "alice", "pw"]);
    assert_eq!(
        parse_auth(&r.request()).unwrap(),
        (&b"alice"[..], &b"pw"[..])
    );
    assert_eq!(
        err_of(parse_auth(&req(&["AUTH", "a", "b", "c"]).request())),
        err("ERR syntax error")
    );
}

#[test]
fn logins_are_checked_against_the_proxy_users_then_redis() {
    let with = users(&[("alice", "secret", false)], None);
    assert!(matches!(login(&with, b"alice", b"secret"), LoginAs::User(u) if u.name == "alice"));
    assert!(matches!(login(&with, b"alice", b"wrong"), LoginAs::Wrong));
    assert!(matches!(login(&with, b"bob", b"secret"), LoginAs::Wrong));
    // Proxy users and Redis's users together: a miss goes to the master.
    let both = users(&[("alice", "secret", false)], Some(true));
    assert!(matches!(
        login(&both, b"alice", b"secret"),
        LoginAs::User(_)
    ));
    assert!(matches!(login(&both, b"bob", b"x"), LoginAs::Redis));
    // No proxy users: Redis's users by default, unchecked when turned off.
    assert!(matches!(
        login(&users(&[], None), b"bob", b"x"),
        LoginAs::Redis
    ));
    assert!(matches!(
        login(&users(&[], Some(false)), b"bob", b"x"),
        LoginAs::Unchecked
    ));
}

#[test]
fn an_unchecked_auth_answers_as_redis_without_passwords() {
    let r = req(&["AUTH", "pw"]);
    assert_eq!(
        resp2(&auth_unchecked(&r.request(), b"default")),
        err("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")
    );
    let r = req(&["AUTH", "default", "pw"]);
    assert_eq!(resp2(&auth_unchecked(&r.request(), b"default")), b"+OK\r\n");
    let r = req(&["AUTH", "bob", "pw"]);
    assert_eq!(
        resp2(&auth_unchecked(&r.request(), b"bob")),
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
}

#[test]
fn hello_parses_the_protocol_then_the_options() {
    let parse = |args: &[&str], resp3| {
        let r = req(args);
        HelloArgs::parse(&r.request(), resp3).map(|h| {
            (
                h.proto,
                h.auth.map(|(u, p)| (u.to_vec(), p.to_vec())),
                h.setname.map(<[u8]>::to_vec),
            )
        })
    };
    assert_eq!(parse(&["HELLO"], false).unwrap(), (2, None, None));
    assert_eq!(parse(&["HELLO"], true).unwrap(), (3, None, None));
    assert_eq!(parse(&["HELLO", "3"], false).unwrap(), (3, None, None));
    assert_eq!(parse(&["HELLO", "2"], true).unwrap(), (2, None, None));
    assert_eq!(
        parse(&["HELLO", "3", "auth", "u", "p", "SetName", "n"], false).unwrap(),
        (3, Some((b"u".to_vec(), b"p".to_vec())), Some(b"n".to_vec()))
    );
    assert_eq!(
        parse(&["HELLO", "2", "SETNAME", "a", "SETNAME", "b"], false).unwrap(),
        (2, None, Some(b"b".to_vec())),
        "the last one counts"
    );
    let noproto = err("NOPROTO unsupported protocol version");
    for v in ["1", "4", "0", "-3"] {
        assert_eq!(err_of(parse(&["HELLO", v], false)), noproto, "{v}");
    }
    let not_int = err("ERR Protocol version is not an integer or out of range");
    for v in ["three", "3.0", "", "03"] {
        assert_eq!(err_of(parse(&["HELLO", v], false)), not_int, "{v:?}");
    }
    // The protocol is checked before the options.
    assert_eq!(err_of(parse(&["HELLO", "4", "bogus"], false)), noproto);
    assert_eq!(
        err_of(parse(&["HELLO", "3", "AUTH", "u"], false)),
        err("ERR Syntax error in HELLO option 'AUTH'"),
        "AUTH needs a user and a password"
    );
    assert_eq!(
        err_of(parse(&["HELLO", "3", "SETNAME"], false)),
        err("ERR Syntax error in HELLO option 'SETNAME'")
    );
    assert_eq!(
        err_of(parse(&["HELLO", "3", "SETNAME", "n", "extra"], false)),
        err("ERR Syntax error in HELLO option 'extra'")
    );
}

#[test]
fn hello_replies_in_the_new_protocol_and_sets_the_name() {
    let mut c = ClientState::new(true);
    let a = hello_reply(&mut c, 7, "7.0.5", 3, Some(b"w1"));
    assert!(c.resp3);
    assert_eq!(&*c.name, "w1");
    let want: &[u8] = b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.0.5\r\n$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:7\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n";
    assert_eq!(a.to_bytes(true), want);
    let a = hello_reply(&mut c, 7, "7.0.5", 2, None);
    assert!(!c.resp3);
    assert_eq!(&*c.name, "w1", "no SETNAME keeps the name");
    assert!(resp2(&a).starts_with(b"*14\r\n$6\r\nserver\r\n"));
}

#[test]
fn hello_checks_authentication_then_the_name() {
    let mut c = ClientState::new(false);
    let a = hello_reply(&mut c, 1, "7.0.0", 3, Some(b"bad name"));
    assert_eq!(
        resp2(&a),
        err("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time")
    );
    let mut c = ClientState::new(true);
    let a = hello_reply(&mut c, 1, "7.0.0", 3, Some(b"bad name"));
    assert_eq!(
        resp2(&a),
        err("ERR Client names cannot contain spaces, newlines or special characters.")
    );
    assert!(!c.resp3, "a refused HELLO leaves the protocol");
    assert_eq!(&*c.name, "");
}

// ------------------------------------------------------------------ PROXY

#[test]
fn proxy_subcommands_and_their_counts() {
    let sub = |args: &[&str]| proxy_sub(&req(args).request());
    assert_eq!(sub(&["PROXY", "status"]).unwrap(), ProxySub::Status);
    assert_eq!(
        sub(&["PROXY", "EXPLAIN", "GET", "k"]).unwrap(),
        ProxySub::Explain
    );
    assert_eq!(sub(&["PROXY", "Config"]).unwrap(), ProxySub::Config);
    assert_eq!(sub(&["PROXY", "help"]).unwrap(), ProxySub::Help);
    assert_eq!(sub(&["PROXY", "help", "more"]).unwrap(), ProxySub::Help);
    for (args, name) in [
        (&["PROXY", "STATUS", "x"][..], "STATUS"),
        (&["PROXY", "explain"][..], "explain"),
        (&["PROXY", "config", "get"][..], "config"),
        (&["PROXY", "nope"][..], "nope"),
        (&["PROXY"][..], ""),
    ] {
        assert_eq!(
            err_of(sub(args)),
            err(&format!(
                "ERR unknown subcommand or wrong number of arguments for '{name}'. Try PROXY HELP."
            ))
        );
    }
}

#[test]
fn proxy_config_is_for_admins() {
    let noperm = err("NOPERM this user has no permissions to run the 'proxy|config' command");
    let mut c = ClientState::new(true);
    assert!(proxy_config_allowed(&c, false).is_ok(), "the default user");
    let list = users(&[("admin", "a", true), ("app", "b", false)], None);
    c.user = list.by_name("admin");
    assert!(proxy_config_allowed(&c, true).is_ok());
    c.user = list.by_name("app");
    assert_eq!(err_of(proxy_config_allowed(&c, true)), noperm);
    let login = Arc::new(BackendLogin {
        user: "bob".into(),
        password: Secret::new("pw"),
    });
    c.user = Some(Arc::new(User::redis(login, Vec::new())));
    assert!(
        proxy_config_allowed(&c, false).is_ok(),
        "no proxy users set"
    );
    assert_eq!(err_of(proxy_config_allowed(&c, true)), noperm);
}

#[test]
fn proxy_help_is_an_array_of_lines() {
    let Value::Array(lines) = proxy_help() else {
        panic!("not an array");
    };
    assert_eq!(lines.len(), introspect::HELP.len());
    assert!(lines.iter().all(|l| matches!(l, Value::Simple(_))));
}

// ------------------------------------------------------------------ CLIENT

#[test]
fn client_id_and_names() {
    assert_eq!(resp2(&client_id(42)), b":42\r\n");
    let mut c = ClientState::new(true);
    assert_eq!(resp2(&client_getname(&c)), b"$-1\r\n");
    assert_eq!(client_getname(&c).to_bytes(true), b"_\r\n");
    let a = client_setname(&mut c, &req(&["CLIENT", "SETNAME", "w1"]).request());
    assert_eq!(a, Answer::OK);
    assert_eq!(resp2(&client_getname(&c)), b"$2\r\nw1\r\n");
    let a = client_setname(&mut c, &req(&["CLIENT", "SETNAME", "with space"]).request());
    assert_eq!(
        resp2(&a),
        err("ERR Client names cannot contain spaces, newlines or special characters.")
    );
    assert_eq!(&*c.name, "w1", "a refused name leaves the name");
    let a = client_setname(&mut c, &req(&["CLIENT", "SETNAME", ""]).request());
    assert_eq!(a, Answer::OK);
    assert_eq!(
        resp2(&client_getname(&c)),
        b"$-1\r\n",
        "an empty name clears it"
    );
}

#[test]
fn client_reply_modes() {
    let mut c = ClientState::new(true);
    let mode =
        |c: &mut ClientState, m: &str| client_reply(c, &req(&["CLIENT", "REPLY", m]).request());
    assert_eq!(mode(&mut c, "off"), Answer::None);
    assert_eq!(c.reply, ReplyMode::Off);
    assert_eq!(mode(&mut c, "Skip"), Answer::None);
    assert_eq!(c.reply, ReplyMode::Skip);
    assert_eq!(mode(&mut c, "ON"), Answer::OK);
    assert_eq!(c.reply, ReplyMode::On);
    c.reply = ReplyMode::Off;
    assert_eq!(resp2(&mode(&mut c, "maybe")), err("ERR syntax error"));
    assert_eq!(c.reply, ReplyMode::Off, "a wrong mode changes nothing");
}

#[test]
fn client_flags_and_caching() {
    for v in ["on", "OFF"] {
        assert_eq!(
            client_flag(&req(&["CLIENT", "NO-EVICT", v]).request()),
            Answer::OK
        );
    }
    assert_eq!(
        resp2(&client_flag(&req(&["CLIENT", "NO-TOUCH", "yes"]).request())),
        err("ERR syntax error")
    );
    assert_eq!(
        resp2(&client_caching()),
        err("ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled")
    );
}

#[test]
fn client_list_filters() {
    let list = |args: &[&str]| ListFilter::parse(&req(args).request());
    assert_eq!(list(&["CLIENT", "LIST"]).unwrap(), ListFilter::default());
    assert_eq!(
        list(&["CLIENT", "LIST", "type", "NORMAL"]).unwrap().ty,
        Some("normal")
    );
    assert_eq!(
        list(&["CLIENT", "LIST", "TYPE", "pubsub"]).unwrap().ty,
        Some("pubsub")
    );
    for t in ["master", "slave", "replica"] {
        assert_eq!(
            list(&["CLIENT", "LIST", "TYPE", t]).unwrap().ty,
            Some("replica")
        );
    }
    assert_eq!(
        err_of(list(&["CLIENT", "LIST", "TYPE", "wrong"])),
        err("ERR Unknown client type 'wrong'")
    );
    let f = list(&["CLIENT", "LIST", "ID", "3", "1", "3", "-2"]).unwrap();
    assert_eq!(f.ids, Some(vec![3, 1, 3, -2]));
    assert_eq!(
        f.order(),
        Some(vec![3, 1, 3]),
        "asked order, once per mention"
    );
    assert_eq!(list(&["CLIENT", "LIST"]).unwrap().order(), None);
    assert_eq!(
        err_of(list(&["CLIENT", "LIST", "ID", "1", "x"])),
        err("ERR Invalid client ID")
    );
    let syntax = err("ERR syntax error");
    for args in [
        &["CLIENT", "LIST", "TYPE"][..],
        &["CLIENT", "LIST", "ID"][..],
        &["CLIENT", "LIST", "TYPE", "normal", "x"][..],
        &["CLIENT", "LIST", "bogus", "1"][..],
    ] {
        assert_eq!(err_of(list(args)), syntax, "{args:?}");
    }
    let mut c = ClientState::new(true);
    let pubsub = list(&["CLIENT", "LIST", "TYPE", "pubsub"]).unwrap();
    assert!(!pubsub.matches(&c));
    assert!(list(&["CLIENT", "LIST"]).unwrap().matches(&c));
    c.flags = b'P';
    assert!(pubsub.matches(&c));
}

/// `CLIENT KILL`'s filter, every user known but `ghost`.
fn kill(args: &[&str]) -> Result<KillFilter, Value> {
    KillFilter::parse(&req(args).request(), |u| u != "ghost")
}

#[test]
fn client_kill_old_form_takes_an_address() {
    let f = kill(&["CLIENT", "KILL", "127.0.0.1:5000"]).unwrap();
    assert!(f.old_form);
    assert_eq!(f.addr.as_deref(), Some("127.0.0.1:5000"));
    let c = ClientState::new(true);
    assert!(
        f.matches(7, 7, &"127.0.0.1:5000", &"x", &c),
        "it may kill the caller"
    );
    assert!(!f.matches(7, 8, &"127.0.0.1:5001", &"x", &c));
    assert_eq!(f.reply(1), Answer::OK);
    assert_eq!(resp2(&f.reply(0)), err("ERR No such client"));
}

#[test]
fn client_kill_filters_are_parsed() {
    let f = kill(&[
        "CLIENT", "KILL", "id", "5", "TYPE", "pubsub", "addr", "a:1", "LADDR", "b:2", "user",
        "alice", "skipme", "NO",
    ])
    .unwrap();
    assert_eq!(
        f,
        KillFilter {
            id: Some(5),
            ty: Some("pubsub"),
            addr: Some("a:1".into()),
            laddr: Some("b:2".into()),
            user: Some("alice".into()),
            skipme: false,
            old_form: false,
        }
    );
    assert!(kill(&["CLIENT", "KILL", "SKIPME", "yes"]).unwrap().skipme);
    assert_eq!(
        kill(&["CLIENT", "KILL", "TYPE", "slave"]).unwrap().ty,
        Some("replica")
    );
    assert_eq!(resp2(&f.reply(0)), b":0\r\n", "the new form counts");
    assert_eq!(resp2(&f.reply(2)), b":2\r\n");
}

#[test]
fn client_kill_errors_in_redis_order() {
    let positive = err("ERR client-id should be greater than 0");
    for id in ["0", "-1", "x"] {
        assert_eq!(
            err_of(kill(&["CLIENT", "KILL", "ID", id])),
            positive,
            "{id}"
        );
    }
    assert_eq!(
        err_of(kill(&["CLIENT", "KILL", "TYPE", "wrong"])),
        err("ERR Unknown client type 'wrong'")
    );
    assert_eq!(
        err_of(kill(&["CLIENT", "KILL", "USER", "ghost"])),
        err("ERR No such user 'ghost'")
    );
    let syntax = err("ERR syntax error");
    assert_eq!(err_of(kill(&["CLIENT", "KILL", "SKIPME", "maybe"])), syntax);
    assert_eq!(err_of(kill(&["CLIENT", "KILL", "bogus", "1"])), syntax);
    assert_eq!(
        err_of(kill(&["CLIENT", "KILL", "ID", "1", "TYPE"])),
        syntax,
        "an odd count is a syntax error"
    );
    // The first wrong filter is the error; a trailing one is reached only after.
    assert_eq!(
        err_of(kill(&["CLIENT", "KILL", "ID", "0", "TYPE", "wrong"])),
        positive
    );
    assert_eq!(
        err_of(kill(&["CLIENT", "KILL", "TYPE", "wrong", "ID", "1", "x"])),
        err("ERR Unknown client type 'wrong'")
    );
    assert_eq!(err_of(kill(&["CLIENT", "KILL", "ID", "3", "x"])), syntax);
}

#[test]
fn client_kill_matches_every_filter_given() {
    let mut c = ClientState::new(true);
    let any = kill(&["CLIENT", "KILL", "SKIPME", "yes"]).unwrap();
    assert!(any.matches(1, 2, &"a:1", &"b:2", &c));
    assert!(
        !any.matches(1, 1, &"a:1", &"b:2", &c),
        "SKIPME spares the caller"
    );
    let me_too = kill(&["CLIENT", "KILL", "SKIPME", "no"]).unwrap();
    assert!(me_too.matches(1, 1, &"a:1", &"b:2", &c));
    let by_id = kill(&["CLIENT", "KILL", "ID", "2"]).unwrap();
    assert!(by_id.matches(1, 2, &"a:1", &"b:2", &c));
    assert!(!by_id.matches(1, 3, &"a:1", &"b:2", &c));
    let by_addr = kill(&["CLIENT", "KILL", "ADDR", "a:1", "LADDR", "b:2"]).unwrap();
    assert!(by_addr.matches(1, 2, &"a:1", &"b:2", &c));
    assert!(!by_addr.matches(1, 2, &"a:1", &"b:3", &c));
    assert!(!by_addr.matches(1, 2, &"a:9", &"b:2", &c));
    let by_type = kill(&["CLIENT", "KILL", "TYPE", "pubsub"]).unwrap();
    assert!(!by_type.matches(1, 2, &"a:1", &"b:2", &c));
    c.flags = b'P';
    assert!(by_type.matches(1, 2, &"a:1", &"b:2", &c));
    let by_user = kill(&["CLIENT", "KILL", "USER", "alice"]).unwrap();
    assert!(!by_user.matches(1, 2, &"a:1", &"b:2", &c));
    c.user = users(&[("alice", "pw", false)], None).by_name("alice");
    assert!(by_user.matches(1, 2, &"a:1", &"b:2", &c));
    let default = kill(&["CLIENT", "KILL", "USER", "default"]).unwrap();
    assert!(default.matches(1, 2, &"a:1", &"b:2", &ClientState::new(true)));
}

#[test]
fn client_unblock_arguments() {
    let r = req(&["CLIENT", "UNBLOCK", "12"]);
    let u = Unblock::parse(&r.request()).unwrap();
    assert_eq!((u.id, u.reason), (12, None));
    assert_eq!(u.target(3), Some(12));
    assert_eq!(u.target(12), None, "never the caller");
    let r = req(&["CLIENT", "UNBLOCK", "-4", "error"]);
    let u = Unblock::parse(&r.request()).unwrap();
    assert_eq!((u.id, u.reason), (-4, Some(&b"error"[..])));
    assert_eq!(u.target(3), None);
    let r = req(&["CLIENT", "UNBLOCK", "1", "TIMEOUT"]);
    assert_eq!(
        Unblock::parse(&r.request()).unwrap().reason,
        Some(&b"TIMEOUT"[..])
    );
    assert_eq!(
        err_of(Unblock::parse(
            &req(&["CLIENT", "UNBLOCK", "x", "nope"]).request()
        )),
        err("ERR value is not an integer or out of range"),
        "the id is checked first"
    );
    assert_eq!(
        err_of(Unblock::parse(
            &req(&["CLIENT", "UNBLOCK", "1", "nope"]).request()
        )),
        err("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR")
    );
}

#[test]
fn tracking_redirect_argument() {
    let at = |args: &[&str]| redirect_arg(&req(args).request());
    assert_eq!(
        at(&["CLIENT", "TRACKING", "on", "REDIRECT", "9"]),
        Some((4, 9))
    );
    assert_eq!(
        at(&["CLIENT", "TRACKING", "on", "BCAST", "redirect", "-1"]),
        Some((5, -1))
    );
    assert_eq!(at(&["CLIENT", "TRACKING", "on"]), None);
    assert_eq!(at(&["CLIENT", "TRACKING", "on", "REDIRECT"]), None);
    assert_eq!(at(&["CLIENT", "TRACKING", "on", "REDIRECT", "x"]), None);
    let e = redirect_unreachable(5);
    assert!(
        e.starts_with("ERR redsplit: ") && e.contains("client 5 "),
        "{e}"
    );
    assert_eq!(
        NO_REDIRECT_TARGET,
        "ERR The client ID you want redirect to does not exist"
    );
}
