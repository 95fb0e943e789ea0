//! Envoy clusters for the route table's destinations, with endpoints from ServiceEntry and
//! WorkloadEntry and the DestinationRule traffic policy applied the way istiod does
//! (`pilot/pkg/networking/core/cluster_traffic_policy.go`, `cluster_builder.go`,
//! `loadbalancer/loadbalancer.go`).

use crate::config::{Bundle, Resource, Settings};
use crate::crd;
use crate::host;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

/// Istio's default `connectTimeout` (mesh config).
const DEFAULT_CONNECT_TIMEOUT: &str = "10s";
const MAX_U32: u64 = u32::MAX as u64;
/// Connect timeout of a mirror-only cluster whose DestinationRule sets none: a mirror that does
/// not accept connections is given up on quickly (R162).
const MIRROR_CONNECT_TIMEOUT: &str = "1s";

/// The cluster to build: where the name came from does not matter any more.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Want {
    pub name: String,
    pub host: String,
    pub subset: Option<String>,
    pub port: u32,
    /// Only mirrors use it (and it is no service's default route): bounded resources.
    pub mirror_only: bool,
}

/// The four blocks a port or subset can override (istio `MergeTrafficPolicy`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    pub load_balancer: Option<crd::LoadBalancerSettings>,
    pub connection_pool: Option<crd::ConnectionPoolSettings>,
    pub outlier_detection: Option<crd::OutlierDetection>,
    pub tls: Option<crd::ClientTlsSettings>,
}

/// istiod: start from the DestinationRule's policy with its port-level settings for `port`
/// applied, then let the subset's blocks replace whole blocks, then the subset's port-level
/// settings replace all four (unset ones fall back to defaults, they are not inherited).
pub fn merge_policy(top: Option<&crd::TrafficPolicy>, subset: Option<&crd::TrafficPolicy>, port: u32) -> Policy {
    let mut p = top.map(|t| with_port(t, port)).unwrap_or_default();
    if let Some(s) = subset {
        if s.load_balancer.is_some() {
            p.load_balancer = s.load_balancer.clone();
        }
        if s.connection_pool.is_some() {
            p.connection_pool = s.connection_pool.clone();
        }
        if s.outlier_detection.is_some() {
            p.outlier_detection = s.outlier_detection.clone();
        }
        if s.tls.is_some() {
            p.tls = s.tls.clone();
        }
        if let Some(pl) = port_level(s, port) {
            p = pl;
        }
    }
    p
}

fn with_port(t: &crd::TrafficPolicy, port: u32) -> Policy {
    port_level(t, port).unwrap_or_else(|| Policy {
        load_balancer: t.load_balancer.clone(),
        connection_pool: t.connection_pool.clone(),
        outlier_detection: t.outlier_detection.clone(),
        tls: t.tls.clone(),
    })
}

fn port_level(t: &crd::TrafficPolicy, port: u32) -> Option<Policy> {
    t.port_level_settings.iter().find(|p| p.port.as_ref().is_some_and(|s| s.number == port)).map(|p| Policy {
        load_balancer: p.load_balancer.clone(),
        connection_pool: p.connection_pool.clone(),
        outlier_detection: p.outlier_detection.clone(),
        tls: p.tls.clone(),
    })
}

/// One endpoint as Envoy will see it.
#[derive(Debug, Clone, PartialEq)]
struct Endpoint {
    address: String,
    port: u32,
    labels: BTreeMap<String, String>,
    locality: Option<String>,
    weight: u32,
}

/// Everything needed to turn resources into clusters.
pub struct Builder<'a> {
    pub bundle: &'a Bundle,
    pub settings: &'a Settings,
    pub credentials_dir: Option<&'a Path>,
    /// Warnings about what could not be expressed; printed and written as comments.
    pub notes: Vec<String>,
    /// Lookups by host, built once: a cluster per host must not scan every rule (linear cost).
    destination_rules: crate::destination_rules::Index<'a>,
    service_entries: ServiceEntryIndex<'a>,
    kube: KubeIndex<'a>,
    /// WorkloadEntries by label, for the ServiceEntries that select them.
    workload_entries: crate::labels::LabelIndex<'a, &'a crd::WorkloadEntry>,
}

/// Kubernetes Services by lowercase FQDN, their endpoint sets by (namespace, Service), and Pods
/// by (namespace, name) and (namespace, IP); the first of each wins, as a scan would find it.
#[derive(Default)]
struct KubeIndex<'a> {
    services: HashMap<String, &'a crate::k8s::Service>,
    endpoint_sets: HashMap<(&'a str, &'a str), Vec<&'a crate::k8s::EndpointSet>>,
    pods_by_name: HashMap<(&'a str, &'a str), &'a crate::k8s::Workload>,
    pods_by_ip: HashMap<(&'a str, &'a str), &'a crate::k8s::Workload>,
}

impl<'a> KubeIndex<'a> {
    fn new(reg: &'a crate::k8s::Registry, domain_suffix: &str) -> Self {
        let mut k = KubeIndex { services: reg.services_by_host(domain_suffix), ..KubeIndex::default() };
        for e in &reg.endpoints {
            k.endpoint_sets.entry((e.namespace.as_str(), e.service.as_str())).or_default().push(e);
        }
        for p in &reg.workloads {
            if let Some(o) = p.origin.as_ref().filter(|o| o.kind == "Pod") {
                k.pods_by_name.entry((p.namespace.as_str(), o.name.as_str())).or_insert(p);
            }
            if let Some(ip) = &p.ip {
                k.pods_by_ip.entry((p.namespace.as_str(), ip.as_str())).or_insert(p);
            }
        }
        k
    }
}

/// The visible ServiceEntries by FQDN host: exact hosts (the first declaration wins) and the
/// wildcard ones, in input order.
struct ServiceEntryIndex<'a> {
    exact: HashMap<String, (&'a Resource, &'a crd::ServiceEntry)>,
    wildcard: Vec<(String, &'a Resource, &'a crd::ServiceEntry)>,
}

impl<'a> Builder<'a> {
    pub fn new(bundle: &'a Bundle, credentials_dir: Option<&'a Path>) -> Self {
        let mut b = Builder {
            bundle,
            settings: &bundle.settings,
            credentials_dir,
            notes: Vec::new(),
            destination_rules: crate::destination_rules::Index::new(bundle),
            service_entries: ServiceEntryIndex { exact: HashMap::new(), wildcard: Vec::new() },
            kube: KubeIndex::new(&bundle.registry, &bundle.settings.domain_suffix),
            workload_entries: crate::labels::LabelIndex::new(
                bundle.workload_entries().map(|(r, we)| (r.namespace.as_str(), &we.labels, we)),
            ),
        };
        let mut index = ServiceEntryIndex { exact: HashMap::new(), wildcard: Vec::new() };
        for (r, se) in b.visible_service_entries() {
            for sh in &se.hosts {
                let sh = b.fqdn(sh, &r.namespace);
                if sh.starts_with('*') {
                    index.wildcard.push((sh, r, se));
                } else {
                    index.exact.entry(sh).or_insert((r, se));
                }
            }
        }
        b.service_entries = index;
        b
    }

    /// Records a warning once.
    pub fn note(&mut self, n: String) {
        if !self.notes.contains(&n) {
            self.notes.push(n);
        }
    }

    pub fn fqdn(&self, h: &str, ns: &str) -> String {
        host::resolve(h, ns, &self.settings.domain_suffix)
    }

    /// The one cluster-name function (`compile::cluster_name`), so the table and Envoy agree.
    pub fn cluster_name(&self, host: &str, subset: Option<&str>, port: u32) -> String {
        crate::compile::cluster_name(&self.settings.cluster_template, port, subset, host)
    }

    /// The ServiceEntries exported to the proxy's namespace (R150).
    pub fn visible_service_entries(&self) -> impl Iterator<Item = (&'a Resource, &'a crd::ServiceEntry)> + '_ {
        self.bundle.service_entries().filter(|(r, se)| {
            crate::visibility::visible(
                &se.export_to,
                &self.settings.default_service_export_to,
                &r.namespace,
                &self.settings.namespace,
            )
        })
    }

    /// The ServiceEntry declaring `host`: an exact host first, then the longest wildcard.
    pub fn service_entry(&self, h: &str) -> Option<(&'a Resource, &'a crd::ServiceEntry)> {
        if let Some(&found) = self.service_entries.exact.get(h) {
            return Some(found);
        }
        let mut best: Option<(usize, (&Resource, &crd::ServiceEntry))> = None;
        for (sh, r, se) in &self.service_entries.wildcard {
            if host::matches(sh, h) && best.is_none_or(|(len, _)| sh.len() > len) {
                best = Some((sh.len(), (*r, *se)));
            }
        }
        best.map(|(_, x)| x)
    }

    /// The Kubernetes Service whose host is `fqdn` (exact, as istiod's service index).
    pub fn kube_service(&self, fqdn: &str) -> Option<&'a crate::k8s::Service> {
        self.kube.services.get(&fqdn.to_ascii_lowercase()).copied()
    }

    /// The DestinationRule for `host` as this proxy sees it: visibility, lookup order and merging
    /// of several rules as istiod (`crate::destination_rules`); the first resource it came from.
    pub fn destination_rule(&self, h: &str) -> Option<(&'a Resource, crd::DestinationRule)> {
        let c = self.destination_rules.for_host(h, Some(&self.host_namespace(h)))?;
        Some((*c.from.first()?, c.rule))
    }

    /// A service's clusters into `out`: one per port, and per port and subset of the host's
    /// DestinationRule. The subset-less one is the service's default route, so never mirror-only.
    fn service_clusters(&self, out: &mut BTreeMap<String, Want>, h: &str, ports: impl Iterator<Item = u32>) {
        let subsets: Vec<String> = self
            .destination_rule(h)
            .map(|(_, dr)| dr.subsets.iter().map(|s| s.name.clone()).collect())
            .unwrap_or_default();
        for port in ports {
            for subset in std::iter::once(None).chain(subsets.iter().map(Some)) {
                let name = self.cluster_name(h, subset.map(String::as_str), port);
                let w = out.entry(name.clone()).or_insert_with(|| Want {
                    name,
                    host: h.to_string(),
                    subset: subset.cloned(),
                    port,
                    mirror_only: false,
                });
                w.mirror_only &= subset.is_some();
            }
        }
    }

    /// Every cluster this proxy has, as istiod would give it: the ones routes name, plus the
    /// default and subset clusters of every ServiceEntry host and port — limited to what the
    /// Sidecar imports.
    pub fn wanted(&self, routed: &[crate::compile::ClusterRef]) -> Vec<Want> {
        let mut out: BTreeMap<String, Want> = BTreeMap::new();
        for c in routed {
            out.entry(c.name.clone()).or_insert_with(|| Want {
                name: c.name.clone(),
                host: c.host.clone(),
                subset: c.subset.clone(),
                port: c.port,
                mirror_only: c.mirror_only,
            });
        }
        for (r, se) in self.visible_service_entries() {
            for h in &se.hosts {
                let h = self.fqdn(h, &r.namespace);
                if h.starts_with('*') {
                    continue;
                }
                self.service_clusters(&mut out, &h, se.ports.iter().map(|p| p.number));
            }
        }
        // Kubernetes Services: a cluster per port, and per port and subset (istiod's
        // BuildSubsetKey for every subset of the host's DestinationRule).
        for svc in &self.bundle.registry.services {
            // An ExternalName Service is an alias: istiod builds no cluster for it
            // (`buildOutboundClusters` skips `model.Alias`); its traffic uses its target's (K14).
            if svc.external_name.is_some() {
                continue;
            }
            let h = svc.host(&self.settings.domain_suffix);
            self.service_clusters(&mut out, &h, svc.ports.iter().map(|p| p.port));
        }
        let sidecar =
            if self.settings.gateway == "mesh" { crate::compile::applicable_sidecar(self.bundle) } else { None };
        out.into_values()
            .filter(|w| match sidecar {
                None => true,
                Some((sres, sc)) => {
                    crate::compile::sidecar_imports(sc, &sres.namespace, &self.host_namespace(&w.host), &w.host)
                }
            })
            .collect()
    }

    /// The namespace a host's service lives in: its ServiceEntry's, else the one in a
    /// Kubernetes FQDN, else the proxy's.
    fn host_namespace(&self, h: &str) -> String {
        if let Some((r, _)) = self.service_entry(h) {
            return r.namespace.clone();
        }
        let suffix = format!(".svc.{}", self.settings.domain_suffix);
        h.strip_suffix(&suffix)
            .and_then(|b| b.split_once('.'))
            .map(|(_, ns)| ns.to_string())
            .unwrap_or_else(|| self.settings.namespace.clone())
    }

    /// The routing-level hash policy (Envoy `RouteAction.hash_policy`) for a cluster, if its
    /// policy uses consistent hashing.
    pub fn hash_policy(&self, w: &Want) -> Option<Vec<Value>> {
        let policy = self.policy(w);
        let ch = policy.load_balancer.as_ref()?.consistent_hash.as_ref()?;
        hash_key(ch).map(|h| vec![h])
    }

    /// The hash policy istiod adds to a route for one destination (`ROUTE
    /// HashForHTTPDestination`): the consistent hash of the subset's port-level settings, else
    /// the subset's, else the top-level port-level settings', else the top level's — port-level
    /// settings only for a destination that names its port. Unlike the cluster's load balancer
    /// (`merge_policy`), a subset whose load balancer does not hash falls back to the top level.
    pub fn destination_hash(&self, h: &crate::compile::HashSource) -> Option<Value> {
        let (_, dr) = self.destination_rule(&h.host)?;
        let top = dr.traffic_policy.as_ref();
        let port_level = |t: Option<&crd::TrafficPolicy>| {
            let port = h.port?;
            let pls = t?.port_level_settings.iter().find(|p| p.port.as_ref().is_some_and(|s| s.number == port))?;
            pls.load_balancer.as_ref()?.consistent_hash.clone()
        };
        let own = |t: Option<&crd::TrafficPolicy>| t?.load_balancer.as_ref()?.consistent_hash.clone();
        let subset = h
            .subset
            .as_ref()
            .and_then(|s| dr.subsets.iter().find(|x| &x.name == s))
            .and_then(|s| s.traffic_policy.as_ref());
        let ch = port_level(subset).or_else(|| own(subset)).or_else(|| port_level(top)).or_else(|| own(top))?;
        hash_key(&ch)
    }

    fn policy(&self, w: &Want) -> Policy {
        let Some((_, dr)) = self.destination_rule(&w.host) else { return Policy::default() };
        let subset_policy = w
            .subset
            .as_ref()
            .and_then(|s| dr.subsets.iter().find(|x| &x.name == s))
            .and_then(|s| s.traffic_policy.as_ref());
        merge_policy(dr.traffic_policy.as_ref(), subset_policy, w.port)
    }

    /// Builds one Envoy cluster.
    pub fn cluster(&mut self, w: &Want) -> Value {
        let mut c = Map::new();
        c.insert("name".into(), json!(w.name));
        let policy = self.policy(w);
        let se = self.service_entry(&w.host);
        let dr = self.destination_rule(&w.host);
        let subset_labels = match (&w.subset, dr) {
            (Some(s), Some((_, dr))) => match dr.subsets.iter().find(|x| &x.name == s) {
                Some(sub) => Some(sub.labels.clone()),
                None => {
                    self.note(format!(
                        "{}: no DestinationRule defines subset {s:?}; the cluster has no endpoints",
                        w.name
                    ));
                    Some(BTreeMap::from([("meshroute.io/undefined-subset".to_string(), s.clone())]))
                }
            },
            (Some(s), None) => {
                self.note(format!(
                    "{}: no DestinationRule for {} defines subset {s:?}; the cluster has no endpoints",
                    w.name, w.host
                ));
                Some(BTreeMap::from([("meshroute.io/undefined-subset".to_string(), s.clone())]))
            }
            _ => None,
        };

        // A Kubernetes Service (when no ServiceEntry declares the host): its endpoints.
        let kube = se.is_none().then(|| self.kube_service(&w.host)).flatten();
        // Discovery type and endpoints.
        let resolution = match se {
            Some((_, se)) => se.resolution.clone().unwrap_or_else(|| "NONE".into()),
            None if kube.is_some() => "KUBERNETES".into(),
            None => {
                self.note(format!(
                    "{}: no ServiceEntry declares this host; its clusters resolve the name by DNS and subsets \
                     cannot select endpoints by label (declare a ServiceEntry with endpoints for that)",
                    w.host
                ));
                "DNS".into()
            }
        };
        let passthrough_lb = policy.load_balancer.as_ref().and_then(|lb| lb.simple.as_deref()) == Some("PASSTHROUGH");
        let mut endpoints = Vec::new();
        let kind = if passthrough_lb || resolution == "NONE" {
            "ORIGINAL_DST"
        } else if let Some(svc) = kube {
            let (kind, eps) = self.kube_endpoints(w, svc, subset_labels.as_ref());
            endpoints = eps;
            kind
        } else {
            endpoints = self.endpoints(w, se, &resolution);
            // Without a ServiceEntry nothing is known about endpoints' labels: a subset
            // cluster reaches the host as a whole rather than nothing.
            if let Some(labels) = subset_labels.as_ref().filter(|_| se.is_some()) {
                endpoints.retain(|e| crate::labels::selects(labels, &e.labels));
            }
            match resolution.as_str() {
                "STATIC" => "STATIC",
                "DNS_ROUND_ROBIN" if endpoints.len() == 1 => "LOGICAL_DNS",
                "DNS" | "DNS_ROUND_ROBIN" => "STRICT_DNS",
                other => {
                    self.note(format!("{}: resolution {other} is not supported here; using DNS", w.name));
                    "STRICT_DNS"
                }
            }
        };
        c.insert("type".into(), json!(kind));
        if kind == "ORIGINAL_DST" {
            if passthrough_lb {
                self.note(format!(
                    "{}: loadBalancer PASSTHROUGH: ORIGINAL_DST clusters; without iptables redirection Envoy forwards \
                     to the address in the x-envoy-original-dst-host header, else to the connection's original \
                     destination",
                    w.host
                ));
            }
            c.insert("lb_policy".into(), json!("CLUSTER_PROVIDED"));
            c.insert("original_dst_lb_config".into(), json!({"use_http_header": true}));
        } else {
            if kind != "STATIC" {
                c.insert("dns_lookup_family".into(), json!("V4_ONLY"));
            }
            if endpoints.is_empty() && subset_labels.is_some() {
                self.note(format!("{}: the subset selects no endpoint (IST0173)", w.name));
            }
        }

        // Connection pool (always: istiod sets the default thresholds and connect timeout).
        let pool = policy.connection_pool.clone().unwrap_or_default();
        let tcp = pool.tcp.clone().unwrap_or_default();
        let http = pool.http.clone().unwrap_or_default();
        // A mirror-only cluster: what the DestinationRule leaves unset is bounded, so a mirror
        // that is dead or black-holed holds at most this many connections and gives up
        // connecting fast (meshroute's own rule, R162; istiod gives mirrors the defaults).
        let (default_connect, default_limit, default_retries) = if w.mirror_only {
            let limit = u64::from(self.settings.mirror_max_in_flight);
            (MIRROR_CONNECT_TIMEOUT, limit, 0)
        } else {
            (DEFAULT_CONNECT_TIMEOUT, MAX_U32, MAX_U32)
        };
        c.insert(
            "connect_timeout".into(),
            json!(tcp.connect_timeout.as_deref().and_then(duration).unwrap_or_else(|| default_connect.into())),
        );
        let positive = |v: Option<i64>| v.filter(|n| *n > 0).map(|n| n.min(MAX_U32 as i64) as u64);
        c.insert(
            "circuit_breakers".into(),
            json!({"thresholds": [{
                "max_connections": positive(tcp.max_connections).unwrap_or(default_limit),
                "max_pending_requests": positive(http.http1_max_pending_requests).unwrap_or(default_limit),
                "max_requests": positive(http.http2_max_requests).unwrap_or(default_limit),
                "max_retries": positive(http.max_retries).unwrap_or(default_retries),
                "track_remaining": true,
            }]}),
        );
        if let Some(ka) = &tcp.tcp_keepalive {
            let mut k = Map::new();
            if let Some(p) = ka.get("probes").and_then(Value::as_u64) {
                k.insert("keepalive_probes".into(), json!(p));
            }
            for (from, to) in [("time", "keepalive_time"), ("interval", "keepalive_interval")] {
                if let Some(secs) = ka.get(from).and_then(Value::as_str).and_then(parse_duration) {
                    k.insert(to.into(), json!(secs.as_secs().max(1)));
                }
            }
            c.insert("upstream_connection_options".into(), json!({"tcp_keepalive": k}));
        }
        let mut common_http = Map::new();
        let idle = http.idle_timeout.as_deref().or(tcp.idle_timeout.as_deref()).and_then(duration);
        if let Some(i) = idle {
            common_http.insert("idle_timeout".into(), json!(i));
        }
        if let Some(m) = positive(http.max_requests_per_connection) {
            common_http.insert("max_requests_per_connection".into(), json!(m));
        }
        if let Some(d) = tcp.max_connection_duration.as_deref().and_then(duration) {
            common_http.insert("max_connection_duration".into(), json!(d));
        }
        let port_protocol = se
            .and_then(|(_, se)| se.ports.iter().find(|p| p.number == w.port))
            .and_then(|p| p.protocol.clone())
            .or_else(|| kube.and_then(|s| s.ports.iter().find(|p| p.port == w.port)).map(|p| p.protocol.clone()))
            .unwrap_or_default()
            .to_ascii_uppercase();
        let h2 = match http.h2_upgrade_policy.as_deref() {
            Some("UPGRADE") => true,
            Some("DO_NOT_UPGRADE") => false,
            _ => matches!(port_protocol.as_str(), "HTTP2" | "GRPC" | "GRPC-WEB"),
        };
        let mut h2_options = Map::new();
        if let Some(m) = positive(http.max_concurrent_streams) {
            h2_options.insert("max_concurrent_streams".into(), json!(m));
        }
        let mut proto = Map::new();
        proto.insert(
            "@type".into(),
            json!("type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"),
        );
        if !common_http.is_empty() {
            proto.insert("common_http_protocol_options".into(), Value::Object(common_http));
        }
        if http.use_client_protocol == Some(true) {
            proto.insert("use_downstream_protocol_config".into(), json!({}));
        } else if h2 {
            proto.insert("explicit_http_config".into(), json!({"http2_protocol_options": h2_options}));
        } else {
            proto.insert("explicit_http_config".into(), json!({"http_protocol_options": {}}));
        }
        c.insert(
            "typed_extension_protocol_options".into(),
            json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": proto}),
        );

        // Outlier detection, before the load balancer: locality failover depends on it.
        let mut common_lb = Map::new();
        if let Some(od) = &policy.outlier_detection {
            c.insert("outlier_detection".into(), outlier_detection(od));
            common_lb.insert(
                "healthy_panic_threshold".into(),
                json!({"value": od.min_health_percent.unwrap_or(0).clamp(0, 100)}),
            );
        }

        // Load balancer.
        let lb = policy.load_balancer.clone().unwrap_or_default();
        if kind != "ORIGINAL_DST" {
            let (lb_policy, lb_config_key) = match lb.simple.as_deref() {
                Some("ROUND_ROBIN") => ("ROUND_ROBIN", Some("round_robin_lb_config")),
                Some("RANDOM") => ("RANDOM", None),
                // UNSPECIFIED, LEAST_CONN (deprecated) and LEAST_REQUEST: istio's default.
                _ => ("LEAST_REQUEST", Some("least_request_lb_config")),
            };
            c.insert("lb_policy".into(), json!(lb_policy));
            if let (Some(key), Some(slow)) = (lb_config_key, slow_start(&lb)) {
                c.insert(key.into(), json!({"slow_start_config": slow}));
            }
            if let Some(ch) = &lb.consistent_hash {
                match (&ch.maglev, &ch.ring_hash) {
                    (Some(m), _) => {
                        c.insert("lb_policy".into(), json!("MAGLEV"));
                        if let Some(t) = m.table_size.filter(|t| *t != 0) {
                            c.insert("maglev_lb_config".into(), json!({"table_size": t}));
                        }
                    }
                    (None, Some(r)) => {
                        c.insert("lb_policy".into(), json!("RING_HASH"));
                        if let Some(s) = r.minimum_ring_size.filter(|s| *s != 0) {
                            c.insert("ring_hash_lb_config".into(), json!({"minimum_ring_size": s}));
                        }
                    }
                    (None, None) => {
                        c.insert("lb_policy".into(), json!("RING_HASH"));
                        let size = ch.minimum_ring_size.filter(|s| *s != 0).unwrap_or(1024);
                        c.insert("ring_hash_lb_config".into(), json!({"minimum_ring_size": size}));
                    }
                }
                c.remove("least_request_lb_config");
                c.remove("round_robin_lb_config");
            }
            let locality_lb = lb.locality_lb_setting.clone().filter(|l| l.enabled != Some(false));
            let groups =
                self.locality_groups(&w.name, endpoints, locality_lb.as_ref(), policy.outlier_detection.is_some());
            if groups.weighted {
                common_lb.insert("locality_weighted_lb_config".into(), json!({}));
            }
            c.insert("load_assignment".into(), json!({"cluster_name": w.name, "endpoints": groups.endpoints}));
        }
        if !common_lb.is_empty() {
            c.insert("common_lb_config".into(), Value::Object(common_lb));
        }

        // Upstream TLS.
        if let Some(ts) = self.upstream_tls(w, policy.tls.as_ref()) {
            c.insert("transport_socket".into(), ts);
        }
        Value::Object(c)
    }

    /// A Kubernetes Service's endpoints (istiod's kube registry): the ready addresses of its
    /// Endpoints/EndpointSlices, on the endpoint port named like the service port (else its
    /// `targetPort`), labelled by the Pod with that IP so subsets can select them — STATIC. With
    /// no endpoints given: STRICT_DNS on the service name (ExternalName: the external name), and
    /// a subset then cannot be told apart from the whole service.
    fn kube_endpoints(
        &mut self,
        w: &Want,
        svc: &crate::k8s::Service,
        subset: Option<&BTreeMap<String, String>>,
    ) -> (&'static str, Vec<Endpoint>) {
        let sp = svc.ports.iter().find(|p| p.port == w.port);
        let sets: Vec<&crate::k8s::EndpointSet> =
            self.kube.endpoint_sets.get(&(svc.namespace.as_str(), svc.name.as_str())).cloned().unwrap_or_default();
        if svc.external_name.is_some() || sets.is_empty() {
            let address = svc.external_name.clone().unwrap_or_else(|| w.host.clone());
            if subset.is_some() && svc.external_name.is_none() {
                self.note(format!(
                    "Service {}/{} has no Endpoints or EndpointSlice: its subset clusters resolve {address} by DNS \
                     and cannot keep to a subset's pods (give its EndpointSlices and Pods to tell subsets apart)",
                    svc.namespace, svc.name
                ));
            }
            let port =
                if svc.external_name.is_some() { w.port } else { sp.and_then(|p| p.target_port).unwrap_or(w.port) };
            let ep = Endpoint { address, port, labels: BTreeMap::new(), locality: None, weight: 1 };
            return ("STRICT_DNS", vec![ep]);
        }
        let mut out = Vec::new();
        for set in sets {
            let port = match (sp, set.ports.as_slice()) {
                (_, [(_, only)]) => *only,
                (Some(p), ports) => {
                    ports.iter().find(|(n, _)| *n == p.name).map(|(_, n)| *n).or(p.target_port).unwrap_or(w.port)
                }
                (None, _) => w.port,
            };
            for a in &set.addresses {
                if !a.ready || a.ip.parse::<IpAddr>().is_err() {
                    continue;
                }
                // The Pod named by targetRef, else the Pod with that IP.
                let ns = svc.namespace.as_str();
                let pod = match &a.pod {
                    Some(name) => self.kube.pods_by_name.get(&(ns, name.as_str())),
                    None => self.kube.pods_by_ip.get(&(ns, a.ip.as_str())),
                };
                let labels = pod.map(|p| p.labels.clone()).unwrap_or_default();
                out.push(Endpoint { address: a.ip.clone(), port, labels, locality: None, weight: 1 });
            }
        }
        if let Some(labels) = subset {
            out.retain(|e| crate::labels::selects(labels, &e.labels));
        }
        ("STATIC", out)
    }

    fn endpoints(&mut self, w: &Want, se: Option<(&Resource, &crd::ServiceEntry)>, resolution: &str) -> Vec<Endpoint> {
        let Some((se_res, se)) = se else {
            return vec![Endpoint {
                address: w.host.clone(),
                port: w.port,
                labels: BTreeMap::new(),
                locality: None,
                weight: 1,
            }];
        };
        let port = se.ports.iter().find(|p| p.number == w.port);
        if port.is_none() {
            self.note(format!("{}: ServiceEntry {} declares no port {}", w.name, se_res.key(), w.port));
        }
        let target = |we: &crd::WorkloadEntry| -> u32 {
            port.and_then(|p| we.ports.get(&p.name).copied()).or(port.and_then(|p| p.target_port)).unwrap_or(w.port)
        };
        let mut raw: Vec<crd::WorkloadEntry> = se.endpoints.clone();
        if let Some(sel) = &se.workload_selector {
            raw.extend(self.workload_entries.selected(&se_res.namespace, &sel.match_labels).cloned());
        }
        if raw.is_empty() && resolution != "STATIC" {
            // DNS without endpoints: the host itself.
            return vec![Endpoint {
                address: w.host.clone(),
                port: port.and_then(|p| p.target_port).unwrap_or(w.port),
                labels: BTreeMap::new(),
                locality: None,
                weight: 1,
            }];
        }
        let mut out = Vec::new();
        for we in &raw {
            let Some(addr) = we.address.clone().filter(|a| !a.is_empty()) else {
                self.note(format!("{}: an endpoint without address is skipped", w.name));
                continue;
            };
            if resolution == "STATIC" && addr.parse::<IpAddr>().is_err() && !addr.starts_with("unix://") {
                self.note(format!("{}: STATIC endpoint {addr:?} is not an IP address; skipped", w.name));
                continue;
            }
            out.push(Endpoint {
                address: addr,
                port: target(we),
                labels: we.labels.clone(),
                locality: we.locality.clone().filter(|l| !l.is_empty()),
                weight: we.weight.filter(|w| *w > 0).unwrap_or(1),
            });
        }
        out
    }

    /// Groups endpoints by locality and applies `localityLbSetting` like istio
    /// `ApplyLocalityLoadBalancer`: `distribute` sets locality weights (dropping localities it
    /// does not name), otherwise — with outlier detection only — failover priorities by
    /// proximity to the proxy's locality.
    fn locality_groups(
        &mut self,
        cluster: &str,
        endpoints: Vec<Endpoint>,
        setting: Option<&crd::LocalityLbSetting>,
        outlier: bool,
    ) -> Groups {
        let mut groups: Vec<Group> = Vec::new();
        for e in endpoints {
            let loc = Locality::parse(e.locality.as_deref().unwrap_or(""));
            match groups.iter_mut().find(|g| g.locality == loc) {
                Some(g) => g.endpoints.push(e),
                None => groups.push(Group { locality: loc, endpoints: vec![e], weight: 0, priority: 0 }),
            }
        }
        for g in &mut groups {
            g.weight = g.endpoints.iter().map(|e| e.weight).sum();
        }
        let proxy = Locality::parse(self.settings.locality.as_deref().unwrap_or(""));
        let mut weighted = false;
        if let Some(s) = setting {
            if !s.distribute.is_empty() {
                weighted = true;
                if let Some(rule) = s.distribute.iter().find(|d| proxy.matches(&d.from)) {
                    let mut unmatched: Vec<bool> = vec![true; groups.len()];
                    let mut new_weights: Vec<Option<u32>> = vec![None; groups.len()];
                    for (to, weight) in &rule.to {
                        let matched: Vec<usize> =
                            (0..groups.len()).filter(|i| unmatched[*i] && groups[*i].locality.matches(to)).collect();
                        let total: u64 = matched.iter().map(|i| u64::from(groups[*i].weight)).sum();
                        for i in matched {
                            unmatched[i] = false;
                            if total > 0 {
                                let w = (u64::from(groups[i].weight) * u64::from(*weight)).div_ceil(total);
                                if w > 0 {
                                    new_weights[i] = Some(u32::try_from(w).unwrap_or(u32::MAX));
                                }
                            }
                        }
                    }
                    let mut kept = Vec::new();
                    for (i, mut g) in groups.into_iter().enumerate() {
                        if unmatched[i] {
                            continue;
                        }
                        if let Some(w) = new_weights[i] {
                            g.weight = w;
                        }
                        kept.push(g);
                    }
                    groups = kept;
                } else {
                    self.note(format!(
                        "{cluster}: no localityLbSetting.distribute entry matches the proxy's locality {:?} \
                         (settings.locality); weights unchanged",
                        self.settings.locality.as_deref().unwrap_or("")
                    ));
                }
            } else if outlier {
                if !s.failover_priority.is_empty() {
                    self.note(format!("{cluster}: localityLbSetting.failoverPriority is not supported; ignored"));
                }
                weighted = !s.failover.is_empty();
                failover(&mut groups, &proxy, &s.failover);
            }
        } else if outlier {
            // The mesh default enables locality failover once outlier detection is on.
            failover(&mut groups, &proxy, &[]);
        }
        let endpoints = groups
            .iter()
            .map(|g| {
                let mut m = Map::new();
                if let Some(l) = g.locality.to_json() {
                    m.insert("locality".into(), l);
                }
                m.insert(
                    "lb_endpoints".into(),
                    Value::Array(
                        g.endpoints
                            .iter()
                            .map(|e| json!({"endpoint": {"address": address(&e.address, e.port)}, "load_balancing_weight": e.weight}))
                            .collect(),
                    ),
                );
                m.insert("load_balancing_weight".into(), json!(g.weight.max(1)));
                if g.priority > 0 {
                    m.insert("priority".into(), json!(g.priority));
                }
                Value::Object(m)
            })
            .collect();
        Groups { endpoints, weighted }
    }

    fn upstream_tls(&mut self, w: &Want, tls: Option<&crd::ClientTlsSettings>) -> Option<Value> {
        let tls = tls?;
        let mode = tls.mode.as_deref().unwrap_or("DISABLE");
        match mode {
            "DISABLE" => return None,
            "ISTIO_MUTUAL" => {
                self.note(format!(
                    "{}: tls.mode ISTIO_MUTUAL needs the mesh's workload certificates (istiod), which a standalone \
                     Envoy does not have; connecting in plain text. Use SIMPLE or MUTUAL with certificate files",
                    w.name
                ));
                return None;
            }
            "SIMPLE" | "MUTUAL" => {}
            other => {
                self.note(format!("{}: tls.mode {other} is not supported; connecting in plain text", w.name));
                return None;
            }
        }
        let mut common = Map::new();
        let from_credential = tls.credential_name.as_ref().and_then(|n| self.credential_files(&w.name, n));
        if mode == "MUTUAL" {
            let (cert, key) = match (&from_credential, &tls.client_certificate, &tls.private_key) {
                (Some((c, k, _)), _, _) => (Some(c.clone()), Some(k.clone())),
                (None, c, k) => (c.clone(), k.clone()),
            };
            match (cert, key) {
                (Some(c), Some(k)) => {
                    common.insert(
                        "tls_certificates".into(),
                        json!([{"certificate_chain": {"filename": c}, "private_key": {"filename": k}}]),
                    );
                }
                _ => self.note(format!(
                    "{}: tls.mode MUTUAL without clientCertificate/privateKey (or credentialName with \
                     --credentials-dir); no client certificate is sent",
                    w.name
                )),
            }
        }
        if tls.insecure_skip_verify != Some(true) {
            let ca = tls
                .ca_certificates
                .clone()
                .filter(|c| !c.is_empty())
                .or_else(|| from_credential.as_ref().and_then(|(_, _, ca)| ca.clone()))
                .or_else(|| {
                    let system = "/etc/ssl/certs/ca-certificates.crt";
                    Path::new(system).exists().then(|| system.to_string())
                });
            match ca {
                Some(ca) => {
                    let mut v = Map::new();
                    v.insert("trusted_ca".into(), json!({"filename": ca}));
                    if !tls.subject_alt_names.is_empty() {
                        v.insert(
                            "match_typed_subject_alt_names".into(),
                            Value::Array(
                                tls.subject_alt_names
                                    .iter()
                                    .map(|s| json!({"san_type": "DNS", "matcher": {"exact": s}}))
                                    .collect(),
                            ),
                        );
                    }
                    common.insert("validation_context".into(), Value::Object(v));
                }
                None => self.note(format!(
                    "{}: no CA bundle (tls.caCertificates) and no system bundle found; the server certificate is not \
                     verified",
                    w.name
                )),
            }
        }
        let mut ctx = Map::new();
        ctx.insert(
            "@type".into(),
            json!("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"),
        );
        let sni =
            tls.sni.clone().filter(|s| !s.is_empty()).or_else(|| (!w.host.starts_with('*')).then(|| w.host.clone()));
        if let Some(s) = sni {
            ctx.insert("sni".into(), json!(s));
        }
        ctx.insert("common_tls_context".into(), Value::Object(common));
        Some(json!({"name": "envoy.transport_sockets.tls", "typed_config": ctx}))
    }

    /// `credentialName: NAME` → `<dir>/NAME.crt`, `<dir>/NAME.key` and, if present,
    /// `<dir>/NAME-cacert.crt` (Istio's `<name>-cacert` secret convention).
    pub fn credential_files(&mut self, what: &str, name: &str) -> Option<(String, String, Option<String>)> {
        let Some(dir) = self.credentials_dir else {
            self.note(format!(
                "{what}: credentialName {name:?} needs --credentials-dir DIR holding {name}.crt and {name}.key"
            ));
            return None;
        };
        let file = |ext: &str| dir.join(format!("{name}{ext}")).display().to_string();
        let (crt, key, ca) = (file(".crt"), file(".key"), file("-cacert.crt"));
        for f in [&crt, &key] {
            if !Path::new(f).exists() {
                self.note(format!("{what}: credential file {f} does not exist"));
            }
        }
        let ca = Path::new(&ca).exists().then_some(ca);
        Some((crt, key, ca))
    }
}

struct Group {
    locality: Locality,
    endpoints: Vec<Endpoint>,
    weight: u32,
    priority: u32,
}

struct Groups {
    endpoints: Vec<Value>,
    weighted: bool,
}

/// istio `applyLocalityFailover`: priority 0 same subzone, 1 same zone, 2 same region, 3 other
/// regions (4 when a `failover` rule for the proxy's region names another target), then
/// renumbered without gaps.
fn failover(groups: &mut [Group], proxy: &Locality, rules: &[crd::LocalityFailover]) {
    for g in groups.iter_mut() {
        let mut p = proxy.priority_of(&g.locality);
        if p == 3 {
            if let Some(rule) = rules.iter().find(|r| r.from == proxy.region) {
                if g.locality.region != rule.to {
                    p = 4;
                }
            }
        }
        g.priority = p;
    }
    let mut used: Vec<u32> = groups.iter().map(|g| g.priority).collect();
    used.sort_unstable();
    used.dedup();
    for g in groups.iter_mut() {
        g.priority = used.iter().position(|p| *p == g.priority).unwrap_or(0) as u32;
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Locality {
    region: String,
    zone: String,
    subzone: String,
}

impl Locality {
    fn parse(s: &str) -> Locality {
        let mut parts = s.splitn(3, '/');
        Locality {
            region: parts.next().unwrap_or("").to_string(),
            zone: parts.next().unwrap_or("").to_string(),
            subzone: parts.next().unwrap_or("").to_string(),
        }
    }

    /// istio `util.LocalityMatch`: `region/zone/subzone` with `*` (or an omitted tail) matching
    /// anything.
    fn matches(&self, rule: &str) -> bool {
        let r = Locality::parse(rule);
        let any = |p: &str| p == "*";
        (any(&r.region) || r.region == self.region)
            && (any(&r.zone) || r.zone.is_empty() || r.zone == self.zone)
            && (any(&r.subzone) || r.subzone.is_empty() || r.subzone == self.subzone)
    }

    /// istio `util.LbPriority`.
    fn priority_of(&self, other: &Locality) -> u32 {
        if self.region == other.region {
            if self.zone == other.zone {
                if self.subzone == other.subzone {
                    return 0;
                }
                return 1;
            }
            return 2;
        }
        3
    }

    fn to_json(&self) -> Option<Value> {
        if self.region.is_empty() && self.zone.is_empty() && self.subzone.is_empty() {
            return None;
        }
        let mut m = Map::new();
        for (k, v) in [("region", &self.region), ("zone", &self.zone), ("sub_zone", &self.subzone)] {
            if !v.is_empty() {
                m.insert(k.into(), json!(v));
            }
        }
        Some(Value::Object(m))
    }
}

pub fn address(addr: &str, port: u32) -> Value {
    match addr.strip_prefix("unix://") {
        Some(path) => json!({"pipe": {"path": path}}),
        None => json!({"socket_address": {"address": addr, "port_value": port}}),
    }
}

fn outlier_detection(od: &crd::OutlierDetection) -> Value {
    let mut o = Map::new();
    o.insert("enforcing_success_rate".into(), json!(0));
    let enforce = |v: u64| if v > 0 { 100 } else { 0 };
    // `consecutiveErrors` is the deprecated spelling of `consecutive5xxErrors`.
    if let Some(v) = od.consecutive_5xx_errors.or(od.consecutive_errors) {
        let v = v.max(0) as u64;
        o.insert("consecutive_5xx".into(), json!(v));
        o.insert("enforcing_consecutive_5xx".into(), json!(enforce(v)));
    }
    if let Some(v) = od.consecutive_gateway_errors {
        let v = v.max(0) as u64;
        o.insert("consecutive_gateway_failure".into(), json!(v));
        o.insert("enforcing_consecutive_gateway_failure".into(), json!(enforce(v)));
    }
    if let Some(i) = od.interval.as_deref().and_then(duration) {
        o.insert("interval".into(), json!(i));
    }
    if let Some(b) = od.base_ejection_time.as_deref().and_then(duration) {
        o.insert("base_ejection_time".into(), json!(b));
    }
    if let Some(m) = od.max_ejection_percent.filter(|m| *m > 0) {
        o.insert("max_ejection_percent".into(), json!(m.min(100)));
    }
    if od.split_external_local_origin_errors == Some(true) {
        o.insert("split_external_local_origin_errors".into(), json!(true));
        if let Some(n) = od.consecutive_local_origin_failures.filter(|n| *n > 0) {
            o.insert("consecutive_local_origin_failure".into(), json!(n));
            o.insert("enforcing_consecutive_local_origin_failure".into(), json!(100));
        }
        o.insert("enforcing_local_origin_success_rate".into(), json!(0));
    }
    Value::Object(o)
}

/// `warmup` (or the older `warmupDurationSecs`) → Envoy `slow_start_config`.
fn slow_start(lb: &crd::LoadBalancerSettings) -> Option<Value> {
    if let Some(w) = &lb.warmup {
        let mut s = Map::new();
        s.insert("slow_start_window".into(), json!(w.duration.as_deref().and_then(duration)?));
        if let Some(a) = w.aggression {
            s.insert(
                "aggression".into(),
                json!({"default_value": a, "runtime_key": "meshroute.slow_start.aggression"}),
            );
        }
        if let Some(m) = w.minimum_percent {
            s.insert("min_weight_percent".into(), json!({"value": m}));
        }
        return Some(Value::Object(s));
    }
    let d = lb.warmup_duration_secs.as_deref().and_then(duration)?;
    Some(json!({"slow_start_window": d}))
}

fn parse_duration(s: &str) -> Option<Duration> {
    crate::duration::parse(s).ok()
}

/// A Go duration string as a protobuf-JSON duration (`"1.5s"`).
/// One `RouteAction.HashPolicy` from a DestinationRule's `consistentHash` (istio
/// `ConsistentHashToHashPolicy`); none for a hash without a key (ring or maglev settings only).
fn hash_key(ch: &crd::ConsistentHash) -> Option<Value> {
    if let Some(h) = &ch.http_header_name {
        Some(json!({"header": {"header_name": h}}))
    } else if let Some(c) = &ch.http_cookie {
        let mut cookie = Map::new();
        cookie.insert("name".into(), json!(c.name));
        if let Some(p) = &c.path {
            cookie.insert("path".into(), json!(p));
        }
        if let Some(ttl) = c.ttl.as_deref().and_then(duration) {
            cookie.insert("ttl".into(), json!(ttl));
        }
        Some(json!({"cookie": cookie}))
    } else if ch.use_source_ip == Some(true) {
        Some(json!({"connection_properties": {"source_ip": true}}))
    } else {
        ch.http_query_parameter_name.as_ref().map(|q| json!({"query_parameter": {"name": q}}))
    }
}

pub fn duration(s: &str) -> Option<String> {
    let d = parse_duration(s)?;
    Some(proto_duration(d))
}

pub fn proto_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        let s = format!("{}.{:09}", d.as_secs(), d.subsec_nanos());
        format!("{}s", s.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(v: Value) -> crd::TrafficPolicy {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn subset_blocks_replace_whole_blocks_and_port_level_replaces_all() {
        let top = tp(json!({"loadBalancer": {"simple": "RANDOM"}, "connectionPool": {"tcp": {"maxConnections": 5}},
                            "portLevelSettings": [{"port": {"number": 9080}, "loadBalancer": {"simple": "ROUND_ROBIN"}}]}));
        let sub = tp(json!({"outlierDetection": {"consecutive5xxErrors": 2}}));
        let p = merge_policy(Some(&top), Some(&sub), 80);
        assert_eq!(p.load_balancer.unwrap().simple.as_deref(), Some("RANDOM"));
        assert_eq!(p.outlier_detection.unwrap().consecutive_5xx_errors, Some(2));
        let on_port = merge_policy(Some(&top), None, 9080);
        assert_eq!(on_port.load_balancer.unwrap().simple.as_deref(), Some("ROUND_ROBIN"));
        assert!(on_port.connection_pool.is_none(), "port-level settings are not inherited");
        let sub_port = tp(json!({"portLevelSettings": [{"port": {"number": 80}, "tls": {"mode": "SIMPLE"}}]}));
        let p = merge_policy(Some(&top), Some(&sub_port), 80);
        assert!(p.load_balancer.is_none() && p.tls.is_some());
    }

    #[test]
    fn locality_rules_match_like_istio() {
        let l = Locality::parse("us-west-2/zone-a/sz1");
        assert!(l.matches("us-west-2/*"));
        assert!(l.matches("us-west-2"));
        assert!(l.matches("*"));
        assert!(!l.matches("us-east-1/*"));
        assert!(l.matches("us-west-2/zone-a/*"));
        assert!(!l.matches("us-west-2/zone-b"));
        assert_eq!(l.priority_of(&Locality::parse("us-west-2/zone-a/sz1")), 0);
        assert_eq!(l.priority_of(&Locality::parse("us-west-2/zone-b")), 2);
        assert_eq!(l.priority_of(&Locality::parse("eu/x")), 3);
    }

    #[test]
    fn failover_priorities_are_renumbered_without_gaps() {
        let mk = |l: &str| Group { locality: Locality::parse(l), endpoints: vec![], weight: 1, priority: 0 };
        let mut g = vec![mk("r1/z1"), mk("r2/z1"), mk("r1/z2"), mk("r3/z1")];
        failover(&mut g, &Locality::parse("r1/z1"), &[crd::LocalityFailover { from: "r1".into(), to: "r3".into() }]);
        let p: Vec<u32> = g.iter().map(|g| g.priority).collect();
        // same zone 0, same region 2 → 1, failover target r3 (3) → 2, other region (4) → 3.
        assert_eq!(p, vec![0, 3, 1, 2]);
    }

    #[test]
    fn durations_are_protobuf_json() {
        assert_eq!(duration("10s").as_deref(), Some("10s"));
        assert_eq!(duration("1.5s").as_deref(), Some("1.5s"));
        assert_eq!(duration("100ms").as_deref(), Some("0.1s"));
        assert_eq!(duration("1h").as_deref(), Some("3600s"));
    }
}
