//! The demo: envoy/demo/ (the demo's CRDs) → `meshroute validate` and `meshroute envoy` with
//! fixed ports (as envoy/README.md runs it by hand; `make run` is `meshroute run`, which generates
//! the same configuration on free ports, tests/harness.rs) → a real Envoy. The generated configuration must pass
//! `envoy --mode validate` as written, and, with its ports moved to free ones and the demo
//! upstreams (examples/demo_upstreams.rs) replaced by the harness's, answer what
//! envoy/README.md promises. Needs `--features cli` (Cargo.toml `[[test]] required-features`).
//!
//! Skips loudly without Envoy or the filter's Wasm module locally; fails under `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use meshroute::apply::{plan, HeaderOp};
use meshroute::{Request, SplitMix64};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::cli::*;
use support::*;

/// The fixed ports of a hand-run demo (envoy/README.md, Running it elsewhere).
const LISTEN: &str = "127.0.0.1:15001";
const ADMIN: &str = "127.0.0.1:15000";

/// (demo upstream name, port): the ServiceEntry endpoints of envoy/demo/, as
/// examples/demo_upstreams.rs serves them.
const ENDPOINTS: [(&str, u16); 5] = [
    ("product-service-v1", 18081),
    ("product-service-v2", 18082),
    ("product-service-canary (mirror)", 18083),
    ("ratings-v1", 18084),
    ("catalog", 18085),
];

fn temp_dir(tag: &str) -> PathBuf {
    fresh_dir(&format!("demo-{tag}"))
}

/// `meshroute envoy -f envoy/demo` with the fixed ports; the generated YAML.
fn generate(wasm: &Path, out: &Path) -> String {
    let o = meshroute(&[
        "envoy",
        "-f",
        "envoy/demo",
        "--wasm",
        &wasm.display().to_string(),
        "--listen",
        LISTEN,
        "--admin",
        ADMIN,
        "-o",
        &out.display().to_string(),
    ]);
    assert!(o.status.success(), "meshroute envoy -f envoy/demo failed:\n{}", text(&o));
    assert!(!text(&o).contains("warning"), "the demo generates without warnings:\n{}", text(&o));
    std::fs::read_to_string(out).expect("generated config")
}

/// Replaces `port_value: FROM` (which must occur) by `port_value: TO`.
fn move_port(yaml: &str, from: u16, to: &str) -> String {
    let needle = format!("port_value: {from}\n");
    assert!(yaml.contains(&needle), "the generated config uses port {from}:\n{yaml}");
    yaml.replace(&needle, &format!("port_value: {to}\n"))
}

#[test]
fn the_demo_crds_validate_without_findings_and_match_the_demo_plugin_config() {
    let o = meshroute(&["validate", "-f", "envoy/demo"]);
    assert!(o.status.success(), "{}", text(&o));
    // Infos only: the demo's MESH_INTERNAL services get the auto-mTLS note (MR0007, info).
    let stdout = String::from_utf8_lossy(&o.stdout);
    let findings: Vec<&str> = stdout.lines().filter(|l| !l.starts_with("info:")).collect();
    assert!(findings.is_empty(), "no errors or warnings expected:\n{}", text(&o));

    // envoy/demo holds the same routing as envoy/demo-config.json (the source of the table in
    // sidecar.yaml), plus the ServiceEntries that give its subsets endpoints: both compile to
    // tables that decide every request alike (same seeds, same rolls).
    let table_of = |path: &str| {
        let o = meshroute(&["compile", "-f", path]);
        assert!(o.status.success(), "{}", text(&o));
        meshroute::table::load(&o.stdout).unwrap_or_else(|e| panic!("meshroute compile -f {path}: {e}"))
    };
    let (crds, demo) = (table_of("envoy/demo"), table_of("envoy/demo-config.json"));
    let requests = [
        Request::new("GET", "product-service", "/"),
        Request::new("GET", "product-service", "/").with_header("x-debug", "true"),
        Request::new("GET", "ratings", "/ratings/1"),
    ];
    let mut clusters = std::collections::BTreeSet::new();
    for req in &requests {
        for seed in 0..256 {
            let (a, b) = (outcome(&crds, req, seed), outcome(&demo, req, seed));
            assert_eq!(a, b, "envoy/demo and envoy/demo-config.json decide {req:?} (seed {seed}) differently");
            clusters.extend(a.0);
        }
    }
    let want: Vec<String> = ["v1", "v2"]
        .iter()
        .map(|s| format!("outbound|80|{s}|product-service.default.svc.cluster.local"))
        .chain(["outbound|80|v1|ratings.default.svc.cluster.local".to_string()])
        .collect();
    assert!(want.iter().all(|c| clusters.contains(c)), "{clusters:?}");
}

/// What the filter does with `req` on `table` for this seed: the cluster it routes to, the
/// mirrors, the fault (retry hints left out: only envoy/demo-config.json's settings ask for
/// route retry policies).
fn outcome(table: &meshroute::RouteTable, req: &Request, seed: u64) -> (Option<String>, Vec<String>, String) {
    let decision = table.decide(req, &mut SplitMix64(seed));
    let p = plan(table, &decision, req);
    let routed = p.request_ops.iter().find_map(|op| match op {
        HeaderOp::Set(k, v) if k == &table.routing_header => Some(v.clone()),
        _ => None,
    });
    let mirrors = p.mirrors.iter().map(|m| m.cluster.clone()).collect();
    (routed, mirrors, format!("{:?} {:?} {:?}", p.delay, p.abort, p.local_reply))
}

#[test]
fn the_generated_demo_config_passes_envoy_validation() {
    let Some((envoy, wasm)) = envoy_and_filter("the_generated_demo_config_passes_envoy_validation") else { return };
    let dir = temp_dir("validate");
    let out = dir.join("demo-envoy.yaml");
    let yaml = generate(&wasm, &out);
    assert!(yaml.contains("stats_tags"), "the Prometheus labels of envoy/README.md");
    for (_, port) in ENDPOINTS {
        assert!(yaml.contains(&format!("port_value: {port}\n")), "an endpoint on the demo upstream's port {port}");
    }
    let o = Command::new(&envoy)
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(&out)
        .output()
        .expect("run envoy --mode validate");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(o.status.success(), "envoy --mode validate failed:\n{}", text(&o));
    assert!(text(&o).contains("config loaded: 2 VirtualService(s)"), "the filter accepted the config:\n{}", text(&o));
}

#[test]
fn the_generated_demo_config_routes_like_the_demo_promises() {
    let Some((_, wasm)) = envoy_and_filter("the_generated_demo_config_routes_like_the_demo_promises") else { return };
    let dir = temp_dir("traffic");
    let mut yaml = generate(&wasm, &dir.join("demo-envoy.yaml"));
    let _ = std::fs::remove_dir_all(&dir);

    // The generated config, with its ports moved: Envoy's to 0 (Envoy binds them itself and the
    // harness reads them back), each demo upstream's to a harness upstream of the same name.
    yaml = move_port(&yaml, 15000, "0");
    yaml = move_port(&yaml, 15001, "0");
    let upstreams: Vec<Upstream> = ENDPOINTS.iter().map(|(name, _)| Upstream::named(name)).collect();
    for ((_, port), u) in ENDPOINTS.iter().zip(&upstreams) {
        yaml = move_port(&yaml, *port, &u.port().to_string());
    }
    let envoy = Envoy::start(&yaml, &[]);
    let port = envoy.listener_port("meshroute_outbound");
    let get = |host: &str, headers: &[(&str, &str)]| {
        let mut h = vec![("Host", host)];
        h.extend_from_slice(headers);
        http("GET", port, "/", &h, b"")
    };
    let [v1, v2, canary, _ratings, catalog] = &upstreams[..] else { unreachable!() };

    // Header route: `x-debug: true` always reaches v2.
    for _ in 0..20 {
        let r = get("product-service", &[("x-debug", "true")]);
        assert_eq!((r.status, r.text()), (200, "product-service-v2".to_string()));
    }
    assert_eq!(v2.requests().len(), 20);
    assert_eq!(v1.requests().len(), 0);

    // Without it: the 80/20 rule (v1 or v2), each request mirrored to the canary subset.
    for _ in 0..10 {
        let r = get("product-service", &[]);
        assert_eq!(r.status, 200);
        assert!(matches!(r.text().as_str(), "product-service-v1" | "product-service-v2"), "{}", r.text());
    }
    canary.wait_for_requests(10, Duration::from_secs(5));

    // A registry host without VirtualService: the ServiceEntry's own cluster.
    let r = get("catalog", &[]);
    assert_eq!((r.status, r.text()), (200, "catalog".to_string()));
    assert_eq!(catalog.requests().len(), 1);

    // A host nothing declares: the filter leaves it alone, and a generated configuration has no
    // PassthroughCluster for it (envoy/README.md).
    let r = get("example.com", &[]);
    assert_eq!(r.status, 503, "{}", r.text());
    // The filter hands its counters to Envoy once a second (settings.counterFlushMs).
    let flushed = |name: &str, n: u64| envoy.wait_stat(name, n, Duration::from_secs(10)) == n;
    assert!(flushed("wasmcustom.meshroute.passthrough", 1));
    assert!(flushed("wasmcustom.meshroute.default_route", 1));
    assert!(flushed("wasmcustom.meshroute.route.vs.default/product-service.rule.0.dest.outbound|80|v2|product-service.default.svc.cluster.local", 20));

    let prom = envoy.admin_get("/stats/prometheus");
    let line = "meshroute_route{vs=\"default/product-service\",rule=\"0\",\
                dest=\"outbound|80|v2|product-service.default.svc.cluster.local\"} 20";
    assert!(prom.lines().any(|l| l == line), "{line} in /stats/prometheus:\n{prom}");
}
