//! `meshroute compile --as wasmplugin|trafficextension`: the Istio resource that attaches the
//! filter to workloads, with the compiled configuration as `pluginConfig` — the distributed case
//! becomes `kubectl apply`, and its history is the manifest's history in git. The shape follows
//! deploy/istio/wasmplugin.yaml and trafficextension.yaml (istio/api extensions/v1alpha1).

use clap::ValueEnum;
use serde_json::{json, Map, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// extensions.istio.io/v1alpha1 WasmPlugin.
    Wasmplugin,
    /// extensions.istio.io/v1alpha1 TrafficExtension (Istio 1.30+, supersedes WasmPlugin).
    Trafficextension,
    /// networking.istio.io/v1alpha3 EnvoyFilter: the routing routes (per retry policy, per
    /// consistent-hash cluster) first in every outbound virtual host (R223).
    Envoyfilter,
}

/// The EnvoyFilter that puts `routes` (in order) first in every outbound virtual host of the
/// workloads `settings` select: INSERT_FIRST patches, last route first.
pub fn envoy_filter(settings: &Value, routes: &[Value], name: &str) -> Value {
    let namespace = settings["namespace"].as_str().unwrap_or("default");
    let context = if settings["gateway"].as_str().is_none_or(|g| g == "mesh") { "SIDECAR_OUTBOUND" } else { "GATEWAY" };
    let patches: Vec<Value> = routes
        .iter()
        .rev()
        .map(|r| {
            json!({"applyTo": "HTTP_ROUTE", "match": {"context": context},
                   "patch": {"operation": "INSERT_FIRST", "value": r}})
        })
        .collect();
    let mut spec = Map::new();
    if let Some(labels) = settings["labels"].as_object().filter(|l| !l.is_empty()) {
        spec.insert("workloadSelector".into(), json!({"labels": labels}));
    }
    spec.insert("configPatches".into(), Value::Array(patches));
    json!({
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {"name": format!("{name}-routes"), "namespace": namespace},
        "spec": spec,
    })
}

pub const DEFAULT_IMAGE: &str = "oci://registry.example.com/meshroute:0.1.0";

/// What Istio does when the filter fails (istio/api extensions/v1alpha1/wasm.proto
/// `FailStrategy`). Never FAIL_OPEN: a bypass routes nowhere (docs/semantics.md R161).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FailStrategy {
    /// FAIL_CLOSE: a filter that cannot load or crashed answers 503 (every Istio version).
    Close,
    /// FAIL_RELOAD (Istio >= 1.27): a VM that crashed at run time is replaced by a fresh one; a
    /// module that cannot load still fails closed.
    Reload,
}

impl FailStrategy {
    fn istio_name(self) -> &'static str {
        match self {
            Self::Close => "FAIL_CLOSE",
            Self::Reload => "FAIL_RELOAD",
        }
    }
}

/// The manifest whose `pluginConfig` is `table` (what `meshroute compile` writes): namespace and
/// selector from `settings` (the proxy's namespace and labels); outbound (CLIENT) traffic only
/// for a sidecar.
pub fn manifest(kind: Kind, settings: &Value, table: &Value, image: &str, name: &str, fail: FailStrategy) -> Value {
    let namespace = settings["namespace"].as_str().unwrap_or("default");
    let sidecar = settings["gateway"].as_str().is_none_or(|g| g == "mesh");
    let mut spec = Map::new();
    if let Some(labels) = settings["labels"].as_object().filter(|l| !l.is_empty()) {
        spec.insert("selector".into(), json!({"matchLabels": labels}));
    }
    if sidecar {
        spec.insert("match".into(), json!([{"mode": "CLIENT"}]));
    }
    // Right before the router, after Istio's own filters.
    spec.insert("phase".into(), json!("UNSPECIFIED_PHASE"));
    // A filter that cannot load must not let traffic bypass the routing decisions.
    let module = json!({
        "url": image,
        "imagePullPolicy": "IfNotPresent",
        "failStrategy": fail.istio_name(),
        "type": "HTTP",
        "pluginConfig": table,
    });
    let (kind_name, spec) = match kind {
        Kind::Wasmplugin => {
            if let Value::Object(m) = module {
                spec.extend(m);
            }
            ("WasmPlugin", spec)
        }
        Kind::Trafficextension => {
            spec.insert("wasm".into(), module);
            ("TrafficExtension", spec)
        }
        // The routes come from the route table: `envoy_filter`.
        Kind::Envoyfilter => return envoy_filter(settings, &[], name),
    };
    json!({
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": kind_name,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_and_the_proxy_identity_fill_the_manifest() {
        let settings = json!({"namespace": "shop", "labels": {"app": "frontend"}});
        let table = json!({"format": meshroute::table::FORMAT, "table": {}});
        let w = manifest(Kind::Wasmplugin, &settings, &table, "oci://r/m:1", "meshroute", FailStrategy::Close);
        assert_eq!(w["kind"], "WasmPlugin");
        assert_eq!(w["metadata"]["namespace"], "shop");
        assert_eq!(w["spec"]["selector"]["matchLabels"]["app"], "frontend");
        assert_eq!(w["spec"]["pluginConfig"], table);
        assert_eq!(w["spec"]["failStrategy"], "FAIL_CLOSE");
        assert_eq!(w["spec"]["match"][0]["mode"], "CLIENT");
        let t = manifest(Kind::Trafficextension, &settings, &table, "oci://r/m:1", "meshroute", FailStrategy::Close);
        assert_eq!(t["kind"], "TrafficExtension");
        assert_eq!(t["spec"]["wasm"]["pluginConfig"], table);
        assert_eq!(t["spec"]["wasm"]["url"], "oci://r/m:1");
        let r = manifest(Kind::Trafficextension, &settings, &table, "oci://r/m:1", "meshroute", FailStrategy::Reload);
        assert_eq!(r["spec"]["wasm"]["failStrategy"], "FAIL_RELOAD");
        assert!(t["spec"].get("url").is_none());
        let gw = json!({"gateway": "istio-system/gw"});
        let g = manifest(Kind::Wasmplugin, &gw, &table, "oci://r/m:1", "meshroute", FailStrategy::Close);
        assert!(g["spec"].get("match").is_none() && g["spec"].get("selector").is_none());
        assert_eq!(g["metadata"]["namespace"], "default");
    }

    /// deploy/istio's manifests read back as YAML (what `kubectl apply` sends): their
    /// pluginConfig, as the JSON Istio hands the filter, is a table it loads, routing as the
    /// example's VirtualService says (deploy/istio/example/product-service.yaml).
    #[test]
    fn the_deploy_manifests_carry_a_table_that_routes_the_example() {
        use meshroute::{Decision, Request, SplitMix64};
        let files = [
            ("deploy/istio/wasmplugin.yaml", &["spec", "pluginConfig"][..]),
            ("deploy/istio/trafficextension.yaml", &["spec", "wasm", "pluginConfig"][..]),
        ];
        for (file, path) in files {
            let text = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap();
            let docs = crate::yaml::parse_documents(&text).unwrap();
            assert_eq!(docs.len(), 1, "{file}");
            let mut v = docs[0].to_value();
            for key in path {
                v = v[*key].take();
            }
            let table = meshroute::table::load(v.to_string().as_bytes()).unwrap_or_else(|e| panic!("{file}: {e}"));
            let cluster = |debug: Option<&str>| {
                let mut req = Request::new("GET", "product-service", "/");
                if let Some(d) = debug {
                    req = req.with_header("x-debug", d);
                }
                match table.decide(&req, &mut SplitMix64(1)) {
                    Decision::Matched(m) => m.destination.map(|d| d.cluster.clone()),
                    _ => None,
                }
            };
            let subset = |s: &str| Some(format!("outbound|80|{s}|product-service.default.svc.cluster.local"));
            assert_eq!(cluster(Some("true")), subset("v2"), "{file}");
            assert_eq!(cluster(None), subset("v1"), "{file}");
            assert_eq!(cluster(Some("false")), subset("v1"), "{file}");
        }
    }
}
