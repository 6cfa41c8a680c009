//! Where a request's keys are: its command's key specs applied as Redis's
//! `getKeysUsingKeySpecs` applies them, and, where they do not apply, the command's own
//! key-finding procedure ([`GetKeysProc`]), as Redis's `getKeysFromCommandWithSpecs`
//! does. Runs per request on client input: no allocation, no panic, and no index at or
//! past `argc`.

use super::{BeginSearch, Command, FindKeys, Flags, GetKeysProc, KeyFlags, KeySpec};
use crate::protocol::{parse_int, Request};

/// The arguments one key spec selects: `first..=last` by `step`.
#[derive(Clone, Copy)]
struct KeyRange {
    first: i64,
    last: i64,
    step: i64,
}

/// Apply one key spec, as `getKeysUsingKeySpecs` does. `Ok(None)`: its keyword is absent
/// (the spec adds nothing); `Err`: the spec does not apply (unknown, incomplete, out of
/// range, bad count), so Redis falls back on the command's procedure.
fn spec_range(spec: &KeySpec, req: &Request) -> Result<Option<KeyRange>, ()> {
    let argc = req.argc() as i64;
    let mut first = match spec.begin_search {
        BeginSearch::Index(pos) => i64::from(pos),
        BeginSearch::Keyword { keyword, startfrom } => {
            let kw = keyword.as_bytes();
            let sf = i64::from(startfrom);
            let found = if sf > 0 {
                // Forwards, up to the last argument but one: a key must follow.
                (sf..argc - 1).find(|&i| req.arg(i as usize).eq_ignore_ascii_case(kw))
            } else if argc + sf < argc {
                (1..=argc + sf)
                    .rev()
                    .find(|&i| req.arg(i as usize).eq_ignore_ascii_case(kw))
            } else {
                None
            };
            match found {
                Some(i) => i + 1,
                None => return Ok(None),
            }
        }
        BeginSearch::Unknown => return Err(()),
    };
    let (last, step) = match spec.find_keys {
        FindKeys::Range {
            lastkey,
            keystep,
            limit,
        } => {
            let lastkey = i64::from(lastkey);
            let last = if lastkey >= 0 {
                first + lastkey
            } else if limit == 0 {
                argc + lastkey
            } else {
                first + ((argc - first) / i64::from(limit) + lastkey)
            };
            (last, i64::from(keystep))
        }
        FindKeys::Keynum {
            keynumidx,
            firstkey,
            keystep,
        } => {
            let idx = first + i64::from(keynumidx);
            if idx < 0 || idx >= argc {
                return Err(());
            }
            let numkeys = match parse_int(req.arg(idx as usize)) {
                Some(n) if n >= 0 => n,
                _ => return Err(()),
            };
            first += i64::from(firstkey);
            // Redis narrows the count to an int here.
            (first + i64::from(numkeys as i32) - 1, i64::from(keystep))
        }
        FindKeys::Unknown => return Err(()),
    };
    if last >= argc || last < first || first >= argc || first < 0 || step < 1 {
        return Err(());
    }
    if spec.flags.contains(KeyFlags::INCOMPLETE) {
        return Err(());
    }
    Ok(Some(KeyRange { first, last, step }))
}

/// Call `f` with the argument index of every key of `req`, in order, following the key
/// specs exactly as Redis's getKeysFromCommand does (movable keys included: EVAL numkeys,
/// ZUNIONSTORE, XREAD/XREADGROUP STREAMS, SORT ... STORE, GEORADIUS ... STORE, MIGRATE,
/// LMPOP, ZMPOP, BLMPOP, OBJECT, ...). No allocation.
///
/// Every index passed to `f` is below `req.argc()`, whatever the request holds. Where
/// Redis would reject the arguments, the keys reported are whatever its key finding
/// yields (often none).
pub fn for_each_key(cmd: &Command, req: &Request, mut f: impl FnMut(usize)) {
    let argc = req.argc();
    let mut emit = |i: i64| {
        if let Ok(i) = usize::try_from(i) {
            if i < argc {
                f(i);
            }
        }
    };
    let module = cmd.flags.contains(Flags::MODULE);
    let real = |s: &&KeySpec| !s.flags.contains(KeyFlags::NOT_KEY);
    let has_keyspec = cmd.key_specs.iter().any(|s| real(&s));
    // A module's key specs are used even with variable flags: its own procedure is out
    // of reach.
    let has_varflags = !module
        && cmd
            .key_specs
            .iter()
            .any(|s| s.flags.contains(KeyFlags::VARIABLE_FLAGS));
    if has_keyspec && !has_varflags {
        let specs_apply = cmd
            .key_specs
            .iter()
            .filter(real)
            .all(|s| spec_range(s, req).is_ok());
        if specs_apply {
            for spec in cmd.key_specs.iter().filter(real) {
                if let Ok(Some(r)) = spec_range(spec, req) {
                    let mut i = r.first;
                    while i <= r.last {
                        emit(i);
                        i += r.step;
                    }
                }
            }
            return;
        }
    }
    if module {
        legacy_range_keys(cmd, req, emit);
    } else {
        proc_keys(cmd.getkeys_proc, req, emit);
    }
}

/// Keys from the legacy (first, last, step) triple, as `getKeysUsingLegacyRangeSpec`
/// finds them: none at all if any position falls outside the arguments.
fn legacy_range_keys(cmd: &Command, req: &Request, mut emit: impl FnMut(i64)) {
    let argc = req.argc() as i64;
    let first = i64::from(cmd.first_key);
    let step = i64::from(cmd.key_step);
    if first <= 0 || step < 1 {
        return;
    }
    let last_key = i64::from(cmd.last_key);
    let last = if last_key < 0 {
        argc + last_key
    } else {
        last_key
    };
    if first <= last && last >= argc {
        // Some position in first..=last by step reaches past the arguments.
        let highest = first + (last - first) / step * step;
        if highest >= argc {
            return;
        }
    }
    let mut i = first;
    while i <= last {
        emit(i);
        i += step;
    }
}

/// C's `atoi`, as Redis's `genericGetKeys` reads counts: leading space, a sign, digits,
/// anything after ignored; out-of-range values clamp as `strtol` does, then narrow to int.
pub(super) fn atoi(s: &[u8]) -> i64 {
    let mut it = s
        .iter()
        .copied()
        .skip_while(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r'))
        .peekable();
    let neg = match it.peek() {
        Some(b'-') => {
            it.next();
            true
        }
        Some(b'+') => {
            it.next();
            false
        }
        _ => false,
    };
    let mut v: i64 = 0;
    for c in it.take_while(u8::is_ascii_digit) {
        let d = i64::from(c - b'0');
        v = if neg {
            v.saturating_mul(10).saturating_sub(d)
        } else {
            v.saturating_mul(10).saturating_add(d)
        };
    }
    i64::from(v as i32)
}

/// Keys from Redis's per-command procedure. Positions past the arguments are dropped by
/// the caller's `emit`.
fn proc_keys(proc: GetKeysProc, req: &Request, mut emit: impl FnMut(i64)) {
    let argc = req.argc() as i64;
    let arg = |i: i64| usize::try_from(i).map(|i| req.arg(i)).unwrap_or_default();
    let is = |i: i64, word: &[u8]| arg(i).eq_ignore_ascii_case(word);
    match proc {
        GetKeysProc::None => {}
        GetKeysProc::Numkeys {
            store,
            count,
            first,
        } => {
            let (store, count, first) = (i64::from(store), i64::from(count), i64::from(first));
            if count >= argc {
                return;
            }
            let num = atoi(arg(count));
            // C division truncates towards zero, as Rust's does.
            if num < 1 || num > argc - first {
                return;
            }
            for i in 0..num {
                emit(first + i);
            }
            if store != 0 {
                emit(store);
            }
        }
        GetKeysProc::SortRo | GetKeysProc::FirstArg => emit(1),
        GetKeysProc::Sort => {
            emit(1);
            let mut store = None;
            let mut i = 2;
            while i < argc {
                if is(i, b"limit") {
                    i += 2;
                } else if is(i, b"store") && i + 1 < argc {
                    // The last STORE wins, as in SORT itself.
                    store = Some(i + 1);
                } else if is(i, b"get") || is(i, b"by") {
                    i += 1;
                }
                i += 1;
            }
            if let Some(s) = store {
                emit(s);
            }
        }
        GetKeysProc::Migrate => {
            let (mut first, mut num) = (3, 1);
            if argc > 6 {
                let mut i = 6;
                while i < argc {
                    if is(i, b"keys") {
                        if !arg(3).is_empty() {
                            // A syntax error MIGRATE reports itself.
                            num = 0;
                        } else {
                            first = i + 1;
                            num = argc - first;
                        }
                        break;
                    }
                    if is(i, b"auth") {
                        i += 1;
                    } else if is(i, b"auth2") {
                        i += 2;
                    }
                    i += 1;
                }
            }
            for i in 0..num {
                emit(first + i);
            }
        }
        GetKeysProc::Georadius => {
            emit(1);
            let mut stored = None;
            let mut i = 5;
            while i < argc {
                if (is(i, b"store") || is(i, b"storedist")) && i + 1 < argc {
                    stored = Some(i + 1);
                    i += 1;
                }
                i += 1;
            }
            if let Some(s) = stored {
                emit(s);
            }
        }
        GetKeysProc::Xread => {
            let mut streams = None;
            let mut i = 1;
            while i < argc {
                if is(i, b"block") || is(i, b"count") {
                    i += 1;
                } else if is(i, b"group") {
                    i += 2;
                } else if is(i, b"streams") {
                    streams = Some(i);
                    break;
                } else if !is(i, b"noack") {
                    break;
                }
                i += 1;
            }
            let Some(pos) = streams else { return };
            let num = argc - pos - 1;
            if num == 0 || num % 2 != 0 {
                return;
            }
            for i in pos + 1..argc - num / 2 {
                emit(i);
            }
        }
    }
}
