//! Client request bytes, fed whole and in chunks: the same requests and the same ending
//! (an error in Redis's words, or a wait for more bytes), never a panic. Every request
//! also goes through the command table.
//!
//! The first byte picks the chunk sizes and whether the client is authenticated.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redsplit::commands;
use redsplit::protocol::{Limits, Parsed, ProtocolError, Request, RequestParser};

#[path = "../../tests/support/feed.rs"]
mod support;

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    requests: Vec<Vec<Vec<u8>>>,
    end: Option<Result<usize, ProtocolError>>,
}

/// Feed `input` as a session does: append what arrived, parse from where it stopped,
/// drop what was consumed and reset the parser.
fn feed(input: &[u8], chunk: impl Fn(usize) -> usize, unauth: bool) -> Outcome {
    let limits = Limits::default();
    let mut p = RequestParser::new();
    p.unauthenticated = unauth;
    let mut requests = Vec::new();
    let end = support::feed(
        input,
        chunk,
        &mut p,
        |p, buf| {
            Ok(match p.parse(buf, &limits)? {
                Some(Parsed::Empty { len }) => {
                    assert!(len > 0);
                    Some(len)
                }
                Some(Parsed::Multibulk { len }) => {
                    assert!(len > 0 && len <= buf.len());
                    requests.push(check(&buf[..len], &p.args));
                    Some(len)
                }
                Some(Parsed::Inline { len }) => {
                    assert!(len > 0 && len <= buf.len());
                    requests.push(check(&p.inline_buf, &p.args));
                    Some(len)
                }
                None => None,
            })
        },
        RequestParser::reset,
    );
    Outcome { requests, end }
}

fn check(buf: &[u8], spans: &[redsplit::protocol::Span]) -> Vec<Vec<u8>> {
    assert!(!spans.is_empty());
    for s in spans {
        assert!(s.start <= s.end && s.end as usize <= buf.len());
    }
    let req = Request { buf, args: spans };
    if let Some(cmd) = commands::lookup(&req) {
        commands::for_each_key(cmd, &req, |i| assert!(i > 0 && i < req.argc()));
        let _ = commands::is_blocking(cmd, &req);
    }
    spans.iter().map(|s| s.of(buf).to_vec()).collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let unauth = mode & 0x80 != 0;
    let whole = feed(input, |_| usize::MAX, unauth);
    if let Some(Err(e)) = &whole.end {
        assert!(e.0.starts_with("Protocol error: "), "{e:?}");
    }
    let size = usize::from(mode & 0x3f) + 1;
    let fixed = feed(input, |_| size, unauth);
    assert_eq!(fixed, whole, "chunks of {size}");
    // Varying sizes taken from the input itself.
    let varying = feed(
        input,
        |r| usize::from(input[r % input.len()] % 17) + 1,
        unauth,
    );
    assert_eq!(varying, whole, "varying chunks");
});
