//! Analyzers that need the Kubernetes objects (`crate::k8s`): istioctl's checks that look at
//! Services and Pods, run only when the input holds such objects — without them meshroute cannot
//! tell a missing Service from one it was not shown.
//!
//! * `virtualservice.DestinationHostAnalyzer`: IST0101 host / mirror host not found, IST0112 and
//!   IST0101 `host:port` for Kubernetes Services (when any Service is given).
//! * `destinationrule.SubsetSelectPodAnalyzer`: IST0173 from Pod and pod-template labels.
//! * `gateway.IngressGatewayPortAnalyzer`: IST0101 selector, IST0162 (when any workload is given).
//! * `gateway.SecretAnalyzer`: IST0101 credentialName, IST0161 missing keys or no certificate.
//! * `sidecar.SelectorAnalyzer`: IST0101 selector, IST0110.
//! * meshroute's own: MR0103 a Service selector matching no workload, MR0104 endpoints of an
//!   unknown Service.

use super::{Ctx, Place};
use crate::config::Resource;
use crate::crd;
use crate::diag::{Diagnostic, ResourceRef, Severity};
use crate::host;
use crate::k8s::{Service, Workload};
use crate::labels::{selects, LabelIndex};
use std::collections::{BTreeMap, HashMap};

pub(super) fn run(cx: &mut Ctx<'_>) {
    destination_hosts(cx);
    subsets_select_workloads(cx);
    gateway_workloads(cx);
    sidecar_selectors(cx);
    service_selectors(cx);
    orphan_endpoints(cx);
    secret_certificates(cx);
}

/// MR0105: a Secret holding a certificate (`tls.crt`, or `cert` with `key`) that is not PEM, does
/// not parse, or is outside its validity at the CLI's clock — said on the Secret, with the key,
/// where IST0161 only says the Gateway's credential is invalid.
fn secret_certificates(cx: &mut Ctx<'_>) {
    let reg = &cx.bundle.registry;
    let mut found = Vec::new();
    for s in &reg.secrets {
        let key = if s.keys.contains("cert") && s.keys.contains("key") { "cert" } else { "tls.crt" };
        if !s.keys.contains(key) {
            if s.secret_type == "kubernetes.io/tls" {
                found.push((
                    s.origin.clone(),
                    "data".to_string(),
                    format!(
                        "a kubernetes.io/tls Secret needs non-empty tls.crt and tls.key; found [{}]",
                        s.keys.iter().chain(&s.empty_keys).cloned().collect::<Vec<_>>().join(" ")
                    ),
                ));
            }
            continue;
        }
        let problem = match &s.cert_pem {
            None => Some("is not valid base64".to_string()),
            Some(pem) => crate::pem::problem(pem, reg.now),
        };
        if let Some(p) = problem {
            found.push((s.origin.clone(), format!("data.{key}"), format!("{key} {p}")));
        }
    }
    for (origin, path, msg) in found {
        push_on(cx, origin, Severity::Warning, "MR0105", &path, msg);
    }
}

/// istioctl prints a selector as Kubernetes does: `k=v,k2=v2`, keys sorted.
fn selector_string(s: &BTreeMap<String, String>) -> String {
    s.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// The workloads by label (their positions in `all`): a selector reads the workloads carrying its
/// first label only, so checking every Service, rule or Sidecar stays linear.
fn workload_index(all: &[Workload]) -> LabelIndex<'_, usize> {
    LabelIndex::new(all.iter().enumerate().map(|(i, w)| (w.namespace.as_str(), &w.labels, i)))
}

fn workload_name(w: &Workload) -> String {
    w.origin.as_ref().map_or_else(|| "<unnamed>".to_string(), |o| o.name.clone())
}

fn push_on(cx: &mut Ctx<'_>, r: Option<ResourceRef>, sev: Severity, code: &'static str, path: &str, msg: String) {
    cx.out.push(Diagnostic { severity: sev, code: Some(code), resource: r, path: path.to_string(), message: msg });
}

/// Services and ServiceEntry hosts indexed once, so that checking every destination costs one
/// lookup (plus the wildcard hosts, usually few) instead of a scan of the registry.
struct HostIndex<'a> {
    /// FQDN → Services with that host (the first wins, as in istiod's service index).
    services: HashMap<String, &'a Service>,
    /// Lower-cased exact ServiceEntry host → the export scopes of each ServiceEntry declaring it.
    exact: HashMap<String, Vec<Vec<&'a str>>>,
    /// (`.suffix`, export scopes) of wildcard ServiceEntry hosts.
    wildcards: Vec<(String, Vec<&'a str>)>,
}

impl<'a> HostIndex<'a> {
    fn new(cx: &Ctx<'a>) -> HostIndex<'a> {
        let bundle = cx.bundle;
        let suffix = cx.domain_suffix();
        let mut services = HashMap::new();
        for svc in &bundle.registry.services {
            services.entry(svc.host(suffix)).or_insert(svc);
        }
        let (mut exact, mut wildcards) = (HashMap::<String, Vec<Vec<&str>>>::new(), Vec::new());
        for (r, se) in bundle.service_entries() {
            let scopes = export_scopes(&se.export_to, &r.namespace);
            for h in &se.hosts {
                let h = host::resolve(h, &r.namespace, suffix);
                match h.strip_prefix('*') {
                    Some(rest) => wildcards.push((rest.to_string(), scopes.clone())),
                    None => exact.entry(h).or_default().push(scopes.clone()),
                }
            }
        }
        HostIndex { services, exact, wildcards }
    }

    /// Is `fqdn` a ServiceEntry host visible from a VirtualService in `ns` with `export_to`
    /// (istioctl `util.GetDestinationHost`: ServiceEntries exported to all namespaces, then to
    /// the VirtualService's own scopes, then wildcard hosts exported to all or to `ns`)?
    fn service_entry_host(&self, ns: &str, export_to: &[String], fqdn: &str) -> bool {
        let vs_scopes = vs_scopes(ns, export_to);
        let visible = |scopes: &Vec<&str>| scopes.iter().any(|s| *s == "*" || vs_scopes.contains(s));
        self.exact.get(&fqdn.to_ascii_lowercase()).is_some_and(|list| list.iter().any(visible))
            || self.wildcards.iter().any(|(suffix, scopes)| {
                scopes.iter().any(|s| *s == "*" || *s == ns) && fqdn.trim_start_matches('*').ends_with(suffix.as_str())
            })
    }
}

/// The scopes a VirtualService looks services up in: its own namespace, or its `exportTo`.
fn vs_scopes<'a>(ns: &'a str, export_to: &'a [String]) -> Vec<&'a str> {
    if export_to.is_empty() {
        vec![ns]
    } else {
        export_to.iter().map(|e| if e == "." { ns } else { e.as_str() }).collect()
    }
}

/// The scopes a service is visible in: `*` (unset or `*`), else the namespaces (`.` = its own).
fn export_scopes<'a>(export_to: &'a [String], ns: &'a str) -> Vec<&'a str> {
    if export_to.is_empty() || export_to.iter().any(|e| e == "*") {
        vec!["*"]
    } else {
        export_to.iter().map(|e| if e == "." { ns } else { e.as_str() }).collect()
    }
}

/// Route and mirror destinations with their field path; a route without destination counts as
/// host `""`, as istioctl's `GetDestination().GetHost()` reads it.
fn destinations(vs: &crd::VirtualService) -> Vec<(String, &'static str, Option<&crd::Destination>)> {
    let mut out = Vec::new();
    for (i, route) in vs.http.iter().enumerate() {
        for (k, d) in route.route.iter().enumerate() {
            out.push((format!("spec.http[{i}].route[{k}].destination"), "host", d.destination.as_ref()));
        }
        if let Some(m) = &route.mirror {
            out.push((format!("spec.http[{i}].mirror"), "mirror host", Some(m)));
        }
        for (k, m) in route.mirrors.iter().enumerate() {
            if let Some(dest) = &m.destination {
                out.push((format!("spec.http[{i}].mirrors[{k}].destination"), "mirror host", Some(dest)));
            }
        }
    }
    out
}

/// DestinationHostAnalyzer with the Kubernetes Services in the service map.
fn destination_hosts(cx: &mut Ctx<'_>) {
    let bundle = cx.bundle;
    if bundle.registry.services.is_empty() {
        return;
    }
    let index = HostIndex::new(cx);
    for (r, vs) in bundle.virtual_services() {
        let at = Place(Some(r));
        for (path, what, dest) in destinations(vs) {
            let Some(dest) = dest.filter(|d| !d.host.is_empty()) else {
                cx.push(
                    Severity::Error,
                    Some("IST0101"),
                    &at,
                    format!("{path}.host"),
                    format!("Referenced {what} not found: \"\""),
                );
                continue;
            };
            let fqdn = host::resolve(&dest.host, &r.namespace, cx.domain_suffix());
            // ServiceEntry hosts are analyzer::destination_ports' (IST0112, host:port).
            if index.service_entry_host(&r.namespace, &vs.export_to, &fqdn) {
                continue;
            }
            let scopes = vs_scopes(&r.namespace, &vs.export_to);
            let svc =
                index.services.get(&fqdn).copied().filter(|s| {
                    export_scopes(&s.export_to, &s.namespace).iter().any(|e| *e == "*" || scopes.contains(e))
                });
            let Some(svc) = svc else {
                cx.push(
                    Severity::Error,
                    Some("IST0101"),
                    &at,
                    format!("{path}.host"),
                    format!("Referenced {what} not found: {:?}", dest.host),
                );
                continue;
            };
            let ports: Vec<u32> = svc.ports.iter().map(|p| p.port).collect();
            super::analyze::destination_port(cx, &at, path, &dest.host, dest.port.as_ref().map(|p| p.number), &ports);
        }
    }
}

/// IST0173 for DestinationRules of Kubernetes Services: the Service's selector plus the subset's
/// labels must select some Pod or pod template (istioctl looks at Pods only; a template is a
/// Pod-to-be). A warning, not istioctl's error: the files rarely hold every workload.
fn subsets_select_workloads(cx: &mut Ctx<'_>) {
    let bundle = cx.bundle;
    if bundle.registry.workloads.is_empty() {
        return;
    }
    // Indexed once (Services by host, workloads by namespace and label), so each rule costs its
    // own lookups: linear in the number of rules and workloads, not their product.
    let services = bundle.registry.services_by_host(cx.domain_suffix());
    let workloads = workload_index(&bundle.registry.workloads);
    for (r, dr) in bundle.destination_rules() {
        if dr.host.is_empty() {
            continue;
        }
        let fqdn = host::resolve(&dr.host, &r.namespace, cx.domain_suffix());
        let Some(svc) = services.get(&fqdn.to_ascii_lowercase()).copied() else { continue };
        if svc.selector.is_empty() {
            continue;
        }
        for (i, s) in dr.subsets.iter().enumerate() {
            let mut sel = svc.selector.clone();
            sel.extend(s.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
            if workloads.selected(&svc.namespace, &sel).next().is_some() {
                continue;
            }
            cx.push(
                Severity::Warning,
                Some("IST0173"),
                &Place(Some(r)),
                format!("spec.subsets[{i}].labels"),
                format!(
                    "The Subset {} defined in the DestinationRule does not select any pods. Which may lead to 503 UH (NoHealthyUpstream).",
                    s.name
                ),
            );
        }
    }
}

/// IngressGatewayPortAnalyzer and SecretAnalyzer: the Gateway's selector must select a workload;
/// its ports must be target ports (or ports) of a Service selecting that workload; its
/// credentialName must name a Secret in the workload's namespace holding a certificate.
fn gateway_workloads(cx: &mut Ctx<'_>) {
    let bundle = cx.bundle;
    let reg = &bundle.registry;
    if reg.workloads.is_empty() {
        return;
    }
    // Built once, so each Gateway reads only what it selects: a Gateway's selector picks
    // workloads in every namespace (one namespace, "", for the index).
    let workloads = LabelIndex::new(reg.workloads.iter().map(|w| ("", &w.labels, w)));
    let mut selecting_services: HashMap<&str, Vec<&Service>> = HashMap::new();
    for svc in reg.services.iter().filter(|s| !s.selector.is_empty()) {
        selecting_services.entry(svc.namespace.as_str()).or_default().push(svc);
    }
    let secrets: HashMap<(&str, &str), &crate::k8s::Secret> =
        reg.secrets.iter().rev().map(|x| ((x.namespace.as_str(), x.name.as_str()), x)).collect();
    for (r, gw) in bundle.gateways() {
        let at = Place(Some(r));
        let selected: Vec<&Workload> = workloads.selected("", &gw.selector).collect();
        let sel = selector_string(&gw.selector);
        let Some(first) = selected.first() else {
            cx.push(
                Severity::Error,
                Some("IST0101"),
                &at,
                "spec.selector",
                format!("Referenced selector not found: {sel:?}"),
            );
            continue;
        };
        // The replicas of one gateway Deployment share their labels: each label set is matched
        // against its namespace's Services once.
        let mut label_sets: Vec<(&str, &BTreeMap<String, String>)> =
            selected.iter().map(|w| (w.namespace.as_str(), &w.labels)).collect();
        label_sets.sort_unstable();
        label_sets.dedup();
        let mut ports: Vec<u32> = Vec::new();
        for (ns, labels) in label_sets {
            for svc in selecting_services.get(ns).into_iter().flatten() {
                if selects(&svc.selector, labels) {
                    for p in &svc.ports {
                        ports.push(p.port);
                        ports.extend(p.target_port);
                    }
                }
            }
        }
        for (i, s) in gw.servers.iter().enumerate() {
            let Some(port) = s.port.as_ref() else { continue };
            if !ports.contains(&port.number) {
                cx.push(
                    Severity::Warning,
                    Some("IST0162"),
                    &at,
                    format!("spec.servers[{i}].port.number"),
                    format!(
                        "The gateway is listening on a target port (port {}) that is not defined in the Service associated with its workload instances (Pod selector {sel}). If you need to access the gateway port through the gateway Service, it will not be available.",
                        port.number
                    ),
                );
            }
        }
        let gw_ns = first.namespace.clone();
        for (i, s) in gw.servers.iter().enumerate() {
            let Some(cn) = s.tls.as_ref().and_then(|t| t.credential_name.as_deref()).filter(|c| !c.is_empty()) else {
                continue;
            };
            let path = format!("spec.servers[{i}].tls.credentialName");
            let Some(secret) = secrets.get(&(gw_ns.as_str(), cn)) else {
                cx.push(
                    Severity::Error,
                    Some("IST0101"),
                    &at,
                    path,
                    format!("Referenced credentialName not found: {cn:?}"),
                );
                continue;
            };
            let has = |a: &str, b: &str| secret.keys.contains(a) && secret.keys.contains(b);
            let cert_ok = (has("cert", "key") || has("tls.crt", "tls.key"))
                && secret.cert_pem.as_deref().and_then(crate::pem::pem_certificates).is_some_and(|certs| {
                    certs.iter().all(|c| {
                        crate::pem::validity(c).is_some_and(|(nb, na)| reg.now.is_none_or(|now| nb <= now && now <= na))
                    })
                });
            if !cert_ok {
                cx.push(
                    Severity::Error,
                    Some("IST0161"),
                    &at,
                    path,
                    format!(
                        "The credential referenced by the Gateway {} in namespace {gw_ns} is invalid, which can cause the traffic not to work as expected.",
                        r.name
                    ),
                );
            }
        }
    }
}

/// SelectorAnalyzer: a Sidecar selector must select a workload in its namespace (IST0101), and
/// no workload may be selected by two Sidecars (IST0110).
fn sidecar_selectors(cx: &mut Ctx<'_>) {
    let bundle = cx.bundle;
    let reg = &bundle.registry;
    let mut ineffective: Vec<(&Resource, &str)> = Vec::new();
    for (r, sc) in bundle.sidecars() {
        let namespace_scoped = sc.workload_selector.as_ref().is_none_or(|s| s.match_labels.is_empty());
        if namespace_scoped && reg.namespace_ambient(&r.namespace) {
            ineffective.push((r, "namespace is in ambient mode, the policy has no impact"));
        }
    }
    if reg.workloads.is_empty() {
        report_ineffective(cx, ineffective);
        return;
    }
    // workload index → Sidecars selecting it.
    let mut by_workload: BTreeMap<usize, Vec<&Resource>> = BTreeMap::new();
    let workloads = workload_index(&reg.workloads);
    for (r, sc) in bundle.sidecars() {
        let Some(sel) = sc.workload_selector.as_ref().filter(|s| !s.match_labels.is_empty()) else { continue };
        let mut found = false;
        for i in workloads.selected(&r.namespace, &sel.match_labels) {
            found = true;
            by_workload.entry(i).or_default().push(r);
        }
        if !found {
            cx.push(
                Severity::Error,
                Some("IST0101"),
                &Place(Some(r)),
                "spec.workloadSelector.labels",
                format!("Referenced selector not found: {:?}", selector_string(&sel.match_labels)),
            );
        }
    }
    for (i, list) in by_workload {
        let Some(w) = reg.workloads.get(i) else { continue };
        if w.ambient {
            for r in &list {
                if !ineffective.iter().any(|(x, _)| x.key() == r.key()) {
                    ineffective.push((r, "selected workload is in ambient mode, the policy has no impact"));
                }
            }
            continue;
        }
        if list.len() < 2 {
            continue;
        }
        let mut names: Vec<String> = list.iter().map(|r| r.key()).collect();
        names.sort();
        for r in list {
            cx.push(
                Severity::Error,
                Some("IST0110"),
                &Place(Some(r)),
                "spec.workloadSelector",
                format!(
                    "The Sidecars [{}] in namespace {:?} select the same workload pod {:?}, which can lead to undefined behavior.",
                    names.join(" "),
                    w.namespace,
                    workload_name(w)
                ),
            );
        }
    }
    report_ineffective(cx, ineffective);
}

/// IST0167: a Sidecar for workloads without a sidecar (ambient mode).
fn report_ineffective(cx: &mut Ctx<'_>, list: Vec<(&Resource, &str)>) {
    for (r, reason) in list {
        cx.push(
            Severity::Warning,
            Some("IST0167"),
            &Place(Some(r)),
            "spec.workloadSelector",
            format!("The policy has no impact: {reason}."),
        );
    }
}

/// MR0103: a Service whose selector matches none of the workloads given for its namespace gets no
/// endpoints. Checked only for namespaces with some workload in the input.
fn service_selectors(cx: &mut Ctx<'_>) {
    let reg = &cx.bundle.registry;
    let workloads = workload_index(&reg.workloads);
    let mut found = Vec::new();
    for svc in &reg.services {
        if svc.selector.is_empty() || svc.external_name.is_some() {
            continue;
        }
        if !workloads.any_in(&svc.namespace) || workloads.selected(&svc.namespace, &svc.selector).next().is_some() {
            continue;
        }
        found.push((
            svc.origin.clone(),
            format!(
                "the selector {} of Service {}/{} matches none of the Pods and pod templates given for namespace {}: the service has no endpoints (503 UH)",
                selector_string(&svc.selector),
                svc.namespace,
                svc.name,
                svc.namespace
            ),
        ));
    }
    for (origin, msg) in found {
        push_on(cx, origin, Severity::Warning, "MR0103", "spec.selector", msg);
    }
}

/// MR0104: Endpoints or an EndpointSlice for a Service that is not in the input.
fn orphan_endpoints(cx: &mut Ctx<'_>) {
    let reg = &cx.bundle.registry;
    if reg.services.is_empty() {
        return;
    }
    let services: std::collections::HashSet<(&str, &str)> =
        reg.services.iter().map(|s| (s.namespace.as_str(), s.name.as_str())).collect();
    let mut found = Vec::new();
    for e in &reg.endpoints {
        if services.contains(&(e.namespace.as_str(), e.service.as_str())) {
            continue;
        }
        let path = if e.origin.as_ref().is_some_and(|o| o.kind == "EndpointSlice") {
            "metadata.labels.kubernetes.io/service-name"
        } else {
            "metadata.name"
        };
        found.push((
            e.origin.clone(),
            path,
            format!(
                "no Service {}/{} in the input: these endpoints belong to no known service",
                e.namespace, e.service
            ),
        ));
    }
    for (origin, path, msg) in found {
        push_on(cx, origin, Severity::Warning, "MR0104", path, msg);
    }
}
