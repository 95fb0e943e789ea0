//! A table loaded a piece at a time, so a worker keeps serving while a big configuration loads.
//!
//! Why: Envoy calls each worker's `on_configure` on the worker's own thread, and a 100,000-rule
//! table takes that thread about a second to load in a VM — every request of the worker waits
//! that long (issue 12 item 3). One serde parse of the document cannot be suspended, so the text
//! is first cut into its pieces (one rule, one match entry, one VirtualService's other fields,
//! the table's other fields) by a scanner that stops after any piece, and each piece is then
//! deserialized, checked and indexed on its own, also stopping after any piece. The caller
//! decides how much to do per call ([`SlicedLoad::step`]'s `more`); [`super::load`] does all
//! of it in one call, so a table loaded whole and one loaded in slices take the same path.
//!
//! The pieces go through the serde derives of the table types and the checks of `super`
//! (`check_*`), and entries are indexed one by one by the index's own code
//! (`CompiledVs::push_entry`). What is refused is refused with where: the piece
//! (`virtual_services[0] (ns/name).rules[3]`) and serde's or the check's words; a document that
//! is not a table at all is explained by [`super::explain`].

use super::{check_claim, check_entry_at, check_registry_host, check_rule_at, check_settings, explain, put_back_names};
use super::{refuse, vs_at, TableError, FORMAT};
use crate::compile::{ClusterRef, CompiledVs, DefaultRoute, Entry, Rule};
use crate::RouteTable;
use std::borrow::Cow;

/// A byte range of the text.
#[derive(Clone, Copy, Debug)]
struct Span {
    start: usize,
    end: usize,
}

impl Span {
    fn range(self) -> std::ops::Range<usize> {
        self.start..self.end
    }
}

/// Where the scanner is, innermost last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Frame {
    Root,
    Table,
    VsList,
    Vs,
    Rules,
    Entries,
    /// The table's lists and map that grow with the configuration, read an element at a time.
    Claims,
    Clusters,
    Wildcards,
    Registry,
}

impl Frame {
    fn is_list(self) -> bool {
        matches!(
            self,
            Frame::VsList | Frame::Rules | Frame::Entries | Frame::Claims | Frame::Clusters | Frame::Wildcards
        )
    }
}

/// The elements of the table's own lists and of its registry map.
#[derive(Default)]
struct Lists {
    claims: Vec<Span>,
    clusters: Vec<Span>,
    wildcards: Vec<Span>,
    /// (host, default routes)
    registry: Vec<(Span, Span)>,
    /// `host_claims`, `clusters`, `registry_wildcards`, `registry_exact`: read already.
    seen: [bool; 4],
}

/// What may come next inside a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    /// A member (or element) or the closing bracket.
    First,
    /// A comma or the closing bracket.
    Separator,
    /// A member (or element): a comma was just read.
    Item,
}

/// The pieces of one VirtualService.
#[derive(Default)]
struct VsPieces {
    /// Its members other than `rules` and `entries`, as (key, value); those two are recorded
    /// with an empty value, so a second one is seen.
    fields: Vec<(Span, Span)>,
    rules: Vec<Span>,
    entries: Vec<Span>,
}

#[derive(Default)]
struct Scan {
    pos: usize,
    stack: Vec<(Frame, Next)>,
    started: bool,
    format: Option<Span>,
    table_seen: bool,
    vs_list_seen: bool,
    /// The table's members other than `virtual_services` and `lists`'.
    table_fields: Vec<(Span, Span)>,
    lists: Lists,
    vss: Vec<VsPieces>,
}

/// Building the table from the pieces; each field is where the next step resumes.
struct Build {
    lists: Lists,
    pieces: Vec<VsPieces>,
    /// Taken when done.
    table: Option<RouteTable>,
    stage: Stage,
    /// The VirtualService being built (its position in `pieces`) and how far it is.
    vs: usize,
    current: Option<CompiledVs>,
    rule: usize,
    entry: usize,
}

/// What building does next; the number is the next element.
#[derive(Clone, Copy)]
enum Stage {
    Claims(usize),
    Clusters(usize),
    Wildcards(usize),
    Registry(usize),
    VirtualServices,
    HostIndex(usize),
}

enum State {
    Scan(Box<Scan>),
    Build(Box<Build>),
    Done,
}

type Piece<T> = Result<T, TableError>;

/// A table being loaded in slices; see the module documentation.
pub struct SlicedLoad<B> {
    bytes: B,
    state: State,
    pieces: usize,
}

impl<B: AsRef<[u8]>> SlicedLoad<B> {
    pub fn new(bytes: B) -> Self {
        SlicedLoad { bytes, state: State::Scan(Box::default()), pieces: 0 }
    }

    /// Pieces worked on so far.
    pub fn pieces(&self) -> usize {
        self.pieces
    }

    /// What the next piece is part of, for logs: `scan`, `lists`, `virtual services`,
    /// `host index` or `done`.
    pub fn phase(&self) -> &'static str {
        match &self.state {
            State::Scan(_) => "scan",
            State::Build(b) => match b.stage {
                Stage::Claims(_) | Stage::Clusters(_) | Stage::Wildcards(_) | Stage::Registry(_) => "lists",
                Stage::VirtualServices => "virtual services",
                Stage::HostIndex(_) => "host index",
            },
            State::Done => "done",
        }
    }

    /// Works piece after piece while `more()` says so (it is asked before each piece but the
    /// first, so a call always makes progress); `Some` once the table is loaded or refused. A
    /// call after that returns `None` again.
    pub fn step(&mut self, more: &mut dyn FnMut() -> bool) -> Option<Result<RouteTable, TableError>> {
        let b = self.bytes.as_ref();
        let mut first = true;
        loop {
            if !first && !more() {
                return None;
            }
            first = false;
            self.pieces += 1;
            let outcome = match &mut self.state {
                State::Done => return None,
                State::Scan(scan) => match scan.piece(b) {
                    Ok(false) => continue,
                    Ok(true) => scan.build(b).map(|built| {
                        self.state = State::Build(Box::new(built));
                        None
                    }),
                    Err(e) => Err(e),
                },
                State::Build(build) => match build.piece(b) {
                    Ok(false) => continue,
                    Ok(true) => build.table.take().ok_or_else(|| refuse("", "loaded twice")).map(Some),
                    Err(e) => Err(e),
                },
            };
            match outcome {
                Ok(None) => {}
                Ok(Some(table)) => {
                    self.state = State::Done;
                    return Some(Ok(table));
                }
                Err(e) => {
                    self.state = State::Done;
                    return Some(Err(explain(b, e)));
                }
            }
        }
    }

    /// All the steps at once.
    pub fn finish(mut self) -> Result<RouteTable, TableError> {
        loop {
            if let Some(r) = self.step(&mut || true) {
                return r;
            }
        }
    }
}

// === Cutting the text into pieces ===

fn skip_ws(b: &[u8], mut pos: usize) -> usize {
    while pos < b.len() && matches!(b[pos], b' ' | b'\t' | b'\n' | b'\r') {
        pos += 1;
    }
    pos
}

/// What the document has at `pos` that the scanner did not expect there.
fn malformed(b: &[u8], pos: usize, expected: &str) -> TableError {
    let line = 1 + b[..pos.min(b.len())].iter().filter(|&&c| c == b'\n').count();
    let column = 1 + pos - b[..pos.min(b.len())].iter().rposition(|&c| c == b'\n').map_or(0, |p| p + 1);
    let found = match b.get(pos) {
        Some(c) => format!("{:?}", char::from(*c)),
        None => "the end".into(),
    };
    refuse("", format!("not a {FORMAT} table: expected {expected}, found {found} at line {line} column {column}"))
}

/// The end of the string starting at `pos` (a `"`), just past its closing quote.
fn skip_string(b: &[u8], pos: usize) -> Piece<usize> {
    if b.get(pos) != Some(&b'"') {
        return Err(malformed(b, pos, "a string"));
    }
    let mut i = pos + 1;
    while i < b.len() {
        match b[i] {
            b'"' => return Ok(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    Err(malformed(b, b.len(), "the end of a string"))
}

/// The end of the JSON value starting at `pos`. Only its extent is found here; the piece's own
/// parse checks what is inside.
fn skip_value(b: &[u8], pos: usize) -> Piece<usize> {
    match b.get(pos) {
        Some(b'"') => skip_string(b, pos),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut i = pos;
            while i < b.len() {
                match b[i] {
                    b'"' => {
                        i = skip_string(b, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            Err(malformed(b, b.len(), "the end of an object or array"))
        }
        Some(_) => {
            // A number, `true`, `false` or `null`: up to the next delimiter.
            let mut i = pos;
            while i < b.len() && !matches!(b[i], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                i += 1;
            }
            if i == pos {
                Err(malformed(b, pos, "a value"))
            } else {
                Ok(i)
            }
        }
        None => Err(malformed(b, pos, "a value")),
    }
}

impl Scan {
    /// Reads one member, element or bracket; `true` once the document is read to its end.
    fn piece(&mut self, b: &[u8]) -> Piece<bool> {
        self.pos = skip_ws(b, self.pos);
        let Some(&(frame, next)) = self.stack.last() else {
            if self.started {
                // Past the closing brace: only whitespace may follow.
                return if self.pos == b.len() { Ok(true) } else { Err(malformed(b, self.pos, "the end")) };
            }
            self.expect(b, b'{', "an object")?;
            self.started = true;
            self.stack.push((Frame::Root, Next::First));
            return Ok(false);
        };
        let close = if frame.is_list() { b']' } else { b'}' };
        let c = b.get(self.pos).copied();
        match next {
            Next::First | Next::Separator if c == Some(close) => {
                self.pos += 1;
                self.stack.pop();
                return Ok(false);
            }
            Next::Separator => {
                self.expect(b, b',', if close == b']' { "`,` or `]`" } else { "`,` or `}`" })?;
                self.set_next(Next::Item);
                return Ok(false);
            }
            Next::First | Next::Item => {}
        }
        // An item follows; whatever it is, a separator or the end comes after it.
        self.set_next(Next::Separator);
        match frame {
            Frame::VsList => {
                self.expect(b, b'{', "a VirtualService (an object)")?;
                self.vss.push(VsPieces::default());
                self.stack.push((Frame::Vs, Next::First));
            }
            Frame::Rules | Frame::Entries => {
                let span = self.value(b)?;
                if let Some(vs) = self.vss.last_mut() {
                    if frame == Frame::Rules { &mut vs.rules } else { &mut vs.entries }.push(span);
                }
            }
            Frame::Claims | Frame::Clusters | Frame::Wildcards => {
                let span = self.value(b)?;
                let l = &mut self.lists;
                match frame {
                    Frame::Claims => &mut l.claims,
                    Frame::Clusters => &mut l.clusters,
                    _ => &mut l.wildcards,
                }
                .push(span);
            }
            Frame::Root | Frame::Table | Frame::Vs | Frame::Registry => self.member(b, frame)?,
        }
        Ok(false)
    }

    fn member(&mut self, b: &[u8], frame: Frame) -> Piece<()> {
        let key_end = skip_string(b, self.pos)?;
        let key = Span { start: self.pos, end: key_end };
        let name = key_name(b, key)?;
        self.pos = skip_ws(b, key_end);
        self.expect(b, b':', "`:`")?;
        self.pos = skip_ws(b, self.pos);
        let duplicate = |scan: &Scan| refuse(scan.at(frame), format!("duplicate field `{name}`"));
        match (frame, name.as_ref()) {
            (Frame::Root, "format") => {
                if self.format.is_some() {
                    return Err(duplicate(self));
                }
                self.format = Some(self.value(b)?);
            }
            (Frame::Root, "table") => {
                if std::mem::replace(&mut self.table_seen, true) {
                    return Err(duplicate(self));
                }
                self.expect(b, b'{', "the table (an object)")?;
                self.stack.push((Frame::Table, Next::First));
            }
            (Frame::Root, other) => {
                return Err(refuse(
                    "",
                    format!("not a {FORMAT} table: unknown field `{other}`, expected `format` or `table`"),
                ))
            }
            (Frame::Table, "virtual_services") => {
                if std::mem::replace(&mut self.vs_list_seen, true) {
                    return Err(duplicate(self));
                }
                self.expect(b, b'[', "a list of VirtualServices")?;
                self.stack.push((Frame::VsList, Next::First));
            }
            (Frame::Table, "host_claims" | "clusters" | "registry_wildcards" | "registry_exact") => {
                let (i, inner, open) = match name.as_ref() {
                    "host_claims" => (0, Frame::Claims, b'['),
                    "clusters" => (1, Frame::Clusters, b'['),
                    "registry_wildcards" => (2, Frame::Wildcards, b'['),
                    _ => (3, Frame::Registry, b'{'),
                };
                if std::mem::replace(&mut self.lists.seen[i], true) {
                    return Err(duplicate(self));
                }
                self.expect(b, open, if open == b'[' { "a list" } else { "an object" })?;
                self.stack.push((inner, Next::First));
            }
            (Frame::Registry, _) => {
                let value = self.value(b)?;
                self.lists.registry.push((key, value));
            }
            (Frame::Vs, "rules" | "entries") => {
                let at = self.at(frame);
                let vs = self.vss.last_mut().ok_or_else(|| refuse("virtual_services", "no VirtualService"))?;
                if vs.fields.iter().any(|(k, v)| v.start == v.end && key_name(b, *k).is_ok_and(|n| n == name)) {
                    return Err(refuse(at, format!("duplicate field `{name}`")));
                }
                vs.fields.push((key, Span { start: self.pos, end: self.pos }));
                let inner = if name == "rules" { Frame::Rules } else { Frame::Entries };
                self.expect(b, b'[', "a list")?;
                self.stack.push((inner, Next::First));
            }
            (Frame::Table, _) => {
                let value = self.value(b)?;
                self.table_fields.push((key, value));
            }
            (Frame::Vs, _) => {
                let value = self.value(b)?;
                if let Some(vs) = self.vss.last_mut() {
                    vs.fields.push((key, value));
                }
            }
            _ => return Err(malformed(b, key.start, "a list element")),
        }
        Ok(())
    }

    /// Where a member of `frame` is, for a refusal.
    fn at(&self, frame: Frame) -> String {
        match frame {
            Frame::Root => String::new(),
            Frame::Vs => format!("virtual_services[{}]", self.vss.len().saturating_sub(1)),
            Frame::Registry => "registry_exact".into(),
            _ => "table".into(),
        }
    }

    fn value(&mut self, b: &[u8]) -> Piece<Span> {
        let start = self.pos;
        self.pos = skip_value(b, start)?;
        Ok(Span { start, end: self.pos })
    }

    fn expect(&mut self, b: &[u8], c: u8, what: &str) -> Piece<()> {
        if b.get(self.pos) == Some(&c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(malformed(b, self.pos, what))
        }
    }

    fn set_next(&mut self, next: Next) {
        if let Some(top) = self.stack.last_mut() {
            top.1 = next;
        }
    }

    /// The format checked and the table's own fields parsed: what building starts from.
    fn build(&mut self, b: &[u8]) -> Piece<Build> {
        let missing = |field: &str| refuse("", format!("not a {FORMAT} table: missing field `{field}`"));
        let format: String = parse(b, self.format.ok_or_else(|| missing("format"))?.range(), || "format".into())?;
        if format != FORMAT {
            return Err(super::wrong_format(&format));
        }
        if !self.table_seen {
            return Err(missing("table"));
        }
        // Always written, so required, as the derive would require them.
        if let Some(i) = self.lists.seen[2..].iter().position(|seen| !seen) {
            return Err(missing(["registry_wildcards", "registry_exact"][i]));
        }
        let mut table: RouteTable = parse(&object(b, &self.table_fields), .., || "table".into())?;
        check_settings(&table)?;
        // Exactly, as the rules are (see `Build::piece`).
        let l = &self.lists;
        table.host_claims.reserve_exact(l.claims.len());
        table.clusters.reserve_exact(l.clusters.len());
        table.registry_wildcards.reserve_exact(l.wildcards.len());
        table.registry_exact.reserve(l.registry.len());
        Ok(Build {
            lists: std::mem::take(&mut self.lists),
            pieces: std::mem::take(&mut self.vss),
            table: Some(table),
            stage: Stage::Claims(0),
            vs: 0,
            current: None,
            rule: 0,
            entry: 0,
        })
    }
}

/// A member's name; written with escapes it is decoded (legal JSON, if unusual).
fn key_name(b: &[u8], key: Span) -> Piece<Cow<'_, str>> {
    let raw = &b[key.start + 1..key.end - 1];
    if !raw.contains(&b'\\') {
        if let Ok(s) = std::str::from_utf8(raw) {
            return Ok(Cow::Borrowed(s));
        }
    }
    parse::<String>(b, key.range(), || "a field name".into()).map(Cow::Owned)
}

/// One piece through its type's serde derive; refused as the piece `at()` names (only worked
/// out for a refusal: most pieces load).
fn parse<T: serde::de::DeserializeOwned>(
    b: &[u8],
    range: impl std::slice::SliceIndex<[u8], Output = [u8]>,
    at: impl FnOnce() -> String,
) -> Piece<T> {
    serde_json::from_slice(&b[range]).map_err(|e| refuse(at(), e.to_string()))
}

/// `{key: value, …}` from the pieces of an object, the members read piecewise left out.
fn object(b: &[u8], fields: &[(Span, Span)]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(fields.iter().map(|(k, v)| k.end - k.start + v.end - v.start + 2).sum::<usize>() + 2);
    out.push(b'{');
    for (k, v) in fields.iter().filter(|(_, v)| v.start != v.end) {
        if out.len() > 1 {
            out.push(b',');
        }
        out.extend_from_slice(&b[k.range()]);
        out.push(b':');
        out.extend_from_slice(&b[v.range()]);
    }
    out.push(b'}');
    out
}

// === Building the table from the pieces ===

impl Build {
    /// One element of the table's lists, one VirtualService's own fields, one rule, one entry
    /// or one host claim indexed; `true` when the table is done.
    fn piece(&mut self, b: &[u8]) -> Piece<bool> {
        let table = self.table.as_mut().ok_or_else(|| refuse("", "loaded twice"))?;
        let l = &self.lists;
        self.stage = match self.stage {
            Stage::Claims(i) => match l.claims.get(i) {
                Some(span) => {
                    let claim = parse(b, span.range(), || format!("host_claims[{i}]"))?;
                    check_claim(i, &claim, self.pieces.len())?;
                    table.host_claims.push(claim);
                    Stage::Claims(i + 1)
                }
                None => Stage::Clusters(0),
            },
            Stage::Clusters(i) => match l.clusters.get(i) {
                Some(span) => {
                    table.clusters.push(parse::<ClusterRef>(b, span.range(), || format!("clusters[{i}]"))?);
                    Stage::Clusters(i + 1)
                }
                None => Stage::Wildcards(0),
            },
            Stage::Wildcards(i) => match l.wildcards.get(i) {
                Some(span) => {
                    table.registry_wildcards.push(parse(b, span.range(), || format!("registry_wildcards[{i}]"))?);
                    Stage::Wildcards(i + 1)
                }
                None => Stage::Registry(0),
            },
            Stage::Registry(i) => match l.registry.get(i) {
                Some((k, v)) => {
                    let host: String = parse(b, k.range(), || "registry_exact".into())?;
                    let routes: Vec<DefaultRoute> = parse(b, v.range(), || format!("registry_exact[{host:?}]"))?;
                    check_registry_host(&host, &routes)?;
                    // A host written twice: the last one stands, as a JSON map reads.
                    table.registry_exact.insert(host, routes);
                    Stage::Registry(i + 1)
                }
                None => Stage::VirtualServices,
            },
            Stage::VirtualServices => {
                if self.vs == self.pieces.len() {
                    table.start_host_index();
                    Stage::HostIndex(0)
                } else {
                    self.vs_piece(b)?;
                    Stage::VirtualServices
                }
            }
            Stage::HostIndex(i) if i < table.host_claims.len() => {
                table.index_host_claim(i);
                Stage::HostIndex(i + 1)
            }
            Stage::HostIndex(_) => {
                table.finish_host_index();
                return Ok(true);
            }
        };
        Ok(false)
    }

    /// One VirtualService's own fields, one of its rules or entries, or its index finished.
    fn vs_piece(&mut self, b: &[u8]) -> Piece<()> {
        let table = self.table.as_mut().ok_or_else(|| refuse("", "loaded twice"))?;
        let vi = self.vs;
        let pieces = self.pieces.get(vi).ok_or_else(|| refuse("virtual_services", "loaded past the end"))?;
        let Some(vs) = &mut self.current else {
            let mut vs: CompiledVs = parse(&object(b, &pieces.fields), .., || format!("virtual_services[{vi}]"))?;
            // Exactly: growing by doubling would copy every rule loaded so far in one piece,
            // and leave up to twice the room in a memory that never shrinks.
            vs.rules.reserve_exact(pieces.rules.len());
            vs.entries.reserve_exact(pieces.entries.len());
            self.current = Some(vs);
            return Ok(());
        };
        if let Some(span) = pieces.rules.get(self.rule) {
            let mut r: Rule = parse(b, span.range(), || format!("{}.rules[{}]", vs_at(vi, vs), self.rule))?;
            put_back_names(&table.cluster_template, &vs.name, &mut r);
            check_rule_at(vi, vs, self.rule, &r)?;
            vs.rules.push(r);
            self.rule += 1;
        } else if let Some(span) = pieces.entries.get(self.entry) {
            // After all the rules, whatever the order in the text: an entry names its rule.
            let e: Entry = parse(b, span.range(), || format!("{}.entries[{}]", vs_at(vi, vs), self.entry))?;
            check_entry_at(vi, vs, self.entry, &e)?;
            vs.push_entry(e);
            self.entry += 1;
        } else if let Some(mut vs) = self.current.take() {
            vs.finish_index();
            table.virtual_services.push(vs);
            self.vs += 1;
            self.rule = 0;
            self.entry = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// The table module's seed (a VirtualService with a wildcard host, its DestinationRule, a
    /// ServiceEntry) and a second VirtualService.
    fn table_text() -> String {
        let mut source = super::super::tests::seed();
        if let Some(resources) = source["resources"].as_array_mut() {
            resources.push(json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                "metadata": {"name": "ratings", "namespace": "default"},
                "spec": {"hosts": ["ratings", "*.ratings.io"], "http": [
                    {"fault": {"abort": {"httpStatus": 503, "percentage": {"value": 10}}},
                     "route": [{"destination": {"host": "ratings"}}]}]}}));
        }
        match super::super::compile_source(source.to_string().as_bytes()) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        }
    }

    /// One piece per call, as a worker with no time to spare would load it.
    fn piece_by_piece(text: &str) -> (Result<RouteTable, TableError>, SlicedLoad<&[u8]>) {
        let mut l = SlicedLoad::new(text.as_bytes());
        loop {
            if let Some(r) = l.step(&mut || false) {
                return (r, l);
            }
        }
    }

    fn written(r: &Result<RouteTable, TableError>) -> String {
        match r {
            Ok(t) => super::super::to_json(t).unwrap_or_default(),
            Err(e) => format!("refused: {e}"),
        }
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn piece_by_piece_loads_what_one_call_loads_in_any_key_order_and_layout() {
        let text = table_text();
        let once = SlicedLoad::new(text.as_bytes()).finish();
        assert_eq!(written(&once), text, "a loaded table writes back the same text");
        // As written, indented, and with every object's keys sorted (a protobuf Struct, as a
        // WasmPlugin's pluginConfig carries it, comes back with its keys in name order: the
        // entries before the rules).
        let value: Value = serde_json::from_str(&text).unwrap_or_default();
        let pretty = serde_json::to_string_pretty(&value).unwrap_or_default();
        let sorted = value.to_string();
        assert!(sorted.find("\"entries\"") < sorted.find("\"rules\""), "{sorted}");
        let parts: usize =
            once.as_ref().map_or(0, |t| t.virtual_services.iter().map(|v| v.rules.len() + v.entries.len()).sum());
        for form in [&text, &pretty, &sorted] {
            let (sliced, l) = piece_by_piece(form);
            assert_eq!(written(&sliced), text);
            // Every rule and entry was a piece of its own (and so was each bracket and comma).
            assert!(l.pieces() > 2 * parts, "{} pieces for {parts} rules and entries", l.pieces());
        }
        let loaded = piece_by_piece(&text).0.ok();
        let serving = |host: &str| loaded.as_ref().and_then(|t| t.find_vs(host)).map(|v| v.name.clone());
        assert_eq!(serving("a.ratings.io").as_deref(), Some("default/ratings"));
        assert_eq!(serving("a.example.com").as_deref(), Some("default/reviews"));
        // A key written with escapes is the same key.
        let escaped = text.replacen("\"format\"", "\"\\u0066ormat\"", 1).replacen("\"rules\"", "\"rul\\u0065s\"", 1);
        assert_eq!(written(&piece_by_piece(&escaped).0), text);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn a_refused_piece_is_named_where_it_is() {
        let text = table_text();
        let mut value: Value = serde_json::from_str(&text).unwrap_or_default();
        value["table"]["virtual_services"][0]["entries"][1]["rule"] = json!(9);
        let mut claims: Value = serde_json::from_str(&text).unwrap_or_default();
        claims["table"]["host_claims"][1][1] = json!(7);
        let mut no_registry: Value = serde_json::from_str(&text).unwrap_or_default();
        no_registry["table"].as_object_mut().map(|t| t.remove("registry_exact"));
        let mut registry: Value = serde_json::from_str(&text).unwrap_or_default();
        registry["table"]["registry_exact"]["api.ext.io"][0]["cluster"] = json!("");
        let cases = [
            (claims.to_string(), "host_claims[1]: claim of"),
            (no_registry.to_string(), "missing field `registry_exact`"),
            (registry.to_string(), "registry_exact[\"api.ext.io\"]: a default route names no cluster"),
            (value.to_string(), "virtual_services[0] (default/reviews).entries[1]: rule 9 does not exist"),
            (
                text.replacen("\"rules\":[", "\"rules\":[],\"rules\":[", 1),
                "virtual_services[0]: duplicate field `rules`",
            ),
            (
                text.replace("\"virtual_services\":[", "\"virtual_services\":[],\"virtual_services\":["),
                "table: duplicate field `virtual_services`",
            ),
            (text.replacen("\"index\":", "\"surprise\":1,\"index\":", 1), ".rules[0]: unknown field `surprise`"),
            (
                text.replacen("\"routing_header\":", "\"routing_header\":\"X Bad\",\"old\":", 1),
                "table: unknown field `old`",
            ),
            (text.replacen("\"table\":", "\"tables\":", 1), "unknown field `tables`, expected `format` or `table`"),
            (text.replacen("\"table\":", "\"other\":1,\"table\":", 1), "unknown field `other`"),
            (r#"{"format": "meshroute.table/v1"}"#.to_string(), "missing field `table`"),
            (format!("{text} x"), "not JSON: trailing characters"),
            (text[..text.len() - 3].to_string(), "not JSON: EOF while parsing"),
            ("null".into(), "not a JSON object"),
            (" \n".into(), "the configuration is empty"),
            (text.replace(FORMAT, "meshroute.table/v0"), "format: \"meshroute.table/v0\" is not"),
        ];
        for (case, says) in &cases {
            let (sliced, _) = piece_by_piece(case);
            let once = SlicedLoad::new(case.as_bytes()).finish();
            assert_eq!(written(&sliced), written(&once), "{case}");
            assert!(written(&sliced).contains(says), "{} does not say {says:?}", written(&sliced));
        }
    }
}
