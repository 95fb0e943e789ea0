//! Configurations that istiod routes in a particular way, decided by meshroute the same way:
//! exportTo visibility, Gateway server hosts, merged gateway hosts, VirtualServices that yield no
//! route, derivePort, and the Istio 1.26 Gateway certificate sources. Each test cites its rule in
//! docs/semantics.md.

#![allow(clippy::panic)]

use meshroute::{compile_json, Decision, Request, RouteTable, Severity, SplitMix64};
use serde_json::{json, Value};

fn res(kind: &str, ns: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": kind,
           "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

fn route_to(host: &str) -> Value {
    json!([{"destination": {"host": host}}])
}

#[track_caller]
fn table(resources: Value, settings: Value) -> RouteTable {
    let c = compile_json(json!({"resources": resources, "settings": settings}).to_string().as_bytes());
    assert!(!c.diagnostics.has_errors(), "{}", c.diagnostics);
    c.table.unwrap_or_else(|| panic!("no table"))
}

/// The cluster a request goes to, or what else happened to it.
fn outcome(t: &RouteTable, authority: &str, path: &str) -> String {
    let mut rng = SplitMix64(7);
    match t.decide(&Request::new("GET", authority, path), &mut rng) {
        Decision::Matched(m) => match m.destination {
            Some(d) => d.cluster.clone(),
            None => "matched without destination".into(),
        },
        Decision::Default(d) => format!("default {}", d.cluster),
        Decision::NoRoute { .. } => "404".into(),
        Decision::Passthrough => "passthrough".into(),
        Decision::Blocked => "502".into(),
    }
}

fn service_entry(ns: &str, host: &str, export_to: Value) -> Value {
    res(
        "ServiceEntry",
        ns,
        host,
        json!({"hosts": [host], "location": "MESH_EXTERNAL", "resolution": "DNS", "exportTo": export_to,
               "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}]}),
    )
}

// === exportTo (R150) ===

#[test]
fn virtual_service_exported_only_to_its_namespace_does_not_route_other_namespaces() {
    let vs = |export: Value| {
        res(
            "VirtualService",
            "other",
            "api",
            json!({"hosts": ["api.example.com"], "exportTo": export,
            "http": [{"route": route_to("v2.example.com")}]}),
        )
    };
    let t = table(json!([vs(json!(["."]))]), json!({"namespace": "default"}));
    assert_eq!(outcome(&t, "api.example.com", "/"), "passthrough");
    let t = table(json!([vs(json!(["."]))]), json!({"namespace": "other"}));
    assert_eq!(outcome(&t, "api.example.com", "/"), "outbound|80||v2.example.com");
    let t = table(json!([vs(json!(["default"]))]), json!({"namespace": "default"}));
    assert_eq!(outcome(&t, "api.example.com", "/"), "outbound|80||v2.example.com");
    let t = table(json!([vs(json!([]))]), json!({"namespace": "default"}));
    assert_eq!(outcome(&t, "api.example.com", "/"), "outbound|80||v2.example.com", "default is *");
}

#[test]
fn mesh_wide_default_export_applies_only_when_the_resource_says_nothing() {
    let vs = |export: Value| {
        res(
            "VirtualService",
            "other",
            "api",
            json!({"hosts": ["api.example.com"], "exportTo": export,
            "http": [{"route": route_to("v2.example.com")}]}),
        )
    };
    let settings = json!({"namespace": "default", "defaultVirtualServiceExportTo": ["."]});
    assert_eq!(outcome(&table(json!([vs(json!([]))]), settings.clone()), "api.example.com", "/"), "passthrough");
    assert_eq!(
        outcome(&table(json!([vs(json!(["*"]))]), settings), "api.example.com", "/"),
        "outbound|80||v2.example.com"
    );
}

#[test]
fn service_entry_exported_to_no_one_or_elsewhere_is_not_in_this_proxys_registry() {
    let settings = json!({"namespace": "default", "outboundTrafficPolicy": "REGISTRY_ONLY"});
    for export in [json!(["~"]), json!(["."]), json!(["prod"])] {
        let t = table(json!([service_entry("other", "weather.example.com", export.clone())]), settings.clone());
        assert_eq!(outcome(&t, "weather.example.com", "/"), "502", "exportTo {export}");
    }
    let t = table(json!([service_entry("other", "weather.example.com", json!(["default"]))]), settings.clone());
    assert_eq!(outcome(&t, "weather.example.com", "/"), "default outbound|80||weather.example.com");
    let hidden = json!({"namespace": "default", "outboundTrafficPolicy": "REGISTRY_ONLY",
                        "defaultServiceExportTo": ["."]});
    let t = table(json!([service_entry("other", "weather.example.com", json!([]))]), hidden);
    assert_eq!(outcome(&t, "weather.example.com", "/"), "502");
}

// === Gateway binding (R23, R17) ===

fn gateway(hosts: Value) -> Value {
    res(
        "Gateway",
        "istio-system",
        "gw",
        json!({"selector": {"istio": "ingressgateway"},
               "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": hosts}]}),
    )
}

fn gw_vs(ns: &str, name: &str, host: &str, http: Value) -> Value {
    res("VirtualService", ns, name, json!({"hosts": [host], "gateways": ["istio-system/gw"], "http": http}))
}

fn gateway_settings() -> Value {
    json!({"namespace": "istio-system", "gateway": "istio-system/gw"})
}

#[test]
fn server_host_namespace_stops_other_namespaces_from_binding() {
    let t = table(
        json!([
            gateway(json!(["team-a/*.example.com"])),
            gw_vs("team-b", "steal", "api.example.com", json!([{"route": route_to("evil.team-b.svc.cluster.local")}])),
            gw_vs("team-a", "own", "shop.example.com", json!([{"route": route_to("shop.team-a.svc.cluster.local")}])),
        ]),
        gateway_settings(),
    );
    assert_eq!(outcome(&t, "api.example.com", "/"), "passthrough");
    assert_eq!(outcome(&t, "shop.example.com", "/"), "outbound|80||shop.team-a.svc.cluster.local");
}

#[test]
fn virtual_service_host_outside_every_server_host_is_not_served() {
    let t = table(
        json!([
            gateway(json!(["*/shop.example.com"])),
            res(
                "VirtualService",
                "default",
                "wide",
                json!({"hosts": ["*.example.com"], "gateways": ["istio-system/gw"],
                "http": [{"route": route_to("shop")}]})
            ),
        ]),
        gateway_settings(),
    );
    // The vhost domain is the more specific name: shop.example.com only.
    assert_eq!(outcome(&t, "shop.example.com", "/"), "outbound|80||shop.default.svc.cluster.local");
    assert_eq!(outcome(&t, "other.example.com", "/"), "passthrough");
}

#[test]
fn several_virtual_services_for_one_gateway_host_are_merged_with_catch_alls_last() {
    let t = table(
        json!([
            gateway(json!(["*"])),
            gw_vs(
                "default",
                "a",
                "bookinfo.example.com",
                json!([
                    {"match": [{"uri": {"prefix": "/productpage"}}], "route": route_to("productpage")},
                    {"route": route_to("fallback")},
                ])
            ),
            gw_vs(
                "default",
                "b",
                "bookinfo.example.com",
                json!([
                    {"match": [{"uri": {"prefix": "/reviews"}}], "route": route_to("reviews")},
                ])
            ),
        ]),
        gateway_settings(),
    );
    assert_eq!(
        outcome(&t, "bookinfo.example.com", "/productpage"),
        "outbound|80||productpage.default.svc.cluster.local"
    );
    // The second VirtualService's path wins over the first one's catch-all, which moved last.
    assert_eq!(outcome(&t, "bookinfo.example.com", "/reviews/1"), "outbound|80||reviews.default.svc.cluster.local");
    assert_eq!(outcome(&t, "bookinfo.example.com", "/other"), "outbound|80||fallback.default.svc.cluster.local");
    let vs = t.find_vs("bookinfo.example.com").unwrap_or_else(|| panic!("no vhost"));
    let owners: Vec<&str> = vs.rules.iter().map(|r| r.virtual_service.as_str()).collect();
    assert_eq!(owners, ["default/a", "default/a", "default/b"]);
}

// === VirtualServices that yield no route (R151) ===

#[test]
fn virtual_service_whose_matches_all_exclude_this_proxy_leaves_the_default_route() {
    let t = table(
        json!([
            service_entry("default", "weather.example.com", json!([])),
            res(
                "VirtualService",
                "default",
                "weather",
                json!({"hosts": ["weather.example.com"],
                "http": [{"match": [{"sourceLabels": {"app": "canary"}}], "route": route_to("v2.example.com")}]})
            ),
        ]),
        json!({"labels": {"app": "web"}}),
    );
    assert_eq!(outcome(&t, "weather.example.com", "/"), "default outbound|80||weather.example.com");
}

#[test]
fn tcp_only_virtual_service_does_not_claim_the_http_host() {
    let t = table(
        json!([
            service_entry("default", "weather.example.com", json!([])),
            res(
                "VirtualService",
                "default",
                "weather",
                json!({"hosts": ["weather.example.com"],
                "tcp": [{"route": [{"destination": {"host": "weather.example.com"}}]}]})
            ),
        ]),
        json!({}),
    );
    assert_eq!(outcome(&t, "weather.example.com", "/"), "default outbound|80||weather.example.com");
}

#[test]
fn virtual_service_with_routes_only_on_another_port_leaves_this_port_its_default_route() {
    let mut se = service_entry("default", "weather.example.com", json!([]));
    se["spec"]["ports"] = json!([{"number": 80, "name": "http", "protocol": "HTTP"},
                                 {"number": 8080, "name": "http-alt", "protocol": "HTTP"}]);
    let t = table(
        json!([
            se,
            res(
                "VirtualService",
                "default",
                "weather",
                json!({"hosts": ["weather.example.com"],
            "http": [{"match": [{"port": 8080}], "route": route_to("v2.example.com")}]})
            )
        ]),
        json!({}),
    );
    assert_eq!(outcome(&t, "weather.example.com:8080", "/"), "outbound|80||v2.example.com");
    assert_eq!(outcome(&t, "weather.example.com", "/"), "default outbound|80||weather.example.com");
}

// === Gateway certificates (R125) ===

fn tls_gateway(tls: Value) -> Value {
    json!([res(
        "Gateway",
        "istio-system",
        "gw",
        json!({"servers": [{"port": {"number": 443, "name": "https",
        "protocol": "HTTPS"}, "hosts": ["*.example.com"], "tls": tls}]})
    )])
}

fn diagnostics(resources: Value) -> meshroute::Diagnostics {
    compile_json(resources.to_string().as_bytes()).diagnostics
}

#[test]
fn credential_names_and_tls_certificates_are_certificate_sources() {
    let d = diagnostics(tls_gateway(json!({"mode": "SIMPLE", "credentialNames": ["rsa-cert", "ecdsa-cert"]})));
    assert!(!d.has_errors(), "{d}");
    assert!(d.iter().all(|x| x.code != Some("MR0002")), "credentialNames is a known field: {d}");
    let d = diagnostics(tls_gateway(json!({"mode": "SIMPLE", "tlsCertificates": [
        {"serverCertificate": "/etc/certs/rsa.pem", "privateKey": "/etc/certs/rsa.key"}]})));
    assert!(!d.has_errors(), "{d}");
}

#[test]
fn tls_certificates_are_checked_one_by_one_and_sources_are_exclusive() {
    let d = diagnostics(tls_gateway(json!({"mode": "SIMPLE", "tlsCertificates": [
        {"serverCertificate": "/c.pem", "privateKey": "/c.key"}, {"serverCertificate": "/d.pem"}]})));
    let e = d
        .iter()
        .find(|x| x.path == "spec.servers[0].tls.tlsCertificates[1].privateKey")
        .unwrap_or_else(|| panic!("{d}"));
    assert_eq!(e.severity, Severity::Error);
    assert!(e.message.contains("SIMPLE TLS requires a private key"), "{}", e.message);
    let d = diagnostics(tls_gateway(json!({"mode": "SIMPLE", "credentialName": "a", "credentialNames": ["b"]})));
    assert!(d.iter().any(|x| x.message.contains("only one of credential_name, credential_names")), "{d}");
    let d = diagnostics(tls_gateway(json!({"mode": "ISTIO_MUTUAL", "credentialNames": ["b"]})));
    assert!(d.iter().any(|x| x.message.contains("ISTIO_MUTUAL TLS cannot have associated credentialNames")), "{d}");
}

// === Envoy generation: DestinationRule merging and visibility (R152) ===

#[cfg(feature = "envoy")]
fn envoy_clusters(resources: Value, settings: Value) -> Vec<Value> {
    use std::path::Path;
    let (bundle, d) = meshroute::load_value(json!({"resources": resources, "settings": settings}));
    assert!(!d.has_errors(), "{d}");
    let c = meshroute::compile(&bundle, d);
    let t = c.table.unwrap_or_else(|| panic!("{}", c.diagnostics));
    let opts = meshroute::envoy::Options {
        wasm: Path::new("meshroute.wasm"),
        listen: "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
        admin: "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
        credentials_dir: None,
    };
    let g = meshroute::envoy::generate(&bundle, &t.clusters, &json!({}), &opts).unwrap_or_else(|e| panic!("{e}"));
    g.config["static_resources"]["clusters"].as_array().cloned().unwrap_or_default()
}

#[cfg(feature = "envoy")]
fn endpoints_of(clusters: &[Value], name: &str) -> Option<Vec<String>> {
    let c = clusters.iter().find(|c| c["name"] == name)?;
    let mut out = Vec::new();
    for group in c["load_assignment"]["endpoints"].as_array()? {
        for ep in group["lb_endpoints"].as_array()? {
            out.push(ep["endpoint"]["address"]["socket_address"]["address"].as_str()?.to_string());
        }
    }
    Some(out)
}

#[cfg(feature = "envoy")]
#[test]
fn subset_defined_in_a_second_destination_rule_gets_its_endpoints() {
    let se = res(
        "ServiceEntry",
        "default",
        "reviews",
        json!({"hosts": ["reviews.example.com"], "location": "MESH_INTERNAL",
        "resolution": "STATIC", "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
        "endpoints": [{"address": "10.0.0.1", "labels": {"version": "v1"}},
                      {"address": "10.0.0.2", "labels": {"version": "v2"}}]}),
    );
    let dr = |name: &str, subset: &str| {
        res(
            "DestinationRule",
            "default",
            name,
            json!({"host": "reviews.example.com",
            "subsets": [{"name": subset, "labels": {"version": subset}}]}),
        )
    };
    let vs = res(
        "VirtualService",
        "default",
        "reviews",
        json!({"hosts": ["reviews.example.com"],
        "http": [{"route": [{"destination": {"host": "reviews.example.com", "subset": "v2"}}]}]}),
    );
    let clusters = envoy_clusters(json!([se, dr("a", "v1"), dr("b", "v2"), vs]), json!({}));
    assert_eq!(endpoints_of(&clusters, "outbound|80|v2|reviews.example.com"), Some(vec!["10.0.0.2".to_string()]));
    assert_eq!(endpoints_of(&clusters, "outbound|80|v1|reviews.example.com"), Some(vec!["10.0.0.1".to_string()]));
}

#[cfg(feature = "envoy")]
#[test]
fn service_entry_not_exported_here_gets_no_cluster() {
    let se = |export: Value| {
        res(
            "ServiceEntry",
            "other",
            "weather",
            json!({"hosts": ["weather.example.com"], "exportTo": export,
            "resolution": "DNS", "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}]}),
        )
    };
    let hidden = envoy_clusters(json!([se(json!(["."]))]), json!({"namespace": "default"}));
    assert!(hidden.iter().all(|c| c["name"] != "outbound|80||weather.example.com"), "{hidden:?}");
    let shown = envoy_clusters(json!([se(json!(["default"]))]), json!({"namespace": "default"}));
    assert!(shown.iter().any(|c| c["name"] == "outbound|80||weather.example.com"));
}
