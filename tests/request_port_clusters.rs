//! Destinations whose port is the request's (docs/semantics.md K3, K13): a destination without a
//! port on a host with several ports, a route-less registry host, a mirror without a port. istiod
//! builds an outbound cluster per service port and subset (`pilot/pkg/networking/core/cluster.go`
//! `buildOutboundClusters`, `MODEL service.go BuildSubsetKey`), and the route names the one on the
//! listener's port (`ROUTE GetDestinationCluster`). So every cluster the filter can name for a
//! request on a port of the host must be in what `meshroute envoy` writes — checked here for
//! every decision on every port (library), and through a real Envoy on a non-default port.
//!
//! The Envoy test skips loudly without Envoy or the filter's Wasm module locally; fails under
//! `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use meshroute::apply::{plan, HeaderOp};
use meshroute::{Request, SplitMix64};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use support::*;

fn service(name: &str, ports: &[(&str, u32)]) -> Value {
    let ports: Vec<Value> = ports.iter().map(|(n, p)| json!({"name": n, "port": p, "targetPort": p})).collect();
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
           "spec": {"selector": {"app": name}, "ports": ports}})
}

fn pod(app: &str, version: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": format!("{app}-{version}"), "namespace": "default", "labels": {"app": app, "version": version}},
           "status": {"podIP": "10.0.0.1"}})
}

/// A multi-port Service with subsets, routed without ports (a header rule, a 50/50 split, a
/// mirror); a route-less multi-port Service; a multi-port ServiceEntry routed without a port;
/// and a VirtualService for a host outside the registry that sends to the multi-port Service.
fn resources() -> Value {
    json!([
        service("reviews", &[("http", 9080), ("http-admin", 9090)]),
        service("ratings", &[("http", 9080), ("http-metrics", 9091)]),
        pod("reviews", "v1"), pod("reviews", "v2"), pod("reviews", "v3"), pod("ratings", "v1"),
        {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": "reviews", "namespace": "default"},
         "spec": {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                                 {"name": "v2", "labels": {"version": "v2"}},
                                                 {"name": "v3", "labels": {"version": "v3"}}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "reviews", "namespace": "default"},
         "spec": {"hosts": ["reviews"], "http": [
            {"match": [{"headers": {"end-user": {"exact": "jason"}}}], "route": [{"destination": {"host": "reviews", "subset": "v2"}}]},
            {"route": [{"destination": {"host": "reviews", "subset": "v1"}, "weight": 50},
                       {"destination": {"host": "reviews", "subset": "v3"}, "weight": 50}],
             "mirror": {"host": "reviews", "subset": "v2"}}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": "api", "namespace": "default"},
         "spec": {"hosts": ["api.internal"], "resolution": "STATIC",
                  "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}, {"number": 8080, "name": "http-alt", "protocol": "HTTP"}],
                  "endpoints": [{"address": "10.0.0.9"}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "api", "namespace": "default"},
         "spec": {"hosts": ["api.internal"], "http": [{"route": [{"destination": {"host": "api.internal"}}]}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "front", "namespace": "default"},
         "spec": {"hosts": ["front.example.com"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]}},
    ])
}

/// Every cluster that a decision (the filter's, or explain's on a configuration istiod would
/// serve despite analyzer errors) names for a request on any port of `hosts`, checked against
/// what `meshroute envoy` declares for that table. Returns the clusters named.
fn decisions_name_declared_clusters(resources: Value, strict: bool, hosts: &[(&str, &[u32])]) -> BTreeSet<String> {
    let cfg = json!({"resources": resources, "settings": {}});
    let (bundle, diags) = meshroute::load_value(cfg.clone());
    assert!(!diags.has_errors(), "{diags}");
    let table = if strict {
        let compiled = meshroute::compile(&bundle, diags);
        compiled.table.unwrap_or_else(|| panic!("{}", compiled.diagnostics))
    } else {
        let lenient = meshroute::lenient::compile_lenient(&bundle, diags).expect("a lenient table");
        assert!(lenient.tolerated.refused.is_empty(), "{:?}", lenient.tolerated.refused);
        assert!(!lenient.tolerated.served.is_empty(), "the lenient case must tolerate analyzer errors");
        lenient.table
    };
    let opts = meshroute::envoy::Options {
        wasm: Path::new("/m.wasm"),
        listen: "127.0.0.1:15001".parse().unwrap(),
        admin: "127.0.0.1:15000".parse().unwrap(),
        credentials_dir: None,
    };
    // The filter loads only what compiles (the lenient case does not: IST0112 is an error), so
    // there its table is the empty one; the clusters come from `table` and the bundle alone.
    let filter_source = if strict { cfg.clone() } else { json!({"resources": [], "settings": {}}) };
    let generated = meshroute::envoy::generate(&bundle, &table.clusters, &filter_source, &opts).unwrap();
    let clusters: BTreeSet<String> = generated.config["static_resources"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    let mut named = BTreeSet::new();
    for (host, ports) in hosts {
        for port in *ports {
            let authority = format!("{host}:{port}");
            for user in [None, Some("jason")] {
                let mut req = Request::new("GET", &authority, "/");
                if let Some(u) = user {
                    req = req.with_header("end-user", u);
                }
                for seed in 0..64 {
                    let decision = table.decide(&req, &mut SplitMix64(seed));
                    let p = plan(&table, &decision, &req);
                    let routed = p.request_ops.iter().filter_map(|op| match op {
                        HeaderOp::Set(k, v) if k == &table.routing_header => Some(v.clone()),
                        _ => None,
                    });
                    let mirrored = p.mirrors.iter().map(|m| m.cluster.clone());
                    for c in routed.chain(mirrored) {
                        assert!(
                            clusters.contains(&c),
                            "a request to {authority} (user {user:?}, seed {seed}) is sent to {c}, which `meshroute envoy` \
                             does not declare; it declares {clusters:#?}"
                        );
                        named.insert(c);
                    }
                }
            }
        }
    }
    // A port the Service does not have gets no cluster: as in istiod, Envoy answers 503 NC.
    assert!(!clusters.iter().any(|c| c.starts_with("outbound|80|") && c.contains("reviews")), "{clusters:#?}");
    named
}

#[test]
fn every_cluster_a_decision_names_on_a_multi_port_service_exists_in_the_envoy_config() {
    // With Kubernetes Services, a destination without a port on a multi-port host is IST0112: the
    // filter refuses it, istiod serves it (and explain shows how); route-less hosts are valid.
    let hosts: &[(&str, &[u32])] = &[
        ("reviews", &[9080, 9090]),
        ("reviews.default.svc.cluster.local", &[9080, 9090]),
        ("ratings", &[9080, 9091]),
        ("api.internal", &[80, 8080]),
        ("front.example.com", &[9080, 9090]),
    ];
    let named = decisions_name_declared_clusters(resources(), false, hosts);
    for expected in [
        "outbound|9090|v1|reviews.default.svc.cluster.local",
        "outbound|9090|v2|reviews.default.svc.cluster.local",
        "outbound|9090|v3|reviews.default.svc.cluster.local",
        "outbound|9080|v3|reviews.default.svc.cluster.local",
        "outbound|9091||ratings.default.svc.cluster.local",
        "outbound|8080||api.internal",
        "outbound|80||api.internal",
        "outbound|9090||reviews.default.svc.cluster.local",
    ] {
        assert!(named.contains(expected), "no decision named {expected}: {named:#?}");
    }
    // A valid configuration: IST0112 leaves a port-less destination on a multi-port host only to
    // route-less hosts (their default route, on the request's port); ServiceEntries likewise.
    let entries = json!([
        service_entry("reviews.internal", &[("http", 9080), ("http-admin", 9090)]),
        service_entry("ratings.internal", &[("http", 9080), ("http-metrics", 9091)]),
        {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": "reviews", "namespace": "default"},
         "spec": {"host": "reviews.internal", "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                                          {"name": "v2", "labels": {"version": "v2"}}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "reviews", "namespace": "default"},
         "spec": {"hosts": ["reviews.internal"], "http": [
            {"match": [{"headers": {"end-user": {"exact": "jason"}}}],
             "route": [{"destination": {"host": "reviews.internal", "subset": "v2", "port": {"number": 9090}}}]},
            {"route": [{"destination": {"host": "reviews.internal", "subset": "v1", "port": {"number": 9080}}, "weight": 50},
                       {"destination": {"host": "reviews.internal", "port": {"number": 9090}}, "weight": 50}],
             "mirror": {"host": "reviews.internal", "subset": "v2", "port": {"number": 9080}}}]}},
    ]);
    let hosts: &[(&str, &[u32])] = &[("reviews.internal", &[9080, 9090]), ("ratings.internal", &[9080, 9091])];
    let named = decisions_name_declared_clusters(entries, true, hosts);
    for expected in [
        "outbound|9080|v1|reviews.internal",
        "outbound|9090|v2|reviews.internal",
        "outbound|9090||reviews.internal",
        "outbound|9080|v2|reviews.internal",
        "outbound|9080||ratings.internal",
        "outbound|9091||ratings.internal",
    ] {
        assert!(named.contains(expected), "no decision named {expected}: {named:#?}");
    }
}

fn service_entry(host: &str, ports: &[(&str, u32)]) -> Value {
    let ports: Vec<Value> = ports.iter().map(|(n, p)| json!({"name": n, "number": p, "protocol": "HTTP"})).collect();
    let endpoints: Vec<Value> =
        ["v1", "v2"].iter().map(|v| json!({"address": "10.0.0.1", "labels": {"version": v}})).collect();
    json!({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": host, "namespace": "default"},
           "spec": {"hosts": [host], "resolution": "STATIC", "ports": ports, "endpoints": endpoints}})
}

/// A STATIC ServiceEntry with one endpoint per version, each named port on its own upstream.
fn yaml_service_entry(host: &str, ports: &[(&str, u32)], endpoints: &[(&str, &[&Upstream])]) -> String {
    let decl: Vec<String> = ports.iter().map(|(n, p)| format!("{{name: {n}, number: {p}, protocol: HTTP}}")).collect();
    let eps: Vec<String> = endpoints
        .iter()
        .map(|(version, ups)| {
            let map: Vec<String> =
                ports.iter().zip(ups.iter()).map(|((n, _), u)| format!("{n}: {}", u.port())).collect();
            format!("{{address: 127.0.0.1, labels: {{version: {version}}}, ports: {{{}}}}}", map.join(", "))
        })
        .collect();
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {host}, namespace: default}}\n\
         spec: {{hosts: [{host}], resolution: STATIC, ports: [{}], endpoints: [{}]}}\n---\n",
        decl.join(", "),
        eps.join(", ")
    )
}

#[test]
fn a_request_on_the_second_port_of_a_service_reaches_that_port_through_envoy() {
    let Some((_, wasm)) = envoy_and_filter("request-port clusters") else { return };
    let up = |n: &str| Upstream::named(n);
    let (r1a, r1b, r2a, r2b, ra, rb) =
        (up("v1-9080"), up("v1-9090"), up("v2-9080"), up("v2-9090"), up("ratings-9080"), up("ratings-9091"));
    let mut yaml = yaml_service_entry(
        "reviews.internal",
        &[("http", 9080), ("http-admin", 9090)],
        &[("v1", &[&r1a, &r1b]), ("v2", &[&r2a, &r2b])],
    );
    yaml += &yaml_service_entry("ratings.internal", &[("http", 9080), ("http-metrics", 9091)], &[("v1", &[&ra, &rb])]);
    yaml += "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: default}\n\
             spec: {host: reviews.internal, subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]}\n---\n\
             apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: default}\n\
             spec:\n  hosts: [reviews.internal]\n  http:\n\
             \x20 - match: [{port: 9090, headers: {end-user: {exact: jason}}}]\n\
             \x20   route: [{destination: {host: reviews.internal, subset: v2, port: {number: 9090}}}]\n\
             \x20 - match: [{port: 9090}]\n    route: [{destination: {host: reviews.internal, subset: v1, port: {number: 9090}}}]\n\
             \x20 - match: [{headers: {end-user: {exact: jason}}}]\n\
             \x20   route: [{destination: {host: reviews.internal, subset: v2, port: {number: 9080}}}]\n\
             \x20 - route: [{destination: {host: reviews.internal, subset: v1, port: {number: 9080}}}]\n";
    let dir = std::env::temp_dir().join(format!("meshroute-request-port-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in.yaml");
    std::fs::write(&input, yaml).unwrap();
    // Envoy binds both ports itself; the listener's is read back from the admin.
    let envoy = Envoy::start(&support::cli::meshroute_envoy(&dir, &[&input], &wasm, 0, &[]), &[]);
    let port = envoy.listener_port("meshroute_outbound");
    let who = |host: &str, user: Option<&str>| {
        let mut h = vec![("Host", host)];
        if let Some(u) = user {
            h.push(("end-user", u));
        }
        let r = http("GET", port, "/", &h, b"");
        (r.status, r.header("x-upstream").unwrap_or("-").to_string())
    };
    for _ in 0..3 {
        assert_eq!(who("reviews.internal:9090", None), (200, "v1-9090".into()));
        assert_eq!(who("reviews.internal:9090", Some("jason")), (200, "v2-9090".into()));
        assert_eq!(who("reviews.internal:9080", Some("jason")), (200, "v2-9080".into()));
        assert_eq!(who("reviews.internal:9080", None), (200, "v1-9080".into()));
        // The route-less host's default route, on each of its ports.
        assert_eq!(who("ratings.internal:9091", None), (200, "ratings-9091".into()));
        assert_eq!(who("ratings.internal:9080", None), (200, "ratings-9080".into()));
    }
    // A port the route-less host does not have: no default route and no cluster, as in istiod
    // (whose listener for that port has no virtual host for it); and nothing reached its upstreams.
    assert_ne!(who("ratings.internal:80", None).0, 200);
    assert_eq!((ra.requests().len(), rb.requests().len()), (3, 3));
    drop(envoy);
    let _ = std::fs::remove_dir_all(&dir);
}
