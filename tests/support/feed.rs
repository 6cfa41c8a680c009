//! Feeding bytes to a resumable scanner the way redsplit's connections do, in chunks of
//! chosen sizes. Shared by the property tests and the fuzz targets, so both check the
//! scanners under the same feeding.

/// How feeding ended: `None` when every byte was consumed, `Some(Ok(n))` when `n` bytes
/// wait for more, `Some(Err(e))` when `take` failed.
pub type End<E> = Option<Result<usize, E>>;

/// Feed `input` to `state` in chunks of `chunk(round)` bytes (clamped to 1..=what is
/// left): append each chunk to a buffer; call `take` on the unconsumed bytes until it
/// needs more (`Ok(None)`), each `Ok(Some(len))` consuming `len` bytes; then drop the
/// consumed bytes and, if there were any, call `drained`.
pub fn feed<S, E>(
    input: &[u8],
    mut chunk: impl FnMut(usize) -> usize,
    state: &mut S,
    mut take: impl FnMut(&mut S, &[u8]) -> Result<Option<usize>, E>,
    drained: impl Fn(&mut S),
) -> End<E> {
    let mut buf = Vec::new();
    let mut at = 0;
    let mut round = 0;
    while at < input.len() {
        let n = chunk(round).clamp(1, input.len() - at);
        round += 1;
        buf.extend_from_slice(&input[at..at + n]);
        at += n;
        let mut consumed = 0;
        loop {
            match take(state, &buf[consumed..]) {
                Ok(Some(len)) => consumed += len,
                Ok(None) => break,
                Err(e) => return Some(Err(e)),
            }
        }
        buf.drain(..consumed);
        if consumed > 0 {
            drained(state);
        }
    }
    (!buf.is_empty()).then_some(Ok(buf.len()))
}
