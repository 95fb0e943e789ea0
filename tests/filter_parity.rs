//! The filter is built without the `unknown-field-warnings` feature (a smaller module): it must
//! still refuse exactly the configurations the CLI refuses, with the same errors. Each seed
//! example, and mutations of it (unknown fields, wrong types, bad values at every leaf), goes
//! through both loaders.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshroute::compile_json;
use meshroute::config::as_in_the_filter;
use serde_json::{json, Value};

/// Errors (rendered) and whether a table came out.
fn outcome(config: &Value) -> (Vec<String>, bool) {
    let c = compile_json(config.to_string().as_bytes());
    (c.diagnostics.errors().map(|d| d.to_string()).collect(), c.table.is_some())
}

fn inputs() -> Vec<(String, Value)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/json");
    let mut out = Vec::new();
    let mut paths: Vec<_> =
        std::fs::read_dir(&dir).expect("examples/json").filter_map(|e| e.ok()).map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        let text = std::fs::read_to_string(&p).expect("read example");
        let v: Value = serde_json::from_str(&text).expect("example is JSON");
        out.push((p.display().to_string(), v));
    }
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("envoy/demo-config.json");
    out.push((
        "envoy/demo-config.json".into(),
        serde_json::from_str(&std::fs::read_to_string(demo).expect("demo")).expect("JSON"),
    ));
    out
}

/// Every leaf of `v` (path of keys/indices).
fn leaves(v: &Value, path: &mut Vec<Value>, out: &mut Vec<Vec<Value>>) {
    match v {
        Value::Object(o) => o.iter().for_each(|(k, x)| {
            path.push(json!(k));
            leaves(x, path, out);
            path.pop();
        }),
        Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| {
            path.push(json!(i));
            leaves(x, path, out);
            path.pop();
        }),
        _ => out.push(path.clone()),
    }
}

fn at<'a>(v: &'a mut Value, path: &[Value]) -> &'a mut Value {
    path.iter().fold(v, |v, k| match k {
        Value::String(s) => &mut v[s.as_str()],
        Value::Number(n) => &mut v[n.as_u64().unwrap_or(0) as usize],
        _ => v,
    })
}

#[test]
fn the_filters_loader_refuses_exactly_what_the_clis_refuses() {
    let mut checked = 0;
    let mut refused = 0;
    for (name, input) in inputs() {
        let mut variants = vec![input.clone()];
        let mut paths = Vec::new();
        leaves(&input, &mut Vec::new(), &mut paths);
        for p in &paths {
            for bad in [json!(12345), json!("not-a-value"), json!(-1), json!(null), json!({"unknownField": 1})] {
                let mut v = input.clone();
                *at(&mut v, p) = bad;
                variants.push(v);
            }
        }
        for v in variants {
            let cli = outcome(&v);
            let filter = as_in_the_filter(|| outcome(&v));
            assert_eq!(filter, cli, "{name}: the filter's loader differs from the CLI's on\n{v}");
            checked += 1;
            refused += usize::from(!cli.1);
        }
    }
    assert!(refused > 100, "the mutations must include refused configurations ({refused} of {checked})");
}

#[test]
fn only_the_warning_for_unknown_fields_is_left_out() {
    let config = json!({"resources": [{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "r", "namespace": "default"},
        "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}], "bogus": 1}]}}]});
    let codes = |c: meshroute::Compiled| -> Vec<String> {
        c.diagnostics.warnings().filter_map(|d| d.code.map(String::from)).collect()
    };
    let bytes = config.to_string();
    assert!(codes(compile_json(bytes.as_bytes())).contains(&"MR0002".to_string()));
    assert!(!as_in_the_filter(|| codes(compile_json(bytes.as_bytes()))).contains(&"MR0002".to_string()));
}
