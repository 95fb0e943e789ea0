//! TCP and TLS listeners as istiod builds them (docs/semantics.md R190–R199, R230–R239): the
//! sidecar's outbound listener per TCP/TLS service port with `tcp_proxy` filter chains from the
//! VirtualServices' `tcp` and `tls` routes (`LISTENER buildSidecarOutboundListener`,
//! `TLSCHAIN buildSidecarOutboundTLSFilterChainOpts`, `TLSCHAIN buildSidecarOutboundTCPFilterChainOpts`,
//! `NETFILTER buildOutboundNetworkFilters`), Sidecar egress listeners with a port, and a Gateway's TCP,
//! TLS and passthrough servers (`GW buildGatewayTCPBasedFilterChains`,
//! `GW createGatewayTCPFilterChainOpts`, `GW builtAutoPassthroughFilterChains`).
//!
//! The HTTP side (one listener with the meshroute filter) is `super`; this module only adds
//! listeners with network filters, and names the clusters they use so that `super` builds them.

use super::cluster::{address, duration, Builder};
use crate::compile::ClusterRef;
use crate::config::Resource;
use crate::crd;
use crate::host;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

const TCP_PROXY: &str = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
const MONGO_PROXY: &str = "type.googleapis.com/envoy.extensions.filters.network.mongo_proxy.v3.MongoProxy";
const TLS_INSPECTOR: &str = "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector";

/// Istio's mTLS ALPNs (`allIstioMtlsALPNs`, `pilot/pkg/networking/core/listener.go`): an
/// AUTO_PASSTHROUGH chain only takes connections that offer one of them.
const ISTIO_MTLS_ALPNS: [&str; 5] = ["istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2"];

/// What this module adds to the translation.
#[derive(Debug, Default)]
pub struct L4 {
    /// Envoy `Listener`s, complete.
    pub listeners: Vec<Value>,
    /// The clusters their `tcp_proxy` filters name (built by `super` with the rest).
    pub clusters: Vec<ClusterRef>,
    /// The Sidecar ingress listeners' `inbound|PORT||` clusters, complete (`super::inbound`).
    pub inbound_clusters: Vec<Value>,
}

/// istiod's listener protocol class (`ModelProtocolToListenerProtocol`) of a port protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// HTTP family: the meshroute HTTP listener serves it.
    Http,
    /// TCP, or TLS when `tls` (HTTPS, TLS): a `tcp_proxy` listener.
    Tcp { tls: bool, mongo: bool },
    /// Sniffed (unknown protocol) or UDP: no TCP listener here.
    Other,
}

fn class(protocol: &str) -> Class {
    match protocol.to_ascii_lowercase().as_str() {
        "http" | "http2" | "grpc" | "grpc-web" | "http_proxy" => Class::Http,
        "https" | "tls" => Class::Tcp { tls: true, mongo: false },
        "mongo" => Class::Tcp { tls: false, mongo: true },
        "tcp" | "redis" | "mysql" => Class::Tcp { tls: false, mongo: false },
        _ => Class::Other,
    }
}

/// Is this Gateway server built from network filters (TCP, TLS, or passthrough HTTPS) rather than
/// an HTTP connection manager (`gateway.IsHTTPSServerWithTLSTermination`, `protocol.IsHTTP`)?
pub fn is_l4_server(s: &crd::Server) -> bool {
    let protocol = s.port.as_ref().map(|p| p.protocol.as_str()).unwrap_or_default();
    match class(protocol) {
        Class::Http => false,
        Class::Tcp { tls: true, .. } if protocol.eq_ignore_ascii_case("HTTPS") => passthrough(s),
        Class::Tcp { .. } => true,
        Class::Other => false,
    }
}

/// `gateway.IsPassThroughServer`.
fn passthrough(s: &crd::Server) -> bool {
    matches!(s.tls.as_ref().and_then(|t| t.mode.as_deref()), Some("PASSTHROUGH" | "AUTO_PASSTHROUGH"))
}

/// What makes two filter chain matches the same: SNI set, CIDR set, ALPNs.
type ChainKey = (Vec<String>, Vec<String>, Vec<&'static str>);

/// One filter chain before rendering (istiod `filterChainOpts`).
#[derive(Debug, Clone)]
struct Chain {
    sni: Vec<String>,
    cidrs: Vec<String>,
    alpn: Vec<&'static str>,
    /// A `DownstreamTlsContext` when the chain terminates TLS.
    tls: Option<Value>,
    filters: Vec<Value>,
    /// Where the chain came from, for notes.
    origin: String,
}

impl Chain {
    /// A chain matched on SNI names and destination CIDRs only (no ALPN), handing the bytes on
    /// as they come (no TLS termination).
    fn forward(sni: Vec<String>, cidrs: Vec<String>, filters: Vec<Value>, origin: String) -> Chain {
        Chain { sni, cidrs, alpn: Vec::new(), tls: None, filters, origin }
    }

    /// istiod `filterChainOpts.conflictsWith`: the same SNI set (without `*`), CIDR set and ALPNs
    /// is the same filter chain match, which Envoy refuses twice.
    fn key(&self) -> ChainKey {
        let mut sni: Vec<String> = self.sni.iter().filter(|s| *s != "*").cloned().collect();
        sni.sort();
        sni.dedup();
        let mut cidrs: Vec<String> =
            self.cidrs.iter().filter_map(|c| cidr(c).map(|(a, n)| format!("{a}/{n}"))).collect();
        cidrs.sort();
        cidrs.dedup();
        (sni, cidrs, self.alpn.clone())
    }

    /// istiod `toFilterChainMatch`.
    fn render(&self) -> Value {
        let (sni, cidrs, alpn) = self.key();
        let mut m = Map::new();
        if !self.sni.iter().any(|s| s == "*") && !sni.is_empty() {
            m.insert("server_names".into(), json!(sni));
        }
        if !cidrs.is_empty() {
            let ranges: Vec<Value> = cidrs
                .iter()
                .filter_map(|c| c.split_once('/'))
                .map(|(a, n)| json!({"address_prefix": a, "prefix_len": n.parse::<u32>().unwrap_or(0)}))
                .collect();
            m.insert("prefix_ranges".into(), json!(ranges));
        }
        if !alpn.is_empty() {
            m.insert("application_protocols".into(), json!(alpn));
        }
        let mut c = Map::new();
        if !m.is_empty() {
            c.insert("filter_chain_match".into(), Value::Object(m));
        }
        c.insert("filters".into(), json!(self.filters));
        if let Some(tls) = &self.tls {
            c.insert("transport_socket".into(), json!({"name": "envoy.transport_sockets.tls", "typed_config": tls}));
        }
        Value::Object(c)
    }

    fn needs_tls_inspector(&self) -> bool {
        self.sni.iter().any(|s| s != "*") || !self.alpn.is_empty()
    }
}

/// An address or CIDR as (masked address, prefix length), 0.0.0.0 dropped
/// (`util.ConvertAddressToCidr`, `toFilterChainMatch`).
fn cidr(s: &str) -> Option<(IpAddr, u32)> {
    let (a, n) = match s.split_once('/') {
        Some((a, n)) => (a.parse::<IpAddr>().ok()?, n.parse::<u32>().ok()?),
        None => {
            let a = s.parse::<IpAddr>().ok()?;
            (a, if a.is_ipv4() { 32 } else { 128 })
        }
    };
    if a.is_unspecified() {
        return None;
    }
    let masked = match a {
        IpAddr::V4(v) => {
            let bits = u32::from(v);
            let mask = if n == 0 { 0 } else { u32::MAX << (32 - n.min(32)) };
            IpAddr::from((bits & mask).to_be_bytes())
        }
        IpAddr::V6(v) => {
            let bits = u128::from(v);
            let mask = if n == 0 { 0 } else { u128::MAX << (128 - n.min(128)) };
            IpAddr::from((bits & mask).to_be_bytes())
        }
    };
    Some((masked, n))
}

/// A listener being assembled: chains merge in the order services come, a later chain with the
/// match of an earlier one is dropped (istiod `mergeTCPFilterChains`).
struct Building {
    name: String,
    bind: String,
    port: u32,
    chains: Vec<Chain>,
    /// Each chain's match, to its index: merging stays linear in the number of chains.
    keys: BTreeMap<ChainKey, usize>,
    /// Made from an explicit Sidecar egress listener: the catch-all one adds nothing to it.
    locked: bool,
}

impl Building {
    fn new(name: String, bind: &str, port: u32) -> Building {
        Building { name, bind: bind.to_string(), port, chains: Vec::new(), keys: BTreeMap::new(), locked: false }
    }

    fn merge(&mut self, b: &mut Builder<'_>, incoming: Vec<Chain>) {
        for c in incoming {
            let key = c.key();
            match self.keys.get(&key).and_then(|&i| self.chains.get(i)) {
                Some(e) => b.note(format!(
                    "listener {}: {} has the same filter chain match as {} (istiod keeps the first); skipped",
                    self.name, c.origin, e.origin
                )),
                None => {
                    self.keys.insert(key, self.chains.len());
                    self.chains.push(c);
                }
            }
        }
    }

    fn render(&self) -> Value {
        let mut l = Map::new();
        l.insert("name".into(), json!(self.name));
        l.insert("address".into(), address(&self.bind, self.port));
        if self.chains.iter().any(Chain::needs_tls_inspector) {
            l.insert(
                "listener_filters".into(),
                json!([{"name": "envoy.filters.listener.tls_inspector", "typed_config": {"@type": TLS_INSPECTOR}}]),
            );
        }
        l.insert("filter_chains".into(), Value::Array(self.chains.iter().map(Chain::render).collect()));
        Value::Object(l)
    }
}

/// The listeners being built, by (bind, port).
#[derive(Default)]
struct Listeners {
    list: Vec<Building>,
    by_addr: BTreeMap<(String, u32), usize>,
}

/// A VirtualService with its hosts as FQDNs.
type MeshVs<'a> = (&'a Resource, &'a crd::VirtualService, Vec<String>);

/// The sidecar's L4 VirtualServices, indexed by exact host (wildcard hosts are matched one by
/// one), so finding a service's VirtualServices does not scan them all.
struct VsIndex<'a> {
    all: Vec<MeshVs<'a>>,
    exact: BTreeMap<String, Vec<usize>>,
    wildcard: Vec<usize>,
}

impl<'a> VsIndex<'a> {
    fn new(all: Vec<MeshVs<'a>>) -> Self {
        let (mut exact, mut wildcard): (BTreeMap<String, Vec<usize>>, Vec<usize>) = (BTreeMap::new(), Vec::new());
        for (i, (_, _, hosts)) in all.iter().enumerate() {
            for h in hosts {
                if h.starts_with('*') {
                    if wildcard.last() != Some(&i) {
                        wildcard.push(i);
                    }
                } else {
                    let e = exact.entry(h.to_ascii_lowercase()).or_default();
                    if e.last() != Some(&i) {
                        e.push(i);
                    }
                }
            }
        }
        VsIndex { all, exact, wildcard }
    }

    /// The VirtualServices with a host matching `h`, in input order.
    fn for_host(&self, h: &str) -> Vec<&MeshVs<'a>> {
        let mut idx: BTreeSet<usize> = self.exact.get(&h.to_ascii_lowercase()).into_iter().flatten().copied().collect();
        idx.extend(self.wildcard.iter().copied().filter(|&i| self.all[i].2.iter().any(|p| host::matches(p, h))));
        idx.into_iter().map(|i| &self.all[i]).collect()
    }
}

/// One port of a registry service, as the outbound listeners see it.
#[derive(Debug, Clone)]
struct SvcPort {
    host: String,
    namespace: String,
    port: u32,
    protocol: String,
    /// The service's only port, if it has one (`GetDestinationCluster`).
    only_port: Option<u32>,
    /// ServiceEntry `addresses` (the service's VIPs or CIDRs); empty for none.
    addresses: Vec<String>,
    /// `location: MESH_EXTERNAL` (AUTO_PASSTHROUGH skips those).
    external: bool,
}

/// Everything the translation of the proxy's L4 side needs, around the cluster builder.
struct Cx<'b, 'a> {
    b: &'b mut Builder<'a>,
    clusters: BTreeMap<String, ClusterRef>,
    /// Each ServiceEntry host's only port (`None`: several), first declaration wins as in
    /// `Builder::service_entry`: a destination's port is looked up without scanning every entry.
    only_ports: BTreeMap<String, Option<u32>>,
}

/// Builds every L4 listener of this proxy: the sidecar's (settings.gateway `mesh`) or those of the
/// Gateway it implements, on `ip` (the `--listen` address; `http_port` is taken by the HTTP
/// listener of a sidecar).
pub fn listeners(b: &mut Builder<'_>, ip: IpAddr, http_port: u16) -> L4 {
    let mut only_ports = BTreeMap::new();
    for (r, se) in b.visible_service_entries() {
        for h in &se.hosts {
            let only = (se.ports.len() == 1).then(|| se.ports[0].number);
            only_ports.entry(b.fqdn(h, &r.namespace)).or_insert(only);
        }
    }
    let mut cx = Cx { b, clusters: BTreeMap::new(), only_ports };
    let mut inbound_clusters = Vec::new();
    let listeners = if cx.b.settings.gateway == "mesh" {
        let mut listeners = cx.sidecar(ip, http_port);
        let (l, c) = super::inbound::listeners(cx.b, ip);
        listeners.extend(l);
        inbound_clusters = c;
        listeners
    } else {
        cx.gateway(ip)
    };
    L4 { listeners, clusters: cx.clusters.into_values().collect(), inbound_clusters }
}

impl<'a> Cx<'_, 'a> {
    // === services and VirtualServices ===

    /// The registry's services as the proxy sees them (exportTo, Sidecar imports): ServiceEntries
    /// in input order, then Kubernetes Services (istiod orders by creation time, which the input
    /// does not carry).
    fn services(&self) -> Vec<SvcPort> {
        let s = self.b.settings;
        let mut out = Vec::new();
        for (r, se) in self.b.visible_service_entries() {
            for h in &se.hosts {
                let h = self.b.fqdn(h, &r.namespace);
                for p in &se.ports {
                    out.push(SvcPort {
                        host: h.clone(),
                        namespace: r.namespace.clone(),
                        port: p.number,
                        protocol: p.protocol.clone().unwrap_or_default(),
                        only_port: (se.ports.len() == 1).then_some(p.number),
                        addresses: se.addresses.clone(),
                        external: se.location.as_deref() == Some("MESH_EXTERNAL"),
                    });
                }
            }
        }
        for svc in &self.b.bundle.registry.services {
            if !crate::visibility::visible(&svc.export_to, &s.default_service_export_to, &svc.namespace, &s.namespace) {
                continue;
            }
            // An ExternalName Service is an alias of its target (K14): no listener or cluster of its own.
            if svc.external_name.is_some() {
                continue;
            }
            let h = svc.host(&s.domain_suffix);
            for p in &svc.ports {
                out.push(SvcPort {
                    host: h.clone(),
                    namespace: svc.namespace.clone(),
                    port: p.port,
                    protocol: p.protocol.clone(),
                    only_port: (svc.ports.len() == 1).then_some(p.port),
                    addresses: Vec::new(),
                    external: false,
                });
            }
        }
        out
    }

    /// The VirtualServices of the sidecar (bound to `mesh`, exported to the proxy's namespace),
    /// in input order, with their hosts as FQDNs.
    fn mesh_virtual_services(&self) -> Vec<(&'a Resource, &'a crd::VirtualService, Vec<String>)> {
        let s = self.b.settings;
        let bundle: &'a crate::config::Bundle = self.b.bundle;
        bundle
            .virtual_services()
            .filter(|(r, vs)| {
                (vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh"))
                    && crate::visibility::visible(
                        &vs.export_to,
                        &s.default_virtual_service_export_to,
                        &r.namespace,
                        &s.namespace,
                    )
                    && (!vs.tcp.is_empty() || !vs.tls.is_empty())
            })
            .map(|(r, vs)| (r, vs, vs.hosts.iter().map(|h| self.b.fqdn(h, &r.namespace)).collect()))
            .collect()
    }

    // === the sidecar ===

    fn sidecar(&mut self, ip: IpAddr, http_port: u16) -> Vec<Value> {
        let bind = ip.to_string();
        let services = self.services();
        let vss = VsIndex::new(self.mesh_virtual_services());
        let bundle: &'a crate::config::Bundle = self.b.bundle;
        let sidecar = crate::compile::applicable_sidecar(bundle);
        let mut built = Listeners::default();
        // Explicit egress listeners first (istiod `buildSidecarOutboundListeners`), each with only
        // the services its hosts import; then the catch-all one (or the default, everything
        // imported) for every other port.
        let egress: Vec<&crd::IstioEgressListener> =
            sidecar.map(|(_, sc)| sc.egress.iter().collect()).unwrap_or_default();
        for (i, e) in egress.iter().enumerate() {
            let Some(port) = &e.port else { continue };
            let Some((sres, _)) = sidecar else { continue };
            let what = format!("Sidecar {}/{} egress[{i}]", sres.namespace, sres.name);
            match class(&port.protocol) {
                Class::Tcp { .. } => {}
                Class::Http => {
                    self.b.note(format!(
                        "{what}: HTTP port {}: not a listener of its own; the one HTTP listener serves every \
                         HTTP port (R234)",
                        port.number
                    ));
                    continue;
                }
                Class::Other => {
                    self.b
                        .note(format!("{what}: port {} protocol {:?}: no listener (R234)", port.number, port.protocol));
                    continue;
                }
            }
            let bind = match e.bind.as_deref() {
                Some(b) if b.starts_with("unix://") => {
                    self.b.note(format!("{what}: bind {b}: unix domain sockets are not generated (R234)"));
                    continue;
                }
                Some(b) => b.to_string(),
                None => bind.clone(),
            };
            let imported: Vec<&SvcPort> =
                services.iter().filter(|sp| egress_imports(e, &sres.namespace, &sp.namespace, &sp.host)).collect();
            // One service per host (its ports only decide the cluster port).
            let mut seen: BTreeSet<&str> = BTreeSet::new();
            let hosts: Vec<&SvcPort> = imported.into_iter().filter(|sp| seen.insert(sp.host.as_str())).collect();
            let vss_here = VsIndex::new(
                vss.all
                    .iter()
                    .filter(|(r, _, hs)| hs.iter().any(|h| egress_imports(e, &sres.namespace, &r.namespace, h)))
                    .cloned()
                    .collect(),
            );
            for sp in hosts {
                let listen = SvcPort { port: port.number, protocol: port.protocol.clone(), ..sp.clone() };
                self.outbound(&mut built, &bind, &listen, &vss_here, http_port, true);
            }
        }
        for b in &mut built.list {
            b.locked = true;
        }
        let catch_all = egress.iter().find(|e| e.port.is_none());
        for sp in &services {
            let imported = match (sidecar, catch_all) {
                (None, _) => true,
                (Some((sres, sc)), _) if sc.egress.is_empty() => {
                    crate::compile::sidecar_imports(sc, &sres.namespace, &sp.namespace, &sp.host)
                }
                (Some((sres, _)), Some(e)) => egress_imports(e, &sres.namespace, &sp.namespace, &sp.host),
                (Some(_), None) => false,
            };
            if imported {
                self.outbound(&mut built, &bind, sp, &vss, http_port, false);
            }
        }
        built.list.into_iter().filter(|l| !l.chains.is_empty()).map(|l| l.render()).collect()
    }

    /// istiod `buildSidecarOutboundListener` for one service port (TCP family only): the listener
    /// `0.0.0.0_PORT` becomes `IP_PORT` on the `--listen` IP; chains merge into it.
    fn outbound(
        &mut self,
        built: &mut Listeners,
        bind: &str,
        sp: &SvcPort,
        vss: &VsIndex<'_>,
        http_port: u16,
        explicit: bool,
    ) {
        let Class::Tcp { tls, mongo } = class(&sp.protocol) else { return };
        if sp.host.starts_with('*') {
            self.b.note(format!("{} port {}: a wildcard host gets no TCP listener (R191)", sp.host, sp.port));
            return;
        }
        if sp.port == u32::from(http_port) {
            self.b.note(format!(
                "{} port {}: the HTTP listener already uses this port; no TCP listener (R191)",
                sp.host, sp.port
            ));
            return;
        }
        let idx = match built.by_addr.get(&(bind.to_string(), sp.port)).copied() {
            Some(i) if built.list[i].locked && !explicit => return,
            Some(i) => i,
            None => {
                built.list.push(Building::new(format!("{bind}_{}", sp.port), bind, sp.port));
                built.by_addr.insert((bind.to_string(), sp.port), built.list.len() - 1);
                built.list.len() - 1
            }
        };
        // CIDR addresses become filter chain matches; a plain VIP is not a bindable address here,
        // so its service is served by the listener on the --listen IP (R191).
        let cidrs: Vec<String> = sp.addresses.iter().filter(|a| a.contains('/')).cloned().collect();
        let has_vip = sp.addresses.iter().any(|a| !a.contains('/'));
        let for_host = vss.for_host(&sp.host);
        let chains = if tls {
            self.tls_chains(sp, &cidrs, has_vip, &for_host)
        } else {
            self.tcp_chains(sp, &cidrs, &for_host, mongo)
        };
        built.list[idx].merge(self.b, chains);
    }

    /// istiod `buildSidecarOutboundTLSFilterChainOpts`.
    fn tls_chains(
        &mut self,
        sp: &SvcPort,
        cidrs: &[String],
        has_vip: bool,
        vss: &[&(&Resource, &crd::VirtualService, Vec<String>)],
    ) -> Vec<Chain> {
        let mut out = Vec::new();
        let mut handled: BTreeSet<(Vec<String>, Vec<String>)> = BTreeSet::new();
        for (r, vs, _) in vss {
            for (ri, tls) in vs.tls.iter().enumerate() {
                if tls.route.is_empty() {
                    continue;
                }
                for m in &tls.matches {
                    if !self.static_match(&m.gateways, &m.source_labels, m.port, m.source_namespace.as_deref(), sp.port)
                    {
                        continue;
                    }
                    let subnets =
                        if m.destination_subnets.is_empty() { cidrs.to_vec() } else { m.destination_subnets.clone() };
                    let runtime = (m.sni_hosts.clone(), m.destination_subnets.clone());
                    if !handled.insert(runtime) {
                        continue;
                    }
                    let origin = format!("VirtualService {}/{} tls[{ri}]", r.namespace, r.name);
                    let filters = self.network_filters(&tls.route, sp.port, r, false);
                    out.push(Chain::forward(m.sni_hosts.clone(), subnets, filters, origin));
                }
            }
        }
        if out.is_empty() {
            // No TLS route: the service's own cluster, by SNI = its host name when it has no VIP
            // (istiod's wildcard listener distinguishes services by SNI only).
            let sni = if !cidrs.is_empty() || !has_vip { vec![sp.host.clone()] } else { Vec::new() };
            let filters = self.default_filters(sp, false);
            out.push(Chain::forward(sni, cidrs.to_vec(), filters, format!("service {} port {}", sp.host, sp.port)));
        }
        out
    }

    /// istiod `buildSidecarOutboundTCPFilterChainOpts`: the first route without destination
    /// subnets ends the list (a catch-all); routes with subnets become chains matched on them.
    fn tcp_chains(
        &mut self,
        sp: &SvcPort,
        cidrs: &[String],
        vss: &[&(&Resource, &crd::VirtualService, Vec<String>)],
        mongo: bool,
    ) -> Vec<Chain> {
        let mut out = Vec::new();
        let mut default_added = false;
        'vs: for (r, vs, _) in vss {
            for (ri, tcp) in vs.tcp.iter().enumerate() {
                if tcp.route.is_empty() {
                    continue;
                }
                let origin = format!("VirtualService {}/{} tcp[{ri}]", r.namespace, r.name);
                // A route without matches, or with a match that applies here and names no
                // subnets, is the catch-all (the subnets of earlier matches go with it).
                let mut catch_all = tcp.matches.is_empty();
                let mut subnets: Vec<String> = Vec::new();
                for m in &tcp.matches {
                    if !self.static_match(&m.gateways, &m.source_labels, m.port, m.source_namespace.as_deref(), sp.port)
                    {
                        continue;
                    }
                    if m.destination_subnets.is_empty() {
                        catch_all = true;
                        break;
                    }
                    subnets.extend(m.destination_subnets.iter().cloned());
                }
                if catch_all {
                    let filters = self.network_filters(&tcp.route, sp.port, r, mongo);
                    out.push(Chain::forward(Vec::new(), cidrs.to_vec(), filters, origin));
                    default_added = true;
                    break 'vs;
                }
                if !subnets.is_empty() {
                    let filters = self.network_filters(&tcp.route, sp.port, r, mongo);
                    let mut a = subnets.clone();
                    let mut b = cidrs.to_vec();
                    a.sort();
                    b.sort();
                    if a == b {
                        default_added = true;
                    }
                    out.push(Chain::forward(Vec::new(), subnets, filters, origin));
                }
            }
        }
        if !default_added {
            let filters = self.default_filters(sp, mongo);
            out.push(Chain::forward(
                Vec::new(),
                cidrs.to_vec(),
                filters,
                format!("service {} port {}", sp.host, sp.port),
            ));
        }
        out
    }

    /// istiod `matchTCP`/`matchTLS`: the predicates known when the config is generated.
    fn static_match(
        &self,
        gateways: &[String],
        source_labels: &BTreeMap<String, String>,
        port: Option<i64>,
        source_namespace: Option<&str>,
        listen_port: u32,
    ) -> bool {
        let s = self.b.settings;
        (gateways.is_empty() || gateways.iter().any(|g| g == "mesh"))
            && crate::labels::selects(source_labels, &s.labels)
            && port.is_none_or(|p| p == 0 || p == i64::from(listen_port))
            && source_namespace.is_none_or(|n| n.is_empty() || n == s.namespace)
    }

    // === network filters ===

    /// The service's own cluster when no route matches (`buildOutboundNetworkFiltersWithSingleDestination`
    /// with `BuildSubsetKey(outbound, "", host, port)`).
    fn default_filters(&mut self, sp: &SvcPort, mongo: bool) -> Vec<Value> {
        let port = sp.only_port.unwrap_or(sp.port);
        let name = self.cluster(&sp.host, None, port);
        let dr = self.b.destination_rule(&sp.host).map(|(_, d)| d);
        self.filter_stack(tcp_proxy(&name, Some(&name), None, dr.as_ref(), None), &name, mongo)
    }

    /// istiod `buildOutboundNetworkFilters`: one destination → its cluster; several → weighted
    /// clusters (weight 0 left out), stat prefix `name.namespace` of the VirtualService.
    fn network_filters(
        &mut self,
        route: &[crd::RouteDestination],
        listen_port: u32,
        r: &Resource,
        mongo: bool,
    ) -> Vec<Value> {
        let first_host = route.first().and_then(|d| d.destination.as_ref()).map(|d| self.b.fqdn(&d.host, &r.namespace));
        let dr = first_host.as_deref().and_then(|h| self.b.destination_rule(h)).map(|(_, d)| d);
        if route.len() == 1 {
            let Some(d) = route[0].destination.as_ref() else { return Vec::new() };
            let name = self.destination_cluster(d, &r.namespace, listen_port);
            let proxy = tcp_proxy(&name, Some(&name), None, dr.as_ref(), d.subset.as_deref());
            return self.filter_stack(proxy, &name, mongo);
        }
        let mut weighted = Vec::new();
        for rd in route {
            let (Some(d), Some(w)) = (rd.destination.as_ref(), rd.weight.filter(|w| *w > 0)) else { continue };
            let name = self.destination_cluster(d, &r.namespace, listen_port);
            weighted.push(json!({"name": name, "weight": w}));
        }
        let Some(first) = weighted.first().and_then(|w| w["name"].as_str()).map(String::from) else {
            return Vec::new();
        };
        let stat = format!("{}.{}", r.name, r.namespace);
        let proxy = tcp_proxy(&stat, None, Some(weighted), dr.as_ref(), Some(""));
        self.filter_stack(proxy, &first, mongo)
    }

    /// `buildNetworkFiltersStack`: Mongo ports get Envoy's mongo_proxy in front (istiod's
    /// `PILOT_ENABLE_MONGO_FILTER` default); Redis and MySQL filters are off by default there.
    fn filter_stack(&self, tcp: Value, stat: &str, mongo: bool) -> Vec<Value> {
        let mut out = Vec::new();
        if mongo {
            out.push(json!({"name": "envoy.filters.network.mongo_proxy",
                            "typed_config": {"@type": MONGO_PROXY, "stat_prefix": stat}}));
        }
        out.push(tcp);
        out
    }

    /// `route.GetDestinationCluster`: the destination's port, else the service's only port,
    /// else the listener's.
    fn destination_cluster(&mut self, d: &crd::Destination, vs_ns: &str, listen_port: u32) -> String {
        let h = self.b.fqdn(&d.host, vs_ns);
        let port = match &d.port {
            Some(p) if p.number != 0 => p.number,
            _ => self.only_port(&h).unwrap_or(listen_port),
        };
        self.cluster(&h, d.subset.as_deref(), port)
    }

    fn only_port(&self, h: &str) -> Option<u32> {
        if let Some(only) = self.only_ports.get(h) {
            return *only;
        }
        // A wildcard ServiceEntry host (rare in routes): the builder's own lookup.
        if let Some((_, se)) = self.b.service_entry(h) {
            return (se.ports.len() == 1).then(|| se.ports[0].number);
        }
        let svc = self.b.kube_service(h)?;
        (svc.ports.len() == 1).then(|| svc.ports[0].port)
    }

    fn cluster(&mut self, h: &str, subset: Option<&str>, port: u32) -> String {
        let name = self.b.cluster_name(h, subset, port);
        self.clusters.entry(name.clone()).or_insert_with(|| ClusterRef {
            name: name.clone(),
            host: h.to_string(),
            subset: subset.map(String::from),
            port,
            mirror_only: false,
            retry_policies: Default::default(),
        });
        name
    }

    // === the Gateway ===

    /// istiod `buildGatewayListeners` for the TCP-based servers: one listener per port, a chain
    /// per server (or per TLS route for PASSTHROUGH).
    fn gateway(&mut self, ip: IpAddr) -> Vec<Value> {
        let key = self.b.settings.gateway.clone();
        let bundle: &'a crate::config::Bundle = self.b.bundle;
        let Some((gres, gw)) = bundle.gateways().find(|(r, _)| r.key() == key) else { return Vec::new() };
        let mut by_port: BTreeMap<u32, Vec<&crd::Server>> = BTreeMap::new();
        for s in &gw.servers {
            if let Some(p) = &s.port {
                by_port.entry(p.number).or_default().push(s);
            }
        }
        let bind = ip.to_string();
        let mut out = Vec::new();
        for (port, servers) in by_port {
            let (l4, http): (Vec<&crd::Server>, Vec<&crd::Server>) = servers.into_iter().partition(|s| is_l4_server(s));
            if l4.is_empty() {
                continue;
            }
            if !http.is_empty() {
                self.b.note(format!(
                    "Gateway {key} port {port}: TCP/TLS/passthrough servers share the port with HTTP or TLS-terminating \
                     HTTPS servers; meshroute builds one kind of listener per port, the HTTP one (R235)"
                ));
                continue;
            }
            let mut l = Building::new(format!("gateway_{port}"), &bind, port);
            let mut sni_seen: BTreeSet<String> = BTreeSet::new();
            for (i, s) in l4.iter().enumerate() {
                let chains = self.gateway_server(gres, s, port, i, &mut sni_seen);
                l.merge(self.b, chains);
            }
            if l.chains.is_empty() {
                self.b.note(format!(
                    "Gateway {key} port {port}: no VirtualService route is bound to its servers; no listener (istiod: \
                     \"listener missed network filter\")"
                ));
                continue;
            }
            out.push(l.render());
        }
        out
    }

    /// istiod `createGatewayTCPFilterChainOpts` for one server.
    fn gateway_server(
        &mut self,
        gres: &Resource,
        s: &crd::Server,
        port: u32,
        i: usize,
        sni_seen: &mut BTreeSet<String>,
    ) -> Vec<Chain> {
        let key = gres.key();
        let origin =
            format!("Gateway {key} server {} (port {port})", s.name.clone().unwrap_or_else(|| format!("#{i}")));
        let protocol = s.port.as_ref().map(|p| p.protocol.clone()).unwrap_or_default();
        let mongo = matches!(class(&protocol), Class::Tcp { mongo: true, .. });
        match &s.tls {
            None => self
                .gateway_tcp_filters(gres, s, port, mongo)
                .map(|filters| vec![Chain::forward(Vec::new(), Vec::new(), filters, origin)])
                .unwrap_or_default(),
            Some(t) if !passthrough(s) => {
                let mode = t.mode.as_deref().unwrap_or("SIMPLE");
                if !matches!(mode, "SIMPLE" | "MUTUAL") {
                    self.b.note(format!(
                        "{origin}: tls.mode {mode} needs the mesh's certificates (istiod's SDS); no filter chain (R236)"
                    ));
                    return Vec::new();
                }
                let Some(filters) = self.gateway_tcp_filters(gres, s, port, mongo) else { return Vec::new() };
                let Some(ctx) = super::downstream_tls(self.b, s, port) else { return Vec::new() };
                let sni = server_sni_hosts(s);
                vec![Chain { tls: Some(ctx), ..Chain::forward(sni, Vec::new(), filters, origin) }]
            }
            Some(t) if t.mode.as_deref() == Some("AUTO_PASSTHROUGH") => self.auto_passthrough(s, &origin),
            Some(_) => self.gateway_tls_routes(gres, s, port, sni_seen),
        }
    }

    /// The VirtualServices bound to this Gateway (`VirtualServicesForGateway`) whose hosts meet
    /// the server's (`pickMatchingGatewayHosts`), in input order.
    fn gateway_virtual_services(
        &self,
        gres: &Resource,
        s: &crd::Server,
    ) -> Vec<(&'a Resource, &'a crd::VirtualService)> {
        let key = gres.key();
        let st = self.b.settings;
        let bundle: &'a crate::config::Bundle = self.b.bundle;
        bundle
            .virtual_services()
            .filter(|(r, vs)| {
                vs.gateways.iter().any(|g| host::resolve_gateway(g, &r.namespace) == key)
                    && crate::visibility::visible(
                        &vs.export_to,
                        &st.default_virtual_service_export_to,
                        &r.namespace,
                        &gres.namespace,
                    )
                    && s.hosts.iter().any(|sh| {
                        let (ns, name) = sh.split_once('/').unwrap_or(("*", sh.as_str()));
                        let ns = if ns == "." { gres.namespace.as_str() } else { ns };
                        (ns == "*" || ns == r.namespace) && vs.hosts.iter().any(|vh| host::overlaps(name, vh))
                    })
            })
            .collect()
    }

    /// istiod `buildGatewayNetworkFiltersFromTCPRoutes`: the first TCP route of the first bound
    /// VirtualService whose match (port, gateways) fits.
    fn gateway_tcp_filters(&mut self, gres: &Resource, s: &crd::Server, port: u32, mongo: bool) -> Option<Vec<Value>> {
        let key = gres.key();
        let vss = self.gateway_virtual_services(gres, s);
        for (r, vs) in vss {
            for tcp in &vs.tcp {
                let fits = tcp.matches.is_empty()
                    || tcp.matches.iter().any(|m| l4_gateway_match(m.port, &m.gateways, port, &key, &r.namespace));
                if fits && !tcp.route.is_empty() {
                    return Some(self.network_filters(&tcp.route, port, r, mongo));
                }
            }
        }
        None
    }

    /// istiod `buildGatewayNetworkFiltersFromTLSRoutes` (PASSTHROUGH): a chain per fitting TLS
    /// match, by its SNI hosts; an SNI host another chain of the port has is skipped.
    fn gateway_tls_routes(
        &mut self,
        gres: &Resource,
        s: &crd::Server,
        port: u32,
        sni_seen: &mut BTreeSet<String>,
    ) -> Vec<Chain> {
        let key = gres.key();
        let mut out = Vec::new();
        let vss = self.gateway_virtual_services(gres, s);
        for (r, vs) in vss {
            for (ri, tls) in vs.tls.iter().enumerate() {
                if tls.route.is_empty() {
                    continue;
                }
                for m in &tls.matches {
                    if !l4_gateway_match(m.port, &m.gateways, port, &key, &r.namespace) {
                        continue;
                    }
                    let dup: Vec<&String> = m.sni_hosts.iter().filter(|h| sni_seen.contains(h.as_str())).collect();
                    if !dup.is_empty() {
                        self.b.note(format!(
                            "skipping VirtualService {} rule #{ri} on server port {port} of gateway {key}, duplicate SNI \
                             host names: {dup:?}",
                            r.name
                        ));
                        continue;
                    }
                    sni_seen.extend(m.sni_hosts.iter().cloned());
                    let filters = self.network_filters(&tls.route, port, r, false);
                    let origin = format!("VirtualService {}/{} tls[{ri}]", r.namespace, r.name);
                    out.push(Chain::forward(m.sni_hosts.clone(), Vec::new(), filters, origin));
                }
            }
        }
        out
    }

    /// istiod `builtAutoPassthroughFilterChains`: a chain per mesh-internal service port (and
    /// subset) under the server's hosts, matched on the SNI `outbound_.PORT_.SUBSET_.HOST` and
    /// Istio's mTLS ALPNs. istiod names the target cluster that way too (SNI-DNAT clusters); here
    /// it is the service's ordinary cluster (same endpoints and policy, R237).
    fn auto_passthrough(&mut self, s: &crd::Server, origin: &str) -> Vec<Chain> {
        let hosts: Vec<String> = server_sni_hosts(s);
        let mut out = Vec::new();
        for sp in self.services() {
            if sp.external || sp.host.starts_with('*') || sp.protocol.eq_ignore_ascii_case("UDP") {
                continue;
            }
            if !hosts.iter().any(|h| h == "*" || crate::gateway_binding::subset_of(&sp.host, h)) {
                continue;
            }
            let dr = self.b.destination_rule(&sp.host).map(|(_, d)| d);
            let subsets: Vec<Option<String>> = std::iter::once(None)
                .chain(dr.iter().flat_map(|d| d.subsets.iter().map(|s| Some(s.name.clone()))))
                .collect();
            for subset in subsets {
                let sni = format!("outbound_.{}_.{}_.{}", sp.port, subset.as_deref().unwrap_or(""), sp.host);
                let name = self.cluster(&sp.host, subset.as_deref(), sp.port);
                let proxy = tcp_proxy(&sni, Some(&name), None, dr.as_ref(), subset.as_deref());
                let origin = format!("{origin} AUTO_PASSTHROUGH {}", sp.host);
                out.push(Chain {
                    alpn: ISTIO_MTLS_ALPNS.to_vec(),
                    ..Chain::forward(vec![sni], Vec::new(), vec![proxy], origin)
                });
            }
        }
        if out.is_empty() {
            self.b.note(format!("{origin}: AUTO_PASSTHROUGH matches no mesh-internal service"));
        }
        out
    }
}

/// istiod `l4SingleMatch` on a Gateway: the match's port is the server's, and its gateways (if
/// any) name this one.
fn l4_gateway_match(port: Option<i64>, gateways: &[String], server_port: u32, key: &str, vs_ns: &str) -> bool {
    port.is_none_or(|p| p == 0 || p == i64::from(server_port))
        && (gateways.is_empty() || gateways.iter().any(|g| host::resolve_gateway(g, vs_ns) == key))
}

/// `GetSNIHostsForServer`: the server's hosts without their namespace part, sorted, unique.
fn server_sni_hosts(s: &crd::Server) -> Vec<String> {
    let mut out: Vec<String> =
        s.hosts.iter().map(|h| h.split_once('/').map(|(_, d)| d).unwrap_or(h).to_ascii_lowercase()).collect();
    out.sort();
    out.dedup();
    out
}

/// Does this egress listener's `hosts` import `h` of namespace `ns` (istio sidecar.proto)?
fn egress_imports(e: &crd::IstioEgressListener, sidecar_ns: &str, ns: &str, h: &str) -> bool {
    e.hosts.iter().any(|entry| {
        let (hns, dns) = entry.split_once('/').unwrap_or(("*", entry.as_str()));
        let ns_ok = match hns {
            "*" => true,
            "." => ns == sidecar_ns,
            "~" => false,
            other => other == ns,
        };
        ns_ok && (dns == "*" || host::matches(dns, h))
    })
}

/// A `tcp_proxy` network filter (`buildOutboundNetworkFiltersWithSingleDestination` /
/// `...WithWeightedClusters`): idle timeout and maximum connection duration from the
/// DestinationRule's `connectionPool.tcp`; a source-IP hash when it hashes on `useSourceIp`
/// (`maybeSetHashPolicy`, `subset` = the destination's subset, `Some("")` for weighted).
fn tcp_proxy(
    stat: &str,
    cluster: Option<&str>,
    weighted: Option<Vec<Value>>,
    dr: Option<&crd::DestinationRule>,
    subset: Option<&str>,
) -> Value {
    let mut t = Map::new();
    t.insert("@type".into(), json!(TCP_PROXY));
    t.insert("stat_prefix".into(), json!(stat));
    match (cluster, weighted) {
        (_, Some(w)) => {
            t.insert("weighted_clusters".into(), json!({"clusters": w}));
        }
        (Some(c), None) => {
            t.insert("cluster".into(), json!(c));
        }
        (None, None) => {}
    }
    let tcp = dr
        .and_then(|d| d.traffic_policy.as_ref())
        .and_then(|p| p.connection_pool.as_ref())
        .and_then(|c| c.tcp.as_ref());
    if let Some(idle) = tcp.and_then(|t| t.idle_timeout.as_deref()).and_then(duration) {
        t.insert("idle_timeout".into(), json!(idle));
    }
    if let Some(max) = tcp.and_then(|t| t.max_connection_duration.as_deref()).and_then(duration) {
        t.insert("max_downstream_connection_duration".into(), json!(max));
    }
    if dr.is_some_and(|d| source_ip_hash(d, subset.unwrap_or(""))) {
        t.insert("hash_policy".into(), json!([{"source_ip": {}}]));
    }
    json!({"name": "envoy.filters.network.tcp_proxy", "typed_config": t})
}

/// istiod `maybeSetHashPolicy`: the rule's `consistentHash.useSourceIp`, unless the subset
/// named has a load balancer of its own (then that one's).
fn source_ip_hash(dr: &crd::DestinationRule, subset: &str) -> bool {
    let lb = |p: Option<&crd::TrafficPolicy>| p.and_then(|p| p.load_balancer.clone());
    let mut use_source_ip =
        lb(dr.traffic_policy.as_ref()).and_then(|l| l.consistent_hash).is_some_and(|c| c.use_source_ip == Some(true));
    if let Some(s) = dr.subsets.iter().find(|s| s.name == subset) {
        if let Some(l) = lb(s.traffic_policy.as_ref()) {
            use_source_ip = l.consistent_hash.is_some_and(|c| c.use_source_ip == Some(true));
        }
    }
    use_source_ip
}

#[cfg(test)]
mod tests {
    use super::super::{generate, Generated, Options};
    use serde_json::{json, Value};
    use std::path::Path;

    fn build(resources: Value, settings: Value) -> Generated {
        let cfg = json!({"resources": resources, "settings": settings});
        let (bundle, diags) = crate::load_value(cfg.clone());
        let compiled = crate::compile(&bundle, diags);
        let table = compiled.table.unwrap_or_else(|| panic!("{}", compiled.diagnostics));
        let opts = Options {
            wasm: Path::new("/m.wasm"),
            listen: "127.0.0.1:15001".parse().unwrap(),
            admin: "127.0.0.1:15000".parse().unwrap(),
            credentials_dir: None,
        };
        generate(&bundle, &table.clusters, &cfg, &opts).unwrap()
    }

    fn listener<'a>(g: &'a Generated, name: &str) -> &'a Value {
        g.config["static_resources"]["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name)
            .unwrap_or_else(|| panic!("no listener {name} in {:#}", g.config["static_resources"]["listeners"]))
    }

    fn res(kind: &str, name: &str, spec: Value) -> Value {
        json!({"apiVersion": "networking.istio.io/v1", "kind": kind, "metadata": {"name": name, "namespace": "default"}, "spec": spec})
    }

    fn se(host: &str, ports: Value) -> Value {
        res(
            "ServiceEntry",
            host,
            json!({"hosts": [host], "addresses": ["240.0.0.1"], "resolution": "STATIC",
            "ports": ports, "endpoints": [{"address": "10.0.0.1", "labels": {"v": "1"}}]}),
        )
    }

    fn notes(g: &Generated) -> String {
        g.notes.iter().map(|n| n.message.clone()).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn tcp_proxy_takes_timeouts_and_source_ip_hash_from_the_destination_rule_and_mongo_gets_its_filter() {
        let g = build(
            json!([
                se("db.internal", json!([{"number": 27017, "name": "mongo", "protocol": "MONGO"}])),
                res(
                    "DestinationRule",
                    "db",
                    json!({"host": "db.internal", "trafficPolicy": {
                    "connectionPool": {"tcp": {"idleTimeout": "30s", "maxConnectionDuration": "1h"}},
                    "loadBalancer": {"consistentHash": {"useSourceIp": true}}},
                    "subsets": [{"name": "v1", "labels": {"v": "1"}}, {"name": "rr", "labels": {"v": "1"},
                                 "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}}]})
                ),
                res(
                    "VirtualService",
                    "db",
                    json!({"hosts": ["db.internal"], "tcp": [{"route": [
                    {"destination": {"host": "db.internal", "subset": "v1"}, "weight": 100},
                    {"destination": {"host": "db.internal", "subset": "rr"}, "weight": 0}]}]})
                ),
            ]),
            json!({}),
        );
        let l = listener(&g, "127.0.0.1_27017");
        assert!(l.get("listener_filters").is_none(), "no SNI, no tls_inspector: {l:#}");
        let filters = l["filter_chains"][0]["filters"].as_array().unwrap();
        assert_eq!(filters[0]["name"], "envoy.filters.network.mongo_proxy");
        let t = &filters[1]["typed_config"];
        assert_eq!(t["stat_prefix"], "db.default");
        // Weight 0 is left out; the cluster port is the service's only port.
        assert_eq!(
            t["weighted_clusters"]["clusters"],
            json!([{"name": "outbound|27017|v1|db.internal", "weight": 100}])
        );
        assert_eq!(
            (t["idle_timeout"].as_str(), t["max_downstream_connection_duration"].as_str()),
            (Some("30s"), Some("3600s"))
        );
        assert_eq!(t["hash_policy"], json!([{"source_ip": {}}]));
        let single = super::tcp_proxy("c", Some("c"), None, None, None);
        assert!(single["typed_config"].get("hash_policy").is_none());
    }

    #[test]
    fn identical_filter_chain_matches_keep_the_first_with_a_note() {
        let g = build(
            json!([
                se("a.internal", json!([{"number": 9000, "name": "tcp", "protocol": "TCP"}])),
                se("b.internal", json!([{"number": 9000, "name": "tcp", "protocol": "TCP"}])),
            ]),
            json!({}),
        );
        let chains = listener(&g, "127.0.0.1_9000")["filter_chains"].as_array().unwrap().clone();
        assert_eq!(chains.len(), 1);
        assert_eq!(chains[0]["filters"][0]["typed_config"]["cluster"], "outbound|9000||a.internal");
        assert!(
            notes(&g).contains(
                "service b.internal port 9000 has the same filter chain match as service a.internal port 9000"
            ),
            "{}",
            notes(&g)
        );
    }

    #[test]
    fn gateway_ports_mixing_http_and_passthrough_and_istio_mutual_servers_are_noted() {
        let gw = res(
            "Gateway",
            "gw",
            json!({"servers": [
            {"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["a.example.com"],
             "tls": {"mode": "SIMPLE", "serverCertificate": "/c.pem", "privateKey": "/k.pem"}},
            {"port": {"number": 443, "name": "pt", "protocol": "HTTPS"}, "hosts": ["b.example.com"], "tls": {"mode": "PASSTHROUGH"}},
            {"port": {"number": 9443, "name": "tls", "protocol": "TLS"}, "hosts": ["c.example.com"], "tls": {"mode": "ISTIO_MUTUAL"}},
            {"port": {"number": 8443, "name": "pt2", "protocol": "TLS"}, "hosts": ["*.example.com"], "tls": {"mode": "PASSTHROUGH"}}]}),
        );
        let vs = |name: &str, sni: &str| {
            res(
                "VirtualService",
                name,
                json!({"hosts": [sni], "gateways": ["gw"],
                "tls": [{"match": [{"sniHosts": [sni]}], "route": [{"destination": {"host": "x.internal", "port": {"number": 443}}}]}]}),
            )
        };
        let g =
            build(json!([gw, vs("b", "b.example.com"), vs("b2", "b.example.com")]), json!({"gateway": "default/gw"}));
        let n = notes(&g);
        assert!(n.contains("Gateway default/gw port 443: TCP/TLS/passthrough servers share the port"), "{n}");
        assert!(n.contains("tls.mode ISTIO_MUTUAL needs the mesh's certificates"), "{n}");
        assert!(n.contains("skipping VirtualService b2 rule #0 on server port 8443 of gateway default/gw, duplicate SNI host names"), "{n}");
        let l = listener(&g, "gateway_8443");
        assert_eq!(l["filter_chains"].as_array().unwrap().len(), 1);
        assert_eq!(l["filter_chains"][0]["filter_chain_match"]["server_names"], json!(["b.example.com"]));
        assert_eq!(l["listener_filters"][0]["name"], "envoy.filters.listener.tls_inspector");
        // The HTTPS port keeps its TLS-terminating HTTP listener.
        assert!(listener(&g, "gateway_443")["filter_chains"][0]["transport_socket"].is_object());
    }

    #[test]
    fn a_sidecar_without_a_catch_all_egress_listener_has_only_its_explicit_ports() {
        let sc = res(
            "Sidecar",
            "default",
            json!({"egress": [
            {"port": {"number": 9100, "name": "tcp", "protocol": "TCP"}, "hosts": ["./a.internal"]},
            {"port": {"number": 8080, "name": "http", "protocol": "HTTP"}, "hosts": ["./b.internal"]}]}),
        );
        let g = build(
            json!([
                se("a.internal", json!([{"number": 9000, "name": "tcp", "protocol": "TCP"}])),
                se("b.internal", json!([{"number": 9001, "name": "tcp", "protocol": "TCP"}])),
                sc
            ]),
            json!({}),
        );
        let names: Vec<&str> = g.config["static_resources"]["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|l| l["name"].as_str())
            .collect();
        assert_eq!(names, ["meshroute_outbound", "127.0.0.1_9100"]);
        assert_eq!(
            listener(&g, "127.0.0.1_9100")["filter_chains"][0]["filters"][0]["typed_config"]["cluster"],
            "outbound|9000||a.internal"
        );
        assert!(notes(&g).contains("HTTP port 8080: not a listener of its own"), "{}", notes(&g));
    }
}
