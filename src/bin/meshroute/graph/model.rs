//! The traffic graph: sources (the mesh, each Gateway) → VirtualServices → their rules in
//! Istio's order → destinations with their shares. Built from the route tables the filter
//! compiles — one per source, as that proxy would see the configuration — so the shares, the
//! rule order and which VirtualService a source serves are the filter's, not a re-reading of
//! the YAML. A configuration with errors is compiled leniently (as istiod would serve it) and the
//! errors are drawn: undefined subsets, unreachable rules, Gateways that do not exist.

use meshroute::compile::{Abort, Action, CompiledVs, Rule};
use meshroute::config::{Bundle, Spec};
use meshroute::crd;
use meshroute::diag::Diagnostic;
use meshroute::explain::percent;
use meshroute::lenient::{compile_lenient, Lenient};
use meshroute::{host, Diagnostics};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The mesh (sidecars) or a Gateway.
    Source,
    VirtualService,
    Rule,
    /// A cluster, a redirect or a direct response.
    Destination,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Stable and unique, `[a-z0-9_]` only (safe in every format).
    pub id: String,
    pub kind: Kind,
    /// Lines of text.
    pub label: Vec<String>,
    /// Why the node is a mistake (drawn dashed red), if it is.
    pub broken: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    pub from: String,
    pub to: String,
    /// Share of the rule's traffic, in percent (rule → destination edges).
    pub share: Option<f64>,
    /// Short texts: match order, fault, retries, timeout, mirror.
    pub notes: Vec<String>,
    pub broken: bool,
    /// A mirror copy, not the request itself.
    pub mirror: bool,
    /// For a rule → cluster edge: (VirtualService, rule index, cluster), the key of the filter's
    /// route counter, so measured shares can be put next to the configured ones.
    pub route: Option<(String, usize, String)>,
}

impl Edge {
    /// The text drawn on the edge: the share first, then the notes.
    pub fn label(&self) -> String {
        let mut parts: Vec<String> = self.share.map(|s| format!("{}%", fmt_share(s))).into_iter().collect();
        parts.extend(self.notes.iter().cloned());
        parts.join(" · ")
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

/// `90`, `33.33`: no trailing zeros.
pub fn fmt_share(p: f64) -> String {
    let s = format!("{p:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Why the graph could not be built.
#[derive(Debug)]
pub struct InvalidGraph(pub String);

impl Graph {
    /// Puts the measured share next to the configured one on every rule → cluster edge:
    /// `counts` is requests per (VirtualService with `.` as `_`, rule, cluster) over the window
    /// (the filter's route counters, `meshroute status` reads the same).
    pub fn add_measured(&mut self, counts: &BTreeMap<(String, usize, String), u64>, window: &str) {
        let key = |vs: &str, rule: usize, cluster: &str| (vs.replace('.', "_"), rule, cluster.to_string());
        let mut per_rule: BTreeMap<(String, usize), u64> = BTreeMap::new();
        for e in &self.edges {
            if let Some((vs, rule, cluster)) = &e.route {
                *per_rule.entry((vs.clone(), *rule)).or_default() +=
                    counts.get(&key(vs, *rule, cluster)).copied().unwrap_or(0);
            }
        }
        for e in &mut self.edges {
            let Some((vs, rule, cluster)) = &e.route else { continue };
            let n = counts.get(&key(vs, *rule, cluster)).copied().unwrap_or(0);
            let total = per_rule.get(&(vs.clone(), *rule)).copied().unwrap_or(0);
            e.notes.push(if total == 0 {
                format!("live: no requests ({window})")
            } else {
                format!("live {}% ({n} of {total}, {window})", fmt_share(n as f64 * 100.0 / total as f64))
            });
        }
    }

    pub(super) fn node(&mut self, id: String, kind: Kind, label: Vec<String>, broken: Option<String>) -> String {
        if !self.nodes.iter().any(|n| n.id == id) {
            self.nodes.push(Node { id: id.clone(), kind, label, broken });
        }
        id
    }

    pub(super) fn edge(&mut self, e: Edge) {
        if !self.edges.iter().any(|x| x.from == e.from && x.to == e.to && x.mirror == e.mirror) {
            self.edges.push(e);
        }
    }

    /// A rule answered by the proxy itself (redirect, direct response): one node, every request.
    fn local_reply(&mut self, rule_id: &str, id: String, label: Vec<String>) {
        let to = self.node(id, Kind::Destination, label, None);
        self.edge(Edge {
            from: rule_id.to_string(),
            to,
            share: Some(100.0),
            notes: Vec::new(),
            broken: false,
            mirror: false,
            route: None,
        });
    }

    /// The graph of `bundle`; `only_host` keeps the VirtualServices that serve that host.
    pub fn build(bundle: &Bundle, only_host: Option<&str>) -> Result<Graph, InvalidGraph> {
        // Rules are drawn from the merged VirtualServices (delegates in their roots), the ones
        // the tables are compiled from, so that a rule's index names its conditions.
        let merged = meshroute::delegate::merge(bundle);
        let bundle = merged.bundle.as_ref().unwrap_or(bundle);
        let mut g = Graph::default();
        for source in sources(bundle) {
            let mut b = bundle.clone();
            b.settings.gateway = source.clone();
            let Some(l) = compile_lenient(&b, Diagnostics::default()) else {
                return Err(InvalidGraph(
                    "the configuration has errors outside any resource (settings); run `meshroute validate`".into(),
                ));
            };
            let vss: Vec<&CompiledVs> = match only_host {
                Some(h) => l.table.find_vs(h).into_iter().collect(),
                None => l.table.virtual_services.iter().collect(),
            };
            let l4 = super::l4::routes(bundle, &source, only_host);
            if vss.is_empty() && l4.is_empty() {
                continue;
            }
            let missing = source != "mesh" && !bundle.gateways().any(|(r, _)| r.key() == source);
            let src = g.node(
                ident(&["src", &source]),
                Kind::Source,
                vec![if source == "mesh" { "mesh (sidecars)".into() } else { format!("Gateway {source}") }],
                missing.then(|| "no such Gateway (IST0101)".to_string()),
            );
            for vs in vss {
                g.add_vs(&src, vs, &l, bundle);
            }
            super::l4::draw(&mut g, &src, bundle, &l4);
        }
        Ok(g)
    }

    fn add_vs(&mut self, src: &str, vs: &CompiledVs, l: &Lenient, bundle: &Bundle) {
        let vs_id = self.node(
            ident(&["vs", &vs.name]),
            Kind::VirtualService,
            vec![
                format!("VirtualService {}", vs.name),
                vs.hosts.iter().map(|h| short_host(h)).collect::<Vec<_>>().join(", "),
            ],
            None,
        );
        self.edge(Edge {
            from: src.to_string(),
            to: vs_id.clone(),
            share: None,
            notes: Vec::new(),
            broken: false,
            mirror: false,
            route: None,
        });
        let spec = bundle.resources.iter().find_map(|r| match &r.spec {
            Spec::VirtualService(v) if r.key() == vs.name => Some(v),
            _ => None,
        });
        for (order, rule) in vs.rules.iter().enumerate() {
            let crd_rule = spec.and_then(|v| v.http.get(rule.index));
            let (at, written) = rule.written_at(&vs.name);
            let unreachable = finding(&l.findings, at, &format!("spec.http[{written}]"), "IST0130");
            let mut label =
                vec![format!("#{}{}", rule.index, rule.name.as_ref().map(|n| format!(" {n}")).unwrap_or_default())];
            label.push(crd_rule.map(conditions).unwrap_or_else(|| "any request".into()));
            let rule_id = self.node(
                ident(&["rule", &vs.name, &rule.index.to_string()]),
                Kind::Rule,
                label,
                unreachable.map(|_| "unreachable (IST0130)".to_string()),
            );
            let mut notes = vec![format!("{}.", order + 1)];
            notes.extend(policy_notes(rule));
            self.edge(Edge {
                from: vs_id.clone(),
                to: rule_id.clone(),
                share: None,
                notes,
                broken: false,
                mirror: false,
                route: None,
            });
            self.add_targets(&rule_id, vs, rule, l);
            if let Some(r) = crd_rule {
                self.add_weightless(&rule_id, &vs.name, rule.index, r);
            }
        }
        // istiod drops what follows a catch-all (the table has no such rule): draw it anyway,
        // as the mistake `validate` reports (IST0130), with the destinations it names.
        let compiled: BTreeSet<usize> = vs.rules.iter().map(|r| r.index).collect();
        for (i, r) in spec.map(|v| v.http.as_slice()).unwrap_or_default().iter().enumerate() {
            let at = format!("spec.http[{i}]");
            let Some(d) = finding(&l.findings, &vs.name, &at, "IST0130").filter(|_| !compiled.contains(&i)) else {
                continue;
            };
            let name = r.name.as_ref().map(|n| format!(" {n}")).unwrap_or_default();
            let rule_id = self.node(
                ident(&["rule", &vs.name, &i.to_string()]),
                Kind::Rule,
                vec![format!("#{i}{name}"), conditions(r)],
                Some(format!("never taken ({})", d.code.unwrap_or("IST0130"))),
            );
            let mut notes = vec!["unreachable".to_string()];
            notes.extend(spec_fault_notes(r));
            self.edge(Edge {
                from: vs_id.clone(),
                to: rule_id.clone(),
                share: None,
                notes,
                broken: true,
                mirror: false,
                route: None,
            });
            let total: i64 = r.route.iter().map(|d| d.weight.unwrap_or(0).max(0)).sum();
            for (k, d) in r.route.iter().enumerate() {
                let Some(dest) = &d.destination else { continue };
                let mut label = vec![dest.host.clone()];
                label.extend(dest.subset.as_ref().map(|s| format!("subset {s}")));
                let id = self.node(
                    ident(&["unreached", &vs.name, &i.to_string(), &k.to_string()]),
                    Kind::Destination,
                    label,
                    Some("receives nothing".into()),
                );
                let share = if r.route.len() == 1 || total == 0 {
                    100.0
                } else {
                    d.weight.unwrap_or(0).max(0) as f64 * 100.0 / total as f64
                };
                self.edge(Edge {
                    from: rule_id.clone(),
                    to: id,
                    share: Some(share),
                    notes: Vec::new(),
                    broken: true,
                    mirror: false,
                    route: None,
                });
            }
        }
    }

    /// Destinations a rule names with weight 0 beside others: the table drops them (they never
    /// receive traffic, MR0003), the picture shows them at 0 %, dashed.
    fn add_weightless(&mut self, rule_id: &str, vs: &str, index: usize, r: &crd::HttpRoute) {
        if r.route.len() < 2 {
            return;
        }
        for (k, d) in r.route.iter().enumerate() {
            let Some(dest) = d.destination.as_ref().filter(|_| d.weight.unwrap_or(0) <= 0) else { continue };
            let mut label = vec![dest.host.clone()];
            label.extend(dest.subset.as_ref().map(|s| format!("subset {s}")));
            label.push("weight 0: receives nothing".into());
            let id = self.node(
                ident(&["weightless", vs, &index.to_string(), &k.to_string()]),
                Kind::Destination,
                label,
                None,
            );
            self.edge(Edge {
                from: rule_id.to_string(),
                to: id,
                share: Some(0.0),
                notes: Vec::new(),
                broken: false,
                mirror: true,
                route: None,
            });
        }
    }

    fn add_targets(&mut self, rule_id: &str, vs: &CompiledVs, rule: &Rule, l: &Lenient) {
        match &rule.action {
            Action::Forward { destinations, total_weight } => {
                for d in destinations {
                    let (at, written) = rule.written_at(&vs.name);
                    let consequence = l.tolerated.forward_consequence(at, written, d);
                    let label = vec![short_host(&d.host), subset_port(d.subset.as_deref(), d.port)];
                    let id = self.node(
                        ident(&["dst", &d.cluster]),
                        Kind::Destination,
                        label,
                        consequence.as_ref().map(|c| match &d.subset {
                            Some(s) => format!("{}: subset {s} undefined (IST0101)", c.status),
                            None => format!("{}: no such cluster (IST0101)", c.status),
                        }),
                    );
                    let share = if destinations.len() == 1 || *total_weight == 0 {
                        100.0
                    } else {
                        f64::from(d.weight) * 100.0 / *total_weight as f64
                    };
                    self.edge(Edge {
                        from: rule_id.to_string(),
                        to: id,
                        share: Some(share),
                        notes: Vec::new(),
                        broken: consequence.is_some(),
                        mirror: false,
                        route: Some((vs.name.clone(), rule.index, d.cluster.clone())),
                    });
                }
                if destinations.is_empty() {
                    let id = self.node(
                        ident(&["nodest", rule_id]),
                        Kind::Destination,
                        vec!["no destination".into()],
                        Some("503: every weight is 0".into()),
                    );
                    self.edge(Edge {
                        from: rule_id.to_string(),
                        to: id,
                        share: Some(100.0),
                        notes: Vec::new(),
                        broken: true,
                        mirror: false,
                        route: None,
                    });
                }
            }
            Action::Redirect(r) => {
                let to = [r.scheme.as_deref().map(|s| format!("{s}://")), r.authority.clone(), r.uri.clone()]
                    .into_iter()
                    .flatten()
                    .collect::<String>();
                let label = if to.is_empty() { "same URL".into() } else { to };
                self.local_reply(
                    rule_id,
                    ident(&["redirect", &vs.name, &rule.index.to_string()]),
                    vec![format!("redirect {}", r.code), label],
                );
            }
            Action::DirectResponse { status, .. } => {
                let id = ident(&["direct", &vs.name, &rule.index.to_string()]);
                self.local_reply(rule_id, id, vec![format!("direct response {status}")]);
            }
        }
        let (written_vs, written) = rule.written_at(&vs.name);
        for m in &rule.mirrors {
            let label = vec![short_host(&m.host), subset_port(m.subset.as_deref(), m.port)];
            let undefined = l.tolerated.served.iter().find(|d| {
                d.resource.as_ref().is_some_and(|r| format!("{}/{}", r.namespace, r.name) == written_vs)
                    && (d.path.starts_with(&format!("spec.http[{written}].mirror")))
                    && d.message.contains(m.subset.as_deref().unwrap_or("\u{0}"))
            });
            let id = self.node(
                ident(&["dst", &m.cluster]),
                Kind::Destination,
                label,
                undefined.map(|_| "copies dropped: subset undefined (IST0101)".to_string()),
            );
            self.edge(Edge {
                from: rule_id.to_string(),
                to: id,
                share: None,
                notes: vec![format!("mirror {}%", fmt_share(percent(m.ppm)))],
                broken: undefined.is_some(),
                mirror: true,
                route: None,
            });
        }
    }
}

/// Every proxy the configuration configures: the mesh, each Gateway, and each Gateway a
/// VirtualService names that does not exist (drawn as a mistake).
fn sources(bundle: &Bundle) -> Vec<String> {
    let mut out = vec!["mesh".to_string()];
    let mut seen = BTreeSet::new();
    for (r, _) in bundle.gateways() {
        if seen.insert(r.key()) {
            out.push(r.key());
        }
    }
    for (r, vs) in bundle.virtual_services() {
        let named =
            vs.gateways.iter().chain(vs.http.iter().flat_map(|h| h.matches.iter().flat_map(|m| m.gateways.iter())));
        for g in named.filter(|g| g.as_str() != "mesh") {
            let key = host::resolve_gateway(g, &r.namespace);
            if seen.insert(key.clone()) {
                out.push(key);
            }
        }
    }
    out
}

fn finding<'a>(d: &'a Diagnostics, vs: &str, path: &str, code: &str) -> Option<&'a Diagnostic> {
    d.iter().find(|x| {
        x.code == Some(code)
            && x.path == path
            && x.resource.as_ref().is_some_and(|r| format!("{}/{}", r.namespace, r.name) == vs)
    })
}

pub(super) fn subset_port(subset: Option<&str>, port: u32) -> String {
    match subset {
        Some(s) => format!("subset {s} · port {port}"),
        None => format!("port {port}"),
    }
}

/// `reviews.default.svc.cluster.local` → `reviews.default`.
pub(super) fn short_host(h: &str) -> String {
    h.strip_suffix(".svc.cluster.local").unwrap_or(h).to_string()
}

/// A node id from parts: lower-case letters, digits and `_`.
pub(super) fn ident(parts: &[&str]) -> String {
    let mut s = String::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            s.push_str("__");
        }
        s.extend(p.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }));
    }
    s
}

/// The rule's match blocks, short: `uri prefix /api, header x-debug=true | ...`.
fn conditions(r: &crd::HttpRoute) -> String {
    if r.matches.is_empty() {
        return "any request".into();
    }
    let blocks: Vec<String> = r
        .matches
        .iter()
        .map(|m| {
            let mut c = Vec::new();
            let sm = |s: &crd::StringMatch| match (&s.exact, &s.prefix, &s.regex) {
                (Some(e), _, _) => format!("={e}"),
                (_, Some(p), _) => format!(" prefix {p}"),
                (_, _, Some(r)) => format!(" ~{r}"),
                _ => " present".into(),
            };
            if let Some(u) = &m.uri {
                c.push(format!("uri{}", sm(u)));
            }
            for (what, v) in [("scheme", &m.scheme), ("method", &m.method), ("authority", &m.authority)] {
                if let Some(v) = v {
                    c.push(format!("{what}{}", sm(v)));
                }
            }
            c.extend(m.headers.iter().map(|(k, v)| format!("{k}{}", sm(v))));
            c.extend(m.without_headers.iter().map(|(k, v)| format!("not {k}{}", sm(v))));
            c.extend(m.query_params.iter().map(|(k, v)| format!("?{k}{}", sm(v))));
            if let Some(p) = m.port {
                c.push(format!("port {p}"));
            }
            c.extend(m.source_labels.iter().map(|(k, v)| format!("from {k}={v}")));
            if !m.gateways.is_empty() {
                c.push(format!("gateways {}", m.gateways.join(",")));
            }
            if c.is_empty() {
                "any request".into()
            } else {
                c.join(", ")
            }
        })
        .collect();
    blocks.join(" | ")
}

/// The fault of a rule as written (for rules the table does not hold).
fn spec_fault_notes(r: &crd::HttpRoute) -> Vec<String> {
    let mut out = Vec::new();
    let Some(f) = &r.fault else { return out };
    let pct = |p: &Option<crd::Percent>| p.as_ref().map_or("0".to_string(), |p| fmt_share(p.value));
    if let Some(d) = &f.delay {
        out.push(format!("delay {} {}%", d.fixed_delay.as_deref().unwrap_or("?"), pct(&d.percentage)));
    }
    if let Some(a) = &f.abort {
        let what = match (&a.http_status, &a.grpc_status) {
            (Some(s), _) => s.to_string(),
            (None, Some(g)) => format!("grpc {g}"),
            _ => "?".into(),
        };
        out.push(format!("abort {what} {}%", pct(&a.percentage)));
    }
    out
}

/// Fault, retries (when not Istio's default), timeout: what happens on the way through a rule.
fn policy_notes(rule: &Rule) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(f) = &rule.fault {
        if let Some((d, ppm)) = f.delay {
            out.push(format!("delay {} {}%", dur(d), fmt_share(percent(ppm))));
        }
        if let Some((a, ppm)) = &f.abort {
            let what = match a {
                Abort::Http(s) => format!("abort {s}"),
                Abort::Grpc(s) => format!("abort grpc {s}"),
            };
            out.push(format!("{what} {}%", fmt_share(percent(*ppm))));
        }
    }
    let r = &rule.retry;
    if !r.is_default {
        if r.attempts == 0 {
            out.push("no retries".into());
        } else {
            let per_try = r.per_try_timeout.map(|p| format!(" × {}", dur(p))).unwrap_or_default();
            out.push(format!("retries {}{per_try}", r.attempts));
        }
    }
    if let Some(t) = rule.timeout {
        out.push(format!("timeout {}", dur(t)));
    }
    out
}

fn dur(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}
