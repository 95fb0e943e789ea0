//! Bootstraps: the static one (`meshroute envoy`: every resource inline) and the dynamic one
//! (`meshroute up`: listeners and clusters read from files in a watched directory, see
//! `files`).

use super::cluster::address;
use super::files;
use super::Resources;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;

/// Every resource inline under `static_resources`.
pub fn static_bootstrap(r: &Resources, admin: SocketAddr) -> Value {
    // Inline, the filter keeps the extension's own name, as `meshroute envoy` always wrote it.
    let filter = json!({"name": "envoy.filters.http.wasm", "typed_config": r.filter["typed_config"]});
    let mut listeners: Vec<Value> =
        r.listeners.iter().map(|l| l.render(("route_config", l.route_config.clone()), Some(filter.clone()))).collect();
    listeners.extend(r.l4_listeners.iter().cloned());
    json!({
        "node": node(),
        "admin": admin_address(admin),
        "stats_config": {"stats_tags": route_stats_tags()},
        "static_resources": {"listeners": listeners, "clusters": r.clusters},
    })
}

/// Listeners and clusters from the files `files::write_order` names in `dir` (an absolute path:
/// Envoy resolves relative ones against its own working directory).
pub fn dynamic_bootstrap(dir: &Path, admin: SocketAddr) -> Value {
    json!({
        "node": node(),
        "admin": admin_address(admin),
        "stats_config": {"stats_tags": route_stats_tags()},
        "dynamic_resources": {
            "lds_config": files::config_source(dir, files::LDS),
            "cds_config": files::config_source(dir, files::CDS),
        },
    })
}

fn node() -> Value {
    json!({"id": "meshroute", "cluster": "meshroute"})
}

fn admin_address(admin: SocketAddr) -> Value {
    json!({"address": address(&admin.ip().to_string(), u32::from(admin.port()))})
}

/// Tags that turn the filter's per-route counters
/// `wasmcustom.meshroute.route.vs.<ns>/<name>.rule.<N>.dest.<cluster>` into one Prometheus family,
/// `meshroute_route{vs="ns/name",rule="N",dest="cluster"}` (the same tags as envoy/sidecar.yaml).
/// Each regex's first group is cut from the name, its second is the tag's value.
pub fn route_stats_tags() -> Value {
    json!([
        {"tag_name": "vs", "regex": r"^wasmcustom\.meshroute\.route(\.vs\.([^.]+))\.rule\."},
        {"tag_name": "rule", "regex": r"^wasmcustom\.meshroute\.route\.vs\.[^.]+(\.rule\.([0-9]+))\.dest\."},
        {"tag_name": "dest", "regex": r"^wasmcustom\.meshroute\.route\.vs\.[^.]+\.rule\.[0-9]+(\.dest\.(.+))$"},
    ])
}
