//! Envoy configuration from Istio resources, as istiod would translate them: a complete bootstrap
//! (v3) running the meshroute filter — the sidecar's outbound HTTP listener, or one listener per port
//! of the Gateway the proxy implements — and a cluster per destination with the DestinationRule
//! traffic policy applied (load balancer, consistent hash, locality, connection pool, outlier
//! detection, upstream TLS) and endpoints from ServiceEntry/WorkloadEntry.
//!
//! Library code (feature `envoy`, never in the .wasm) so that the CLI's `envoy`, `apply` and any
//! other user of the crate share one translation and one cluster-name contract.

pub mod bootstrap;
pub mod cluster;
pub mod files;
mod inbound;
pub mod l4;

use crate::config::Bundle;
use crate::crd;
use crate::diag::{Diagnostic, Diagnostics};
use cluster::{address, Builder, Want};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

pub use crate::compile::cluster_name;

pub struct Options<'a> {
    pub wasm: &'a Path,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub credentials_dir: Option<&'a Path>,
}

/// The static bootstrap (`meshroute envoy`) and the notes of its translation.
pub struct Generated {
    pub config: Value,
    pub notes: Diagnostics,
}

/// What istiod would push to one proxy, as structured resources: every view (the static
/// bootstrap, xDS files) is rendered from this one translation.
#[derive(Debug, Clone)]
pub struct Resources {
    pub listeners: Vec<Listener>,
    /// TCP/TLS listeners (`tcp_proxy` filter chains, complete Envoy `Listener`s; `l4`).
    pub l4_listeners: Vec<Value>,
    /// Envoy `Cluster`s, one per destination the table can name.
    pub clusters: Vec<Value>,
    /// The meshroute filter's configuration as an Envoy `TypedExtensionConfig`
    /// (`{name, typed_config}`): the static view inlines it, the xDS view serves it through ECDS.
    pub filter: Value,
    /// Everything istiod would do that this translation cannot (warnings, never errors).
    pub notes: Diagnostics,
}

/// One Envoy listener with an HTTP connection manager. Its route configuration and the filter
/// are kept apart from the listener so that the xDS view can serve them separately (RDS, ECDS):
/// a routing change then never replaces, and so never drains, the listener.
#[derive(Debug, Clone)]
pub struct Listener {
    pub name: String,
    pub stat_prefix: String,
    pub address: SocketAddr,
    /// An Envoy `RouteConfiguration`; its name is the listener's.
    pub route_config: Value,
    /// Whether the meshroute filter runs here (a port that only redirects to HTTPS needs none).
    pub with_filter: bool,
    /// TLS filter chains (server names, `DownstreamTlsContext`); `None` is one plain chain.
    pub tls_chains: Option<Vec<(Vec<String>, Value)>>,
    /// MeshConfig `pathNormalization` mode of its HTTP connection manager (R163).
    pub path_normalization: String,
}

/// The filter's name in listeners and in ECDS.
pub const FILTER_NAME: &str = "meshroute";

/// Why no bootstrap can be built at all (everything less is a note).
#[derive(Debug)]
pub enum InvalidEnvoyConfig {
    /// `settings.gateway` names a Gateway the input does not define.
    UnknownGateway(String),
    /// The plugin configuration could not be serialised.
    PluginConfig(serde_json::Error),
    /// The plugin configuration does not compile into a table (its errors, one per line).
    Table(String),
}

impl fmt::Display for InvalidEnvoyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownGateway(g) => write!(f, "settings.gateway {g:?} names no Gateway in the input"),
            Self::PluginConfig(e) => write!(f, "the plugin configuration cannot be serialised: {e}"),
            Self::Table(e) => write!(f, "the plugin configuration does not compile:\n{e}"),
        }
    }
}

impl std::error::Error for InvalidEnvoyConfig {}

/// Builds the static bootstrap. Errors are things that make a listener impossible (the named
/// Gateway does not exist).
pub fn generate(
    bundle: &Bundle,
    routed: &[crate::compile::ClusterRef],
    plugin_config: &Value,
    opts: &Options<'_>,
) -> Result<Generated, InvalidEnvoyConfig> {
    let r = resources(bundle, routed, plugin_config, opts)?;
    Ok(Generated { config: bootstrap::static_bootstrap(&r, opts.admin), notes: r.notes })
}

/// Translates the input into Envoy resources.
pub fn resources(
    bundle: &Bundle,
    routed: &[crate::compile::ClusterRef],
    plugin_config: &Value,
    opts: &Options<'_>,
) -> Result<Resources, InvalidEnvoyConfig> {
    let mut b = Builder::new(bundle, opts.credentials_dir);
    // TCP/TLS listeners first: the clusters their tcp_proxy filters name join the routed ones.
    let l4 = l4::listeners(&mut b, opts.listen.ip(), opts.listen.port());
    let routed: Vec<crate::compile::ClusterRef> = routed.iter().chain(&l4.clusters).cloned().collect();
    let wanted = b.wanted(&routed);
    let mut clusters: Vec<Value> = wanted.iter().map(|w| b.cluster(w)).collect();
    let routes = routes(&mut b, &wanted, &routed);
    let filter = filter_config(plugin_config, opts.wasm)?;
    let settings = &bundle.settings;
    let listeners = if settings.gateway == "mesh" {
        let vhost = json!({"name": "meshroute", "domains": ["*"], "routes": routes});
        vec![listener("meshroute_outbound", "outbound", opts.listen, vec![vhost], true, None)]
    } else {
        let (_, gw) = bundle
            .gateways()
            .find(|(r, _)| r.key() == settings.gateway)
            .ok_or_else(|| InvalidEnvoyConfig::UnknownGateway(settings.gateway.clone()))?;
        gateway_listeners(&mut b, gw, opts, &routes)
    };
    let listeners: Vec<Listener> = listeners
        .into_iter()
        .map(|l| Listener { path_normalization: settings.path_normalization.clone(), ..l })
        .collect();
    let mut notes = Diagnostics::default();
    for n in b.notes {
        notes.push(Diagnostic::warning(None, "", n));
    }
    clusters.extend(l4.inbound_clusters);
    Ok(Resources { listeners, l4_listeners: l4.listeners, clusters, filter, notes })
}

/// The Wasm filter running meshroute with this plugin configuration compiled into its table
/// (`crate::table`), as a `TypedExtensionConfig`.
/// The routes of [`resources`] carry Istio's default retry policy and one route per rule policy,
/// so the configuration tells the filter (`settings.retryPolicyOnRoute`, `retryPolicyRoutes`),
/// which then writes no retry hints.
pub fn filter_config(plugin_config: &Value, wasm: &Path) -> Result<Value, InvalidEnvoyConfig> {
    let mut plugin_config = plugin_config.clone();
    with_retry_policy_routes(&mut plugin_config);
    let source = serde_json::to_vec(&plugin_config).map_err(InvalidEnvoyConfig::PluginConfig)?;
    let configuration = crate::table::compile_source(&source).map_err(InvalidEnvoyConfig::Table)?;
    Ok(json!({
        "name": FILTER_NAME,
        "typed_config": {
            "@type": WASM_TYPE,
            "config": {
                "name": "meshroute",
                "root_id": "meshroute",
                "vm_config": {
                    "vm_id": "meshroute",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": wasm.display().to_string()}},
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": configuration,
                },
                // A VM that traps is replaced (after Envoy's reload backoff, 1 s) instead of
                // failing every later request on its worker; never FAIL_OPEN (R161).
                "failure_policy": "FAIL_RELOAD",
            },
        },
    }))
}

/// Turns on `settings.retryPolicyOnRoute` and `retryPolicyRoutes` in a plugin configuration:
/// what the filter runs with behind the routes of [`resources`] (R221). Callers that validate
/// the input for such a filter use it too, so that what they report (MR0007 for retry fields
/// only route configuration carries) is true of the filter Envoy runs.
pub fn with_retry_policy_routes(plugin_config: &mut Value) {
    if let Some(settings) = plugin_config.as_object_mut().map(|o| o.entry("settings").or_insert_with(|| json!({}))) {
        if let Some(settings) = settings.as_object_mut() {
            settings.insert("retryPolicyOnRoute".into(), json!(true));
            settings.insert("retryPolicyRoutes".into(), json!(true));
        }
    }
}

pub const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";

/// The vhost routes (R222). Every one takes the cluster from the routing header and has no
/// timeout (the filter hints Istio's timeouts per request); they differ in retry policy and
/// hash policy, chosen by the filter-owned headers the filter writes (a client's copies are
/// removed first, so no client picks either):
/// 0. one route per policy of a rule whose destinations may hash, with their hash policies as
///    istiod lists them (R225; matched on the policy header alone, so before the per-cluster
///    routes);
/// 1. per consistent-hash cluster (matched on the routing header, so its `hash_policy` applies
///    only to it): one route per other retry policy of the rules that send to it (a destination
///    naming an ExternalName alias of a hashing host), then Istio's default policy without a
///    `previous_hosts` predicate for requests without the policy header (R57; a registry host
///    without a VirtualService), then one without retries;
/// 2. one route per other retry policy (matched on [`crate::compile::RETRY_POLICY_HEADER`]);
/// 3. Istio's default policy for requests without the policy header — the common case, which
///    costs the filter no header at all;
/// 4. a catch-all without retries.
///
/// Linear in the rules: a policy appears once per cluster its rules send to.
fn routes(b: &mut Builder<'_>, wanted: &[Want], routed: &[crate::compile::ClusterRef]) -> Vec<Value> {
    let header = b.settings.routing_header.clone();
    let policy_header = crate::compile::RETRY_POLICY_HEADER;
    let by_cluster: BTreeMap<&str, &std::collections::BTreeSet<crate::compile::RetryPolicy>> =
        routed.iter().map(|c| (c.name.as_str(), &c.retry_policies)).collect();
    let mut all: BTreeMap<String, &crate::compile::RetryPolicy> = BTreeMap::new();
    for c in routed {
        for p in &c.retry_policies {
            all.insert(p.route_id(), p);
        }
    }
    let absent = json!({"name": policy_header, "present_match": true, "invert_match": true});
    let is = |name: &str, value: &str| json!({"name": name, "string_match": {"exact": value}});
    let route = |name: String, headers: Vec<Value>, hash: Option<&Vec<Value>>, retry: Option<Value>| {
        let mut action = Map::new();
        action.insert("cluster_header".into(), json!(header));
        action.insert("timeout".into(), json!("0s"));
        if let Some(h) = hash {
            action.insert("hash_policy".into(), json!(h));
        }
        if let Some(r) = retry {
            action.insert("retry_policy".into(), r);
        }
        let mut m = Map::new();
        m.insert("prefix".into(), json!("/"));
        if !headers.is_empty() {
            m.insert("headers".into(), Value::Array(headers));
        }
        // The policy header has done its job once the route is chosen: upstreams never see it.
        json!({"name": name, "match": m, "route": action, "request_headers_to_remove": [policy_header]})
    };
    let mut out = Vec::new();
    // R225: a rule's route carries the hash policy of each of its destinations, in order (istiod
    // appends one per destination, repeats included; Envoy combines them), and a single
    // destination's hash keeps the default predicate off. First: the per-cluster routes below
    // end in one that takes any policy header for its cluster.
    for (id, p) in all.iter().filter(|(_, p)| !p.hash_sources.is_empty()) {
        let hash: Vec<Value> = p.hash_sources.iter().filter_map(|h| b.destination_hash(h)).collect();
        let retry = retry_policy(p, !hash.is_empty());
        let hash = (!hash.is_empty()).then_some(&hash);
        out.push(route(format!("meshroute:{id}"), vec![is(policy_header, id)], hash, retry));
    }
    for w in wanted {
        let Some(hash) = b.hash_policy(w) else { continue };
        let cluster = is(&header, &w.name);
        // A weighted rule's policy names a route of its own with every destination's hash (R225).
        let own =
            by_cluster.get(w.name.as_str()).into_iter().flat_map(|s| s.iter()).filter(|p| p.hash_sources.is_empty());
        for p in own {
            let id = p.route_id();
            out.push(route(
                format!("hash:{}:{id}", w.name),
                vec![cluster.clone(), is(policy_header, &id)],
                Some(&hash),
                retry_policy(p, true),
            ));
        }
        // R57: no previous_hosts predicate for a consistent-hash destination (the hash pins it).
        out.push(route(
            format!("hash:{}:default-retries", w.name),
            vec![cluster.clone(), absent.clone()],
            Some(&hash),
            Some(default_retry_policy(false)),
        ));
        out.push(route(format!("hash:{}", w.name), vec![cluster], Some(&hash), None));
    }
    for (id, p) in all.iter().filter(|(_, p)| p.hash_sources.is_empty()) {
        out.push(route(format!("meshroute:{id}"), vec![is(policy_header, id)], None, retry_policy(p, false)));
    }
    out.push(route("meshroute:default-retries".into(), vec![absent], None, Some(default_retry_policy(true))));
    out.push(route("meshroute".into(), Vec::new(), None, None));
    out
}

/// The routing routes of [`resources`] for an Istio sidecar, where istiod owns the listeners
/// and clusters (`meshroute compile --as envoyfilter`, deploy/istio): each also requires the
/// routing header, so Istio's own routes still serve requests the filter leaves alone.
pub fn sidecar_routes(bundle: &Bundle, routed: &[crate::compile::ClusterRef]) -> Vec<Value> {
    let mut b = Builder::new(bundle, None);
    let wanted = b.wanted(routed);
    let present = json!({"name": bundle.settings.routing_header, "present_match": true});
    routes(&mut b, &wanted, routed)
        .into_iter()
        .map(|mut r| {
            match r["match"]["headers"].as_array_mut() {
                Some(h) => h.insert(0, present.clone()),
                None => r["match"]["headers"] = json!([present.clone()]),
            }
            r
        })
        .collect()
}

/// `envoy.retry_host_predicates.previous_hosts` (istio `xdsfilters.RetryPreviousHosts`).
fn previous_hosts() -> Value {
    json!([{
        "name": "envoy.retry_host_predicates.previous_hosts",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"},
    }])
}

/// Istio's built-in default (R57: `RETRY` `defaultNumRetries`, `defaultRetryOn`, `DefaultPolicy`
/// and `DefaultConsistentHashPolicy`).
fn default_retry_policy(with_previous_hosts: bool) -> Value {
    let mut policy = json!({
        "retry_on": crate::compile::DEFAULT_RETRY_ON,
        "num_retries": 2,
        "host_selection_retry_max_attempts": 5,
    });
    if with_previous_hosts {
        policy["retry_host_predicate"] = previous_hosts();
    }
    policy
}

/// A rule's policy as istiod writes it on the route (`RETRY ConvertPolicy`, R58, R220): none
/// when `attempts` is 0; the conditions (HTTP and gRPC in one `retry_on`, which Envoy parses with
/// both parsers), status codes, `per_try_timeout`, `retry_back_off.base_interval` (Envoy's
/// maximum is ten times it), `previous_priorities` for `retryRemoteLocalities`, and the
/// `previous_hosts` predicate unless `retryIgnorePreviousHosts: false` — or, unset, for a
/// single-destination rule whose destination hashes consistently (`hash`).
fn retry_policy(p: &crate::compile::RetryPolicy, hash: bool) -> Option<Value> {
    if p.attempts == 0 {
        return None;
    }
    if p.is_default {
        // Istio's default on a route of a rule's own (R225): istiod's cached policy, verbatim.
        return Some(default_retry_policy(!(hash && p.single_destination)));
    }
    let mut m = Map::new();
    let on: Vec<&str> = [p.retry_on.as_str(), p.grpc_retry_on.as_str()].into_iter().filter(|s| !s.is_empty()).collect();
    m.insert("retry_on".into(), json!(on.join(",")));
    m.insert("num_retries".into(), json!(p.attempts));
    let codes: Vec<u32> = p.retriable_status_codes.split(',').filter_map(|c| c.trim().parse().ok()).collect();
    if !codes.is_empty() {
        m.insert("retriable_status_codes".into(), json!(codes));
    }
    if let Some(t) = p.per_try_timeout {
        m.insert("per_try_timeout".into(), json!(cluster::proto_duration(t)));
    }
    if let Some(b) = p.backoff {
        m.insert("retry_back_off".into(), json!({"base_interval": cluster::proto_duration(b)}));
    }
    if p.retry_remote_localities {
        m.insert(
            "retry_priority".into(),
            json!({
                "name": "envoy.retry_priorities.previous_priorities",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig",
                    "update_frequency": 2,
                },
            }),
        );
    }
    if p.previous_hosts.unwrap_or(!(hash && p.single_destination)) {
        m.insert("retry_host_predicate".into(), previous_hosts());
    }
    m.insert("host_selection_retry_max_attempts".into(), json!(5));
    Some(Value::Object(m))
}

/// The HCM's path handling for MeshConfig `pathNormalization` as istiod sets it
/// (`pilot/pkg/networking/core/listener_builder.go`, `buildHTTPConnectionManager`): escaped
/// slashes kept unchanged unless DECODE_AND_MERGE_SLASHES; `normalize_path` (RFC 3986: `.` and
/// `..` segments, percent-decoding of unreserved characters) for every mode but NONE; slashes
/// merged from MERGE_SLASHES on (R163). The filter sees, and matches, the normalized path.
fn path_normalization(mode: &str) -> Value {
    let (normalize, merge, escaped) = match mode {
        "NONE" => (false, false, "KEEP_UNCHANGED"),
        "MERGE_SLASHES" => (true, true, "KEEP_UNCHANGED"),
        "DECODE_AND_MERGE_SLASHES" => (true, true, "UNESCAPE_AND_FORWARD"),
        _ => (true, false, "KEEP_UNCHANGED"), // BASE, DEFAULT
    };
    json!({"normalize_path": normalize, "merge_slashes": merge, "path_with_escaped_slashes_action": escaped})
}

fn listener(
    name: &str,
    stat_prefix: &str,
    address: SocketAddr,
    vhosts: Vec<Value>,
    with_filter: bool,
    tls_chains: Option<Vec<(Vec<String>, Value)>>,
) -> Listener {
    Listener {
        name: name.into(),
        stat_prefix: stat_prefix.into(),
        address,
        route_config: json!({"name": name, "virtual_hosts": vhosts, "ignore_port_in_host_matching": true}),
        with_filter,
        tls_chains,
        path_normalization: "BASE".into(),
    }
}

impl Listener {
    /// The Envoy `Listener`, with the route configuration and the filter given by the view: inline
    /// for the static bootstrap, discovery references for xDS.
    pub fn render(&self, route: (&str, Value), filter: Option<Value>) -> Value {
        let mut filters = Vec::new();
        if self.with_filter {
            filters.extend(filter);
        }
        filters.push(json!({
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        }));
        let mut hcm = Map::new();
        hcm.insert(
            "@type".into(),
            json!(
                "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
            ),
        );
        hcm.insert("stat_prefix".into(), json!(self.stat_prefix));
        hcm.insert("codec_type".into(), json!("AUTO"));
        hcm.insert(route.0.into(), route.1);
        hcm.insert("http_filters".into(), json!(filters));
        if let Value::Object(norm) = path_normalization(&self.path_normalization) {
            hcm.extend(norm);
        }
        let hcm = json!({"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm});
        let chains: Vec<Value> = match &self.tls_chains {
            None => vec![json!({"filters": [hcm]})],
            Some(chains) => chains
                .iter()
                .map(|(server_names, tls)| {
                    let mut c = Map::new();
                    if !server_names.is_empty() {
                        c.insert("filter_chain_match".into(), json!({"server_names": server_names}));
                    }
                    c.insert("filters".into(), json!([hcm]));
                    c.insert(
                        "transport_socket".into(),
                        json!({"name": "envoy.transport_sockets.tls", "typed_config": tls}),
                    );
                    Value::Object(c)
                })
                .collect(),
        };
        json!({
            "name": self.name,
            "address": address(&self.address.ip().to_string(), u32::from(self.address.port())),
            "filter_chains": chains,
        })
    }
}

/// One listener per server port (istiod merges servers on a port). HTTP servers become virtual
/// hosts (`httpsRedirect` → `require_tls: ALL`); HTTPS servers become TLS filter chains (by SNI
/// when a port has several).
fn gateway_listeners(b: &mut Builder<'_>, gw: &crd::Gateway, opts: &Options<'_>, routes: &[Value]) -> Vec<Listener> {
    let mut by_port: BTreeMap<u32, Vec<&crd::Server>> = BTreeMap::new();
    // TCP, TLS and passthrough servers are network-filter listeners (`l4`).
    for s in gw.servers.iter().filter(|s| !l4::is_l4_server(s)) {
        if let Some(p) = &s.port {
            by_port.entry(p.number).or_default().push(s);
        }
    }
    let ip = opts.listen.ip();
    let mut out = Vec::new();
    for (port, servers) in by_port {
        let addr = SocketAddr::new(ip, u16::try_from(port).unwrap_or(0));
        let protocol =
            servers.first().and_then(|s| s.port.as_ref()).map(|p| p.protocol.to_ascii_uppercase()).unwrap_or_default();
        match protocol.as_str() {
            "HTTP" | "HTTP2" | "GRPC" => {
                let mut vhosts = Vec::new();
                let mut seen: Vec<String> = Vec::new();
                let mut all_redirect = true;
                for (i, s) in servers.iter().enumerate() {
                    let redirect = s.tls.as_ref().is_some_and(|t| t.https_redirect);
                    all_redirect &= redirect;
                    let domains = server_domains(s, &mut seen);
                    if domains.is_empty() {
                        continue;
                    }
                    let mut vh = Map::new();
                    vh.insert("name".into(), json!(format!("{port}_{i}")));
                    vh.insert("domains".into(), json!(domains));
                    vh.insert("routes".into(), json!(routes));
                    if redirect {
                        vh.insert("require_tls".into(), json!("ALL"));
                    }
                    vhosts.push(Value::Object(vh));
                }
                // A port that only redirects needs no routing decision: Envoy answers 301 itself.
                out.push(listener(
                    &format!("gateway_{port}"),
                    &format!("gateway_{port}"),
                    addr,
                    vhosts,
                    !all_redirect,
                    None,
                ));
            }
            "HTTPS" => {
                let mut chains = Vec::new();
                let mut domains_all: Vec<String> = Vec::new();
                let several = servers.len() > 1;
                for s in &servers {
                    let Some(ctx) = downstream_tls(b, s, port) else { continue };
                    let names: Vec<String> = server_hosts(s).into_iter().filter(|h| h != "*").collect();
                    chains.push((if several { names } else { Vec::new() }, ctx));
                    for d in server_domains(s, &mut Vec::new()) {
                        if !domains_all.contains(&d) {
                            domains_all.push(d);
                        }
                    }
                }
                if chains.is_empty() {
                    continue;
                }
                let vhost = json!({"name": format!("{port}"), "domains": domains_all, "routes": routes});
                out.push(listener(
                    &format!("gateway_{port}"),
                    &format!("gateway_{port}"),
                    addr,
                    vec![vhost],
                    true,
                    Some(chains),
                ));
            }
            other => b.note(format!(
                "Gateway port {port}: protocol {other:?} gets no listener (HTTP, HTTPS, TCP and TLS do)"
            )),
        }
    }
    out
}

/// Server hosts without their `namespace/` part.
fn server_hosts(s: &crd::Server) -> Vec<String> {
    s.hosts.iter().map(|h| h.split_once('/').map(|(_, d)| d).unwrap_or(h).to_ascii_lowercase()).collect()
}

/// Envoy vhost domains for a server, skipping ones an earlier server on the port took (Envoy
/// rejects duplicates).
fn server_domains(s: &crd::Server, seen: &mut Vec<String>) -> Vec<String> {
    let mut out = Vec::new();
    for h in server_hosts(s) {
        if !seen.contains(&h) {
            seen.push(h.clone());
            out.push(h);
        }
    }
    out
}

fn downstream_tls(b: &mut Builder<'_>, s: &crd::Server, port: u32) -> Option<Value> {
    let what = format!("Gateway server on port {port}");
    let Some(tls) = &s.tls else {
        b.note(format!("{what}: HTTPS without tls settings; skipped"));
        return None;
    };
    let mode = tls.mode.as_deref().unwrap_or("SIMPLE");
    if !matches!(mode, "SIMPLE" | "MUTUAL") {
        b.note(format!(
            "{what}: tls.mode {mode} is not supported here (SIMPLE and MUTUAL terminate TLS; ISTIO_MUTUAL and \
             OPTIONAL_MUTUAL need the mesh's certificates); skipped"
        ));
        return None;
    }
    // Certificate sources (istio `ApplyCredentialSDSToServerCommonTLSContext` for credentials,
    // `ApplyToCommonTLSContext` for files): `credentialNames`/`tlsCertificates` carry up to two
    // certificates (RSA and ECDSA). Clients are validated with the first credential's CA, or
    // with `tls.caCertificates` for files (istiod ignores `tlsCertificates[].caCertificates`).
    let mut pairs: Vec<(String, String, Option<String>)> = Vec::new();
    if !tls.credential_names.is_empty() {
        for name in &tls.credential_names {
            pairs.push(b.credential_files(&what, name)?);
        }
    } else if let Some(name) = &tls.credential_name {
        pairs.push(b.credential_files(&what, name)?);
    } else if !tls.tls_certificates.is_empty() {
        for c in &tls.tls_certificates {
            match (&c.server_certificate, &c.private_key) {
                (Some(cert), Some(key)) => pairs.push((cert.clone(), key.clone(), tls.ca_certificates.clone())),
                _ => {
                    b.note(format!("{what}: a tlsCertificates entry lacks serverCertificate or privateKey; skipped"));
                    return None;
                }
            }
        }
    } else {
        match (&tls.server_certificate, &tls.private_key) {
            (Some(c), Some(k)) => pairs.push((c.clone(), k.clone(), tls.ca_certificates.clone())),
            _ => {
                b.note(format!(
                    "{what}: neither credentialName(s), tlsCertificates nor serverCertificate/privateKey; skipped"
                ));
                return None;
            }
        }
    }
    let ca = pairs.first().and_then(|(_, _, ca)| ca.clone());
    let mut common = Map::new();
    let certs: Vec<Value> = pairs
        .iter()
        .map(|(cert, key, _)| json!({"certificate_chain": {"filename": cert}, "private_key": {"filename": key}}))
        .collect();
    common.insert("tls_certificates".into(), Value::Array(certs));
    let mut params = Map::new();
    for (field, v) in [
        ("tls_minimum_protocol_version", &tls.min_protocol_version),
        ("tls_maximum_protocol_version", &tls.max_protocol_version),
    ] {
        if let Some(v) = v {
            params.insert(field.into(), json!(v));
        }
    }
    if !tls.cipher_suites.is_empty() {
        params.insert("cipher_suites".into(), json!(tls.cipher_suites));
    }
    if !params.is_empty() {
        common.insert("tls_params".into(), Value::Object(params));
    }
    let mut ctx = Map::new();
    ctx.insert(
        "@type".into(),
        json!("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"),
    );
    // Client validation: SANs as exact matches; for MUTUAL the CA, plus SPKI and hash pins with
    // credentials (`ApplyCredentialSDSToServerCommonTLSContext`) or the CRL with files
    // (`ApplyToCommonTLSContext`); with credentials and no MUTUAL, the SANs alone.
    let from_credentials = !tls.credential_names.is_empty() || tls.credential_name.is_some();
    let sans: Vec<Value> = tls.subject_alt_names.iter().map(|n| json!({"exact": n})).collect();
    let mut validation = Map::new();
    if !sans.is_empty() && (mode == "MUTUAL" || from_credentials) {
        validation.insert("match_subject_alt_names".into(), Value::Array(sans));
    }
    if mode == "MUTUAL" {
        match ca.or_else(|| tls.ca_certificates.clone()) {
            Some(ca) => {
                validation.insert("trusted_ca".into(), json!({"filename": ca}));
                ctx.insert("require_client_certificate".into(), json!(true));
            }
            None => b.note(format!("{what}: MUTUAL without caCertificates; client certificates are not required")),
        }
        if from_credentials && !tls.verify_certificate_spki.is_empty() {
            validation.insert("verify_certificate_spki".into(), json!(tls.verify_certificate_spki));
        }
        if from_credentials && !tls.verify_certificate_hash.is_empty() {
            validation.insert("verify_certificate_hash".into(), json!(tls.verify_certificate_hash));
        }
        if let Some(crl) = tls.ca_crl.as_ref().filter(|c| !c.is_empty() && !from_credentials) {
            validation.insert("crl".into(), json!({"filename": crl}));
        }
    }
    if !validation.is_empty() {
        common.insert("validation_context".into(), Value::Object(validation));
    }
    ctx.insert("common_tls_context".into(), Value::Object(common));
    Some(Value::Object(ctx))
}

/// What the translation's unit tests start from (here and in `files.rs`).
#[cfg(test)]
pub(crate) mod testing {
    use super::Options;
    use crate::compile::RouteTable;
    use crate::config::Bundle;
    use serde_json::Value;
    use std::path::Path;

    /// `cfg` loaded and compiled; panics with the findings when it does not compile.
    pub(crate) fn compiled(cfg: &Value) -> (Bundle, RouteTable) {
        let (bundle, diags) = crate::load_value(cfg.clone());
        assert!(diags.is_empty(), "{diags}");
        let compiled = crate::compile(&bundle, diags);
        let table = compiled.table.unwrap_or_else(|| panic!("{}", compiled.diagnostics));
        (bundle, table)
    }

    pub(crate) fn options() -> Options<'static> {
        Options {
            wasm: Path::new("/m.wasm"),
            listen: "127.0.0.1:15001".parse().unwrap(),
            admin: "127.0.0.1:15000".parse().unwrap(),
            credentials_dir: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn build(resources: Value, settings: Value) -> Generated {
        let cfg = json!({"resources": resources, "settings": settings});
        let (bundle, table) = testing::compiled(&cfg);
        generate(&bundle, &table.clusters, &cfg, &testing::options()).unwrap()
    }

    fn cluster<'a>(g: &'a Generated, name: &str) -> &'a Value {
        g.config["static_resources"]["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no cluster {name} in {:#}", g.config["static_resources"]["clusters"]))
    }

    /// The routes of the outbound listener's one virtual host.
    fn routes_of(g: &Generated) -> Vec<Value> {
        g.config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
            ["virtual_hosts"][0]["routes"]
            .as_array()
            .unwrap()
            .clone()
    }

    fn se(host: &str, endpoints: Value) -> Value {
        json!({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": host, "namespace": "default"},
               "spec": {"hosts": [host], "resolution": "STATIC", "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
                        "endpoints": endpoints}})
    }

    fn dr(host: &str, spec: Value) -> Value {
        let mut spec = spec;
        spec["host"] = json!(host);
        json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": host, "namespace": "default"}, "spec": spec})
    }

    /// istiod's Service aliases (K14, `sidecar_simulation_test.go TestExternalNameServices`): an
    /// ExternalName Service has no cluster; a destination naming it and a request to it use
    /// the clusters of the service it names.
    #[test]
    fn external_name_services_are_aliases_of_their_target_as_in_istiod() {
        let svc = |name: &str, spec: Value| json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"}, "spec": spec});
        let resources = json!([
            svc("alias", json!({"type": "ExternalName", "externalName": "concrete.default.svc.cluster.local"})),
            svc("concrete", json!({"ports": [{"name": "http", "port": 80}, {"name": "http-alt", "port": 81}]})),
            svc("ext", json!({"type": "ExternalName", "externalName": "api.example.com", "ports": [{"name": "https", "port": 443}]})),
            svc("loop-a", json!({"type": "ExternalName", "externalName": "loop-b.default.svc.cluster.local"})),
            svc("loop-b", json!({"type": "ExternalName", "externalName": "loop-a.default.svc.cluster.local"})),
            {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "front", "namespace": "default"},
             "spec": {"hosts": ["front.example.com"], "http": [
                {"match": [{"uri": {"prefix": "/ext"}}], "route": [{"destination": {"host": "ext"}}]},
                {"route": [{"destination": {"host": "alias"}}]}]}},
        ]);
        let cfg = json!({"resources": resources, "settings": {}});
        let (bundle, diags) = crate::load_value(cfg.clone());
        assert!(!diags.has_errors(), "{diags}");
        let compiled = crate::compile(&bundle, diags);
        let table = compiled.table.unwrap_or_else(|| panic!("{}", compiled.diagnostics));
        let routed = |authority: &str, path: &str| {
            let req = crate::Request::new("GET", authority, path);
            let d = table.decide(&req, &mut crate::SplitMix64(1));
            crate::apply::plan(&table, &d, &req).request_ops.iter().find_map(|op| match op {
                crate::apply::HeaderOp::Set(k, v) if k == &table.routing_header => Some(v.clone()),
                _ => None,
            })
        };
        // The alias has no port: the request's, on the target's name.
        assert_eq!(
            routed("front.example.com:81", "/").as_deref(),
            Some("outbound|81||concrete.default.svc.cluster.local")
        );
        // The alias's only port, on the target's name.
        assert_eq!(routed("front.example.com", "/ext").as_deref(), Some("outbound|443||api.example.com"));
        // A request to the alias takes the concrete service's default route, on each port.
        for (authority, cluster) in [
            ("alias", "outbound|80||concrete.default.svc.cluster.local"),
            ("alias.default.svc.cluster.local:81", "outbound|81||concrete.default.svc.cluster.local"),
        ] {
            assert_eq!(routed(authority, "/").as_deref(), Some(cluster), "{authority}");
        }
        // An alias of a host outside the registry, or in a loop, has no virtual host: passthrough.
        assert_eq!(routed("ext", "/"), None);
        assert_eq!(routed("loop-a", "/"), None);

        let opts = Options {
            wasm: Path::new("/m.wasm"),
            listen: "127.0.0.1:15001".parse().unwrap(),
            admin: "127.0.0.1:15000".parse().unwrap(),
            credentials_dir: None,
        };
        let g = generate(&bundle, &table.clusters, &cfg, &opts).unwrap();
        let names: Vec<&str> = g.config["static_resources"]["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert!(!names.iter().any(|n| n.contains("alias") || n.contains("|ext.") || n.contains("loop")), "{names:?}");
        // The target outside the registry: meshroute's DNS cluster on its name (istiod has none).
        let ext = cluster(&g, "outbound|443||api.example.com");
        assert_eq!(ext["type"], "STRICT_DNS");
        assert_eq!(
            ext["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
                ["address"],
            "api.example.com"
        );
        cluster(&g, "outbound|81||concrete.default.svc.cluster.local");
    }

    #[test]
    fn mirror_only_clusters_get_bounded_circuit_breakers_and_a_short_connect_timeout() {
        let vs = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "a", "namespace": "default"},
            "spec": {"hosts": ["a.internal"], "http": [
                {"match": [{"uri": {"prefix": "/x"}}], "route": [{"destination": {"host": "a.internal", "subset": "v1"}}],
                 "mirror": {"host": "a.internal", "subset": "shadow"}},
                {"route": [{"destination": {"host": "a.internal", "subset": "v2"}}],
                 "mirror": {"host": "a.internal", "subset": "v1"}}]}});
        let subsets = json!({"subsets": [{"name": "v1", "labels": {"v": "1"}}, {"name": "v2", "labels": {"v": "2"}},
                                         {"name": "shadow", "labels": {"v": "s"}}]});
        let g = build(json!([vs, dr("a.internal", subsets)]), json!({"mirrorMaxInFlight": 50}));
        let shadow = cluster(&g, "outbound|80|shadow|a.internal");
        assert_eq!(shadow["connect_timeout"], "1s");
        let t = &shadow["circuit_breakers"]["thresholds"][0];
        assert_eq!(
            (
                t["max_connections"].as_u64(),
                t["max_pending_requests"].as_u64(),
                t["max_requests"].as_u64(),
                t["max_retries"].as_u64()
            ),
            (Some(50), Some(50), Some(50), Some(0))
        );
        // A subset that is mirrored *and* routed to keeps the defaults: primaries use it.
        let v1 = cluster(&g, "outbound|80|v1|a.internal");
        assert_eq!(v1["connect_timeout"], "10s");
        assert_eq!(v1["circuit_breakers"]["thresholds"][0]["max_connections"], u64::from(u32::MAX));
        let wasm = &g.config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
            ["http_filters"][0]["typed_config"]["config"];
        assert_eq!(wasm["failure_policy"], "FAIL_RELOAD");
    }

    #[test]
    fn traffic_policy_becomes_cluster_settings_like_istiod() {
        let g = build(
            json!([
                se(
                    "a.internal",
                    json!([{"address": "10.0.0.1", "ports": {"http": 8080}, "labels": {"v": "1"}},
                                        {"address": "10.0.0.2", "labels": {"v": "2"}}])
                ),
                dr(
                    "a.internal",
                    json!({
                    "trafficPolicy": {
                        "connectionPool": {"tcp": {"maxConnections": 7, "connectTimeout": "250ms"},
                                           "http": {"http1MaxPendingRequests": 3, "http2MaxRequests": 9, "maxRetries": 2,
                                                    "maxRequestsPerConnection": 1, "idleTimeout": "30s", "h2UpgradePolicy": "UPGRADE"}},
                        "outlierDetection": {"consecutive5xxErrors": 4, "interval": "5s", "baseEjectionTime": "1m",
                                             "maxEjectionPercent": 50, "minHealthPercent": 30},
                        "loadBalancer": {"simple": "ROUND_ROBIN", "warmup": {"duration": "10s", "minimumPercent": 20, "aggression": 2}}},
                    "subsets": [{"name": "v2", "labels": {"v": "2"},
                                 "trafficPolicy": {"loadBalancer": {"consistentHash": {"httpCookie": {"name": "u", "ttl": "0s"}, "maglev": {"tableSize": 65537}}}}}]})
                )
            ]),
            json!({}),
        );
        let c = cluster(&g, "outbound|80||a.internal");
        assert_eq!(c["type"], "STATIC");
        assert_eq!(c["connect_timeout"], "0.25s");
        let t = &c["circuit_breakers"]["thresholds"][0];
        assert_eq!(
            (
                t["max_connections"].as_u64(),
                t["max_pending_requests"].as_u64(),
                t["max_requests"].as_u64(),
                t["max_retries"].as_u64()
            ),
            (Some(7), Some(3), Some(9), Some(2))
        );
        let o = &c["outlier_detection"];
        assert_eq!(
            (
                o["consecutive_5xx"].as_u64(),
                o["enforcing_consecutive_5xx"].as_u64(),
                o["enforcing_success_rate"].as_u64()
            ),
            (Some(4), Some(100), Some(0))
        );
        assert_eq!(
            (o["interval"].as_str(), o["base_ejection_time"].as_str(), o["max_ejection_percent"].as_u64()),
            (Some("5s"), Some("60s"), Some(50))
        );
        assert_eq!(c["common_lb_config"]["healthy_panic_threshold"]["value"], 30);
        assert_eq!(c["lb_policy"], "ROUND_ROBIN");
        assert_eq!(c["round_robin_lb_config"]["slow_start_config"]["slow_start_window"], "10s");
        let p = &c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
        assert_eq!(p["common_http_protocol_options"]["max_requests_per_connection"], 1);
        assert_eq!(p["common_http_protocol_options"]["idle_timeout"], "30s");
        assert!(p["explicit_http_config"]["http2_protocol_options"].is_object());
        let eps = &c["load_assignment"]["endpoints"][0]["lb_endpoints"];
        assert_eq!(eps[0]["endpoint"]["address"]["socket_address"]["port_value"], 8080, "port by name");
        assert_eq!(eps[1]["endpoint"]["address"]["socket_address"]["port_value"], 80, "service port");

        // The subset keeps the top-level blocks it does not override and selects by label.
        let s = cluster(&g, "outbound|80|v2|a.internal");
        assert_eq!(s["lb_policy"], "MAGLEV");
        assert_eq!(s["maglev_lb_config"]["table_size"], 65537);
        assert!(s.get("round_robin_lb_config").is_none());
        assert_eq!(s["circuit_breakers"]["thresholds"][0]["max_connections"], 7);
        let addrs: Vec<&Value> = s["load_assignment"]["endpoints"][0]["lb_endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["endpoint"]["address"]["socket_address"]["address"])
            .collect();
        assert_eq!(addrs, vec![&json!("10.0.0.2")]);
        // Its hash policy is a route matched on its cluster name.
        let routes = routes_of(&g);
        // The hash cluster: Istio's default retries for requests without a policy header, then
        // none; then the same two for every other cluster (R222).
        assert_eq!(routes.len(), 4);
        for r in &routes[0..2] {
            assert_eq!(r["match"]["headers"][0]["string_match"]["exact"], "outbound|80|v2|a.internal");
            assert_eq!(r["route"]["hash_policy"][0]["cookie"], json!({"name": "u", "ttl": "0s"}));
        }
        let absent = json!({"name": "x-meshroute-retry-policy", "present_match": true, "invert_match": true});
        assert_eq!(routes[0]["match"]["headers"][1], absent);
        assert_eq!(routes[0]["route"]["retry_policy"]["num_retries"], 2);
        assert!(routes[0]["route"]["retry_policy"].get("retry_host_predicate").is_none(), "R57: none with a hash");
        assert!(routes[1]["route"].get("retry_policy").is_none());
        assert_eq!(routes[2]["match"]["headers"], json!([absent]));
        assert_eq!(
            routes[2]["route"]["retry_policy"],
            json!({
                "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
                "num_retries": 2,
                "host_selection_retry_max_attempts": 5,
                "retry_host_predicate": [{
                    "name": "envoy.retry_host_predicates.previous_hosts",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"},
                }],
            })
        );
        assert_eq!(routes[3]["route"], json!({"cluster_header": "x-meshroute-cluster", "timeout": "0s"}));
        assert!(routes[3]["match"].get("headers").is_none());
        assert_eq!(routes[3]["request_headers_to_remove"], json!(["x-meshroute-retry-policy"]));
        // ... and the filter is told, so it writes no hints for the default.
        let wasm = &g.config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
            ["http_filters"][0]["typed_config"]["config"]["configuration"]["value"];
        let table = crate::table::load(wasm.as_str().unwrap().as_bytes()).unwrap();
        assert!(table.retry_policy_on_route && table.retry_policy_routes);
    }

    /// R220–R222: a rule's own retry policy is a route of its own, in full, named by the policy
    /// header; on a consistent-hash cluster it keeps the hash policy.
    #[test]
    fn rule_retry_policies_become_routes_with_backoff_predicates_priorities_and_hash() {
        let vs = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "a", "namespace": "default"},
            "spec": {"hosts": ["a.internal"], "http": [
                {"match": [{"uri": {"prefix": "/single"}}],
                 "route": [{"destination": {"host": "a.internal", "subset": "sticky"}}],
                 "retries": {"attempts": 3, "retryOn": "5xx,503,unavailable", "perTryTimeout": "2s", "backoff": "100ms",
                             "retryRemoteLocalities": true}},
                {"route": [{"destination": {"host": "a.internal", "subset": "sticky"}, "weight": 50},
                           {"destination": {"host": "a.internal"}, "weight": 50}],
                 "retries": {"attempts": 1, "retryIgnorePreviousHosts": false}}]}});
        let subsets = json!({"subsets": [{"name": "sticky", "labels": {"v": "1"},
            "trafficPolicy": {"loadBalancer": {"consistentHash": {"httpHeaderName": "x-user"}}}}]});
        let cfg = json!([
            vs,
            se("a.internal", json!([{"address": "10.0.0.1", "labels": {"v": "1"}}])),
            dr("a.internal", subsets)
        ]);
        let resources = json!({"resources": cfg, "settings": {}});
        let (bundle, _) = crate::load_value(resources);
        let table = crate::compile(&bundle, Default::default()).table.unwrap();
        let ids: Vec<String> = table.virtual_services[0].rules.iter().map(|r| r.retry.route_id()).collect();
        let g = build(cfg, json!({}));
        let routes = routes_of(&g);
        let named = |name: &str| {
            routes.iter().find(|r| r["name"] == name).unwrap_or_else(|| panic!("no route {name}: {routes:#?}")).clone()
        };
        let sticky = "outbound|80|sticky|a.internal";
        // The single-destination rule to the hash subset: its route has the destination's hash
        // (R225) and no previous_hosts (istiod ConvertPolicy(policy, consistentHash)), everything
        // else on the route.
        let r = named(&format!("meshroute:{}", ids[0]));
        assert_eq!(r["route"]["hash_policy"], json!([{"header": {"header_name": "x-user"}}]));
        assert_eq!(
            r["match"]["headers"],
            json!([{"name": "x-meshroute-retry-policy", "string_match": {"exact": ids[0]}}])
        );
        let p = &r["route"]["retry_policy"];
        assert_eq!(p["retry_on"], "5xx,retriable-status-codes,unavailable");
        assert_eq!((p["num_retries"].as_u64(), p["retriable_status_codes"].clone()), (Some(3), json!([503])));
        assert_eq!(
            (p["per_try_timeout"].as_str(), p["retry_back_off"].clone()),
            (Some("2s"), json!({"base_interval": "0.1s"}))
        );
        assert_eq!(p["retry_priority"]["typed_config"]["update_frequency"], 2);
        assert_eq!(p["host_selection_retry_max_attempts"], 5);
        assert!(p.get("retry_host_predicate").is_none());
        // It is the policy's only route: no per-cluster copy.
        assert!(!routes.iter().any(|r| r["name"] == format!("hash:{sticky}:{}", ids[0])));
        // The weighted rule said retryIgnorePreviousHosts: false: no predicate. Its one route
        // carries its destinations' hash policies (R225: only the sticky subset hashes).
        let r = named(&format!("meshroute:{}", ids[1]));
        assert!(r["route"]["retry_policy"].get("retry_host_predicate").is_none());
        assert_eq!(r["route"]["hash_policy"], json!([{"header": {"header_name": "x-user"}}]));
        assert!(!routes.iter().any(|r| r["name"] == format!("hash:{sticky}:{}", ids[1])));
        // Policy routes come before the default and catch-all routes.
        let pos = |name: &str| routes.iter().position(|r| r["name"] == name).unwrap();
        assert!(pos(&format!("meshroute:{}", ids[1])) < pos("meshroute:default-retries"));
        assert_eq!(routes.last().unwrap()["name"], "meshroute");
    }

    /// R225 (`ROUTE applyHTTPRouteDestination`, `processWeightedDestination`,
    /// `HashForHTTPDestination`): a weighted rule's one route carries the hash policy of every
    /// destination with weight, in order and repeats included — a subset's own, else the top
    /// level's (also for a subset whose load balancer does not hash), port-level settings only for
    /// a destination that names its port — and istiod's retry policy for a weighted route keeps
    /// the previous_hosts predicate (consistentHash is false unless `len(route) == 1`).
    #[test]
    fn a_weighted_rule_carries_every_destinations_hash_policy_in_order_as_istiod() {
        let dest = |subset: &str, port: Option<u32>, weight: u32| {
            let mut d = json!({"destination": {"host": "w.internal", "subset": subset}, "weight": weight});
            if let Some(p) = port {
                d["destination"]["port"] = json!({"number": p});
            }
            d
        };
        let vs = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "w", "namespace": "default"},
            "spec": {"hosts": ["w.internal"], "http": [
                {"match": [{"uri": {"prefix": "/weighted"}}],
                 "route": [dest("v1", None, 40), dest("v2", Some(80), 30), dest("v2", None, 0),
                           dest("v3", Some(80), 20), dest("v4", None, 10)]},
                {"match": [{"uri": {"prefix": "/v3"}}], "route": [dest("v3", Some(80), 0)]},
                {"route": [{"destination": {"host": "w.internal", "subset": "v2"}}]}]}});
        let rule = json!({
            "trafficPolicy": {"loadBalancer": {"consistentHash": {"httpHeaderName": "x-user"}},
                              "portLevelSettings": [{"port": {"number": 80},
                                                     "loadBalancer": {"consistentHash": {"httpQueryParameterName": "q"}}}]},
            "subsets": [
                {"name": "v1", "labels": {"v": "1"}},
                {"name": "v2", "labels": {"v": "2"},
                 "trafficPolicy": {"loadBalancer": {"consistentHash": {"httpCookie": {"name": "c", "ttl": "10s"}}}}},
                {"name": "v3", "labels": {"v": "3"}, "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}},
                {"name": "v4", "labels": {"v": "4"}}]});
        let eps = json!([{"address": "10.0.0.1", "labels": {"v": "1"}}, {"address": "10.0.0.2", "labels": {"v": "2"}},
                         {"address": "10.0.0.3", "labels": {"v": "3"}}, {"address": "10.0.0.4", "labels": {"v": "4"}}]);
        let cfg = json!([vs, se("w.internal", eps), dr("w.internal", rule)]);
        let (bundle, table) = testing::compiled(&json!({"resources": cfg, "settings": {}}));
        let retry = &table.virtual_services[0].rules[0].retry;
        assert!(retry.is_default && retry.has_own_route(), "{retry:?}");
        assert_eq!(retry.hash_sources.len(), 4, "weight 0 is no destination: {retry:?}");
        let id = retry.route_id();
        let g = generate(&bundle, &table.clusters, &json!({"resources": cfg}), &testing::options()).unwrap();
        let routes = routes_of(&g);
        let r = routes.iter().find(|r| r["name"] == format!("meshroute:{id}")).unwrap_or_else(|| panic!("{routes:#?}"));
        assert_eq!(
            r["route"]["hash_policy"],
            json!([{"header": {"header_name": "x-user"}}, {"cookie": {"name": "c", "ttl": "10s"}},
                   {"query_parameter": {"name": "q"}}, {"header": {"header_name": "x-user"}}])
        );
        assert_eq!(r["match"]["headers"], json!([{"name": "x-meshroute-retry-policy", "string_match": {"exact": id}}]));
        assert_eq!(r["route"]["retry_policy"], default_retry_policy(true), "istiod keeps the predicate here");
        // No cluster's own hash route serves it, and it comes before them all: each cluster's
        // last route takes any policy header.
        assert!(!routes.iter().any(|r| r["name"].as_str().is_some_and(|n| n.starts_with("hash:") && n.ends_with(&id))));
        let first_hash = routes.iter().position(|r| r["name"].as_str().is_some_and(|n| n.starts_with("hash:")));
        assert!(routes.iter().position(|r| r["name"] == format!("meshroute:{id}")) < first_hash);
        // A single destination (`processDestination`): its own hash, and with one Istio's
        // default drops the predicate — also for v3, whose load balancer is ROUND_ROBIN
        // (weight 0 does not count for a single destination; its named port brings the
        // top-level port-level hash), and for v2 without a port (no port-level settings).
        for (rule, want) in
            [(1, json!([{"query_parameter": {"name": "q"}}])), (2, json!([{"cookie": {"name": "c", "ttl": "10s"}}]))]
        {
            let single = &table.virtual_services[0].rules[rule].retry;
            assert!(single.is_default && single.single_destination && single.has_own_route(), "{single:?}");
            let r = routes.iter().find(|r| r["name"] == format!("meshroute:{}", single.route_id())).unwrap();
            assert_eq!(r["route"]["hash_policy"], want, "rule {rule}");
            assert_eq!(r["route"]["retry_policy"], default_retry_policy(false), "rule {rule}");
        }
    }

    /// R225 (`ROUTE buildSidecarVirtualHostForService`, `hashForService`,
    /// `BuildDefaultHTTPOutboundRoute`): a registry host without a VirtualService gets its
    /// DestinationRule's hash for the port (port-level over top level) and Istio's default
    /// retries with the previous_hosts predicate, on a route its default route names.
    #[test]
    fn a_registry_hosts_default_route_hashes_and_keeps_the_predicate_as_istiod() {
        let rule = json!({"trafficPolicy": {"loadBalancer": {"consistentHash": {"httpHeaderName": "x-user"}},
            "portLevelSettings": [{"port": {"number": 81}, "loadBalancer": {"consistentHash": {"httpQueryParameterName": "q"}}}]}});
        let mut entry = se("h.internal", json!([{"address": "10.0.0.9"}]));
        entry["spec"]["ports"] = json!([{"number": 80, "name": "http", "protocol": "HTTP"},
                                        {"number": 81, "name": "http-2", "protocol": "HTTP"}]);
        let cfg = json!([entry, dr("h.internal", rule)]);
        let (bundle, table) = testing::compiled(&json!({"resources": cfg, "settings": {}}));
        let g = generate(&bundle, &table.clusters, &json!({"resources": cfg}), &testing::options()).unwrap();
        let routes = routes_of(&g);
        let defaults = &table.registry_exact["h.internal"];
        assert_eq!(defaults.len(), 2);
        for (d, want) in defaults
            .iter()
            .zip([json!({"header": {"header_name": "x-user"}}), json!({"query_parameter": {"name": "q"}})])
        {
            assert!(d.retry.is_default && d.retry.has_own_route(), "{d:?}");
            let r = routes.iter().find(|r| r["name"] == format!("meshroute:{}", d.retry.route_id())).unwrap();
            assert_eq!(r["route"]["hash_policy"], json!([want]), "port {}", d.port);
            assert_eq!(r["route"]["retry_policy"], default_retry_policy(true), "port {}", d.port);
        }
    }

    #[test]
    fn default_policy_is_least_request_with_istio_thresholds() {
        let g = build(json!([se("b.internal", json!([{"address": "10.0.0.3"}]))]), json!({}));
        let c = cluster(&g, "outbound|80||b.internal");
        assert_eq!(c["lb_policy"], "LEAST_REQUEST");
        assert_eq!(c["connect_timeout"], "10s");
        assert_eq!(c["circuit_breakers"]["thresholds"][0]["max_retries"], u64::from(u32::MAX));
        assert!(c.get("outlier_detection").is_none());
    }

    #[test]
    fn locality_distribute_weights_localities_from_the_proxy_locality() {
        let g = build(
            json!([
                se(
                    "c.internal",
                    json!([{"address": "10.0.1.1", "locality": "us-west-2/a"},
                                        {"address": "10.0.1.2", "locality": "us-west-2/b"},
                                        {"address": "10.0.2.1", "locality": "us-east-1/a"},
                                        {"address": "10.0.3.1", "locality": "eu-west-1/a"}])
                ),
                dr(
                    "c.internal",
                    json!({"trafficPolicy": {"loadBalancer": {"localityLbSetting": {"distribute": [
                    {"from": "us-west-2/*", "to": {"us-west-2/*": 80, "us-east-1/*": 20}}]}}}})
                )
            ]),
            json!({"locality": "us-west-2/a"}),
        );
        let c = cluster(&g, "outbound|80||c.internal");
        assert!(c["common_lb_config"]["locality_weighted_lb_config"].is_object());
        let weights: Vec<(String, u64)> = c["load_assignment"]["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    format!(
                        "{}/{}",
                        e["locality"]["region"].as_str().unwrap(),
                        e["locality"]["zone"].as_str().unwrap()
                    ),
                    e["load_balancing_weight"].as_u64().unwrap(),
                )
            })
            .collect();
        // 80 split over two us-west-2 zones, 20 to us-east-1, eu-west-1 dropped.
        assert_eq!(weights, vec![("us-west-2/a".into(), 40), ("us-west-2/b".into(), 40), ("us-east-1/a".into(), 20)]);
    }

    #[test]
    fn outlier_detection_turns_on_failover_priorities_by_proximity() {
        let g = build(
            json!([
                se(
                    "d.internal",
                    json!([{"address": "10.0.1.1", "locality": "r1/z1"},
                                        {"address": "10.0.1.2", "locality": "r1/z2"},
                                        {"address": "10.0.2.1", "locality": "r2/z1"}])
                ),
                dr("d.internal", json!({"trafficPolicy": {"outlierDetection": {"consecutive5xxErrors": 1}}}))
            ]),
            json!({"locality": "r1/z1"}),
        );
        let c = cluster(&g, "outbound|80||d.internal");
        let prio: Vec<u64> = c["load_assignment"]["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.get("priority").and_then(Value::as_u64).unwrap_or(0))
            .collect();
        assert_eq!(prio, vec![0, 1, 2]);
    }

    #[test]
    fn resolution_and_tls_modes() {
        let g = build(
            json!([
                {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": "ext", "namespace": "default"},
                 "spec": {"hosts": ["api.ext.com"], "resolution": "DNS", "ports": [{"number": 443, "name": "https", "protocol": "HTTPS"}]}},
                {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": "any", "namespace": "default"},
                 "spec": {"hosts": ["any.ext.com"], "resolution": "NONE", "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}]}},
                {"apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry", "metadata": {"name": "vm1", "namespace": "default"},
                 "spec": {"address": "10.9.9.9", "labels": {"app": "vm"}, "ports": {"http": 9090}}},
                {"apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry", "metadata": {"name": "other", "namespace": "default"},
                 "spec": {"address": "10.9.9.8", "labels": {"app": "other"}}},
                {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": "vm", "namespace": "default"},
                 "spec": {"hosts": ["vm.internal"], "resolution": "STATIC", "workloadSelector": {"labels": {"app": "vm"}},
                          "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}]}},
                dr("api.ext.com", json!({"trafficPolicy": {"tls": {"mode": "SIMPLE", "sni": "api.ext.com", "insecureSkipVerify": true}}})),
                dr("vm.internal", json!({"trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}))
            ]),
            json!({}),
        );
        let ext = cluster(&g, "outbound|443||api.ext.com");
        assert_eq!(ext["type"], "STRICT_DNS");
        assert_eq!(ext["transport_socket"]["typed_config"]["sni"], "api.ext.com");
        let any = cluster(&g, "outbound|80||any.ext.com");
        assert_eq!((any["type"].as_str(), any["lb_policy"].as_str()), (Some("ORIGINAL_DST"), Some("CLUSTER_PROVIDED")));
        let vm = cluster(&g, "outbound|80||vm.internal");
        assert_eq!(
            vm["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"],
            json!({"address": "10.9.9.9", "port_value": 9090})
        );
        assert!(vm.get("transport_socket").is_none());
        assert!(g.notes.iter().any(|n| n.message.contains("ISTIO_MUTUAL")), "{:?}", g.notes);
    }
}
