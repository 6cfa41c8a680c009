//! Backend reply bytes, fed whole and in chunks: the same reply lengths and the same
//! ending, never a panic; and where `redis-protocol` decodes a RESP2 or RESP3 frame and
//! the scanner finds one too, both end at the same byte.
//!
//! The first byte picks the chunk size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redsplit::protocol::{ProtocolError, ReplyScanner};

#[path = "../../tests/support/feed.rs"]
mod support;

type Outcome = (Vec<usize>, support::End<ProtocolError>);

/// Feed `input` as a backend connection's reader does.
fn feed(input: &[u8], chunk: impl Fn(usize) -> usize) -> Outcome {
    let mut lens = Vec::new();
    let end = support::feed(
        input,
        chunk,
        &mut ReplyScanner::new(),
        |s, buf| {
            let got = s.scan(buf)?;
            if let Some(len) = got {
                assert!(len > 0 && len <= buf.len());
                lens.push(len);
            }
            Ok(got)
        },
        |_| {},
    );
    (lens, end)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let whole = feed(input, |_| usize::MAX);
    let size = usize::from(mode & 0x3f) + 1;
    assert_eq!(feed(input, |_| size), whole, "chunks of {size}");
    assert_eq!(
        feed(input, |r| usize::from(input[r % input.len()] % 13) + 1),
        whole,
        "varying chunks"
    );
    let first = ReplyScanner::new().scan(input);
    if let Ok(Some(n)) = first {
        if let Ok(Some((_, len))) = redis_protocol::resp2::decode::decode(input) {
            assert_eq!(n, len, "RESP2 frame length");
        }
        if let Ok(Some((_, len))) = redis_protocol::resp3::decode::complete::decode(input) {
            assert_eq!(n, len, "RESP3 frame length");
        }
    }
});
