//! YAML (and JSON, which YAML 1.2 reads too) → `serde_json::Value`, remembering the line of every
//! node so that a core diagnostic's field path can be turned back into `file:line`.
//!
//! Scalars are resolved with the YAML 1.2 core schema (`true`, `null`, `80`, `1.5`); quoted
//! scalars are always strings. Anchors, aliases and `<<` merge keys are supported because
//! hand-written Kubernetes YAML uses them. Aliases are expanded (JSON has no references), so
//! the nodes they add are capped at [`MAX_ALIAS_NODES`]: a few hundred bytes of nested aliases
//! (a "billion laughs" bomb) would otherwise expand to billions of nodes.

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde_json::{Map, Number, Value};
use std::collections::HashMap;
use std::fmt;

/// A parsed node with the line it starts on (1-based).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub line: usize,
    pub kind: NodeKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    Scalar(Value),
    Seq(Vec<Node>),
    /// Entries in document order; the line of an entry is the line of its key.
    Map(Vec<(String, usize, Node)>),
}

/// A problem that makes the input unreadable: a syntax error or a construct JSON cannot hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.message)
    }
}

impl Node {
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            NodeKind::Map(entries) => entries.iter().find(|(k, _, _)| k == key).map(|(_, _, n)| n),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.kind, NodeKind::Scalar(Value::Null))
    }

    pub fn to_value(&self) -> Value {
        match &self.kind {
            NodeKind::Scalar(v) => v.clone(),
            NodeKind::Seq(items) => Value::Array(items.iter().map(Node::to_value).collect()),
            NodeKind::Map(entries) => {
                let mut m = Map::new();
                for (k, _, n) in entries {
                    m.insert(k.clone(), n.to_value());
                }
                Value::Object(m)
            }
        }
    }

    /// Records the line of this node and every node below it under the field path the core uses
    /// in diagnostics (`spec.http[1].route[0]`).
    pub fn record_lines(&self, path: &str, out: &mut LineMap) {
        out.0.entry(path.to_string()).or_insert(self.line);
        match &self.kind {
            NodeKind::Scalar(_) => {}
            NodeKind::Seq(items) => {
                for (i, n) in items.iter().enumerate() {
                    n.record_lines(&format!("{path}[{i}]"), out);
                }
            }
            NodeKind::Map(entries) => {
                for (k, line, n) in entries {
                    let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    out.0.entry(p.clone()).or_insert(*line);
                    n.record_lines(&p, out);
                }
            }
        }
    }
}

/// Field path → line, for one resource (or the settings object).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineMap(pub HashMap<String, usize>);

impl LineMap {
    /// The line of the deepest prefix of `path` that exists in the source: the field itself, its
    /// parent object, …, the resource. `None` only when not even the root was recorded.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let path = path.trim_end_matches('.');
        if let Some(l) = self.0.get(path) {
            return Some(*l);
        }
        // Cut at every `.` or `[` from the right; keys with dots in them (label names) are found
        // by the exact lookup above or at a longer cut before a shorter one.
        for (i, c) in path.char_indices().rev() {
            if c == '.' || c == '[' {
                if let Some(l) = self.0.get(&path[..i]) {
                    return Some(*l);
                }
            }
        }
        self.0.get("").copied()
    }
}

/// Most nodes all alias expansions of one input may add. Real configurations use aliases for a
/// shared label set or route block; a million nodes is ~100× the largest seen.
pub const MAX_ALIAS_NODES: usize = 1_000_000;

/// Parses every document of a YAML stream. Empty documents come back as null scalars.
pub fn parse_documents(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut b = Builder { stack: Vec::new(), anchors: HashMap::new(), docs: Vec::new(), alias_nodes: 0 };
    let parser = Parser::new_from_str(text);
    for item in parser {
        match item {
            Ok((event, span)) => b.event(event, span).map_err(|e| within(text, e))?,
            Err(e) => {
                return Err(within(
                    text,
                    SyntaxError {
                        line: e.marker().line(),
                        col: e.marker().col() + 1,
                        message: format!("YAML syntax error: {}", e.info()),
                    },
                ))
            }
        }
    }
    Ok(b.docs)
}

/// The parser reports an error at the end of the input on the line after the last newline,
/// which an editor does not show: point at the end of the last line instead.
fn within(text: &str, mut e: SyntaxError) -> SyntaxError {
    let lines = text.lines().count().max(1);
    if e.line > lines {
        e.line = lines;
        e.col = text.lines().last().map_or(0, |l| l.chars().count()) + 1;
    }
    e
}

enum Frame {
    Seq {
        line: usize,
        anchor: usize,
        /// Nodes in this collection so far, itself included (for alias accounting).
        size: usize,
        items: Vec<Node>,
    },
    Map {
        line: usize,
        anchor: usize,
        size: usize,
        entries: Vec<(String, usize, Node)>,
        key: Option<(String, usize)>,
        /// Keys that came from a `<<` merge: an explicit key replaces them.
        merged: Vec<String>,
    },
}

struct Builder {
    stack: Vec<Frame>,
    /// Anchored nodes and their size in nodes.
    anchors: HashMap<usize, (Node, usize)>,
    docs: Vec<Node>,
    /// Nodes added by alias expansion so far.
    alias_nodes: usize,
}

impl Builder {
    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), SyntaxError> {
        let line = span.start.line();
        let col = span.start.col() + 1;
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let tag = tag.map(|t| t.suffix.clone());
                let node = Node { line, kind: NodeKind::Scalar(resolve_scalar(&text, style, tag.as_deref())) };
                self.remember(anchor, &node, 1);
                self.push(node, 1, Some(text.into_owned()), col)?;
            }
            Event::Alias(id) => {
                let Some((target, size)) = self.anchors.get(&id) else {
                    return Err(SyntaxError { line, col, message: "alias to an unknown anchor".into() });
                };
                let size = *size;
                // Checked before the copy is made: the copy is what would exhaust memory.
                self.alias_nodes = self.alias_nodes.saturating_add(size);
                if self.alias_nodes > MAX_ALIAS_NODES {
                    return Err(SyntaxError {
                        line,
                        col,
                        message: format!(
                            "aliases expand to more than {MAX_ALIAS_NODES} nodes (nested aliases multiply); \
                             write the repeated parts out or use fewer levels of aliases"
                        ),
                    });
                }
                let node = Node { line, kind: target.kind.clone() };
                let key_text = node.as_str().map(str::to_string);
                self.push(node, size, key_text, col)?;
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq { line, anchor, size: 1, items: Vec::new() }),
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map {
                line,
                anchor,
                size: 1,
                entries: Vec::new(),
                key: None,
                merged: Vec::new(),
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, size) = match self.stack.pop() {
                    Some(Frame::Seq { line, anchor, size, items }) => {
                        let n = Node { line, kind: NodeKind::Seq(items) };
                        self.remember(anchor, &n, size);
                        (n, size)
                    }
                    Some(Frame::Map { line, anchor, size, entries, .. }) => {
                        let n = Node { line, kind: NodeKind::Map(entries) };
                        self.remember(anchor, &n, size);
                        (n, size)
                    }
                    None => return Err(SyntaxError { line, col, message: "unbalanced YAML events".into() }),
                };
                self.push(node, size, None, col)?;
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentStart(_) | Event::DocumentEnd | Event::Nothing => {}
        }
        Ok(())
    }

    fn remember(&mut self, anchor: usize, node: &Node, size: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, (node.clone(), size));
        }
    }

    /// Adds a finished node of `size` nodes to its parent (or as a document). `key_text` is the
    /// scalar's source text, used when the node is a mapping key.
    fn push(&mut self, node: Node, size: usize, key_text: Option<String>, col: usize) -> Result<(), SyntaxError> {
        match self.stack.last_mut() {
            None => self.docs.push(node),
            Some(Frame::Seq { items, size: total, .. }) => {
                *total = total.saturating_add(size);
                items.push(node)
            }
            Some(Frame::Map { entries, key, merged, size: total, .. }) => match key.take() {
                None => {
                    let Some(k) = key_text.filter(|_| matches!(node.kind, NodeKind::Scalar(_))) else {
                        return Err(SyntaxError {
                            line: node.line,
                            col,
                            message: "a mapping key must be a scalar (complex keys cannot become JSON)".into(),
                        });
                    };
                    *total = total.saturating_add(size);
                    *key = Some((k, node.line));
                }
                Some((k, _)) if k == "<<" => {
                    *total = total.saturating_add(size);
                    merge(entries, merged, node)
                }
                Some((k, kline)) => {
                    *total = total.saturating_add(size);
                    if merged.contains(&k) {
                        merged.retain(|m| *m != k);
                        entries.retain(|(e, _, _)| *e != k);
                    }
                    if entries.iter().any(|(e, _, _)| *e == k) {
                        return Err(SyntaxError {
                            line: kline,
                            col: 1,
                            message: format!("duplicate key {k:?} in a mapping"),
                        });
                    }
                    entries.push((k, kline, node));
                }
            },
        }
        Ok(())
    }
}

/// `<<: *base` or `<<: [*a, *b]`: keys not already present are copied in.
fn merge(entries: &mut Vec<(String, usize, Node)>, merged: &mut Vec<String>, node: Node) {
    let sources = match node.kind {
        NodeKind::Seq(items) => items,
        other => vec![Node { line: node.line, kind: other }],
    };
    for src in sources {
        if let NodeKind::Map(src_entries) = src.kind {
            for (k, l, n) in src_entries {
                if !entries.iter().any(|(e, _, _)| *e == k) {
                    merged.push(k.clone());
                    entries.push((k, l, n));
                }
            }
        }
    }
}

/// YAML 1.2 core schema resolution; explicit `!!str`/`!!int`/... tags win.
fn resolve_scalar(text: &str, style: ScalarStyle, tag: Option<&str>) -> Value {
    match tag {
        Some("str") => return Value::String(text.to_string()),
        Some("null") => return Value::Null,
        Some("bool") | Some("int") | Some("float") => {
            if let Some(v) = plain_value(text) {
                return v;
            }
        }
        _ => {}
    }
    if style != ScalarStyle::Plain {
        return Value::String(text.to_string());
    }
    plain_value(text).unwrap_or_else(|| Value::String(text.to_string()))
}

fn plain_value(text: &str) -> Option<Value> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Some(Value::Null),
        "true" | "True" | "TRUE" => return Some(Value::Bool(true)),
        "false" | "False" | "FALSE" => return Some(Value::Bool(false)),
        _ => {}
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = text.parse::<i64>() {
            return Some(Value::Number(i.into()));
        }
        if let Ok(u) = text.parse::<u64>() {
            return Some(Value::Number(u.into()));
        }
    }
    if let Some(hex) = text.strip_prefix("0x") {
        return i64::from_str_radix(hex, 16).ok().map(|i| Value::Number(i.into()));
    }
    if let Some(oct) = text.strip_prefix("0o") {
        return i64::from_str_radix(oct, 8).ok().map(|i| Value::Number(i.into()));
    }
    if is_float(text) {
        return text.parse::<f64>().ok().and_then(Number::from_f64).map(Value::Number);
    }
    None
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?` (infinities and NaN stay strings: JSON
/// has no place for them).
fn is_float(text: &str) -> bool {
    let s = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match frac {
        Some(f) => all_digits(int) && all_digits(f) && !(int.is_empty() && f.is_empty()),
        None => !int.is_empty() && all_digits(int),
    };
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && all_digits(e)
    });
    mantissa_ok && exp_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documents_become_json_with_core_schema_scalars() {
        let docs = parse_documents("a: 1\nb: \"1\"\nc: true\nd: ~\ne: 1.5\nf: v1\n---\n- x\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].to_value(), json!({"a": 1, "b": "1", "c": true, "d": null, "e": 1.5, "f": "v1"}));
        assert_eq!(docs[1].to_value(), json!(["x"]));
    }

    #[test]
    fn every_field_path_has_its_line() {
        let text = "spec:\n  http:\n  - route:\n    - destination:\n        host: a\n        subset: v1\n";
        let docs = parse_documents(text).unwrap();
        let mut lines = LineMap::default();
        docs[0].record_lines("", &mut lines);
        assert_eq!(lines.line_of("spec.http[0].route[0].destination.subset"), Some(6));
        assert_eq!(lines.line_of("spec.http[0].route[0].destination.port.number"), Some(4));
        assert_eq!(lines.line_of("spec.http[0]"), Some(3));
        assert_eq!(lines.line_of("spec.tcp[0]"), Some(1));
    }

    #[test]
    fn dotted_keys_are_found_whole() {
        let docs = parse_documents("labels:\n  app.kubernetes.io/name: x\n").unwrap();
        let mut lines = LineMap::default();
        docs[0].record_lines("", &mut lines);
        assert_eq!(lines.line_of("labels.app.kubernetes.io/name"), Some(2));
    }

    #[test]
    fn syntax_errors_have_line_and_column() {
        let e = parse_documents("a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        assert!(e.line >= 2, "{e}");
        let dup = parse_documents("a: 1\na: 2\n").unwrap_err();
        assert_eq!(dup.line, 2);
        assert!(dup.message.contains("duplicate"));
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let docs = parse_documents("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\nref: *b\n").unwrap();
        assert_eq!(
            docs[0].to_value(),
            json!({"base": {"x": 1, "y": 2}, "other": {"x": 1, "y": 3}, "ref": {"x": 1, "y": 2}})
        );
    }

    #[test]
    fn an_alias_bomb_is_refused_before_it_expands() {
        // 9 levels of 9 aliases each: 9^9 = 387 million strings from about 500 bytes.
        let mut text = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..=9 {
            let p = format!("*a{}", i - 1);
            text.push_str(&format!("a{i}: &a{i} [{}]\n", [p.as_str(); 9].join(", ")));
        }
        assert!(text.len() < 600, "{}", text.len());
        let e = parse_documents(&text).unwrap_err();
        assert!(e.message.contains("aliases expand to more than 1000000 nodes"), "{e}");
        assert!(e.line >= 6, "points at the alias that went over: {e}");
        // Moderate reuse is fine.
        let ok = "base: &b {x: [1, 2, 3]}\n".to_string() + &(0..100).map(|i| format!("k{i}: *b\n")).collect::<String>();
        assert_eq!(parse_documents(&ok).unwrap()[0].to_value()["k99"], json!({"x": [1, 2, 3]}));
    }

    #[test]
    fn an_error_at_the_end_of_the_input_points_at_the_last_line() {
        let text = "a: 1\nb: [1, 2\n";
        let e = parse_documents(text).unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert_eq!(e.col, 9, "just after the last character: {e}");
        let e = parse_documents("a: \"open\n").unwrap_err();
        assert_eq!(e.line, 1, "{e}");
    }

    #[test]
    fn json_is_read_too() {
        let docs = parse_documents("{\"a\": [1, \"b\", {\"c\": null}]}").unwrap();
        assert_eq!(docs[0].to_value(), json!({"a": [1, "b", {"c": null}]}));
    }

    #[test]
    fn odd_scalars_stay_strings() {
        let docs = parse_documents("a: .inf\nb: 1.2.3\nc: 0x1F\nd: '5'\ne: !!str 5\n").unwrap();
        assert_eq!(docs[0].to_value(), json!({"a": ".inf", "b": "1.2.3", "c": 31, "d": "5", "e": "5"}));
    }
}
