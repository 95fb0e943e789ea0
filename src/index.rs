//! The per-VirtualService match index.
//!
//! Istio routes are first-match in order, so an index may only narrow the candidates, never
//! reorder them. Every match block is filed under one key that is a *necessary* condition for it
//! to match (its exact URI, its URI prefix, a literal prefix of its URI regex, one exact header
//! value), or under `rest` when it has none. A lookup visits each candidate list in ascending
//! entry order and stops a list as soon as it passes the best entry found so far, so the winner is
//! always the lowest-numbered entry that matches — the same as a linear scan.

use std::borrow::Cow;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    UriExact { path: String, ignore_case: bool },
    UriPrefix { prefix: String, ignore_case: bool },
    Header { name: String, value: String },
    Rest,
}

#[derive(Debug, Clone, Default)]
struct Trie {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone, Default)]
struct Node {
    /// Sorted by byte, so lookup is a binary search.
    children: Vec<(u8, u32)>,
    entries: Vec<u32>,
}

impl Trie {
    fn insert(&mut self, key: &[u8], entry: u32) {
        if self.nodes.is_empty() {
            self.nodes.push(Node::default());
        }
        let mut node = 0usize;
        for &b in key {
            node = match self.nodes[node].children.binary_search_by_key(&b, |c| c.0) {
                Ok(i) => self.nodes[node].children[i].1 as usize,
                Err(i) => {
                    let id = self.nodes.len();
                    self.nodes.push(Node::default());
                    self.nodes[node].children.insert(i, (b, id as u32));
                    id
                }
            };
        }
        self.nodes[node].entries.push(entry);
    }

    /// Calls `visit` with the entry list of every stored prefix of `path`, shortest first.
    fn walk<'a>(&'a self, path: impl Iterator<Item = u8>, mut visit: impl FnMut(&'a [u32])) {
        let Some(mut node) = self.nodes.first() else { return };
        if !node.entries.is_empty() {
            visit(&node.entries);
        }
        for b in path {
            match node.children.binary_search_by_key(&b, |c| c.0) {
                Ok(i) => node = &self.nodes[node.children[i].1 as usize],
                Err(_) => return,
            }
            if !node.entries.is_empty() {
                visit(&node.entries);
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct PathIndex {
    exact: HashMap<String, Vec<u32>>,
    exact_ci: HashMap<String, Vec<u32>>,
    prefix: Trie,
    prefix_ci: Trie,
    headers: Vec<(String, HashMap<String, Vec<u32>>)>,
    rest: Vec<u32>,
}

impl PathIndex {
    /// Entries must be added in ascending order.
    pub fn add(&mut self, entry: u32, key: Key) {
        match key {
            Key::UriExact { path, ignore_case: false } => self.exact.entry(path).or_default().push(entry),
            Key::UriExact { path, ignore_case: true } => {
                self.exact_ci.entry(path.to_ascii_lowercase()).or_default().push(entry)
            }
            Key::UriPrefix { prefix, ignore_case: false } => self.prefix.insert(prefix.as_bytes(), entry),
            Key::UriPrefix { prefix, ignore_case: true } => {
                self.prefix_ci.insert(prefix.to_ascii_lowercase().as_bytes(), entry)
            }
            Key::Header { name, value } => {
                let pos = match self.headers.iter().position(|(n, _)| *n == name) {
                    Some(p) => p,
                    None => {
                        self.headers.push((name, HashMap::new()));
                        self.headers.len() - 1
                    }
                };
                self.headers[pos].1.entry(value).or_default().push(entry);
            }
            Key::Rest => self.rest.push(entry),
        }
    }

    /// The lowest entry for which `matches` holds, among those whose key fits the request.
    pub fn first_match<'r>(
        &self,
        path: &str,
        header: impl Fn(&str) -> Option<Cow<'r, str>>,
        mut matches: impl FnMut(u32) -> bool,
    ) -> Option<u32> {
        let mut best = u32::MAX;
        let mut scan = |list: &[u32]| {
            for &e in list {
                if e >= best {
                    break;
                }
                if matches(e) {
                    best = e;
                    break;
                }
            }
        };
        if let Some(list) = self.exact.get(path) {
            scan(list);
        }
        if !self.exact_ci.is_empty() {
            if let Some(list) = self.exact_ci.get(&path.to_ascii_lowercase()) {
                scan(list);
            }
        }
        self.prefix.walk(path.bytes(), &mut scan);
        self.prefix_ci.walk(path.bytes().map(|b| b.to_ascii_lowercase()), &mut scan);
        for (name, values) in &self.headers {
            if let Some(v) = header(name) {
                if let Some(list) = values.get(v.as_ref()) {
                    scan(list);
                }
            }
        }
        scan(&self.rest);
        (best != u32::MAX).then_some(best)
    }
}

/// A literal string every match of the anchored regex must start with, if one is obvious:
/// `/api/v[0-9]+/.*` → `/api/v`. Conservative: any alternation or flag gives `None`.
pub fn regex_literal_prefix(pattern: &str) -> Option<String> {
    if pattern.contains('|') {
        return None;
    }
    let mut out = String::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        let lit = match c {
            // `\<` and `\>` are word boundaries in regex-lite, not literals.
            '\\' => match chars.next() {
                Some(e) if e.is_ascii_punctuation() && !matches!(e, '<' | '>') => e,
                _ => break,
            },
            '.' | '+' | '*' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '^' | '$' => break,
            c => c,
        };
        // A quantifier that may repeat zero times makes the literal before it optional.
        if matches!(chars.peek(), Some('*' | '?' | '{')) {
            break;
        }
        out.push(lit);
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_prefix_of_common_regexes() {
        assert_eq!(regex_literal_prefix("/api/v[0-9]+/.*").as_deref(), Some("/api/v"));
        assert_eq!(regex_literal_prefix("/users/\\d+").as_deref(), Some("/users/"));
        assert_eq!(regex_literal_prefix("/a\\.b.*").as_deref(), Some("/a.b"));
        assert_eq!(regex_literal_prefix("/ab?c").as_deref(), Some("/a"));
        assert_eq!(regex_literal_prefix("/ab*").as_deref(), Some("/a"));
        assert_eq!(regex_literal_prefix("/a|/b"), None);
        assert_eq!(regex_literal_prefix("(?i)/a"), None);
        assert_eq!(regex_literal_prefix(".*"), None);
        assert_eq!(regex_literal_prefix("/\\<api.*").as_deref(), Some("/"));
        assert_eq!(regex_literal_prefix("/users\\>/.*").as_deref(), Some("/users"));
    }

    #[test]
    fn lowest_matching_entry_wins_across_lists() {
        let mut idx = PathIndex::default();
        idx.add(0, Key::UriPrefix { prefix: "/api".into(), ignore_case: false });
        idx.add(1, Key::UriExact { path: "/api/x".into(), ignore_case: false });
        idx.add(2, Key::Rest);
        assert_eq!(idx.first_match("/api/x", |_| None, |_| true), Some(0));
        assert_eq!(idx.first_match("/api/x", |_| None, |e| e != 0), Some(1));
        assert_eq!(idx.first_match("/other", |_| None, |_| true), Some(2));
        assert_eq!(idx.first_match("/other", |_| None, |e| e != 2), None);
    }

    #[test]
    fn header_key_finds_entry_by_value() {
        let mut idx = PathIndex::default();
        idx.add(0, Key::Header { name: "x-debug".into(), value: "true".into() });
        idx.add(1, Key::Rest);
        let h = |v: &'static str| move |n: &str| (n == "x-debug").then_some(Cow::Borrowed(v));
        assert_eq!(idx.first_match("/", h("true"), |_| true), Some(0));
        assert_eq!(idx.first_match("/", h("false"), |_| true), Some(1));
    }
}
