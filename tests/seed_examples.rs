//! What meshroute decides for every VirtualService of the user's description (examples/json),
//! rule by rule, as Istio would. Subsets need a DestinationRule to exist, so each example is
//! compiled with one that defines the subsets it names — the way a user would deploy it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshroute::compile::{Abort, Action};
use meshroute::{compile_json, Decision, Random, Request, RouteTable, SplitMix64};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

fn example(name: &str) -> Value {
    let path = format!("{}/examples/json/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn subsets_rule(host: &str, subsets: &[&str]) -> Value {
    let subsets: Vec<Value> = subsets.iter().map(|s| json!({"name": s, "labels": {"version": s}})).collect();
    json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
           "metadata": {"name": format!("{host}-subsets"), "namespace": "default"},
           "spec": {"host": host, "subsets": subsets}})
}

fn table(resources: Vec<Value>) -> RouteTable {
    let compiled = compile_json(json!({ "resources": resources }).to_string().as_bytes());
    assert!(!compiled.diagnostics.has_errors(), "{}", compiled.diagnostics);
    compiled.table.expect("a table when there is no error")
}

fn get(host: &str, path: &str) -> Request {
    Request::new("GET", host, path)
}

fn cluster_of(t: &RouteTable, req: &Request, rng: &mut dyn Random) -> Option<String> {
    match t.decide(req, rng) {
        Decision::Matched(m) => m.destination.map(|d| d.cluster.clone()),
        _ => None,
    }
}

/// Counts clusters over `n` decisions and checks each share against binomial bounds at z = 5
/// (a false alarm about once in 3.5 million runs per check), so the test cannot pass by luck
/// with a wrong split nor flake with a right one.
fn assert_split(t: &RouteTable, req: &Request, expected: &[(&str, f64)]) {
    let n = 20_000u32;
    let mut rng = SplitMix64(0x5eed);
    let mut counts: HashMap<String, u32> = HashMap::new();
    for _ in 0..n {
        let c = cluster_of(t, req, &mut rng).expect("a destination");
        *counts.entry(c).or_default() += 1;
    }
    for (cluster, p) in expected {
        let got = f64::from(counts.get(*cluster).copied().unwrap_or(0));
        let mean = f64::from(n) * p;
        let sd = (f64::from(n) * p * (1.0 - p)).sqrt();
        assert!((got - mean).abs() <= 5.0 * sd + 0.5, "{cluster}: {got} of {n}, expected about {mean} (sd {sd:.1})");
    }
    let known: u32 = expected.iter().map(|(c, _)| counts.get(*c).copied().unwrap_or(0)).sum();
    assert_eq!(known, n, "unexpected clusters chosen: {counts:?}");
}

const PRODUCT_V1: &str = "outbound|80|v1|product-service.default.svc.cluster.local";
const PRODUCT_V2: &str = "outbound|80|v2|product-service.default.svc.cluster.local";

#[test]
fn basic_route_sends_everything_to_v1() {
    let t = table(vec![example("basic-route"), subsets_rule("product-service", &["v1"])]);
    let mut rng = SplitMix64(1);
    for path in ["/", "/anything", "/a/b?c=d"] {
        assert_eq!(cluster_of(&t, &get("product-service", path), &mut rng).as_deref(), Some(PRODUCT_V1));
    }
}

#[test]
fn header_route_sends_debug_true_to_v2_and_the_rest_to_v1() {
    let t = table(vec![example("header-route"), subsets_rule("product-service", &["v1", "v2"])]);
    let mut rng = SplitMix64(1);
    let debug = get("product-service", "/").with_header("x-debug", "true");
    assert_eq!(cluster_of(&t, &debug, &mut rng).as_deref(), Some(PRODUCT_V2));
    // exact match is case-sensitive and whole-value
    for other in ["True", "true1", "false"] {
        let r = get("product-service", "/").with_header("x-debug", other);
        assert_eq!(cluster_of(&t, &r, &mut rng).as_deref(), Some(PRODUCT_V1), "x-debug: {other}");
    }
    assert_eq!(cluster_of(&t, &get("product-service", "/"), &mut rng).as_deref(), Some(PRODUCT_V1));
}

#[test]
fn weight_route_splits_80_20() {
    let t = table(vec![example("weight-route"), subsets_rule("product-service", &["v1", "v2"])]);
    assert_split(&t, &get("product-service", "/"), &[(PRODUCT_V1, 0.8), (PRODUCT_V2, 0.2)]);
}

#[test]
fn uri_route_matches_prefixes_in_order_and_404s_the_rest() {
    let t = table(vec![example("uri-route"), subsets_rule("product-service", &["stable", "canary"])]);
    let mut rng = SplitMix64(1);
    let stable = "outbound|80|stable|product-service.default.svc.cluster.local";
    let canary = "outbound|80|canary|product-service.default.svc.cluster.local";
    let statics = "outbound|80||static-service.default.svc.cluster.local";
    let cases = [
        ("/api/v1/products", Some(stable)),
        ("/api/v1/products/42?x=1", Some(stable)),
        // a plain byte prefix, as Envoy's `prefix`
        ("/api/v1/productsXYZ", Some(stable)),
        ("/api/v2/products", Some(canary)),
        ("/static/app.js", Some(statics)),
        ("/staticfiles", Some(statics)),
    ];
    for (path, want) in cases {
        assert_eq!(cluster_of(&t, &get("api.example.com", path), &mut rng).as_deref(), want, "{path}");
    }
    assert!(matches!(t.decide(&get("api.example.com", "/api/v3"), &mut rng), Decision::NoRoute { .. }));
    assert!(matches!(t.decide(&get("API.Example.com:443", "/static"), &mut rng), Decision::Matched(_)));
}

#[test]
fn retry_config_hints_three_attempts_with_per_try_timeout() {
    let t = table(vec![example("retry-config")]);
    let mut rng = SplitMix64(1);
    let Decision::Matched(m) = t.decide(&get("order-service", "/pay"), &mut rng) else { panic!("no match") };
    assert_eq!(
        m.destination.map(|d| d.cluster.as_str()),
        Some("outbound|80||payment-service.default.svc.cluster.local")
    );
    let r = &m.rule.retry;
    assert_eq!(r.attempts, 3);
    assert_eq!(r.per_try_timeout, Some(Duration::from_secs(2)));
    assert_eq!(r.retry_on, "connect-failure,refused-stream,retriable-status-codes");
    assert_eq!(r.grpc_retry_on, "unavailable,cancelled");
    assert!(r.retry_remote_localities);
    assert_eq!(m.rule.timeout, None, "timeouts are disabled unless set");
}

#[test]
fn timeout_config_gives_high_priority_5s_and_others_30s() {
    let t = table(vec![example("timeout-config")]);
    let mut rng = SplitMix64(1);
    let high = get("checkout-service", "/").with_header("x-priority", "high");
    let Decision::Matched(m) = t.decide(&high, &mut rng) else { panic!("no match") };
    assert_eq!(m.rule.timeout, Some(Duration::from_secs(5)));
    let Decision::Matched(m) = t.decide(&get("checkout-service", "/"), &mut rng) else { panic!("no match") };
    assert_eq!(m.rule.timeout, Some(Duration::from_secs(30)));
    // Neither rule sets retries: Istio's default policy applies.
    assert_eq!(m.rule.retry.attempts, 2);
    assert!(m.rule.retry.is_default);
}

#[test]
fn fault_injection_delays_about_ten_percent_and_the_abort_rule_is_unreachable() {
    // The second rule comes after a rule without `match`: Istio never emits it (IST0130), so
    // no request is ever aborted — a real mistake in the example.
    let t = table(vec![example("fault-injection")]);
    let n = 20_000u32;
    let mut rng = SplitMix64(42);
    let (mut delayed, mut aborted) = (0u32, 0u32);
    for _ in 0..n {
        let Decision::Matched(m) = t.decide(&get("product-service", "/"), &mut rng) else { panic!("no match") };
        assert_eq!(
            m.destination.map(|d| d.cluster.as_str()),
            Some("outbound|80||review-service.default.svc.cluster.local")
        );
        if let Some(d) = m.delay {
            assert_eq!(d, Duration::from_secs(5));
            delayed += 1;
        }
        aborted += u32::from(m.abort.is_some());
    }
    let (mean, sd) = (f64::from(n) * 0.1, (f64::from(n) * 0.1 * 0.9).sqrt());
    assert!((f64::from(delayed) - mean).abs() <= 5.0 * sd, "{delayed} delayed of {n}");
    assert_eq!(aborted, 0);
    assert_eq!(t.virtual_services[0].rules.len(), 1, "the unreachable rule is not compiled");
}

#[test]
fn abort_alone_aborts_about_five_percent_with_500() {
    let mut vs = example("fault-injection");
    let http = vs["spec"]["http"].as_array_mut().expect("http");
    http.remove(0);
    let t = table(vec![vs]);
    let n = 20_000u32;
    let mut rng = SplitMix64(7);
    let mut aborted = 0u32;
    for _ in 0..n {
        let Decision::Matched(m) = t.decide(&get("product-service", "/"), &mut rng) else { panic!("no match") };
        if let Some(a) = m.abort {
            assert_eq!(*a, Abort::Http(500));
            aborted += 1;
        }
        assert_eq!(m.delay, None);
    }
    let (mean, sd) = (f64::from(n) * 0.05, (f64::from(n) * 0.05 * 0.95).sqrt());
    assert!((f64::from(aborted) - mean).abs() <= 5.0 * sd, "{aborted} aborted of {n}");
}

#[test]
fn traffic_mirroring_sends_all_to_v1_and_mirrors_every_request() {
    let t = table(vec![example("traffic-mirroring"), subsets_rule("order-service", &["v1", "v2", "v2-canary"])]);
    let mut rng = SplitMix64(3);
    for _ in 0..1000 {
        let Decision::Matched(m) = t.decide(&get("order-service", "/orders"), &mut rng) else { panic!("no match") };
        assert_eq!(
            m.destination.map(|d| d.cluster.as_str()),
            Some("outbound|80|v1|order-service.default.svc.cluster.local")
        );
        let mirrors: Vec<&str> = m.mirrors.iter().map(|m| m.cluster.as_str()).collect();
        assert_eq!(mirrors, ["outbound|80|v2-canary|order-service.default.svc.cluster.local"]);
    }
}

#[test]
fn canary_stages_split_90_10_then_50_50_then_all_to_v2() {
    let dr = subsets_rule("recommendation-service", &["v1", "v2"]);
    let v1 = "outbound|80|v1|recommendation-service.default.svc.cluster.local";
    let v2 = "outbound|80|v2|recommendation-service.default.svc.cluster.local";
    let req = get("recommendation-service", "/");
    assert_split(&table(vec![example("canary-10"), dr.clone()]), &req, &[(v1, 0.9), (v2, 0.1)]);
    assert_split(&table(vec![example("canary-50"), dr.clone()]), &req, &[(v1, 0.5), (v2, 0.5)]);
    assert_split(&table(vec![example("canary-100"), dr]), &req, &[(v2, 1.0)]);
}

#[test]
fn gateway_bound_virtual_service_does_not_route_in_the_mesh() {
    // `gateways: [public-gateway]` without `mesh`: a sidecar ignores it.
    let gw = example("ingress-gateway");
    let mut vs = example("gateway-vs-binding");
    vs["spec"]["gateways"] = json!(["istio-system/public-gateway"]);
    let t = table(vec![vs.clone(), gw.clone()]);
    let mut rng = SplitMix64(1);
    assert!(matches!(t.decide(&get("api.example.com", "/products"), &mut rng), Decision::Passthrough));

    // The same resources on the gateway proxy route by the VirtualService.
    let cfg = json!({"resources": [vs, gw], "settings": {"gateway": "istio-system/public-gateway"}});
    let c = compile_json(cfg.to_string().as_bytes());
    assert!(!c.diagnostics.has_errors(), "{}", c.diagnostics);
    let t = c.table.expect("table");
    let Decision::Matched(m) = t.decide(&get("api.example.com", "/products/1"), &mut rng) else { panic!("no match") };
    assert_eq!(
        m.destination.map(|d| d.cluster.as_str()),
        Some("outbound|8080||product-service.default.svc.cluster.local")
    );
    assert!(matches!(m.rule.action, Action::Forward { .. }));
}
