//! The command table against a real `redis-server`: the checked-in table is what the
//! generator renders from the server's `COMMAND` reply, and the keys `for_each_key`
//! finds are the keys `COMMAND GETKEYS` reports.

use crate::common::RedisServer;

use redsplit::commands::{self, gen};
use redsplit::protocol::OwnedRequest;

/// The keys `for_each_key` finds in `args`, by name; `None` if the command is unknown.
/// Also checks that every index is inside the request.
fn our_keys(args: &[Vec<u8>]) -> Option<Vec<Vec<u8>>> {
    let owned = OwnedRequest::new(args);
    let req = owned.request();
    let cmd = commands::lookup(&req)?;
    let mut out = Vec::new();
    commands::for_each_key(cmd, &req, |i| {
        assert!(
            i < req.argc(),
            "{}: key index {i} of {} arguments",
            cmd.name,
            req.argc()
        );
        out.push(req.arg(i).to_vec());
    });
    let _ = commands::is_blocking(cmd, &req);
    Some(out)
}

/// What `COMMAND GETKEYS` says of `args`: the key names, or Redis's error.
fn server_keys(con: &mut redis::Connection, args: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, String> {
    redis::cmd("COMMAND")
        .arg("GETKEYS")
        .arg(args)
        .query::<Vec<Vec<u8>>>(con)
        .map_err(|e| e.to_string())
}

fn show(args: &[Vec<u8>]) -> String {
    args.iter()
        .map(|a| format!("{:?}", String::from_utf8_lossy(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Compare with the server; true if the server said which keys (possibly none) the
/// invocation has. Of Redis's errors, "Invalid arguments specified" means its key finding
/// found none, "no key arguments" that the command has none, and "Invalid command" that
/// it is unknown; only a wrong argument count says nothing about keys.
fn compare(con: &mut redis::Connection, args: &[Vec<u8>]) -> bool {
    let ours = our_keys(args);
    let theirs = match server_keys(con, args) {
        Ok(keys) => keys,
        Err(e) if e.contains("Invalid arguments specified") || e.contains("no key arguments") => {
            Vec::new()
        }
        Err(e) if e.contains("Invalid command specified") => {
            assert!(
                ours.is_none(),
                "server does not know {} but the table does",
                show(args)
            );
            return true;
        }
        // COMMAND GETKEYS itself needs a command and at least one argument.
        Err(e)
            if e.contains("Invalid number of arguments")
                || e.contains("wrong number of arguments") =>
        {
            return false
        }
        Err(e) => panic!("COMMAND GETKEYS {}: unexpected error {e}", show(args)),
    };
    let ours = ours.unwrap_or_else(|| panic!("server knows {} but the table does not", show(args)));
    assert_eq!(
        ours.iter()
            .map(|k| String::from_utf8_lossy(k))
            .collect::<Vec<_>>(),
        theirs
            .iter()
            .map(|k| String::from_utf8_lossy(k))
            .collect::<Vec<_>>(),
        "keys of {}",
        show(args)
    );
    true
}

#[test]
fn checked_in_table_is_what_the_server_reports() {
    let server = RedisServer::start();
    let reply = gen::fetch_command(&server.addr().to_string()).expect("COMMAND");
    let rendered = gen::render(&reply).expect("render COMMAND reply");
    let checked_in = include_str!("../../src/commands/table.rs");
    if rendered != checked_in {
        let out = std::env::temp_dir().join("redsplit-command-table.rs");
        let _ = std::fs::write(&out, &rendered);
        let line = rendered
            .lines()
            .zip(checked_in.lines())
            .position(|(a, b)| a != b)
            .map_or_else(|| "the end".to_string(), |n| format!("line {}", n + 1));
        panic!(
            "src/commands/table.rs differs from this server's COMMAND reply (first at {line}); \
             the rendering is in {}. Regenerate with \
             `cargo run --example gen_commands -- HOST:PORT > src/commands/table.rs`",
            out.display()
        );
    }

    let mut con = server.conn();
    let listed: Vec<String> = redis::cmd("COMMAND")
        .arg("LIST")
        .query(&mut con)
        .expect("COMMAND LIST");
    assert!(
        listed.len() > 300,
        "COMMAND LIST gave {} names",
        listed.len()
    );
    for name in &listed {
        let c = commands::lookup_name(name.as_bytes())
            .unwrap_or_else(|| panic!("{name} missing from the table"));
        assert_eq!(c.name, name.to_ascii_lowercase());
        assert!(commands::is_known_name(name));
    }
    let count: usize = redis::cmd("COMMAND")
        .arg("COUNT")
        .query(&mut con)
        .expect("COMMAND COUNT");
    assert_eq!(commands::table().len(), count);
}

/// Invocations covering every key-spec shape and every key-finding procedure.
const CORPUS: &[&[&str]] = &[
    // One key at a fixed index.
    &["GET", "k1"],
    &["SET", "k1", "v"],
    &["SET", "k1", "v", "GET"],
    &["SET", "k1", "v", "EX", "10", "GET"],
    &["GETSET", "k1", "v"],
    &["GETDEL", "k1"],
    &["GETEX", "k1", "EX", "10"],
    &["INCR", "k1"],
    &["APPEND", "k1", "v"],
    &["SETRANGE", "k1", "0", "v"],
    &["GETRANGE", "k1", "0", "1"],
    &["TTL", "k1"],
    &["EXPIRE", "k1", "10"],
    &["TYPE", "k1"],
    &["DUMP", "k1"],
    &["RESTORE", "k1", "0", "payload"],
    &["MOVE", "k1", "1"],
    &["HSET", "h1", "f", "v", "f2", "v2"],
    &["HGET", "h1", "f"],
    &["HSCAN", "h1", "0"],
    &["LPUSH", "l1", "a", "b"],
    &["LRANGE", "l1", "0", "-1"],
    &["LPOS", "l1", "a"],
    &["SADD", "s1", "a"],
    &["ZADD", "z1", "1", "a"],
    &["XADD", "x1", "*", "f", "v"],
    &["XRANGE", "x1", "-", "+"],
    &["XCLAIM", "x1", "g", "c", "0", "0-1"],
    &["XAUTOCLAIM", "x1", "g", "c", "0", "0"],
    &["XACK", "x1", "g", "0-1"],
    &["PFADD", "p1", "a"],
    &["BITCOUNT", "b1"],
    &["BITFIELD", "b1", "GET", "u8", "0"],
    &["BITFIELD", "b1", "SET", "u8", "0", "1"],
    &[
        "BITFIELD", "b1", "INCRBY", "u8", "0", "1", "OVERFLOW", "SAT",
    ],
    &["BITFIELD_RO", "b1", "GET", "u8", "0"],
    &["OBJECT", "ENCODING", "k1"],
    &["object", "freq", "k1"],
    &["MEMORY", "USAGE", "k1"],
    &["MEMORY", "USAGE", "k1", "SAMPLES", "5"],
    &["XINFO", "STREAM", "x1"],
    &["XINFO", "STREAM", "x1", "FULL"],
    &["XINFO", "GROUPS", "x1"],
    &["XINFO", "CONSUMERS", "x1", "g"],
    &["XGROUP", "CREATE", "x1", "g", "$"],
    &["XGROUP", "CREATECONSUMER", "x1", "g", "c"],
    // Ranges and steps.
    &["MGET", "a", "b", "c"],
    &["DEL", "a", "b", "c"],
    &["EXISTS", "a", "b"],
    &["UNLINK", "a", "b"],
    &["TOUCH", "a", "b"],
    &["WATCH", "a", "b"],
    &["MSET", "a", "1", "b", "2", "c", "3"],
    &["MSETNX", "a", "1", "b", "2"],
    &["MSET", "a", "1", "b"],
    &["RENAME", "a", "b"],
    &["COPY", "a", "b", "DB", "1", "REPLACE"],
    &["SMOVE", "a", "b", "m"],
    &["LMOVE", "a", "b", "LEFT", "RIGHT"],
    &["RPOPLPUSH", "a", "b"],
    &["BLMOVE", "a", "b", "LEFT", "RIGHT", "0"],
    &["BLPOP", "a", "b", "c", "0"],
    &["BZPOPMIN", "a", "b", "0"],
    &["SDIFFSTORE", "d", "a", "b"],
    &["SUNIONSTORE", "d", "a", "b"],
    &["PFCOUNT", "a", "b"],
    &["PFMERGE", "d", "a", "b"],
    &["BITOP", "AND", "d", "a", "b"],
    &["LCS", "a", "b"],
    &["ZRANGESTORE", "d", "src", "0", "-1"],
    &[
        "GEOSEARCHSTORE",
        "d",
        "src",
        "FROMLONLAT",
        "0",
        "0",
        "BYRADIUS",
        "1",
        "km",
    ],
    &[
        "GEOSEARCH",
        "src",
        "FROMLONLAT",
        "0",
        "0",
        "BYRADIUS",
        "1",
        "km",
    ],
    // Counted keys.
    &["EVAL", "return 1", "2", "a", "b", "x", "y"],
    &["EVAL", "return 1", "0"],
    &["EVAL", "return 1", "0", "x"],
    &["EVAL", "s", "3", "a", "b"],
    &["EVAL", "s", "-1", "a"],
    &["EVAL", "s", "abc", "a"],
    &["EVAL", "s", "1x", "a"],
    &["EVAL", "s", " 1", "a"],
    &["EVAL", "s", "+1", "a"],
    &["EVAL", "s", "01", "a"],
    &["EVAL", "s", "4294967297", "a"],
    &["EVAL", "s", "9223372036854775808", "a"],
    &["EVALSHA", "sha", "1", "a", "x"],
    &["EVAL_RO", "s", "1", "a"],
    &["EVALSHA_RO", "sha", "2", "a", "b"],
    &["FCALL", "f", "2", "a", "b", "x"],
    &["FCALL_RO", "f", "1", "a"],
    &["ZUNIONSTORE", "d", "2", "a", "b", "WEIGHTS", "1", "2"],
    &["ZINTERSTORE", "d", "2", "a", "b", "AGGREGATE", "MAX"],
    &["ZDIFFSTORE", "d", "2", "a", "b"],
    &["ZUNIONSTORE", "d", "0", "a"],
    &["ZUNIONSTORE", "d", "1x", "a"],
    &["ZUNION", "2", "a", "b", "WITHSCORES"],
    &["ZINTER", "2", "a", "b"],
    &["ZDIFF", "2", "a", "b"],
    &["ZINTERCARD", "2", "a", "b", "LIMIT", "10"],
    &["SINTERCARD", "2", "a", "b"],
    &["SINTERCARD", "3", "a", "b"],
    &["LMPOP", "2", "a", "b", "LEFT", "COUNT", "2"],
    &["ZMPOP", "2", "a", "b", "MIN"],
    &["BLMPOP", "0", "2", "a", "b", "LEFT"],
    &["BZMPOP", "0", "2", "a", "b", "MAX", "COUNT", "1"],
    &["BLMPOP", "0", "0", "a", "LEFT"],
    // Keys after a keyword.
    &["XREAD", "STREAMS", "a", "b", "0", "0"],
    &["XREAD", "COUNT", "10", "STREAMS", "a", "0"],
    &["XREAD", "BLOCK", "0", "STREAMS", "a", "b", "0", "0"],
    &["xread", "block", "0", "streams", "a", "0"],
    &["XREAD", "STREAMS", "streams", "0"],
    &["XREAD", "STREAMS", "a", "b", "0"],
    &["XREAD", "COUNT", "STREAMS", "a", "0"],
    &["XREAD", "COUNT", "1", "STREAMS", "a"],
    &["XREAD", "STREAMS", "a", "STREAMS"],
    &[
        "XREADGROUP",
        "GROUP",
        "g",
        "c",
        "STREAMS",
        "a",
        "b",
        ">",
        ">",
    ],
    &[
        "XREADGROUP",
        "GROUP",
        "streams",
        "c",
        "COUNT",
        "1",
        "STREAMS",
        "a",
        ">",
    ],
    &[
        "XREADGROUP",
        "GROUP",
        "g",
        "c",
        "NOACK",
        "STREAMS",
        "a",
        "0",
    ],
    &["GEORADIUS", "a", "0", "0", "1", "km"],
    &["GEORADIUS", "a", "0", "0", "1", "km", "STORE", "d"],
    &["GEORADIUS", "a", "0", "0", "1", "km", "STOREDIST", "d"],
    &[
        "GEORADIUS",
        "a",
        "0",
        "0",
        "1",
        "km",
        "STORE",
        "d1",
        "STOREDIST",
        "d2",
    ],
    &[
        "GEORADIUS",
        "a",
        "0",
        "0",
        "1",
        "km",
        "WITHDIST",
        "COUNT",
        "3",
        "store",
        "d",
    ],
    &["GEORADIUSBYMEMBER", "a", "m", "1", "km", "STORE", "d"],
    &["GEORADIUS_RO", "a", "0", "0", "1", "km"],
    &["GEORADIUSBYMEMBER_RO", "a", "m", "1", "km"],
    // Procedures: SORT and MIGRATE.
    &["SORT", "a"],
    &["SORT", "a", "BY", "w_*", "GET", "o_*", "STORE", "d"],
    &["SORT", "a", "LIMIT", "0", "10", "STORE", "d"],
    &["SORT", "a", "STORE", "d1", "STORE", "d2"],
    &["SORT", "a", "ALPHA", "DESC"],
    &["SORT", "a", "STORE"],
    &["SORT", "a", "GET", "store", "d"],
    &["SORT", "a", "STORE", "store", "d"],
    &["SORT", "a", "STORE", "limit", "0", "1"],
    &["SORT", "a", "BY", "nosort"],
    &["SORT_RO", "a", "BY", "w_*", "GET", "o_*"],
    &["MIGRATE", "h", "6379", "k", "0", "5000"],
    &[
        "MIGRATE", "h", "6379", "", "0", "5000", "KEYS", "a", "b", "c",
    ],
    &[
        "MIGRATE", "h", "6379", "", "0", "5000", "COPY", "REPLACE", "KEYS", "a", "b",
    ],
    &[
        "MIGRATE", "h", "6379", "", "0", "5000", "AUTH", "keys", "KEYS", "a",
    ],
    &[
        "MIGRATE", "h", "6379", "", "0", "5000", "AUTH2", "u", "pw", "KEYS", "a", "b",
    ],
    &["MIGRATE", "h", "6379", "k", "0", "5000", "KEYS", "a"],
    &["MIGRATE", "keys", "6379", "k", "0", "5000"],
    // No keys, and unknown commands.
    &["NOSUCHCOMMAND", "a"],
    &["CONFIG", "NOSUCHSUBCOMMAND"],
    &["PING"],
    &["PUBLISH", "ch", "m"],
    &["SPUBLISH", "ch", "m"],
    &["SUBSCRIBE", "a"],
    &["CLIENT", "SETNAME", "n"],
    &["CONFIG", "GET", "maxmemory"],
    &["OBJECT", "HELP"],
    &["WAIT", "1", "0"],
    &["RANDOMKEY"],
    // Wrong arity or syntax: Redis errors, we must only stay in range.
    &["GET"],
    &["GET", "a", "b"],
    &["OBJECT", "ENCODING"],
    &["MSET", "a"],
    &["EVAL", "s"],
    &["XREAD", "STREAMS"],
    &["MIGRATE", "h"],
];

#[test]
fn keys_match_command_getkeys_on_the_corpus() {
    let server = RedisServer::start();
    let mut con = server.conn();
    let mut compared = 0;
    for inv in CORPUS {
        let args: Vec<Vec<u8>> = inv.iter().map(|a| a.as_bytes().to_vec()).collect();
        if compare(&mut con, &args) {
            compared += 1;
        }
    }
    assert!(CORPUS.len() >= 150, "corpus has {}", CORPUS.len());
    assert!(
        compared >= 120,
        "only {compared} of {} invocations had keys to compare",
        CORPUS.len()
    );
}

/// Random invocations of every command that has keys, compared with `COMMAND GETKEYS`
/// wherever the server finds keys.
#[test]
fn keys_match_command_getkeys_on_random_invocations() {
    let server = RedisServer::start();
    let mut con = server.conn();
    let mut rng = fastrand::Rng::with_seed(0x5eed_2024);
    let words: &[&str] = &[
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
        "COUNT",
        "GROUP",
        "NOACK",
        "STREAMS",
        "0",
        "1",
        "2",
        "3",
        "-1",
        "1x",
        " 2",
        "+1",
        "01",
        "",
        ">",
        "4294967297",
        "99999999999999999999",
    ];
    let mut targets: Vec<&commands::Command> = Vec::new();
    for c in commands::table() {
        targets.push(c);
        targets.extend(c.subcommands.iter());
    }
    targets.retain(|c| !c.key_specs.is_empty() || c.getkeys_proc != commands::GetKeysProc::None);
    assert!(targets.len() > 150);
    let mut compared = 0;
    for n in 0..4000 {
        let c = targets[rng.usize(..targets.len())];
        let mut args: Vec<Vec<u8>> = c
            .name
            .split('|')
            .map(|p| p.to_uppercase().into_bytes())
            .collect();
        let min = c.arity.unsigned_abs() as usize;
        let total = if c.arity > 0 {
            min
        } else {
            min + rng.usize(..7)
        };
        while args.len() < total.max(args.len()) {
            let w = if rng.u8(..3) == 0 {
                format!("k{n}_{}", args.len())
            } else {
                words[rng.usize(..words.len())].to_string()
            };
            args.push(w.into_bytes());
        }
        if compare(&mut con, &args) {
            compared += 1;
        }
    }
    assert!(
        compared > 2000,
        "only {compared} random invocations had keys to compare"
    );
}
