//! Delegate VirtualServices merged into their roots, as istiod merges them before anything
//! reads a route (istio/istio `pilot/pkg/model/virtualservice_controller.go`
//! `mergeVirtualServices`, `pilot/pkg/model/virtualservice.go` `MergeHTTPRoutes`,
//! `mergeHTTPRoute`, `mergeHTTPMatchRequests`, `mergeHTTPMatchRequest`, `hasConflict`,
//! `stringMatchConflict`). Rules R180–R189 in docs/semantics.md.
//!
//! A VirtualService without `hosts` is a delegate: it is never served itself. A root rule with
//! `delegate: {name, namespace}` is replaced, in place, by the delegate's rules, each with the
//! conjunction of its match and the root's, and the root's fields where it has none of its own.
//! The result is an ordinary bundle, so validation's analyzers, `compile`, `meshroute envoy`,
//! `explain` and `graph` all read the same merged routes.

use crate::config::{Bundle, Resource, Spec};
use crate::crd::{self, HttpMatchRequest, HttpRoute, StringMatch};
use crate::host;
use std::collections::{BTreeMap, HashMap};

/// Something the merge left out, which istiod only logs (never a webhook error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dropped {
    /// The root rule names a delegate that does not exist (`spec.http[rule].delegate`).
    NotFound { root: usize, rule: usize, delegate: String },
    /// The delegate exists but its `exportTo` does not include the root's namespace.
    NotExported { root: usize, rule: usize, delegate: String },
    /// A delegate rule whose match conflicts with every match of the root rule.
    Conflict { root: usize, rule: usize, delegate: usize, delegate_rule: usize },
    /// A delegate no root rule names: it routes nothing.
    Unreferenced { delegate: usize },
}

/// The merged bundle (`None`: nothing to merge, use the input) and what was left out.
pub struct Merged {
    pub bundle: Option<Bundle>,
    pub dropped: Vec<Dropped>,
    /// Where each merged rule comes from, by (`Resource::index` of the root, position in its
    /// merged `spec.http`).
    pub origins: HashMap<(usize, usize), Origin>,
    /// A root's own rules whose merged position differs from the written one: (root
    /// `Resource::index`, merged position) → position in `spec.http` as written.
    pub written: HashMap<(usize, usize), usize>,
}

/// A rule of a root VirtualService that came from a delegate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Origin {
    /// The root's delegating rule (`spec.http[root_rule]` as written).
    pub root_rule: usize,
    /// `namespace/name` of the delegate.
    pub delegate: String,
    /// The delegate's rule (`spec.http[delegate_rule]` of the delegate).
    pub delegate_rule: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "spec.http[{}] delegates to VirtualService {} spec.http[{}]",
            self.root_rule, self.delegate, self.delegate_rule
        )
    }
}

/// Is this a delegate VirtualService (istiod: `len(spec.Hosts) == 0`)?
pub fn is_delegate(vs: &crd::VirtualService) -> bool {
    vs.hosts.is_empty()
}

/// istiod's merge over a whole bundle. Linear in the number of rules (plus the delegate rules
/// copied into each root that names them).
pub fn merge(bundle: &Bundle) -> Merged {
    let any_root = bundle.virtual_services().any(|(_, vs)| vs.http.iter().any(|r| r.delegate.is_some()));
    let any_delegate = bundle.virtual_services().any(|(_, vs)| is_delegate(vs));
    if !any_root && !any_delegate {
        return Merged { bundle: None, dropped: Vec::new(), origins: HashMap::new(), written: HashMap::new() };
    }
    let by_key: HashMap<(&str, &str), (usize, &Resource, &crd::VirtualService)> = bundle
        .resources
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match &r.spec {
            Spec::VirtualService(vs) if is_delegate(vs) => Some(((r.namespace.as_str(), r.name.as_str()), (i, r, vs))),
            _ => None,
        })
        .collect();
    let settings = &bundle.settings;
    let mut dropped = Vec::new();
    let mut referenced = vec![false; bundle.resources.len()];
    let mut origins = HashMap::new();
    let mut written = HashMap::new();
    let mut resources = Vec::with_capacity(bundle.resources.len());
    for (ri, res) in bundle.resources.iter().enumerate() {
        let Spec::VirtualService(vs) = &res.spec else {
            resources.push(res.clone());
            continue;
        };
        if is_delegate(vs) {
            continue; // never served on its own
        }
        if !vs.http.iter().any(|r| r.delegate.is_some()) {
            resources.push(res.clone());
            continue;
        }
        let mut http = Vec::with_capacity(vs.http.len());
        for (rule, root) in vs.http.iter().enumerate() {
            let Some(d) = &root.delegate else {
                if http.len() != rule {
                    written.insert((res.index, http.len()), rule);
                }
                http.push(root.clone());
                continue;
            };
            let ns = d.namespace.as_deref().filter(|n| !n.is_empty()).unwrap_or(&res.namespace);
            let key = format!("{ns}/{}", d.name);
            let Some((di, dres, dvs)) = by_key.get(&(ns, d.name.as_str())) else {
                dropped.push(Dropped::NotFound { root: ri, rule, delegate: key });
                continue;
            };
            if let Some(seen) = referenced.get_mut(*di) {
                *seen = true;
            }
            if !exported_to(&dvs.export_to, &settings.default_virtual_service_export_to, ns, &res.namespace) {
                dropped.push(Dropped::NotExported { root: ri, rule, delegate: key });
                continue;
            }
            let mut root = root.clone();
            root.delegate = None;
            for (drule, child) in dvs.http.iter().enumerate() {
                let child = resolve_short_names(child, &dres.namespace, &settings.domain_suffix);
                match merge_route(&root, child) {
                    Some(m) => {
                        let origin = Origin { root_rule: rule, delegate: key.clone(), delegate_rule: drule };
                        origins.insert((res.index, http.len()), origin);
                        http.push(m);
                    }
                    None => dropped.push(Dropped::Conflict { root: ri, rule, delegate: *di, delegate_rule: drule }),
                }
            }
        }
        let mut merged = res.clone();
        if let Spec::VirtualService(mvs) = &mut merged.spec {
            mvs.http = http;
        }
        resources.push(merged);
    }
    dropped.extend(
        by_key
            .values()
            .filter(|(i, _, _)| !referenced.get(*i).copied().unwrap_or(true))
            .map(|(i, _, _)| Dropped::Unreferenced { delegate: *i }),
    );
    dropped.sort_by_key(|d| match d {
        Dropped::NotFound { root, .. } | Dropped::NotExported { root, .. } | Dropped::Conflict { root, .. } => *root,
        Dropped::Unreferenced { delegate } => *delegate,
    });
    Merged {
        bundle: Some(Bundle { resources, settings: bundle.settings.clone(), registry: bundle.registry.clone() }),
        dropped,
        origins,
        written,
    }
}

/// The delegate's visibility to its root (`mergeVirtualServices`): its `exportTo` (or the mesh
/// default, `*` when unset), `.` meaning its own namespace, must contain `*` or the root's
/// namespace.
fn exported_to(export_to: &[String], mesh_default: &[String], owner_ns: &str, root_ns: &str) -> bool {
    let set = if export_to.is_empty() { mesh_default } else { export_to };
    if set.is_empty() {
        return true;
    }
    set.iter().any(|e| match e.as_str() {
        "*" => true,
        "." => owner_ns == root_ns,
        ns => ns == root_ns,
    })
}

/// `ResolveVirtualServiceShortnames` on the delegate: its destinations, mirrors and match
/// gateways are names in the delegate's namespace, whatever namespace the root is in.
fn resolve_short_names(r: &HttpRoute, ns: &str, suffix: &str) -> HttpRoute {
    let mut r = r.clone();
    for d in r.route.iter_mut().filter_map(|d| d.destination.as_mut()) {
        if !d.host.is_empty() {
            d.host = host::resolve(&d.host, ns, suffix);
        }
    }
    if let Some(m) = r.mirror.as_mut() {
        m.host = host::resolve(&m.host, ns, suffix);
    }
    for m in r.mirrors.iter_mut().filter_map(|m| m.destination.as_mut()) {
        m.host = host::resolve(&m.host, ns, suffix);
    }
    for m in &mut r.matches {
        for g in &mut m.gateways {
            *g = host::resolve_gateway(g, ns);
        }
    }
    r
}

/// `mergeHTTPRoute`: `None` when the delegate rule's matches conflict with the root's.
pub fn merge_route(root: &HttpRoute, mut child: HttpRoute) -> Option<HttpRoute> {
    child.matches = merge_matches(&root.matches, &child.matches)?;
    child.name = joined(&root.name, &child.name);
    inherit(&mut child.rewrite, &root.rewrite);
    inherit(&mut child.direct_response, &root.direct_response);
    inherit(&mut child.timeout, &root.timeout);
    inherit(&mut child.retries, &root.retries);
    inherit(&mut child.fault, &root.fault);
    inherit(&mut child.mirror, &root.mirror);
    inherit(&mut child.mirror_percent, &root.mirror_percent);
    inherit(&mut child.mirror_percentage, &root.mirror_percentage);
    inherit(&mut child.cors_policy, &root.cors_policy);
    if child.mirrors.is_empty() {
        child.mirrors = root.mirrors.clone();
    }
    inherit(&mut child.headers, &root.headers);
    Some(child)
}

fn inherit<T: Clone>(child: &mut Option<T>, root: &Option<T>) {
    if child.is_none() {
        child.clone_from(root);
    }
}

/// Route and match names: the child's, prefixed `root-` when both have one.
fn joined(root: &Option<String>, child: &Option<String>) -> Option<String> {
    let nz = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    match (nz(root), nz(child)) {
        (Some(r), Some(c)) => Some(format!("{r}-{c}")),
        (r, None) => r,
        (None, c) => c,
    }
}

/// `mergeHTTPMatchRequests`: every delegate match must be compatible with at least one root
/// match; each compatible pair becomes one merged match (delegate order, then root order).
pub fn merge_matches(root: &[HttpMatchRequest], child: &[HttpMatchRequest]) -> Option<Vec<HttpMatchRequest>> {
    if root.is_empty() {
        return Some(child.to_vec());
    }
    if child.is_empty() {
        return Some(root.to_vec());
    }
    let mut out = Vec::new();
    for c in child {
        let before = out.len();
        out.extend(root.iter().filter(|r| !has_conflict(r, c)).map(|r| merge_match(r, c)));
        if out.len() == before {
            return None;
        }
    }
    Some(out)
}

/// `mergeHTTPMatchRequest`: the delegate's conditions, the root's where the delegate has none;
/// maps united (the delegate's entry wins a shared key).
fn merge_match(root: &HttpMatchRequest, child: &HttpMatchRequest) -> HttpMatchRequest {
    let mut out = child.clone();
    out.name = joined(&root.name, &child.name);
    inherit(&mut out.uri, &root.uri);
    inherit(&mut out.scheme, &root.scheme);
    inherit(&mut out.method, &root.method);
    inherit(&mut out.authority, &root.authority);
    out.headers = united(&root.headers, &child.headers);
    out.without_headers = united(&root.without_headers, &child.without_headers);
    out.query_params = united(&root.query_params, &child.query_params);
    if out.port.is_none_or(|p| p == 0) {
        out.port = root.port;
    }
    out.source_labels = united(&root.source_labels, &child.source_labels);
    if out.source_namespace.as_deref().is_none_or(str::is_empty) {
        out.source_namespace.clone_from(&root.source_namespace);
    }
    if out.gateways.is_empty() {
        out.gateways.clone_from(&root.gateways);
    }
    if out.stat_prefix.as_deref().is_none_or(str::is_empty) {
        out.stat_prefix.clone_from(&root.stat_prefix);
    }
    out
}

fn united<V: Clone>(root: &BTreeMap<String, V>, child: &BTreeMap<String, V>) -> BTreeMap<String, V> {
    let mut out = root.clone();
    out.extend(child.iter().map(|(k, v)| (k.clone(), v.clone())));
    out
}

/// `hasConflict`: can no request match both? (istiod's notion: the delegate's condition must be
/// a subset of the root's, field by field.)
pub fn has_conflict(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> bool {
    let pairs = [(&root.uri, &leaf.uri), (&root.scheme, &leaf.scheme), (&root.method, &leaf.method)];
    if pairs
        .into_iter()
        .chain([(&root.authority, &leaf.authority)])
        .any(|(r, l)| string_conflict(r.as_ref(), l.as_ref()))
    {
        return true;
    }
    for (r, l) in [
        (&root.headers, &leaf.headers),
        (&root.without_headers, &leaf.without_headers),
        (&root.query_params, &leaf.query_params),
    ] {
        if l.iter().any(|(k, lv)| string_conflict(r.get(k), Some(lv))) {
            return true;
        }
    }
    if root.ignore_uri_case != leaf.ignore_uri_case {
        return true;
    }
    let (rp, lp) = (root.port.unwrap_or(0), leaf.port.unwrap_or(0));
    if rp > 0 && lp > 0 && rp != lp {
        return true;
    }
    let rns = root.source_namespace.as_deref().unwrap_or_default();
    if !rns.is_empty() && leaf.source_namespace.as_deref().unwrap_or_default() != rns {
        return true;
    }
    if leaf.source_labels.iter().any(|(k, v)| root.source_labels.get(k).is_some_and(|rv| rv != v)) {
        return true;
    }
    if !root.gateways.is_empty() && !leaf.gateways.is_empty() {
        if root.gateways.len() < leaf.gateways.len() {
            return true;
        }
        if leaf.gateways.iter().any(|g| !root.gateways.contains(g)) {
            return true;
        }
    }
    false
}

/// `stringMatchConflict`. An empty string counts as unset, as Go's getters make it.
fn string_conflict(root: Option<&StringMatch>, leaf: Option<&StringMatch>) -> bool {
    let (Some(root), Some(leaf)) = (root, leaf) else { return false };
    let get = |s: &Option<String>| s.clone().filter(|v| !v.is_empty());
    let (re, rp, rr) = (get(&root.exact), get(&root.prefix), get(&root.regex));
    let (le, lp, lr) = (get(&leaf.exact), get(&leaf.prefix), get(&leaf.regex));
    if rr.is_some() && (lr.is_some() || lp.is_some() || le.is_some()) {
        return true;
    }
    if lr.is_some() && (rr.is_some() || rp.is_some() || re.is_some()) {
        return true;
    }
    if let Some(exact) = re {
        return lp.is_some() || le.as_deref() != Some(exact.as_str());
    }
    if let Some(prefix) = rp {
        if let Some(l) = lp {
            return !l.starts_with(&prefix);
        }
        if let Some(l) = le {
            return !l.starts_with(&prefix);
        }
    }
    true
}
