//! What meshroute costs inside a real Envoy (`make bench-e2e`; docs/benchmarks-e2e.md has the
//! results and how to read them).
//!
//! Envoy (`--concurrency 1`) carries listeners side by side (tests/fixtures/bench-e2e.yaml):
//! router only, the seed routing as native Envoy routes, the do-nothing Wasm filter (the floor),
//! the routing floor (filters/router-floor: one header read, one routing-header write, no
//! decision), meshroute with the seed VirtualService (and variants that each undo one lever), and N
//! generated rules both ways. A second Envoy answering by `direct_response` is the upstream.
//! wrk (HTTP/1.1) and h2load (h2c) drive the listeners; each run records the requests Envoy
//! answered (its own 2xx counter) and the CPU time the Envoy process spent (the scheduler's
//! nanoseconds per thread, `/proc/<pid>/task/*/schedstat`).
//!
//! The seed comparisons run two identical Envoys and load one listener on each *at the same
//! moment*, swapping sides every round: this machine's speed moves by ±30 % from one second to
//! the next, and a comparison of runs a few seconds apart inherits that. An A/A pair (meshroute
//! against itself) prints the method's resolution. The many-rules comparison (far apart, a
//! factor of 8 at 10,000 rules) runs one listener at a time in rotating rounds.
//!
//! Ignored by default (`cargo test` skips them); loopback only. Knobs: `BENCH_E2E_SECS` (per
//! run, default 2), `BENCH_E2E_ROUNDS` (default 4), `BENCH_E2E_RULES` (default `1000,10000`).
// Needs processes and sockets: native only (`make test-wasm` builds every test target of a crate
// for wasm32-unknown-unknown).
#![cfg(not(target_arch = "wasm32"))]
// Test code: helpers outside #[test] fns may panic too (clippy.toml only covers the test
// functions themselves).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

const TEMPLATE: &str = include_str!("fixtures/bench-e2e.yaml");
const UPSTREAM_TEMPLATE: &str = include_str!("fixtures/bench-upstream.yaml");

// === Set-up ===

/// The cluster of the router-only listener, also named in `x-meshroute-cluster` by the requests
/// to the do-nothing filter (so the noop listener takes the same cluster_header route as
/// meshroute's requests).
const DIRECT_CLUSTER: &str = "direct";

/// The route-level retry policy istiod writes when a VirtualService sets none
/// (docs/semantics.md R57; no retriable status codes since Istio 1.24); the sidecar routes carry
/// the same for requests without retry hints.
const ISTIO_RETRY: &str = r#"{"retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes", "num_retries": 2, "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}], "host_selection_retry_max_attempts": 5}"#;

/// The route table of envoy/sidecar.yaml: the filter's routing header, else PassthroughCluster;
/// `default_retries: false` leaves out the route with Istio's default retry policy (the filter
/// then hints every policy, as before `retryPolicyOnRoute`).
fn sidecar_routes(default_retries: bool) -> String {
    let no_timeout = json!({"timeout": "0s", "max_stream_duration": {"grpc_timeout_header_max": "0s"}});
    let mut by_header = json!({"cluster_header": "x-meshroute-cluster"});
    let mut passthrough = json!({"cluster": "PassthroughCluster"});
    for r in [&mut by_header, &mut passthrough] {
        r.as_object_mut().unwrap().extend(no_timeout.as_object().unwrap().clone());
    }
    // Istio's default retry policy on the route for requests without a retry hint (the filter
    // writes none for the default: settings.retryPolicyOnRoute), as in envoy/sidecar.yaml.
    let mut with_retries = by_header.clone();
    with_retries["retry_policy"] = serde_json::from_str(ISTIO_RETRY).unwrap();
    let mut routes = vec![json!(
        {"name": "meshroute-default-retries",
         "match": {"prefix": "/", "headers": [{"name": "x-meshroute-cluster", "present_match": true},
                   {"name": "x-envoy-max-retries", "present_match": true, "invert_match": true}]},
         "route": with_retries, "request_headers_to_remove": ["x-meshroute-cluster"]})];
    if !default_retries {
        routes.clear();
    }
    routes.extend([
        json!(
        {"name": "meshroute",
         "match": {"prefix": "/", "headers": [{"name": "x-meshroute-cluster", "present_match": true}]},
         "route": by_header, "request_headers_to_remove": ["x-meshroute-cluster"]}),
        json!({"name": "passthrough", "match": {"prefix": "/"}, "route": passthrough}),
    ]);
    json!({"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]}).to_string()
}

/// The seed config as before `retryPolicyOnRoute`: every policy (the default too) as hints.
fn hints_config() -> Value {
    let mut c = seed_config();
    c["settings"]["retryPolicyOnRoute"] = json!(false);
    c
}

/// The seed config with every counter event a host call (`counterFlushMs: 0`, as before
/// batching).
fn each_config() -> Value {
    let mut c = seed_config();
    c["settings"]["counterFlushMs"] = json!(0);
    c
}

/// Rule `i` of the generated set: URI prefix `/r<i>/`, to subset v1 or v2 alternately.
fn rule_prefix(i: usize) -> String {
    format!("/r{i}/")
}

fn rule_subset(i: usize) -> &'static str {
    if i % 2 == 0 {
        "v1"
    } else {
        "v2"
    }
}

/// `n` prefix rules in one VirtualService for host `rules`.
fn rules_config(n: usize) -> Value {
    let http: Vec<Value> = (0..n)
        .map(|i| {
            json!({"match": [{"uri": {"prefix": rule_prefix(i)}}],
                   "route": [{"destination": {"host": "rules", "subset": rule_subset(i)}}]})
        })
        .collect();
    json!({"settings": {"namespace": "default", "retryPolicyOnRoute": true}, "resources": [
        {"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
         "metadata": {"name": "rules", "namespace": "default"},
         "spec": {"hosts": ["rules"], "http": http}},
        destination_rule("rules", &["v1", "v2"])]})
}

/// The same `n` rules as istiod would write them: one Envoy route each, in order.
fn native_rules(n: usize) -> String {
    let retry: Value = serde_json::from_str(ISTIO_RETRY).unwrap();
    let routes: Vec<Value> = (0..n)
        .map(|i| {
            json!({"match": {"prefix": rule_prefix(i)},
                   "route": {"cluster": cluster("rules", rule_subset(i)), "timeout": "0s",
                             "max_stream_duration": {"grpc_timeout_header_max": "0s"}, "retry_policy": retry}})
        })
        .collect();
    Value::Array(routes).to_string()
}

fn clusters(upstream_port: u16) -> String {
    let names = [
        cluster("product-service", "v1"),
        cluster("product-service", "v2"),
        cluster("rules", "v1"),
        cluster("rules", "v2"),
        "PassthroughCluster".to_string(),
        DIRECT_CLUSTER.to_string(),
    ];
    let list: Vec<Value> = names
        .iter()
        .map(|name| {
            json!({"name": name, "type": "STATIC", "connect_timeout": "1s",
                   "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint":
                       {"address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream_port}}}}]}]}})
        })
        .collect();
    Value::Array(list).to_string()
}

/// Inside YAML single quotes only `'` needs escaping (doubled).
fn yaml_single_quoted(s: &str) -> String {
    s.replace('\'', "''")
}

/// The filter's configuration for a source configuration: the compiled table (what
/// `meshroute compile` writes; the filter loads nothing else), single-quoted for the YAML.
fn filter_config(source: &Value) -> String {
    let table = meshroute::table::compile_source(source.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("the bench's configuration does not compile:\n{e}"));
    yaml_single_quoted(&table)
}

/// The upstream Envoy and the Envoy under test, with `n_rules` generated rules.
struct Bench {
    envoy: Envoy,
    upstream: Envoy,
}

impl Bench {
    fn start(n_rules: usize) -> Bench {
        let upstream = Envoy::start_with(UPSTREAM_TEMPLATE, &[], quiet());
        let started = Instant::now();
        let envoy = Envoy::start_with(
            TEMPLATE,
            &[
                ("ISTIO_RETRY", ISTIO_RETRY),
                ("SIDECAR_ROUTES", &sidecar_routes(true)),
                ("SIDECAR_ROUTES_HINTS", &sidecar_routes(false)),
                ("HINTS_CONFIG", &filter_config(&hints_config())),
                ("EACH_CONFIG", &filter_config(&each_config())),
                ("NOOP_WASM", &wasm_path("meshroute_noop").display().to_string()),
                ("NOOP_LEAN_WASM", &wasm_path("meshroute_noop.lean").display().to_string()),
                ("ROUTER_FLOOR_WASM", &wasm_path("meshroute_router_floor").display().to_string()),
                ("MESH_WASM", &wasm_path("meshroute_filter").display().to_string()),
                ("MESH_FULL_WASM", &wasm_path("meshroute_filter.all_callbacks").display().to_string()),
                ("SEED_CONFIG", &filter_config(&seed_config())),
                ("RULES_CONFIG", &filter_config(&rules_config(n_rules))),
                ("NATIVE_RULES", &native_rules(n_rules)),
                ("CLUSTERS", &clusters(upstream.port("LISTENER_PORT"))),
            ],
            EnvoyOptions { ready_timeout: Duration::from_secs(120), ..quiet() },
        );
        println!("Envoy with {n_rules} generated rules ready in {:.1} s", started.elapsed().as_secs_f64());
        Bench { envoy, upstream }
    }

    fn counter(&self, name: &str) -> u64 {
        counter(&self.envoy, name)
    }
}

fn counter(envoy: &Envoy, name: &str) -> u64 {
    envoy.stat(name).unwrap_or(0)
}

fn quiet() -> EnvoyOptions {
    EnvoyOptions { log_level: "warn".into(), ..EnvoyOptions::default() }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn secs() -> u64 {
    env_number("BENCH_E2E_SECS", 2).max(1)
}

fn rounds() -> usize {
    env_number("BENCH_E2E_ROUNDS", 4).max(1) as usize
}

// === Load ===

/// One listener under test and the request sent to it.
#[derive(Clone, Debug)]
struct Variant {
    name: &'static str,
    /// Its placeholder in the template, and its HCM stat prefix.
    port_var: &'static str,
    stat_prefix: &'static str,
    host: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
}

fn variant(name: &'static str, port_var: &'static str, stat_prefix: &'static str) -> Variant {
    Variant { name, port_var, stat_prefix, host: "product-service", path: "/".into(), headers: Vec::new() }
}

/// The seed comparison's listeners (indexes in [`SeedPair`]s).
fn seed_variants() -> Vec<Variant> {
    let mut noop = variant("wasm floor (noop)", "NOOP_PORT", "noop");
    noop.headers.push(("x-meshroute-cluster", DIRECT_CLUSTER.into()));
    let mut lean = variant("noop declining meshroute's callbacks", "NOOP_LEAN_PORT", "noop_lean");
    lean.headers = noop.headers.clone();
    vec![
        variant("router only", "PLAIN_PORT", "plain"),
        variant("native routes", "NATIVE_PORT", "native"),
        noop,
        variant("meshroute", "MESH_PORT", "meshroute"),
        variant("meshroute, all hints", "MESH_HINTS_PORT", "meshroute_hints"),
        variant("meshroute, count each", "MESH_EACH_PORT", "meshroute_each"),
        variant("meshroute, every callback", "MESH_FULL_PORT", "meshroute_full"),
        lean,
        variant("routing floor (one header read, one routing-header write)", "ROUTER_FLOOR_PORT", "router_floor"),
    ]
}

const NATIVE: usize = 1;
const FLOOR: usize = 2;
const MESH: usize = 3;
const LEAN: usize = 7;
const ROUTER_FLOOR: usize = 8;

/// One comparison of the seed bench: listener `x` over listener `y`, CPU per request.
struct SeedPair {
    what: &'static str,
    x: usize,
    y: usize,
    /// Issue 11 goal 1's bound, for the two pairs it names.
    goal: Option<f64>,
}

fn seed_pairs() -> Vec<SeedPair> {
    let pair = |what, x, y, goal| SeedPair { what, x, y, goal };
    vec![
        pair("meshroute ÷ Wasm floor", MESH, FLOOR, Some(1.10)),
        pair("meshroute ÷ native routes", MESH, NATIVE, Some(1.20)),
        pair("A/A: meshroute ÷ meshroute (the method's resolution)", MESH, MESH, None),
        pair("lever, declined callbacks: meshroute ÷ meshroute with every callback", MESH, 6, None),
        pair("lever, retry policy on the route: meshroute ÷ meshroute with all hints", MESH, 4, None),
        pair("lever, batched counters: meshroute ÷ meshroute counting each event", MESH, 5, None),
        pair("meshroute ÷ noop declining the same callbacks", MESH, LEAN, None),
        pair("meshroute ÷ routing floor (meshroute's own work)", MESH, ROUTER_FLOOR, None),
        pair("routing floor ÷ noop declining the same callbacks (a read and a write)", ROUTER_FLOOR, LEAN, None),
        // Goal 1's two bounds read for a filter that routes and decides nothing.
        pair("routing floor ÷ Wasm floor", ROUTER_FLOOR, FLOOR, None),
        pair("routing floor ÷ native routes", ROUTER_FLOOR, NATIVE, None),
        pair("Wasm floor ÷ native routes (what any Wasm filter costs)", FLOOR, NATIVE, None),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tool {
    /// wrk: HTTP/1.1, 16 connections, as fast as it can.
    Wrk,
    /// h2load: h2c, 8 connections × 10 streams, as fast as it can.
    H2load,
    /// h2load: h2c at a fixed total rate (4 connections), latency of every request logged.
    FixedRate(u32),
}

impl Tool {
    fn label(self) -> String {
        match self {
            Tool::Wrk => "wrk HTTP/1.1 -c16".into(),
            Tool::H2load => "h2load h2c -c8 -m10".into(),
            Tool::FixedRate(rps) => format!("h2load h2c {rps} req/s"),
        }
    }
}

/// One run of one tool against one listener.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    /// 2xx answers Envoy counted for the listener during the run.
    requests: u64,
    wall: f64,
    /// Envoy process CPU seconds during the run.
    cpu: f64,
    /// Latency percentiles in ms (fixed-rate runs only).
    p50: f64,
    p99: f64,
}

impl Sample {
    fn cpu_us_per_request(&self) -> f64 {
        self.cpu * 1e6 / self.requests.max(1) as f64
    }
}

/// Envoy's CPU time so far, all threads, in seconds: the scheduler's nanosecond run time of
/// each thread (`/proc/<pid>/task/*/schedstat`), else utime+stime in clock ticks (10 ms).
fn cpu_seconds(pid: u32) -> f64 {
    let schedstat = || -> Option<f64> {
        let mut ns = 0u64;
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
            let text = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
            ns += text.split_whitespace().next()?.parse::<u64>().ok()?;
        }
        Some(ns as f64 / 1e9)
    };
    schedstat().unwrap_or_else(|| cpu_ticks_seconds(pid))
}

fn cpu_ticks_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / clock_ticks() as f64
}

fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100)
    })
}

/// Runs a load tool and returns its stdout; panics (with its output) if it fails.
fn run_tool(tool: &str, args: &[String]) -> String {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool} ({e}): run `make tools-bench`"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{tool} {} failed:\n{stdout}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The command line of one run (printed once per tool, so the results can be reproduced by hand).
fn command(tool: Tool, v: &Variant, port: u16, secs: u64, log: &str) -> (&'static str, Vec<String>) {
    let mut args: Vec<String> = match tool {
        // `Host` capitalised, or wrk sends its own `Host` as well (and Envoy takes the first).
        Tool::Wrk => vec!["-t1".into(), "-c16".into(), format!("-d{secs}s"), "-H".into(), format!("Host: {}", v.host)],
        Tool::H2load => ["-t1", "-c8", "-m10", "-D", &secs.to_string(), "-H", &format!(":authority: {}", v.host)]
            .map(String::from)
            .to_vec(),
        // --rps is per connection.
        Tool::FixedRate(rps) => [
            "-t1",
            "-c4",
            "-m1",
            &format!("--rps={}", rps / 4),
            "-D",
            &secs.to_string(),
            &format!("--log-file={log}"),
            "-H",
            &format!(":authority: {}", v.host),
        ]
        .map(String::from)
        .to_vec(),
    };
    for (name, value) in &v.headers {
        args.extend(["-H".to_string(), format!("{name}: {value}")]);
    }
    args.push(format!("http://127.0.0.1:{port}{}", v.path));
    (if tool == Tool::Wrk { "wrk" } else { "h2load" }, args)
}

/// Drives one listener of `envoy` with one tool for `secs` seconds.
fn measure(envoy: &Envoy, v: &Variant, tool: Tool, secs: u64, print_command: bool) -> Sample {
    let port = envoy.port(v.port_var);
    let log = envoy.dir().join("h2load-latency.tsv");
    let (bin, args) = command(tool, v, port, secs, &log.display().to_string());
    if print_command {
        println!("$ {bin} {}", args.join(" "));
    }
    let ok = format!("http.{}.downstream_rq_2xx", v.stat_prefix);
    let errors = |e: &Envoy| -> u64 {
        ["4xx", "5xx"].iter().map(|c| counter(e, &format!("http.{}.downstream_rq_{c}", v.stat_prefix))).sum()
    };
    let (ok0, err0) = (counter(envoy, &ok), errors(envoy));
    let pid = envoy.pid();
    let cpu0 = cpu_seconds(pid);
    let started = Instant::now();
    let out = run_tool(bin, &args);
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu0;
    let requests = counter(envoy, &ok) - ok0;
    let failed = errors(envoy) - err0;
    assert_eq!(failed, 0, "{}: {failed} requests failed:\n{out}", v.name);
    assert!(!out.contains("Non-2xx"), "{}: errors under load:\n{out}", v.name);
    let mut s = Sample { requests, wall, cpu, ..Sample::default() };
    if let Tool::FixedRate(_) = tool {
        let mut lat: Vec<f64> = std::fs::read_to_string(&log)
            .expect("h2load log file")
            .lines()
            .filter_map(|l| {
                let cols: Vec<&str> = l.split('\t').collect();
                (cols.len() >= 3 && cols[1] == "200").then(|| cols[2].parse::<f64>().ok()).flatten()
            })
            .map(|us| us / 1000.0)
            .collect();
        assert!(lat.len() as u64 * 10 >= requests * 9, "{}: h2load logged {} of {requests}", v.name, lat.len());
        lat.sort_by(f64::total_cmp);
        s.p50 = percentile(&lat, 0.50);
        s.p99 = percentile(&lat, 0.99);
    }
    s
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Every variant with every tool, `rounds` times; the variant order rotates each round.
/// Returns the samples per (tool, variant index), in round order.
fn campaign(envoy: &Envoy, variants: &[Variant], tools: &[Tool], secs: u64) -> BTreeMap<(String, usize), Vec<Sample>> {
    let mut out: BTreeMap<(String, usize), Vec<Sample>> = BTreeMap::new();
    for &tool in tools {
        for round in 0..rounds() {
            for k in 0..variants.len() {
                let i = (k + round) % variants.len();
                let s = measure(envoy, &variants[i], tool, secs, round == 0 && k == 0);
                println!(
                    "  {:<22} round {round} {:<22} {:>8} req {:>9.0} req/s {:>7.2} µs CPU/req{}",
                    tool.label(),
                    variants[i].name,
                    s.requests,
                    s.requests as f64 / s.wall,
                    s.cpu_us_per_request(),
                    if s.p99 > 0.0 { format!("  p50 {:.3} ms p99 {:.3} ms", s.p50, s.p99) } else { String::new() }
                );
                out.entry((tool.label(), i)).or_default().push(s);
            }
        }
    }
    out
}

/// Connection pools, and V8's tier-up of the Wasm code (Liftoff first, TurboFan later): the
/// first second of a Wasm listener is not its steady state.
fn warm_up(envoy: &Envoy, variants: &[Variant]) {
    for v in variants {
        measure(envoy, v, Tool::H2load, 1, false);
        measure(envoy, v, Tool::Wrk, 1, false);
    }
}

// === Report ===

struct Summary {
    rps: f64,
    cpu_us: f64,
    p50: f64,
    p99: f64,
}

fn summarize(samples: &[Sample]) -> Summary {
    let requests: u64 = samples.iter().map(|s| s.requests).sum();
    let wall: f64 = samples.iter().map(|s| s.wall).sum();
    let cpu: f64 = samples.iter().map(|s| s.cpu).sum();
    let median_of = |f: fn(&Sample) -> f64| median(&samples.iter().map(f).collect::<Vec<f64>>());
    Summary {
        rps: requests as f64 / wall,
        cpu_us: cpu * 1e6 / requests.max(1) as f64,
        p50: median_of(|s| s.p50),
        p99: median_of(|s| s.p99),
    }
}

/// `a / b` of CPU per request over all rounds, with the range of the per-round ratios.
fn cpu_ratio(a: &[Sample], b: &[Sample]) -> String {
    let total = summarize(a).cpu_us / summarize(b).cpu_us;
    let per_round: Vec<f64> = a.iter().zip(b).map(|(x, y)| x.cpu_us_per_request() / y.cpu_us_per_request()).collect();
    let (lo, hi) = range(&per_round);
    format!("{total:.2} ({lo:.2}–{hi:.2})")
}

/// A Markdown table: one row per tool × variant, ratios to the variants named `to`.
fn table(
    variants: &[Variant],
    tools: &[Tool],
    samples: &BTreeMap<(String, usize), Vec<Sample>>,
    to: &[usize],
) -> String {
    let mut t = String::from("| load | listener | req/s | CPU µs/req |");
    for &j in to {
        let _ = write!(t, " CPU ÷ {} |", variants[j].name);
    }
    if tools.iter().any(|t| matches!(t, Tool::FixedRate(_))) {
        t.push_str(" p50 ms | p99 ms |");
    }
    t.push('\n');
    t.push_str(&"|---".repeat(t.matches('|').count() - 1));
    t.push_str("|\n");
    for &tool in tools {
        for (i, v) in variants.iter().enumerate() {
            let s = &samples[&(tool.label(), i)];
            let sum = summarize(s);
            let _ = write!(t, "| {} | {} | {:.0} | {:.1} |", tool.label(), v.name, sum.rps, sum.cpu_us);
            for &j in to {
                let cell = if i == j { "1".to_string() } else { cpu_ratio(s, &samples[&(tool.label(), j)]) };
                let _ = write!(t, " {cell} |");
            }
            if let Tool::FixedRate(_) = tool {
                let _ = write!(t, " {:.3} | {:.3} |", sum.p50, sum.p99);
            }
            t.push('\n');
        }
    }
    t
}

fn machine_note() -> String {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "{cpus} CPU(s) ({model}), load average at start {}; client, Envoy under test and upstream Envoy share them",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    )
}

/// `a`'s CPU per request over `b`'s, all rounds together.
fn overall_ratio(a: &[Sample], b: &[Sample]) -> f64 {
    summarize(a).cpu_us / summarize(b).cpu_us
}

/// Prints one goal's line and keeps it for the one-screen summary `make bench-e2e` prints at
/// the end (target/bench-e2e-goals.txt; the Makefile empties it first).
fn goal(line: &str) {
    use std::io::Write as _;
    println!("{line}");
    let path = target_dir().join("bench-e2e-goals.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(f, "{line}");
    }
}

fn verdict(ratio: f64, goal: f64) -> &'static str {
    if ratio <= goal {
        "met"
    } else {
        "NOT met"
    }
}

// === Benchmarks ===

/// Runs `x` on one Envoy and `y` on the other at the same moment, for `secs` seconds.
fn at_once(ex: &Envoy, vx: &Variant, ey: &Envoy, vy: &Variant, tool: Tool, secs: u64) -> (Sample, Sample) {
    std::thread::scope(|s| {
        let x = s.spawn(|| measure(ex, vx, tool, secs, false));
        let y = s.spawn(|| measure(ey, vy, tool, secs, false));
        (x.join().expect("load thread"), y.join().expect("load thread"))
    })
}

/// Samples of one pair and tool: `(x, y)` per round, in round order.
type PairSamples = BTreeMap<(String, usize), Vec<(Sample, Sample)>>;

/// Every pair with every tool, `rounds` times. In each run the pair's two listeners take the
/// load at the same moment, one on each Envoy, so whatever else the machine does then slows
/// both alike; the sides swap every round, so neither process's placement favours one.
fn paired_campaign(a: &Envoy, b: &Envoy, variants: &[Variant], pairs: &[SeedPair], tools: &[Tool]) -> PairSamples {
    let mut out = PairSamples::new();
    for &tool in tools {
        let secs = if matches!(tool, Tool::FixedRate(_)) { secs() + 1 } else { secs() };
        let (ra, rb) = (a.port(variants[MESH].port_var), b.port(variants[MESH].port_var));
        let (bin, args) = command(tool, &variants[MESH], ra, secs, "LOG");
        println!("$ {bin} {}   (and the same at the other listener, at once; MESH on :{ra} / :{rb})", args.join(" "));
        for round in 0..rounds() {
            for (k, p) in pairs.iter().enumerate() {
                let (ex, ey) = if round % 2 == 0 { (a, b) } else { (b, a) };
                let (x, y) = at_once(ex, &variants[p.x], ey, &variants[p.y], tool, secs);
                println!(
                    "  {:<22} round {round} {:<58} {:>7.2} / {:>7.2} µs CPU/req = {:.3}{}",
                    tool.label(),
                    p.what,
                    x.cpu_us_per_request(),
                    y.cpu_us_per_request(),
                    x.cpu_us_per_request() / y.cpu_us_per_request(),
                    if x.p99 > 0.0 { format!("  p99 {:.3} / {:.3} ms", x.p99, y.p99) } else { String::new() }
                );
                out.entry((tool.label(), k)).or_default().push((x, y));
            }
        }
    }
    out
}

/// `x ÷ y` of CPU per request over all rounds (each side pooled over both Envoys), and the
/// lowest and highest per-round ratio.
fn pair_ratio(rounds: &[(Sample, Sample)]) -> (f64, f64, f64) {
    let (xs, ys): (Vec<Sample>, Vec<Sample>) = rounds.iter().copied().unzip();
    let per_round: Vec<f64> = rounds.iter().map(|(x, y)| x.cpu_us_per_request() / y.cpu_us_per_request()).collect();
    let (lo, hi) = range(&per_round);
    (overall_ratio(&xs, &ys), lo, hi)
}

/// The seed routing: meshroute against native routes and the Wasm floor, and each lever alone.
#[test]
#[ignore = "load test: run with `make bench-e2e`"]
fn seed_routing_cost_per_request_against_native_routes_and_the_wasm_floor() {
    println!("machine: {}", machine_note());
    // Two identical Envoys (each with its own upstream); every comparison runs one listener on
    // each at the same moment.
    let (a, b) = (Bench::start(1), Bench::start(1));
    let variants = seed_variants();
    let pairs = seed_pairs();
    // The upstream must not be the bottleneck: straight at it, it answers several times what
    // any proxied listener gets.
    let direct = variant("upstream direct", "LISTENER_PORT", "upstream");
    for tool in [Tool::Wrk, Tool::H2load] {
        let s = measure(&a.upstream, &direct, tool, 1, false);
        println!("upstream alone, {}: {:.0} req/s", tool.label(), s.requests as f64 / s.wall);
    }
    std::thread::scope(|s| {
        s.spawn(|| warm_up(&a.envoy, &variants));
        s.spawn(|| warm_up(&b.envoy, &variants));
    });
    let tools = [Tool::Wrk, Tool::H2load, Tool::FixedRate(2000)];
    let samples = paired_campaign(&a.envoy, &b.envoy, &variants, &pairs, &tools);

    // The native and meshroute listeners both split 80/20 (meshroute's counters say which way
    // its requests went; the clusters' totals minus those are the native listener's). Every
    // meshroute listener counts into the same per-rule counters, which the filter hands to
    // Envoy once a second: wait for the last flush.
    let meshroute_listeners = ["meshroute", "meshroute_hints", "meshroute_each", "meshroute_full"];
    for bench in [&a, &b] {
        let split = |subset: &str| {
            let c = cluster("product-service", subset);
            let mesh = bench.counter(&format!("wasmcustom.meshroute.route.vs.default/product-service.rule.1.dest.{c}"));
            (mesh, bench.counter(&format!("cluster.{c}.upstream_rq_total")) - mesh)
        };
        let mesh_total =
            meshroute_listeners.iter().map(|l| bench.counter(&format!("http.{l}.downstream_rq_total"))).sum::<u64>();
        let deadline = Instant::now() + Duration::from_secs(10);
        while split("v1").0 + split("v2").0 < mesh_total && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let ((m1, n1), (m2, n2)) = (split("v1"), split("v2"));
        for (who, v1, v2) in [("meshroute", m1, m2), ("native routes", n1, n2)] {
            let share = v2 as f64 / (v1 + v2) as f64;
            assert!((0.18..0.22).contains(&share), "{who} sent {share:.3} of the split to v2");
        }
        // Every meshroute request took the split rule; nothing fell through to PassthroughCluster.
        assert_eq!(m1 + m2, mesh_total, "meshroute requests not all split");
        assert_eq!(bench.counter("cluster.PassthroughCluster.upstream_rq_total"), 0, "requests passed through");
    }

    // Each listener's CPU per request, pooled over every run it took part in (different runs
    // happened at different moments: compare the ratios below, not these).
    let mut t = String::from("| load | listener | req/s | CPU µs/req |\n|---|---|---|---|\n");
    for &tool in &tools {
        for (i, v) in variants.iter().enumerate() {
            let mine: Vec<Sample> = pairs
                .iter()
                .enumerate()
                .flat_map(|(k, p)| {
                    samples[&(tool.label(), k)].iter().flat_map(move |(x, y)| {
                        [(p.x == i).then_some(*x), (p.y == i).then_some(*y)].into_iter().flatten()
                    })
                })
                .collect();
            if !mine.is_empty() {
                let s = summarize(&mine);
                let _ = writeln!(t, "| {} | {} | {:.0} | {:.1} |", tool.label(), v.name, s.rps, s.cpu_us);
            }
        }
    }
    println!("\n{t}");
    let mut t = String::from("| comparison (CPU per request, at the same moment) |");
    for tool in &tools {
        let _ = write!(t, " {} |", tool.label());
    }
    t.push_str(&format!("\n|---|{}\n", "---|".repeat(tools.len())));
    for (k, p) in pairs.iter().enumerate() {
        let _ = write!(t, "| {} |", p.what);
        for tool in &tools {
            let (r, lo, hi) = pair_ratio(&samples[&(tool.label(), k)]);
            let _ = write!(t, " {r:.3} ({lo:.2}–{hi:.2}) |");
        }
        t.push('\n');
    }
    println!("{t}");

    // One screen: each goal of issue 11 (goals 1 and 4), its result, met or not.
    println!("Goals (ratios of CPU per request, the two listeners loaded at the same moment; in brackets the per-round range):");
    let pair_of = |x: usize, y: usize| pairs.iter().position(|p| p.x == x && p.y == y).expect("a seed pair");
    let aa = pair_of(MESH, MESH);
    for tool in &tools {
        let ratio = |k: usize| pair_ratio(&samples[&(tool.label(), k)]);
        let (n, nlo, nhi) = ratio(aa);
        let [floor, native] = [FLOOR, NATIVE].map(|y| {
            let k = pair_of(MESH, y);
            (ratio(k), pairs[k].goal.expect("goal"))
        });
        goal(&format!(
            "issue 11 goal 1, {}: meshroute = {:.3} ({:.2}–{:.2}) × the Wasm floor (goal ≤ {:.2}: {}), {:.3} ({:.2}–{:.2}) × \
             native routes (goal ≤ {:.2}: {}); A/A {n:.3} ({nlo:.2}–{nhi:.2})",
            tool.label(),
            floor.0 .0,
            floor.0 .1,
            floor.0 .2,
            floor.1,
            verdict(floor.0 .0, floor.1),
            native.0 .0,
            native.0 .1,
            native.0 .2,
            native.1,
            verdict(native.0 .0, native.1),
        ));
        goal(&format!(
            "issue 11 goal 1's reach, {}: a filter that only reads the headers and writes the routing header (the routing \
             floor) = {:.3} × the Wasm floor, {:.3} × native routes; meshroute = {:.3} × the routing floor",
            tool.label(),
            ratio(pair_of(ROUTER_FLOOR, FLOOR)).0,
            ratio(pair_of(ROUTER_FLOOR, NATIVE)).0,
            ratio(pair_of(MESH, ROUTER_FLOOR)).0,
        ));
    }
    for tool in tools.iter().filter(|t| matches!(t, Tool::FixedRate(_))) {
        // p99 of meshroute minus the floor's in the same runs; the noise is the A/A pair's
        // difference (the same listener on the two Envoys at the same moment).
        let added = |k: usize| -> Vec<f64> {
            samples[&(tool.label(), k)].iter().map(|(x, y)| (x.p99 - y.p99) * 1000.0).collect()
        };
        let (mesh_added, noise) = (added(pair_of(MESH, FLOOR)), added(aa));
        let ((lo, hi), (nlo, nhi)) = (range(&mesh_added), range(&noise));
        let median_added = median(&mesh_added);
        goal(&format!(
            "issue 11 goal 4, {}: p99 added over the floor = {median_added:.0} µs (median of rounds; per round \
             {lo:.0}…{hi:.0} µs; A/A per round {nlo:.0}…{nhi:.0} µs) (goal ≤ 50 µs: {})",
            tool.label(),
            verdict(median_added, 50.0)
        ));
    }
}

/// N prefix rules, the request matching the last: an Envoy route list against meshroute's
/// index, at 1,000 and 10,000 rules.
#[test]
#[ignore = "load test: run with `make bench-e2e`"]
fn many_rules_meshroute_against_the_same_native_route_list() {
    println!("machine: {}", machine_note());
    let counts: Vec<usize> = std::env::var("BENCH_E2E_RULES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .filter(|&n| n > 0)
        .collect();
    let tools = [Tool::Wrk, Tool::H2load];
    let mut report = String::new();
    for n in counts {
        let bench = Bench::start(n);
        let last = n - 1;
        let late = |name, port_var, stat_prefix| Variant {
            host: "rules",
            path: format!("{}x", rule_prefix(last)),
            ..variant(name, port_var, stat_prefix)
        };
        let variants = vec![
            late("native routes", "NATIVE_RULES_PORT", "native_rules"),
            late("meshroute", "MESH_RULES_PORT", "meshroute_rules"),
        ];
        warm_up(&bench.envoy, &variants);
        let samples = campaign(&bench.envoy, &variants, &tools, secs());
        // Both listeners took the last rule.
        let want = cluster("rules", rule_subset(last));
        let other = cluster("rules", rule_subset(last + 1));
        assert_eq!(bench.counter(&format!("cluster.{other}.upstream_rq_total")), 0, "a request took another rule");
        assert!(bench.counter(&format!("cluster.{want}.upstream_rq_total")) > 0);
        assert_eq!(bench.counter("cluster.PassthroughCluster.upstream_rq_total"), 0, "requests passed through");
        let _ = writeln!(report, "\n{n} rules, request path {}x (rule {last}):\n", rule_prefix(last));
        report.push_str(&table(&variants, &tools, &samples, &[0]));
        for tool in tools {
            let ratio = overall_ratio(&samples[&(tool.label(), 1)], &samples[&(tool.label(), 0)]);
            goal(&format!(
                "{n} rules, {}: meshroute CPU/req = {ratio:.2}× native routes (goal < 1: {})",
                tool.label(),
                verdict(ratio, 0.999)
            ));
            // Far apart at this size (a route list is scanned in order, the index is not), so
            // this holds on any machine.
            if n >= 10_000 {
                assert!(ratio < 1.0, "{n} rules, {}: meshroute costs {ratio:.2}× native routes", tool.label());
            }
        }
    }
    println!("{report}");
}

// === Load time and memory per configuration size ===

const LOAD_TEMPLATE: &str = include_str!("fixtures/bench-load.yaml");

/// `n` rules in one VirtualService, every other one a URI prefix, the others an exact header
/// (the "mixed" shape of benches/load.rs).
fn mixed_rules_config(n: usize) -> Value {
    let http: Vec<Value> = (0..n)
        .map(|i| {
            let m = if i % 2 == 0 {
                json!({"uri": {"prefix": rule_prefix(i)}})
            } else {
                json!({"headers": {"x-tenant": {"exact": format!("t{i}")}}})
            };
            json!({"match": [m], "route": [{"destination": {"host": "rules", "subset": rule_subset(i)}}]})
        })
        .collect();
    json!({"settings": {"namespace": "default"}, "resources": [
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "rules", "namespace": "default"},
         "spec": {"hosts": ["rules"], "http": http}},
        destination_rule("rules", &["v1", "v2"])]})
}

/// `VmRSS` and `VmHWM` (peak) of a process, in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().strip_suffix("kB")?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// One start of the load fixture: seconds until admin `/ready`, seconds until the listener
/// answered (and, for meshroute, every VM counted its configuration as loaded), RSS and peak,
/// and what each VM logged about its load.
struct LoadSample {
    ready_s: f64,
    serving_s: f64,
    rss_mib: f64,
    peak_mib: f64,
    vms: Vec<VmLoad>,
}

/// One VM's "config loaded" log line: how long `on_configure` took, and its linear memory after
/// the load and how much the load grew it (Wasm memory never shrinks: that is the peak).
#[derive(Clone, Copy, Debug)]
struct VmLoad {
    ms: f64,
    memory_mib: f64,
    grew_mib: f64,
}

/// The filter's `config loaded: …; in N ms, VM memory M KiB (+G KiB)` lines in `log`.
fn vm_loads(log: &str) -> Vec<VmLoad> {
    let number = |s: &str| s.trim().parse::<f64>().unwrap_or(f64::NAN);
    log.lines()
        .filter_map(|l| {
            let rest = l.split("config loaded: ").nth(1)?.rsplit_once("; in ")?.1;
            let (ms, rest) = rest.split_once(" ms, VM memory ")?;
            let (memory, rest) = rest.split_once(" KiB (+")?;
            let grew = rest.split_once(" KiB)")?.0;
            Some(VmLoad { ms: number(ms), memory_mib: number(memory) / 1024.0, grew_mib: number(grew) / 1024.0 })
        })
        .collect()
}

/// `quiet()` but with the filter's own info lines (its per-VM load times) in the log.
fn quiet_but_wasm() -> EnvoyOptions {
    EnvoyOptions { extra_args: vec!["--component-log-level".into(), "wasm:info".into()], ..quiet() }
}

fn load_sample(module: &str, root_id: &str, config: &Value, vms: u64) -> LoadSample {
    // The do-nothing module reads no configuration; meshroute's is the compiled table, compiled
    // before the clock starts (the CLI does that, not the proxy).
    let config = if vms == 0 { yaml_single_quoted(&config.to_string()) } else { filter_config(config) };
    let started = Instant::now();
    let envoy = Envoy::start_with(
        LOAD_TEMPLATE,
        &[("WASM", &wasm_path(module).display().to_string()), ("ROOT_ID", root_id), ("CONFIG", &config)],
        EnvoyOptions { concurrency: 2, ready_timeout: Duration::from_secs(300), ..quiet_but_wasm() },
    );
    let ready_s = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let answered = try_http("GET", envoy.port("LOAD_PORT"), "/", &[("host", "rules")], b"", Duration::from_secs(5))
            .is_ok_and(|r| r.status > 0);
        let loaded = vms == 0 || counter(&envoy, "wasmcustom.meshroute.config.loaded") >= vms;
        if answered && loaded {
            break;
        }
        assert!(Instant::now() < deadline, "{module} not serving; log tail:\n{}", envoy.log_tail(40));
        std::thread::sleep(Duration::from_millis(20));
    }
    let serving_s = started.elapsed().as_secs_f64();
    let (rss_mib, peak_mib) = rss_mib(envoy.pid());
    LoadSample { ready_s, serving_s, rss_mib, peak_mib, vms: vm_loads(&envoy.log()) }
}

fn max_of(xs: impl Iterator<Item = f64>) -> f64 {
    xs.fold(f64::NAN, f64::max)
}

#[test]
#[ignore = "load test: run with `make bench-e2e`"]
fn ready_time_and_memory_per_configuration_size_against_the_wasm_floor() {
    println!("machine: {}", machine_note());
    let sizes: Vec<usize> = std::env::var("BENCH_E2E_LOAD_RULES")
        .unwrap_or_else(|_| "10,10000,100000".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .filter(|&n| n > 0)
        .collect();
    // `--concurrency 2`: the main thread's VM and one per worker each load the configuration
    // (the main thread once more for a VM it throws away, so the counter may pass 3).
    let vms = 3;
    let floor = load_sample("meshroute_noop", "noop", &json!({}), 0);
    let mut report = String::from(
        "\nLoad time and memory, --concurrency 2 (mixed rules: prefix or header), one start each:\n\n\
         | configuration | ready | serving, all VMs loaded | ÷ floor | slowest VM load | RSS | peak RSS (VmHWM) | RSS above 10 rules, per VM | VM memory (load grew it by) |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let _ = writeln!(
        report,
        "| do-nothing module (floor) | {:.2} s | {:.2} s | 1 | | {:.0} MiB | {:.0} MiB | | |",
        floor.ready_s, floor.serving_s, floor.rss_mib, floor.peak_mib
    );
    let mut base_rss = None;
    let mut goals = Vec::new();
    for n in sizes {
        let s = load_sample("meshroute_filter", "meshroute", &mixed_rules_config(n), vms);
        let base = *base_rss.get_or_insert(s.rss_mib);
        let per_vm = (s.rss_mib - base) / vms as f64;
        let slowest = max_of(s.vms.iter().map(|v| v.ms));
        let (memory, grew) = (max_of(s.vms.iter().map(|v| v.memory_mib)), max_of(s.vms.iter().map(|v| v.grew_mib)));
        let _ = writeln!(
            report,
            "| meshroute, {n} rules | {:.2} s | {:.2} s | {:.1} | {:.0} ms | {:.0} MiB | {:.0} MiB | {:+.0} MiB | {memory:.0} MiB ({grew:+.0}) |",
            s.ready_s,
            s.serving_s,
            s.serving_s / floor.serving_s,
            slowest,
            s.rss_mib,
            s.peak_mib,
            per_vm,
        );
        match n {
            10 => goals.push(format!(
                "issue 11 goal 2: ready at 10 rules in {:.2} s, floor {:.2} s (goal ≤ 0.8 s: {})",
                s.ready_s,
                floor.ready_s,
                verdict(s.ready_s, 0.8)
            )),
            10_000 => goals.push(format!(
                "issue 11 goal 3: 10,000 rules serving in {:.2} s (goal ≤ 2 s: {}); {per_vm:+.0} MiB per VM over 10 rules \
                 (goal ≤ 30: {})",
                s.serving_s,
                verdict(s.serving_s, 2.0),
                verdict(per_vm, 30.0)
            )),
            100_000 => goals.push(format!(
                "issue 12 item 3: 100,000 rules: slowest VM load {:.2} s (goal ≤ 2 s per VM: {}); serving after {:.2} s",
                slowest / 1000.0,
                verdict(slowest / 1000.0, 2.0),
                s.serving_s
            )),
            _ => {}
        }
    }
    println!("{report}");
    for g in goals {
        goal(&g);
    }
}

// === A big push under traffic ===

const LDS_BOOTSTRAP: &str = include_str!("fixtures/e2e-lds-bootstrap.yaml");
const LDS_LISTENER: &str = include_str!("fixtures/e2e-lds-listener.yaml");

/// Writes the listener discovery file whole, then moves it into place (what Envoy's directory
/// watch reacts to), as a control plane pushing a new filter configuration would.
fn write_listener(dir: &std::path::Path, plugin_config: &str) {
    let vars: std::collections::HashMap<String, String> = [
        ("LISTENER_PORT", "0".to_string()),
        ("WASM", wasm_path("meshroute_filter").display().to_string()),
        ("PLUGIN_CONFIG", plugin_config.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let text = render(LDS_LISTENER, &vars).expect("render listener");
    let tmp = dir.join("lds.yaml.tmp");
    std::fs::write(&tmp, text).expect("write listener");
    std::fs::rename(&tmp, dir.join("lds.yaml")).expect("move listener into place");
}

/// Issue 12 item 3: while a 100,000-rule configuration replaces a 10-rule one (a listener
/// pushed through a watched file, `--concurrency 2`), clients keep sending requests on fresh
/// connections every few ms; the longest any of them waited is what a push costs traffic.
#[test]
#[ignore = "load test: run with `make bench-e2e`"]
fn longest_request_wait_during_a_100k_rule_push() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let rules: usize = env_number("BENCH_E2E_PUSH_RULES", 100_000) as usize;
    let dir = std::env::temp_dir().join(format!("meshroute-bench-push-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("push dir");
    write_listener(&dir, &filter_config(&mixed_rules_config(10)));
    let passthrough = Upstream::named("passthrough");
    let (lds_dir, pt_port) = (dir.display().to_string(), passthrough.port().to_string());
    let envoy = Envoy::start_with(
        LDS_BOOTSTRAP,
        &[("LDS_DIR", lds_dir.as_str()), ("PASSTHROUGH_PORT", pt_port.as_str()), ("CLUSTERS", "")],
        EnvoyOptions { concurrency: 2, ready_timeout: Duration::from_secs(120), ..quiet_but_wasm() },
    );
    let port = envoy.listener_port("sidecar");
    // Host `other` has no VirtualService: the filter decides (passthrough) and the upstream answers.
    let get = move || try_http("GET", port, "/", &[("host", "other")], b"", Duration::from_secs(30));
    assert_eq!(get().expect("first request").status, 200);

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut waits = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let began = Instant::now();
                    let ok = get().is_ok_and(|r| r.status == 200);
                    waits.push((began, began.elapsed(), ok));
                    std::thread::sleep(Duration::from_millis(5));
                }
                waits
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let loaded_before = counter(&envoy, "wasmcustom.meshroute.config.loaded");
    // Compiled before the push, as the CLI does ahead of any control plane.
    let big = filter_config(&mixed_rules_config(rules));
    let pushed = Instant::now();
    write_listener(&dir, &big);
    let deadline = pushed + Duration::from_secs(300);
    // Envoy's main thread loads too, and its admin does not answer meanwhile: poll leniently.
    let loaded = |envoy: &Envoy| {
        try_http("GET", envoy.admin_port(), "/stats?filter=meshroute.config.loaded", &[], b"", Duration::from_secs(60))
            .ok()
            .and_then(|r| {
                r.text()
                    .lines()
                    .find_map(|l| l.strip_prefix("wasmcustom.meshroute.config.loaded: ")?.trim().parse::<u64>().ok())
            })
            .unwrap_or(0)
    };
    while loaded(&envoy) < loaded_before + 3 {
        assert!(Instant::now() < deadline, "push not loaded; log tail:\n{}", envoy.log_tail(40));
        std::thread::sleep(Duration::from_millis(20));
    }
    let all_loaded = pushed.elapsed();
    // Whatever the last VM still does shows up in the requests of the next two seconds.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let waits: Vec<(Instant, Duration, bool)> = clients.into_iter().flat_map(|c| c.join().expect("client")).collect();
    let during: Vec<&(Instant, Duration, bool)> = waits.iter().filter(|(t, d, _)| *t + *d >= pushed).collect();
    let before: Vec<&(Instant, Duration, bool)> = waits.iter().filter(|(t, d, _)| *t + *d < pushed).collect();
    let longest = |w: &[&(Instant, Duration, bool)]| w.iter().map(|x| x.1.as_secs_f64() * 1e3).fold(0.0, f64::max);
    let failed = during.iter().filter(|x| !x.2).count();
    let loads: Vec<VmLoad> = vm_loads(&envoy.log()).into_iter().filter(|v| v.ms >= 0.0).collect();
    let big: Vec<&VmLoad> = loads.iter().rev().take(3).collect();
    println!(
        "\npush of {rules} rules over 10 (--concurrency 2, 4 clients, a fresh connection per request): all VMs \
         loaded after {:.2} s; {} requests during the push and 2 s after, {failed} failed; longest wait {:.0} ms \
         (before the push: {:.0} ms over {} requests); the last 3 VM loads: {}",
        all_loaded.as_secs_f64(),
        during.len(),
        longest(&during),
        longest(&before),
        before.len(),
        big.iter()
            .map(|v| format!("{:.0} ms, memory {:.0} MiB (+{:.0})", v.ms, v.memory_mib, v.grew_mib))
            .collect::<Vec<_>>()
            .join("; ")
    );
    // How each VM loaded it: whole (Envoy's canary on the main thread) or in slices (workers).
    for line in envoy.log().lines().filter(|l| l.contains("config loaded: ")).rev().take(3) {
        println!("  {}", line.split("config loaded: ").nth(1).unwrap_or(line));
    }
    goal(&format!(
        "issue 12 item 3: longest request wait during a {rules}-rule push {:.0} ms (goal ≤ 100 ms: {}), {failed} failed",
        longest(&during),
        verdict(longest(&during), 100.0)
    ));
    // The per-VM goal holds during a push too, when the VMs load next to traffic and each other.
    let slowest = max_of(big.iter().map(|v| v.ms)) / 1000.0;
    goal(&format!(
        "issue 12 item 3: {rules} rules pushed: slowest VM load {slowest:.2} s (goal ≤ 2 s per VM: {}), VM memory {:.0} MiB",
        verdict(slowest, 2.0),
        max_of(big.iter().map(|v| v.memory_mib))
    ));
    drop(envoy);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Resident set of a process, MB (`VmRSS`).
fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .map_or(f64::NAN, |kb: f64| kb / 1024.0)
}

/// Issue 11 goal 2: the module's size, and how long Envoy (`--concurrency 2`, the e2e sidecar
/// listener) takes from start to ready with meshroute and 10 rules, against the do-nothing module
/// with the same listener. Median of 5 starts each, alternating.
#[test]
#[ignore = "load test: run with `make bench-e2e`"]
fn module_size_and_cold_start_at_10_rules() {
    let template = include_str!("fixtures/e2e-filter.yaml");
    let config = filter_config(&rules_config(10));
    let passthrough = Upstream::named("passthrough");
    let port = passthrough.port().to_string();
    let start = |module: &str| -> (f64, f64) {
        let wasm = wasm_path(module).display().to_string();
        let vars = [
            ("WASM", wasm.as_str()),
            ("PLUGIN_CONFIG", config.as_str()),
            ("PASSTHROUGH_PORT", &port),
            ("CLUSTERS", ""),
        ];
        let began = Instant::now();
        let envoy = Envoy::start_with(template, &vars, EnvoyOptions { concurrency: 2, ..quiet() });
        let ready = began.elapsed().as_secs_f64();
        (ready, rss_mb(envoy.pid()))
    };
    let (mut mesh, mut noop) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        mesh.push(start("meshroute_filter"));
        noop.push(start("meshroute_noop"));
    }
    let median_of = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| median(&v.iter().map(f).collect::<Vec<f64>>());
    let size = |m: &str| std::fs::metadata(wasm_path(m)).map(|m| m.len() as f64 / 1000.0).unwrap_or(f64::NAN);
    let (ready, rss) = (median_of(&mesh, |s| s.0), median_of(&mesh, |s| s.1));
    let (noop_ready, noop_rss) = (median_of(&noop, |s| s.0), median_of(&noop, |s| s.1));
    println!(
        "\nmodule: meshroute_filter.wasm {:.0} KB, meshroute_noop.wasm {:.0} KB",
        size("meshroute_filter"),
        size("meshroute_noop")
    );
    println!("ready at 10 rules, --concurrency 2 (median of 5, start to /ready 200, 50 ms polling): meshroute {ready:.2} s, noop {noop_ready:.2} s");
    println!("RSS when ready: meshroute {rss:.0} MB, noop {noop_rss:.0} MB");
    goal(&format!(
        "issue 11 goal 2: module {:.0} KB (goal ≤ 600 KB: {}); ready at 10 rules {ready:.2} s, noop {noop_ready:.2} s \
         (goal ≤ 0.8 s: {})",
        size("meshroute_filter"),
        verdict(size("meshroute_filter"), 600.0),
        verdict(ready, 0.8)
    ));
}

// === A broken mirror against the primary (issue 12 item 2) ===

const MIRROR_TEMPLATE: &str = include_str!("fixtures/bench-mirror.yaml");

/// Where the copies of one case go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MirrorCase {
    /// No mirror at all: the primary alone, the yardstick.
    Alone,
    /// The same again in a second Envoy: how far two identical processes differ in the same
    /// rounds (the noise floor every other ratio is read against).
    AloneAgain,
    /// The upstream Envoy, answering at once: what mirroring costs when all is well.
    Healthy,
    /// Accepts the connection and never answers (a hung process).
    Dead,
    /// Never answers the connection attempt (packets dropped).
    BlackHoled,
    /// Refuses the connection (nothing listens).
    Refusing,
}

impl MirrorCase {
    const ALL: [MirrorCase; 6] = [
        MirrorCase::Alone,
        MirrorCase::AloneAgain,
        MirrorCase::Healthy,
        MirrorCase::Dead,
        MirrorCase::BlackHoled,
        MirrorCase::Refusing,
    ];

    fn label(self) -> &'static str {
        match self {
            MirrorCase::Alone => "primary alone (no mirror)",
            MirrorCase::AloneAgain => "primary alone, second Envoy (noise)",
            MirrorCase::Healthy => "healthy mirror",
            MirrorCase::Dead => "dead mirror (accepts, never answers)",
            MirrorCase::BlackHoled => "black-holed mirror (connect hangs)",
            MirrorCase::Refusing => "refusing mirror (connection refused)",
        }
    }
}

const MIRROR_SUBSET: &str = "shadow";

/// The seed configuration with every request mirrored to the `shadow` subset (100 %), the
/// mirror settings left at their defaults (budget, in-flight cap 256, timeout 5 s).
fn mirrored_seed_config() -> Value {
    let mut c = seed_config();
    let mirror = json!({"host": "product-service", "subset": MIRROR_SUBSET});
    for rule in c["resources"][0]["spec"]["http"].as_array_mut().unwrap() {
        rule["mirror"] = mirror.clone();
        rule["mirrorPercentage"] = json!({"value": 100});
    }
    c["resources"][1] = destination_rule("product-service", &["v1", "v2", MIRROR_SUBSET]);
    c
}

/// The product-service clusters on the upstream Envoy, and the mirror's cluster on `mirror_port`
/// as `meshroute envoy` writes a mirror-only cluster (src/envoy/cluster.rs, docs/semantics.md
/// R162): 1 s connect timeout, circuit breakers at `mirrorMaxInFlight` (default 256), no retries.
fn mirror_clusters(upstream_port: u16, mirror_port: u16) -> String {
    let endpoint = |name: &str, port: u16| {
        json!({"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint":
            {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]})
    };
    let mut list: Vec<Value> = [cluster("product-service", "v1"), cluster("product-service", "v2")]
        .iter()
        .map(|name| json!({"name": name, "type": "STATIC", "connect_timeout": "1s", "load_assignment": endpoint(name, upstream_port)}))
        .collect();
    let shadow = cluster("product-service", MIRROR_SUBSET);
    list.push(json!({"name": shadow, "type": "STATIC", "connect_timeout": "1s",
        "circuit_breakers": {"thresholds": [{"max_connections": 256, "max_pending_requests": 256,
                                             "max_requests": 256, "max_retries": 0, "track_remaining": true}]},
        "load_assignment": endpoint(&shadow, mirror_port)}));
    list.push(json!({"name": "PassthroughCluster", "type": "STATIC", "connect_timeout": "1s",
                     "load_assignment": endpoint("PassthroughCluster", upstream_port)}));
    Value::Array(list).to_string()
}

/// At a fixed request rate, one Envoy per case (so each has its own RSS), the cases driven in
/// rotating rounds of the same run: the primary's p99 and Envoy's RSS with a dead, black-holed or
/// refusing mirror against the primary alone. Goal (issue 12): p99 within 10 %, RSS within 20 MB.
/// The p99 is paired with the primary alone in the same process (each Envoy's `alone` listener,
/// driven next to it), because on a shared machine one Envoy process keeps a p99 up to 2–3 × that
/// of an identical one for its whole life (the second alone Envoy shows it in every run); Envoy's
/// CPU per request and the mirror cluster's own counters say what the copies cost without that
/// noise.
#[test]
#[ignore = "load test: run with `make bench-e2e`"]
fn a_dead_black_holed_or_refusing_mirror_against_the_primary_alone_at_a_fixed_rate() {
    println!("machine: {}", machine_note());
    let rps = env_number("BENCH_E2E_MIRROR_RPS", 2000) as u32;
    let secs = env_number("BENCH_E2E_MIRROR_SECS", 4).max(2);
    // p99 moves more between runs than the 10 % asked for, and two identical Envoys differ by
    // more than that for their whole life (the A/A case shows how much): the goal is judged on
    // the median of the per-round ratios of each case to the primary alone in the same process
    // (its `alone` listener, own VM, same worker thread), driven right before or after it.
    let rounds = env_number("BENCH_E2E_MIRROR_ROUNDS", 5).max(1) as usize;
    let upstream = Envoy::start_with(UPSTREAM_TEMPLATE, &[], quiet());
    let up = upstream.port("LISTENER_PORT");
    let plain = filter_config(&seed_config());
    let mirrored = filter_config(&mirrored_seed_config());
    let routes = sidecar_routes(true);
    let wasm = wasm_path("meshroute_filter").display().to_string();
    // The broken peers, alive while their Envoys run.
    let hung = HungPeer::start();
    let hole = BlackHoledPort::start();
    let mut envoys = Vec::new();
    for case in MirrorCase::ALL {
        let port = match case {
            MirrorCase::Alone | MirrorCase::AloneAgain | MirrorCase::Healthy => up,
            MirrorCase::Dead => hung.port(),
            MirrorCase::BlackHoled => hole.port(),
            MirrorCase::Refusing => refused_port(),
        };
        let config = if matches!(case, MirrorCase::Alone | MirrorCase::AloneAgain) { &plain } else { &mirrored };
        let envoy = Envoy::start_with(
            MIRROR_TEMPLATE,
            &[
                ("SIDECAR_ROUTES", &routes),
                ("MESH_WASM", &wasm),
                ("CONFIG", config),
                ("CONFIG_ALONE", &plain),
                ("CLUSTERS", &mirror_clusters(up, port)),
            ],
            EnvoyOptions { ready_timeout: Duration::from_secs(120), ..quiet() },
        );
        println!("  {}: Envoy pid {}", case.label(), envoy.pid());
        envoys.push(envoy);
    }
    let v = variant("meshroute", "MESH_PORT", "meshroute");
    let own_alone = variant("alone in the same Envoy", "ALONE_PORT", "alone");
    let idle_rss: Vec<f64> = envoys.iter().map(|e| rss_mib(e.pid()).0).collect();
    for e in &envoys {
        measure(e, &v, Tool::FixedRate(rps), 1, false);
        measure(e, &own_alone, Tool::FixedRate(rps), 1, false);
    }
    // samples[case][round], own[case][round] (its process's alone listener), rss[case][round]
    // (after that round's runs).
    let n = MirrorCase::ALL.len();
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); n];
    let mut own: Vec<Vec<Sample>> = vec![Vec::new(); n];
    let mut rss: Vec<Vec<f64>> = vec![Vec::new(); n];
    let tool = Tool::FixedRate(rps);
    for round in 0..rounds {
        for k in 0..n {
            let i = (k + round) % n;
            // Which of the pair goes first alternates, so neither always follows the other case.
            let case_first = (round + k) % 2 == 0;
            let mut pair = [None, None];
            for j in 0..2 {
                let of_case = (j == 0) == case_first;
                let s = measure(
                    &envoys[i],
                    if of_case { &v } else { &own_alone },
                    tool,
                    secs,
                    round == 0 && k == 0 && j == 0,
                );
                println!(
                    "  {:<20} round {round} {:<38} {:<9} {:>7} req {:>6.0} req/s p50 {:.3} ms p99 {:.3} ms",
                    tool.label(),
                    MirrorCase::ALL[i].label(),
                    if of_case { "" } else { "own alone" },
                    s.requests,
                    s.requests as f64 / s.wall,
                    s.p50,
                    s.p99
                );
                pair[usize::from(!of_case)] = Some(s);
            }
            let [Some(s), Some(a)] = pair else { unreachable!("both halves of the pair ran") };
            samples[i].push(s);
            own[i].push(a);
            rss[i].push(rss_mib(envoys[i].pid()).0);
        }
    }
    // The filter hands its counters to Envoy once a second.
    std::thread::sleep(Duration::from_millis(1500));
    let alone = 0;
    let p99s = |i: usize| samples[i].iter().map(|s| s.p99).collect::<Vec<f64>>();
    let mut t = format!(
        "\nThe primary at {rps} req/s (h2load h2c, 4 connections), {secs} s × {rounds} rounds per case, one Envoy \
         (--concurrency 1) per case, rounds rotating:\n\n\
         | mirror | req/s | p50 ms | p99 ms (median; rounds) | p99 ÷ alone, same Envoy (median of rounds; range) | p99 ÷ alone Envoy (median; range) | Envoy CPU µs/req (÷ alone; rounds) | RSS after | RSS − alone | mirrors sent / skipped / failed |\n\
         |---|---|---|---|---|---|---|---|---|---|\n"
    );
    let mut vm_counts = String::from("\nV8 VMs created / active per Envoy:");
    // What Envoy itself did for the copies (the mirror cluster's own counters).
    let mut envoy_side = String::from(
        "\nThe mirror cluster in Envoy (counters over the whole run): connections opened / connect failures / connect \
         timeouts / overflows (connections, pending, requests) / requests / request timeouts / resets:\n",
    );
    let mut goals = String::new();
    for (i, case) in MirrorCase::ALL.iter().enumerate() {
        let sum = summarize(&samples[i]);
        let p = p99s(i);
        let (plo, phi) = range(&p);
        let ratios = |of: &[Sample], to: &[Sample]| {
            let per_round: Vec<f64> = of.iter().zip(to).map(|(a, b)| a.p99 / b.p99).collect();
            let (lo, hi) = range(&per_round);
            (median(&per_round), lo, hi)
        };
        // Paired with its own process's alone listener (the goal), and with the alone Envoy.
        let (ratio, rlo, rhi) = ratios(&samples[i], &own[i]);
        let (cross, clo, chi) = ratios(&samples[i], &samples[alone]);
        let final_rss = *rss[i].last().unwrap();
        let added = final_rss - rss[alone].last().unwrap();
        let e = &envoys[i];
        let c = |name: &str| counter(e, &format!("wasmcustom.meshroute.mirrors.{name}"));
        // A VM that trapped would be replaced (FAIL_RELOAD) with a fresh breaker: created > at start.
        let vms = |name: &str| counter(e, &format!("wasm.envoy.wasm.runtime.v8.{name}"));
        let _ = write!(vm_counts, " {} {} / {};", case.label(), vms("created"), vms("active"));
        if !matches!(case, MirrorCase::Alone | MirrorCase::AloneAgain) {
            let shadow = cluster("product-service", MIRROR_SUBSET);
            let k = |name: &str| counter(e, &format!("cluster.{shadow}.{name}"));
            let _ = writeln!(
                envoy_side,
                "- {}: {} / {} / {} / {}, {}, {} / {} / {} / {}",
                case.label(),
                k("upstream_cx_total"),
                k("upstream_cx_connect_fail"),
                k("upstream_cx_connect_timeout"),
                k("upstream_cx_overflow"),
                k("upstream_rq_pending_overflow"),
                k("upstream_rq_retry_overflow"),
                k("upstream_rq_total"),
                k("upstream_rq_timeout"),
                k("upstream_rq_tx_reset") + k("upstream_rq_rx_reset") + k("upstream_cx_destroy_local_with_active_rq"),
            );
        }
        let _ = writeln!(
            t,
            "| {} | {:.0} | {:.3} | {:.3} ({plo:.3}–{phi:.3}) | {ratio:.2} ({rlo:.2}–{rhi:.2}) | {cross:.2} ({clo:.2}–{chi:.2}) | {:.1} ({}) | {final_rss:.1} MiB (idle {:.1}) | {added:+.1} MiB | {} / {} / {} |",
            case.label(),
            sum.rps,
            sum.p50,
            median(&p),
            sum.cpu_us,
            cpu_ratio(&samples[i], &own[i]),
            idle_rss[i],
            c("sent"),
            c("skipped"),
            c("failed"),
        );
        if matches!(case, MirrorCase::Dead | MirrorCase::BlackHoled | MirrorCase::Refusing) {
            let line = format!(
                "issue 12 item 2, {} mirror: primary p99 = {ratio:.2} × alone in the same Envoy (goal ≤ 1.10: {}; \
                 × the alone Envoy {cross:.2}), RSS {added:+.1} MiB (goal ≤ 20: {})",
                case.label(),
                verdict(ratio, 1.10),
                verdict(added, 20.0)
            );
            goal(&line);
            let _ = writeln!(goals, "{line}");
        }
        match case {
            MirrorCase::Alone => {
                let _ = writeln!(
                    goals,
                    "noise floor, same Envoy: its two alone listeners' p99 = {ratio:.2} (rounds {rlo:.2}–{rhi:.2})"
                );
            }
            MirrorCase::AloneAgain => {
                let _ = writeln!(
                    goals,
                    "noise floor, two Envoys: a second primary-alone Envoy's p99 = {cross:.2} × the first (rounds \
                     {clo:.2}–{chi:.2}), RSS {added:+.1} MiB"
                );
            }
            _ => {}
        }
    }
    let (alo, ahi) = range(&p99s(alone));
    let (rlo, rhi) = range(&rss[alone]);
    let idle_spread = range(&idle_rss);
    let _ = writeln!(
        t,
        "\nNoise: the primary alone's own p99 moved {alo:.3}–{ahi:.3} ms between rounds ({:.2}×), its RSS \
         {rlo:.1}–{rhi:.1} MiB; the idle Envoys differed by {:.1} MiB before any load. The dead mirror \
         accepted {} connections in all (its cluster's circuit breaker allows 256 at once).",
        ahi / alo,
        idle_spread.1 - idle_spread.0,
        hung.accepted()
    );
    t.push_str(&envoy_side);
    t.push_str(&vm_counts);
    t.push('\n');
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "{t}(load average at the end: {})\n\nGoals (issue 12, a broken mirror against the primary alone, same run):\n{goals}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    drop(envoys);
    drop((hung, hole));
}
