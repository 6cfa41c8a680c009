//! Normalization of what differs by nature between two servers, the first difference
//! between two recordings, and [`check`]: sessions run on two worlds and compared.

use std::time::Instant;

use super::resp::{decode, esc, find_crlf, Val};
use super::session::{Record, Session};
use super::world::World;

/// `CLIENT LIST`/`CLIENT INFO` fields whose values differ by nature.
const VOLATILE_CLIENT_FIELDS: &[&str] = &[
    "id",
    "addr",
    "laddr",
    "fd",
    "age",
    "idle",
    "qbuf",
    "qbuf-free",
    "argv-mem",
    "multi-mem",
    "obl",
    "oll",
    "omem",
    "tot-mem",
    "rbs",
    "rbp",
    "events",
];

/// The reply with the fields listed in the module docs normalized, chosen by the words
/// of the command it answers.
fn normalize(words: &[Vec<u8>], reply: &[u8]) -> Vec<u8> {
    let upper: Vec<String> = words
        .iter()
        .take(2)
        .map(|w| String::from_utf8_lossy(w).to_ascii_uppercase())
        .collect();
    let upper: Vec<&str> = upper.iter().map(String::as_str).collect();
    match upper.as_slice() {
        ["CLIENT", "ID"] if reply.starts_with(b":") => b":<id>\r\n".to_vec(),
        ["CLIENT", "LIST" | "INFO"] => normalize_client_list(reply),
        ["HELLO", ..] | ["EXEC", ..] => normalize_hello(reply),
        _ => reply.to_vec(),
    }
}

/// Normalizes the volatile fields of a `CLIENT LIST`/`INFO` bulk (`$`) or verbatim (`=`)
/// string, re-encoding its length.
pub(super) fn normalize_client_list(reply: &[u8]) -> Vec<u8> {
    let Some(&kind @ (b'$' | b'=')) = reply.first() else {
        return reply.to_vec();
    };
    let Some(Val::Bulk(Some(body))) = decode(reply) else {
        return reply.to_vec();
    };
    let (prefix, text) = if kind == b'=' && body.len() >= 4 {
        (
            body[..4].to_vec(),
            String::from_utf8_lossy(&body[4..]).into_owned(),
        )
    } else {
        (Vec::new(), String::from_utf8_lossy(&body).into_owned())
    };
    let lines: Vec<String> = text
        .split('\n')
        .map(|line| {
            line.split(' ')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if VOLATILE_CLIENT_FIELDS.contains(&k) => format!("{k}=*"),
                    _ => kv.to_owned(),
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let mut new_body = prefix;
    new_body.extend_from_slice(lines.join("\n").as_bytes());
    let mut out = format!("{}{}\r\n", kind as char, new_body.len()).into_bytes();
    out.extend_from_slice(&new_body);
    out.extend_from_slice(b"\r\n");
    out
}

/// Replaces the integer after the `id` key of a `HELLO` reply by `<id>`.
pub(super) fn normalize_hello(reply: &[u8]) -> Vec<u8> {
    let key = b"$2\r\nid\r\n:";
    let Some(at) = reply.windows(key.len()).position(|w| w == key) else {
        return reply.to_vec();
    };
    let start = at + key.len();
    let Some(end) = find_crlf(reply, start) else {
        return reply.to_vec();
    };
    let mut out = reply[..start].to_vec();
    out.extend_from_slice(b"<id>");
    out.extend_from_slice(&reply[end..]);
    out
}

/// A window of `bytes` around offset `at`, escaped.
fn window(bytes: &[u8], at: usize) -> String {
    const BEFORE: usize = 80;
    const LEN: usize = 400;
    let start = at.saturating_sub(BEFORE);
    let end = (start + LEN).min(bytes.len());
    format!(
        "{}\"{}\"{} ({} bytes)",
        if start > 0 { "…" } else { "" },
        esc(&bytes[start..end]),
        if end < bytes.len() { "…" } else { "" },
        bytes.len()
    )
}

/// Compares two worlds' records step by step; the first difference, readably.
pub(super) fn first_difference(
    session: &Session,
    names: (&str, &str),
    a: &[Record],
    b: &[Record],
) -> Option<String> {
    let width = names.0.len().max(names.1.len());
    for i in 0..a.len().max(b.len()) {
        let (ra, rb) = (a.get(i), b.get(i));
        let na = ra.map(|r| normalize(&r.words, &r.reply));
        let nb = rb.map(|r| normalize(&r.words, &r.reply));
        if na == nb {
            continue;
        }
        let r = ra.or(rb).expect("one side has a record");
        let who = r
            .client
            .map_or("the master".to_owned(), |c| format!("client {c}"));
        let at = match (&na, &nb) {
            (Some(x), Some(y)) => x.iter().zip(y).take_while(|(p, q)| p == q).count(),
            _ => 0,
        };
        let show = |n: &Option<Vec<u8>>| {
            n.as_ref()
                .map_or("<no such reply>".to_owned(), |n| window(n, at))
        };
        return Some(format!(
            "session `{}`: first difference at step {} ({who}): {}\n  {:width$}: {}\n  {:width$}: {}",
            session.name,
            r.step,
            r.label,
            names.0,
            show(&na),
            names.1,
            show(&nb),
        ));
    }
    None
}

/// Prints every record of both worlds (`DIFF_DUMP=1`), to see what a session does.
pub(super) fn dump(session: &Session, names: (&str, &str), a: &[Record], b: &[Record]) {
    eprintln!("== {}", session.name);
    for i in 0..a.len().max(b.len()) {
        let r = a.get(i).or(b.get(i)).expect("a record");
        let show = |r: Option<&Record>| r.map_or("-".to_owned(), |r| window(&r.reply, 0));
        eprintln!(
            "  step {} client {:?}: {}\n    {}: {}\n    {}: {}",
            r.step,
            r.client,
            r.label,
            names.0,
            show(a.get(i)),
            names.1,
            show(b.get(i))
        );
    }
}

/// Runs every session on both worlds (concurrently), resetting between sessions, and
/// panics listing the first difference of every session that differs.
pub(super) fn check(sessions: &[Session], a: &World, b: &World) {
    let mut failures = Vec::new();
    for session in sessions {
        let started = Instant::now();
        let (ra, rb) = std::thread::scope(|s| {
            let other = s.spawn(|| b.run(session));
            let first = a.run(session);
            (first, other.join().expect("session runs"))
        });
        std::thread::scope(|s| {
            s.spawn(|| b.reset());
            a.reset();
        });
        if std::env::var_os("DIFF_DUMP").is_some() {
            dump(session, (a.label, b.label), &ra, &rb);
        }
        match first_difference(session, (a.label, b.label), &ra, &rb) {
            None => eprintln!("PASS {} ({:?})", session.name, started.elapsed()),
            Some(diff) => {
                eprintln!("FAIL {diff}");
                failures.push(diff);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} sessions differ between {} and {}:\n\n{}",
        failures.len(),
        sessions.len(),
        a.label,
        b.label,
        failures.join("\n\n")
    );
}

/// Runs `sessions` direct vs proxied.
pub(super) fn check_proxied(sessions: &[Session]) {
    let (direct, proxied) = World::pair(("direct", false), ("proxied", true));
    check(sessions, &direct, &proxied);
}
