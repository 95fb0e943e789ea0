//! Istio's own webhook cases for Sidecar ingress and egress listeners, ported: the same inputs
//! are accepted or refused as `ValidateSidecar` does (docs/semantics.md R130, R131, R238).
//!
//! Source: istio/istio `pkg/config/validation/validation_test.go` at commit
//! 86c9f01fd735fb01d8192f5bcaf0d424afb7f14c, `TestValidateSidecar`, the listener cases from
//! "invalid Port" to "valid ingress and empty egress in IPv6" (names kept; Go structs written as
//! the JSON `kubectl` would show).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshroute::{load_value, validate, Severity};
use serde_json::{json, Value};

fn errors(spec: Value) -> Vec<String> {
    let doc = json!({"apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
                     "metadata": {"name": "sc", "namespace": "default"}, "spec": spec});
    let (bundle, loaded) = load_value(doc);
    assert!(!loaded.has_errors(), "loader: {loaded}");
    validate(&bundle)
        .iter()
        .filter(|d| d.severity == Severity::Error && d.code == Some("IST0106"))
        .map(|d| format!("{}: {}", d.path, d.message))
        .collect()
}

fn port(protocol: &str, number: u32, name: &str) -> Value {
    json!({"protocol": protocol, "number": number, "name": name})
}

fn any_egress() -> Value {
    json!([{"hosts": ["*/*"]}])
}

fn ingress(listeners: Value) -> Value {
    json!({"ingress": listeners, "egress": any_egress()})
}

fn cases() -> Vec<(&'static str, Value, bool)> {
    let ep = |p: Value, e: &str| json!({"port": p, "defaultEndpoint": e});
    vec![
        ("invalid Port", json!({"egress": [{"port": port("http1", 1_000_000, ""), "hosts": ["ns1/bar.com"]}]}), false),
        (
            "Port without name",
            json!({"egress": [{"port": {"protocol": "http", "number": 8080}, "hosts": ["ns1/bar.com"]}]}),
            true,
        ),
        (
            "UDS bind in outbound",
            json!({"egress": [{"port": port("http", 0, "uds"), "hosts": ["ns1/bar.com"], "bind": "unix:///@foo/bar/com"}]}),
            true,
        ),
        (
            "UDS bind in inbound",
            json!({"ingress": [{"port": port("http", 0, "uds"), "bind": "unix:///@foo/bar/com", "defaultEndpoint": "127.0.0.1:9999"}]}),
            false,
        ),
        (
            "UDS bind in outbound 2",
            json!({"egress": [{"port": port("http", 0, "uds"), "hosts": ["ns1/bar.com"], "bind": "unix:///foo/bar/com"}]}),
            true,
        ),
        (
            "invalid bind",
            json!({"egress": [{"port": port("http", 0, "uds"), "hosts": ["ns1/bar.com"], "bind": "foobar:///@foo/bar/com"}]}),
            false,
        ),
        (
            "invalid capture mode with uds bind",
            json!({"egress": [{"port": port("http", 0, "uds"), "hosts": ["ns1/bar.com"], "bind": "unix:///@foo/bar/com",
                               "captureMode": "IPTABLES"}]}),
            false,
        ),
        (
            "duplicate UDS bind",
            json!({"egress": [{"port": port("http", 0, "uds"), "hosts": ["ns1/bar.com"], "bind": "unix:///@foo/bar/com"},
                              {"port": port("http", 0, "uds"), "hosts": ["ns1/bar.com"], "bind": "unix:///@foo/bar/com"}]}),
            false,
        ),
        (
            "duplicate ports",
            json!({"egress": [{"port": port("http", 90, "foo"), "hosts": ["ns1/bar.com"]},
                              {"port": port("tcp", 90, "tcp"), "hosts": ["ns2/bar.com"]}]}),
            false,
        ),
        ("ingress without port", ingress(json!([{"defaultEndpoint": "127.0.0.1:110"}])), false),
        ("ingress without port and with IPv6 endpoint", ingress(json!([{"defaultEndpoint": "[::1]:110"}])), false),
        (
            "ingress with duplicate ports",
            ingress(json!([ep(port("http", 90, "foo"), "127.0.0.1:110"), ep(port("tcp", 90, "bar"), "127.0.0.1:110")])),
            false,
        ),
        (
            "ingress with duplicate ports and IPv6 endpoint",
            ingress(json!([ep(port("http", 90, "foo"), "[::1]:110"), ep(port("tcp", 90, "bar"), "[::1]:110")])),
            false,
        ),
        ("ingress without default endpoint", ingress(json!([{"port": port("http", 90, "foo")}])), true),
        (
            "ingress with invalid default endpoint in IPv4",
            json!({"ingress": [ep(port("http", 90, "foo"), "1.1.1.1:90")]}),
            false,
        ),
        (
            "ingress with invalid default endpoint in IPv6",
            json!({"ingress": [ep(port("http", 90, "foo"), "[1:1:1:1:1:1:1:1]:90")]}),
            false,
        ),
        ("ingress with invalid default endpoint uds", ingress(json!([ep(port("http", 90, "foo"), "unix:///")])), false),
        (
            "ingress with invalid default endpoint port in IPv4",
            ingress(json!([ep(port("http", 90, "foo"), "127.0.0.1:hi")])),
            false,
        ),
        (
            "ingress with invalid default endpoint port in IPv6",
            ingress(json!([ep(port("http", 90, "foo"), "[::1]:hi")])),
            false,
        ),
        ("valid ingress and egress in IPv4", ingress(json!([ep(port("http", 90, "foo"), "127.0.0.1:9999")])), true),
        ("valid ingress and egress in IPv6", ingress(json!([ep(port("http", 90, "foo"), "[::1]:9999")])), true),
        (
            "valid ingress and empty egress in IPv4",
            json!({"ingress": [ep(port("http", 90, "foo"), "127.0.0.1:9999")]}),
            true,
        ),
        (
            "valid ingress and empty egress in IPv6",
            json!({"ingress": [ep(port("http", 90, "foo"), "[::1]:9999")]}),
            true,
        ),
    ]
}

#[test]
fn sidecar_listener_cases_give_istios_outcomes() {
    let mut wrong = Vec::new();
    for (name, spec, valid) in cases() {
        let e = errors(spec);
        if e.is_empty() != valid {
            wrong.push(format!("{name}: expected valid={valid}, errors {e:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn ingress_tls_is_restricted_as_istio_restricts_it() {
    let tls = |protocol: &str, tls: Value| json!({"ingress": [{"port": port(protocol, 443, "tls"), "defaultEndpoint": "127.0.0.1:8443", "tls": tls}]});
    let simple = json!({"mode": "SIMPLE", "serverCertificate": "/c.pem", "privateKey": "/k.pem"});
    assert_eq!(errors(tls("HTTPS", simple.clone())), Vec::<String>::new());
    let e = errors(tls("HTTP", simple));
    assert!(e.iter().any(|m| m.contains("server cannot have TLS settings for non HTTPS/TLS ports")), "{e:?}");
    let e = errors(tls("TLS", json!({"mode": "ISTIO_MUTUAL"})));
    assert!(e.iter().any(|m| m.contains("cannot set mode to ISTIO_MUTUAL in sidecar ingress tls")), "{e:?}");
    let e = errors(tls("TLS", json!({"mode": "SIMPLE", "credentialName": "x", "httpsRedirect": true})));
    assert!(e.iter().any(|m| m.contains("credentialName is not currently supported")), "{e:?}");
    assert!(e.iter().any(|m| m.contains("httpsRedirect is not supported")), "{e:?}");
}
