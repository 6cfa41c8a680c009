use super::keys::atoi;
use super::*;
use crate::protocol::OwnedRequest;
use proptest::prelude::*;

/// Run `f` on the request made of the words of `line` (`""` is an empty argument).
fn with_req<R>(line: &str, f: impl FnOnce(&Request) -> R) -> R {
    let words: Vec<&[u8]> = line
        .split_whitespace()
        .map(|w| if w == "\"\"" { &b""[..] } else { w.as_bytes() })
        .collect();
    f(&OwnedRequest::new(words).request())
}

fn cmd(name: &str) -> &'static Command {
    lookup_name(name.as_bytes()).unwrap_or_else(|| panic!("{name} not in the table"))
}

/// The key arguments `for_each_key` finds in `line`.
fn keys(line: &str) -> Vec<String> {
    with_req(line, |req| {
        let c = lookup(req).unwrap_or_else(|| panic!("no command for {line:?}"));
        let mut out = Vec::new();
        for_each_key(c, req, |i| {
            out.push(String::from_utf8_lossy(req.arg(i)).into_owned())
        });
        out
    })
}

fn class_of(line: &str) -> Class {
    with_req(line, |req| {
        lookup(req)
            .map(|c| c.class)
            .unwrap_or_else(|| panic!("unknown: {line}"))
    })
}

#[test]
fn table_is_sorted_lowercase_and_nested() {
    let t = table();
    assert!(t.len() > 200, "table has {} commands", t.len());
    for w in t.windows(2) {
        assert!(w[0].name < w[1].name, "{} before {}", w[0].name, w[1].name);
    }
    for c in t {
        assert_eq!(c.name, c.name.to_ascii_lowercase());
        assert!(!c.name.contains('|'));
        for w in c.subcommands.windows(2) {
            assert!(w[0].name < w[1].name);
        }
        for s in c.subcommands {
            assert!(s.name.starts_with(&format!("{}|", c.name)), "{}", s.name);
            assert!(s.subcommands.is_empty());
        }
    }
}

#[test]
fn lookup_is_case_insensitive_and_resolves_subcommands() {
    for line in ["get k", "GET k", "gEt k"] {
        with_req(line, |r| assert_eq!(lookup(r).map(|c| c.name), Some("get")));
    }
    with_req("CLIENT SETNAME x", |r| {
        assert_eq!(lookup(r).map(|c| c.name), Some("client|setname"))
    });
    with_req("object Encoding k", |r| {
        assert_eq!(lookup(r).map(|c| c.name), Some("object|encoding"))
    });
    with_req("xinfo STREAM s", |r| {
        assert_eq!(lookup(r).map(|c| c.name), Some("xinfo|stream"))
    });
    // A container named alone is the container; an unknown subcommand is unknown.
    with_req("CONFIG", |r| {
        assert_eq!(lookup(r).map(|c| c.name), Some("config"))
    });
    with_req("CONFIG BOGUS", |r| assert!(lookup(r).is_none()));
    with_req("NOSUCHCOMMAND a", |r| assert!(lookup(r).is_none()));
    with_req("", |r| assert!(lookup(r).is_none()));
    // Prefixes and extensions of names are not names.
    with_req("ge k", |r| assert!(lookup(r).is_none()));
    with_req("gets k", |r| assert!(lookup(r).is_none()));

    assert_eq!(
        lookup_name(b"CLIENT|SetName").map(|c| c.name),
        Some("client|setname")
    );
    assert_eq!(lookup_name(b"get").map(|c| c.name), Some("get"));
    assert!(lookup_name(b"get|x").is_none());
    assert!(lookup_name(b"client|").is_none());
    assert!(lookup_name(b"|").is_none());
    assert!(lookup_name(b"").is_none());
    // Every top-level name of the table, in three cases; and
    // the name with a NUL or a letter more or less is no command.
    for c in table::COMMANDS {
        let upper = c.name.to_ascii_uppercase();
        let mixed: String = c
            .name
            .chars()
            .enumerate()
            .map(|(i, ch)| {
                if i % 2 == 0 {
                    ch.to_ascii_uppercase()
                } else {
                    ch
                }
            })
            .collect();
        for n in [c.name, upper.as_str(), mixed.as_str()] {
            assert_eq!(
                lookup_top(n.as_bytes()).map(|f| f.name),
                Some(c.name),
                "{n}"
            );
        }
        let with_nul = [c.name.as_bytes(), b"\0"].concat();
        let longer = [c.name.as_bytes(), b"x"].concat();
        for n in [
            &with_nul[..],
            &longer[..],
            &c.name.as_bytes()[..c.name.len() - 1],
        ] {
            let found = lookup_top(n).map(|f| f.name.as_bytes());
            assert!(
                found.is_none() || found == Some(n),
                "{:?}",
                String::from_utf8_lossy(n)
            );
        }
    }
    assert!(is_known_name("SHUTDOWN"));
    assert!(is_known_name("client|kill"));
    assert!(is_known_name("config"));
    assert!(!is_known_name("shutdwn"));
}

#[test]
fn classes_follow_flags() {
    for line in [
        "GETSET k v",
        "GETDEL k",
        "GETEX k",
        "SORT k",
        "GEORADIUS k 0 0 1 km",
        "GEORADIUSBYMEMBER k m 1 km",
        "SET k v GET",
        "SET k v",
        "EVAL s 0",
        "FCALL f 0",
        "XREADGROUP GROUP g c STREAMS s >",
    ] {
        assert_eq!(class_of(line), Class::Write, "{line}");
    }
    for line in [
        "SORT_RO k",
        "GEORADIUS_RO k 0 0 1 km",
        "GEORADIUSBYMEMBER_RO k m 1 km",
        "EVAL_RO s 0",
        "EVALSHA_RO s 0",
        "FCALL_RO f 0",
        "GET k",
        "MGET a b",
        "SCAN 0",
        "KEYS *",
        "XREAD STREAMS s 0",
        "OBJECT ENCODING k",
        "XINFO STREAM s",
        "MEMORY USAGE k",
        "ZRANGE z 0 -1",
    ] {
        assert_eq!(class_of(line), Class::Read, "{line}");
    }
    for line in ["MULTI", "EXEC", "DISCARD", "WATCH k", "UNWATCH"] {
        assert_eq!(class_of(line), Class::Transaction, "{line}");
    }
    for line in [
        "AUTH pw",
        "HELLO 3",
        "SELECT 1",
        "PING",
        "ECHO x",
        "QUIT",
        "RESET",
        "CLIENT SETNAME n",
        "CLIENT TRACKING on",
        "CLIENT KILL ID 1",
    ] {
        assert_eq!(class_of(line), Class::Connection, "{line}");
    }
    for line in [
        "SUBSCRIBE c",
        "PUBLISH c m",
        "PSUBSCRIBE p",
        "SPUBLISH c m",
        "PUBSUB CHANNELS",
    ] {
        assert_eq!(class_of(line), Class::PubSub, "{line}");
    }
    for line in [
        "CONFIG SET a b",
        "CONFIG GET a",
        "SHUTDOWN",
        "DEBUG SLEEP 0",
        "MONITOR",
        "REPLICAOF NO ONE",
    ] {
        assert_eq!(class_of(line), Class::Admin, "{line}");
    }
    // Every class comes from the one rule the generator applied.
    for c in table() {
        assert_eq!(c.class, classify(c.name, c.flags), "{}", c.name);
        for s in c.subcommands {
            assert_eq!(s.class, classify(s.name, s.flags), "{}", s.name);
        }
    }
}

#[test]
fn flags_come_through() {
    assert!(cmd("get")
        .flags
        .contains(Flags::READONLY.union(Flags::FAST)));
    assert!(cmd("set")
        .flags
        .contains(Flags::WRITE.union(Flags::DENYOOM)));
    assert!(cmd("blpop").flags.contains(Flags::BLOCKING));
    assert!(cmd("eval")
        .flags
        .contains(Flags::MOVABLE_KEYS.union(Flags::NO_MANDATORY_KEYS)));
    assert!(cmd("auth").flags.contains(Flags::NO_AUTH));
    assert!(cmd("shutdown").flags.contains(Flags::NO_MULTI));
    assert!(!cmd("get").flags.contains(Flags::WRITE));
    assert_eq!(cmd("get").arity, 2);
    assert_eq!(cmd("client|setname").arity, 3);
    assert_eq!(
        cmd("get").key_specs,
        &[KeySpec {
            flags: KeyFlags::RO.union(KeyFlags::ACCESS),
            begin_search: BeginSearch::Index(1),
            find_keys: FindKeys::Range {
                lastkey: 0,
                keystep: 1,
                limit: 0
            },
        }]
    );
}

#[test]
fn every_command_whose_specs_can_fail_has_a_procedure() {
    let mut all: Vec<&Command> = Vec::new();
    for c in table() {
        all.push(c);
        all.extend(c.subcommands.iter());
    }
    for c in all {
        let needs = c.flags.contains(Flags::MOVABLE_KEYS)
            || c.key_specs.iter().any(|s| {
                s.flags.contains(KeyFlags::INCOMPLETE)
                    || s.flags.contains(KeyFlags::VARIABLE_FLAGS)
                    || s.begin_search == BeginSearch::Unknown
                    || s.find_keys == FindKeys::Unknown
            });
        assert_eq!(needs, c.getkeys_proc != GetKeysProc::None, "{}", c.name);
    }
}

#[test]
fn arity() {
    assert!(arity_ok(cmd("get"), 2));
    assert!(!arity_ok(cmd("get"), 1));
    assert!(!arity_ok(cmd("get"), 3));
    assert!(arity_ok(cmd("mset"), 3));
    assert!(arity_ok(cmd("mset"), 99));
    assert!(!arity_ok(cmd("mset"), 2));
    assert!(arity_ok(cmd("client|setname"), 3));
    assert!(!arity_ok(cmd("client"), 1));
    assert!(!arity_ok(cmd("get"), usize::MAX));
    assert!(arity_ok(cmd("mset"), usize::MAX));
}

#[test]
fn blocking() {
    let blocks = |line: &str| with_req(line, |r| is_blocking(lookup(r).unwrap(), r));
    for line in [
        "BLPOP a 0",
        "BRPOP a b 1",
        "BLMOVE a b LEFT RIGHT 0",
        "BRPOPLPUSH a b 0",
        "BLMPOP 0 1 a LEFT",
        "BZPOPMIN z 0",
        "BZPOPMAX z 0",
        "BZMPOP 0 1 z MIN",
        "WAIT 1 0",
        "XREAD BLOCK 0 STREAMS s $",
        "xread block 100 count 1 streams s $",
        "XREAD COUNT 1 BLOCK 10 STREAMS s $",
        "XREADGROUP GROUP g c BLOCK 0 STREAMS s >",
        "XREADGROUP GROUP g c NOACK Block 0 STREAMS s >",
    ] {
        assert!(blocks(line), "{line}");
    }
    for line in [
        "XREAD STREAMS s $",
        "XREAD COUNT 1 STREAMS s $",
        "XREAD STREAMS block 0",
        "XREAD COUNT block STREAMS s $",
        "XREAD BLOCK",
        "XREADGROUP GROUP block c STREAMS s >",
        "XREAD BOGUS BLOCK 0 STREAMS s $",
        "GET k",
        "LPOP a",
        "SUBSCRIBE c",
    ] {
        assert!(!blocks(line), "{line}");
    }
}

#[test]
fn keys_of_common_shapes() {
    assert_eq!(keys("GET k"), ["k"]);
    assert_eq!(keys("MSET a 1 b 2"), ["a", "b"]);
    assert_eq!(keys("MGET a b c"), ["a", "b", "c"]);
    assert_eq!(keys("EVAL s 2 a b x"), ["a", "b"]);
    assert!(keys("EVAL s 0 x").is_empty());
    assert!(keys("EVAL s 3 a b").is_empty());
    assert!(keys("EVAL s -1 a b").is_empty());
    // A count Redis's strict parser rejects is read by its lenient fallback.
    assert_eq!(keys("EVAL s 1x a"), ["a"]);
    assert_eq!(keys("ZUNIONSTORE d 2 a b"), ["d", "a", "b"]);
    assert_eq!(keys("ZUNIONSTORE d 1x a"), ["a", "d"]);
    assert_eq!(keys("XREAD COUNT 2 STREAMS a b 0 0"), ["a", "b"]);
    assert_eq!(keys("XREADGROUP GROUP g c STREAMS a >"), ["a"]);
    assert_eq!(keys("SORT k BY w GET o STORE d"), ["k", "d"]);
    assert_eq!(keys("SORT k STORE d1 STORE d2"), ["k", "d2"]);
    assert_eq!(keys("GEORADIUS k 0 0 1 km STORE d"), ["k", "d"]);
    assert_eq!(keys("MIGRATE h 1 k 0 5"), ["k"]);
    assert_eq!(keys("MIGRATE h 1 \"\" 0 5 AUTH2 u p KEYS a b"), ["a", "b"]);
    assert_eq!(keys("OBJECT ENCODING k"), ["k"]);
    assert_eq!(keys("LMPOP 2 a b LEFT"), ["a", "b"]);
    assert!(keys("SPUBLISH c m").is_empty());
    assert!(keys("PING").is_empty());
}

#[test]
fn atoi_reads_like_c() {
    assert_eq!(atoi(b"12"), 12);
    assert_eq!(atoi(b" \t+3x"), 3);
    assert_eq!(atoi(b"-7"), -7);
    assert_eq!(atoi(b"x1"), 0);
    assert_eq!(atoi(b""), 0);
    assert_eq!(atoi(b"4294967297"), 1);
    assert_eq!(atoi(b"99999999999999999999"), -1);
}

/// A `COMMAND INFO` entry for a module command with one key spec.
fn module_entry(name: &str, flags: &[&str]) -> OwnedFrame {
    let s = |v: &str| OwnedFrame::BulkString(v.as_bytes().to_vec());
    let st = |v: &str| OwnedFrame::SimpleString(v.as_bytes().to_vec());
    let i = OwnedFrame::Integer;
    let a = OwnedFrame::Array;
    a(vec![
        s(name),
        i(-2),
        a(flags.iter().map(|f| st(f)).collect()),
        i(1),
        i(1),
        i(1),
        a(vec![st("@module")]),
        a(vec![]),
        a(vec![a(vec![
            s("flags"),
            a(vec![st("RO"), st("access"), st("some_future_flag")]),
            s("begin_search"),
            a(vec![
                s("type"),
                s("index"),
                s("spec"),
                a(vec![s("index"), i(1)]),
            ]),
            s("find_keys"),
            a(vec![
                s("type"),
                s("range"),
                s("spec"),
                a(vec![
                    s("lastkey"),
                    i(0),
                    s("keystep"),
                    i(1),
                    s("limit"),
                    i(0),
                ]),
            ]),
        ])]),
        a(vec![]),
    ])
}

#[test]
fn module_commands_register_at_run_time() {
    let reply = OwnedFrame::Array(vec![
        module_entry(
            "TestMod.Get",
            &["readonly", "module", "fast", "a_flag_from_the_future"],
        ),
        OwnedFrame::Null,
        module_entry("testmod.set", &["write", "module"]),
        // Known already: skipped.
        module_entry("get", &["readonly"]),
    ]);
    assert_eq!(register_from_command_info(&reply), Ok(2));
    assert_eq!(register_from_command_info(&reply), Ok(0));
    let get = lookup_name(b"TESTMOD.GET").unwrap();
    assert_eq!(get.name, "testmod.get");
    assert_eq!(get.class, Class::Read);
    assert!(get.flags.contains(Flags::MODULE.union(Flags::FAST)));
    assert_eq!(lookup_name(b"testmod.set").unwrap().class, Class::Write);
    assert!(is_known_name("testmod.set"));
    assert_eq!(keys("testmod.get thekey"), ["thekey"]);
    assert!(keys("testmod.get").is_empty());
    assert_eq!(
        lookup_name(b"get").unwrap().flags,
        table().iter().find(|c| c.name == "get").unwrap().flags
    );

    assert!(register_from_command_info(&OwnedFrame::Integer(1)).is_err());
    assert!(
        register_from_command_info(&OwnedFrame::Array(vec![OwnedFrame::Array(vec![])])).is_err()
    );
    let long = "m".repeat(MAX_DYNAMIC_NAME + 1);
    assert_eq!(
        register_from_command_info(&OwnedFrame::Array(vec![module_entry(&long, &[])])),
        Ok(0)
    );
}

#[test]
fn legacy_range_of_module_commands() {
    static SPECLESS: Command = Command {
        name: "m.mset",
        arity: -3,
        flags: Flags::MODULE,
        class: Class::Write,
        first_key: 1,
        last_key: -1,
        key_step: 2,
        key_specs: &[],
        getkeys_proc: GetKeysProc::None,
        subcommands: &[],
    };
    let got = |line: &str| {
        with_req(line, |r| {
            let mut v = Vec::new();
            for_each_key(&SPECLESS, r, |i| v.push(i));
            v
        })
    };
    assert_eq!(got("m.mset a 1 b 2"), [1, 3]);
    assert_eq!(got("m.mset a 1 b"), [1, 3]);
    assert!(got("m.mset").is_empty());
}

/// Words that steer key finding: option names, counts good and bad, and plain words.
fn word() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(vec![
            "STORE",
            "storedist",
            "BY",
            "GET",
            "LIMIT",
            "KEYS",
            "AUTH",
            "AUTH2",
            "COPY",
            "REPLACE",
            "BLOCK",
            "count",
            "GROUP",
            "NOACK",
            "STREAMS",
            "0",
            "1",
            "2",
            "3",
            "-1",
            "-2147483648",
            "2147483647",
            "4294967297",
            "9223372036854775807",
            "99999999999999999999",
            "1x",
            " 2",
            "+1",
            "01",
            "",
            ">",
            "$",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..6),
    ]
}

fn any_command_name() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let mut names: Vec<Vec<Vec<u8>>> = Vec::new();
    for c in table() {
        names.push(vec![c.name.as_bytes().to_vec()]);
        for s in c.subcommands {
            let (top, sub) = s.name.split_once('|').unwrap();
            names.push(vec![
                top.to_uppercase().into_bytes(),
                sub.as_bytes().to_vec(),
            ]);
        }
    }
    prop_oneof![
        prop::sample::select(names),
        prop::collection::vec(any::<u8>(), 0..8).prop_map(|n| vec![n]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn random_requests_never_panic_or_leave_the_arguments(
        name in any_command_name(),
        rest in prop::collection::vec(word(), 0..12),
    ) {
        let args: Vec<&[u8]> = name.iter().chain(rest.iter()).map(Vec::as_slice).collect();
        let owned = OwnedRequest::new(args);
        let req = owned.request();
        if let Some(c) = lookup(&req) {
            let mut n = 0;
            for_each_key(c, &req, |i| {
                n += 1;
                assert!(i < req.argc() && i > 0, "{} yielded {i} of {}", c.name, req.argc());
            });
            prop_assert!(n <= req.argc());
            let _ = is_blocking(c, &req);
            let _ = arity_ok(c, req.argc());
            // Any command's key finding, applied to any request, stays in range.
            for other in [cmd("eval"), cmd("sort"), cmd("migrate"), cmd("xreadgroup"), cmd("georadius"), cmd("zunionstore"), cmd("bzmpop")] {
                for_each_key(other, &req, |i| assert!(i < req.argc()));
                let _ = is_blocking(other, &req);
            }
        }
    }
}
