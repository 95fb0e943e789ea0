//! Istio's MeshConfig (istio/api `mesh/v1alpha1/config.proto`) as meshroute reads it: the object
//! `istioctl analyze --meshConfigFile` takes (`pkg/config/analysis/local/istiod_analyze.go
//! AddFileKubeMeshConfig`), which is also the `mesh` key of the `istio` ConfigMap in the Istio
//! namespace. The fields meshroute uses become `settings` keys (docs/semantics.md K16); the rest
//! are listed so a caller can say they are not used.

use serde_json::{Map, Value};
use std::fmt;

/// MeshConfig fields meshroute reads, and the settings key each becomes.
const USED: &[(&str, &str)] = &[
    ("defaultVirtualServiceExportTo", "defaultVirtualServiceExportTo"),
    ("defaultDestinationRuleExportTo", "defaultDestinationRuleExportTo"),
    ("defaultServiceExportTo", "defaultServiceExportTo"),
];

/// What a MeshConfig gives: settings keys, and the top-level fields meshroute does not use.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FromMeshConfig {
    pub settings: Map<String, Value>,
    pub unused: Vec<String>,
}

/// A MeshConfig field of the wrong shape; `field` is its dotted path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidMeshConfig {
    pub field: String,
    pub expected: &'static str,
}

impl fmt::Display for InvalidMeshConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MeshConfig {}: expected {}", self.field, self.expected)
    }
}

impl std::error::Error for InvalidMeshConfig {}

fn bad(field: &str, expected: &'static str) -> InvalidMeshConfig {
    InvalidMeshConfig { field: field.to_string(), expected }
}

/// Translates a MeshConfig object (`null` = all defaults) into settings.
pub fn settings_from(mesh: &Value) -> Result<FromMeshConfig, InvalidMeshConfig> {
    let mut out = FromMeshConfig::default();
    let obj = match mesh {
        Value::Null => return Ok(out),
        Value::Object(o) => o,
        _ => return Err(bad("", "an object")),
    };
    for (key, value) in obj {
        if let Some((_, setting)) = USED.iter().find(|(k, _)| k == key) {
            let list = value.as_array().filter(|a| a.iter().all(Value::is_string));
            let list = list.ok_or_else(|| bad(key, "a list of strings"))?;
            out.settings.insert((*setting).to_string(), Value::Array(list.clone()));
            continue;
        }
        match key.as_str() {
            // `OutboundTrafficPolicy.mode`: ALLOW_ANY (the default) or REGISTRY_ONLY.
            "outboundTrafficPolicy" => {
                if let Some(mode) = value.get("mode") {
                    let mode = mode.as_str().ok_or_else(|| bad("outboundTrafficPolicy.mode", "a string"))?;
                    out.settings.insert("outboundTrafficPolicy".into(), Value::String(mode.to_string()));
                }
            }
            // `ProxyPathNormalization.normalization`.
            "pathNormalization" => {
                if let Some(n) = value.get("normalization") {
                    let n = n.as_str().ok_or_else(|| bad("pathNormalization.normalization", "a string"))?;
                    out.settings.insert("pathNormalization".into(), Value::String(n.to_string()));
                }
            }
            // `ProxyConfig.proxyMetadata`: DNS capture with auto-allocation, as
            // `AN serviceentry/protocoladdresses.go` reads it.
            "defaultConfig" => {
                let meta = match value.get("proxyMetadata") {
                    None | Some(Value::Null) => continue,
                    Some(Value::Object(m)) => m,
                    Some(_) => return Err(bad("defaultConfig.proxyMetadata", "an object of strings")),
                };
                let on = |k: &str| meta.get(k).and_then(Value::as_str) == Some("true");
                let auto = on("ISTIO_META_DNS_CAPTURE")
                    && (on("ISTIO_META_DNS_AUTO_ALLOCATE") || on("PILOT_ENABLE_IP_AUTOALLOCATE"));
                out.settings.insert("dnsAutoAllocate".into(), Value::Bool(auto));
            }
            other => out.unused.push(other.to_string()),
        }
    }
    out.unused.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dns_auto_allocation_needs_capture_and_one_of_the_two_switches() {
        let on = |meta: Value| settings_from(&json!({"defaultConfig": {"proxyMetadata": meta}})).unwrap().settings;
        assert_eq!(
            on(json!({"ISTIO_META_DNS_CAPTURE": "true", "ISTIO_META_DNS_AUTO_ALLOCATE": "true"}))["dnsAutoAllocate"],
            true
        );
        assert_eq!(
            on(json!({"ISTIO_META_DNS_CAPTURE": "true", "PILOT_ENABLE_IP_AUTOALLOCATE": "true"}))["dnsAutoAllocate"],
            true
        );
        assert_eq!(on(json!({"ISTIO_META_DNS_CAPTURE": "true"}))["dnsAutoAllocate"], false);
        assert_eq!(on(json!({"ISTIO_META_DNS_AUTO_ALLOCATE": "true"}))["dnsAutoAllocate"], false);
    }

    #[test]
    fn used_fields_become_settings_and_the_rest_are_listed() {
        let got = settings_from(&json!({
            "defaultServiceExportTo": ["."], "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"},
            "pathNormalization": {"normalization": "MERGE_SLASHES"}, "trustDomain": "td", "enableTracing": true}))
        .unwrap();
        assert_eq!(
            Value::Object(got.settings),
            json!({"defaultServiceExportTo": ["."], "outboundTrafficPolicy": "REGISTRY_ONLY", "pathNormalization": "MERGE_SLASHES"})
        );
        assert_eq!(got.unused, vec!["enableTracing".to_string(), "trustDomain".to_string()]);
        let err = settings_from(&json!({"defaultServiceExportTo": "."})).unwrap_err();
        assert_eq!(err.to_string(), "MeshConfig defaultServiceExportTo: expected a list of strings");
    }
}
