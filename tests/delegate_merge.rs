//! istiod's delegate merge, on Istio's own test cases (R180–R189).
//!
//! Ported from istio/istio `pilot/pkg/model/virtualservice_test.go` at commit
//! 86c9f01fd735fb01d8192f5bcaf0d424afb7f14c: `TestMergeHttpRoutes` (every case),
//! `TestMergeHTTPMatchRequests` (every case) and `TestHasConflict` (every case), written as the
//! VirtualService JSON the Go structs stand for; `expected: nil` is `None` (a conflict). Then
//! the merge over a bundle (`mergeVirtualServices` in `virtualservice_controller.go`): every case of
//! `TestControllerMergeVirtualServices` (its merge-order case apart: meshroute keeps input order),
//! then namespaces, exportTo, order and what is reported, through `compile`.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use meshroute::crd::{HttpMatchRequest, HttpRoute};
use meshroute::delegate::{has_conflict, merge_matches, merge_route};
use meshroute::{compile_json, Decision, Request, SplitMix64};
use serde_json::{json, Value};

fn route(v: Value) -> HttpRoute {
    serde_json::from_value(v).expect("HTTPRoute")
}

fn matches(v: Value) -> Vec<HttpMatchRequest> {
    serde_json::from_value(v).expect("[HTTPMatchRequest]")
}

fn one(v: Value) -> HttpMatchRequest {
    serde_json::from_value(v).expect("HTTPMatchRequest")
}

/// `MergeHTTPRoutes`: each delegate rule merged, conflicting ones left out.
fn merge_routes(root: Value, delegate: Value) -> Vec<HttpRoute> {
    let mut root = route(root);
    root.delegate = None;
    let delegate: Vec<HttpRoute> = serde_json::from_value(delegate).unwrap();
    delegate.into_iter().filter_map(|d| merge_route(&root, d)).collect()
}

fn dst(subset: &str) -> Value {
    json!({"host": "productpage.org", "port": {"number": 80}, "subset": subset})
}

fn mirror(subset: &str) -> Value {
    json!({"host": "productpage-mirror.org", "port": {"number": 80}, "subset": subset})
}

fn to(subset: &str) -> Value {
    json!([{"destination": dst(subset)}])
}

const DELEGATE: &str = r#"{"name": "delegate", "namespace": "default"}"#;

fn delegate() -> Value {
    serde_json::from_str(DELEGATE).unwrap()
}

// === TestMergeHttpRoutes ===

#[test]
fn istio_merge_http_routes_root_catch_all() {
    let headers = json!({"request": {"add": {"istio": "test"}, "remove": ["trace-id"]}});
    let v1 = json!([{"uri": {"prefix": "/productpage/v1"}, "headers": {"version": {"exact": "v1"}}}]);
    let v2 = json!([{"uri": {"prefix": "/productpage/v2"}, "headers": {"version": {"exact": "v2"}}},
                    {"headers": {"version": {"exact": "v2"}}, "queryParams": {"version": {"exact": "v2"}}}]);
    let got = merge_routes(
        json!({"timeout": "10s", "headers": headers, "delegate": delegate()}),
        json!([{"match": v1, "route": to("v1")}, {"match": v2, "route": to("v2")}]),
    );
    let want = vec![
        route(json!({"match": v1, "route": to("v1"), "timeout": "10s", "headers": headers})),
        route(json!({"match": v2, "route": to("v2"), "timeout": "10s", "headers": headers})),
    ];
    assert_eq!(got, want);
}

#[test]
fn istio_merge_http_routes_delegate_with_empty_match() {
    let root = json!({"match": [{"uri": {"prefix": "/productpage"}, "port": 8080}], "delegate": delegate()});
    let got = merge_routes(
        root,
        json!([
            {"match": [{"uri": {"prefix": "/productpage/v1"}, "headers": {"version": {"exact": "v1"}}}], "route": to("v1")},
            {"match": [{"uri": {"prefix": "/productpage/v2"}, "headers": {"version": {"exact": "v2"}}},
                       {"headers": {"version": {"exact": "v2"}}, "queryParams": {"version": {"exact": "v2"}}}],
             "route": to("v2")},
            {"route": to("v3")}
        ]),
    );
    let want = vec![
        route(
            json!({"match": [{"uri": {"prefix": "/productpage/v1"}, "headers": {"version": {"exact": "v1"}}, "port": 8080}],
                     "route": to("v1")}),
        ),
        route(json!({"match": [
            {"uri": {"prefix": "/productpage/v2"}, "headers": {"version": {"exact": "v2"}}, "port": 8080},
            {"uri": {"prefix": "/productpage"}, "headers": {"version": {"exact": "v2"}},
             "queryParams": {"version": {"exact": "v2"}}, "port": 8080}], "route": to("v2")})),
        route(json!({"match": [{"uri": {"prefix": "/productpage"}, "port": 8080}], "route": to("v3")})),
    ];
    assert_eq!(got, want);
}

#[test]
fn istio_merge_http_routes_delegate_with_mirrors() {
    let got = merge_routes(
        json!({"mirrors": [{"destination": mirror("v3")}], "delegate": delegate()}),
        json!([
            {"match": [{"uri": {"prefix": "/productpage/v1"}}], "mirrors": [{"destination": mirror("v1")}], "route": to("v1")},
            {"match": [{"uri": {"prefix": "/productpage/v2"}}], "mirrors": [{"destination": mirror("v2")}], "route": to("v2")},
            {"route": to("v3")}
        ]),
    );
    let want = vec![
        route(
            json!({"match": [{"uri": {"prefix": "/productpage/v1"}}], "mirrors": [{"destination": mirror("v1")}], "route": to("v1")}),
        ),
        route(
            json!({"match": [{"uri": {"prefix": "/productpage/v2"}}], "mirrors": [{"destination": mirror("v2")}], "route": to("v2")}),
        ),
        route(json!({"mirrors": [{"destination": mirror("v3")}], "route": to("v3")})),
    ];
    assert_eq!(got, want);
}

#[test]
fn istio_merge_http_routes_multiple_header_merge() {
    let got = merge_routes(
        json!({"match": [{"headers": {"header1": {"regex": "regex"}}}, {"headers": {"header2": {"exact": "exact"}}}],
               "delegate": delegate()}),
        json!([{"match": [{"uri": {"prefix": "/"}}]}]),
    );
    let want = vec![route(json!({"match": [
        {"uri": {"prefix": "/"}, "headers": {"header1": {"regex": "regex"}}},
        {"uri": {"prefix": "/"}, "headers": {"header2": {"exact": "exact"}}}]}))];
    assert_eq!(got, want);
}

// === TestMergeHTTPMatchRequests ===

#[test]
fn istio_merge_http_match_requests() {
    let pp = json!({"prefix": "/productpage"});
    let complicated_root = json!([{"uri": pp, "headers": {"header": {"exact": "h1"}}, "port": 8080,
                                   "authority": {"exact": "productpage.com"}}]);
    let merged_complicated = |uri: &str| {
        json!({"uri": {"exact": uri}, "headers": {"header": {"exact": "h1"}}, "port": 8080,
               "authority": {"exact": "productpage.com"}})
    };
    let cases: Vec<(&str, Value, Value, Option<Value>)> = vec![
        (
            "url match",
            json!([{"uri": pp}]),
            json!([{"uri": {"exact": "/productpage/v1"}}]),
            Some(json!([{"uri": {"exact": "/productpage/v1"}}])),
        ),
        (
            "url regex noconflict",
            json!([{"uri": {"regex": "^/productpage"}}]),
            json!([{}]),
            Some(json!([{"uri": {"regex": "^/productpage"}}])),
        ),
        ("url regex conflict", json!([{"uri": {"regex": "^/productpage"}}]), json!([{"uri": pp}]), None),
        (
            "multi url match",
            json!([{"uri": pp}, {"uri": {"prefix": "/reviews"}}]),
            json!([{"uri": {"exact": "/productpage/v1"}}, {"uri": {"exact": "/reviews/v1"}}]),
            Some(json!([{"uri": {"exact": "/productpage/v1"}}, {"uri": {"exact": "/reviews/v1"}}])),
        ),
        ("url mismatch", json!([{"uri": pp}]), json!([{"uri": {"exact": "/reviews"}}]), None),
        (
            "url match, one delegate match conflicts",
            json!([{"uri": pp}]),
            json!([{"uri": {"exact": "/productpage/v1"}}, {"uri": {"exact": "/reviews"}}]),
            None,
        ),
        (
            "headers",
            json!([{"headers": {"header": {"exact": "h1"}}}]),
            json!([]),
            Some(json!([{"headers": {"header": {"exact": "h1"}}}])),
        ),
        (
            "headers conflict",
            json!([{"headers": {"header": {"exact": "h1"}}}]),
            json!([{"headers": {"header": {"exact": "h2"}}}]),
            None,
        ),
        (
            "headers united",
            json!([{"headers": {"header": {"exact": "h1"}}}]),
            json!([{"headers": {"header-2": {"exact": "h2"}}}]),
            Some(json!([{"headers": {"header": {"exact": "h1"}, "header-2": {"exact": "h2"}}}])),
        ),
        (
            "complicated merge",
            complicated_root.clone(),
            json!([{"uri": {"exact": "/productpage/v1"}}, {"uri": {"exact": "/productpage/v2"}}]),
            Some(json!([merged_complicated("/productpage/v1"), merged_complicated("/productpage/v2")])),
        ),
        (
            "conflicted merge",
            complicated_root,
            json!([{"uri": {"exact": "/productpage/v1"}}, {"uri": {"exact": "/productpage/v2"}, "port": 9090}]),
            None,
        ),
        (
            "gateway merge",
            json!([{"uri": pp, "gateways": ["ingress-gateway", "mesh"]}]),
            json!([{"uri": {"exact": "/productpage/v1"}, "gateways": ["ingress-gateway"]},
                {"uri": {"exact": "/productpage/v2"}, "gateways": ["mesh"]}]),
            Some(json!([{"uri": {"exact": "/productpage/v1"}, "gateways": ["ingress-gateway"]},
                     {"uri": {"exact": "/productpage/v2"}, "gateways": ["mesh"]}])),
        ),
        (
            "gateway conflicted merge",
            json!([{"uri": pp, "gateways": ["ingress-gateway"]}]),
            json!([{"uri": {"exact": "/productpage/v1"}, "gateways": ["ingress-gateway"]},
                {"uri": {"exact": "/productpage/v2"}, "gateways": ["mesh"]}]),
            None,
        ),
        (
            "source labels merge",
            json!([{"sourceLabels": {"app": "test"}}]),
            json!([{"sourceLabels": {"version": "v1"}}]),
            Some(json!([{"sourceLabels": {"app": "test", "version": "v1"}}])),
        ),
    ];
    for (name, root, delegate, want) in cases {
        let got = merge_matches(&matches(root), &matches(delegate));
        assert_eq!(got, want.map(matches), "{name}");
    }
}

// === TestHasConflict ===

#[test]
fn istio_has_conflict() {
    let uri = |kind: &str, v: &str| json!({"uri": {kind: v}});
    let hdr = |kind: &str, v: &str| json!({"headers": {"header": {kind: v}}});
    let cases: Vec<(&str, Value, Value, bool)> = vec![
        ("regex uri", uri("regex", "^/productpage"), uri("prefix", "/productpage/v2"), true),
        ("regex uri in root and delegate does not have uri", uri("regex", "^/productpage"), json!({}), false),
        ("regex uri in delegate and root does not have uri", json!({}), uri("regex", "^/productpage"), false),
        (
            "regex uri in root, delegate has a conflicting uri match",
            uri("regex", "^/productpage"),
            uri("prefix", "/productpage"),
            true,
        ),
        (
            "regex uri in delegate, root has a conflicting uri match",
            uri("prefix", "/productpage"),
            uri("regex", "^/productpage"),
            true,
        ),
        ("match uri", uri("prefix", "/productpage"), uri("prefix", "/productpage/v2"), false),
        ("mismatch uri", uri("prefix", "/productpage/v2"), uri("prefix", "/productpage"), true),
        ("match uri exact under prefix", uri("prefix", "/productpage/v2"), uri("exact", "/productpage/v2"), false),
        ("headers not equal", hdr("exact", "h1"), hdr("exact", "h2"), true),
        ("headers equal", hdr("exact", "h1"), hdr("exact", "h1"), false),
        ("headers match", hdr("prefix", "h1"), hdr("exact", "h1-v1"), false),
        ("headers mismatch", hdr("prefix", "h1"), hdr("exact", "h2"), true),
        ("headers prefix mismatch", hdr("prefix", "h1"), hdr("prefix", "h2"), true),
        ("diff headers", hdr("exact", "h1"), json!({"headers": {"header-2": {"exact": "h2"}}}), false),
        (
            "withoutHeaders mismatch",
            json!({"withoutHeaders": {"header": {"prefix": "h1"}}}),
            json!({"withoutHeaders": {"header": {"exact": "h2"}}}),
            true,
        ),
        ("port 0 in root", json!({"port": 0}), json!({"port": 8080}), false),
        ("port 0 in delegate", json!({"port": 8080}), json!({"port": 0}), false),
        ("ports differ", json!({"port": 8080}), json!({"port": 8090}), true),
        ("sourceLabels mismatch", json!({"sourceLabels": {"a": "b"}}), json!({"sourceLabels": {"a": "c"}}), true),
        ("sourceNamespace mismatch", json!({"sourceNamespace": "test1"}), json!({"sourceNamespace": "test2"}), true),
        (
            "root has less gateways than delegate",
            json!({"gateways": ["ingress-gateway"]}),
            json!({"gateways": ["ingress-gateway", "mesh"]}),
            true,
        ),
    ];
    for (name, root, leaf, want) in cases {
        assert_eq!(has_conflict(&one(root), &one(leaf)), want, "{name}");
    }
}

// === The merge over a bundle (mergeVirtualServices) ===

fn vs(ns: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
           "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

fn compiled(resources: Value) -> meshroute::Compiled {
    compile_json(json!({"resources": resources, "settings": {"namespace": "default"}}).to_string().as_bytes())
}

fn outcome(c: &meshroute::Compiled, path: &str, headers: &[(&str, &str)]) -> String {
    let t = c.table.as_ref().unwrap_or_else(|| panic!("refused: {}", c.diagnostics));
    let mut req = Request::new("GET", "bookinfo.example.com", path);
    for (k, v) in headers {
        req = req.with_header(k, v);
    }
    match t.decide(&req, &mut SplitMix64(1)) {
        Decision::Matched(m) => m.destination.map_or("no destination".into(), |d| d.cluster.clone()),
        Decision::NoRoute { .. } => "404".into(),
        other => format!("{other:?}"),
    }
}

fn root(delegates: Value) -> Value {
    vs("default", "root", json!({"hosts": ["bookinfo.example.com"], "http": delegates}))
}

#[test]
fn delegate_rules_replace_the_root_rule_in_order_with_the_match_conjunction() {
    let c = compiled(json!([
        root(json!([
            {"name": "pp", "match": [{"uri": {"prefix": "/productpage"}}], "timeout": "3s",
             "delegate": {"name": "productpage", "namespace": "team-a"}},
            {"match": [{"uri": {"prefix": "/reviews"}}], "delegate": {"name": "reviews"}},
            {"route": [{"destination": {"host": "fallback"}}]}
        ])),
        // Short names are the delegate's namespace's (ResolveVirtualServiceShortnames on it).
        vs(
            "team-a",
            "productpage",
            json!({"http": [
                {"name": "v2", "match": [{"headers": {"end-user": {"exact": "jason"}}}], "route": [{"destination": {"host": "productpage-v2"}}]},
                {"route": [{"destination": {"host": "productpage"}}]}
            ]})
        ),
        // No namespace: the root's.
        vs("default", "reviews", json!({"http": [{"route": [{"destination": {"host": "reviews"}}]}]})),
    ]));
    assert!(!c.diagnostics.has_errors(), "{}", c.diagnostics);
    assert_eq!(
        outcome(&c, "/productpage", &[("end-user", "jason")]),
        "outbound|80||productpage-v2.team-a.svc.cluster.local"
    );
    assert_eq!(outcome(&c, "/productpage", &[]), "outbound|80||productpage.team-a.svc.cluster.local");
    assert_eq!(outcome(&c, "/reviews/1", &[]), "outbound|80||reviews.default.svc.cluster.local");
    // A request the root's match sends to the delegate but no delegate rule takes falls through
    // to the next root rule, as the merged routes are plain routes.
    assert_eq!(outcome(&c, "/other", &[]), "outbound|80||fallback.default.svc.cluster.local");
    let t = c.table.as_ref().unwrap();
    let vs = t.find_vs("bookinfo.example.com").unwrap();
    let names: Vec<Option<&str>> = vs.rules.iter().map(|r| r.name.as_deref()).collect();
    assert_eq!(names, [Some("pp-v2"), Some("pp"), None, None], "route names as istiod joins them");
    assert!(
        vs.rules.iter().take(2).all(|r| r.timeout == Some(std::time::Duration::from_secs(3))),
        "root timeout inherited"
    );
    let origin = |root_rule, delegate: &str, delegate_rule| {
        Some(meshroute::delegate::Origin { root_rule, delegate: delegate.into(), delegate_rule })
    };
    let origins: Vec<_> = vs.rules.iter().map(|r| r.delegated.clone()).collect();
    assert_eq!(
        origins,
        [origin(0, "team-a/productpage", 0), origin(0, "team-a/productpage", 1), origin(1, "default/reviews", 0), None]
    );
}

#[test]
fn missing_hidden_and_conflicting_delegates_are_left_out_and_named() {
    let c = compiled(json!([
        root(json!([
            {"match": [{"uri": {"prefix": "/gone"}}], "delegate": {"name": "nope"}},
            {"match": [{"uri": {"prefix": "/hidden"}}], "delegate": {"name": "private", "namespace": "team-b"}},
            {"match": [{"uri": {"prefix": "/api"}}], "delegate": {"name": "api"}},
            {"route": [{"destination": {"host": "fallback"}}]}
        ])),
        vs("team-b", "private", json!({"exportTo": ["."], "http": [{"route": [{"destination": {"host": "secret"}}]}]})),
        vs(
            "default",
            "api",
            json!({"http": [
                {"match": [{"uri": {"prefix": "/web"}}], "route": [{"destination": {"host": "web"}}]},
                {"match": [{"uri": {"prefix": "/api/v1"}}], "route": [{"destination": {"host": "api-v1"}}]}
            ]})
        ),
        vs("default", "orphan", json!({"http": [{"route": [{"destination": {"host": "x"}}]}]})),
    ]));
    assert!(!c.diagnostics.has_errors(), "{}", c.diagnostics);
    let fallback = "outbound|80||fallback.default.svc.cluster.local";
    assert_eq!(outcome(&c, "/gone", &[]), fallback);
    assert_eq!(outcome(&c, "/hidden", &[]), fallback);
    assert_eq!(outcome(&c, "/api/v1/x", &[]), "outbound|80||api-v1.default.svc.cluster.local");
    assert_eq!(outcome(&c, "/api/web", &[]), fallback, "the /web rule conflicts with /api and is dropped");
    let text = c.diagnostics.to_string();
    for want in [
        "VirtualService default/root: spec.http[0].delegate: delegate virtual service default/nope not found",
        "VirtualService default/root: spec.http[1].delegate: delegate virtual service team-b/private is not exported to default",
        "VirtualService default/api: spec.http[0].match: the match of this delegate rule conflicts with every match of \
         VirtualService default/root spec.http[2]",
        "VirtualService default/orphan: spec.hosts: no VirtualService delegates to this one",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
}

#[test]
fn delegate_validation_is_istios() {
    let c = compiled(json!([
        vs(
            "default",
            "root",
            json!({"hosts": ["bookinfo.example.com"], "http": [
                {"name": "r", "delegate": {"name": "child"}, "route": [{"destination": {"host": "a"}}],
                 "redirect": {"uri": "/x"}}
            ]})
        ),
        vs(
            "default",
            "child",
            json!({"gateways": ["gw"], "http": [{"delegate": {"name": "grandchild"}}],
                                      "tcp": [{"route": [{"destination": {"host": "a"}}]}]})
        ),
    ]));
    let text = c.diagnostics.to_string();
    for want in [
        "spec.http[0].redirect: Schema validation error: root HTTP route r must not specify redirect",
        "spec.http[0].route: Schema validation error: root HTTP route r must not specify route",
        "spec.gateways: Schema validation error: delegate virtual service must have no gateways specified",
        "spec.tcp: Schema validation error: delegate virtual service must have no tcp route specified",
        "spec.http[0].delegate: Schema validation error: delegate HTTP route cannot contain delegate",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert!(c.table.is_none());
}

// === TestControllerMergeVirtualServices (virtualservice_controller_test.go, same commit) ===

fn pp(subset: &str) -> Value {
    json!([{"destination": {"host": "productpage.org", "port": {"number": 80}, "subset": subset}}])
}

fn example_org() -> Value {
    json!({"route": [{"destination": {"host": "example.org", "port": {"number": 80}}}]})
}

/// Istio's `rootVs` (`defaultVs` when `ns` is `default`: its delegate names no namespace).
fn istio_root(ns: &str, name: &str, delegate_ns: Option<&str>) -> Value {
    let mut d = json!({"name": "productpage-vs"});
    if let Some(n) = delegate_ns {
        d["namespace"] = json!(n);
    }
    vs(
        ns,
        name,
        json!({"hosts": ["*.org"], "gateways": [format!("{ns}/gateway")], "http": [
            {"match": [{"uri": {"prefix": "/productpage"}}, {"uri": {"exact": "/login"}}], "delegate": d},
            example_org()
        ]}),
    )
}

/// Istio's `createDelegateVs`.
fn istio_delegate(ns: &str, export_to: Value) -> Value {
    vs(
        ns,
        "productpage-vs",
        json!({"hosts": [], "gateways": [format!("{ns}/gateway")], "exportTo": export_to, "http": [
            {"match": [{"uri": {"prefix": "/productpage/v1"}}], "route": pp("v1")},
            {"match": [{"uri": {"prefix": "/productpage/v2"}}], "route": pp("v2")},
            {"route": pp("v3")}
        ]}),
    )
}

/// The merged VirtualServices: `namespace/name` and their HTTP routes.
fn merged(resources: Value, default_export_to: Value) -> Vec<(String, Vec<HttpRoute>)> {
    let doc = json!({"resources": resources, "settings": {"defaultVirtualServiceExportTo": default_export_to}});
    let (bundle, _) = meshroute::load_json(doc.to_string().as_bytes());
    let m = meshroute::delegate::merge(&bundle);
    m.bundle.as_ref().unwrap_or(&bundle).virtual_services().map(|(r, v)| (r.key(), v.http.clone())).collect()
}

fn routes(v: Value) -> Vec<HttpRoute> {
    serde_json::from_value(v).unwrap()
}

#[test]
fn istio_controller_merge_virtual_services() {
    let merged_http = json!([
        {"match": [{"uri": {"prefix": "/productpage/v1"}}], "route": pp("v1")},
        {"match": [{"uri": {"prefix": "/productpage/v2"}}], "route": pp("v2")},
        {"match": [{"uri": {"prefix": "/productpage"}}, {"uri": {"exact": "/login"}}], "route": pp("v3")},
        example_org()
    ]);
    let one_root = routes(json!([example_org()]));
    let root = || istio_root("istio-system", "root-vs", Some("default"));
    let public = json!(["*"]);
    let independent = vs(
        "default",
        "virtual-service",
        json!({"hosts": ["example.org"], "gateways": ["default/gateway"],
        "http": [{"route": [{"destination": {"host": "example.org", "port": {"number": 80}}}]}]}),
    );

    // one independent vs
    let got = merged(json!([independent.clone()]), public.clone());
    assert_eq!(got, [("default/virtual-service".to_string(), routes(independent["spec"]["http"].clone()))]);
    // one root vs: its delegate does not exist, the delegating rule goes
    assert_eq!(merged(json!([root()]), public.clone()), [("istio-system/root-vs".into(), one_root.clone())]);
    // one delegate vs: nothing is served
    assert!(merged(json!([istio_delegate("default", json!(["istio-system"]))]), public.clone()).is_empty());
    // root and delegate vs
    let got = merged(json!([root(), istio_delegate("default", json!(["istio-system"]))]), public.clone());
    assert_eq!(got, [("istio-system/root-vs".into(), routes(merged_http.clone()))]);
    // root and conflicted delegate vs
    let conflicted = vs(
        "default",
        "productpage-vs",
        json!({"hosts": [], "gateways": ["default/gateway"], "http": [
            {"match": [{"uri": {"prefix": "/productpage/v1"}}], "route": pp("v1")},
            {"match": [{"uri": {"prefix": "/productpage/v2"}}], "route": pp("v2")},
            {"match": [{"name": "mismatch", "uri": {"prefix": "/mis-match/path"}}], "route": pp("v3")}
        ]}),
    );
    let got = merged(json!([root(), conflicted]), public.clone());
    let want = json!([
        {"match": [{"uri": {"prefix": "/productpage/v1"}}], "route": pp("v1")},
        {"match": [{"uri": {"prefix": "/productpage/v2"}}], "route": pp("v2")},
        example_org()
    ]);
    assert_eq!(got, [("istio-system/root-vs".into(), routes(want))]);
    // multiple routes delegate to one
    let multi = vs(
        "istio-system",
        "root-vs",
        json!({"hosts": ["*.org"], "gateways": ["istio-system/gateway"], "http": [
            {"match": [{"uri": {"prefix": "/productpage"}}], "delegate": {"name": "productpage-vs", "namespace": "default"}},
            {"match": [{"uri": {"prefix": "/legacy/path"}}], "rewrite": {"uri": "/productpage"},
             "delegate": {"name": "productpage-vs", "namespace": "default"}}
        ]}),
    );
    let single = vs(
        "default",
        "productpage-vs",
        json!({"hosts": [], "gateways": ["default/gateway"], "http": [{"route": pp("v1")}]}),
    );
    let want = json!([
        {"match": [{"uri": {"prefix": "/productpage"}}], "route": pp("v1")},
        {"match": [{"uri": {"prefix": "/legacy/path"}}], "rewrite": {"uri": "/productpage"}, "route": pp("v1")}
    ]);
    assert_eq!(merged(json!([multi, single]), public.clone()), [("istio-system/root-vs".into(), routes(want))]);
    // root not specifying the delegate namespace (the root's), mesh default public, then private
    for default in [public.clone(), json!(["."])] {
        let got = merged(
            json!([istio_root("default", "default-vs", None), istio_delegate("default", json!([]))]),
            default.clone(),
        );
        assert_eq!(got, [("default/default-vs".into(), routes(merged_http.clone()))], "default exportTo {default}");
        // delegate not exported to the root's namespace (Istio's case has the root name `default`,
        // where no delegate exists; here it names `default2`, so that exportTo is what hides it)
        let hidden =
            vs("default2", "productpage-vs", json!({"hosts": [], "gateways": ["default2/gateway"], "exportTo": ["."]}));
        let root2 = istio_root("istio-system", "root-vs", Some("default2"));
        assert_eq!(
            merged(json!([root2, hidden]), default.clone()),
            [("istio-system/root-vs".into(), one_root.clone())]
        );
    }
}
