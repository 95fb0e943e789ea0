//! The VM bench: what a module does per request *inside the VM*, timed under a minimal
//! Proxy-Wasm host in node (V8, the engine Envoy runs the filter on; benches/vm_host.js).
//!
//! An Envoy run (tests/bench_e2e.rs) sees meshroute's own work only as a few per cent of a
//! request's CPU, under a ±2–4 % resolution; here the same modules run back to back in one
//! process, with nothing but a host's bare answers around them, so a change to the filter's Rust
//! shows in nanoseconds. Three modules, each as lean in its callbacks as meshroute:
//! meshroute with the seed routing, the routing floor (filters/router-floor: one header read,
//! one routing-header write, no decision) and the do-nothing module. meshroute − routing floor is
//! meshroute's own work. What the VM bench cannot see is Envoy's side of each call (its cost per
//! call into or out of the VM is several times node's): that stays bench-e2e's.
//!
//! `vm_host_runs_the_modules_as_envoy_does` (in `make test`) checks the host and the modules
//! with a few thousand requests; `vm_cost_per_request` (`make bench-vm`, and in `make
//! bench-e2e`) times them. Knobs: `BENCH_VM_REQUESTS` (per round, default 200,000),
//! `BENCH_VM_ROUNDS` (default 7).
// Needs processes: native only (`make test-wasm` builds every test target of a crate for
// wasm32-unknown-unknown).
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use support::*;

/// What the host saw of one module.
struct VmRun {
    /// Nanoseconds per request, one value per round.
    ns: Vec<f64>,
    requests: u64,
    /// `name=value` of every header write, with its count.
    written: BTreeMap<String, u64>,
}

const MODULES: [&str; 3] = ["meshroute_filter", "meshroute_router_floor", "meshroute_noop.lean"];

fn run(requests: u64, rounds: u64) -> Vec<VmRun> {
    let dir = unique_temp_dir("meshroute-bench-vm");
    let table = dir.join("table.json");
    std::fs::write(&table, filter_configuration(&seed_config())).unwrap();
    let host = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/vm_host.js");
    let mut cmd = Command::new("node");
    cmd.arg(&host).arg(&table).arg(requests.to_string()).arg(rounds.to_string());
    for m in MODULES {
        cmd.arg(wasm_path(m));
    }
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("node: {e} — the VM bench runs the modules in node (V8); install it (`apt-get install nodejs`)")
    });
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "benches/vm_host.js failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let runs: Vec<VmRun> = stdout
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            VmRun {
                ns: v["ns_per_request"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect(),
                requests: v["requests"].as_u64().unwrap(),
                written: v["written"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
                    .collect(),
            }
        })
        .collect();
    assert_eq!(runs.len(), MODULES.len(), "one line per module:\n{stdout}");
    runs
}

/// The host's record of meshroute's routing-header write for `subset`.
fn routed_to(subset: &str) -> String {
    format!("x-meshroute-cluster={}", cluster("product-service", subset))
}

/// What each module must have done, whatever the timing: a bench of a module that routes wrong
/// (or not at all) would time the wrong work.
fn check(runs: &[VmRun]) {
    let [mesh, floor, noop] = runs else { unreachable!() };
    let (v1, v2) = (mesh.written.get(&routed_to("v1")).copied(), mesh.written.get(&routed_to("v2")).copied());
    let (v1, v2) = (v1.unwrap_or(0), v2.unwrap_or(0));
    // One write per request, the routing header only (Istio's default retries are on the route).
    assert_eq!(v1 + v2, mesh.requests, "meshroute wrote {:?}", mesh.written);
    assert_eq!(mesh.written.len(), 2, "meshroute wrote {:?}", mesh.written);
    // The 80/20 split, within 6 σ of a binomial share.
    let n = mesh.requests as f64;
    let share = v2 as f64 / n;
    let sigma = (0.2 * 0.8 / n).sqrt();
    assert!((share - 0.2).abs() < 6.0 * sigma, "v2 got {share:.4} of {n} requests (0.2 ± {:.4})", 6.0 * sigma);
    assert_eq!(floor.written, BTreeMap::from([("x-meshroute-cluster=direct".to_string(), floor.requests)]));
    assert!(noop.written.is_empty(), "the do-nothing module wrote {:?}", noop.written);
}

#[test]
fn vm_host_runs_the_modules_as_envoy_does() {
    check(&run(4_000, 1));
}

#[test]
#[ignore = "a benchmark: `make bench-vm`"]
fn vm_cost_per_request() {
    let env = |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let (requests, rounds) = (env("BENCH_VM_REQUESTS", 200_000), env("BENCH_VM_ROUNDS", 7));
    let runs = run(requests, rounds);
    check(&runs);
    let [mesh, floor, noop] = &runs[..] else { unreachable!() };
    let round = |r: &VmRun| r.ns.iter().map(|n| format!("{n:.0}")).collect::<Vec<_>>().join(" ");
    println!("VM bench (node {}; {requests} requests × {rounds} rounds, alternating order)", node_version());
    for (name, r) in [("meshroute (seed routing)", mesh), ("routing floor (read + write)", floor), ("noop", noop)] {
        println!("  {name:<30} {:>6.0} ns/request in the VM (rounds {})", median(&r.ns), round(r));
    }
    // Per round: the modules of one round ran seconds apart, under the same conditions.
    let own: Vec<f64> = mesh.ns.iter().zip(&floor.ns).map(|(m, f)| m - f).collect();
    let io: Vec<f64> = floor.ns.iter().zip(&noop.ns).map(|(f, n)| f - n).collect();
    let (lo, hi) = range(&own);
    println!(
        "meshroute's own work in the VM: {:.0} ns/request (rounds {lo:.0}–{hi:.0}); the read and the write: {:.0} ns",
        median(&own),
        median(&io)
    );
}

fn node_version() -> String {
    Command::new("node")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
