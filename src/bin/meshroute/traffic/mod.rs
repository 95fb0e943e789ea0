//! `meshroute test`: declarative traffic tests through the local harness (real Envoy, the
//! filter, a stub per cluster). One Envoy per tests file and proxy identity (sidecar namespace
//! and labels, or Gateway); cases run in order, stubs reset between them.

mod binomial;
mod junit;
mod spec;

use crate::harness::proc::{self, LogTo};
use crate::harness::stub::Recorded;
use crate::harness::{self, client, Harness};
use crate::input::Inputs;
use crate::run::HarnessArgs;
use clap::{ArgAction, Args};
use meshroute::{compile, load_value, Bundle, RouteTable};
use serde_json::Value;
use spec::{Case, Identity, SpecError, TestsFile};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Envoy reads its timers from a coarse clock (docs/envoy-findings.md: ~4 ms), so a 5 s route
/// timeout or fault delay can end a few milliseconds before 5 s of the client's time: a lower
/// bound on a request's time allows that much.
const ENVOY_TIMER_SLACK: Duration = Duration::from_millis(5);

/// Run declarative traffic tests (requests and what must happen to them) against the resources,
/// through a real Envoy with the meshroute filter and a stub upstream per cluster.
#[derive(Args)]
#[command(after_help = "A tests file (YAML):

  config: [../weight-route.yaml]        # resources, relative to this file (added to -f)
  tests:
  - name: x-debug goes to v2
    request: {url: http://product-service/, headers: {x-debug: \"true\"}}
    expect: {status: 200, subset: v2}
  - name: 80/20 between v1 and v2
    request: {url: http://product-service/, count: 200}
    expect: {split: {v1: 80, v2: 20}}
  - name: two failures are retried
    request: {url: http://order-service/}
    upstreams: {order-service/v1: {failFirst: 2}}
    expect: {status: 200, attempts: 3}

request: method, url, headers, body, count, concurrency, timeout, gateway (ns/name), source
(namespace, labels). expect: status, cluster (cluster name, HOST/SUBSET or HOST), subset, headers,
location, delay {min, max}, delayed {atLeast, percent}, attempts (per request), mirror {to,
percent}, split {KEY: percent}, statuses {CODE: percent}, falseFailure (default 1e-6: the chance
that a correct configuration fails a share; bounds are exact binomial intervals).

Exit codes: 0 all passed, 1 a case failed (or the configuration is refused), 2 bad tests file,
unreadable input, no Envoy.

Examples:
  meshroute test examples/tests/weight-route.yaml
  meshroute test -f my-crds/ my-tests.yaml --junit report.xml")]
pub struct TestArgs {
    /// Resource file or directory, for every tests file (repeat -f for more).
    #[arg(short = 'f', long = "filename", value_name = "PATH", action = ArgAction::Append)]
    files: Vec<String>,
    /// Settings of the proxy (JSON or YAML object).
    #[arg(long, value_name = "FILE")]
    settings: Option<PathBuf>,
    #[command(flatten)]
    harness: HarnessArgs,
    /// Also write a JUnit XML report.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Tests files.
    #[arg(required = true, value_name = "TESTS.yaml")]
    tests: Vec<PathBuf>,
}

/// A configuration as one identity sees it.
struct View {
    /// Its number among all views of the run (its clusters are named `vID~...`).
    id: usize,
    bundle: Bundle,
    table: Option<RouteTable>,
    plugin_config: Value,
}

/// A tests file with its resources read and a view per identity.
struct Prepared {
    file: TestsFile,
    views: BTreeMap<Identity, View>,
    /// Findings of the configuration, rendered (printed under the file's name).
    findings: Vec<String>,
    errors: usize,
}

/// One case's outcome.
pub struct Outcome {
    pub name: String,
    pub failures: Vec<String>,
    pub elapsed: Duration,
}

pub fn run(args: &TestArgs) -> ExitCode {
    let mut spec_errors: Vec<SpecError> = Vec::new();
    let mut files = Vec::new();
    for t in &args.tests {
        match spec::read(t) {
            Ok((f, errors)) => {
                spec_errors.extend(errors);
                files.push(f);
            }
            Err(e) => spec_errors.extend(e),
        }
    }
    let mut prepared = Vec::new();
    let mut input_errors = false;
    let mut next_view = 0;
    for f in files {
        match prepare(f, args, &mut next_view, &mut spec_errors) {
            Some(p) => prepared.push(p),
            None => input_errors = true,
        }
    }
    if !spec_errors.is_empty() || input_errors {
        spec_errors.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        for e in &spec_errors {
            eprintln!("error: {e}");
        }
        eprintln!("meshroute: {} problem(s) in the tests; nothing was run", spec_errors.len().max(1));
        return ExitCode::from(2);
    }
    let needs_envoy = prepared.iter().any(|p| p.views.values().any(|v| v.table.is_some()));
    let opts = if needs_envoy {
        match args.harness.options(LogTo::File, false) {
            Ok(o) => Some(o),
            Err(e) => {
                eprintln!("meshroute: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    proc::install_signal_handler();
    let start = Instant::now();
    // One Envoy for every configuration of the run: the filter's Wasm is compiled once.
    let harness = opts.as_ref().map(|opts| {
        let views: Vec<harness::View<'_>> = prepared
            .iter()
            .flat_map(|p| p.views.values())
            .filter_map(|v| {
                v.table.as_ref().map(|t| harness::View {
                    id: v.id,
                    bundle: &v.bundle,
                    table: t,
                    plugin_config: &v.plugin_config,
                })
            })
            .collect();
        let h = Harness::start_many(&views, opts, &|_| Default::default()).map_err(|e| e.to_string());
        if let Ok(h) = &h {
            println!("(Envoy with {} configuration(s) ready in {:.1} s)", views.len(), start.elapsed().as_secs_f64());
            let _ = &h.notes;
        }
        h
    });
    let mut report: Vec<(String, Vec<Outcome>)> = Vec::new();
    for p in &prepared {
        println!("{}", p.file.path);
        for f in &p.findings {
            println!("  {f}");
        }
        let outcomes = run_file(p, harness.as_ref());
        report.push((p.file.path.clone(), outcomes));
    }
    let passed = report.iter().flat_map(|(_, o)| o).filter(|o| o.failures.is_empty()).count();
    let failed = report.iter().flat_map(|(_, o)| o).count() - passed;
    let verdict = if failed == 0 { "ok" } else { "FAILED" };
    println!(
        "\ntest result: {verdict}. {passed} passed; {failed} failed ({} file(s), {:.1} s)",
        report.len(),
        start.elapsed().as_secs_f64()
    );
    if let Some(path) = &args.junit {
        if let Err(e) = crate::output::write_atomic(path, junit::render(&report).as_bytes()) {
            eprintln!("meshroute: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Reads the resources of a tests file and checks every case's references against them.
fn prepare(file: TestsFile, args: &TestArgs, next_view: &mut usize, errors: &mut Vec<SpecError>) -> Option<Prepared> {
    let mut paths = args.files.clone();
    paths.extend(file.config.iter().cloned());
    if paths.is_empty() {
        errors.push(SpecError {
            file: file.path.clone(),
            line: 1,
            message: "no resources: pass -f PATH or list them under `config:`".into(),
        });
        return Some(Prepared { file, views: BTreeMap::new(), findings: Vec::new(), errors: 0 });
    }
    let inputs = Inputs::read(&paths, args.settings.as_deref());
    if !inputs.errors.is_empty() {
        for e in &inputs.errors {
            eprintln!("{e}");
        }
        return None;
    }
    let mut views = BTreeMap::new();
    let mut findings = Vec::new();
    let mut error_count = 0;
    for case in &file.cases {
        if views.contains_key(&case.identity) {
            continue;
        }
        let id = *next_view;
        *next_view += 1;
        let mut config = inputs.plugin_config(case.identity.gateway.as_deref());
        if let Some(settings) = config.get_mut("settings").and_then(Value::as_object_mut) {
            let template = settings
                .get("clusterTemplate")
                .and_then(Value::as_str)
                .unwrap_or(meshroute::config::DEFAULT_CLUSTER_TEMPLATE)
                .to_string();
            settings.insert("clusterTemplate".into(), Value::String(harness::view_template(id, &template)));
            if let Some(ns) = &case.identity.namespace {
                settings.insert("namespace".into(), Value::String(ns.clone()));
            }
            if !case.identity.labels.is_empty() {
                settings.insert("labels".into(), serde_json::json!(case.identity.labels));
            }
        }
        // The harness's Envoy runs the filter with these (R221): check what it will run.
        meshroute::envoy::with_retry_policy_routes(&mut config);
        let (bundle, diags) = load_value(config.clone());
        let compiled = compile(&bundle, diags);
        for d in compiled.diagnostics.iter() {
            let line = inputs.render(d);
            if !findings.contains(&line) {
                if d.is_error() {
                    error_count += 1;
                }
                findings.push(line);
            }
        }
        let table = compiled.table.filter(|_| !compiled.diagnostics.iter().any(|d| d.is_error()));
        views.insert(case.identity.clone(), View { id, bundle, table, plugin_config: config });
    }
    for case in &file.cases {
        let Some(view) = views.get(&case.identity) else { continue };
        check_references(&file.path, case, view, errors);
    }
    Some(Prepared { file, views, findings, errors: error_count })
}

/// Bad tests: hosts, clusters and subsets the configuration does not have.
fn check_references(path: &str, case: &Case, view: &View, errors: &mut Vec<SpecError>) {
    let mut err = |line: usize, message: String| {
        errors.push(SpecError { file: path.to_string(), line, message: format!("test {:?}: {message}", case.name) })
    };
    let ns = case.identity.namespace.clone().unwrap_or_else(|| view.bundle.settings.namespace.clone());
    if !known_host(&view.bundle, &case.request.host, &ns) {
        err(
            case.line,
            format!(
                "request host {:?} is declared by no VirtualService, ServiceEntry or Gateway of the configuration",
                case.request.host
            ),
        );
    }
    let Some(table) = &view.table else { return };
    // Clusters the harness runs: the route table's, plus the ServiceEntry hosts and their
    // DestinationRule subsets the generator adds.
    let known = |key: &str| {
        table.clusters.iter().any(|c| harness::names_cluster(key, &c.name, table)) || declared(&view.bundle, key)
    };
    let subset_known = |s: &str| {
        table.clusters.iter().any(|c| c.subset.as_deref() == Some(s))
            || view.bundle.destination_rules().any(|(_, dr)| dr.subsets.iter().any(|x| x.name == s))
    };
    let e = &case.expect;
    if let Some((k, line)) = &e.cluster {
        if !known(k) {
            err(*line, format!("expect.cluster {k:?} names no cluster of the configuration"));
        }
    }
    if let Some((s, line)) = &e.subset {
        if !subset_known(s) {
            err(
                *line,
                format!("expect.subset {s:?}: no DestinationRule of the configuration defines a subset of that name"),
            );
        }
    }
    for s in &e.split {
        if !known(&s.key) && !subset_known(&s.key) {
            err(s.line, format!("split key {:?} names no cluster or subset of the configuration", s.key));
        }
    }
    if let Some(m) = &e.mirror {
        if !known(&m.key) {
            err(m.line, format!("mirror.to {:?} names no cluster of the configuration", m.key));
        }
    }
    for (k, line, _) in &case.upstreams {
        if !known(k) {
            err(*line, format!("upstreams: {k:?} names no cluster of the configuration"));
        }
    }
}

/// Does `key` (`outbound|PORT|SUBSET|HOST`, `HOST/SUBSET` or `HOST`) name a ServiceEntry host
/// (and a subset a DestinationRule of that host defines)?
fn declared(bundle: &Bundle, key: &str) -> bool {
    let (host, subset) = if key.contains('|') {
        let parts: Vec<&str> = key.split('|').collect();
        match parts[..] {
            [_, _, s, h] => (h, Some(s).filter(|s| !s.is_empty())),
            _ => return false,
        }
    } else {
        match key.split_once('/') {
            Some((h, s)) => (h, Some(s)),
            None => (key, None),
        }
    };
    let suffix = &bundle.settings.domain_suffix;
    let same = |h: &str, ns: &str| {
        let fq = meshroute::host::resolve(h, ns, suffix);
        fq == host || fq.split('.').next() == Some(host)
    };
    let host_ok = bundle.service_entries().any(|(r, se)| se.hosts.iter().any(|h| same(h, &r.namespace)));
    let subset_ok = subset.is_none_or(|s| {
        bundle.destination_rules().any(|(r, dr)| same(&dr.host, &r.namespace) && dr.subsets.iter().any(|x| x.name == s))
    });
    host_ok && subset_ok
}

/// Is `host` (as a client writes it) declared by a VirtualService, ServiceEntry or Gateway
/// server? Short names resolve in the proxy's namespace.
fn known_host(bundle: &Bundle, host: &str, ns: &str) -> bool {
    let suffix = &bundle.settings.domain_suffix;
    let req = meshroute::host::resolve(host, ns, suffix);
    let covers = |pattern: &str, pattern_ns: &str| {
        let p = meshroute::host::resolve(pattern, pattern_ns, suffix);
        p == "*" || p == req || p == host || meshroute::host::matches(&p, &req)
    };
    bundle.virtual_services().any(|(r, vs)| vs.hosts.iter().any(|h| covers(h, &r.namespace)))
        || bundle.service_entries().any(|(r, se)| se.hosts.iter().any(|h| covers(h, &r.namespace)))
        || bundle.gateways().any(|(_, g)| {
            g.servers
                .iter()
                .flat_map(|s| &s.hosts)
                .any(|h| covers(h.split_once('/').map_or(h.as_str(), |(_, d)| d), ns))
        })
}

fn run_file(p: &Prepared, harness: Option<&Result<Harness, String>>) -> Vec<Outcome> {
    let mut out = Vec::new();
    for case in &p.file.cases {
        let start = Instant::now();
        let failures = match (p.views.get(&case.identity), harness) {
            (Some(View { id, table: Some(table), .. }), Some(h)) => match h {
                Ok(h) => run_case(case, *id, h, table),
                Err(e) => vec![format!("the harness did not start: {e}")],
            },
            _ => vec![format!(
                "not run: the configuration is refused ({} error(s), printed under {}); Envoy would keep its previous \
                 configuration",
                p.errors, p.file.path
            )],
        };
        let o = Outcome { name: case.name.clone(), failures, elapsed: start.elapsed() };
        print_outcome(&o, case, &p.file.path);
        out.push(o);
    }
    out
}

fn print_outcome(o: &Outcome, case: &Case, file: &str) {
    let n = case.request.count;
    let what = if n == 1 { "1 request".to_string() } else { format!("{n} requests") };
    let mark = if o.failures.is_empty() { "ok  " } else { "FAIL" };
    println!("  {mark}  {} ({what}, {:.2} s)", o.name, o.elapsed.as_secs_f64());
    if !o.failures.is_empty() {
        println!("          at {file}:{}", case.line);
    }
    for f in &o.failures {
        for (i, line) in f.lines().enumerate() {
            println!("  {}  {line}", if i == 0 { "      " } else { "        " });
        }
    }
}

/// What one request got.
struct Got {
    status: u16,
    cluster: Option<String>,
    headers: Vec<(String, String)>,
    elapsed: Duration,
}

fn run_case(case: &Case, view: usize, h: &Harness, table: &RouteTable) -> Vec<String> {
    let behaviours = case.behaviours();
    for (name, stub) in &h.stubs {
        stub.set_behaviour(behaviours.for_cluster(name, table));
    }
    h.reset_stubs();
    let r = &case.request;
    let Some(listener) = h.listener_for(view, r.port) else {
        return vec![format!("no listener for port {} (the Gateway has no server on it)", r.port)];
    };
    if r.scheme == "https" {
        return vec!["https requests are not supported by meshroute test yet (plain HTTP only)".into()];
    }
    let default_port = if r.scheme == "https" { 443 } else { 80 };
    let authority = if r.port == default_port { r.host.clone() } else { format!("{}:{}", r.host, r.port) };
    // Every request of a case carries its tag, and so do its retries and mirrored copies: late
    // copies of an earlier case are not counted for this one.
    let tag = CASE.fetch_add(1, Ordering::Relaxed).to_string();
    let mut headers = vec![("host".to_string(), authority), (CASE_HEADER.to_string(), tag.clone())];
    headers.extend(r.headers.iter().cloned());
    let results = send_all(listener.addr, r, &headers);
    let mut failures = Vec::new();
    let mut got = Vec::new();
    let mut transport = Vec::new();
    for res in results {
        match res {
            Ok(resp) => got.push(Got {
                status: resp.status,
                cluster: resp.header(harness::stub::CLUSTER_HEADER).map(str::to_string),
                headers: resp.headers,
                elapsed: resp.elapsed,
            }),
            Err(e) => transport.push(e),
        }
    }
    if !transport.is_empty() {
        failures.push(format!("{} of {} requests got no answer; first: {}", transport.len(), r.count, transport[0]));
        if let Some(status) = h.envoy.exited() {
            failures.push(format!("Envoy died ({status}); its log ends:\n{}", h.envoy.log_tail(15)));
        }
        return failures;
    }
    let ours = |rec: &Recorded| rec.header(CASE_HEADER) == Some(tag.as_str());
    check(case, &got, h, table, &ours, &mut failures);
    failures
}

/// The request header tagging a case's requests (counted across a run).
const CASE_HEADER: &str = "x-meshroute-test-case";
static CASE: AtomicU32 = AtomicU32::new(1);

fn send_all(
    addr: std::net::SocketAddr,
    r: &spec::RequestSpec,
    headers: &[(String, String)],
) -> Vec<Result<client::Response, String>> {
    let next = AtomicU32::new(0);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..r.concurrency.max(1) {
            s.spawn(|| loop {
                if next.fetch_add(1, Ordering::Relaxed) >= r.count {
                    return;
                }
                let res =
                    client::send(addr, &r.method, &r.path, headers, &r.body, r.timeout).map_err(|e| e.to_string());
                results.lock().unwrap_or_else(|e| e.into_inner()).push(res);
            });
        }
    });
    results.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// `KEY ×n, ...` of a tally, most frequent first.
fn tally<K: Ord + std::fmt::Display>(items: impl Iterator<Item = K>) -> String {
    let mut m: BTreeMap<K, usize> = BTreeMap::new();
    for i in items {
        *m.entry(i).or_default() += 1;
    }
    let mut v: Vec<(K, usize)> = m.into_iter().collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.1));
    v.iter().map(|(k, n)| format!("{k} ×{n}")).collect::<Vec<_>>().join(", ")
}

fn who(g: &Got) -> String {
    g.cluster.as_deref().map(|c| harness::shown(c).to_string()).unwrap_or_else(|| "Envoy itself (no upstream)".into())
}

fn pct(ppm: u32) -> String {
    let p = f64::from(ppm) / 10_000.0;
    if p.fract() == 0.0 {
        format!("{p:.0} %")
    } else {
        format!("{p} %")
    }
}

/// Checks a share: `observed` of `n` where `ppm` was expected.
fn share_check(what: &str, observed: u32, n: u32, ppm: u32, alpha: f64) -> Option<String> {
    let (lo, hi) = binomial::interval(n, f64::from(ppm) / 1e6, alpha);
    if (lo..=hi).contains(&observed) {
        None
    } else {
        Some(format!(
            "{what}: expected {} of {n} requests (accepting {lo}..={hi}, false-failure probability {alpha:.1e}), got {observed}",
            pct(ppm)
        ))
    }
}

fn check(
    case: &Case,
    got: &[Got],
    h: &Harness,
    table: &RouteTable,
    ours: &dyn Fn(&Recorded) -> bool,
    failures: &mut Vec<String>,
) {
    let e = &case.expect;
    let n = case.request.count;
    // Bonferroni: the shares of a case together stay within the false-failure probability.
    let shares = e.split.len() + e.statuses.len() + usize::from(e.delayed.is_some()) + usize::from(e.mirror.is_some());
    let alpha = e.false_failure / shares.max(1) as f64;
    if let Some(s) = e.status {
        if got.iter().any(|g| g.status != s) {
            failures.push(format!("expected status {s}, got {}", tally(got.iter().map(|g| g.status))));
        }
    }
    if let Some((k, _)) = &e.cluster {
        if !got.iter().all(|g| g.cluster.as_deref().is_some_and(|c| harness::names_cluster(k, c, table))) {
            failures.push(format!("expected every answer from {k}, got {}", tally(got.iter().map(who))));
        }
    }
    if let Some((s, _)) = &e.subset {
        let ok = |g: &Got| {
            g.cluster
                .as_deref()
                .and_then(|c| harness::cluster_parts(c, table))
                .is_some_and(|(_, sub)| sub.as_deref() == Some(s))
        };
        if !got.iter().all(ok) {
            failures.push(format!("expected every answer from subset {s}, got {}", tally(got.iter().map(who))));
        }
    }
    for (k, v) in &e.headers {
        let bad: Vec<String> = got
            .iter()
            .filter(|g| header(g, k) != Some(v.as_str()))
            .map(|g| header(g, k).unwrap_or("(none)").to_string())
            .collect();
        if !bad.is_empty() {
            failures.push(format!("expected response header {k}: {v}, got {}", tally(bad.into_iter())));
        }
    }
    if let Some(loc) = &e.location {
        if got.iter().any(|g| header(g, "location") != Some(loc.as_str())) {
            failures.push(format!(
                "expected a redirect to {loc}, got status {} with location {}",
                tally(got.iter().map(|g| g.status)),
                tally(got.iter().map(|g| header(g, "location").unwrap_or("(none)").to_string()))
            ));
        }
    }
    if let Some(min) = e.delay_min {
        let fast = got.iter().filter(|g| g.elapsed + ENVOY_TIMER_SLACK < min).count();
        if fast > 0 {
            failures.push(format!("expected every request to take at least {min:?}; {fast} of {n} took less"));
        }
    }
    if let Some(max) = e.delay_max {
        let slow: Vec<Duration> = got.iter().map(|g| g.elapsed).filter(|d| *d > max).collect();
        if !slow.is_empty() {
            failures.push(format!(
                "expected every request to take at most {max:?}; {} of {n} took longer (slowest {:?})",
                slow.len(),
                slow.iter().max().copied().unwrap_or_default()
            ));
        }
    }
    if let Some((by, ppm)) = e.delayed {
        let k = got.iter().filter(|g| g.elapsed + ENVOY_TIMER_SLACK >= by).count() as u32;
        failures.extend(share_check(&format!("delayed by at least {by:?}"), k, n, ppm, alpha));
    }
    for s in &e.split {
        let k = got
            .iter()
            .filter(|g| {
                g.cluster.as_deref().is_some_and(|c| {
                    harness::names_cluster(&s.key, c, table)
                        || harness::cluster_parts(c, table)
                            .is_some_and(|(_, sub)| sub.as_deref() == Some(s.key.as_str()))
                })
            })
            .count() as u32;
        if let Some(f) = share_check(&format!("split.{}", s.key), k, n, s.ppm, alpha) {
            failures.push(format!("{f} (answers: {})", tally(got.iter().map(who))));
        }
    }
    for (code, _, ppm) in &e.statuses {
        let k = got.iter().filter(|g| g.status == *code).count() as u32;
        if let Some(f) = share_check(&format!("status {code}"), k, n, *ppm, alpha) {
            failures.push(format!("{f} (statuses: {})", tally(got.iter().map(|g| g.status))));
        }
    }
    if let Some(a) = e.attempts {
        let total: usize =
            h.stubs.values().map(|s| s.recorded().iter().filter(|r| !r.is_mirror() && ours(r)).count()).sum();
        let want = a as usize * n as usize;
        if total != want {
            failures.push(format!(
                "expected {a} upstream attempt(s) per request ({want} in all), the stubs received {total} ({})",
                tally(h.stubs.iter().flat_map(|(name, s)| {
                    s.recorded()
                        .into_iter()
                        .filter(|r| !r.is_mirror() && ours(r))
                        .map(move |r| format!("{} → {}", harness::shown(name), r.status))
                }))
            ));
        }
    }
    if let Some(m) = &e.mirror {
        let mirrors = |h: &Harness| -> u32 {
            h.stubs
                .iter()
                .filter(|(name, _)| harness::names_cluster(&m.key, name, table))
                .map(|(_, s)| s.recorded().iter().filter(|r| r.is_mirror() && ours(r)).count() as u32)
                .sum()
        };
        // Mirrors are fire and forget: give the copies time to arrive.
        let want_all = m.ppm == 1_000_000;
        let deadline = Instant::now() + if want_all { Duration::from_secs(5) } else { Duration::from_millis(500) };
        let mut k = mirrors(h);
        while Instant::now() < deadline && !(want_all && k >= n) {
            std::thread::sleep(Duration::from_millis(20));
            k = mirrors(h);
        }
        if let Some(f) = share_check(&format!("mirror to {}", m.key), k, n, m.ppm, alpha) {
            failures.push(f);
        }
    }
}

fn header<'a>(g: &'a Got, name: &str) -> Option<&'a str> {
    g.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}
