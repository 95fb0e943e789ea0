//! decide() + plan on arbitrary requests against compiled random configurations: no panic, the
//! first-match index agrees with a linear scan in Istio order, and a matched destination is one
//! of its rule's.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use meshroute::compile::{Action, Dest};
use meshroute::{apply, Decision, Request, SplitMix64};
use serde_json::{json, Value};

const SEGMENTS: &[&str] = &["", "a", "A", "api", "v1", "v2", "x.y", "%61", "..", ".", "é"];
const NAMES: &[&str] = &["x-a", "end-user", "x-meshroute-cluster", "x-envoy-retry-on", ":path"];
const VALUES: &[&str] = &["", "1", "jason", "Jason", "a b", "\u{fffd}"];
const REGEXES: &[&str] = &["/api/v[0-9]+/.*", ".*", "/a|/b", "(?i)/API.*", "/(api|v1)/.*", ".*\\.png", "["];

fn pick<'a>(u: &mut Unstructured<'_>, from: &[&'a str]) -> arbitrary::Result<&'a str> {
    Ok(from[u.choose_index(from.len())?])
}

fn path(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    let n = u.int_in_range(0..=4)?;
    let mut p = String::new();
    for _ in 0..n {
        p.push('/');
        p.push_str(pick(u, SEGMENTS)?);
    }
    if p.is_empty() || u.arbitrary()? {
        p.push('/');
    }
    if u.arbitrary()? {
        p.push_str("?v=1");
    }
    Ok(p)
}

fn string_match(u: &mut Unstructured<'_>) -> arbitrary::Result<Value> {
    Ok(match u.int_in_range(0..=2)? {
        0 => json!({"exact": path(u)?}),
        1 => json!({"prefix": path(u)?}),
        _ => json!({"regex": pick(u, REGEXES)?}),
    })
}

fn config(u: &mut Unstructured<'_>) -> arbitrary::Result<Value> {
    let mut rules = Vec::new();
    for _ in 0..u.int_in_range(1..=6)? {
        let mut m = serde_json::Map::new();
        if u.arbitrary()? {
            m.insert("uri".into(), string_match(u)?);
        }
        if u.arbitrary()? {
            m.insert("headers".into(), json!({pick(u, NAMES)?: {"exact": pick(u, VALUES)?}}));
        }
        if u.arbitrary()? {
            m.insert("ignoreUriCase".into(), json!(true));
        }
        let route: Vec<Value> = (0..u.int_in_range(1..=3)?)
            .map(|i| Ok(json!({"destination": {"host": "svc", "subset": format!("v{i}")}, "weight": u.int_in_range(0..=100)?})))
            .collect::<arbitrary::Result<_>>()?;
        let mut rule = json!({"match": [Value::Object(m)], "route": route});
        match u.int_in_range(0..=5)? {
            0 => rule["fault"] = json!({"abort": {"httpStatus": 503, "percentage": {"value": 50}}}),
            1 => rule["mirror"] = json!({"host": "svc", "subset": "m"}),
            2 => rule["rewrite"] = json!({"uri": path(u)?}),
            3 => rule["headers"] = json!({"request": {"set": {pick(u, NAMES)?: "v"}}}),
            _ => {}
        }
        rules.push(rule);
    }
    Ok(json!({"resources": [{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "svc", "namespace": "default"}, "spec": {"hosts": ["svc", "*.example.com"], "http": rules}}]}))
}

#[derive(Arbitrary, Debug)]
struct Seed(u64);

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(cfg) = config(&mut u) else { return };
    let compiled = meshroute::compile_json(cfg.to_string().as_bytes());
    let Some(table) = compiled.table else { return };
    let Ok(Seed(seed)) = Seed::arbitrary(&mut u) else { return };
    let mut rng = SplitMix64(seed);
    while let (Ok(p), Ok(host)) = (path(&mut u), pick(&mut u, &["svc", "SVC:80", "a.example.com", "other", ""])) {
        let mut req = Request::new(pick(&mut u, &["GET", "POST"]).unwrap_or("GET"), host, &p);
        if let (Ok(n), Ok(v)) = (pick(&mut u, NAMES), pick(&mut u, VALUES)) {
            req = req.with_header(n, v);
        }
        for vs in &table.virtual_services {
            let port = table.request_port(&req);
            let indexed = vs.first_match(&req, port).map(|e| e as *const _);
            let linear = vs.entries.iter().find(|e| e.block.matches(&req, port)).map(|e| e as *const _);
            assert_eq!(indexed, linear, "index and linear scan disagree on {req:?}");
        }
        let d = table.decide(&req, &mut rng);
        if let Decision::Matched(m) = &d {
            if let (Action::Forward { destinations, .. }, Some(dest)) = (&m.rule.action, m.destination) {
                assert!(destinations.iter().any(|x: &Dest| std::ptr::eq(x, dest)), "destination outside its rule");
            }
        }
        let plan = apply::plan(&table, &d, &req);
        let _ = apply::mirror_headers(&req, &plan, &table.routing_header);
    }
});
