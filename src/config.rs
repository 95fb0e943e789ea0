//! Loading: JSON in (one resource, an array, a `kind: List`, or the plugin-config object
//! `{"resources": [...], "settings": {...}}`), typed resources and settings out, with every
//! problem collected as a diagnostic instead of stopping at the first.

use crate::crd;
use crate::diag::{Diagnostic, Diagnostics, ResourceRef};
use crate::k8s::{self, KindClass, Registry};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

pub const DEFAULT_CLUSTER_TEMPLATE: &str = "outbound|{port}|{subset}|{host}";
pub const DEFAULT_ROUTING_HEADER: &str = "x-meshroute-cluster";

/// The proxy's own identity and the knobs of meshroute itself. Strict: an unknown key is an
/// error, because a typo here silently changes behaviour (unlike Istio resources, which are ours
/// to be lenient with).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Settings {
    /// Namespace of the proxy: resolves short host names in match-time selectors
    /// (`sourceNamespace`) and decides which alternative host names a service answers to.
    pub namespace: String,
    /// Labels of the proxy's workload, for `sourceLabels` and Sidecar `workloadSelector`.
    pub labels: BTreeMap<String, String>,
    /// `mesh` for a sidecar, or `namespace/name` of the Gateway this proxy implements.
    pub gateway: String,
    /// Cluster name pattern; `{port}`, `{subset}`, `{host}` are replaced.
    pub cluster_template: String,
    /// Request header the filter writes and Envoy's route reads with `cluster_header`.
    pub routing_header: String,
    /// Kubernetes cluster domain, for short-name expansion.
    pub domain_suffix: String,
    /// Port assumed when neither the destination nor the request names one (the listener port).
    pub default_port: u32,
    /// Overrides the Sidecar's `outboundTrafficPolicy.mode` (`ALLOW_ANY` | `REGISTRY_ONLY`).
    pub outbound_traffic_policy: Option<String>,
    /// Where the proxy runs, `region/zone/subzone`: the reference point of DestinationRule
    /// `localityLbSetting` (distribute `from`, failover priorities) in generated Envoy clusters.
    pub locality: Option<String>,
    /// Largest request body copied to a mirror; bigger requests are not mirrored. At most
    /// [`MAX_MIRROR_BODY_LIMIT`].
    pub mirror_body_limit: u64,
    /// Bytes of request bodies one VM may hold for mirrors at once, across all its streams; a
    /// body that would go over is not mirrored (counted as skipped). At most
    /// [`MAX_MIRROR_BODY_BUDGET`], at least `mirrorBodyLimit`.
    pub mirror_body_budget: u64,
    /// Mirror calls one VM may have waiting for an answer; beyond, mirrors are skipped (counted).
    pub mirror_max_in_flight: u32,
    /// Per-request timeout of a mirror call, milliseconds; a mirror that has not answered by then
    /// counts as failed.
    pub mirror_timeout_ms: u64,
    /// MeshConfig `defaultVirtualServiceExportTo`: the `exportTo` of a VirtualService that sets
    /// none (empty = `*`).
    pub default_virtual_service_export_to: Vec<String>,
    /// MeshConfig `defaultDestinationRuleExportTo` (empty = `*`).
    pub default_destination_rule_export_to: Vec<String>,
    /// MeshConfig `defaultServiceExportTo`, for ServiceEntries (empty = `*`).
    pub default_service_export_to: Vec<String>,
    /// The Envoy route that reads the routing header carries Istio's default retry policy for
    /// requests without `x-envoy-max-retries` (what `meshroute envoy`, envoy/sidecar.yaml and
    /// deploy/istio write). The filter then writes retry hints only for rules whose retries are
    /// not the default, and a rule with the default policy costs no header writes for it.
    pub retry_policy_on_route: bool,
    /// With `retryPolicyOnRoute`: the route configuration also has one route per retry policy of
    /// the rules, matched on `x-meshroute-retry-policy` (what `meshroute envoy` and `meshroute
    /// compile --as envoyfilter` write, R221). The filter then names a rule's own policy in that
    /// header and writes no retry hint at all; without it, it hints the policy.
    pub retry_policy_routes: bool,
    /// How often the filter hands its counters to Envoy, milliseconds: each VM adds up its
    /// increments and flushes them on its timer, one host call per changed counter instead of
    /// one per event. `/stats` is exact up to this much behind; 0 = at every event.
    pub counter_flush_ms: u64,
    /// MeshConfig `pathNormalization.normalization` for the generated HTTP connection managers:
    /// `NONE`, `BASE` (the default), `MERGE_SLASHES`, `DECODE_AND_MERGE_SLASHES`. The filter
    /// itself decides on the path Envoy has normalized.
    pub path_normalization: String,
    /// The revision this configuration is (`meshroute apply` stamps it): the filter logs it on
    /// load and exposes its number as the gauge `meshroute.config.revision`.
    pub revision: Option<Revision>,
    /// Tag every response with `x-meshroute-revision: <number>-<hash>` (off by default: it tells
    /// clients about the proxy's configuration).
    pub revision_header: bool,
    /// MeshConfig `defaultConfig.proxyMetadata` turns on DNS capture with address
    /// auto-allocation (`ISTIO_META_DNS_CAPTURE` and `ISTIO_META_DNS_AUTO_ALLOCATE` or
    /// `PILOT_ENABLE_IP_AUTOALLOCATE` = `"true"`): ServiceEntries need no `addresses` (IST0134, K16).
    pub dns_auto_allocate: bool,
}

/// A revision of the configuration, as `meshroute apply` numbers it.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Revision {
    pub number: u64,
    /// Content hash of the configuration without its revision stamp.
    pub hash: String,
}

impl std::fmt::Display for Revision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.number, self.hash)
    }
}

/// MeshConfig `ProxyPathNormalization.NormalizationType` values meshroute accepts (`DEFAULT`
/// means `BASE`, as in istiod).
pub const PATH_NORMALIZATIONS: &[&str] = &["NONE", "BASE", "DEFAULT", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"];

/// Bounds of the mirror settings. A Wasm VM's memory never shrinks and an allocation failure
/// traps the VM, so what the filter may buffer is capped well below what V8 gives a module
/// (docs/operations.md, "Mirroring").
pub const MAX_MIRROR_BODY_LIMIT: u64 = 8 * 1024 * 1024;
pub const MAX_MIRROR_BODY_BUDGET: u64 = 64 * 1024 * 1024;
pub const MAX_MIRROR_IN_FLIGHT: u32 = 10_000;
pub const MAX_MIRROR_TIMEOUT_MS: u64 = 60_000;

impl Default for Settings {
    fn default() -> Self {
        Settings {
            namespace: "default".into(),
            labels: BTreeMap::new(),
            gateway: "mesh".into(),
            cluster_template: DEFAULT_CLUSTER_TEMPLATE.into(),
            routing_header: DEFAULT_ROUTING_HEADER.into(),
            domain_suffix: "cluster.local".into(),
            default_port: 80,
            outbound_traffic_policy: None,
            locality: None,
            mirror_body_limit: 64 * 1024,
            mirror_body_budget: 8 * 1024 * 1024,
            mirror_max_in_flight: 256,
            mirror_timeout_ms: 5_000,
            default_virtual_service_export_to: Vec::new(),
            default_destination_rule_export_to: Vec::new(),
            default_service_export_to: Vec::new(),
            retry_policy_on_route: false,
            retry_policy_routes: false,
            counter_flush_ms: 1_000,
            path_normalization: "BASE".into(),
            revision: None,
            revision_header: false,
            dns_auto_allocate: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Spec {
    VirtualService(crd::VirtualService),
    DestinationRule(Box<crd::DestinationRule>),
    ServiceEntry(crd::ServiceEntry),
    Gateway(crd::Gateway),
    Sidecar(crd::Sidecar),
    WorkloadEntry(crd::WorkloadEntry),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// Position in the flattened input; diagnostics carry it so a front end can map back.
    pub index: usize,
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub metadata: crd::Metadata,
    pub spec: Spec,
    /// `status.addresses[].value` (a ServiceEntry's addresses allocated by istiod, K16).
    pub status_addresses: Vec<String>,
}

impl Resource {
    pub fn reference(&self) -> ResourceRef {
        ResourceRef {
            index: self.index,
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Everything the input declared: the resources that parsed and the settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bundle {
    pub resources: Vec<Resource>,
    pub settings: Settings,
    /// Kubernetes Services, workloads, endpoints, Secrets and Namespaces (`crate::k8s`).
    pub registry: Registry,
}

impl Bundle {
    pub fn virtual_services(&self) -> impl Iterator<Item = (&Resource, &crd::VirtualService)> {
        self.resources.iter().filter_map(|r| match &r.spec {
            Spec::VirtualService(s) => Some((r, s)),
            _ => None,
        })
    }

    pub fn destination_rules(&self) -> impl Iterator<Item = (&Resource, &crd::DestinationRule)> {
        self.resources.iter().filter_map(|r| match &r.spec {
            Spec::DestinationRule(s) => Some((r, s.as_ref())),
            _ => None,
        })
    }

    pub fn service_entries(&self) -> impl Iterator<Item = (&Resource, &crd::ServiceEntry)> {
        self.resources.iter().filter_map(|r| match &r.spec {
            Spec::ServiceEntry(s) => Some((r, s)),
            _ => None,
        })
    }

    pub fn gateways(&self) -> impl Iterator<Item = (&Resource, &crd::Gateway)> {
        self.resources.iter().filter_map(|r| match &r.spec {
            Spec::Gateway(s) => Some((r, s)),
            _ => None,
        })
    }

    pub fn sidecars(&self) -> impl Iterator<Item = (&Resource, &crd::Sidecar)> {
        self.resources.iter().filter_map(|r| match &r.spec {
            Spec::Sidecar(s) => Some((r, s)),
            _ => None,
        })
    }

    pub fn workload_entries(&self) -> impl Iterator<Item = (&Resource, &crd::WorkloadEntry)> {
        self.resources.iter().filter_map(|r| match &r.spec {
            Spec::WorkloadEntry(s) => Some((r, s)),
            _ => None,
        })
    }
}

const KINDS: [&str; 6] = ["VirtualService", "DestinationRule", "ServiceEntry", "Gateway", "Sidecar", "WorkloadEntry"];

/// Parses JSON text. Syntax errors are reported with line and column.
pub fn load_json(text: &[u8]) -> (Bundle, Diagnostics) {
    match serde_json::from_slice::<Value>(text) {
        // `null` would flatten to no resources, a table that answers every request 404/503;
        // like `""` (invalid JSON) and `{}` (not a resource) it is a mistake, not a mesh.
        Ok(Value::Null) => {
            let mut diags = Diagnostics::default();
            diags.push(Diagnostic::error(
                None,
                "",
                "the plugin configuration is null: expected {\"resources\": [...], \"settings\": {...}} or resources",
            ));
            (Bundle::default(), diags)
        }
        Ok(v) => load_value(v),
        Err(e) => {
            let mut diags = Diagnostics::default();
            diags.push(Diagnostic::error(
                None,
                "",
                format!("invalid JSON at line {}, column {}: {e}", e.line(), e.column()),
            ));
            (Bundle::default(), diags)
        }
    }
}

/// Accepts any of the input shapes and flattens them into one resource list.
pub fn load_value(v: Value) -> (Bundle, Diagnostics) {
    let mut diags = Diagnostics::default();
    let mut raw = Vec::new();
    let mut settings = Settings::default();
    let mut registry = Registry::default();
    match v {
        Value::Object(mut obj) if obj.contains_key("resources") || obj.contains_key("settings") => {
            if let Some(s) = obj.remove("settings") {
                match serde_path_to_error::deserialize::<_, Settings>(s) {
                    Ok(s) => settings = s,
                    Err(e) => diags.push(Diagnostic::error(
                        None,
                        join_path("settings", &e.path().to_string()),
                        e.inner().to_string(),
                    )),
                }
            }
            if let Some(r) = obj.remove("registry") {
                match serde_path_to_error::deserialize::<_, Registry>(r) {
                    Ok(r) => registry = r,
                    Err(e) => diags.push(Diagnostic::error(
                        None,
                        join_path("registry", &dotted_to_indexed(&e.path().to_string())),
                        e.inner().to_string(),
                    )),
                }
            }
            for key in obj.keys().filter(|k| *k != "resources") {
                diags.push(Diagnostic::error(
                    None,
                    key.clone(),
                    "unknown key in plugin configuration (expected \"resources\", \"settings\" and \"registry\")",
                ));
            }
            match obj.remove("resources") {
                Some(Value::Array(items)) => items.into_iter().for_each(|i| flatten(i, &mut raw)),
                Some(Value::Null) | None => {}
                Some(_) => diags.push(Diagnostic::error(None, "resources", "must be a list of resources")),
            }
        }
        other => flatten(other, &mut raw),
    }
    // Slots in input order; a redefinition empties the earlier slot. The slot of each
    // kind/namespace/name is looked up by hash, so many resources load in linear time.
    let mut slots: Vec<Option<Resource>> = Vec::with_capacity(raw.len());
    let mut slot_of: HashMap<(String, String, String), usize> = HashMap::with_capacity(raw.len());
    let mut skipped = Skipped::default();
    for (index, value) in raw.into_iter().enumerate() {
        if let Some(r) = parse_resource(index, value, &mut registry, &mut skipped, &mut diags) {
            // The same kind/namespace/name again replaces the earlier one, as `kubectl apply`
            // of the same files would (docs/semantics.md R5).
            let key = (r.kind.clone(), r.namespace.clone(), r.name.clone());
            if let Some(old) = slot_of.insert(key, slots.len()).and_then(|pos| slots.get_mut(pos)?.take()) {
                diags.push(
                    Diagnostic::warning(
                        Some(old.reference()),
                        "",
                        format!(
                            "{} {} is redefined by resource #{}; this definition has no effect",
                            old.kind,
                            old.key(),
                            r.index
                        ),
                    )
                    .with_code("MR0001"),
                );
            }
            slots.push(Some(r));
        }
    }
    let resources: Vec<Resource> = slots.into_iter().flatten().collect();
    registry.augment_topology();
    skipped.report(&mut diags);
    (Bundle { resources, settings, registry }, diags)
}

/// Kinds meshroute does not use, each reported once (on its first object) with a count.
#[derive(Default)]
struct Skipped(Vec<(String, ResourceRef, usize)>);

impl Skipped {
    fn add(&mut self, api_version: &str, r: ResourceRef) {
        let key = format!("{} ({api_version})", r.kind);
        match self.0.iter_mut().find(|(k, _, _)| *k == key) {
            Some((_, _, n)) => *n += 1,
            None => self.0.push((key, r, 1)),
        }
    }

    fn report(self, diags: &mut Diagnostics) {
        for (key, r, n) in self.0 {
            let what = if n == 1 { format!("kind {key}") } else { format!("kind {key}, {n} objects,") };
            diags.push(Diagnostic::info(Some(r), "", format!("{what} not used by meshroute; skipped")));
        }
    }
}

fn flatten(v: Value, out: &mut Vec<Value>) {
    match v {
        Value::Array(items) => items.into_iter().for_each(|i| flatten(i, out)),
        Value::Object(mut obj) if obj.get("kind").and_then(Value::as_str) == Some("List") => {
            if let Some(Value::Array(items)) = obj.remove("items") {
                items.into_iter().for_each(|i| flatten(i, out));
            }
        }
        Value::Null => {}
        other => out.push(other),
    }
}

fn parse_resource(
    index: usize,
    value: Value,
    registry: &mut Registry,
    skipped: &mut Skipped,
    diags: &mut Diagnostics,
) -> Option<Resource> {
    let Value::Object(mut obj) = value else {
        diags.push(Diagnostic::error(
            None,
            format!("[{index}]"),
            "expected a resource object with apiVersion, kind, metadata and spec",
        ));
        return None;
    };
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_string();
    let metadata: crd::Metadata = match obj.remove("metadata") {
        Some(m) => serde_json::from_value(m).unwrap_or_default(),
        None => crd::Metadata::default(),
    };
    let namespace = metadata.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| "default".into());
    let reference = ResourceRef {
        index,
        kind: if kind.is_empty() { "<no kind>".into() } else { kind.clone() },
        namespace: namespace.clone(),
        name: metadata.name.clone(),
    };
    match k8s::classify(&api_version, &kind) {
        KindClass::Kubernetes => {
            k8s::read(&obj, &metadata, reference, registry, diags);
            return None;
        }
        KindClass::NotUsed => {
            skipped.add(&api_version, reference);
            return None;
        }
        KindClass::Istio => {}
    }
    let r = Some(reference.clone());
    if !KINDS.contains(&kind.as_str()) {
        let msg = if kind.is_empty() {
            "missing kind".to_string()
        } else {
            format!("unsupported kind {kind:?} (expected one of {})", KINDS.join(", "))
        };
        diags.push(Diagnostic::error(r, "kind", msg));
        return None;
    }
    let group_ok = matches!(
        api_version.as_str(),
        "networking.istio.io/v1alpha3" | "networking.istio.io/v1beta1" | "networking.istio.io/v1"
    );
    if !group_ok {
        diags.push(Diagnostic::error(
            r.clone(),
            "apiVersion",
            format!("unsupported apiVersion {api_version:?} (expected networking.istio.io/v1, v1beta1 or v1alpha3)"),
        ));
        return None;
    }
    if metadata.name.is_empty() {
        diags.push(Diagnostic::error(r.clone(), "metadata.name", "missing name"));
        return None;
    }
    for key in obj.keys() {
        if !matches!(key.as_str(), "apiVersion" | "kind" | "spec" | "status") {
            diags.push(Diagnostic::warning(r.clone(), key.clone(), "unknown field, ignored"));
        }
    }
    let spec_value = obj.remove("spec").unwrap_or(Value::Object(Default::default()));
    let status_addresses: Vec<String> = obj
        .get("status")
        .and_then(|s| s.get("addresses"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|x| x.get("value")?.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let spec = match kind.as_str() {
        "VirtualService" => typed(spec_value, &reference, diags).map(Spec::VirtualService),
        "DestinationRule" => typed(spec_value, &reference, diags).map(|d| Spec::DestinationRule(Box::new(d))),
        "ServiceEntry" => typed(spec_value, &reference, diags).map(Spec::ServiceEntry),
        "Gateway" => typed(spec_value, &reference, diags).map(Spec::Gateway),
        "Sidecar" => typed(spec_value, &reference, diags).map(Spec::Sidecar),
        _ => typed(spec_value, &reference, diags).map(Spec::WorkloadEntry),
    }?;
    Some(Resource {
        index,
        api_version,
        kind,
        name: metadata.name.clone(),
        namespace,
        metadata,
        spec,
        status_addresses,
    })
}

#[cfg(feature = "unknown-field-warnings")]
thread_local! {
    static REPORT_UNKNOWN_FIELDS: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Runs `f` with the loader the filter is built with (no `unknown-field-warnings`: no MR0002),
/// so that a test can check that both refuse the same configurations. Not for production use.
#[doc(hidden)]
pub fn as_in_the_filter<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(feature = "unknown-field-warnings")]
    {
        let before = REPORT_UNKNOWN_FIELDS.with(|c| c.replace(false));
        let r = f();
        REPORT_UNKNOWN_FIELDS.with(|c| c.set(before));
        r
    }
    #[cfg(not(feature = "unknown-field-warnings"))]
    f()
}

/// Deserialises a spec, reporting a type error with its field path and every field the type does
/// not know as a warning.
fn typed<T: for<'de> Deserialize<'de>>(spec: Value, r: &ResourceRef, diags: &mut Diagnostics) -> Option<T> {
    #[cfg_attr(not(feature = "unknown-field-warnings"), allow(unused_mut))]
    let mut ignored: Vec<String> = Vec::new();
    #[cfg(feature = "unknown-field-warnings")]
    let result = if REPORT_UNKNOWN_FIELDS.with(std::cell::Cell::get) {
        let mut on_ignored = |p: serde_ignored::Path<'_>| ignored.push(render_path(&p));
        // By value: each part of the JSON tree is freed as soon as it is converted, so a big
        // spec is never held twice (a Wasm VM keeps its peak memory for good).
        let de = serde_ignored::Deserializer::new(spec, &mut on_ignored);
        serde_path_to_error::deserialize::<_, T>(de)
    } else {
        serde_path_to_error::deserialize::<_, T>(spec)
    };
    // What the filter runs: unknown fields pass unreported (they were only ever a warning).
    #[cfg(not(feature = "unknown-field-warnings"))]
    let result = serde_path_to_error::deserialize::<_, T>(spec);
    match result {
        Ok(t) => {
            for p in ignored {
                let path = join_path("spec", &p);
                diags.push(
                    Diagnostic::warning(
                        Some(r.clone()),
                        path.clone(),
                        format!("unknown field {path:?} in {}; it is ignored", r.kind),
                    )
                    .with_code("MR0002"),
                );
            }
            Some(t)
        }
        Err(e) => {
            let path = dotted_to_indexed(&e.path().to_string());
            diags.push(Diagnostic::error(Some(r.clone()), join_path("spec", &path), e.into_inner().to_string()));
            None
        }
    }
}

#[cfg(feature = "unknown-field-warnings")]
fn render_path(p: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match p {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", render_path(parent)),
        Path::Map { parent, key } => join_path(&render_path(parent), key),
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => render_path(parent),
    }
}

/// serde_path_to_error prints sequence indices as `.0`; Istio users read `[0]`.
fn dotted_to_indexed(p: &str) -> String {
    if p == "." {
        return String::new();
    }
    let mut out = String::new();
    for seg in p.split('.') {
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(seg);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

pub(crate) fn join_path(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}.{b}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vs(spec: Value) -> Value {
        json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
               "metadata": {"name": "reviews"}, "spec": spec})
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn null_empty_and_empty_object_plugin_configs_are_refused() {
        for text in ["null", " null\n", "", "{}"] {
            let compiled = crate::compile_json(text.as_bytes());
            assert!(compiled.table.is_none(), "{text:?} must be refused");
            assert!(compiled.diagnostics.errors().next().is_some(), "{text:?}");
        }
        let (_, d) = load_json(b"null");
        assert!(d.errors().any(|e| e.to_string().contains("plugin configuration is null")));
        // An explicit empty resource list is a deliberate (if useless) configuration.
        assert!(crate::compile_json(br#"{"resources": []}"#).table.is_some());
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn mirror_settings_above_their_maximum_are_refused_with_the_field_named() {
        let cfg = |settings: Value| {
            crate::compile_json(json!({"resources": [], "settings": settings}).to_string().as_bytes())
        };
        for (settings, field) in [
            (json!({"mirrorBodyLimit": 16 * 1024 * 1024}), "settings.mirrorBodyLimit"),
            (json!({"mirrorBodyBudget": 1024 * 1024 * 1024}), "settings.mirrorBodyBudget"),
            (json!({"mirrorBodyLimit": 1_000_000, "mirrorBodyBudget": 500_000}), "settings.mirrorBodyBudget"),
            (json!({"mirrorMaxInFlight": 0}), "settings.mirrorMaxInFlight"),
            (json!({"mirrorMaxInFlight": 1_000_000}), "settings.mirrorMaxInFlight"),
            (json!({"mirrorTimeoutMs": 0}), "settings.mirrorTimeoutMs"),
        ] {
            let c = cfg(settings.clone());
            assert!(c.table.is_none(), "{settings} must be refused");
            let errors: Vec<String> = c.diagnostics.errors().map(|e| e.to_string()).collect();
            assert!(errors.iter().any(|e| e.contains(field)), "{settings}: {errors:?}");
        }
        let ok = cfg(json!({"mirrorBodyLimit": 8 * 1024 * 1024, "mirrorBodyBudget": 64 * 1024 * 1024,
                            "mirrorMaxInFlight": 10_000, "mirrorTimeoutMs": 60_000}));
        assert!(ok.table.is_some(), "the maxima themselves are accepted");
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn accepts_single_array_list_and_plugin_config_shapes() {
        let one = vs(json!({"hosts": ["reviews"]}));
        for input in [
            one.clone(),
            json!([one.clone()]),
            json!({"kind": "List", "apiVersion": "v1", "items": [one.clone()]}),
            json!({"resources": [one.clone()], "settings": {"namespace": "prod"}}),
        ] {
            let (b, d) = load_value(input);
            assert!(d.is_empty(), "{d}");
            assert_eq!(b.resources.len(), 1);
            assert_eq!(b.resources[0].namespace, "default");
        }
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn unknown_istio_field_is_a_warning_that_names_it() {
        let (b, d) = load_value(vs(json!({"hosts": ["a"], "http": [{"route": [], "retrys": {}}]})));
        assert_eq!(b.resources.len(), 1);
        let w: Vec<_> = d.warnings().collect();
        assert_eq!(w.len(), 1, "{d}");
        assert_eq!(w[0].path, "spec.http[0].retrys");
        assert!(w[0].message.contains("retrys"));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn wrong_type_is_an_error_with_the_field_path() {
        let (b, d) = load_value(vs(
            json!({"hosts": ["a"], "http": [{"route": [{"destination": {"host": "a"}, "weight": "80"}]}]}),
        ));
        assert!(b.resources.is_empty());
        let e: Vec<_> = d.errors().collect();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].path, "spec.http[0].route[0].weight");
        assert_eq!(e[0].to_string().split(':').next(), Some("error"));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn a_later_definition_replaces_an_earlier_one_with_a_warning() {
        let (b, d) = load_value(json!([vs(json!({"hosts": ["a"]})), vs(json!({"hosts": ["b"]}))]));
        assert_eq!(b.resources.len(), 1);
        assert_eq!(b.resources[0].index, 1);
        let w: Vec<_> = d.warnings().collect();
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].code, Some("MR0001"));
        assert_eq!(w[0].resource.as_ref().map(|r| r.index), Some(0));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn unknown_setting_is_an_error() {
        let (_, d) = load_value(json!({"resources": [], "settings": {"namespce": "x"}}));
        assert!(d.has_errors());
        assert!(d.to_string().contains("namespce"), "{d}");
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn wrong_kind_and_api_version_are_errors() {
        let (b, d) = load_value(json!([
            {"apiVersion": "networking.istio.io/v1", "kind": "VirtualServce", "metadata": {"name": "a"}},
            {"apiVersion": "apps/v1", "kind": "Gateway", "metadata": {"name": "b"}},
        ]));
        assert!(b.resources.is_empty());
        assert_eq!(d.errors().count(), 2, "{d}");
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn metadata_noise_from_kubectl_is_not_reported() {
        let mut v = vs(json!({"hosts": ["a"]}));
        v["metadata"]["uid"] = json!("123");
        v["metadata"]["resourceVersion"] = json!("9");
        v["status"] = json!({});
        let (_, d) = load_value(v);
        assert!(d.is_empty(), "{d}");
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn deprecated_mirror_percent_spellings_are_read() {
        let (b, d) = load_value(vs(json!({"hosts": ["a"], "http": [{"mirror_percent": 5}, {"mirrorPercent": 7}]})));
        assert!(d.is_empty(), "{d}");
        let Spec::VirtualService(v) = &b.resources[0].spec else { unreachable!() };
        assert_eq!(v.http[0].mirror_percent, Some(5));
        assert_eq!(v.http[1].mirror_percent, Some(7));
    }
}
