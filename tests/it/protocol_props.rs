//! Property tests of the hot-path RESP scanners on random and mutated input.
//!
//! - [`RequestParser`]: random request streams (multibulk with random arguments, inline
//!   lines with quoting, and the empty requests Redis skips) give the same requests
//!   whether fed whole, split at every byte boundary, one byte at a time, or in random
//!   chunks; the multibulk ones equal what `redis-protocol` decodes. Random and mutated
//!   bytes never panic and end in the same requests and the same Redis-worded error (or
//!   the same wait for more bytes) however they are chunked.
//! - [`ReplyScanner`]: random RESP2 and RESP3 replies encoded by `redis-protocol` are
//!   delimited exactly at the encoder's frame boundaries, however the bytes arrive;
//!   garbage never panics.
//! - The command table on whatever the parser produces: `lookup`, `for_each_key`,
//!   `is_blocking` and `arity_ok` never panic and never yield an index at or past `argc`.
//!   (Random argument vectors fed straight to the table are covered in the commands
//!   module's own property test.)
//!
//! Feeding follows the proxy: the session appends what it read, parses from where it
//! left off, drops consumed bytes and resets the parser; the backend reader scans from the
//! first unconsumed byte and drops what it delivered.

use proptest::prelude::*;
use redis_protocol::resp2::types::{OwnedFrame as Resp2, Resp2Frame as _};
use redis_protocol::resp3::types::{
    FrameMap, FrameSet, OwnedFrame as Resp3, Resp3Frame as _, VerbatimStringFormat,
};
use redsplit::commands;
use redsplit::protocol::{Limits, Parsed, ProtocolError, ReplyScanner, Request, RequestParser};

#[path = "../support/feed.rs"]
mod feed;

// ------------------------------------------------------------------------------ requests

/// One item of a generated request stream.
#[derive(Clone, Debug)]
enum Item {
    /// A multibulk request with these arguments.
    Multibulk(Vec<Vec<u8>>),
    /// An inline request: its words, and how each is written (bare, `"…"` or `'…'`).
    Inline(Vec<(Vec<u8>, Quote)>, bool),
    /// Bytes Redis skips: an empty line, `*0`, `*-1`.
    Empty(&'static [u8]),
}

#[derive(Clone, Copy, Debug)]
enum Quote {
    Bare,
    Double,
    Single,
}

/// What a stream of requests decodes to: the requests' arguments, then how it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Outcome {
    requests: Vec<Vec<Vec<u8>>>,
    /// `None`: every byte was consumed; `Some(Ok(n))`: `n` bytes wait for more;
    /// `Some(Err(e))`: a protocol error.
    end: Option<Result<usize, ProtocolError>>,
}

/// Redis's wordings (after `-ERR `) for a broken request stream.
const REDIS_PROTOCOL_ERRORS: &[&str] = &[
    "Protocol error: invalid multibulk length",
    "Protocol error: invalid bulk length",
    "Protocol error: too big mbulk count string",
    "Protocol error: too big bulk count string",
    "Protocol error: too big inline request",
    "Protocol error: unbalanced quotes in request",
    "Protocol error: unauthenticated multibulk length",
    "Protocol error: unauthenticated bulk length",
];

fn is_redis_wording(e: &ProtocolError) -> bool {
    REDIS_PROTOCOL_ERRORS.contains(&e.0.as_str())
        || (e.0.starts_with("Protocol error: expected '$', got '") && e.0.ends_with('\''))
}

fn encode_item(item: &Item, out: &mut Vec<u8>) {
    match item {
        Item::Multibulk(args) => {
            let frame = Resp2::Array(args.iter().cloned().map(Resp2::BulkString).collect());
            let mut buf = vec![0u8; frame.encode_len(false)];
            let n = redis_protocol::resp2::encode::encode(&mut buf, &frame, false)
                .expect("redis-protocol encodes a multibulk request");
            out.extend_from_slice(&buf[..n]);
        }
        Item::Inline(words, crlf) => {
            for (i, (w, q)) in words.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                match q {
                    Quote::Bare => out.extend_from_slice(w),
                    Quote::Double => {
                        out.push(b'"');
                        for &c in w {
                            match c {
                                b'"' | b'\\' => out.extend_from_slice(&[b'\\', c]),
                                b' '..=b'~' => out.push(c),
                                _ => out.extend_from_slice(format!("\\x{c:02x}").as_bytes()),
                            }
                        }
                        out.push(b'"');
                    }
                    Quote::Single => {
                        out.push(b'\'');
                        for &c in w {
                            if c == b'\'' {
                                out.extend_from_slice(b"\\'");
                            } else {
                                out.push(c);
                            }
                        }
                        out.push(b'\'');
                    }
                }
            }
            out.extend_from_slice(if *crlf { b"\r\n" } else { b"\n" });
        }
        Item::Empty(b) => out.extend_from_slice(b),
    }
}

fn expected_args(item: &Item) -> Option<Vec<Vec<u8>>> {
    match item {
        Item::Multibulk(args) => Some(args.clone()),
        Item::Inline(words, _) => Some(words.iter().map(|(w, _)| w.clone()).collect()),
        Item::Empty(_) => None,
    }
}

/// Feed `input` in `chunks` (sizes; the rest goes in one last chunk) the way a session
/// does, checking every request against the command table on the way.
fn parse_chunked(input: &[u8], chunks: &[usize], limits: &Limits, unauth: bool) -> Outcome {
    let mut p = RequestParser::new();
    p.unauthenticated = unauth;
    let mut requests = Vec::new();
    let end = feed::feed(
        input,
        |r| chunks.get(r).copied().unwrap_or(usize::MAX),
        &mut p,
        |p, buf| {
            Ok(match p.parse(buf, limits)? {
                Some(Parsed::Empty { len }) => Some(len),
                Some(Parsed::Multibulk { len }) => {
                    requests.push(args_checked(&buf[..len], &p.args));
                    Some(len)
                }
                Some(Parsed::Inline { len }) => {
                    requests.push(args_checked(&p.inline_buf, &p.args));
                    Some(len)
                }
                None => None,
            })
        },
        RequestParser::reset,
    );
    Outcome { requests, end }
}

/// The arguments of a parsed request, after running the command table over it.
fn args_checked(buf: &[u8], spans: &[redsplit::protocol::Span]) -> Vec<Vec<u8>> {
    let req = Request { buf, args: spans };
    classify_checked(&req);
    spans.iter().map(|s| s.of(buf).to_vec()).collect()
}

fn classify_checked(req: &Request) {
    if let Some(cmd) = commands::lookup(req) {
        commands::for_each_key(cmd, req, |i| {
            assert!(
                i > 0 && i < req.argc(),
                "{} gave key index {i} of {}",
                cmd.name,
                req.argc()
            )
        });
        let _ = commands::is_blocking(cmd, req);
        let _ = commands::arity_ok(cmd, req.argc());
    }
}

/// Every way of feeding `input` this test uses must give `whole`.
fn assert_chunking_invariant(input: &[u8], chunks: &[usize], limits: &Limits, unauth: bool) {
    let whole = parse_chunked(input, &[], limits, unauth);
    if let Some(Err(e)) = &whole.end {
        assert!(is_redis_wording(e), "not Redis's wording: {e:?}");
    }
    for cut in 1..input.len() {
        let two = parse_chunked(input, &[cut], limits, unauth);
        assert_eq!(two, whole, "split at byte {cut}");
    }
    let bytewise = parse_chunked(input, &vec![1; input.len()], limits, unauth);
    assert_eq!(bytewise, whole, "one byte at a time");
    let random = parse_chunked(input, chunks, limits, unauth);
    assert_eq!(random, whole, "chunks {chunks:?}");
}

fn arg() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..24),
        2 => "[a-zA-Z0-9:_]{1,12}".prop_map(String::into_bytes),
        1 => prop::sample::select(vec!["GET", "SET", "MGET", "EVAL", "SORT", "XREAD", "BLPOP",
            "CLIENT", "CONFIG", "MIGRATE", "GEORADIUS", "ZUNIONSTORE", "STREAMS", "STORE",
            "KEYS", "BLOCK", "0", "1", "2", "-1", "99999999999"])
            .prop_map(|s| s.as_bytes().to_vec()),
        1 => prop::collection::vec(any::<u8>(), 100..400),
    ]
}

fn word() -> impl Strategy<Value = (Vec<u8>, Quote)> {
    prop_oneof![
        3 => "[a-zA-Z0-9:_.-]{1,10}".prop_map(|s| (s.into_bytes(), Quote::Bare)),
        1 => prop::collection::vec(any::<u8>(), 0..16).prop_map(|w| (w, Quote::Double)),
        // In single quotes only `\'` is an escape, so a word cannot end in a backslash.
        1 => "[a-zA-Z0-9 \"']{0,10}".prop_map(|s| (s.into_bytes(), Quote::Single)),
    ]
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        6 => prop::collection::vec(arg(), 1..7).prop_map(Item::Multibulk),
        3 => (prop::collection::vec(word(), 1..6), any::<bool>())
            .prop_map(|(w, crlf)| Item::Inline(w, crlf)),
        1 => prop::sample::select(vec![&b"\r\n"[..], b"\n", b"*0\r\n", b"*-1\r\n", b"   \r\n"])
            .prop_map(Item::Empty),
    ]
}

fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..64, 0..40)
}

/// A valid stream, then a few mutations: byte changes, insertions, deletions, a cut.
fn mutated_stream() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(item(), 1..5),
        prop::collection::vec((any::<prop::sample::Index>(), 0u8..4, any::<u8>()), 1..6),
    )
        .prop_map(|(items, muts)| {
            let mut bytes = Vec::new();
            for i in &items {
                encode_item(i, &mut bytes);
            }
            for (at, op, b) in muts {
                if bytes.is_empty() {
                    bytes.push(b);
                    continue;
                }
                let i = at.index(bytes.len());
                match op {
                    0 => bytes[i] = b,
                    1 => bytes.insert(i, b),
                    2 => {
                        bytes.remove(i);
                    }
                    _ => bytes.truncate(i.max(1)),
                }
            }
            bytes
        })
}

/// Bytes rich in RESP's own punctuation, so that random input reaches deep states.
fn resp_noise() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            3 => prop::sample::select(b"*$\r\n0123456789-+:\" '\\x".to_vec()),
            1 => any::<u8>(),
        ],
        0..200,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    #[test]
    fn valid_streams_parse_the_same_however_they_arrive(
        items in prop::collection::vec(item(), 1..8),
        chunks in chunk_sizes(),
    ) {
        let mut input = Vec::new();
        for i in &items {
            encode_item(i, &mut input);
        }
        let limits = Limits::default();
        let whole = parse_chunked(&input, &[], &limits, false);
        let expected: Vec<Vec<Vec<u8>>> = items.iter().filter_map(expected_args).collect();
        prop_assert_eq!(&whole.requests, &expected);
        prop_assert_eq!(&whole.end, &None);
        assert_chunking_invariant(&input, &chunks, &limits, false);

        // The multibulk requests are what redis-protocol decodes from the same bytes.
        let mut at = 0;
        for item in &items {
            let mut one = Vec::new();
            encode_item(item, &mut one);
            if let Item::Multibulk(args) = item {
                let (frame, len) = redis_protocol::resp2::decode::decode(&input[at..])
                    .expect("redis-protocol decodes it")
                    .expect("a complete frame");
                prop_assert_eq!(len, one.len());
                let Resp2::Array(parts) = frame else {
                    panic!("not an array: {frame:?}");
                };
                let decoded: Vec<Vec<u8>> = parts
                    .into_iter()
                    .map(|p| match p {
                        Resp2::BulkString(b) => b,
                        other => panic!("not a bulk string: {other:?}"),
                    })
                    .collect();
                prop_assert_eq!(&decoded, args);
            }
            at += one.len();
        }
    }

    #[test]
    fn truncated_streams_wait_for_the_rest(
        items in prop::collection::vec(item(), 1..5),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut input = Vec::new();
        for i in &items {
            encode_item(i, &mut input);
        }
        let cut = cut.index(input.len());
        let part = parse_chunked(&input[..cut], &[], &Limits::default(), false);
        let whole = parse_chunked(&input, &[], &Limits::default(), false);
        // A prefix never errs, and yields a prefix of the requests.
        prop_assert!(!matches!(part.end, Some(Err(_))), "{:?}", part.end);
        prop_assert!(part.requests.len() <= whole.requests.len());
        prop_assert_eq!(&part.requests[..], &whole.requests[..part.requests.len()]);
    }

    #[test]
    fn mutated_streams_never_panic_and_chunk_alike(
        input in mutated_stream(),
        chunks in chunk_sizes(),
        unauth in any::<bool>(),
    ) {
        assert_chunking_invariant(&input, &chunks, &Limits::default(), unauth);
    }

    #[test]
    fn noise_never_panics_and_chunks_alike(
        input in prop_oneof![resp_noise(), prop::collection::vec(any::<u8>(), 0..200)],
        chunks in chunk_sizes(),
    ) {
        assert_chunking_invariant(&input, &chunks, &Limits::default(), false);
    }

    #[test]
    fn small_limits_give_redis_errors_alike(
        input in mutated_stream(),
        chunks in chunk_sizes(),
        max_bulk in 0u64..40,
        max_count in 0u64..8,
        max_line in 1usize..40,
    ) {
        let limits = Limits {
            max_bulk_len: max_bulk,
            max_multibulk_len: max_count,
            max_inline_len: max_line,
        };
        let whole = parse_chunked(&input, &[], &limits, false);
        if let Some(Err(e)) = &whole.end {
            prop_assert!(is_redis_wording(e), "not Redis's wording: {:?}", e);
        }
        // Header and inline length limits may trip earlier on a longer buffer than on a
        // shorter one, so only the error wording and the absence of panics are checked
        // across chunkings here.
        for sizes in [vec![1; input.len()], chunks] {
            let got = parse_chunked(&input, &sizes, &limits, false);
            if let Some(Err(e)) = &got.end {
                prop_assert!(is_redis_wording(e), "not Redis's wording: {:?}", e);
            }
        }
    }
}

// ------------------------------------------------------------------------------ replies

/// Scan `input` fed in `chunks` the way a backend connection's reader does; the lengths
/// of the replies found, then how it ended (`None`: all consumed).
fn scan_chunked(input: &[u8], chunks: &[usize]) -> (Vec<usize>, feed::End<ProtocolError>) {
    let mut lens = Vec::new();
    let end = feed::feed(
        input,
        |r| chunks.get(r).copied().unwrap_or(usize::MAX),
        &mut ReplyScanner::new(),
        |s, buf| {
            let got = s.scan(buf)?;
            if let Some(len) = got {
                assert!(len > 0 && len <= buf.len(), "length {len} out of range");
                lens.push(len);
            }
            Ok(got)
        },
        |_| {},
    );
    (lens, end)
}

fn line_text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 :_.-]{0,16}"
}

fn resp2_frame() -> impl Strategy<Value = Resp2> {
    let leaf = prop_oneof![
        line_text().prop_map(|s| Resp2::SimpleString(s.into_bytes())),
        line_text().prop_map(|s| Resp2::Error(format!("ERR {s}"))),
        any::<i64>().prop_map(Resp2::Integer),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(Resp2::BulkString),
        Just(Resp2::Null),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop::collection::vec(inner, 0..6).prop_map(Resp2::Array)
    })
}

fn attrs() -> impl Strategy<Value = Option<FrameMap<Resp3, Resp3>>> {
    prop_oneof![
        6 => Just(None),
        1 => prop::collection::vec((line_text(), any::<i64>()), 1..3).prop_map(|kv| {
            let mut m = FrameMap::default();
            for (k, v) in kv {
                m.insert(
                    Resp3::SimpleString { data: k.into_bytes(), attributes: None },
                    Resp3::Number { data: v, attributes: None },
                );
            }
            Some(m)
        }),
    ]
}

fn resp3_frame() -> impl Strategy<Value = Resp3> {
    let leaf = prop_oneof![
        (prop::collection::vec(any::<u8>(), 0..40), attrs())
            .prop_map(|(data, attributes)| Resp3::BlobString { data, attributes }),
        (prop::collection::vec(any::<u8>(), 0..20), attrs())
            .prop_map(|(data, attributes)| Resp3::BlobError { data, attributes }),
        (line_text(), attrs()).prop_map(|(s, attributes)| Resp3::SimpleString {
            data: s.into_bytes(),
            attributes
        }),
        (line_text(), attrs()).prop_map(|(s, attributes)| Resp3::SimpleError {
            data: format!("ERR {s}"),
            attributes
        }),
        (any::<bool>(), attrs()).prop_map(|(data, attributes)| Resp3::Boolean { data, attributes }),
        Just(Resp3::Null),
        (any::<i64>(), attrs()).prop_map(|(data, attributes)| Resp3::Number { data, attributes }),
        (
            prop_oneof![any::<f64>(), Just(f64::INFINITY), Just(f64::NEG_INFINITY)],
            attrs()
        )
            .prop_map(|(data, attributes)| Resp3::Double { data, attributes }),
        ("-?[1-9][0-9]{0,40}", attrs()).prop_map(|(s, attributes)| Resp3::BigNumber {
            data: s.into_bytes(),
            attributes
        }),
        (
            prop::collection::vec(any::<u8>(), 0..30),
            any::<bool>(),
            attrs()
        )
            .prop_map(|(data, md, attributes)| Resp3::VerbatimString {
                data,
                format: if md {
                    VerbatimStringFormat::Markdown
                } else {
                    VerbatimStringFormat::Text
                },
                attributes,
            }),
    ];
    leaf.prop_recursive(4, 40, 5, |inner| {
        prop_oneof![
            (prop::collection::vec(inner.clone(), 0..5), attrs())
                .prop_map(|(data, attributes)| Resp3::Array { data, attributes }),
            (prop::collection::vec(inner.clone(), 0..5), attrs())
                .prop_map(|(data, attributes)| Resp3::Push { data, attributes }),
            (
                prop::collection::vec((line_text(), inner.clone()), 0..4),
                attrs()
            )
                .prop_map(|(kv, attributes)| {
                    let mut data = FrameMap::default();
                    for (k, v) in kv {
                        data.insert(
                            Resp3::BlobString {
                                data: k.into_bytes(),
                                attributes: None,
                            },
                            v,
                        );
                    }
                    Resp3::Map { data, attributes }
                }),
            (prop::collection::vec(any::<i64>(), 0..5), attrs()).prop_map(|(items, attributes)| {
                let mut data = FrameSet::default();
                for n in items {
                    data.insert(Resp3::Number {
                        data: n,
                        attributes: None,
                    });
                }
                Resp3::Set { data, attributes }
            }),
        ]
    })
}

fn encode2(f: &Resp2) -> Vec<u8> {
    let mut buf = vec![0u8; f.encode_len(false)];
    let n = redis_protocol::resp2::encode::encode(&mut buf, f, false).expect("encodes");
    buf.truncate(n);
    buf
}

fn encode3(f: &Resp3) -> Vec<u8> {
    let mut buf = vec![0u8; f.encode_len(false)];
    let n = redis_protocol::resp3::encode::complete::encode(&mut buf, f, false).expect("encodes");
    buf.truncate(n);
    buf
}

/// The scanner finds exactly `lens` in `input` whole, split at every byte, one byte at a
/// time and in `chunks`.
fn assert_replies(input: &[u8], lens: &[usize], chunks: &[usize]) {
    assert_eq!(scan_chunked(input, &[]), (lens.to_vec(), None), "whole");
    for cut in 1..input.len() {
        assert_eq!(
            scan_chunked(input, &[cut]),
            (lens.to_vec(), None),
            "split at {cut}"
        );
    }
    assert_eq!(
        scan_chunked(input, &vec![1; input.len()]),
        (lens.to_vec(), None),
        "one byte at a time"
    );
    assert_eq!(
        scan_chunked(input, chunks),
        (lens.to_vec(), None),
        "chunks {chunks:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    #[test]
    fn resp2_replies_end_where_the_encoder_says(
        frames in prop::collection::vec(resp2_frame(), 1..5),
        chunks in chunk_sizes(),
    ) {
        let encoded: Vec<Vec<u8>> = frames.iter().map(encode2).collect();
        let lens: Vec<usize> = encoded.iter().map(Vec::len).collect();
        assert_replies(&encoded.concat(), &lens, &chunks);
    }

    #[test]
    fn resp3_replies_end_where_the_encoder_says(
        frames in prop::collection::vec(resp3_frame(), 1..5),
        chunks in chunk_sizes(),
    ) {
        let encoded: Vec<Vec<u8>> = frames.iter().map(encode3).collect();
        let lens: Vec<usize> = encoded.iter().map(Vec::len).collect();
        assert_replies(&encoded.concat(), &lens, &chunks);
    }

    #[test]
    fn garbage_replies_never_panic_and_chunk_alike(
        input in prop_oneof![
            resp_noise(),
            prop::collection::vec(any::<u8>(), 0..200),
            (prop::collection::vec(resp3_frame(), 1..3), any::<prop::sample::Index>(), any::<u8>())
                .prop_map(|(f, at, b)| {
                    let mut bytes: Vec<u8> = f.iter().flat_map(encode3).collect();
                    let i = at.index(bytes.len());
                    bytes[i] = b;
                    bytes
                }),
        ],
        chunks in chunk_sizes(),
    ) {
        let whole = scan_chunked(&input, &[]);
        if let Some(Err(e)) = &whole.1 {
            prop_assert!(e.0.starts_with("Protocol error: "), "{:?}", e);
        }
        prop_assert_eq!(&scan_chunked(&input, &vec![1; input.len()]), &whole);
        prop_assert_eq!(&scan_chunked(&input, &chunks), &whole);
    }
}

// ------------------------------------------------------------------------------ fixed cases

#[test]
fn declared_sizes_allocate_nothing() {
    let limits = Limits::default();
    for input in [
        &b"*2147483647\r\n$3\r\nGET\r\n"[..],
        b"*1\r\n$536870912\r\nabc",
        b"*1000000\r\n",
    ] {
        let mut p = RequestParser::new();
        assert_eq!(p.parse(input, &limits), Ok(None));
        assert!(p.args.capacity() < 64, "{}", p.args.capacity());
    }
    let mut s = ReplyScanner::new();
    assert_eq!(
        s.scan(b"*9223372036854775807\r\n*1000000000\r\n$100\r\nab"),
        Ok(None)
    );
}

#[test]
fn deep_nesting_is_a_protocol_error_not_a_recursion() {
    let deep = b"*1\r\n".repeat(100_000);
    let out = parse_chunked(&deep, &[], &Limits::default(), false);
    assert_eq!(
        out.end,
        Some(Err(ProtocolError(
            "Protocol error: expected '$', got '*'".into()
        )))
    );
    // Replies may nest; the scanner counts instead of recursing.
    let mut reply = b"*1\r\n".repeat(1_000_000);
    reply.extend_from_slice(b":1\r\n");
    assert_eq!(scan_chunked(&reply, &[]), (vec![reply.len()], None));
}
