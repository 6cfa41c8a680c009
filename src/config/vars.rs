//! `${VAR}`, `${VAR:-default}` and `$$` in the raw text of the file.
//!
//! - `${VAR}` is the value of `VAR`; it is an error if `VAR` is not set.
//! - `${VAR:-default}` is the value of `VAR`, or `default` if `VAR` is unset or empty.
//!   The default runs to the first `}` on the same line.
//! - `${VAR-default}` is the value of `VAR` (empty if set empty), or `default` if `VAR`
//!   is unset: as in the shell, for a value that may be set to nothing on purpose
//!   (`REDSPLIT_REPLICAS=""`: no replicas).
//! - `$$` is a literal `$`; any other `$` is left as it is.
//! - Comments are left alone, so a commented-out `# password: ${PW}` needs no `PW`.
//!
//! The value is inserted as text, as `envsubst` would: it becomes part of the YAML.
//! [`Expanded::source_offset`] maps every byte of the result back to the text written,
//! so errors point at the right line and column however long the values are.

/// A variable reference the text could not resolve, at a byte offset of the source.
#[derive(Debug)]
pub(crate) struct VarError {
    /// Byte offset of the `$` in the source text.
    pub offset: usize,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// A value taken from the environment.
#[derive(Debug)]
pub(crate) struct Inserted {
    /// The variable's name.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// One run of the expanded text and where it came from.
#[derive(Debug)]
struct Piece {
    /// Byte offset in the expanded text.
    out: usize,
    /// Byte offset in the source text.
    src: usize,
    /// Length in the expanded text.
    len: usize,
    /// Copied unchanged (offsets map one to one), or a substitution (every offset maps
    /// to its `$`).
    verbatim: bool,
}

/// The text after interpolation.
#[derive(Debug)]
pub(crate) struct Expanded {
    /// The text to parse.
    pub text: String,
    /// Runs of `text` in order, covering it.
    pieces: Vec<Piece>,
    /// Every value that came from the environment (not defaults, which are in the file).
    pub inserted: Vec<Inserted>,
}

impl Expanded {
    /// The byte offset in the source text of byte `out` of the expanded text. Inside a
    /// substituted value, that is the offset of its `${`.
    pub fn source_offset(&self, out: usize) -> usize {
        let i = self.pieces.partition_point(|p| p.out <= out);
        match i.checked_sub(1).and_then(|i| self.pieces.get(i)) {
            Some(p) if p.verbatim => p.src + (out - p.out).min(p.len),
            Some(p) => p.src,
            None => out,
        }
    }

    fn copy(&mut self, src: &str, from: usize, to: usize) {
        if to > from {
            self.pieces.push(Piece {
                out: self.text.len(),
                src: from,
                len: to - from,
                verbatim: true,
            });
            self.text.push_str(&src[from..to]);
        }
    }

    fn substitute(&mut self, at: usize, value: &str) {
        self.pieces.push(Piece {
            out: self.text.len(),
            src: at,
            len: value.len(),
            verbatim: false,
        });
        self.text.push_str(value);
    }
}

/// Whether a variable's name says it holds a secret (its value is then masked in every
/// error message, wherever it ends up in the file).
pub(crate) fn secret_name(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    ["PASS", "SECRET", "TOKEN", "KEY", "CREDENTIAL", "AUTH"]
        .iter()
        .any(|w| n.contains(w))
}

fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Replace the references in `src`, looking variables up with `env`.
pub(crate) fn interpolate(
    src: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Expanded, VarError> {
    let b = src.as_bytes();
    let mut out = Expanded {
        text: String::with_capacity(src.len()),
        pieces: Vec::new(),
        inserted: Vec::new(),
    };
    // Start of the run not yet copied.
    let mut run = 0;
    // Inside a quoted scalar (which may span lines), and which quote closes it.
    let mut quote: Option<u8> = None;
    let mut in_comment = false;
    // The byte before this one on the same line, and the last non-blank one.
    let mut prev: Option<u8> = None;
    let mut last_solid: Option<u8> = None;
    let mut i = 0;
    while i < b.len() {
        let Some(&c) = b.get(i) else { break };
        if c == b'\n' {
            in_comment = false;
            prev = None;
            last_solid = None;
            i += 1;
            continue;
        }
        if in_comment {
            i += 1;
            continue;
        }
        match quote {
            Some(b'"') if c == b'\\' => {
                // Skip the escaped byte, unless it ends the line.
                prev = Some(c);
                i += if b.get(i + 1).is_some_and(|&n| n != b'\n') {
                    2
                } else {
                    1
                };
                continue;
            }
            Some(q) if c == q => {
                if q == b'\'' && b.get(i + 1) == Some(&b'\'') {
                    prev = Some(c);
                    i += 2;
                    continue;
                }
                quote = None;
            }
            Some(_) => {}
            None => {
                let after_blank = prev.is_none_or(|p| p == b' ' || p == b'\t');
                if c == b'#' && after_blank {
                    in_comment = true;
                    i += 1;
                    continue;
                }
                let starts_scalar = prev
                    .is_none_or(|p| matches!(p, b' ' | b'\t' | b'[' | b'{' | b','))
                    && last_solid
                        .is_none_or(|p| matches!(p, b':' | b'-' | b'[' | b'{' | b',' | b'?'));
                if (c == b'"' || c == b'\'') && starts_scalar {
                    quote = Some(c);
                }
            }
        }
        if c == b'$' {
            match b.get(i + 1) {
                Some(b'$') => {
                    out.copy(src, run, i);
                    out.substitute(i, "$");
                    i += 2;
                    run = i;
                    prev = Some(c);
                    last_solid = Some(c);
                    continue;
                }
                Some(b'{') => {
                    let (end, value) = reference(src, i, env, &mut out.inserted)?;
                    out.copy(src, run, i);
                    out.substitute(i, &value);
                    i = end;
                    run = i;
                    prev = Some(b'}');
                    last_solid = Some(b'}');
                    continue;
                }
                _ => {}
            }
        }
        prev = Some(c);
        if c != b' ' && c != b'\t' {
            last_solid = Some(c);
        }
        i += 1;
    }
    out.copy(src, run, b.len());
    Ok(out)
}

/// Resolve the `${…}` starting at byte `at`: the offset just past it and its value.
fn reference(
    src: &str,
    at: usize,
    env: &dyn Fn(&str) -> Option<String>,
    inserted: &mut Vec<Inserted>,
) -> Result<(usize, String), VarError> {
    let err = |message: String| VarError {
        offset: at,
        message,
    };
    let body_start = at + 2;
    let line_end = src[body_start..]
        .find('\n')
        .map_or(src.len(), |n| body_start + n);
    let Some(close) = src[body_start..line_end].find('}').map(|n| body_start + n) else {
        return Err(err(
            "`${` is not closed on this line: write ${NAME} or ${NAME:-default}, or $$ for a literal $".into(),
        ));
    };
    let body = &src[body_start..close];
    // The default, and whether it also stands in for an empty value.
    let (name, default, if_empty) = match body
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
    {
        None => (body, None, false),
        Some(n) if body[n..].starts_with(":-") => (&body[..n], Some(&body[n + 2..]), true),
        Some(n) if body[n..].starts_with('-') => (&body[..n], Some(&body[n + 1..]), false),
        Some(_) => {
            return Err(err(format!(
                "`${{{body}}}` is not a variable reference this file understands: write ${{NAME}}, ${{NAME:-default}} or ${{NAME-default}}, or $$ for a literal $"
            )))
        }
    };
    if !valid_name(name) {
        return Err(err(format!(
            "`${{{body}}}`: `{name}` is not a valid variable name; use letters, digits and _, not starting with a digit"
        )));
    }
    let value = match (env(name), default) {
        (Some(v), Some(d)) if v.is_empty() && if_empty => d.to_string(),
        (Some(v), _) => {
            inserted.push(Inserted {
                name: name.to_string(),
                value: v.clone(),
            });
            v
        }
        (None, Some(d)) => d.to_string(),
        (None, None) => {
            return Err(err(format!(
                "environment variable {name} is not set; set it or write ${{{name}:-value}}"
            )))
        }
    };
    Ok((close + 1, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("10.0.0.1:6379".into()),
            "EMPTY" => Some(String::new()),
            "PW" => Some("s3cret".into()),
            _ => None,
        }
    }

    fn run(s: &str) -> Result<String, String> {
        interpolate(s, &env)
            .map(|e| e.text)
            .map_err(|e| format!("{}: {}", e.offset, e.message))
    }

    #[test]
    fn substitutes_values_and_defaults() {
        assert_eq!(run("a: ${HOST}\n").unwrap(), "a: 10.0.0.1:6379\n");
        assert_eq!(run("a: ${NOPE:-x:1}\n").unwrap(), "a: x:1\n");
        assert_eq!(run("a: ${EMPTY:-d}\n").unwrap(), "a: d\n");
        assert_eq!(run("a: ${EMPTY}\n").unwrap(), "a: \n");
        assert_eq!(run("a: ${HOST:-d}\n").unwrap(), "a: 10.0.0.1:6379\n");
        assert_eq!(run("a: ${NOPE:-}\n").unwrap(), "a: \n");
        assert_eq!(run("a: [${NOPE:-x, y}]\n").unwrap(), "a: [x, y]\n");
        // Without the colon, a value set empty stays empty.
        assert_eq!(run("a: [${EMPTY-x, y}]\n").unwrap(), "a: []\n");
        assert_eq!(run("a: [${NOPE-x, y}]\n").unwrap(), "a: [x, y]\n");
        assert_eq!(run("a: ${HOST-d}\n").unwrap(), "a: 10.0.0.1:6379\n");
    }

    #[test]
    fn dollars() {
        assert_eq!(run("a: p$$w\n").unwrap(), "a: p$w\n");
        assert_eq!(run("a: $$${PW}\n").unwrap(), "a: $s3cret\n");
        assert_eq!(run("a: $x $ {\n").unwrap(), "a: $x $ {\n");
        assert_eq!(run("a: \"${PW}\"\n").unwrap(), "a: \"s3cret\"\n");
    }

    #[test]
    fn comments_are_left_alone() {
        let s = "# ${NOPE}\na: 1 # ${NOPE}\nb: 'x # ${PW}'\nc: \"#${PW}\"\nd: a#${PW}\n";
        assert_eq!(
            run(s).unwrap(),
            "# ${NOPE}\na: 1 # ${NOPE}\nb: 'x # s3cret'\nc: \"#s3cret\"\nd: a#s3cret\n"
        );
        assert_eq!(
            run("b: 'it''s # ${PW}'\n").unwrap(),
            "b: 'it''s # s3cret'\n"
        );
        assert_eq!(run("b: don't # ${NOPE}\n").unwrap(), "b: don't # ${NOPE}\n");
    }

    #[test]
    fn errors() {
        assert_eq!(
            run("a: 1\nb: ${REDIS_PASSWORD}\n").unwrap_err(),
            "8: environment variable REDIS_PASSWORD is not set; set it or write ${REDIS_PASSWORD:-value}"
        );
        assert!(run("a: ${HOST\n}")
            .unwrap_err()
            .starts_with("3: `${` is not closed"));
        assert!(run("a: ${1X}")
            .unwrap_err()
            .contains("not a valid variable name"));
        assert!(run("a: ${}")
            .unwrap_err()
            .contains("not a valid variable name"));
        assert!(run("a: ${X:?no}")
            .unwrap_err()
            .contains("not a variable reference"));
    }

    #[test]
    fn offsets_map_back() {
        let e = interpolate("a: ${HOST} b\nc: $$d", &env).unwrap();
        assert_eq!(e.text, "a: 10.0.0.1:6379 b\nc: $d");
        assert_eq!(e.source_offset(0), 0);
        assert_eq!(e.source_offset(3), 3);
        assert_eq!(e.source_offset(10), 3);
        assert_eq!(e.source_offset(17), 11);
        assert_eq!(e.source_offset(e.text.find('$').unwrap()), 16);
        assert_eq!(e.source_offset(e.text.find('d').unwrap()), 18);
        assert_eq!(e.inserted.len(), 1);
        assert!(
            secret_name("REDIS_PASSWORD")
                && secret_name("ADMIN_TOKEN")
                && !secret_name("REDSPLIT_LISTEN")
        );
    }
}
