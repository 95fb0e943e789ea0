//! Kubernetes objects as the service registry: Services (hosts, ports, protocols, selectors),
//! Endpoints/EndpointSlices, Pods and the pod templates of workload controllers (the labels a
//! DestinationRule subset selects), Namespaces, Secrets (Gateway `credentialName`),
//! ServiceAccounts and ConfigMaps. Any other non-Istio kind is skipped with one info line.
//!
//! The loader turns the objects into a [`Registry`]. The same registry, compact (no whole
//! Deployments), is what `meshroute compile` writes into the plugin configuration under
//! `registry`, so the filter gets hosts, ports, protocols and workload labels without the objects.

use crate::diag::{Diagnostic, Diagnostics, ResourceRef};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What Kubernetes contributes to the mesh, in input order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Registry {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
    /// Label sets of Pods and pod templates, per namespace.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<Workload>,
    /// Endpoints and EndpointSlices (the CLI's Envoy clusters; not shipped to the filter).
    #[serde(skip)]
    pub endpoints: Vec<EndpointSet>,
    /// Node labels by Node name, for the topology labels istiod adds to Pods (K15).
    #[serde(skip)]
    pub nodes: BTreeMap<String, BTreeMap<String, String>>,
    /// `security.istio.io` RequestAuthentications: (namespace, `selector.matchLabels`), for
    /// IST0149 only (K17).
    #[serde(skip)]
    pub request_authentications: Vec<(String, BTreeMap<String, String>)>,
    /// Gateway API Gateways (`gateway.networking.k8s.io`): their `namespace/name` and listener
    /// hostnames (`None` = any host), for the VirtualService gateway analyzer only (K18).
    #[serde(skip)]
    pub kube_gateways: Vec<(String, Vec<Option<String>>)>,
    /// Secrets by name, with the data keys they hold (never their values).
    #[serde(skip)]
    pub secrets: Vec<Secret>,
    /// Namespaces with their labels.
    #[serde(skip)]
    pub namespaces: Vec<Namespace>,
    /// The time to check certificate validity against, seconds since the Unix epoch. The CLI
    /// sets it; the core never reads a clock (the filter's validation must not depend on one).
    #[serde(skip)]
    pub now: Option<i64>,
}

/// A Kubernetes Service (istiod `kube.ConvertService`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    /// `type: ExternalName` target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_name: Option<String>,
    /// The `networking.istio.io/exportTo` annotation, split at commas (empty: everywhere).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    #[serde(skip)]
    pub origin: Option<ResourceRef>,
}

impl Service {
    /// `name.namespace.svc.<domainSuffix>` (istiod `kube.ServiceHostname`).
    pub fn host(&self, domain_suffix: &str) -> String {
        format!("{}.{}.svc.{domain_suffix}", self.name.to_ascii_lowercase(), self.namespace.to_ascii_lowercase())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServicePort {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub port: u32,
    /// Istio's protocol (`HTTP`, `HTTP2`, `GRPC`, `GRPC-Web`, `HTTPS`, `TCP`, `TLS`, `Mongo`,
    /// `Redis`, `MySQL`, `UDP`, `HTTP_PROXY`, or `UnsupportedProtocol`: sniffed at runtime).
    pub protocol: String,
    /// `targetPort` when it is a number (a named one is resolved through the Pod's ports).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

impl ServicePort {
    /// Does istiod build HTTP routes for this port? Sniffed ports (`UnsupportedProtocol`) are
    /// served by the HTTP inspector too, so they count.
    pub fn is_http(&self) -> bool {
        matches!(self.protocol.as_str(), "HTTP" | "HTTP2" | "GRPC" | "GRPC-Web" | "UnsupportedProtocol")
    }
}

/// One Pod or pod template: the labels subsets select, in its namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Workload {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    /// Pod IP, when a Pod with a status was given.
    #[serde(skip)]
    pub ip: Option<String>,
    /// A Pod annotated `ambient.istio.io/redirection: enabled` (no sidecar).
    #[serde(skip)]
    pub ambient: bool,
    /// A Pod's `spec.nodeName`.
    #[serde(skip)]
    pub node: Option<String>,
    #[serde(skip)]
    pub origin: Option<ResourceRef>,
}

/// Endpoints or an EndpointSlice for one service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointSet {
    pub service: String,
    pub namespace: String,
    pub addresses: Vec<Address>,
    /// (port name, port number).
    pub ports: Vec<(String, u32)>,
    pub origin: Option<ResourceRef>,
}

/// One endpoint address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Address {
    pub ip: String,
    pub ready: bool,
    /// `targetRef` naming a Pod: whose labels the endpoint carries.
    pub pod: Option<String>,
}

fn address(ip: Option<&Value>, ready: bool, target: Option<&Value>) -> Option<Address> {
    let pod = target.filter(|t| t.get("kind").and_then(Value::as_str).is_none_or(|k| k == "Pod"));
    Some(Address {
        ip: ip?.as_str()?.to_string(),
        ready,
        pod: pod.and_then(|t| t.get("name")?.as_str()).map(str::to_string),
    })
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Secret {
    pub name: String,
    pub namespace: String,
    pub secret_type: String,
    /// Data keys with a non-empty value (`data` base64, `stringData` plain).
    pub keys: BTreeSet<String>,
    /// Data keys present but empty.
    pub empty_keys: BTreeSet<String>,
    /// The certificate chain (`cert`, else `tls.crt`) as PEM text, when it decodes.
    pub cert_pem: Option<Vec<u8>>,
    pub origin: Option<ResourceRef>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespace {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

impl Namespace {
    /// istioctl `NamespaceInAmbientMode`: `istio.io/dataplane-mode: ambient`, unless the
    /// namespace asks for sidecar injection (`istio-injection: enabled` or `istio.io/rev`).
    pub fn ambient(&self) -> bool {
        let l = |k: &str| self.labels.get(k).map(String::as_str);
        l("istio-injection") != Some("enabled")
            && l("istio.io/rev").is_none_or(str::is_empty)
            && l("istio.io/dataplane-mode") == Some("ambient")
    }
}

impl Registry {
    /// The Services by lowercase FQDN (`NAME.NAMESPACE.svc.SUFFIX`); the first of a host wins,
    /// as in istiod's service index. Built once, so that looking up every destination is linear.
    pub fn services_by_host(&self, domain_suffix: &str) -> HashMap<String, &Service> {
        let mut services = HashMap::new();
        for svc in &self.services {
            services.entry(svc.host(domain_suffix).to_ascii_lowercase()).or_insert(svc);
        }
        services
    }

    /// Every workload label set in `namespace`.
    pub fn namespace_ambient(&self, ns: &str) -> bool {
        self.namespaces.iter().any(|n| n.name == ns && n.ambient())
    }

    pub fn workloads_in<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = &'a Workload> + 'a {
        self.workloads.iter().filter(move |w| w.namespace == namespace)
    }

    /// The Service whose host is `fqdn`.
    pub fn service(&self, fqdn: &str, domain_suffix: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.host(domain_suffix).eq_ignore_ascii_case(fqdn))
    }

    /// ExternalName Services as istiod models them since Service aliases (`KSVC ConvertService`:
    /// resolution `Alias`, K14): each alias FQDN with its `externalName`, lowercased, one hop.
    pub fn aliases(&self, domain_suffix: &str) -> HashMap<String, String> {
        self.services
            .iter()
            .filter_map(|s| Some((s.host(domain_suffix), s.external_name.as_ref()?.to_ascii_lowercase())))
            .collect()
    }

    /// Adds to each Pod on a known Node the labels istiod gives its endpoints
    /// (`pilot/pkg/serviceregistry/util/label/label.go AugmentLabels`, with the locality the
    /// analyzer builds from the Node, `AN destinationrule/subset.go getNodeLocalityString` and
    /// `pilot/pkg/networking/util/util.go LocalityToString`): region, zone and subzone from the
    /// Node's `topology.kubernetes.io/region`, `topology.kubernetes.io/zone`,
    /// `topology.istio.io/subzone`, and `kubernetes.io/hostname` = the node name (K15). Run once
    /// all objects are read (a Node may follow its Pods).
    pub fn augment_topology(&mut self) {
        for w in &mut self.workloads {
            let Some(node) = w.node.as_deref() else { continue };
            if let Some(nl) = self.nodes.get(node) {
                let get = |k: &str| nl.get(k).map(String::as_str).unwrap_or("");
                let (region, zone, subzone) = (
                    get("topology.kubernetes.io/region"),
                    get("topology.kubernetes.io/zone"),
                    get("topology.istio.io/subzone"),
                );
                // LocalityToString, then SplitLocalityLabel: the round trip istiod makes.
                let mut locality = region.to_string();
                if !zone.is_empty() {
                    locality = format!("{locality}/{zone}");
                    if !subzone.is_empty() {
                        locality = format!("{locality}/{subzone}");
                    }
                }
                let mut parts = locality.split('/');
                for key in ["topology.kubernetes.io/region", "topology.kubernetes.io/zone", "topology.istio.io/subzone"]
                {
                    if let Some(v) = parts.next().filter(|v| !v.is_empty()) {
                        w.labels.insert(key.to_string(), v.to_string());
                    }
                }
            }
            // The hostname label comes from the Pod's node name, known Node or not.
            w.labels.insert("kubernetes.io/hostname".to_string(), node.to_string());
        }
    }

    /// Compact form for the plugin configuration: services and distinct workload label sets.
    pub fn compact(&self) -> Registry {
        let mut seen = BTreeSet::new();
        let workloads = self
            .workloads
            .iter()
            .filter(|w| seen.insert((w.namespace.clone(), w.labels.clone())))
            .map(|w| Workload { namespace: w.namespace.clone(), labels: w.labels.clone(), ..Workload::default() })
            .collect();
        let services = self.services.iter().map(|s| Service { origin: None, ..s.clone() }).collect();
        Registry { services, workloads, ..Registry::default() }
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
            && self.workloads.is_empty()
            && self.endpoints.is_empty()
            && self.secrets.is_empty()
            && self.namespaces.is_empty()
    }
}

/// How the loader treats a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KindClass {
    /// One of the Kubernetes kinds above.
    Kubernetes,
    /// Any other kind: skipped with an info line.
    NotUsed,
    /// An Istio networking kind, or something that must be reported as an error.
    Istio,
}

/// Istio kinds that do not affect routing decisions; skipped like foreign kinds.
const ISTIO_NOT_USED: &[&str] = &["EnvoyFilter", "WorkloadGroup", "ProxyConfig"];

pub fn classify(api_version: &str, kind: &str) -> KindClass {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let core = matches!(
        (group, kind),
        ("", "Service" | "Endpoints" | "Pod" | "Node" | "Namespace" | "Secret" | "ServiceAccount" | "ConfigMap")
            | ("discovery.k8s.io", "EndpointSlice")
            | ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet")
            | ("batch", "Job" | "CronJob")
    );
    // RequestAuthentication: read for IST0149 (which gateway pods validate JWTs), nothing else.
    let analyzed_only = (group == "security.istio.io" && kind == "RequestAuthentication")
        || (group == "gateway.networking.k8s.io" && kind == "Gateway");
    if (core || analyzed_only) && !api_version.is_empty() {
        return KindClass::Kubernetes;
    }
    if kind.is_empty() {
        return KindClass::Istio;
    }
    if group == "networking.istio.io" {
        return if ISTIO_NOT_USED.contains(&kind) { KindClass::NotUsed } else { KindClass::Istio };
    }
    // Istio kind names under a foreign group are mistakes (`apps/v1` Gateway), except the
    // Gateway API's own Gateway.
    let istio_name =
        matches!(kind, "VirtualService" | "DestinationRule" | "ServiceEntry" | "Sidecar" | "WorkloadEntry")
            || (kind == "Gateway" && group != "gateway.networking.k8s.io");
    if istio_name {
        KindClass::Istio
    } else {
        KindClass::NotUsed
    }
}

/// Istio's protocol of a Service port (istio `pkg/config/kube.ConvertProtocol` +
/// `protocol.Parse`): UDP as declared; else `appProtocol` (with Kubernetes' `kubernetes.io/h2c`,
/// `ws`, `wss`), else the port name; `grpc-web` prefix first, then the part before the first `-`;
/// unknown names on 25, 53, 3306, 27017 are TCP, others are sniffed (`UnsupportedProtocol`).
pub fn port_protocol(port: u32, name: &str, l4: &str, app_protocol: Option<&str>) -> &'static str {
    if l4.eq_ignore_ascii_case("UDP") {
        return "UDP";
    }
    let mut n = name;
    if let Some(a) = app_protocol {
        match a {
            "kubernetes.io/h2c" => return "HTTP2",
            "kubernetes.io/ws" => return "HTTP",
            "kubernetes.io/wss" => return "HTTPS",
            _ => n = a,
        }
    }
    if n.len() >= 8 && n.as_bytes()[..8].eq_ignore_ascii_case(b"grpc-web") {
        return "GRPC-Web";
    }
    let prefix = n.split('-').next().unwrap_or_default().to_ascii_lowercase();
    match prefix.as_str() {
        "tcp" => "TCP",
        "udp" => "UDP",
        "grpc" => "GRPC",
        "http" => "HTTP",
        "http_proxy" => "HTTP_PROXY",
        "http2" => "HTTP2",
        "https" => "HTTPS",
        "tls" => "TLS",
        "mongo" => "Mongo",
        "redis" => "Redis",
        "mysql" => "MySQL",
        _ if matches!(port, 25 | 53 | 3306 | 27017) => "TCP",
        _ => "UnsupportedProtocol",
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn labels_at(v: &Value, path: &[&str]) -> BTreeMap<String, String> {
    let Some(Value::Object(m)) = path.iter().try_fold(v, |v, k| v.get(k)) else { return BTreeMap::new() };
    m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect()
}

fn u32_of(v: Option<&Value>) -> Option<u32> {
    v?.as_u64().and_then(|n| u32::try_from(n).ok())
}

/// Reads one Kubernetes object (`classify` said `Kubernetes`) into the registry. Problems are
/// diagnostics on the object; nothing here fails the bundle except a malformed Service port.
pub fn read(
    obj: &Map<String, Value>,
    meta: &crate::crd::Metadata,
    r: ResourceRef,
    reg: &mut Registry,
    diags: &mut Diagnostics,
) {
    let v = Value::Object(obj.clone());
    let labels = &meta.labels;
    let ns = r.namespace.clone();
    let name = r.name.clone();
    if name.is_empty() {
        diags.push(Diagnostic::error(Some(r), "metadata.name", "missing name"));
        return;
    }
    match r.kind.as_str() {
        "Service" => read_service(&v, meta, r, reg, diags),
        "Pod" => reg.workloads.push(Workload {
            namespace: ns,
            labels: labels.clone(),
            ip: str_at(&v, &["status", "podIP"]).map(str::to_string),
            ambient: meta.annotations.get("ambient.istio.io/redirection").map(String::as_str) == Some("enabled"),
            node: str_at(&v, &["spec", "nodeName"]).filter(|n| !n.is_empty()).map(str::to_string),
            origin: Some(r),
        }),
        "Node" => {
            reg.nodes.insert(name, labels.clone());
        }
        "Gateway" => {
            let listeners = v.pointer("/spec/listeners").and_then(Value::as_array).cloned().unwrap_or_default();
            let hostnames = listeners
                .iter()
                .map(|l| l.get("hostname").and_then(Value::as_str).filter(|h| !h.is_empty()).map(str::to_string))
                .collect();
            reg.kube_gateways.push((format!("{ns}/{name}"), hostnames));
        }
        "RequestAuthentication" => {
            reg.request_authentications.push((ns, labels_at(&v, &["spec", "selector", "matchLabels"])));
        }
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => reg.workloads.push(Workload {
            namespace: ns,
            labels: labels_at(&v, &["spec", "template", "metadata", "labels"]),
            ip: None,
            ambient: false,
            node: None,
            origin: Some(r),
        }),
        "CronJob" => reg.workloads.push(Workload {
            namespace: ns,
            labels: labels_at(&v, &["spec", "jobTemplate", "spec", "template", "metadata", "labels"]),
            ip: None,
            ambient: false,
            node: None,
            origin: Some(r),
        }),
        "Namespace" => reg.namespaces.push(Namespace { name, labels: labels.clone() }),
        "Secret" => {
            let (mut keys, mut empty_keys) = (BTreeSet::new(), BTreeSet::new());
            let mut values: BTreeMap<String, Vec<u8>> = BTreeMap::new();
            for (field, encoded) in [("data", true), ("stringData", false)] {
                let Some(Value::Object(m)) = v.get(field) else { continue };
                for (k, val) in m {
                    let text = val.as_str().unwrap_or_default();
                    if text.is_empty() {
                        empty_keys.insert(k.clone());
                        continue;
                    }
                    keys.insert(k.clone());
                    let bytes = if encoded { crate::pem::base64_decode(text) } else { Some(text.as_bytes().to_vec()) };
                    if let Some(b) = bytes {
                        values.insert(k.clone(), b);
                    }
                }
            }
            let cert_pem = if keys.contains("cert") && keys.contains("key") {
                values.remove("cert")
            } else {
                values.remove("tls.crt")
            };
            let secret_type = str_at(&v, &["type"]).unwrap_or("Opaque").to_string();
            reg.secrets.push(Secret { name, namespace: ns, secret_type, keys, empty_keys, cert_pem, origin: Some(r) });
        }
        "Endpoints" => read_endpoints(&v, r, reg),
        "EndpointSlice" => read_endpoint_slice(&v, labels, r, reg, diags),
        // ServiceAccount, ConfigMap: accepted, nothing routing depends on.
        _ => {}
    }
}

fn read_service(v: &Value, meta: &crate::crd::Metadata, r: ResourceRef, reg: &mut Registry, diags: &mut Diagnostics) {
    let spec = v.get("spec").cloned().unwrap_or(Value::Null);
    let external_name = str_at(&spec, &["externalName"])
        .filter(|_| str_at(&spec, &["type"]) == Some("ExternalName"))
        .map(str::to_string);
    let mut ports = Vec::new();
    let list = match spec.get("ports") {
        Some(Value::Array(a)) => a.as_slice(),
        _ => &[],
    };
    for (i, p) in list.iter().enumerate() {
        let Some(number) = u32_of(p.get("port")).filter(|n| (1..=65535).contains(n)) else {
            diags.push(Diagnostic::error(
                Some(r.clone()),
                format!("spec.ports[{i}].port"),
                "a Service port needs a number between 1 and 65535",
            ));
            continue;
        };
        let pname = p.get("name").and_then(Value::as_str).unwrap_or_default();
        let l4 = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
        let app = p.get("appProtocol").and_then(Value::as_str);
        ports.push(ServicePort {
            name: pname.to_string(),
            port: number,
            protocol: port_protocol(number, pname, l4, app).to_string(),
            target_port: u32_of(p.get("targetPort")),
        });
    }
    if list.is_empty() && external_name.is_none() {
        diags.push(
            Diagnostic::warning(
                Some(r.clone()),
                "spec.ports",
                "Service has no ports: it gets no cluster and no default route (Kubernetes requires at least one port)",
            )
            .with_code("MR0101"),
        );
    }
    reg.services.push(Service {
        name: r.name.clone(),
        namespace: r.namespace.clone(),
        ports,
        selector: labels_at(&spec, &["selector"]),
        external_name,
        export_to: meta
            .annotations
            .get("networking.istio.io/exportTo")
            .map(|a| a.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default(),
        origin: Some(r),
    });
}

fn read_endpoints(v: &Value, r: ResourceRef, reg: &mut Registry) {
    let mut set = EndpointSet { service: r.name.clone(), namespace: r.namespace.clone(), ..EndpointSet::default() };
    if let Some(Value::Array(subsets)) = v.get("subsets") {
        for s in subsets {
            for (field, ready) in [("addresses", true), ("notReadyAddresses", false)] {
                if let Some(Value::Array(a)) = s.get(field) {
                    set.addresses.extend(a.iter().filter_map(|e| address(e.get("ip"), ready, e.get("targetRef"))));
                }
            }
            if let Some(Value::Array(ps)) = s.get("ports") {
                set.ports.extend(ps.iter().filter_map(|p| {
                    Some((
                        p.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
                        u32_of(p.get("port"))?,
                    ))
                }));
            }
        }
    }
    set.origin = Some(r);
    reg.endpoints.push(set);
}

fn read_endpoint_slice(
    v: &Value,
    labels: &BTreeMap<String, String>,
    r: ResourceRef,
    reg: &mut Registry,
    diags: &mut Diagnostics,
) {
    let Some(service) = labels.get("kubernetes.io/service-name") else {
        diags.push(
            Diagnostic::warning(
                Some(r),
                "metadata.labels",
                "EndpointSlice has no kubernetes.io/service-name label; it belongs to no Service and is ignored",
            )
            .with_code("MR0102"),
        );
        return;
    };
    let mut set = EndpointSet { service: service.clone(), namespace: r.namespace.clone(), ..EndpointSet::default() };
    if let Some(Value::Array(eps)) = v.get("endpoints") {
        for e in eps {
            // Kubernetes: a missing `ready` condition means ready.
            let ready = e.get("conditions").and_then(|c| c.get("ready")).and_then(Value::as_bool).unwrap_or(true);
            if let Some(Value::Array(a)) = e.get("addresses") {
                set.addresses.extend(a.iter().filter_map(|x| address(Some(x), ready, e.get("targetRef"))));
            }
        }
    }
    if let Some(Value::Array(ps)) = v.get("ports") {
        set.ports.extend(ps.iter().filter_map(|p| {
            Some((p.get("name").and_then(Value::as_str).unwrap_or_default().to_string(), u32_of(p.get("port"))?))
        }));
    }
    set.origin = Some(r);
    reg.endpoints.push(set);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn protocol_follows_app_protocol_then_name_prefix() {
        assert_eq!(port_protocol(9080, "http", "TCP", None), "HTTP");
        assert_eq!(port_protocol(9080, "http-web", "TCP", None), "HTTP");
        assert_eq!(port_protocol(9080, "tcp-web", "TCP", Some("http")), "HTTP");
        assert_eq!(port_protocol(9080, "grpc-web-x", "TCP", None), "GRPC-Web");
        assert_eq!(port_protocol(9080, "GRPC-x", "TCP", None), "GRPC");
        assert_eq!(port_protocol(9080, "x", "TCP", Some("kubernetes.io/h2c")), "HTTP2");
        assert_eq!(port_protocol(3306, "db", "TCP", None), "TCP");
        assert_eq!(port_protocol(9080, "web", "TCP", None), "UnsupportedProtocol");
        assert_eq!(port_protocol(53, "http", "UDP", None), "UDP");
    }

    use crate::decide::Decision;
    use crate::request::{Request, SplitMix64};
    use serde_json::json;

    fn svc(name: &str, ports: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
               "spec": {"selector": {"app": name}, "ports": ports}})
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn pods_get_the_topology_labels_of_their_node_as_istiod_augments_them() {
        let pod = |name: &str, node: &str| {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default", "labels": {"app": "a"}},
                   "spec": {"nodeName": node}})
        };
        let node = |name: &str, labels: Value| json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}});
        let (bundle, diags) = crate::load_value(json!({"resources": [
            pod("p1", "n1"), pod("p2", "n2"), pod("p3", "unknown"),
            // After the Pods: Nodes are applied once everything is read.
            node("n1", json!({"topology.kubernetes.io/region": "r", "topology.kubernetes.io/zone": "z", "topology.istio.io/subzone": "s"})),
            // A subzone without a zone is dropped (LocalityToString stops at the first gap).
            node("n2", json!({"topology.kubernetes.io/region": "r", "topology.istio.io/subzone": "s"})),
        ]}));
        assert!(diags.is_empty(), "{diags}");
        let labels: Vec<&BTreeMap<String, String>> = bundle.registry.workloads.iter().map(|w| &w.labels).collect();
        let want = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).chain([("app".into(), "a".into())]).collect()
        };
        assert_eq!(
            *labels[0],
            want(&[
                ("topology.kubernetes.io/region", "r"),
                ("topology.kubernetes.io/zone", "z"),
                ("topology.istio.io/subzone", "s"),
                ("kubernetes.io/hostname", "n1")
            ])
        );
        assert_eq!(*labels[1], want(&[("topology.kubernetes.io/region", "r"), ("kubernetes.io/hostname", "n2")]));
        assert_eq!(*labels[2], want(&[("kubernetes.io/hostname", "unknown")]));
    }

    fn deployment(app: &str, version: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": format!("{app}-{version}")},
               "spec": {"template": {"metadata": {"labels": {"app": app, "version": version}}}}})
    }

    fn reviews_v1() -> Value {
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "reviews"},
               "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}]}})
    }

    fn reviews_subsets() -> Value {
        json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": "reviews"},
               "spec": {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}})
    }

    fn cluster_of(input: Value, authority: &str) -> Option<String> {
        let (bundle, diags) = crate::config::load_value(input);
        let c = crate::compile(&bundle, diags);
        let t = c.table?;
        let req = Request::new("GET", authority, "/");
        let plan = crate::apply::plan(&t, &t.decide(&req, &mut SplitMix64(1)), &req);
        plan.request_ops.iter().find_map(|op| match op {
            crate::apply::HeaderOp::Set(k, v) if *k == t.routing_header => Some(v.clone()),
            _ => None,
        })
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn destination_port_is_the_services_only_port_else_the_requests() {
        let with_service =
            json!([svc("reviews", json!([{"name": "http", "port": 9080}])), reviews_v1(), reviews_subsets()]);
        // The Service's only port, whatever port the request came on.
        for authority in ["reviews:9080", "reviews"] {
            assert_eq!(
                cluster_of(with_service.clone(), authority).as_deref(),
                Some("outbound|9080|v1|reviews.default.svc.cluster.local")
            );
        }
        // No Service: the request's port, never settings.defaultPort.
        assert_eq!(
            cluster_of(json!([reviews_v1(), reviews_subsets()]), "reviews:9080").as_deref(),
            Some("outbound|9080|v1|reviews.default.svc.cluster.local")
        );
        // Two ports and no port in the destination: istioctl's IST0112, an error.
        let two = json!([
            svc("reviews", json!([{"name": "http", "port": 9080}, {"name": "http-admin", "port": 9090}])),
            reviews_v1(),
            reviews_subsets()
        ]);
        let (bundle, diags) = crate::config::load_value(two);
        let c = crate::compile(&bundle, diags);
        assert!(c.diagnostics.errors().any(|d| d.code == Some("IST0112")), "{}", c.diagnostics);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn services_get_default_routes_and_pass_registry_only() {
        let sidecar = json!({"apiVersion": "networking.istio.io/v1", "kind": "Sidecar", "metadata": {"name": "default"},
                             "spec": {"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}});
        let input = json!([svc("ratings", json!([{"name": "http", "port": 9080}])), sidecar]);
        assert_eq!(
            cluster_of(input.clone(), "ratings:9080").as_deref(),
            Some("outbound|9080||ratings.default.svc.cluster.local")
        );
        assert_eq!(
            cluster_of(input.clone(), "ratings.default.svc.cluster.local:9080").as_deref(),
            Some("outbound|9080||ratings.default.svc.cluster.local")
        );
        let (bundle, diags) = crate::config::load_value(input);
        let t = crate::compile(&bundle, diags).table.unwrap();
        let mut rng = SplitMix64(1);
        assert!(matches!(t.decide(&Request::new("GET", "evil.example.org", "/"), &mut rng), Decision::Blocked));
        assert!(matches!(t.decide(&Request::new("GET", "ratings:9080", "/"), &mut rng), Decision::Default(_)));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn other_kinds_are_one_info_line_each_never_an_error() {
        let ingress =
            |n: &str| json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": n}});
        let ap =
            json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": {"name": "a"}});
        let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "bookinfo-reviews"}});
        let (bundle, diags) =
            crate::config::load_value(json!([ingress("a"), ingress("b"), ap, sa, deployment("reviews", "v1")]));
        assert!(!diags.has_errors(), "{diags}");
        let infos: Vec<_> = diags.iter().filter(|d| d.severity == crate::Severity::Info).collect();
        assert_eq!(infos.len(), 2, "{diags}");
        assert!(infos[0].message.contains("kind Ingress (networking.k8s.io/v1), 2 objects, not used by meshroute"));
        assert_eq!(infos[0].resource.as_ref().map(|r| r.index), Some(0));
        assert_eq!(bundle.registry.workloads.len(), 1);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn compact_registry_in_the_plugin_config_acts_as_the_objects() {
        let objects = json!([svc("reviews", json!([{"name": "http", "port": 9080}])), deployment("reviews", "v1")]);
        let (bundle, _) = crate::config::load_value(objects);
        let compact = serde_json::to_value(bundle.registry.compact()).unwrap();
        assert_eq!(compact["services"][0]["ports"][0], json!({"name": "http", "port": 9080, "protocol": "HTTP"}));
        let pc = json!({"resources": [reviews_v1(), reviews_subsets()], "registry": compact});
        assert_eq!(cluster_of(pc, "reviews").as_deref(), Some("outbound|9080|v1|reviews.default.svc.cluster.local"));
        let (_, d) = crate::config::load_value(json!({"resources": [], "registry": {"servces": []}}));
        assert!(d.errors().any(|e| e.path == "registry.servces"), "{d}");
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn analyzers_see_services_and_pod_templates() {
        let dr = json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": "reviews"},
            "spec": {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v9", "labels": {"version": "v9"}}]}});
        let dr_ghost = json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": "ghost"},
            "spec": {"host": "ghost"}});
        let vs_typo = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "typo"},
            "spec": {"hosts": ["x"], "http": [{"route": [{"destination": {"host": "reviwes"}}]}]}});
        let (bundle, diags) = crate::config::load_value(json!([
            svc("reviews", json!([{"name": "http", "port": 9080}])),
            deployment("reviews", "v1"),
            dr,
            dr_ghost,
            vs_typo,
            reviews_v1()
        ]));
        let d = crate::validate(&bundle);
        assert!(diags.is_empty(), "{diags}");
        let codes: Vec<(&str, &str, &str)> = d
            .iter()
            .map(|x| (x.code.unwrap_or(""), x.resource.as_ref().map_or("", |r| r.name.as_str()), x.path.as_str()))
            .collect();
        assert!(codes.contains(&("IST0173", "reviews", "spec.subsets[1].labels")), "{d}");
        assert!(!codes.contains(&("IST0173", "reviews", "spec.subsets[0].labels")), "{d}");
        assert!(codes.contains(&("IST0174", "ghost", "spec.host")), "{d}");
        assert!(!codes.iter().any(|c| c.0 == "IST0174" && c.1 == "reviews"), "{d}");
        assert!(codes.contains(&("IST0101", "typo", "spec.http[0].route[0].destination.host")), "{d}");
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn bad_kubernetes_objects_are_diagnostics() {
        let no_ports = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}, "spec": {"selector": {"app": "a"}}});
        let bad_port = svc("b", json!([{"name": "http", "port": 0}]));
        let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "c-1", "labels": {"kubernetes.io/service-name": "c"}}, "endpoints": []});
        let (bundle, diags) = crate::config::load_value(json!([no_ports, bad_port, slice, deployment("b", "v1")]));
        assert!(diags.iter().any(|d| d.code == Some("MR0101") && d.path == "spec.ports"), "{diags}");
        assert!(diags.errors().any(|d| d.path == "spec.ports[0].port"), "{diags}");
        let v = crate::validate(&bundle);
        assert!(v.iter().any(|d| d.code == Some("MR0104")), "{v}");
        assert!(
            v.iter().any(|d| d.code == Some("MR0103") && d.resource.as_ref().is_some_and(|r| r.name == "a")),
            "{v}"
        );
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn kinds_are_classified() {
        assert_eq!(classify("v1", "Service"), KindClass::Kubernetes);
        assert_eq!(classify("apps/v1", "Deployment"), KindClass::Kubernetes);
        assert_eq!(classify("batch/v1", "CronJob"), KindClass::Kubernetes);
        assert_eq!(classify("discovery.k8s.io/v1", "EndpointSlice"), KindClass::Kubernetes);
        assert_eq!(classify("networking.k8s.io/v1", "Ingress"), KindClass::NotUsed);
        // Read for analysis only (IST0132, IST0149).
        assert_eq!(classify("gateway.networking.k8s.io/v1", "Gateway"), KindClass::Kubernetes);
        assert_eq!(classify("gateway.networking.k8s.io/v1", "HTTPRoute"), KindClass::NotUsed);
        assert_eq!(classify("security.istio.io/v1", "RequestAuthentication"), KindClass::Kubernetes);
        assert_eq!(classify("networking.istio.io/v1alpha3", "EnvoyFilter"), KindClass::NotUsed);
        assert_eq!(classify("security.istio.io/v1", "AuthorizationPolicy"), KindClass::NotUsed);
        assert_eq!(classify("networking.istio.io/v1", "VirtualServce"), KindClass::Istio);
        assert_eq!(classify("apps/v1", "Gateway"), KindClass::Istio);
        assert_eq!(classify("", ""), KindClass::Istio);
    }
}
