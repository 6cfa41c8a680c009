//! The wording of `serde_yaml`'s errors: each rewritten into a sentence that names the
//! setting and says how to fix the text ("did you mean `password`?").

use crate::config::source::Pos;

/// How to name the mapping at `path` in a sentence.
pub(crate) fn describe_path(path: &str) -> String {
    if path.is_empty() {
        "the top level".into()
    } else {
        format!("`{path}`")
    }
}

/// The edit distance between two short strings, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    // `row` has `b.len() + 1` entries: every `get` below is in range.
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = i;
        let mut left = i + 1;
        if let Some(first) = row.first_mut() {
            *first = left;
        }
        for (j, &cb) in b.iter().enumerate() {
            let Some(cell) = row.get_mut(j + 1) else {
                break;
            };
            let cur = *cell;
            *cell = (prev + usize::from(ca != cb)).min(left + 1).min(cur + 1);
            left = *cell;
            prev = cur;
        }
    }
    row.last().copied().unwrap_or(0)
}

/// Names between backticks in `text`, as serde lists expected fields and variants.
fn backticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// Serde's words for a type, in the file's terms.
fn plain_type(t: &str) -> String {
    let t = t.trim();
    match t {
        "usize" | "u64" | "u32" | "u16" | "u8" => "a whole number (0 or more)".into(),
        "a boolean" => "true or false".into(),
        "a sequence" => "a list".into(),
        "map" | "a map" => "a mapping".into(),
        "sequence" => "a list".into(),
        "unit value" => "nothing (null)".into(),
        _ if t.starts_with("struct ") => "a mapping of settings".into(),
        _ => t.to_string(),
    }
}

/// Rewrite a `serde_yaml` error (its `Display`, with the path it starts with and the
/// `at line L column C` it ends with) into a sentence that says how to fix the text.
/// `pos` is the error's own position; `remap` moves any other position it quotes back
/// to the text the user wrote.
pub(crate) fn friendly_serde_error(
    raw: &str,
    pos: Option<Pos>,
    remap: &dyn Fn(Pos) -> Pos,
) -> String {
    let (path, body) = split_path(raw);
    let body = rewrite_positions(body, pos, remap);
    let at = if path.is_empty() {
        "the file".to_string()
    } else {
        format!("`{path}`")
    };
    if let Some(rest) = body.strip_prefix("unknown field `") {
        let field = rest.split('`').next().unwrap_or_default();
        let allowed = backticked(rest.split_once(", expected").map_or("", |(_, e)| e));
        let best = allowed.iter().map(|a| (distance(field, a), *a)).min();
        let hint = match best {
            Some((d, a)) if d <= 2.max(field.len() / 3) => format!("did you mean `{a}`? "),
            _ => String::new(),
        };
        let list = if allowed.is_empty() {
            "none".to_string()
        } else {
            allowed.join(", ")
        };
        return format!(
            "unknown field `{field}` in {}: {hint}fix the spelling or remove it (allowed here: {list})",
            describe_path(path)
        );
    }
    if let Some(rest) = body.strip_prefix("unknown variant `") {
        let value = rest.split('`').next().unwrap_or_default();
        let allowed = backticked(rest.split_once(", expected").map_or("", |(_, e)| e));
        return format!(
            "{at} cannot be `{value}`: write one of {}",
            allowed.join(", ")
        );
    }
    for kind in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = body.strip_prefix(kind) {
            let (found, expected) = rest
                .rsplit_once(", expected ")
                .unwrap_or((rest, "another type"));
            if path.is_empty() {
                return format!(
                    "the file must be a mapping of settings (listen: …, backend: …, routing: …), but it is a {found}: start each top-level setting with its name and a colon"
                );
            }
            let negative = found.starts_with("integer `-") && expected.starts_with('u');
            let hint = if negative {
                " (it cannot be negative)"
            } else {
                ""
            };
            return format!(
                "{at} has the wrong type: expected {}, found {found}{hint}; fix the value",
                plain_type(expected)
            );
        }
    }
    if let Some(rest) = body.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or_default();
        let holder = if path.is_empty() {
            "the top level".to_string()
        } else {
            format!("`{path}`")
        };
        return format!("{holder} is missing the required field `{field}`: add it");
    }
    if let Some(rest) = body.strip_prefix("duplicate field `") {
        let field = rest.split('`').next().unwrap_or_default();
        return format!(
            "field `{field}` is given twice in {}: keep one of them",
            describe_path(path)
        );
    }
    if !path.is_empty() {
        // A message of our own deserializers (sizes, command access).
        return format!("`{path}`: {body}");
    }
    if body.contains("more than one document") {
        return "the file holds more than one YAML document: remove the `---` separators and keep one".into();
    }
    format!(
        "YAML syntax error: {body}; check the indentation (spaces, not tabs), quotes and brackets"
    )
}

/// Split serde_yaml's `path: message` (the path is absent for errors at the top).
fn split_path(raw: &str) -> (&str, &str) {
    if let Some((p, rest)) = raw.split_once(": ") {
        let is_path = !p.is_empty()
            && p.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']' | '?' | '-')
            })
            && !matches!(p, "invalid type" | "invalid value");
        if is_path {
            return (p, rest);
        }
    }
    ("", raw)
}

/// Drop the `at line L column C` that repeats the error's own position, and move every
/// other quoted position back to the text the user wrote.
fn rewrite_positions(body: &str, pos: Option<Pos>, remap: &dyn Fn(Pos) -> Pos) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some(i) = rest.find(" at line ") {
        out.push_str(&rest[..i]);
        let after = &rest[i + " at line ".len()..];
        let parsed = after.split_once(" column ").and_then(|(l, tail)| {
            let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
            let line = l.parse::<usize>().ok()?;
            let column = tail[..digits].parse::<usize>().ok()?;
            Some((Pos { line, column }, &tail[digits..]))
        });
        match parsed {
            Some((p, tail)) => {
                if Some(p) != pos {
                    let q = remap(p);
                    out.push_str(&format!(" at line {} column {}", q.line, q.column));
                }
                rest = tail;
            }
            None => {
                out.push_str(" at line ");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages() {
        let id = |p: Pos| p;
        let p = Some(Pos { line: 4, column: 3 });
        let m = friendly_serde_error(
            "backend: unknown field `pasword`, expected one of `master`, `password` at line 4 column 3",
            p,
            &id,
        );
        assert_eq!(
            m,
            "unknown field `pasword` in `backend`: did you mean `password`? fix the spelling or remove it (allowed here: master, password)"
        );
        let m = friendly_serde_error(
            "workers: invalid type: integer `-1`, expected usize at line 1 column 10",
            Some(Pos {
                line: 1,
                column: 10,
            }),
            &id,
        );
        assert!(m.contains("`workers` has the wrong type: expected a whole number (0 or more), found integer `-1` (it cannot be negative)"), "{m}");
        let m = friendly_serde_error(
            "found a tab character at line 2 column 1, while scanning a plain scalar at line 1 column 9",
            Some(Pos { line: 2, column: 1 }),
            &|p| Pos { line: p.line + 10, column: p.column },
        );
        assert_eq!(
            m,
            "YAML syntax error: found a tab character, while scanning a plain scalar at line 11 column 9; check the indentation (spaces, not tabs), quotes and brackets"
        );
        assert_eq!(distance("pasword", "password"), 1);
    }
}
