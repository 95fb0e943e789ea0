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
    UriExact {
        path: String,
        ignore_case: bool,
    },
    UriPrefix {
        prefix: String,
        ignore_case: bool,
    },
    /// The path must end with this (case-sensitive; only regexes have suffix keys).
    UriSuffix {
        suffix: String,
    },
    Header {
        name: String,
        value: String,
    },
    Rest,
}

/// Inserts into a list that most often stays at one element: the first one gets room for one
/// only, so giving back spare room once all entries are in (`shrink_to_fit`) has nothing to do
/// for most lists — that pass over every list was the longest single step of a table load.
fn push_at<T>(list: &mut Vec<T>, i: usize, item: T) {
    if list.capacity() == 0 {
        list.reserve_exact(1);
    }
    list.insert(i, item);
}

fn push_one(list: &mut Vec<u32>, entry: u32) {
    push_at(list, list.len(), entry);
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
                    push_at(&mut self.nodes[node].children, i, (b, id as u32));
                    id
                }
            };
        }
        let entries = &mut self.nodes[node].entries;
        push_at(entries, entries.len(), entry);
    }

    fn shrink_to_fit(&mut self) {
        self.nodes.shrink_to_fit();
        for n in &mut self.nodes {
            n.children.shrink_to_fit();
            n.entries.shrink_to_fit();
        }
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
    /// Keyed by the reversed suffix, walked from the path's last byte.
    suffix: Trie,
    headers: Vec<(String, HashMap<String, Vec<u32>>)>,
    rest: Vec<u32>,
}

impl PathIndex {
    /// Entries must be added in ascending order.
    pub fn add(&mut self, entry: u32, key: Key) {
        match key {
            Key::UriExact { path, ignore_case: false } => push_one(self.exact.entry(path).or_default(), entry),
            Key::UriExact { path, ignore_case: true } => {
                push_one(self.exact_ci.entry(path.to_ascii_lowercase()).or_default(), entry)
            }
            Key::UriPrefix { prefix, ignore_case: false } => self.prefix.insert(prefix.as_bytes(), entry),
            Key::UriPrefix { prefix, ignore_case: true } => {
                self.prefix_ci.insert(prefix.to_ascii_lowercase().as_bytes(), entry)
            }
            Key::UriSuffix { suffix } => self.suffix.insert(&suffix.bytes().rev().collect::<Vec<u8>>(), entry),
            Key::Header { name, value } => {
                let pos = match self.headers.iter().position(|(n, _)| *n == name) {
                    Some(p) => p,
                    None => {
                        self.headers.push((name, HashMap::new()));
                        self.headers.len() - 1
                    }
                };
                push_one(self.headers[pos].1.entry(value).or_default(), entry);
            }
            Key::Rest => self.rest.push(entry),
        }
    }

    /// Gives back the spare capacity of every list once all entries are in.
    pub fn shrink_to_fit(&mut self) {
        for map in [&mut self.exact, &mut self.exact_ci].into_iter().chain(self.headers.iter_mut().map(|(_, m)| m)) {
            map.shrink_to_fit();
            map.values_mut().for_each(Vec::shrink_to_fit);
        }
        for trie in [&mut self.prefix, &mut self.prefix_ci, &mut self.suffix] {
            trie.shrink_to_fit();
        }
        self.headers.shrink_to_fit();
        self.rest.shrink_to_fit();
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
        self.suffix.walk(path.bytes().rev(), &mut scan);
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

// === Literals of a regex ===

/// Literal strings that every full match of a regex starts with, or ends with: the keys under
/// which the index files a regex URI match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegexLiterals {
    /// Every match starts with one of these (none empty, none a prefix of another).
    Prefixes(Vec<String>),
    /// Every match ends with one of these (none empty, none a suffix of another).
    Suffixes(Vec<String>),
}

/// More alternatives than this and a literal set stops growing (the index gains little more).
const MAX_LITERALS: usize = 16;

/// The literals every full match of `pattern` must start (or else end) with, whichever set's
/// shortest member is longer: `/api/v[0-9]+/.*` → prefix `/api/v`; `(/v1|/v2)/x/.*` → prefixes
/// `/v1/x/`, `/v2/x/`; `.*\.(png|jpg)` → suffixes `.png`, `.jpg`.
///
/// Conservative: whatever this small parser does not fully understand (flags, hex escapes,
/// nested classes, `\b{…}`) gives `None`, and the match is then tried for every request.
pub fn regex_literals(pattern: &str) -> Option<RegexLiterals> {
    let node = RegexParser { chars: pattern.chars().collect(), pos: 0 }.parse()?;
    let usable = |l: Lits| (!l.set.iter().any(String::is_empty)).then_some(l.set);
    let shortest = |set: &Option<Vec<String>>| set.as_ref().map_or(0, |s| s.iter().map(String::len).min().unwrap_or(0));
    let prefixes = usable(literals(&node, false)).map(|s| minimal(s, false));
    let suffixes = usable(literals(&node, true)).map(|s| minimal(s, true));
    if shortest(&prefixes) >= shortest(&suffixes) {
        prefixes.map(RegexLiterals::Prefixes)
    } else {
        suffixes.map(RegexLiterals::Suffixes)
    }
}

/// Drops members that another member already implies (`/a` makes `/ab` redundant as a prefix).
fn minimal(mut set: Vec<String>, suffix: bool) -> Vec<String> {
    set.sort_by_key(String::len);
    let mut out: Vec<String> = Vec::with_capacity(set.len());
    for s in set {
        let implied = out.iter().any(|o| if suffix { s.ends_with(o.as_str()) } else { s.starts_with(o.as_str()) });
        if !implied {
            out.push(s);
        }
    }
    out
}

/// Just enough of a regex's structure for literal extraction. Zero-width assertions, classes
/// and `.` are all `Any`: an unknown piece of text, which is what a conservative extraction needs.
#[derive(Debug)]
enum Re {
    Lit(char),
    Any,
    Concat(Vec<Re>),
    Alt(Vec<Re>),
    /// `min` repetitions or more (`*`, `+`, `?`, `{n,m}`).
    Repeat(Box<Re>, u32),
}

/// A set of literals for one node: every string the node matches starts (or, for suffixes,
/// ends) with a member; with `exact`, every string it matches *is* a member.
struct Lits {
    set: Vec<String>,
    exact: bool,
}

impl Lits {
    fn unknown() -> Lits {
        Lits { set: vec![String::new()], exact: false }
    }
}

fn literals(node: &Re, suffix: bool) -> Lits {
    match node {
        Re::Lit(c) => Lits { set: vec![c.to_string()], exact: true },
        Re::Any => Lits::unknown(),
        Re::Repeat(_, 0) => Lits::unknown(),
        Re::Repeat(inner, _) => Lits { exact: false, ..literals(inner, suffix) },
        Re::Alt(alts) => {
            let mut set = Vec::new();
            let mut exact = true;
            for a in alts {
                let l = literals(a, suffix);
                exact &= l.exact;
                set.extend(l.set);
            }
            set.sort();
            set.dedup();
            if set.len() > MAX_LITERALS {
                return Lits::unknown();
            }
            Lits { set, exact }
        }
        Re::Concat(items) => {
            let mut acc = Lits { set: vec![String::new()], exact: true };
            // Suffixes grow from the end of the concatenation backwards.
            for i in 0..items.len() {
                let item = &items[if suffix { items.len() - 1 - i } else { i }];
                let l = literals(item, suffix);
                if acc.set.len() * l.set.len() > MAX_LITERALS {
                    // What is known so far still holds; it just stops growing.
                    acc.exact = false;
                    break;
                }
                let mut set = Vec::with_capacity(acc.set.len() * l.set.len());
                for a in &acc.set {
                    for b in &l.set {
                        set.push(if suffix { format!("{b}{a}") } else { format!("{a}{b}") });
                    }
                }
                set.sort();
                set.dedup();
                acc = Lits { set, exact: l.exact };
                if !acc.exact {
                    break;
                }
            }
            acc
        }
    }
}

/// A recursive-descent reader of regex-lite syntax that gives up (`None`) on anything it does
/// not model exactly.
struct RegexParser {
    chars: Vec<char>,
    pos: usize,
}

impl RegexParser {
    fn parse(mut self) -> Option<Re> {
        let node = self.alternation()?;
        (self.pos == self.chars.len()).then_some(node)
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    fn eat(&mut self, c: char) -> bool {
        let hit = self.peek() == Some(c);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn alternation(&mut self) -> Option<Re> {
        let mut alts = vec![self.concat()?];
        while self.eat('|') {
            alts.push(self.concat()?);
        }
        Some(if alts.len() == 1 { alts.remove(0) } else { Re::Alt(alts) })
    }

    fn concat(&mut self) -> Option<Re> {
        let mut items = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let atom = self.atom()?;
            items.push(self.repeats(atom)?);
        }
        Some(Re::Concat(items))
    }

    fn atom(&mut self) -> Option<Re> {
        match self.next()? {
            '(' => {
                let mut scoped_flags = false;
                if self.eat('?') {
                    if self.eat('P') || self.peek() == Some('<') {
                        // Named group: `(?P<name>…)` or `(?<name>…)`.
                        if !self.eat('<') {
                            return None;
                        }
                        while self.next()? != '>' {}
                    } else if !self.eat(':') {
                        // `(?flags:…)` is fine (its content becomes `Any`); `(?flags)` changes
                        // everything after it, including other alternatives: give up.
                        while self.peek()?.is_ascii_alphabetic() || self.peek() == Some('-') {
                            self.pos += 1;
                        }
                        if !self.eat(':') {
                            return None;
                        }
                        scoped_flags = true;
                    }
                }
                let inner = self.alternation()?;
                if !self.eat(')') {
                    return None;
                }
                Some(if scoped_flags { Re::Any } else { inner })
            }
            '[' => {
                self.skip_class()?;
                Some(Re::Any)
            }
            '.' | '^' | '$' => Some(Re::Any),
            '\\' => match self.next()? {
                // regex-lite: escaped punctuation is the character itself, except `\<` and `\>`
                // (word boundaries).
                e if e.is_ascii_punctuation() && !matches!(e, '<' | '>') => Some(Re::Lit(e)),
                // Classes, assertions and control characters, all one letter long.
                'd' | 's' | 'w' | 'D' | 'S' | 'W' | 'A' | 'z' | 'B' | '<' | '>' | 'a' | 'f' | 't' | 'n' | 'r' | 'v' => {
                    Some(Re::Any)
                }
                'b' if self.peek() != Some('{') => Some(Re::Any),
                // Hex escapes, `\b{start}`, `\p{…}`, back references: not modelled.
                _ => None,
            },
            '*' | '+' | '?' | '{' | ')' | '|' => None,
            c => Some(Re::Lit(c)),
        }
    }

    /// Skips a bracketed class (the `[` already read). A nested `[` gives up.
    fn skip_class(&mut self) -> Option<()> {
        self.eat('^');
        // A `]` right after the opening bracket is a literal member.
        self.eat(']');
        loop {
            match self.next()? {
                '\\' => {
                    self.next()?;
                }
                '[' => return None,
                ']' => return Some(()),
                _ => {}
            }
        }
    }

    fn repeats(&mut self, mut node: Re) -> Option<Re> {
        loop {
            let min = match self.peek() {
                Some('*' | '?') => {
                    self.pos += 1;
                    0
                }
                Some('+') => {
                    self.pos += 1;
                    1
                }
                Some('{') => {
                    self.pos += 1;
                    let min = self.number()?;
                    if self.eat(',') && self.peek() != Some('}') {
                        self.number()?;
                    }
                    if !self.eat('}') {
                        return None;
                    }
                    min
                }
                _ => return Some(node),
            };
            // Lazy repetition matches the same strings.
            self.eat('?');
            node = Re::Repeat(Box::new(node), min);
        }
    }

    fn number(&mut self) -> Option<u32> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect::<String>().parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The prefixes, joined with ` | `; `None` when there are none (or suffixes instead).
    fn prefixes(p: &str) -> Option<String> {
        match regex_literals(p) {
            Some(RegexLiterals::Prefixes(v)) => Some(v.join(" | ")),
            _ => None,
        }
    }

    fn suffixes(p: &str) -> Option<String> {
        match regex_literals(p) {
            Some(RegexLiterals::Suffixes(v)) => Some(v.join(" | ")),
            _ => None,
        }
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn literal_prefix_of_common_regexes() {
        assert_eq!(prefixes("/api/v[0-9]+/.*").as_deref(), Some("/api/v"));
        assert_eq!(prefixes("/users/\\d+").as_deref(), Some("/users/"));
        assert_eq!(prefixes("/a\\.b.*").as_deref(), Some("/a.b"));
        assert_eq!(prefixes("/ab?c").as_deref(), Some("/a"));
        assert_eq!(prefixes("/ab*").as_deref(), Some("/a"));
        assert_eq!(prefixes("/a+b").as_deref(), Some("/a"));
        assert_eq!(prefixes("/a{2,}b").as_deref(), Some("/a"));
        assert_eq!(prefixes("/(?P<id>x)y").as_deref(), Some("/xy"));
        assert_eq!(regex_literals(".*"), None);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn alternations_give_one_prefix_each() {
        assert_eq!(prefixes("/a|/b").as_deref(), Some("/a | /b"));
        assert_eq!(prefixes("(/v1|/v2)/items/.*").as_deref(), Some("/v1/items/ | /v2/items/"));
        assert_eq!(prefixes("/(?:a|ab)c.*").as_deref(), Some("/ac | /abc"));
        assert_eq!(prefixes("/a|/ab").as_deref(), Some("/a"));
        assert_eq!(regex_literals("/a|.*"), None);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn suffix_literals_when_the_start_is_unknown() {
        assert_eq!(suffixes(".*\\.(png|jpg)").as_deref(), Some(".jpg | .png"));
        assert_eq!(suffixes("/[a-z]+/export\\.csv").as_deref(), Some("/export.csv"));
        // A weak prefix loses to a stronger suffix.
        assert_eq!(suffixes("/.*/health").as_deref(), Some("/health"));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn anything_not_modelled_gives_no_literals() {
        for p in ["(?i)/a", "/a(?i)b", "/a\\x41", "/a\\b{start}", "[[:alpha:]]/a", "/a\\pL", "(/a", "/a)", "*a"] {
            assert_eq!(regex_literals(p), None, "{p}");
        }
        // A scoped flag group only hides its own content.
        assert_eq!(prefixes("/a(?i:b)c").as_deref(), Some("/a"));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn word_boundaries_are_not_literals() {
        assert_eq!(prefixes("/\\<api.*").as_deref(), Some("/"));
        assert_eq!(suffixes(".*/users\\>"), None);
        assert_eq!(prefixes("/users\\>/.*").as_deref(), Some("/users"));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
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

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn header_key_finds_entry_by_value() {
        let mut idx = PathIndex::default();
        idx.add(0, Key::Header { name: "x-debug".into(), value: "true".into() });
        idx.add(1, Key::Rest);
        let h = |v: &'static str| move |n: &str| (n == "x-debug").then_some(Cow::Borrowed(v));
        assert_eq!(idx.first_match("/", h("true"), |_| true), Some(0));
        assert_eq!(idx.first_match("/", h("false"), |_| true), Some(1));
    }
}
