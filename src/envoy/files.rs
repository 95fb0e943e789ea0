//! The xDS view for files: the same resources as the static bootstrap, as `DiscoveryResponse`
//! files Envoy watches (`path_config_source` with `watched_directory`, verified on Envoy 1.40:
//! docs/envoy-findings.md, question 7). Listeners (LDS) take their routes from RDS and the
//! meshroute filter from ECDS, so a routing change replaces neither the listener nor its
//! connections; clusters come from CDS.
//!
//! Envoy reads a watched file again when a file is moved into the directory, so every file is
//! written under a temporary name and renamed (the writer is `meshroute apply`).

use super::{Listener, Resources, FILTER_NAME, WASM_TYPE};
use serde_json::{json, Value};
use std::path::Path;

pub const LDS: &str = "lds.json";
pub const CDS: &str = "cds.json";
pub const ECDS: &str = "ecds.json";

/// The RDS file of one listener (Envoy's file-based RDS takes exactly one route configuration
/// per file).
pub fn rds_file(listener: &str) -> String {
    format!("rds-{listener}.json")
}

/// A watched-file config source.
pub fn config_source(dir: &Path, file: &str) -> Value {
    json!({
        "path_config_source": {
            "path": dir.join(file).display().to_string(),
            "watched_directory": {"path": dir.display().to_string()},
        },
        "resource_api_version": "V3",
    })
}

/// One file to write: its name in the watched directory and its `DiscoveryResponse`.
#[derive(Debug, Clone, PartialEq)]
pub struct File {
    pub name: String,
    pub content: Value,
}

/// Which Envoy subscription reads a file, for waiting on its stats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    Cds,
    Lds,
    Ecds,
    /// RDS of the listener with this HCM stat prefix and route name.
    Rds {
        stat_prefix: String,
        route: String,
    },
}

impl Subscription {
    /// The stats prefix of the subscription (`<prefix>.update_success`, `.update_rejected`,
    /// `.version_text`).
    pub fn stats_prefix(&self) -> String {
        match self {
            Self::Cds => "cluster_manager.cds".into(),
            Self::Lds => "listener_manager.lds".into(),
            Self::Ecds => format!("extension_config_discovery.http_filter.{FILTER_NAME}"),
            Self::Rds { stat_prefix, route } => format!("http.{stat_prefix}.rds.{route}"),
        }
    }
}

/// The files of one revision.
#[derive(Debug, Clone, PartialEq)]
pub struct Files {
    pub cds: File,
    /// Route configurations (one file per listener), then the filter, then the listeners: the
    /// order in which a new revision is made live after its clusters exist.
    pub rest: Vec<(File, Subscription)>,
}

/// Renders the resources as files whose `version_info` is `version`. `dir` is the watched
/// directory (absolute), which the listeners name as their RDS and ECDS source.
pub fn files(r: &Resources, dir: &Path, version: &str) -> Files {
    let mut rest = Vec::new();
    for l in &r.listeners {
        let name = route_name(l);
        rest.push((
            File {
                name: rds_file(&l.name),
                content: response(version, ROUTE_TYPE, std::slice::from_ref(&l.route_config)),
            },
            Subscription::Rds { stat_prefix: l.stat_prefix.clone(), route: name },
        ));
    }
    if r.listeners.iter().any(|l| l.with_filter) {
        rest.push((
            File { name: ECDS.into(), content: response(version, EXTENSION_TYPE, std::slice::from_ref(&r.filter)) },
            Subscription::Ecds,
        ));
    }
    let mut listeners: Vec<Value> = r.listeners.iter().map(|l| listener(l, dir)).collect();
    listeners.extend(r.l4_listeners.iter().cloned());
    rest.push((File { name: LDS.into(), content: response(version, LISTENER_TYPE, &listeners) }, Subscription::Lds));
    Files { cds: cds(version, &r.clusters), rest }
}

/// The CDS file for a set of clusters.
pub fn cds(version: &str, clusters: &[Value]) -> File {
    File { name: CDS.into(), content: response(version, CLUSTER_TYPE, clusters) }
}

fn route_name(l: &Listener) -> String {
    l.route_config["name"].as_str().unwrap_or(&l.name).to_string()
}

fn listener(l: &Listener, dir: &Path) -> Value {
    let rds = json!({"route_config_name": route_name(l), "config_source": config_source(dir, &rds_file(&l.name))});
    let filter = json!({
        "name": FILTER_NAME,
        "config_discovery": {"config_source": config_source(dir, ECDS), "type_urls": [WASM_TYPE]},
    });
    l.render(("rds", rds), Some(filter))
}

const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const ROUTE_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
const EXTENSION_TYPE: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";

fn response(version: &str, type_url: &str, resources: &[Value]) -> Value {
    let resources: Vec<Value> = resources
        .iter()
        .map(|r| {
            let mut r = r.clone();
            if let Value::Object(m) = &mut r {
                m.insert("@type".into(), json!(type_url));
            }
            r
        })
        .collect();
    json!({"version_info": version, "resources": resources})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envoy::resources;

    fn sample() -> Resources {
        let cfg = json!({"resources": [
            {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": "a", "namespace": "default"},
             "spec": {"hosts": ["a.internal"], "resolution": "STATIC", "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
                      "endpoints": [{"address": "127.0.0.1"}]}}], "settings": {}});
        let (bundle, table) = crate::envoy::testing::compiled(&cfg);
        resources(&bundle, &table.clusters, &cfg, &crate::envoy::testing::options()).unwrap()
    }

    #[test]
    fn listeners_take_routes_from_rds_and_the_filter_from_ecds() {
        let f = files(&sample(), Path::new("/state/live"), "7-abc");
        let names: Vec<&str> = f.rest.iter().map(|(f, _)| f.name.as_str()).collect();
        assert_eq!(names, ["rds-meshroute_outbound.json", "ecds.json", "lds.json"]);
        let lds = &f.rest[2].0.content;
        assert_eq!(lds["version_info"], "7-abc");
        let hcm = &lds["resources"][0]["filter_chains"][0]["filters"][0]["typed_config"];
        assert_eq!(hcm["rds"]["route_config_name"], "meshroute_outbound");
        assert_eq!(
            hcm["rds"]["config_source"]["path_config_source"]["path"],
            "/state/live/rds-meshroute_outbound.json"
        );
        assert!(hcm.get("route_config").is_none());
        assert_eq!(hcm["http_filters"][0]["config_discovery"]["type_urls"][0], WASM_TYPE);
        let ecds = &f.rest[1].0.content["resources"][0];
        assert_eq!(ecds["@type"], EXTENSION_TYPE);
        assert_eq!(ecds["typed_config"]["@type"], WASM_TYPE);
        assert_eq!(f.cds.content["resources"][0]["name"], "outbound|80||a.internal");
        assert_eq!(f.cds.content["resources"][0]["@type"], CLUSTER_TYPE);
        assert_eq!(f.rest[0].1.stats_prefix(), "http.outbound.rds.meshroute_outbound");
    }
}
