//! `meshroute run`: the user's resources in a real local Envoy with the meshroute filter and a
//! stub upstream per cluster, until Ctrl-C.

use crate::harness::proc::{self, LogTo};
use crate::harness::{self, Behaviours, Harness, HarnessOptions};
use crate::{yaml, InputArgs, Loaded};
use clap::Args;
use meshroute::{Bundle, RouteTable};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Run the resources in a local Envoy: the generated configuration (as `meshroute envoy` writes
/// it) with the filter, every listener and the admin interface on a free port, and a stub
/// upstream for every cluster, answering with its cluster name and an echo of the request.
#[derive(Args)]
#[command(
    after_help = "Stub behaviour (--upstreams FILE, a YAML map, or --upstream KEY=FIELD:VALUE,...): KEY is a cluster
name, HOST/SUBSET or HOST (short or full name); fields are status (default 200), failStatus (503),
failureRate (percent of requests answered with failStatus), latency (e.g. 100ms) and failFirst (the
first N attempts of each request, by x-request-id, fail: Envoy's retries keep the id).

  # upstreams.yaml
  ratings/v1: {failFirst: 2}
  reviews: {latency: 300ms, failureRate: 10%}

Envoy: --envoy, else $ENVOY_BIN, else .tools/envoy/envoy/_bin/envoy of the project, else PATH.
Ctrl-C (or SIGTERM) stops Envoy and the stubs.

Examples:
  meshroute run -f envoy/demo
  meshroute run -f my-crds/ --upstream 'reviews/v2=status:503'
  meshroute run -f gw.yaml -f vs.yaml --gateway istio-system/public-gateway --upstreams upstreams.yaml"
)]
pub struct RunArgs {
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub harness: HarnessArgs,
    /// Stub behaviour per cluster from a YAML file (see below).
    #[arg(long, value_name = "FILE")]
    pub upstreams: Option<PathBuf>,
    /// Stub behaviour for one cluster, e.g. `reviews/v2=status:503,latency:100ms` (repeatable).
    #[arg(long = "upstream", value_name = "KEY=FIELD:VALUE,...")]
    pub upstream: Vec<String>,
}

/// Where Envoy and the filter come from (shared with `meshroute test`).
#[derive(Args, Clone)]
pub struct HarnessArgs {
    /// The Envoy binary.
    #[arg(long, value_name = "PATH")]
    pub envoy: Option<PathBuf>,
    /// The meshroute filter module (default: the release build,
    /// target/wasm32-wasip1/release/meshroute_filter.wasm, or $MESHROUTE_WASM).
    #[arg(long, value_name = "FILE")]
    pub wasm: Option<PathBuf>,
    /// Directory holding NAME.crt / NAME.key files for Gateway `credentialName: NAME`.
    #[arg(long, value_name = "DIR")]
    pub credentials_dir: Option<PathBuf>,
}

impl HarnessArgs {
    /// Envoy and the module, or a message saying how to get them.
    pub fn options(&self, log: LogTo, stub_log: bool) -> Result<HarnessOptions, String> {
        let envoy = proc::find_envoy(self.envoy.as_deref()).map_err(|e| e.to_string())?;
        let wasm = self.wasm.clone().unwrap_or_else(proc::default_wasm);
        if !wasm.is_file() {
            return Err(format!(
                "the filter module {} does not exist: build it with `make wasm` (or pass --wasm FILE)",
                wasm.display()
            ));
        }
        Ok(HarnessOptions {
            envoy,
            wasm: harness::absolute(&wasm),
            credentials_dir: self.credentials_dir.as_deref().map(harness::absolute),
            log,
            log_level: if log == LogTo::Terminal { "warning".into() } else { "info".into() },
            stub_log,
        })
    }
}

pub fn run(args: &RunArgs) -> ExitCode {
    let loaded = match Loaded::read_generated(&args.input) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let table = match loaded.require_table() {
        Ok(t) => t,
        Err(code) => return code,
    };
    let behaviours = match read_behaviours(args.upstreams.as_deref(), &args.upstream) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("meshroute: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = match args.harness.options(LogTo::Terminal, true) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("meshroute: {e}");
            return ExitCode::from(2);
        }
    };
    proc::install_signal_handler();
    let plugin_config = loaded.inputs.plugin_config(args.input.gateway.as_deref());
    let h = match Harness::start(&loaded.bundle, table, &plugin_config, &opts, &|c| behaviours.for_cluster(c, table)) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("meshroute: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(k) = behaviours.unknown_keys(h.stubs.keys().map(String::as_str), table).first() {
        eprintln!(
            "meshroute: upstream {k:?} names no cluster of this configuration (see the stub list of `meshroute run`)"
        );
        return ExitCode::from(2);
    }
    for n in &h.notes {
        eprintln!("{n}");
    }
    print!("{}", banner(&h, &loaded.bundle, table));
    loop {
        std::thread::sleep(Duration::from_millis(200));
        if let Some(status) = h.envoy.exited() {
            eprintln!("meshroute: Envoy stopped ({status})");
            return ExitCode::from(1);
        }
    }
}

/// Behaviours from `--upstreams FILE` then `--upstream` flags (later ones win).
pub fn read_behaviours(file: Option<&Path>, flags: &[String]) -> Result<Behaviours, String> {
    let mut out = Behaviours::default();
    if let Some(f) = file {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let docs = yaml::parse_documents(&text).map_err(|e| format!("{}:{e}", f.display()))?;
        for d in docs {
            let yaml::NodeKind::Map(entries) = &d.kind else {
                return Err(format!("{}:{}: expected a map of cluster → behaviour", f.display(), d.line));
            };
            for (key, line, node) in entries {
                let b = harness::parse_behaviour(&node.to_value())
                    .map_err(|e| format!("{}:{line}: upstream {key:?}: {e}", f.display()))?;
                out.add(key, b);
            }
        }
    }
    for flag in flags {
        let (key, fields) =
            flag.split_once('=').ok_or_else(|| format!("--upstream {flag:?}: expected KEY=FIELD:VALUE,..."))?;
        let mut obj = serde_json::Map::new();
        for f in fields.split(',').filter(|f| !f.trim().is_empty()) {
            let (k, v) = f.split_once(':').ok_or_else(|| format!("--upstream {flag:?}: {f:?} is not FIELD:VALUE"))?;
            let v = v.trim();
            let value = v.parse::<u64>().map(serde_json::Value::from).unwrap_or_else(|_| v.into());
            obj.insert(k.trim().to_string(), value);
        }
        let b = harness::parse_behaviour(&serde_json::Value::Object(obj))
            .map_err(|e| format!("--upstream {flag:?}: {e}"))?;
        out.add(key.trim(), b);
    }
    Ok(out)
}

/// Where everything listens and curl lines for the configuration's own hosts.
fn banner(h: &Harness, bundle: &Bundle, table: &RouteTable) -> String {
    let mut out = String::new();
    let admin = h.envoy.admin;
    out.push_str(&format!("meshroute run: Envoy admin http://{admin}, configuration {}\n", h.envoy.dir.display()));
    for l in &h.listeners {
        out.push_str(&format!("  listener {} on {}\n", l.name, l.addr));
    }
    out.push_str(&format!("  {} stub upstream(s):\n", h.stubs.len()));
    for (name, s) in &h.stubs {
        out.push_str(&format!("    {name} on {}\n", s.addr));
    }
    out.push_str("\nTry (each stub answers its cluster name on the first line, then the request it received):\n");
    // (host, exact header matches of its rules, whether it splits traffic)
    type Hint = (String, Vec<(String, String)>, bool);
    let mut hosts: Vec<Hint> = Vec::new();
    let merged = meshroute::delegate::merge(bundle);
    for (_, vs) in merged.bundle.as_ref().unwrap_or(bundle).virtual_services() {
        let weighted = vs.http.iter().any(|r| r.route.len() > 1);
        for host in vs.hosts.iter().filter(|h| !h.contains('*')) {
            let mut headers = Vec::new();
            for rule in &vs.http {
                for m in &rule.matches {
                    for (k, sm) in &m.headers {
                        if let Some(v) = &sm.exact {
                            headers.push((k.clone(), v.clone()));
                        }
                    }
                }
            }
            hosts.push((host.clone(), headers, weighted));
        }
    }
    for (_, se) in bundle.service_entries() {
        for host in se.hosts.iter().filter(|h| !h.contains('*')) {
            if !hosts.iter().any(|(h, _, _)| h == host || host.split('.').next() == Some(h.as_str())) {
                hosts.push((host.clone(), Vec::new(), false));
            }
        }
    }
    let listeners: Vec<_> = h
        .listeners
        .iter()
        .filter(|l| !is_https(l.gateway_port, bundle) && !is_l4(&l.name, l.gateway_port, bundle))
        .collect();
    for l in &listeners {
        for (host, headers, weighted) in &hosts {
            out.push_str(&format!("  curl -s -H 'host: {host}' http://{}/\n", l.addr));
            for (k, v) in headers {
                out.push_str(&format!("  curl -s -H 'host: {host}' -H '{k}: {v}' http://{}/ | head -1\n", l.addr));
            }
            if *weighted {
                out.push_str(&format!(
                    "  for i in $(seq 100); do curl -s -H 'host: {host}' http://{}/ | head -1; done | sort | uniq -c\n",
                    l.addr
                ));
            }
        }
    }
    if !table.clusters.is_empty() {
        out.push_str(&format!("  curl -s 'http://{admin}/stats?filter=wasmcustom'   # the filter's counters\n"));
        out.push_str(&format!(
            "  curl -s 'http://{admin}/stats?filter=upstream_rq_'   # per cluster: attempts, retries, status classes\n"
        ));
    }
    out.push_str("Ctrl-C stops Envoy and the stubs.\n");
    out
}

/// A TCP/TLS listener (`meshroute::envoy::l4`, `IP_PORT`, `inbound_PORT`, a Gateway's L4 port):
/// no HTTP curl hints for it.
fn is_l4(name: &str, gateway_port: Option<u32>, bundle: &Bundle) -> bool {
    let base = name.rsplit(':').next().unwrap_or(name);
    if base.starts_with("inbound_") || base.split('_').next().is_some_and(|ip| ip.parse::<std::net::IpAddr>().is_ok()) {
        return true;
    }
    let Some(port) = gateway_port else { return false };
    bundle.gateways().any(|(_, g)| {
        g.servers
            .iter()
            .any(|s| s.port.as_ref().is_some_and(|p| p.number == port) && meshroute::envoy::l4::is_l4_server(s))
    })
}

fn is_https(port: Option<u32>, bundle: &Bundle) -> bool {
    let Some(port) = port else { return false };
    bundle.gateways().any(|(_, g)| {
        g.servers
            .iter()
            .any(|s| s.port.as_ref().is_some_and(|p| p.number == port && p.protocol.eq_ignore_ascii_case("HTTPS")))
    })
}
