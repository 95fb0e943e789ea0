//! Istio's own webhook test cases for VirtualService `tcp` and `tls` routes, ported: the same
//! inputs must be accepted, refused or warned about as `ValidateVirtualService` does
//! (docs/semantics.md R190).
//!
//! Source: istio/istio `pkg/config/validation/validation_test.go` at commit
//! 86c9f01fd735fb01d8192f5bcaf0d424afb7f14c — `TestValidateRouteDestination` (every case, run
//! here as the destinations of a TCP and of a TLS route, which `validateTCPRoute` and
//! `validateTLSRoute` check with the same `validateRouteDestinations`) and the L4 cases of
//! `TestValidateVirtualService` ("allow sni based domains", "missing tcp route", "missing tls
//! route", "ip address as sni host", "invalid wildcard as sni host"). The expected outcomes are
//! Istio's; the cases after them cover the rest of `validateTLSMatch`, `validateSniHost` and
//! `validateTCPMatch`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshroute::{load_value, validate, Severity};
use serde_json::{json, Value};

/// Webhook findings only (IST0106 errors, IST0133 warnings): registry lookups (IST0101) are
/// `istioctl analyze`'s, not the webhook's.
fn webhook(spec: Value) -> (Vec<String>, Vec<String>) {
    let doc = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                     "metadata": {"name": "vs", "namespace": "default"}, "spec": spec});
    let (bundle, loaded) = load_value(doc);
    assert!(!loaded.has_errors(), "loader: {loaded}");
    let d = validate(&bundle);
    let pick = |sev: Severity, code: &str| {
        d.iter()
            .filter(|x| x.severity == sev && x.code == Some(code))
            .map(|x| format!("{}: {}", x.path, x.message))
            .collect()
    };
    (pick(Severity::Error, "IST0106"), pick(Severity::Warning, "IST0133"))
}

#[track_caller]
fn check(name: &str, spec: Value, valid: bool, warning: bool) {
    let (errors, warnings) = webhook(spec);
    assert_eq!(errors.is_empty(), valid, "{name}: errors {errors:?}");
    assert_eq!(!warnings.is_empty(), warning, "{name}: warnings {warnings:?}");
}

fn d(host: &str) -> Value {
    json!({"destination": {"host": host}})
}

fn w(host: &str, weight: i64) -> Value {
    json!({"destination": {"host": host}, "weight": weight})
}

/// `TestValidateRouteDestination`: (name, route destinations, valid).
fn route_destination_cases() -> Vec<(&'static str, Value, bool)> {
    vec![
        ("simple", json!([d("foo.baz")]), true),
        ("wildcard dash", json!([d("*-foo.baz")]), true),
        ("wildcard prefix", json!([d("*foo.baz")]), true),
        ("wildcard", json!([d("*")]), false),
        ("bad wildcard", json!([d("foo.*")]), false),
        ("bad fqdn", json!([d("default/baz")]), false),
        ("no destination", json!([{"weight": 0}]), false),
        ("weighted", json!([w("foo.baz.south", 25), w("foo.baz.east", 75)]), true),
        ("weight < 0", json!([w("foo.baz.south", 5), w("foo.baz.east", -1)]), false),
        ("total weight > 100", json!([w("foo.baz.south", 550), w("foo.baz.east", 500)]), true),
        ("total weight < 100", json!([w("foo.baz.south", 49), w("foo.baz.east", 50)]), true),
        ("total weight = 100", json!([w("foo.baz.south", 100), w("foo.baz.east", 0)]), true),
        ("weight = 0", json!([w("foo.baz.south", 0)]), true),
        ("total weight = 0 with multi RouteDestination", json!([w("foo.baz.south", 0), w("foo.baz.east", 0)]), false),
    ]
}

#[test]
fn route_destinations_of_tcp_and_tls_routes_are_checked_as_istios_test_cases_expect() {
    for (name, route, valid) in route_destination_cases() {
        check(name, json!({"hosts": ["foo.bar"], "tcp": [{"route": route}]}), valid, false);
        let tls = json!({"hosts": ["foo.bar"], "tls": [{"match": [{"sniHosts": ["foo.bar"]}], "route": route}]});
        check(name, tls, valid, false);
    }
}

#[test]
fn istios_virtual_service_l4_cases_give_istios_outcomes() {
    check(
        "allow sni based domains",
        json!({"hosts": ["outbound_.15010_._.istiod.istio-system.svc.cluster.local"], "gateways": ["ns1/gateway"],
               "tls": [{"match": [{"sniHosts": ["outbound_.15010_._.istiod.istio-system.svc.cluster.local"]}],
                        "route": [d("istio.istio-system.svc.cluster.local")]}]}),
        true,
        false,
    );
    check("missing tcp route", json!({"hosts": ["foo.bar"], "tcp": [{"match": [{"port": 999}]}]}), false, false);
    check(
        "missing tls route",
        json!({"hosts": ["foo.bar"], "tls": [{"match": [{"port": 999, "sniHosts": ["foo.bar"]}]}]}),
        false,
        false,
    );
    check(
        "ip address as sni host",
        json!({"hosts": ["foo.bar"], "tls": [{"route": [d("foo.baz")], "match": [{"port": 999, "sniHosts": ["1.1.1.1"]}]}]}),
        true,
        true,
    );
    check(
        "invalid wildcard as sni host",
        json!({"hosts": ["foo.bar"], "tls": [{"route": [d("foo.baz")], "match": [{"port": 999, "sniHosts": ["foo.*.com"]}]}]}),
        false,
        false,
    );
}

#[test]
fn sni_hosts_must_be_covered_by_the_virtual_service_hosts() {
    let tls = |hosts: Value, sni: Value| json!({"hosts": hosts, "tls": [{"match": [{"sniHosts": sni}], "route": [d("x.internal")]}]});
    check("exact", tls(json!(["a.example.com"]), json!(["a.example.com"])), true, false);
    check(
        "under a wildcard host",
        tls(json!(["*.example.com"]), json!(["a.example.com", "*.b.example.com"])),
        true,
        false,
    );
    let (errors, _) = webhook(tls(json!(["a.example.com"]), json!(["b.example.com"])));
    assert!(
        errors.iter().any(|e| e.starts_with("spec.tls[0].match[0].sniHosts[0]: ")
            && e.contains("SNI host \"b.example.com\" is not a compatible subset of any of the virtual service hosts: [a.example.com]")),
        "{errors:?}"
    );
    check("a wildcard SNI wider than the host", tls(json!(["a.example.com"]), json!(["*.example.com"])), false, false);
    // The AUTO_PASSTHROUGH names are only for VirtualServices bound to gateways.
    let mesh = json!({"hosts": ["outbound_.80_._.a.example.com"], "gateways": ["mesh"],
                      "tls": [{"match": [{"sniHosts": ["outbound_.80_._.a.example.com"]}], "route": [d("a.example.com")]}]});
    check("outbound_ name on the mesh", mesh, false, false);
    let bad = json!({"hosts": ["outbound_.x_._.a.example.com"], "gateways": ["gw"],
                     "tls": [{"match": [{"sniHosts": ["outbound_.x_._.a.example.com"]}], "route": [d("a.example.com")]}]});
    check("outbound_ name without a port number", bad, false, false);
}

#[test]
fn l4_match_ports_subnets_labels_and_gateways_are_checked() {
    let tcp = |m: Value| json!({"hosts": ["db"], "tcp": [{"match": [m], "route": [d("db")]}]});
    check("port 0 is unset", tcp(json!({"port": 0})), true, false);
    check("port 65535", tcp(json!({"port": 65535})), true, false);
    let (errors, _) = webhook(tcp(json!({"port": 99999})));
    assert_eq!(
        errors,
        ["spec.tcp[0].match[0].port: Schema validation error: port number 99999 must be in the range 1..65535"]
    );
    check("subnet", tcp(json!({"destinationSubnets": ["10.0.0.0/8", "10.1.2.3", "fd00::/8"]})), true, false);
    check("bad prefix length", tcp(json!({"destinationSubnets": ["10.0.0.0/33"]})), false, false);
    check("not an address", tcp(json!({"destinationSubnets": ["db.internal"]})), false, false);
    check("bad label", tcp(json!({"sourceLabels": {"app!": "x"}})), false, false);
    check("bad gateway", tcp(json!({"gateways": ["a/b/c"]})), false, false);
    let tls = |m: Value| json!({"hosts": ["a.example.com"], "tls": [{"match": [m], "route": [d("a.example.com")]}]});
    check("tls port out of range", tls(json!({"sniHosts": ["a.example.com"], "port": 70000})), false, false);
    check("tls subnet", tls(json!({"sniHosts": ["a.example.com"], "destinationSubnets": ["300.0.0.1"]})), false, false);
    check("tls match without SNI", tls(json!({"port": 443})), false, false);
    check(
        "tls route without match",
        json!({"hosts": ["a.example.com"], "tls": [{"route": [d("a.example.com")]}]}),
        false,
        false,
    );
}
