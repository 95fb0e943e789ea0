//! End-to-end load through a real Envoy (`make bench-e2e`): wrk over
//! HTTP/1.1 and h2load over h2c against Envoy on 127.0.0.1, which proxies to
//! a local upstream. Ignored by default (`cargo test` skips them); bounded in
//! time and request count, loopback only.
//!
//! This is the baseline (plain Envoy, no Wasm filter); filter variants use
//! the same helpers with their own fixtures.
// Needs processes and sockets: native only (`make test-wasm` builds every
// test target of a crate for wasm32-unknown-unknown).
#![cfg(not(target_arch = "wasm32"))]
// Test code: helpers outside #[test] fns may panic too (clippy.toml only
// covers the test functions themselves).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;
use support::*;

fn start_baseline() -> (Upstream, Upstream, Envoy) {
    let a = Upstream::named("a");
    let b = Upstream::named("b");
    let envoy = Envoy::start(
        &fixture("envoy-static.yaml"),
        &[("UPSTREAM_A_PORT", &a.port().to_string()), ("UPSTREAM_B_PORT", &b.port().to_string())],
    );
    (a, b, envoy)
}

/// Runs a load tool, prints its report and returns stdout.
fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool} ({e}): run `make tools-bench`"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("$ {tool} {}\n{stdout}", args.join(" "));
    assert!(out.status.success(), "{tool} failed: {}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[test]
#[ignore = "load test: run with `make bench-e2e`"]
fn baseline_http1_wrk() {
    let (a, _b, envoy) = start_baseline();
    let url = format!("http://127.0.0.1:{}/", envoy.port("LISTENER_PORT"));
    let report = run("wrk", &["-t1", "-c16", "-d5s", "--latency", &url]);
    assert!(!report.contains("Non-2xx"), "errors under load");
    assert!(a.attempts() > 1000, "only {} requests", a.attempts());
}

#[test]
#[ignore = "load test: run with `make bench-e2e`"]
fn baseline_h2c_h2load() {
    let (a, _b, envoy) = start_baseline();
    let url = format!("http://127.0.0.1:{}/", envoy.port("LISTENER_PORT"));
    let report = run("h2load", &["-n20000", "-c8", "-m10", "-t1", &url]);
    assert!(report.contains("20000 succeeded, 0 failed"), "h2load saw failures");
    assert_eq!(a.attempts(), 20000);
}
