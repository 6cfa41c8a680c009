//! Arbitrary argument vectors through the command table: lookup, key finding, blocking
//! detection and arity never panic, and no key index reaches `argc`. The name is often
//! taken from the table (and a subcommand's from its container) so that real key specs
//! are exercised; every command's key finding is also applied to the same arguments.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redsplit::commands::{self, Command};
use redsplit::protocol::{OwnedRequest, Request};

fn check(cmd: &Command, req: &Request) {
    let mut n = 0;
    commands::for_each_key(cmd, req, |i| {
        n += 1;
        assert!(
            i < req.argc(),
            "{} gave key index {i} of {}",
            cmd.name,
            req.argc()
        );
    });
    assert!(
        n <= req.argc(),
        "{} gave {n} keys of {} arguments",
        cmd.name,
        req.argc()
    );
    let _ = commands::is_blocking(cmd, req);
    let _ = commands::arity_ok(cmd, req.argc());
}

fuzz_target!(|input: (u16, bool, Vec<Vec<u8>>)| {
    let (pick, from_table, rest) = input;
    let table = commands::table();
    let mut args: Vec<Vec<u8>> = Vec::new();
    if from_table {
        let cmd = &table[usize::from(pick) % table.len()];
        if cmd.subcommands.is_empty() {
            args.push(cmd.name.as_bytes().to_vec());
        } else {
            let sub = &cmd.subcommands[usize::from(pick >> 8) % cmd.subcommands.len()];
            let mut words = sub.name.split('|');
            args.extend(words.by_ref().map(|w| w.as_bytes().to_vec()));
        }
    }
    args.extend(rest.into_iter().take(64));
    let owned = OwnedRequest::new(&args);
    let req = owned.request();
    if let Some(cmd) = commands::lookup(&req) {
        check(cmd, &req);
    }
    // Any command's key finding on any arguments stays in range.
    let other = &table[usize::from(pick.rotate_left(5)) % table.len()];
    check(other, &req);
    for sub in other.subcommands {
        check(sub, &req);
    }
});
