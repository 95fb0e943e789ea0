//! CORS through a real Envoy 1.40, held against Envoy's own CORS filter (R170–R179).
//!
//! One Envoy runs two listeners on one upstream: the meshroute filter deciding a VirtualService
//! with `corsPolicy` rules, and — the reference — Envoy's fault, CORS and router filters with the
//! per-route `CorsPolicy` istiod generates for the same rules (istio/istio
//! `pilot/pkg/networking/core/route/route.go` `TranslateCORSPolicy`, filter order from
//! `listener_builder.go`). Browser-style requests (preflights with and without
//! `Access-Control-Request-Headers`, actual requests, `OPTIONS` that is no preflight, no
//! `Origin`) from allowed, disallowed, regex- and prefix-matched origins go to both; status,
//! body, every `access-control-*` response header and whether the upstream saw the request must
//! be the same. A few answers are also spelled out, so that the test says what Envoy does.
//!
//! Needs `make tools` (Envoy) and `make wasm` (the module); a missing one fails the test.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{json, Value};
use support::*;

const TEMPLATE: &str = include_str!("fixtures/cors-e2e.yaml");
const CLUSTER: &str = "outbound|80||api.default.svc.cluster.local";

/// The rules: (uri prefix, corsPolicy, anything else the rule has).
fn rules() -> Vec<(&'static str, Value, Value)> {
    let app = json!([{"exact": "https://app.example"}]);
    vec![
        (
            "/exact",
            json!({"allowOrigins": app, "allowMethods": ["GET", "PUT"], "allowHeaders": ["x-a", "content-type"],
                   "exposeHeaders": ["x-total"], "maxAge": "1h", "allowCredentials": true}),
            json!({}),
        ),
        (
            "/regex",
            json!({"allowOrigins": [{"regex": "https://[a-z]+\\.example\\.com"}, {"prefix": "http://localhost:"}],
                   "allowMethods": ["*"], "allowHeaders": ["*"], "unmatchedPreflights": "IGNORE"}),
            json!({}),
        ),
        (
            "/ignore",
            json!({"allowOrigins": app, "allowMethods": ["POST"], "allowCredentials": true, "maxAge": "600s",
                   "unmatchedPreflights": "IGNORE"}),
            json!({}),
        ),
        (
            "/forward",
            json!({"allowOrigins": app, "allowMethods": ["POST"], "unmatchedPreflights": "FORWARD"}),
            json!({}),
        ),
        ("/any", json!({"allowOrigins": [{"exact": "*"}], "exposeHeaders": ["x-e"]}), json!({})),
        ("/legacy", json!({"allowOrigin": ["https://app.example"], "allowCredentials": false}), json!({})),
        (
            "/direct",
            json!({"allowOrigins": app, "exposeHeaders": ["x-e"]}),
            json!({"directResponse": {"status": 200, "body": {"string": "direct"}}}),
        ),
        (
            "/redirect",
            json!({"allowOrigins": app, "allowMethods": ["GET"]}),
            json!({"redirect": {"uri": "/moved", "redirectCode": 302}}),
        ),
        // The router's own 503 (nothing listens): CORS headers go on it too.
        (
            "/dead",
            json!({"allowOrigins": app, "exposeHeaders": ["x-e"], "allowCredentials": true}),
            json!({"retries": {"attempts": 0}, "route": [{"destination": {"host": "dead"}}]}),
        ),
        (
            "/abort",
            json!({"allowOrigins": app, "allowMethods": ["GET"]}),
            json!({"fault": {"abort": {"httpStatus": 418, "percentage": {"value": 100}}}}),
        ),
    ]
}

fn virtual_service() -> Value {
    let mut http: Vec<Value> = rules()
        .into_iter()
        .map(|(prefix, cors, extra)| {
            let mut r = json!({"match": [{"uri": {"prefix": prefix}}], "corsPolicy": cors});
            for (k, v) in extra.as_object().unwrap() {
                r[k] = v.clone();
            }
            if r.get("directResponse").is_none() && r.get("redirect").is_none() && r.get("route").is_none() {
                r["route"] = json!([{"destination": {"host": "api"}}]);
            }
            r
        })
        .collect();
    http.push(json!({"route": [{"destination": {"host": "api"}}]}));
    json!({"resources": [{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "api", "namespace": "default"}, "spec": {"hosts": ["api"], "http": http}}],
        "settings": {"counterFlushMs": 0}})
}

/// istiod's `TranslateCORSPolicy` for one policy, as the reference listener's route carries it.
fn envoy_cors(c: &Value) -> Value {
    let join = |k: &str| c[k].as_array().map(|a| a.iter().map(|v| v.as_str().unwrap()).collect::<Vec<_>>().join(","));
    let origins: Vec<Value> = match c["allowOrigins"].as_array() {
        Some(list) => list
            .iter()
            .map(|m| match (m.get("exact"), m.get("prefix"), m.get("regex")) {
                (Some(e), _, _) => json!({"exact": e}),
                (_, Some(p), _) => json!({"prefix": p}),
                (_, _, Some(r)) => json!({"safe_regex": {"regex": r}}),
                _ => panic!("bad match {m}"),
            })
            .collect(),
        None => c["allowOrigin"].as_array().unwrap().iter().map(|e| json!({"exact": e})).collect(),
    };
    let mut out = json!({"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
        "allow_origin_string_match": origins,
        "filter_enabled": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
        "forward_not_matching_preflights": c["unmatchedPreflights"] != "IGNORE"});
    for (field, key) in
        [("allowMethods", "allow_methods"), ("allowHeaders", "allow_headers"), ("exposeHeaders", "expose_headers")]
    {
        if let Some(v) = join(field) {
            out[key] = json!(v);
        }
    }
    if let Some(age) = c["maxAge"].as_str() {
        let secs = match age.strip_suffix('h') {
            Some(h) => h.parse::<u64>().unwrap() * 3600,
            None => age.trim_end_matches('s').parse::<u64>().unwrap(),
        };
        out["max_age"] = json!(secs.to_string());
    }
    if let Some(b) = c["allowCredentials"].as_bool() {
        out["allow_credentials"] = json!(b);
    }
    out
}

fn native_routes() -> String {
    let mut routes: Vec<Value> = rules()
        .into_iter()
        .map(|(prefix, cors, extra)| {
            let mut per_filter = json!({"envoy.filters.http.cors": envoy_cors(&cors)});
            if let Some(status) = extra.pointer("/fault/abort/httpStatus") {
                per_filter["envoy.filters.http.fault"] = json!({
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
                    "abort": {"http_status": status, "percentage": {"numerator": 100, "denominator": "HUNDRED"}}});
            }
            let mut r = json!({"match": {"prefix": prefix}, "typed_per_filter_config": per_filter});
            let host = extra.pointer("/route/0/destination/host").and_then(Value::as_str).unwrap_or("api");
            match (extra.pointer("/directResponse/body/string"), extra.pointer("/redirect/uri")) {
                (Some(body), _) => r["direct_response"] = json!({"status": 200, "body": {"inline_string": body}}),
                (_, Some(uri)) => r["redirect"] = json!({"path_redirect": uri, "response_code": "FOUND"}),
                _ => {
                    r["route"] =
                        json!({"cluster": format!("outbound|80||{host}.default.svc.cluster.local"), "timeout": "0s"})
                }
            }
            r
        })
        .collect();
    routes.push(json!({"match": {"prefix": "/"}, "route": {"cluster": CLUSTER, "timeout": "0s"}}));
    routes.iter().map(|r| format!("              - {r}")).collect::<Vec<_>>().join("\n")
}

/// What a client sees, reduced to what CORS decides.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    status: u16,
    body: String,
    cors: Vec<(String, String)>,
    reached_upstream: bool,
}

fn send(port: u16, upstream: &Upstream, method: &str, path: &str, headers: &[(&str, &str)]) -> Seen {
    let before = upstream.attempts();
    let mut h = vec![("host", "api")];
    h.extend_from_slice(headers);
    let r = http(method, port, path, &h, b"");
    let mut cors: Vec<(String, String)> =
        r.headers.iter().filter(|(k, _)| k.starts_with("access-control-")).cloned().collect();
    cors.sort();
    Seen { status: r.status, body: r.text(), cors, reached_upstream: upstream.attempts() > before }
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = v.iter().map(|(k, s)| (k.to_string(), s.to_string())).collect();
    out.sort();
    out
}

#[test]
fn browser_requests_get_exactly_what_envoys_cors_filter_gives_istiods_policy() {
    // The upstream writes CORS headers of its own: an allowed origin's are replaced, others kept.
    let upstream = Upstream::start(
        Behaviour::named("api")
            .header("access-control-allow-origin", "https://upstream.example")
            .header("access-control-expose-headers", "x-up"),
    );
    let wasm = wasm_path("meshroute_filter").display().to_string();
    let config = filter_configuration(&virtual_service()).replace('\'', "''");
    let routes = native_routes();
    let upstream_port = upstream.port().to_string();
    let dead_port = refused_port().to_string();
    let envoy = Envoy::start(
        TEMPLATE,
        &[
            ("WASM", wasm.as_str()),
            ("PLUGIN_CONFIG", config.as_str()),
            ("NATIVE_ROUTES", routes.as_str()),
            ("UPSTREAM_PORT", upstream_port.as_str()),
            ("DEAD_PORT", dead_port.as_str()),
        ],
    );
    let (ours, native) = (envoy.port("MESHROUTE_PORT"), envoy.port("NATIVE_PORT"));

    let origins = [
        "https://app.example",
        "https://evil.example",
        "https://shop.example.com",
        "http://localhost:3000",
        "https://APP.example",
    ];
    let mut paths: Vec<&str> = rules().iter().map(|(p, _, _)| *p).collect();
    paths.push("/plain");
    let mut compared = 0;
    for path in &paths {
        for origin in origins {
            let requests: [(&str, Vec<(&str, &str)>); 4] = [
                (
                    "OPTIONS",
                    vec![
                        ("origin", origin),
                        ("access-control-request-method", "PUT"),
                        ("access-control-request-headers", "x-a,content-type"),
                    ],
                ),
                ("OPTIONS", vec![("origin", origin), ("access-control-request-method", "DELETE")]),
                ("GET", vec![("origin", origin)]),
                ("OPTIONS", vec![("origin", origin)]),
            ];
            for (method, headers) in &requests {
                let a = send(ours, &upstream, method, path, headers);
                let b = send(native, &upstream, method, path, headers);
                assert_eq!(
                    a, b,
                    "{method} {path} {headers:?}: meshroute (left) and Envoy's CORS filter (right) differ"
                );
                compared += 1;
            }
        }
        let a = send(ours, &upstream, "GET", path, &[]);
        assert_eq!(a, send(native, &upstream, "GET", path, &[]), "GET {path} without Origin");
        compared += 1;
    }
    assert_eq!(compared, paths.len() * (origins.len() * 4 + 1));

    // What that agreement means, spelled out.
    let preflight = [("origin", "https://app.example"), ("access-control-request-method", "PUT")];
    let p = send(ours, &upstream, "OPTIONS", "/exact", &preflight);
    assert!(!p.reached_upstream && p.status == 200 && p.body.is_empty(), "{p:?}");
    let exact_preflight = [
        ("access-control-allow-credentials", "true"),
        ("access-control-allow-headers", "x-a,content-type"),
        ("access-control-allow-methods", "GET,PUT"),
        ("access-control-allow-origin", "https://app.example"),
        ("access-control-expose-headers", "x-total"),
        ("access-control-max-age", "3600"),
    ];
    assert_eq!(p.cors, pairs(&exact_preflight));
    // An origin not allowed: forwarded (FORWARD, the default), the upstream's own headers untouched.
    let evil = [("origin", "https://evil.example"), ("access-control-request-method", "PUT")];
    let f = send(ours, &upstream, "OPTIONS", "/forward", &evil);
    assert!(f.reached_upstream && f.body == "api", "{f:?}");
    let upstream_only =
        [("access-control-allow-origin", "https://upstream.example"), ("access-control-expose-headers", "x-up")];
    assert_eq!(f.cors, pairs(&upstream_only));
    // IGNORE: answered here, without allow-origin (the browser then refuses), the rest still written.
    let i = send(ours, &upstream, "OPTIONS", "/ignore", &evil);
    assert!(!i.reached_upstream && i.status == 200, "{i:?}");
    let ignore_bare = [
        ("access-control-allow-credentials", "true"),
        ("access-control-allow-methods", "POST"),
        ("access-control-max-age", "600"),
    ];
    assert_eq!(i.cors, pairs(&ignore_bare));
    // Regex and prefix origins; `*` methods and headers echo the request's.
    let r = send(
        ours,
        &upstream,
        "OPTIONS",
        "/regex",
        &[
            ("origin", "http://localhost:3000"),
            ("access-control-request-method", "PATCH"),
            ("access-control-request-headers", "x-b"),
        ],
    );
    let regex_preflight = [
        ("access-control-allow-headers", "x-b"),
        ("access-control-allow-methods", "PATCH"),
        ("access-control-allow-origin", "http://localhost:3000"),
    ];
    assert_eq!(r.cors, pairs(&regex_preflight));
    // The actual request: upstream's allow-origin replaced, credentials and expose-headers set.
    let g = send(ours, &upstream, "GET", "/exact", &[("origin", "https://app.example")]);
    assert!(g.reached_upstream, "{g:?}");
    let exact_actual = [
        ("access-control-allow-credentials", "true"),
        ("access-control-allow-origin", "https://app.example"),
        ("access-control-expose-headers", "x-total"),
    ];
    assert_eq!(g.cors, pairs(&exact_actual));
    // Origins compare case-sensitively.
    let c = send(ours, &upstream, "GET", "/exact", &[("origin", "https://APP.example")]);
    assert_eq!(c.cors, pairs(&upstream_only));
    // Redirects and direct responses have no route entry, which Envoy's CORS filter skips.
    let d = send(ours, &upstream, "OPTIONS", "/direct", &preflight);
    assert!(d.status == 200 && d.body == "direct" && d.cors.is_empty(), "{d:?}");
    let dead = send(ours, &upstream, "GET", "/dead", &[("origin", "https://app.example")]);
    assert_eq!(dead.status, 503, "{dead:?}");
    assert_eq!(
        dead.cors,
        pairs(&[
            ("access-control-allow-credentials", "true"),
            ("access-control-allow-origin", "https://app.example"),
            ("access-control-expose-headers", "x-e"),
        ])
    );
    // A fault abort comes before CORS: no CORS header at all.
    let a = send(ours, &upstream, "OPTIONS", "/abort", &preflight);
    assert!(a.status == 418 && a.cors.is_empty(), "{a:?}");
}
