//! Cross-resource checks in the manner of `istioctl analyze`: references to DestinationRule
//! subsets and Gateways (IST0101), hosts claimed twice (IST0109), VirtualService hosts a Gateway
//! does not serve (IST0132), DestinationRules for unknown hosts (IST0174), subsets selecting no
//! known workload (IST0173), DestinationRules merged for one host, Sidecars without selector
//! (IST0111).

use super::{Ctx, Place};
use crate::config::Resource;
use crate::crd;
use crate::diag::Severity;
use crate::host;
use crate::labels::{selects, LabelIndex};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

pub(super) fn run(cx: &mut Ctx<'_>) {
    referenced_subsets(cx);
    referenced_gateways(cx);
    destination_ports(cx);
    ingress_subsets(cx);
    conflicting_hosts(cx);
    destination_rule_hosts(cx);
    subsets_without_workloads(cx);
    destination_rules_merged(cx);
    sidecars_without_selector(cx);
}

/// Host patterns (in a list) looked up by the names they cover: exact patterns by hash, the
/// wildcards (usually few) one by one, so checking every destination against every
/// DestinationRule stays linear in the configuration.
struct HostPatterns<'a> {
    exact: HashMap<String, Vec<usize>>,
    wildcards: Vec<(usize, &'a str)>,
}

impl<'a> HostPatterns<'a> {
    fn new(patterns: impl Iterator<Item = &'a str>) -> Self {
        let mut exact: HashMap<String, Vec<usize>> = HashMap::new();
        let mut wildcards = Vec::new();
        for (i, p) in patterns.enumerate() {
            if p.starts_with('*') {
                wildcards.push((i, p));
            } else {
                exact.entry(p.to_ascii_lowercase()).or_default().push(i);
            }
        }
        HostPatterns { exact, wildcards }
    }

    /// Positions of the patterns that `covers` the name, in list order. Borrowed in the common
    /// case (a lowercase name no wildcard covers): it runs for every destination.
    fn covering(&self, name: &str) -> Cow<'_, [usize]> {
        let exact = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            self.exact.get(&name.to_ascii_lowercase())
        } else {
            self.exact.get(name)
        };
        let exact = exact.map_or(&[][..], Vec::as_slice);
        let mut hits: Vec<usize> = self.wildcards.iter().filter(|(_, p)| covers(p, name)).map(|(i, _)| *i).collect();
        if hits.is_empty() {
            return Cow::Borrowed(exact);
        }
        hits.extend_from_slice(exact);
        hits.sort_unstable();
        Cow::Owned(hits)
    }
}

fn resolve(cx: &Ctx<'_>, h: &str, ns: &str) -> String {
    host::resolve(h, ns, cx.domain_suffix())
}

/// Does `pattern` (a resolved DestinationRule host) apply to `name` (a resolved host)?
fn covers(pattern: &str, name: &str) -> bool {
    pattern.eq_ignore_ascii_case(name) || host::matches(pattern, name)
}

/// IST0101 for `destination.subset` (routes, `mirror`, `mirrors`): some DestinationRule for the
/// host must define the subset. Istio's analyzer compares host names exactly; here a wildcard
/// DestinationRule host counts too, as it does at runtime.
fn referenced_subsets(cx: &mut Ctx<'_>) {
    let bundle = cx.bundle;
    let drs: Vec<(String, &Resource, &crd::DestinationRule)> = bundle
        .destination_rules()
        .filter(|(_, dr)| !dr.host.is_empty())
        .map(|(r, dr)| (resolve(cx, &dr.host, &r.namespace), r, dr))
        .collect();
    let by_host = HostPatterns::new(drs.iter().map(|(h, _, _)| h.as_str()));
    for (r, vs) in bundle.virtual_services() {
        let at = Place(Some(r));
        for (i, route) in vs.http.iter().enumerate() {
            // The field path is written only for a reference that is reported.
            enum Field {
                Route(usize),
                Mirror,
                Mirrors(usize),
            }
            let routes =
                route.route.iter().enumerate().filter_map(|(k, d)| Some((d.destination.as_ref()?, Field::Route(k))));
            let mirror = route.mirror.iter().map(|m| (m, Field::Mirror));
            let mirrors = route
                .mirrors
                .iter()
                .enumerate()
                .filter_map(|(k, m)| Some((m.destination.as_ref()?, Field::Mirrors(k))));
            for (dest, field) in routes.chain(mirror).chain(mirrors) {
                let Some(subset) = dest.subset.as_deref().filter(|s| !s.is_empty()) else { continue };
                if dest.host.is_empty() {
                    continue;
                }
                let target = resolve(cx, &dest.host, &r.namespace);
                let for_host: Vec<&(String, &Resource, &crd::DestinationRule)> =
                    by_host.covering(&target).iter().filter_map(|&i| drs.get(i)).collect();
                if for_host.iter().any(|(_, _, dr)| dr.subsets.iter().any(|s| s.name == subset)) {
                    continue;
                }
                let hint = match for_host.first() {
                    None => format!(" (no DestinationRule for host {target})"),
                    Some((_, dr_res, _)) => {
                        let names: Vec<&str> =
                            for_host.iter().flat_map(|(_, _, dr)| dr.subsets.iter().map(|s| s.name.as_str())).collect();
                        if names.is_empty() {
                            format!(" (DestinationRule {} defines no subsets)", dr_res.key())
                        } else {
                            format!(" (DestinationRule {} defines subsets: [{}])", dr_res.key(), names.join(" "))
                        }
                    }
                };
                let (path, what) = match field {
                    Field::Route(k) => (format!("spec.http[{i}].route[{k}].destination.subset"), "host+subset"),
                    Field::Mirror => (format!("spec.http[{i}].mirror.subset"), "mirror+subset"),
                    Field::Mirrors(k) => (format!("spec.http[{i}].mirrors[{k}].destination.subset"), "mirror+subset"),
                };
                cx.push(
                    Severity::Error,
                    Some("IST0101"),
                    &at,
                    path,
                    format!("Referenced {what} in destinationrule not found: \"{}+{subset}\"{hint}", dest.host),
                );
            }
        }
    }
}

/// IST0101 for gateways a VirtualService names (top level and per match) and IST0132 for hosts
/// the Gateway does not serve.
fn referenced_gateways(cx: &mut Ctx<'_>) {
    let bundle = cx.bundle;
    for (r, vs) in bundle.virtual_services() {
        let at = Place(Some(r));
        let mut refs: Vec<(String, &str, bool)> =
            vs.gateways.iter().enumerate().map(|(i, g)| (format!("spec.gateways[{i}]"), g.as_str(), true)).collect();
        for (i, route) in vs.http.iter().enumerate() {
            for (j, m) in route.matches.iter().enumerate() {
                for (k, g) in m.gateways.iter().enumerate() {
                    refs.push((format!("spec.http[{i}].match[{j}].gateways[{k}]"), g.as_str(), false));
                }
            }
        }
        for (path, g, top_level) in refs {
            // An internal Gateway generated from a Kubernetes Gateway is IST0165 (istio_parity).
            if g == "mesh" || g.contains("~istio-autogenerated-k8s-gateway~") {
                continue;
            }
            let full = host::resolve_gateway(g, &r.namespace);
            let found = bundle.gateways().find(|(gr, _)| gr.key() == full);
            // A Gateway API Gateway of that name (`AN virtualservice/gateways.go`
            // `vsHostInKubernetesGateway`): a listener without hostname serves every host (K18).
            let kube =
                found.is_none().then(|| bundle.registry.kube_gateways.iter().find(|(key, _)| *key == full)).flatten();
            if let Some((_, hostnames)) = kube {
                let served = hostnames.iter().any(|h| match h {
                    None => true,
                    Some(gh) => vs.hosts.iter().any(|vh| host::overlaps(gh, vh)),
                });
                if top_level && !served {
                    cx.push(
                        Severity::Warning,
                        Some("IST0132"),
                        &at,
                        path,
                        format!(
                            "one or more host [{}] defined in VirtualService {} not found in Gateway {full}.",
                            vs.hosts.join(" "),
                            r.key(),
                        ),
                    );
                }
                continue;
            }
            if found.is_none() {
                let name = full.rsplit('/').next().unwrap_or_default();
                let elsewhere: Vec<String> =
                    bundle.gateways().filter(|(gr, _)| gr.name == name).map(|(gr, _)| gr.key()).collect();
                let hint = match elsewhere.first() {
                    Some(other) => format!(" (it resolves to {full}; Gateway {other} exists: write \"{other}\")"),
                    None => format!(" (it resolves to {full})"),
                };
                cx.push(
                    Severity::Error,
                    Some("IST0101"),
                    &at,
                    path.as_str(),
                    format!("Referenced gateway not found: {g:?}{hint}"),
                );
            }
            // istioctl also reports a missing Gateway here: it has no hosts to match.
            let served = found.is_some_and(|(gr, gw)| vs_host_in_gateway(cx, vs, &r.namespace, gr, gw));
            if top_level && !vs.hosts.is_empty() && !served {
                cx.push(
                    Severity::Warning,
                    Some("IST0132"),
                    &at,
                    path,
                    format!(
                        "one or more host [{}] defined in VirtualService {} not found in Gateway {full}.",
                        vs.hosts.join(" "),
                        r.key(),
                    ),
                );
            }
        }
    }
}

/// Every destination of a VirtualService (routes, `mirror`, `mirrors`) with its field path.
fn destinations(vs: &crd::VirtualService) -> Vec<(String, &crd::Destination)> {
    let mut out = Vec::new();
    for (i, route) in vs.http.iter().enumerate() {
        for (k, d) in route.route.iter().enumerate() {
            if let Some(dest) = &d.destination {
                out.push((format!("spec.http[{i}].route[{k}].destination"), dest));
            }
        }
        if let Some(m) = &route.mirror {
            out.push((format!("spec.http[{i}].mirror"), m));
        }
        for (k, m) in route.mirrors.iter().enumerate() {
            if let Some(dest) = &m.destination {
                out.push((format!("spec.http[{i}].mirrors[{k}].destination"), dest));
            }
        }
    }
    out
}

/// istioctl `DestinationHostAnalyzer` (`checkServiceEntryPorts`) for hosts a ServiceEntry
/// declares: no port towards a multi-port service is IST0112, a port the service does not declare
/// is IST0101 `host:port`. Other hosts may be Kubernetes Services, unknown here, so unchecked.
fn destination_ports(cx: &mut Ctx<'_>) {
    let bundle = cx.bundle;
    let suffix = bundle.settings.domain_suffix.as_str();
    let declared: Vec<(String, &Resource, &crd::ServiceEntry)> = bundle
        .service_entries()
        .flat_map(|(r, se)| se.hosts.iter().map(move |h| (host::resolve(h, &r.namespace, suffix), r, se)))
        .collect();
    let by_name = HostPatterns::new(declared.iter().map(|(h, _, _)| h.as_str()));
    for (r, vs) in bundle.virtual_services() {
        let at = Place(Some(r));
        let visible = |ser: &Resource, se: &crd::ServiceEntry| {
            se.export_to.is_empty()
                || se
                    .export_to
                    .iter()
                    .any(|e| e == "*" || *e == r.namespace || (e == "." && ser.namespace == r.namespace))
        };
        for (path, dest) in destinations(vs) {
            if dest.host.is_empty() {
                continue;
            }
            let target = host::resolve(&dest.host, &r.namespace, suffix);
            // The first visible ServiceEntry naming the host exactly, else the first whose
            // wildcard covers it: looked up by name, not by a scan per destination (quadratic in
            // a mesh of many services).
            let exact = by_name.exact.get(target.as_str()).into_iter().flatten();
            let wildcard = by_name.wildcards.iter().filter(|(_, p)| host::matches(p, &target)).map(|(i, _)| i);
            let se = exact
                .filter_map(|&i| declared.get(i))
                .find(|(_, ser, se)| visible(ser, se))
                .or_else(|| wildcard.filter_map(|&i| declared.get(i)).find(|(_, ser, se)| visible(ser, se)))
                .map(|(_, _, se)| *se);
            let Some(se) = se else { continue };
            let ports: Vec<u32> = se.ports.iter().map(|p| p.number).collect();
            destination_port(cx, &at, path, &dest.host, dest.port.as_ref().map(|p| p.number), &ports);
        }
    }
}

/// istioctl `DestinationHostAnalyzer` (`checkServiceEntryPorts`, and the same for Kubernetes
/// Services): a destination without a port towards a service with several ports is IST0112, a
/// port the service does not declare is IST0101 `host:port`.
pub(super) fn destination_port(
    cx: &mut Ctx<'_>,
    at: &Place<'_>,
    path: String,
    host: &str,
    port: Option<u32>,
    declared: &[u32],
) {
    match port {
        None if declared.len() > 1 => {
            let ports: Vec<String> = declared.iter().map(u32::to_string).collect();
            cx.push(
                Severity::Error,
                Some("IST0112"),
                at,
                path,
                format!(
                    "This VirtualService routes to a service {host:?} that exposes multiple ports [{}]. Specifying a port in the destination is required to disambiguate.",
                    ports.join(" ")
                ),
            );
        }
        Some(port) if !declared.contains(&port) => cx.push(
            Severity::Error,
            Some("IST0101"),
            at,
            format!("{path}.port.number"),
            format!("Referenced host:port not found: \"{host}:{port}\""),
        ),
        _ => {}
    }
}

/// IST0140 (istioctl `analyzeSubset`): a gateway-bound VirtualService routes to a host without a
/// subset while another VirtualService for that host routes to it by subset; on the gateway the
/// subset routing does not apply. Host names are compared as written, as istioctl does.
fn ingress_subsets(cx: &mut Ctx<'_>) {
    let bundle = cx.bundle;
    // VirtualService → hosts it routes to by subset among its own hosts.
    let with_subsets: Vec<(&Resource, Vec<&str>)> = bundle
        .virtual_services()
        .map(|(r, vs)| {
            let hosts: Vec<&str> = vs
                .http
                .iter()
                .flat_map(|h| h.route.iter())
                .filter_map(|d| d.destination.as_ref())
                .filter(|d| d.subset.as_deref().is_some_and(|s| !s.is_empty()) && vs.hosts.contains(&d.host))
                .map(|d| d.host.as_str())
                .collect();
            (r, hosts)
        })
        .filter(|(_, hosts)| !hosts.is_empty())
        .collect();
    // Host → the VirtualServices above routing to it by subset, in input order.
    let mut by_host: HashMap<&str, Vec<&Resource>> = HashMap::new();
    for (other, hosts) in &with_subsets {
        let mut seen = HashSet::new();
        for h in hosts.iter().filter(|h| seen.insert(**h)) {
            by_host.entry(h).or_default().push(other);
        }
    }
    for (r, vs) in bundle.virtual_services() {
        if vs.gateways.is_empty() {
            continue;
        }
        let mut reported: HashSet<String> = HashSet::new();
        for (i, route) in vs.http.iter().enumerate() {
            for (k, d) in route.route.iter().enumerate() {
                let Some(dest) = &d.destination else { continue };
                if dest.subset.as_deref().is_some_and(|s| !s.is_empty()) {
                    continue;
                }
                for other in by_host.get(dest.host.as_str()).map(Vec::as_slice).unwrap_or_default() {
                    if !reported.insert(other.key()) {
                        continue;
                    }
                    cx.push(
                        Severity::Warning,
                        Some("IST0140"),
                        &Place(Some(r)),
                        format!("spec.http[{i}].route[{k}].destination"),
                        format!(
                            "Subset in virtual service {} has no effect on ingress gateway {} requests",
                            other.key(),
                            r.key()
                        ),
                    );
                }
            }
        }
    }
}

/// istioctl `vsHostInGateway`: some VirtualService host overlaps some server host visible to the
/// VirtualService's namespace (`ns/host`, `./host` = the Gateway's namespace, `*/host`).
fn vs_host_in_gateway(cx: &Ctx<'_>, vs: &crd::VirtualService, vs_ns: &str, gr: &Resource, gw: &crd::Gateway) -> bool {
    let mut hosts: Vec<&str> = Vec::new();
    for s in &gw.servers {
        for h in &s.hosts {
            match h.split_once('/') {
                None => hosts.push(h),
                Some((ns, name)) => {
                    let ns = if ns == "." { gr.namespace.as_str() } else { ns };
                    if ns == "*" || ns == vs_ns {
                        hosts.push(name);
                    }
                }
            }
        }
    }
    vs.hosts.iter().any(|vh| {
        let resolved = resolve(cx, vh, vs_ns);
        hosts.iter().any(|gh| host::overlaps(gh, vh) || host::overlaps(gh, &resolved))
    })
}

/// Namespaces a VirtualService is visible in; `None` means all.
fn export_scope(vs: &crd::VirtualService, ns: &str) -> Option<BTreeSet<String>> {
    if vs.export_to.is_empty() || vs.export_to.iter().any(|e| e == "*") {
        return None;
    }
    Some(vs.export_to.iter().map(|e| if e == "." { ns.to_string() } else { e.clone() }).collect())
}

fn scopes_meet(a: &Option<BTreeSet<String>>, b: &Option<BTreeSet<String>>) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => !x.is_disjoint(y),
        _ => true,
    }
}

/// IST0109 (istioctl `ConflictingMeshGatewayHostsAnalyzer`): two mesh-bound VirtualServices for
/// one host. On a gateway Istio merges VirtualServices for one host instead, so there it is a
/// warning about the undefined order.
fn conflicting_hosts(cx: &mut Ctx<'_>) {
    struct Claim<'b> {
        res: &'b Resource,
        key: String,
        host_index: usize,
        scope: Option<BTreeSet<String>>,
    }
    let bundle = cx.bundle;
    // (bound to, fqdn) → claims, so only claims on one host are compared.
    let mut groups: BTreeMap<(String, String), Vec<Claim<'_>>> = BTreeMap::new();
    for (r, vs) in bundle.virtual_services() {
        let bound: BTreeSet<String> = if vs.gateways.is_empty() {
            BTreeSet::from(["mesh".to_string()])
        } else {
            vs.gateways.iter().map(|g| host::resolve_gateway(g, &r.namespace)).collect()
        };
        let scope = export_scope(vs, &r.namespace);
        for (i, h) in vs.hosts.iter().enumerate() {
            let fqdn = resolve(cx, h, &r.namespace);
            for b in &bound {
                groups.entry((b.clone(), fqdn.clone())).or_default().push(Claim {
                    res: r,
                    key: r.key(),
                    host_index: i,
                    scope: scope.clone(),
                });
            }
        }
    }
    let mut found: Vec<(usize, &Resource, usize, String, String, String)> = mesh_host_conflicts(cx);
    for ((bound_to, fqdn), claims) in &groups {
        if bound_to == "mesh" {
            continue;
        }
        for c in claims {
            let others: Vec<&Claim<'_>> =
                claims.iter().filter(|o| o.key != c.key && scopes_meet(&o.scope, &c.scope)).collect();
            if others.is_empty() {
                continue;
            }
            let names: BTreeSet<&str> = others.iter().map(|o| o.key.as_str()).chain([c.key.as_str()]).collect();
            let names = names.into_iter().collect::<Vec<_>>().join(",");
            // istioctl names the host with its export scope: `*/<fqdn>` when exported everywhere.
            let scope = std::iter::once(&c.scope)
                .chain(others.iter().map(|o| &o.scope))
                .find_map(|s| s.as_ref().and_then(|s| s.iter().next().cloned()))
                .unwrap_or_else(|| "*".to_string());
            found.push((c.res.index, c.res, c.host_index, bound_to.clone(), format!("{scope}/{fqdn}"), names));
        }
    }
    // In input order, once per VirtualService and gateway (as istioctl reports IST0109).
    found.sort_by(|a, b| (a.0, &a.3, a.2).cmp(&(b.0, &b.3, b.2)));
    found.dedup_by(|a, b| (a.0, &a.3) == (b.0, &b.3));
    found.sort_by(|a, b| (a.0, a.2, &a.3).cmp(&(b.0, b.2, &b.3)));
    for (_, res, host_index, bound_to, fqdn, names) in found {
        let at = Place(Some(res));
        let path = format!("spec.hosts[{host_index}]");
        if bound_to == "mesh" {
            cx.push(
                Severity::Error,
                Some("IST0109"),
                &at,
                path,
                format!(
                    "The VirtualServices {names} associated with mesh gateway define the same host {fqdn} which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource."
                ),
            );
        } else {
            cx.own_warn(
                &at,
                path,
                format!(
                    "The VirtualServices {names} bound to gateway {bound_to} define the same host {fqdn}: Istio merges their routes on a gateway, in an order that is undefined across resources. Merge them into a single resource."
                ),
            );
        }
    }
}

/// IST0109 for mesh-bound VirtualServices exactly as istioctl's
/// `ConflictingMeshGatewayHostsAnalyzer` (`AN virtualservice/conflictingmeshgatewayhosts.go`, R220):
/// claims are keyed by (export scope, FQDN) — scope `*` when `exportTo` is empty or has `*`, else
/// each entry (`.` = the VirtualService's namespace); a key with another scope also collects the
/// `*`-scoped claims whose host overlaps it (istio `host.Name.Matches`); more than one claim
/// reports each VirtualService of the key, each VirtualService once in all. Found as
/// (index, resource, host index, "mesh", scoped host, names).
fn mesh_host_conflicts<'b>(cx: &Ctx<'b>) -> Vec<(usize, &'b Resource, usize, String, String, String)> {
    struct Claim<'b> {
        res: &'b Resource,
        key: String,
        host_index: usize,
    }
    let bundle = cx.bundle;
    let mut keyed: BTreeMap<(String, String), Vec<Claim<'b>>> = BTreeMap::new();
    for (r, vs) in bundle.virtual_services() {
        if !(vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh")) {
            continue;
        }
        let scopes: BTreeSet<String> = if vs.export_to.is_empty() || vs.export_to.iter().any(|e| e == "*") {
            BTreeSet::from(["*".to_string()])
        } else {
            vs.export_to.iter().map(|e| if e == "." { r.namespace.clone() } else { e.clone() }).collect()
        };
        for scope in &scopes {
            for (i, h) in vs.hosts.iter().enumerate() {
                let fqdn = resolve(cx, h, &r.namespace);
                keyed.entry((scope.clone(), fqdn)).or_default().push(Claim { res: r, key: r.key(), host_index: i });
            }
        }
    }
    // The `*`-scoped hosts, reversed, so the hosts ending in a suffix are one range.
    let everywhere: BTreeMap<String, &str> = keyed
        .keys()
        .filter(|(scope, _)| scope == "*")
        .map(|(_, fqdn)| (fqdn.chars().rev().collect(), fqdn.as_str()))
        .collect();
    let mut reported: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    for ((scope, fqdn), own) in &keyed {
        let mut list: Vec<&Claim<'b>> = own.iter().collect();
        if scope != "*" {
            for other in overlapping(&everywhere, fqdn) {
                list.extend(keyed.get(&("*".to_string(), other.to_string())).into_iter().flatten());
            }
        }
        if list.len() < 2 {
            continue;
        }
        let names: BTreeSet<&str> = list.iter().map(|c| c.key.as_str()).collect();
        let names = names.into_iter().collect::<Vec<_>>().join(",");
        for c in list {
            if reported.insert(c.key.clone()) {
                out.push((
                    c.res.index,
                    c.res,
                    c.host_index,
                    "mesh".to_string(),
                    format!("{scope}/{fqdn}"),
                    names.clone(),
                ));
            }
        }
    }
    out
}

/// The hosts of `everywhere` (keyed by their reversed text) that istio's `host.Name.Matches`
/// says overlap `h`: `h` itself, the wildcards covering it (`*.<suffix>` at each dot, and `*`),
/// and, for a wildcard `h`, every host ending in its suffix. Output-sensitive, not a scan.
fn overlapping<'m>(everywhere: &BTreeMap<String, &'m str>, h: &str) -> BTreeSet<&'m str> {
    let mut out = BTreeSet::new();
    let rev = |s: &str| -> String { s.chars().rev().collect() };
    let base = h.strip_prefix('*').unwrap_or(h);
    let mut candidates: Vec<String> = vec![h.to_string(), "*".to_string()];
    for (i, ch) in base.char_indices() {
        if ch == '.' {
            candidates.push(format!("*{}", &base[i..]));
        }
    }
    for c in candidates {
        if let Some(g) = everywhere.get(&rev(&c)) {
            out.insert(*g);
        }
    }
    if h.starts_with('*') {
        let suffix = rev(base);
        for (k, g) in everywhere.range(suffix.clone()..) {
            if !k.starts_with(&suffix) {
                break;
            }
            out.insert(*g);
        }
    }
    out
}

/// IST0174: a DestinationRule host that no service known here matches. With no Kubernetes
/// registry, the known services are the ServiceEntry hosts and the VirtualService hosts.
fn destination_rule_hosts(cx: &mut Ctx<'_>) {
    let bundle = cx.bundle;
    let mut known: Vec<String> = Vec::new();
    for (r, se) in bundle.service_entries() {
        known.extend(se.hosts.iter().map(|h| resolve(cx, h, &r.namespace)));
    }
    for (r, vs) in bundle.virtual_services() {
        known.extend(vs.hosts.iter().map(|h| resolve(cx, h, &r.namespace)));
    }
    known.extend(bundle.registry.services.iter().map(|s| s.host(cx.domain_suffix())));
    // With Kubernetes Services in the input the registry is taken as complete: Istio's wording.
    let caveat = if bundle.registry.services.is_empty() {
        " (meshroute knows only the ServiceEntry and VirtualService hosts of this configuration; ignore this if it is a Kubernetes Service.)"
    } else {
        ""
    };
    let by_name = HostPatterns::new(known.iter().map(String::as_str));
    for (r, dr) in bundle.destination_rules() {
        if dr.host.is_empty() {
            continue;
        }
        let h = resolve(cx, &dr.host, &r.namespace);
        let overlapping = if h.starts_with('*') {
            // Wildcard DestinationRule hosts are few: compared with every known host.
            known.iter().any(|k| host::overlaps(&h, k))
        } else {
            // An exact name overlaps a known host only if equal to it or matched by its wildcard.
            !by_name.covering(&h).is_empty()
        };
        if overlapping {
            continue;
        }
        cx.push(
            Severity::Warning,
            Some("IST0174"),
            &Place(Some(r)),
            "spec.host",
            format!(
                "The host {} defined in the DestinationRule does not match any services in the mesh.{caveat}",
                dr.host
            ),
        );
    }
}

/// IST0173: a subset whose labels select none of the workloads known for its host. Checked only
/// when a ServiceEntry for the host lists endpoints or selects WorkloadEntries, since otherwise
/// the workloads (Kubernetes pods) are not visible here.
fn subsets_without_workloads(cx: &mut Ctx<'_>) {
    let bundle = cx.bundle;
    // Resolved once, by host (lowercase) and WorkloadEntries by namespace, so each rule reads only
    // the ServiceEntries of its host: linear in the number of rules, not DestinationRules ×
    // ServiceEntries. A wildcard rule host still reads them all (it may cover any of them).
    let ses: Vec<(&Resource, &crd::ServiceEntry, Vec<String>)> = bundle
        .service_entries()
        .map(|(r, se)| (r, se, se.hosts.iter().map(|sh| resolve(cx, sh, &r.namespace)).collect()))
        .collect();
    let mut by_host: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, (_, _, hosts)) in ses.iter().enumerate() {
        for sh in hosts {
            let ids = by_host.entry(sh.to_ascii_lowercase()).or_default();
            if ids.last() != Some(&i) {
                ids.push(i);
            }
        }
    }
    // WorkloadEntries by label: a selector reads the entries carrying its first label only.
    let entries = LabelIndex::new(bundle.workload_entries().map(|(wr, we)| (wr.namespace.as_str(), &we.labels, we)));
    for (r, dr) in bundle.destination_rules() {
        if dr.host.is_empty() || dr.subsets.is_empty() {
            continue;
        }
        let h = resolve(cx, &dr.host, &r.namespace);
        let covered: Vec<usize> = if h.contains('*') {
            (0..ses.len()).filter(|&i| ses[i].2.iter().any(|sh| covers(&h, sh))).collect()
        } else {
            by_host.get(&h.to_ascii_lowercase()).cloned().unwrap_or_default()
        };
        let mut sources: Vec<String> = Vec::new();
        let mut workloads: Vec<&BTreeMap<String, String>> = Vec::new();
        for (ser, se, _) in covered.iter().filter_map(|&i| ses.get(i)) {
            if !se.endpoints.is_empty() {
                sources.push(format!("endpoints of ServiceEntry {}", ser.key()));
                workloads.extend(se.endpoints.iter().map(|e| &e.labels));
            }
            if let Some(sel) = &se.workload_selector {
                sources.push(format!("WorkloadEntries selected by ServiceEntry {}", ser.key()));
                workloads.extend(entries.selected(&ser.namespace, &sel.match_labels).map(|we| &we.labels));
            }
        }
        if workloads.is_empty() {
            continue;
        }
        for (i, s) in dr.subsets.iter().enumerate() {
            if s.labels.is_empty() || workloads.iter().any(|w| selects(&s.labels, w)) {
                continue;
            }
            cx.push(
                Severity::Warning,
                Some("IST0173"),
                &Place(Some(r)),
                format!("spec.subsets[{i}].labels"),
                format!(
                    "The Subset {} defined in the DestinationRule does not select any known workload ({}). Which may lead to 503 UH (NoHealthyUpstream).",
                    s.name,
                    sources.join(", ")
                ),
            );
        }
    }
}

/// Two DestinationRules for one host: Istio merges them (subsets combined, the first definition
/// wins on a conflict), which is rarely what the second author expected.
fn destination_rules_merged(cx: &mut Ctx<'_>) {
    let bundle = cx.bundle;
    let mut first: BTreeMap<String, &Resource> = BTreeMap::new();
    for (r, dr) in bundle.destination_rules() {
        if dr.host.is_empty() || dr.workload_selector.is_some() {
            continue;
        }
        let h = resolve(cx, &dr.host, &r.namespace);
        match first.get(&h) {
            None => {
                first.insert(h, r);
            }
            Some(prev) => {
                let msg = format!(
                    "DestinationRules {} and {} both configure host {h}: Istio merges them (subsets are combined; for a subset or traffic policy defined twice the first one wins)",
                    prev.key(),
                    r.key()
                );
                cx.own_warn(&Place(Some(r)), "spec.host", msg);
            }
        }
    }
}

/// IST0111: more than one Sidecar without workloadSelector in a namespace.
fn sidecars_without_selector(cx: &mut Ctx<'_>) {
    let bundle = cx.bundle;
    let mut by_ns: BTreeMap<&str, Vec<&Resource>> = BTreeMap::new();
    for (r, sc) in bundle.sidecars() {
        // In an ambient namespace the Sidecar has no effect: IST0167 (k8s_registry) instead.
        if sc.workload_selector.as_ref().is_none_or(|s| s.match_labels.is_empty())
            && !bundle.registry.namespace_ambient(&r.namespace)
        {
            by_ns.entry(r.namespace.as_str()).or_default().push(r);
        }
    }
    for (ns, list) in by_ns {
        if list.len() < 2 {
            continue;
        }
        let mut names: Vec<&str> = list.iter().map(|r| r.name.as_str()).collect();
        names.sort_unstable();
        for r in list {
            cx.push(
                Severity::Error,
                Some("IST0111"),
                &Place(Some(r)),
                "spec.workloadSelector",
                format!(
                    "The Sidecars [{}] in namespace {ns:?} have no workload selector, which can lead to undefined behavior.",
                    names.join(" ")
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{Random, SplitMix64};

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn host_patterns_cover_what_a_scan_of_every_pattern_covers() {
        const PARTS: [&str; 6] = ["*", "a", "B", "a.b", "*.b", "*.A.b"];
        let mut rng = SplitMix64(11);
        for _ in 0..200 {
            let mut pick = |n: u64| PARTS[rng.below(n) as usize].to_string();
            let patterns: Vec<String> = (0..8).map(|_| pick(6)).collect();
            let names: Vec<String> = (0..8).map(|_| format!("x.{}", pick(6).trim_start_matches("*."))).collect();
            let index = HostPatterns::new(patterns.iter().map(String::as_str));
            for name in names.iter().chain(&patterns) {
                let scan: Vec<usize> = (0..patterns.len()).filter(|&i| covers(&patterns[i], name)).collect();
                assert_eq!(index.covering(name).to_vec(), scan, "{patterns:?} {name}");
            }
        }
    }
}
