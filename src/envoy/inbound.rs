//! Sidecar `ingress` listeners as istiod builds them for a proxy that binds its ports itself
//! (`INBOUND buildInboundChainConfigs` for `Sidecar.ingress`, `CLUSTER buildInboundClustersFromSidecar`):
//! the port is a listener, `defaultEndpoint` the one endpoint of the cluster `inbound|PORT||`;
//! HTTP ports get an HTTP connection manager routing everything there, the others `tcp_proxy`
//! (docs/semantics.md R238). Inbound traffic is the workload's own: VirtualServices do not route
//! it, so the meshroute filter is not on these listeners.

use super::cluster::{address, duration, Builder};
use crate::crd;
use serde_json::{json, Value};
use std::net::IpAddr;

/// Istio's default `connectTimeout` (mesh config), as for outbound clusters.
const DEFAULT_CONNECT_TIMEOUT: &str = "10s";

/// The listeners and their clusters.
pub(super) fn listeners(b: &mut Builder<'_>, ip: IpAddr) -> (Vec<Value>, Vec<Value>) {
    let bundle = b.bundle;
    let Some((sres, sc)) = crate::compile::applicable_sidecar(bundle) else { return (Vec::new(), Vec::new()) };
    let (mut listeners, mut clusters) = (Vec::new(), Vec::new());
    for (i, l) in sc.ingress.iter().enumerate() {
        let what = format!("Sidecar {}/{} ingress[{i}]", sres.namespace, sres.name);
        let Some(port) = &l.port else { continue };
        let Some(endpoint) = endpoint(l.default_endpoint.as_deref().unwrap_or_default()) else {
            b.note(format!(
                "{what}: no defaultEndpoint: istiod forwards to the original destination, which needs iptables \
                 capture; no listener (R238)"
            ));
            continue;
        };
        let bind = match l.bind.as_deref().filter(|b| !b.is_empty()) {
            Some(b) => b.to_string(),
            None => ip.to_string(),
        };
        let cluster = format!("inbound|{}||", port.number);
        clusters.push(inbound_cluster(&cluster, &endpoint, l.connection_pool.as_ref()));
        let filter = if is_http(&port.protocol) {
            http_filter(&cluster, port.number)
        } else {
            json!({"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": cluster, "cluster": cluster}})
        };
        listeners.push(json!({
            "name": format!("inbound_{}", port.number),
            "address": address(&bind, port.number),
            "filter_chains": [{"filters": [filter]}],
        }));
    }
    (listeners, clusters)
}

fn is_http(protocol: &str) -> bool {
    matches!(protocol.to_ascii_lowercase().as_str(), "http" | "http2" | "grpc" | "grpc-web" | "http_proxy")
}

/// `defaultEndpoint` → the endpoint address: `127.0.0.1`/`[::1]` as written, `0.0.0.0`/`[::]`
/// (istiod: the instance IP) the loopback address of its family (this proxy's workload is local),
/// `unix://path` a pipe. `None` when unset.
fn endpoint(ep: &str) -> Option<(String, u32)> {
    if ep.is_empty() {
        return None;
    }
    if ep.starts_with("unix://") {
        return Some((ep.to_string(), 0));
    }
    let (host, port) = match ep.strip_prefix('[') {
        Some(rest) => rest.split_once("]:")?,
        None => ep.rsplit_once(':')?,
    };
    let port = port.parse::<u32>().ok()?;
    let host = match host {
        "0.0.0.0" | "" => "127.0.0.1",
        "::" => "::1",
        h => h,
    };
    Some((host.to_string(), port))
}

/// `buildInboundCluster`: a static cluster with the one endpoint, the ingress listener's
/// connection pool as connect timeout and circuit breakers.
fn inbound_cluster(name: &str, (host, port): &(String, u32), pool: Option<&crd::ConnectionPoolSettings>) -> Value {
    let tcp = pool.and_then(|p| p.tcp.clone()).unwrap_or_default();
    let http = pool.and_then(|p| p.http.clone()).unwrap_or_default();
    let positive = |v: Option<i64>| v.filter(|n| *n > 0).map(|n| n.min(i64::from(u32::MAX)) as u64);
    let max = u64::from(u32::MAX);
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": tcp.connect_timeout.as_deref().and_then(duration).unwrap_or_else(|| DEFAULT_CONNECT_TIMEOUT.into()),
        "circuit_breakers": {"thresholds": [{
            "max_connections": positive(tcp.max_connections).unwrap_or(max),
            "max_pending_requests": positive(http.http1_max_pending_requests).unwrap_or(max),
            "max_requests": positive(http.http2_max_requests).unwrap_or(max),
            "max_retries": positive(http.max_retries).unwrap_or(max),
        }]},
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address(host, *port)}}]}]},
    })
}

/// istiod's inbound HTTP chain: every request to the local cluster, no route timeout.
fn http_filter(cluster: &str, port: u32) -> Value {
    json!({"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": cluster,
        "codec_type": "AUTO",
        "route_config": {"name": format!("inbound|{port}||"), "virtual_hosts": [{
            "name": format!("inbound|http|{port}"), "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "0s"}}]}]},
        "http_filters": [{"name": "envoy.filters.http.router",
                          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }})
}
