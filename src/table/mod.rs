//! The compiled route table as the filter loads it: `meshroute compile` (and every Envoy
//! configuration the CLI writes) ships the [`RouteTable`] as JSON, and each Wasm VM only parses
//! it, checks what a decision relies on, rebuilds the indexes and compiles each regex once.
//!
//! Why: a VM that parsed, validated and compiled Istio resources paid for it twice — in code
//! (validation and the CRD deserialisers were most of the module, and V8 compiles all of it
//! before the first request) and in every push (each worker redid the whole pipeline on its own
//! thread). istiod does the same split: Envoy never sees a VirtualService, only its translation.
//!
//! The format is versioned ([`FORMAT`]) and strict (unknown fields are refused): a table from
//! another meshroute version is refused with a message naming both versions, never misread.
//! A table is refused when a decision could not be carried out from it (a rule index out of
//! range, no destination to forward to, a status Envoy would not send, settings out of their
//! bounds); what Istio's semantics forbid was refused by the CLI before the table was written.

use crate::compile::{cluster_name, Abort, Action, CompiledVs, Dest, Entry, HeaderOps, Rule};
use crate::config::{MAX_MIRROR_BODY_BUDGET, MAX_MIRROR_BODY_LIMIT, MAX_MIRROR_IN_FLIGHT, MAX_MIRROR_TIMEOUT_MS};
use crate::matcher::{compile_regex, StrMatch};
use crate::request::PPM;
use crate::RouteTable;
use serde::{Deserialize, Serialize, Serializer};
pub use sliced::SlicedLoad;
use std::collections::{BTreeMap, HashMap};

mod sliced;

/// The version of the table format; the filter loads only this one.
pub const FORMAT: &str = "meshroute.table/v1";

/// Why a table was refused: where in it (`virtualServices[2].rules[0]…`) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableError {
    pub at: String,
    pub message: String,
}

impl std::fmt::Display for TableError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.at.is_empty() {
            write!(f, "compiled table: {}", self.message)
        } else {
            write!(f, "compiled table: {}: {}", self.at, self.message)
        }
    }
}

fn refuse(at: impl Into<String>, message: impl Into<String>) -> TableError {
    TableError { at: at.into(), message: message.into() }
}

#[derive(Serialize)]
struct Out<'a> {
    format: &'a str,
    table: &'a RouteTable,
}

/// Only to explain a document that is not a table of this version.
#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    resources: Option<serde::de::IgnoredAny>,
}

/// The table as the filter's configuration.
pub fn to_json(table: &RouteTable) -> Result<String, serde_json::Error> {
    serde_json::to_string(&Out { format: FORMAT, table: &shared_names_left_out(table) })
}

/// What `load` can derive is left out, so the table stays near the size of its source: a rule
/// names the VirtualService that declared it (almost always the one it sits in), and a
/// destination's cluster is almost always the cluster template's name for it.
fn shared_names_left_out(table: &RouteTable) -> RouteTable {
    let mut t = table.clone();
    let template = t.cluster_template.clone();
    for vs in &mut t.virtual_services {
        for r in &mut vs.rules {
            if r.virtual_service == vs.name {
                r.virtual_service.clear();
            }
            for_each_cluster(r, |cluster, port, _, subset, host| {
                if *cluster == cluster_name(&template, port, subset, host) {
                    cluster.clear();
                }
            });
        }
    }
    t
}

/// The names [`shared_names_left_out`] left out of a rule, put back. A destination whose port
/// comes from the request always gets the template's name on its `port`: the filter uses that
/// name as is for a request on that port (`Dest::cluster_on`), and builds the name for any
/// other port.
fn put_back_names(template: &str, vs_name: &str, r: &mut Rule) {
    if r.virtual_service.is_empty() {
        r.virtual_service = vs_name.to_string();
    }
    for_each_cluster(r, |cluster, port, from_request, subset, host| {
        if cluster.is_empty() || from_request {
            *cluster = cluster_name(template, port, subset, host);
        }
    });
}

fn for_each_cluster(r: &mut Rule, mut f: impl FnMut(&mut String, u32, bool, Option<&str>, &str)) {
    if let Action::Forward { destinations, .. } = &mut r.action {
        for d in destinations {
            f(&mut d.cluster, d.port, d.port_from_request, d.subset.as_deref(), &d.host);
        }
    }
    for m in &mut r.mirrors {
        f(&mut m.cluster, m.port, m.port_from_request, m.subset.as_deref(), &m.host);
    }
}

/// As [`to_json`], indented for people and diffs (the filter reads both).
pub fn to_json_pretty(table: &RouteTable) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(&Out { format: FORMAT, table: &shared_names_left_out(table) })
}

/// meshroute's source form (`{"resources", "settings", "registry"}`, as JSON) compiled into the
/// filter's configuration; the errors that refuse it otherwise, one per line.
pub fn compile_source(source: &[u8]) -> Result<String, String> {
    let compiled = crate::compile_json(source);
    match compiled.table {
        Some(t) => to_json(&t).map_err(|e| e.to_string()),
        None => {
            let mut lines: Vec<String> = compiled.diagnostics.errors().map(|d| d.to_string()).collect();
            lines.extend(compiled.diagnostics.omitted_summary());
            Err(lines.join("\n"))
        }
    }
}

/// Parses, checks and indexes a table written by [`to_json`]: [`SlicedLoad`]'s steps all at
/// once, so a table loaded whole and one loaded in slices take the same path.
pub fn load(bytes: &[u8]) -> Result<RouteTable, TableError> {
    SlicedLoad::new(bytes).finish()
}

fn wrong_format(format: &str) -> TableError {
    refuse(
        "format",
        format!("{format:?} is not {FORMAT:?}: this filter loads tables of its own version (recompile with the matching `meshroute compile`)"),
    )
}

/// A refused table explained: a document that is no table of this version (empty, not JSON,
/// not an object, the source form, another format version) says so; a table says where it is
/// wrong (`own`).
fn explain(bytes: &[u8], own: TableError) -> TableError {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return refuse("", "the configuration is empty (expected the output of `meshroute compile`)");
    }
    match serde_json::from_slice::<Probe>(bytes) {
        Ok(Probe { format: Some(f), .. }) if f != FORMAT => wrong_format(&f),
        Ok(Probe { format: None, resources: Some(_) }) => refuse(
            "",
            "this is meshroute's source form (Istio resources and settings); the filter loads the table \
             `meshroute compile` writes from it",
        ),
        Ok(_) => own,
        // Not even an object (`null`, a number, an array, broken JSON): serde's own words would
        // name our internal types.
        Err(p) if p.is_data() => refuse(
            "",
            format!("the configuration is not a JSON object (expected the output of `meshroute compile`), at line {} column {}", p.line(), p.column()),
        ),
        Err(p) => refuse("", format!("not JSON: {p}")),
    }
}

/// What a decision and its plan rely on, checked piece by piece as the table loads (linear).
/// A host claim must name a VirtualService of the table (`vs_count` of them).
fn check_claim(i: usize, (h, id): &(String, usize), vs_count: usize) -> Result<(), TableError> {
    if *id >= vs_count || h.is_empty() {
        return Err(refuse(format!("host_claims[{i}]"), format!("claim of {h:?} names no VirtualService")));
    }
    Ok(())
}

fn vs_at(vi: usize, vs: &CompiledVs) -> String {
    format!("virtual_services[{vi}] ({})", vs.name)
}

fn check_rule_at(vi: usize, vs: &CompiledVs, ri: usize, r: &Rule) -> Result<(), TableError> {
    check_rule(r).map_err(|e| refuse(format!("{}.rules[{ri}]{}", vs_at(vi, vs), e.at), e.message))
}

/// An entry's rule must exist: checked against the rules `vs` has (all of them, once loaded).
fn check_entry_at(vi: usize, vs: &CompiledVs, ei: usize, e: &Entry) -> Result<(), TableError> {
    if e.rule >= vs.rules.len() {
        return Err(refuse(format!("{}.entries[{ei}]", vs_at(vi, vs)), format!("rule {} does not exist", e.rule)));
    }
    Ok(())
}

fn check_registry_host(h: &str, routes: &[crate::compile::DefaultRoute]) -> Result<(), TableError> {
    if routes.iter().any(|r| r.cluster.is_empty()) {
        return Err(refuse(format!("registry_exact[{h:?}]"), "a default route names no cluster"));
    }
    Ok(())
}

fn check_settings(t: &RouteTable) -> Result<(), TableError> {
    let valid_header =
        |h: &str| !h.is_empty() && h.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid_header(&t.routing_header) {
        return Err(refuse("routing_header", format!("{:?} is not a lowercase header name", t.routing_header)));
    }
    if t.cluster_template.is_empty() {
        return Err(refuse("cluster_template", "empty"));
    }
    if t.mirror_body_limit > MAX_MIRROR_BODY_LIMIT {
        return Err(refuse("mirror_body_limit", format!("above the maximum {MAX_MIRROR_BODY_LIMIT}")));
    }
    if t.mirror_body_budget > MAX_MIRROR_BODY_BUDGET || t.mirror_body_budget < t.mirror_body_limit {
        return Err(refuse(
            "mirror_body_budget",
            format!("must be between mirror_body_limit and {MAX_MIRROR_BODY_BUDGET}"),
        ));
    }
    if t.mirror_max_in_flight == 0 || t.mirror_max_in_flight > MAX_MIRROR_IN_FLIGHT {
        return Err(refuse("mirror_max_in_flight", format!("must be between 1 and {MAX_MIRROR_IN_FLIGHT}")));
    }
    if t.mirror_timeout_ms == 0 || t.mirror_timeout_ms > MAX_MIRROR_TIMEOUT_MS {
        return Err(refuse("mirror_timeout_ms", format!("must be between 1 and {MAX_MIRROR_TIMEOUT_MS}")));
    }
    Ok(())
}

fn check_rule(r: &Rule) -> Result<(), TableError> {
    match &r.action {
        Action::Forward { destinations, total_weight } => {
            if destinations.is_empty() {
                return Err(refuse(".action", "forwards to no destination"));
            }
            let sum: u64 = destinations.iter().map(|d| u64::from(d.weight)).sum();
            if sum == 0 || sum != *total_weight {
                return Err(refuse(".action", format!("weights add up to {sum}, not total_weight {total_weight}")));
            }
            for (i, d) in destinations.iter().enumerate() {
                check_dest(d).map_err(|m| refuse(format!(".action.destinations[{i}]"), m))?;
            }
        }
        Action::Redirect(rd) => {
            if ![301, 302, 303, 307, 308].contains(&rd.code) {
                return Err(refuse(".action.redirect", format!("{} is not a redirect status", rd.code)));
            }
        }
        Action::DirectResponse { status, .. } => {
            if !(200..=599).contains(status) {
                return Err(refuse(".action.direct_response", format!("status {status} is out of 200..599")));
            }
        }
    }
    if let Some(f) = &r.fault {
        let too_likely = |ppm: u32| ppm > PPM;
        if f.delay.as_ref().is_some_and(|(_, p)| too_likely(*p))
            || f.abort.as_ref().is_some_and(|(_, p)| too_likely(*p))
        {
            return Err(refuse(".fault", format!("a percentage above {PPM} parts per million")));
        }
        match &f.abort {
            Some((Abort::Http(s), _)) if !(200..=599).contains(s) => {
                return Err(refuse(".fault.abort", format!("status {s} is out of 200..599")));
            }
            Some((Abort::Grpc(s), _)) if *s > 16 => {
                return Err(refuse(".fault.abort", format!("gRPC status {s} is out of 0..16")));
            }
            _ => {}
        }
    }
    for (i, m) in r.mirrors.iter().enumerate() {
        if m.cluster.is_empty() || m.ppm > PPM {
            return Err(refuse(format!(".mirrors[{i}]"), "no cluster, or a percentage above 100"));
        }
    }
    check_ops(&r.request_headers).map_err(|m| refuse(".request_headers", m))?;
    check_ops(&r.response_headers).map_err(|m| refuse(".response_headers", m))?;
    Ok(())
}

fn check_dest(d: &Dest) -> Result<(), String> {
    if d.cluster.is_empty() {
        return Err("names no cluster".into());
    }
    check_ops(&d.request_headers)?;
    check_ops(&d.response_headers)
}

/// Header names Envoy would refuse to set (empty, or with bytes outside a token) would fail the
/// host call per request; refused once here instead.
fn check_ops(ops: &HeaderOps) -> Result<(), String> {
    let names = ops.set.iter().chain(&ops.add).map(|(n, _)| n).chain(&ops.remove);
    for n in names {
        let token = n.strip_prefix(':').unwrap_or(n);
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic() && !b"\"(),/:;<=>?@[\\]{}".contains(&b)) {
            return Err(format!("{n:?} is not a header name"));
        }
    }
    Ok(())
}

/// Registry hosts in name order, so equal tables are equal text.
pub(crate) fn sorted_map<S: Serializer, V: Serialize>(map: &HashMap<String, V>, s: S) -> Result<S::Ok, S::Error> {
    map.iter().collect::<BTreeMap<_, _>>().serialize(s)
}

/// A string match as written in the table: a regex by its pattern as written in Istio (compiled
/// and anchored again on load, by the same function as at compile time).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StrMatchWire {
    Exact(String),
    Prefix(String),
    Regex(String),
    Present,
}

impl From<StrMatch> for StrMatchWire {
    fn from(m: StrMatch) -> Self {
        match m {
            StrMatch::Exact(s) => StrMatchWire::Exact(s),
            StrMatch::Prefix(s) => StrMatchWire::Prefix(s),
            StrMatch::Regex(r) => StrMatchWire::Regex(crate::matcher::unanchored(r.as_str()).to_string()),
            StrMatch::Present => StrMatchWire::Present,
        }
    }
}

impl TryFrom<StrMatchWire> for StrMatch {
    type Error = String;

    fn try_from(m: StrMatchWire) -> Result<Self, String> {
        Ok(match m {
            StrMatchWire::Exact(s) => StrMatch::Exact(s),
            StrMatchWire::Prefix(s) => StrMatch::Prefix(s),
            StrMatchWire::Regex(p) => StrMatch::Regex(Box::new(compile_regex(&p)?)),
            StrMatchWire::Present => StrMatch::Present,
        })
    }
}

/// `rewrite.uriRegexRewrite`: (pattern, template) in the table.
pub(crate) mod regex_rewrite {
    use regex_lite::Regex;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<(Regex, String)>, s: S) -> Result<S::Ok, S::Error> {
        v.as_ref().map(|(r, t)| (r.as_str(), t.as_str())).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<(Regex, String)>, D::Error> {
        let v: Option<(String, String)> = Option::deserialize(d)?;
        v.map(|(p, t)| Regex::new(&p).map(|r| (r, t)).map_err(serde::de::Error::custom)).transpose()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    fn compiled(config: serde_json::Value) -> RouteTable {
        let c = crate::compile_json(config.to_string().as_bytes());
        match c.table {
            Some(t) => t,
            None => panic!("does not compile: {:?}", c.diagnostics),
        }
    }

    /// Also the sliced loader's fixture (`sliced::tests`).
    pub(super) fn seed() -> serde_json::Value {
        json!({"resources": [
            {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
             "metadata": {"name": "reviews", "namespace": "default"},
             "spec": {"hosts": ["reviews", "*.example.com"], "http": [
                {"match": [{"headers": {"end-user": {"exact": "jason"}}, "uri": {"regex": "/r[0-9]+"}}],
                 "fault": {"abort": {"httpStatus": 503, "percentage": {"value": 10}}},
                 "route": [{"destination": {"host": "reviews", "subset": "v2"}}]},
                {"match": [{"uri": {"prefix": "/api"}}],
                 "rewrite": {"uriRegexRewrite": {"match": "^/api/(.*)", "rewrite": "/\\1"}},
                 "route": [{"destination": {"host": "reviews", "subset": "v1"}, "weight": 80},
                           {"destination": {"host": "reviews", "subset": "v3"}, "weight": 20}]},
                {"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}]}},
            {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
             "metadata": {"name": "reviews", "namespace": "default"},
             "spec": {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                      {"name": "v2", "labels": {"version": "v2"}}, {"name": "v3", "labels": {"version": "v3"}}]}},
            {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
             "metadata": {"name": "ext", "namespace": "default"},
             "spec": {"hosts": ["api.ext.io"], "ports": [{"number": 443, "name": "https", "protocol": "HTTPS"}],
                      "resolution": "DNS"}}
        ]})
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn a_loaded_table_writes_back_the_same_text() {
        let t = compiled(seed());
        let text = to_json(&t).unwrap_or_default();
        let loaded = match load(text.as_bytes()) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(to_json(&loaded).unwrap_or_default(), text);
        assert_eq!(loaded.find_vs("reviews").map(|v| v.name.as_str()), Some("default/reviews"));
        assert_eq!(loaded.find_vs("a.example.com:80").map(|v| v.name.as_str()), Some("default/reviews"));
        assert!(loaded.in_registry("api.ext.io"));
    }

    /// A destination whose port comes from the request keeps the template's name on the default
    /// port whatever the table says (the filter uses it as is for requests on that port), and
    /// any other port gets its own name.
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn a_request_port_destination_is_named_by_the_template_on_every_port() {
        let text = to_json(&compiled(seed())).unwrap_or_default();
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let dest = &mut v["table"]["virtual_services"][0]["rules"][2]["action"]["Forward"]["destinations"][0];
        assert_eq!(dest["port_from_request"], json!(true), "{dest}");
        dest["cluster"] = json!("somewhere-else");
        let loaded = match load(v.to_string().as_bytes()) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        };
        let rule = &loaded.virtual_services[0].rules[2];
        let Action::Forward { destinations, .. } = &rule.action else { panic!("{rule:?}") };
        let template = &loaded.cluster_template;
        assert_eq!(destinations[0].cluster_on(template, 80), "outbound|80|v1|reviews.default.svc.cluster.local");
        assert_eq!(destinations[0].cluster_on(template, 9080), "outbound|9080|v1|reviews.default.svc.cluster.local");
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn source_form_other_versions_and_broken_tables_are_refused_by_name() {
        let source = load(seed().to_string().as_bytes()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(source.contains("source form"), "{source}");
        assert!(load(b"  ").err().is_some_and(|e| e.message.contains("empty")));
        assert!(load(b"null").is_err());
        let text = to_json(&compiled(seed())).unwrap_or_default();
        let other = text.replace(FORMAT, "meshroute.table/v0");
        assert!(load(other.as_bytes()).err().is_some_and(|e| e.at == "format" && e.message.contains("v0")));
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        v["table"]["virtual_services"][0]["entries"][0]["rule"] = json!(7);
        let e = load(v.to_string().as_bytes()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("virtual_services[0] (default/reviews).entries[0]") && e.contains("rule 7"), "{e}");
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        v["table"]["routing_header"] = json!("X Bad");
        assert!(load(v.to_string().as_bytes()).err().is_some_and(|e| e.at == "routing_header"));
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        v["table"]["surprise"] = json!(1);
        assert!(load(v.to_string().as_bytes()).err().is_some_and(|e| e.message.contains("surprise")));
        let bad_regex = text.replace("/r[0-9]+", "/r[0-9");
        assert!(load(bad_regex.as_bytes()).err().is_some_and(|e| e.message.contains("regex")));
    }
}
