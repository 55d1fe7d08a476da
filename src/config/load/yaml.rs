//! The YAML text as a tree of nodes that remember where they were written.
//!
//! serde would stop at the first problem; the loader needs every problem with its line, so it
//! walks this tree by hand. The tree is built from the event stream of `granit-parser` (the
//! parser serde-saphyr is built on, re-exported by it). A syntax error ends the tree where it
//! happened: what was read before it is kept, so the loader can still check that part.

use std::collections::HashMap;

use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle, Span};

/// Caps the nodes an alias may copy, so `&a [*b, *b, ...]` chains cannot exhaust memory.
const MAX_NODES: usize = 100_000;

/// One YAML node and where it starts (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub kind: Kind,
    pub line: usize,
    pub column: usize,
    /// The line it ends on; `usize::MAX` for a collection a syntax error left open.
    pub end_line: usize,
}

/// What a node holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A scalar; `plain` when it was written without quotes, block style or tag, so that
    /// `25`, `true` or `~` keep their YAML meaning.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    /// Entries in file order; duplicate keys are kept for the loader to report.
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// A plain `~`, `null` or nothing at all.
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { text, plain: true }
            if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// What kind of value this is, for "expected X, found Y" messages.
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            _ if self.is_null() => "nothing",
            Kind::Scalar { .. } => "a scalar",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }

    fn size(&self) -> usize {
        match &self.kind {
            Kind::Scalar { .. } => 1,
            Kind::Seq(items) => 1 + items.iter().map(Node::size).sum::<usize>(),
            Kind::Map(entries) => {
                1 + entries
                    .iter()
                    .map(|(k, v)| k.size() + v.size())
                    .sum::<usize>()
            }
        }
    }
}

/// A problem found while reading the YAML syntax itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// The result of reading the text.
#[derive(Debug)]
pub(crate) struct Document {
    /// The first document's root; `None` for an empty file.
    pub root: Option<Node>,
    pub errors: Vec<SyntaxError>,
    /// The line of the syntax error that cut the tree short: nodes that end there or later
    /// may be incomplete, and keys after it are missing.
    pub cut: Option<usize>,
}

enum Frame {
    Seq {
        start: Node,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        start: Node,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    nodes: usize,
}

impl Builder {
    /// Hangs a finished node on the collection being built, or makes it the root.
    fn attach(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }

    fn finish(&mut self, node: Node, anchor: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        self.attach(node);
    }

    /// Closes the innermost collection, which ends on `end_line`.
    fn close(&mut self, end_line: usize) {
        match self.stack.pop() {
            Some(Frame::Seq {
                mut start,
                anchor,
                items,
            }) => {
                start.kind = Kind::Seq(items);
                start.end_line = end_line;
                self.finish(start, anchor);
            }
            // A key whose value was lost to a syntax error is dropped.
            Some(Frame::Map {
                mut start,
                anchor,
                entries,
                ..
            }) => {
                start.kind = Kind::Map(entries);
                start.end_line = end_line;
                self.finish(start, anchor);
            }
            None => {}
        }
    }
}

fn at(span: &Span) -> Node {
    Node {
        kind: Kind::Seq(Vec::new()),
        line: span.start.line(),
        column: span.start.col() + 1,
        end_line: span.end.line(),
    }
}

/// Reads `text` into a tree. Only the first YAML document is used; more are an error.
pub(crate) fn parse(text: &str) -> Document {
    let mut parser = Parser::new_from_str(text);
    let mut b = Builder::default();
    let mut errors = Vec::new();
    let mut cut = None;
    let mut documents = 0;
    while let Some(item) = parser.next_event() {
        let (event, span) = match item {
            Ok(ev) => ev,
            Err(e) => {
                let mark = e.marker();
                errors.push(SyntaxError {
                    line: mark.line(),
                    column: mark.col() + 1,
                    message: format!("YAML syntax error: {}", e.info()),
                });
                cut = Some(mark.line());
                break;
            }
        };
        match event {
            Event::DocumentStart(..) => {
                documents += 1;
                if documents > 1 {
                    errors.push(SyntaxError {
                        line: span.start.line(),
                        column: span.start.col() + 1,
                        message: "only one YAML document is allowed in the configuration file"
                            .to_string(),
                    });
                    break;
                }
            }
            Event::Scalar(value, style, anchor, tag) => {
                b.nodes += 1;
                let mut node = at(&span);
                node.kind = Kind::Scalar {
                    text: value.into_owned(),
                    plain: style == ScalarStyle::Plain && tag.is_none(),
                };
                b.finish(node, anchor);
            }
            Event::SequenceStart(_, anchor, _) => {
                b.nodes += 1;
                b.stack.push(Frame::Seq {
                    start: at(&span),
                    anchor,
                    items: Vec::new(),
                });
            }
            Event::MappingStart(_, anchor, _) => {
                b.nodes += 1;
                b.stack.push(Frame::Map {
                    start: at(&span),
                    anchor,
                    entries: Vec::new(),
                    key: None,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => b.close(span.end.line()),
            Event::Alias(id) => {
                let Some(mut node) = b.anchors.get(&id).cloned() else {
                    continue;
                };
                b.nodes += node.size();
                if b.nodes > MAX_NODES {
                    errors.push(SyntaxError {
                        line: span.start.line(),
                        column: span.start.col() + 1,
                        message: format!("aliases expand to more than {MAX_NODES} nodes"),
                    });
                    cut = Some(span.start.line());
                    break;
                }
                // Problems in the copy are reported where the alias is.
                node.line = span.start.line();
                node.column = span.start.col() + 1;
                node.end_line = span.end.line();
                b.attach(node);
            }
            _ => {}
        }
    }
    while !b.stack.is_empty() {
        b.close(usize::MAX);
    }
    Document {
        root: b.root,
        errors,
        cut,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(node: &Node) -> &str {
        match &node.kind {
            Kind::Scalar { text, .. } => text,
            other => panic!("not a scalar: {other:?}"),
        }
    }

    #[test]
    fn nodes_carry_their_line_and_column() {
        let doc = parse("# c\na: 1\nb:\n  - x\n  - \"y\"\n");
        assert!(doc.errors.is_empty(), "{:?}", doc.errors);
        let Some(Node {
            kind: Kind::Map(entries),
            ..
        }) = doc.root
        else {
            panic!("root is not a map");
        };
        assert_eq!((entries[0].0.line, entries[0].0.column), (2, 1));
        assert_eq!((entries[0].1.line, entries[0].1.column), (2, 4));
        let Kind::Seq(items) = &entries[1].1.kind else {
            panic!("b is not a list");
        };
        assert_eq!((items[1].line, items[1].column), (5, 5));
        assert_eq!(scalar(&items[1]), "y");
        assert!(matches!(items[1].kind, Kind::Scalar { plain: false, .. }));
    }

    #[test]
    fn syntax_error_keeps_what_came_before() {
        let doc = parse("a: 1\nb: [x, y\nc: 3\n");
        assert_eq!(doc.errors.len(), 1);
        assert_eq!(doc.cut, Some(3));
        assert!(doc.errors[0].message.starts_with("YAML syntax error"));
        let Some(Node {
            kind: Kind::Map(entries),
            ..
        }) = doc.root
        else {
            panic!("root is not a map");
        };
        assert_eq!(scalar(&entries[0].0), "a");
    }

    #[test]
    fn aliases_are_copied_to_the_alias_position() {
        let doc = parse("a: &x {p: 1}\nb: *x\n");
        let Some(Node {
            kind: Kind::Map(entries),
            ..
        }) = doc.root
        else {
            panic!("root is not a map");
        };
        assert_eq!(entries[1].1.line, 2);
        assert!(matches!(&entries[1].1.kind, Kind::Map(e) if scalar(&e[0].1) == "1"));
    }

    #[test]
    fn a_second_document_is_an_error() {
        let doc = parse("a: 1\n---\nb: 2\n");
        assert_eq!(doc.errors.len(), 1);
        assert_eq!(doc.errors[0].line, 2);
    }
}
