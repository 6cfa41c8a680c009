//! Positions in the YAML text: where each setting is, found by its path.
//!
//! `serde_yaml` locates the errors it finds itself, but a check across settings (a
//! rule's budget against the poll interval) needs to find a setting again after
//! parsing. [`SourceMap`] reads the text as positioned events (`yaml-rust2`) and keeps,
//! for every node, its path in the form `serde_yaml` uses in its own messages:
//! `listen`, `backend.replicas[1]`, `routing.rules[2].max_lag_ms`.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column (in characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
}

/// Converts between byte offsets and line/column positions of one text.
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    /// Byte offset of the start of each line.
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    /// Index `text`.
    pub fn new(text: &'a str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { text, starts }
    }

    /// The position of byte `offset` (clamped to the text).
    pub fn pos(&self, offset: usize) -> Pos {
        let offset = offset.min(self.text.len());
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts.get(line - 1).copied().unwrap_or(0);
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        Pos { line, column }
    }

    /// The byte offset of `pos` (clamped to its line and to the text).
    pub fn offset(&self, pos: Pos) -> usize {
        let Some(&start) = self.starts.get(pos.line.saturating_sub(1)) else {
            return self.text.len();
        };
        let end = self.starts.get(pos.line).map_or(self.text.len(), |&e| e);
        let line = &self.text[start..end];
        start
            + line
                .char_indices()
                .nth(pos.column.saturating_sub(1))
                .map_or(line.len(), |(i, _)| i)
    }
}

/// One node of the YAML tree.
#[derive(Debug)]
struct Node {
    /// Where the node's key is, for a value in a mapping.
    key: Option<Pos>,
    /// Where the node's value starts.
    value: Pos,
    /// The value, if it is a scalar.
    scalar: Option<String>,
}

/// A key given twice in one mapping.
#[derive(Debug)]
pub(crate) struct Duplicate {
    /// Path of the mapping.
    pub parent: String,
    /// The key.
    pub key: String,
    /// Where it is first given.
    pub first: Pos,
    /// Where it is given again.
    pub again: Pos,
}

/// Every node of a YAML document by path.
#[derive(Debug)]
pub(crate) struct SourceMap {
    nodes: HashMap<String, Node>,
    /// Keys given twice, in the order met.
    pub duplicates: Vec<Duplicate>,
    /// Where a second document starts, if the text holds more than one.
    pub second_document: Option<Pos>,
}

/// Text that is not well-formed YAML.
#[derive(Debug)]
pub(crate) struct SyntaxError {
    /// Where the parser gave up.
    pub pos: Pos,
    /// The parser's words.
    pub message: String,
}

impl SourceMap {
    /// Read `text`.
    pub fn parse(text: &str) -> Result<SourceMap, SyntaxError> {
        let mut b = Builder {
            stack: Vec::new(),
            nodes: HashMap::new(),
            duplicates: Vec::new(),
            documents: 0,
            second_document: None,
        };
        Parser::new_from_str(text)
            .load(&mut b, true)
            .map_err(|e| SyntaxError {
                pos: Pos {
                    line: e.marker().line(),
                    column: e.marker().col() + 1,
                },
                message: e.info().to_string(),
            })?;
        Ok(SourceMap {
            nodes: b.nodes,
            duplicates: b.duplicates,
            second_document: b.second_document,
        })
    }

    /// Where the setting at `path` is, if the file gives it: its value if that is a
    /// scalar, else (a mapping, a list, nothing) its key.
    pub fn find(&self, path: &str) -> Option<Pos> {
        let n = self.nodes.get(path)?;
        match (n.key, n.scalar.as_deref()) {
            (Some(k), None | Some("" | "~" | "null")) => Some(k),
            _ => Some(n.value),
        }
    }

    /// Where the setting at `path` is or, if the file does not give it, where the
    /// nearest enclosing setting is (`routing.rules[2]` for an inherited
    /// `routing.rules[2].max_lag_ms`).
    pub fn locate(&self, path: &str) -> Option<Pos> {
        let mut p = path;
        loop {
            if let Some(pos) = self.find(p) {
                return Some(pos);
            }
            if p.is_empty() {
                return None;
            }
            p = parent(p);
        }
    }

    /// Every scalar with its path.
    pub fn scalars(&self) -> impl Iterator<Item = (&str, &str)> {
        self.nodes
            .iter()
            .filter_map(|(k, n)| n.scalar.as_deref().map(|s| (k.as_str(), s)))
    }
}

/// The path one level up: `a.b[2]` → `a.b` → `a` → ``.
pub(crate) fn parent(path: &str) -> &str {
    match path.rfind(['.', '[']) {
        Some(i) => &path[..i],
        None => "",
    }
}

/// What the next node in a mapping is.
#[derive(Debug)]
enum Expect {
    /// A key.
    Key,
    /// The value of this key, written at this position.
    Value(String, Pos),
    /// The rest of a key that is itself a mapping or sequence.
    ComplexKey,
}

#[derive(Debug)]
enum Frame {
    Map {
        path: String,
        expect: Expect,
        seen: HashMap<String, Pos>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

struct Builder {
    stack: Vec<Frame>,
    nodes: HashMap<String, Node>,
    duplicates: Vec<Duplicate>,
    documents: usize,
    second_document: Option<Pos>,
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl Builder {
    /// Place a node that starts at `pos`. Returns its path, or `None` if it is (part of)
    /// a key rather than a value.
    fn place(&mut self, pos: Pos, scalar: Option<&str>, container: bool) -> Option<String> {
        let (path, key) = match self.stack.last_mut() {
            None => {
                if self.documents > 1 {
                    return None;
                }
                (String::new(), None)
            }
            Some(Frame::Seq { path, next }) => {
                *next += 1;
                let path = format!("{path}[{}]", *next - 1);
                if *next == 1 {
                    let parent = parent(&path).to_string();
                    self.starts_at(&parent, pos);
                }
                (path, None)
            }
            Some(Frame::Map { path, expect, seen }) => match std::mem::replace(expect, Expect::Key)
            {
                Expect::Key => {
                    if seen.is_empty() {
                        let parent = path.clone();
                        self.starts_at(&parent, pos);
                    }
                    let Some(Frame::Map { path, expect, seen }) = self.stack.last_mut() else {
                        return None;
                    };
                    match (scalar, container) {
                        (Some(k), _) => {
                            if let Some(&first) = seen.get(k) {
                                self.duplicates.push(Duplicate {
                                    parent: path.clone(),
                                    key: k.to_string(),
                                    first,
                                    again: pos,
                                });
                            } else {
                                seen.insert(k.to_string(), pos);
                            }
                            *expect = Expect::Value(k.to_string(), pos);
                        }
                        (None, true) => *expect = Expect::ComplexKey,
                        (None, false) => *expect = Expect::Value("?".into(), pos),
                    }
                    return None;
                }
                Expect::Value(k, at) => (join(path, &k), Some(at)),
                Expect::ComplexKey => {
                    *expect = Expect::ComplexKey;
                    return None;
                }
            },
        };
        self.nodes.entry(path.clone()).or_insert(Node {
            key,
            value: pos,
            scalar: scalar.map(str::to_string),
        });
        Some(path)
    }

    /// A block mapping or sequence is reported where its first key or item is; the
    /// parser's mark for its start can lie past that.
    fn starts_at(&mut self, path: &str, pos: Pos) {
        if let Some(n) = self.nodes.get_mut(path) {
            if (pos.line, pos.column) < (n.value.line, n.value.column) {
                n.value = pos;
            }
        }
    }

    /// Open a mapping or sequence starting at `pos`.
    fn open(&mut self, pos: Pos, map: bool) {
        // Containers inside a complex key or a later document get throw-away paths.
        let path = self.place(pos, None, true).unwrap_or_else(|| "?".into());
        self.stack.push(if map {
            Frame::Map {
                path,
                expect: Expect::Key,
                seen: HashMap::new(),
            }
        } else {
            Frame::Seq { path, next: 0 }
        });
    }

    fn close(&mut self) {
        self.stack.pop();
        if let Some(Frame::Map { expect, .. }) = self.stack.last_mut() {
            if matches!(expect, Expect::ComplexKey) {
                *expect = Expect::Value("?".into(), Pos { line: 0, column: 0 });
            }
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Pos {
            line: mark.line(),
            column: mark.col() + 1,
        };
        match ev {
            Event::Scalar(v, ..) => {
                self.place(pos, Some(&v), false);
            }
            Event::Alias(_) => {
                self.place(pos, None, false);
            }
            Event::MappingStart(..) => self.open(pos, true),
            Event::SequenceStart(..) => self.open(pos, false),
            Event::MappingEnd | Event::SequenceEnd => self.close(),
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents == 2 {
                    self.second_document = Some(pos);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_positions() {
        let text = "listen: a\nbackend:\n  replicas: [x, \"y\"]\nrouting:\n  rules:\n    - name: r\n      max_lag_ms: 5\n    - {name: s}\n";
        let m = SourceMap::parse(text).unwrap();
        assert_eq!(m.locate("listen"), Some(Pos { line: 1, column: 9 }));
        assert_eq!(
            m.locate("backend.replicas[1]"),
            Some(Pos {
                line: 3,
                column: 17
            })
        );
        assert_eq!(
            m.locate("routing.rules[0].max_lag_ms"),
            Some(Pos {
                line: 7,
                column: 19
            })
        );
        // Not given: the rule itself.
        assert_eq!(
            m.locate("routing.rules[1].max_lag_ms"),
            Some(Pos { line: 8, column: 7 })
        );
        assert_eq!(
            m.locate("routing.rules[0].wait.replicas"),
            Some(Pos { line: 6, column: 7 })
        );
        assert!(m.duplicates.is_empty());
        let scalars: HashMap<_, _> = m.scalars().collect();
        assert_eq!(scalars["backend.replicas[1]"], "y");
    }

    #[test]
    fn duplicates_and_complex_keys() {
        let m = SourceMap::parse("a: 1\n? [x]\n: 2\nb:\n  c: 1\n  c: 2\n").unwrap();
        assert_eq!(m.duplicates.len(), 1);
        assert_eq!(m.duplicates[0].parent, "b");
        assert_eq!(m.duplicates[0].first, Pos { line: 5, column: 3 });
        assert_eq!(m.duplicates[0].again, Pos { line: 6, column: 3 });
        let e = SourceMap::parse("a: [1\n").unwrap_err();
        assert_eq!(e.pos.line, 2, "{e:?}");
        let m = SourceMap::parse("a: 1\n---\nb: 2\n").unwrap();
        assert_eq!(m.second_document, Some(Pos { line: 2, column: 1 }));
        let m = SourceMap::parse("a:\nb: 2\n").unwrap();
        assert_eq!(m.locate("a"), Some(Pos { line: 1, column: 1 }));
    }

    #[test]
    fn line_index_round_trips() {
        let t = "ab\néx: y\n\nz";
        let li = LineIndex::new(t);
        for (off, _) in t.char_indices() {
            assert_eq!(li.offset(li.pos(off)), off);
        }
        assert_eq!(li.pos(t.find('x').unwrap()), Pos { line: 2, column: 2 });
        assert_eq!(li.pos(t.len()), Pos { line: 4, column: 2 });
    }
}
