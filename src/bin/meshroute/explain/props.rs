//! Property: what `meshroute explain` prints is what the filter does. For random configurations
//! and requests, the filter's path (`decide` with a seeded random source, then `apply::plan`) is
//! run, and the plan it yields must be printed, line for line, as one of explain's branches:
//! the destination, every request header edit, the local reply, the response header edits; a
//! rolled fault must be the one explain prints, and rolled mirrors among the ones it prints.
//! The expected lines are written here from the `Plan` itself, not through explain's types.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use super::render;
use meshroute::apply::{self, HeaderOp, LocalReply, Plan};
use meshroute::{compile_json, Request, SplitMix64};
use proptest::prelude::*;
use serde_json::{json, Value};

// === Generators ===

const PREFIXES: &[&str] = &["/", "/a", "/api", "/api/v1", "/b"];
const PATHS: &[&str] = &["/", "/a", "/a/x?q=1", "/api/v1/users", "/b", "/zzz"];
const HOSTS: &[&str] = &["reviews", "ratings", "weather.example.com", "other.example.org", "reviews:9080"];
const SUBSETS: &[Option<&str>] = &[None, Some("v1"), Some("v2")];
/// `allowOrigins` entries, against the request origins of [`ORIGINS`].
const CORS_ORIGINS: &[&str] = &[r#"{"exact": "https://a.example"}"#, r#"{"prefix": "https://"}"#, r#"{"regex": ".*"}"#];
const ORIGINS: &[Option<&str>] = &[None, Some("https://a.example"), Some("http://b.example")];
const RETRY_ON: &[&str] = &["5xx", "gateway-error,503", "connect-failure,unavailable", "retriable-4xx,cancelled"];

fn pick<T: Clone + std::fmt::Debug + 'static>(set: &'static [T]) -> impl Strategy<Value = T> {
    prop::sample::select(set)
}

fn destination(host: &'static str) -> impl Strategy<Value = Value> {
    (pick(SUBSETS), 0u32..4, prop::option::of("[a-z]{1,3}")).prop_map(move |(subset, w, hdr)| {
        let mut d = json!({"destination": {"host": host}, "weight": w * 25});
        if let Some(s) = subset {
            d["destination"]["subset"] = json!(s);
        }
        if let Some(v) = hdr {
            d["headers"] = json!({"request": {"set": {"x-dest": v}}, "response": {"add": {"x-resp": "d"}}});
        }
        d
    })
}

fn rule(host: &'static str) -> impl Strategy<Value = Value> {
    let matches = prop::option::of((pick(PREFIXES), prop::option::of("[12]")));
    let action = prop_oneof![
        4 => prop::collection::vec(destination(host), 1..4).prop_map(|r| json!({"route": r})),
        1 => pick(PATHS).prop_map(|u| json!({"redirect": {"uri": u.split('?').next().unwrap(), "redirectCode": 302}})),
        1 => "[a-z ]{0,8}".prop_map(|b| json!({"directResponse": {"status": 418, "body": {"string": b}}})),
    ];
    let retries = prop_oneof![
        Just(None),
        Just(Some(json!({"attempts": 0}))),
        (1u32..4, pick(RETRY_ON), any::<bool>()).prop_map(|(a, on, per_try)| {
            let mut r = json!({"attempts": a, "retryOn": on});
            if per_try {
                r["perTryTimeout"] = json!("250ms");
            }
            Some(r)
        }),
    ];
    let fault = prop_oneof![
        2 => Just(None),
        1 => (prop::sample::select(&[0.0, 50.0, 100.0][..]), any::<bool>()).prop_map(|(pct, grpc)| Some(if grpc {
            json!({"abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": pct}}})
        } else {
            json!({"abort": {"httpStatus": 503, "percentage": {"value": pct}},
                   "delay": {"fixedDelay": "2s", "percentage": {"value": 50.0}}})
        })),
    ];
    let extras =
        (prop::option::of(prop::sample::select(&["1s", "0.5s"][..])), any::<bool>(), any::<bool>(), any::<bool>());
    let cors = prop::option::of((pick(CORS_ORIGINS), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(origin, star, credentials, ignore)| {
            json!({"allowOrigins": [serde_json::from_str::<Value>(origin).unwrap()], "allowMethods": [if star { "*" } else { "GET" }],
                   "allowHeaders": [if star { "*" } else { "x-a" }], "exposeHeaders": ["x-e"], "maxAge": "60s",
                   "allowCredentials": credentials, "unmatchedPreflights": if ignore { "IGNORE" } else { "FORWARD" }})
        },
    ));
    (matches, action, retries, fault, extras, cors).prop_map(
        move |(m, action, retries, fault, (timeout, mirror, rewrite, hdrs), cors)| {
            let mut r = action;
            if let Some(c) = cors {
                r["corsPolicy"] = c;
            }
            if let Some((prefix, hv)) = m {
                let mut block = json!({"uri": {"prefix": prefix}});
                if let Some(v) = hv {
                    block["headers"] = json!({"x-a": {"exact": v}});
                }
                r["match"] = json!([block]);
            }
            if let Some(rt) = retries {
                r["retries"] = rt;
            }
            if let Some(f) = fault {
                r["fault"] = f;
            }
            if r.get("route").is_some() {
                if let Some(t) = timeout {
                    r["timeout"] = json!(t);
                }
                if mirror {
                    r["mirror"] = json!({"host": host, "subset": "v2"});
                    r["mirrorPercentage"] = json!({"value": 50.0});
                }
                if rewrite {
                    r["rewrite"] = json!({"uri": "/new", "authority": "rewritten"});
                }
            }
            if hdrs {
                r["headers"] = json!({"request": {"set": {"x-route": "r"}, "remove": ["x-gone"]},
                                  "response": {"set": {"x-resp": "route"}}});
            }
            r
        },
    )
}

fn virtual_service(host: &'static str) -> impl Strategy<Value = Value> {
    prop::collection::vec(rule(host), 1..4).prop_map(move |http| {
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
               "metadata": {"name": host, "namespace": "default"},
               "spec": {"hosts": [host], "http": http}})
    })
}

fn destination_rule(host: &str) -> Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
           "metadata": {"name": host, "namespace": "default"},
           "spec": {"host": host, "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                               {"name": "v2", "labels": {"version": "v2"}}]}})
}

fn config() -> impl Strategy<Value = Value> {
    (virtual_service("reviews"), prop::option::of(virtual_service("ratings")), any::<bool>(), any::<bool>()).prop_map(
        |(reviews, ratings, service_entry, registry_only)| {
            let mut resources = vec![reviews, destination_rule("reviews"), destination_rule("ratings")];
            resources.extend(ratings);
            if service_entry {
                resources.push(json!({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
                    "metadata": {"name": "weather", "namespace": "default"},
                    "spec": {"hosts": ["weather.example.com"], "location": "MESH_EXTERNAL", "resolution": "DNS",
                             "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}]}}));
            }
            let settings = if registry_only { json!({"outboundTrafficPolicy": "REGISTRY_ONLY"}) } else { json!({}) };
            json!({"resources": resources, "settings": settings})
        },
    )
}

fn request() -> impl Strategy<Value = Request> {
    (pick(HOSTS), pick(PATHS), prop::option::of("[123]"), any::<bool>(), any::<bool>(), (pick(ORIGINS), any::<bool>()))
        .prop_map(|(host, path, xa, grpc, sneaky, (origin, preflight))| {
            let method = match (grpc, preflight && origin.is_some()) {
                (true, _) => "POST",
                (false, true) => "OPTIONS",
                (false, false) => "GET",
            };
            let mut r = Request::new(method, host, path);
            if let Some(o) = origin {
                r = r.with_header("origin", o);
            }
            if method == "OPTIONS" {
                r = r
                    .with_header("access-control-request-method", "PUT")
                    .with_header("access-control-request-headers", "x-b");
            }
            if let Some(v) = xa {
                r = r.with_header("x-a", &v);
            }
            if grpc {
                r = r.with_header("content-type", "application/grpc");
            }
            if sneaky {
                r = r.with_header("x-envoy-max-retries", "9").with_header("x-meshroute-cluster", "evil");
            }
            r.with_header("x-gone", "1")
        })
}

// === Expected lines, from the plan ===

fn edit_line(what: &str, op: &HeaderOp) -> String {
    match op {
        HeaderOp::Set(k, v) => format!("    {what} set {k}: {v}"),
        HeaderOp::Add(k, v) => format!("    {what} add {k}: {v}"),
        HeaderOp::Remove(k) => format!("    {what} remove {k}"),
    }
}

fn reply_lines(indent: &str, what: &str, r: &LocalReply) -> Vec<String> {
    match r {
        LocalReply::Http { status, headers, body } => {
            let mut out = vec![format!("{indent}{what}: {status}")];
            out.extend(headers.iter().map(|(k, v)| format!("{indent}{what} header: {k}: {v}")));
            if !body.is_empty() {
                let b = String::from_utf8_lossy(body);
                out.push(format!(
                    "{indent}{what} body: {} bytes {:?}",
                    b.len(),
                    b.chars().take(60).collect::<String>()
                ));
            }
            out
        }
        LocalReply::Grpc { status, message } => vec![
            format!("{indent}{what}: 200 (grpc-status {status})"),
            format!("{indent}{what} header: grpc-message: {message}"),
        ],
    }
}

/// The lines a branch prints for this plan, mirrors apart (a branch shows every mirror, a roll
/// sends some).
fn expected(plan: &Plan) -> Vec<String> {
    let mut out: Vec<String> = plan.request_ops.iter().map(|op| edit_line("request header", op)).collect();
    if let Some(r) = &plan.local_reply {
        out.extend(reply_lines("    ", "reply", r));
    }
    out.extend(plan.response_ops.iter().map(|op| edit_line("response header", op)));
    out
}

/// The printed branches: (cluster, lines without mirrors and the "nothing" line, mirrors).
fn printed_branches(text: &str) -> Vec<(Option<String>, Vec<String>, Vec<String>)> {
    let mut lines = text.lines().skip_while(|l| !l.starts_with("route (") && !l.starts_with("what the filter does:"));
    let mut out: Vec<(Option<String>, Vec<String>, Vec<String>)> = Vec::new();
    if lines.next().is_some_and(|l| l.starts_with("what the filter does:")) {
        out.push((None, Vec::new(), Vec::new()));
    }
    for l in lines {
        let head = l.trim_start();
        if l.starts_with("  ") && !l.starts_with("    ") && head.contains("%  ") {
            let cluster = head.split("%  ").nth(1).and_then(|c| c.split_whitespace().next()).map(str::to_string);
            out.push((cluster, Vec::new(), Vec::new()));
            continue;
        }
        let Some(last) = out.last_mut() else { panic!("line outside a branch: {l}\n{text}") };
        if let Some(m) = l.strip_prefix("    mirror copy to: ") {
            last.2.push(m.to_string());
        } else if l != "    nothing: the request goes on unchanged" {
            last.1.push(l.to_string());
        }
    }
    out
}

fn routing_cluster(plan: &Plan) -> Option<String> {
    plan.request_ops.iter().find_map(|op| match op {
        HeaderOp::Set(k, v) if k == "x-meshroute-cluster" => Some(v.clone()),
        _ => None,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn explain_prints_the_plan_the_filter_executes(cfg in config(), req in request(), seed in any::<u64>()) {
        let compiled = compile_json(cfg.to_string().as_bytes());
        let Some(table) = compiled.table else {
            // Only configurations the filter accepts have a plan to compare with.
            return Ok(());
        };
        let text = render(&table.explain(&req), &table.routing_header);
        let mut rng = SplitMix64(seed);
        let decision = table.decide(&req, &mut rng);
        let plan = apply::plan(&table, &decision, &req);
        let want = expected(&plan);
        let cluster = routing_cluster(&plan);
        let branches = printed_branches(&text);
        let found = branches.iter().find(|(c, lines, mirrors)| {
            *c == cluster && *lines == want && plan.mirrors.iter().all(|m| mirrors.contains(&m.cluster))
        });
        prop_assert!(found.is_some(), "plan {plan:#?}\nexpected lines {want:#?}\nnot among the printed branches:\n{text}");
        if let Some(abort) = &plan.abort {
            for line in reply_lines("    ", "abort reply", abort) {
                prop_assert!(text.lines().any(|l| l == line), "abort {line:?} not printed:\n{text}");
            }
        }
        if let Some(d) = plan.delay {
            let line = format!("  fault delay: {} ms", d.as_millis());
            prop_assert!(text.lines().any(|l| l.starts_with(&line)), "delay {line:?} not printed:\n{text}");
        }
    }
}

/// The property above skips configurations the filter refuses and is weak on requests that
/// match nothing: the generators must mostly produce accepted configurations and routed requests.
#[test]
fn generated_configurations_are_mostly_accepted_and_routed() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut accepted, mut routed, mut replied, n) = (0, 0, 0, 300);
    for _ in 0..n {
        let cfg = config().new_tree(&mut runner).unwrap().current();
        let req = request().new_tree(&mut runner).unwrap().current();
        let Some(table) = compile_json(cfg.to_string().as_bytes()).table else { continue };
        accepted += 1;
        let plan = apply::plan(&table, &table.decide(&req, &mut SplitMix64(1)), &req);
        routed += usize::from(routing_cluster(&plan).is_some());
        replied += usize::from(plan.local_reply.is_some());
    }
    eprintln!("{accepted}/{n} accepted, {routed} routed, {replied} local replies");
    assert!(accepted * 10 >= n * 6, "{accepted}/{n} accepted");
    assert!(routed * 4 >= accepted && replied * 10 >= accepted, "{routed} routed, {replied} replies of {accepted}");
}
