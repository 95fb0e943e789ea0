//! The local harness behind `meshroute run` and `meshroute test`: the library's Envoy
//! configuration (`meshroute::envoy::generate`) with every cluster pointed at a stub upstream of
//! its own, every listener and the admin interface on port 0, and a real Envoy started on it.
//!
//! What the harness changes in the generated configuration, and why:
//! * cluster endpoints → one stub on 127.0.0.1 (type STATIC): the user's endpoints are not
//!   reachable from a laptop, and a stub per cluster tells which cluster answered;
//! * upstream TLS, DNS settings, ORIGINAL_DST and locality weights are dropped (they describe
//!   the real endpoints) and upstreams speak HTTP/1.1 (the stubs do);
//! * listener and admin ports → 0, read back from Envoy (no free-port race).
//!
//! Load balancing, circuit breakers, outlier detection and every routing decision of the filter
//! stay as generated.

pub mod client;
pub mod proc;
pub mod stub;

use meshroute::envoy::{generate, Options};
use meshroute::{Bundle, RouteTable};
use proc::{EnvoyError, EnvoyProcess, LogTo};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use stub::{Behaviour, Stub};

/// Where Envoy and the filter are and how Envoy logs.
pub struct HarnessOptions {
    pub envoy: PathBuf,
    pub wasm: PathBuf,
    pub credentials_dir: Option<PathBuf>,
    pub log: LogTo,
    pub log_level: String,
    /// Stubs print one line a request (`meshroute run`).
    pub stub_log: bool,
}

/// A listener Envoy bound: its name, address and, for a Gateway, the server port it stands for.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Which of the configurations started together it belongs to.
    pub view: usize,
    pub name: String,
    pub addr: SocketAddr,
    pub gateway_port: Option<u32>,
}

#[derive(Debug)]
pub enum HarnessError {
    Generate(meshroute::envoy::InvalidEnvoyConfig),
    Stub {
        cluster: String,
        error: std::io::Error,
    },
    Envoy(EnvoyError),
    /// Envoy did not bind a listener the configuration has.
    Listener(String),
}

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Generate(e) => write!(f, "cannot generate the Envoy configuration: {e}"),
            Self::Stub { cluster, error } => {
                write!(f, "cannot start the stub upstream of {cluster} on 127.0.0.1: {error}")
            }
            Self::Envoy(e) => write!(f, "{e}"),
            Self::Listener(n) => write!(f, "Envoy did not bind listener {n}"),
        }
    }
}

impl std::error::Error for HarnessError {}

/// One configuration to run: its resources, route table and plugin configuration.
pub struct View<'a> {
    /// Names its listeners (`vID:NAME`) when several views share an Envoy.
    pub id: usize,
    pub bundle: &'a Bundle,
    pub table: &'a RouteTable,
    pub plugin_config: &'a Value,
}

/// Running Envoy plus stubs. Dropping it stops Envoy (the stubs' threads end with the process).
pub struct Harness {
    pub envoy: EnvoyProcess,
    /// Cluster name → its stub.
    pub stubs: BTreeMap<String, Stub>,
    pub listeners: Vec<Listener>,
    /// What the generator could not express (printed by the caller).
    pub notes: Vec<String>,
}

/// Clusters of view N are named `vN~` + the template's name when several views share one Envoy
/// (`settings.clusterTemplate` gets the prefix), so that equal names of different
/// configurations never meet. [`shown`] takes it off again.
pub fn view_template(view: usize, template: &str) -> String {
    format!("v{view}~{template}")
}

/// A cluster name as the user's configuration names it (without a view prefix).
pub fn shown(name: &str) -> &str {
    match name.split_once('~') {
        Some((v, rest)) if v.starts_with('v') && v[1..].chars().all(|c| c.is_ascii_digit()) => rest,
        _ => name,
    }
}

impl Harness {
    /// Generates, rewrites and starts one configuration. `behaviour` gives each cluster's stub
    /// its behaviour.
    pub fn start(
        bundle: &Bundle,
        table: &RouteTable,
        plugin_config: &Value,
        opts: &HarnessOptions,
        behaviour: &dyn Fn(&str) -> Behaviour,
    ) -> Result<Harness, HarnessError> {
        Harness::start_many(&[View { id: 0, bundle, table, plugin_config }], opts, behaviour)
    }

    /// Several configurations in one Envoy (one Wasm VM, compiled once): a listener set per
    /// view, cluster names kept apart by [`view_template`] (the caller compiles each view with
    /// it when there are several).
    pub fn start_many(
        views: &[View<'_>],
        opts: &HarnessOptions,
        behaviour: &dyn Fn(&str) -> Behaviour,
    ) -> Result<Harness, HarnessError> {
        let any: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
        let gen_opts =
            Options { wasm: &opts.wasm, listen: any, admin: any, credentials_dir: opts.credentials_dir.as_deref() };
        // Failure rates are random draws; a different sequence each run, like real traffic.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5eed);
        let mut config = Value::Null;
        let mut stubs = BTreeMap::new();
        let mut wanted = Vec::new();
        let mut notes = Vec::new();
        let several = views.len() > 1;
        for view in views {
            let v = view.id;
            let generated = generate(view.bundle, &view.table.clusters, view.plugin_config, &gen_opts)
                .map_err(HarnessError::Generate)?;
            notes.extend(generated.notes.iter().map(|n| n.to_string()));
            let mut part = generated.config;
            for c in part["static_resources"]["clusters"].as_array_mut().into_iter().flatten() {
                let name = c["name"].as_str().unwrap_or_default().to_string();
                let i = stubs.len() as u64;
                let stub = Stub::start(
                    &name,
                    &view.bundle.settings.routing_header,
                    behaviour(&name),
                    seed ^ (i << 32),
                    opts.stub_log,
                )
                .map_err(|error| HarnessError::Stub { cluster: name.clone(), error })?;
                point_at_stub(c, stub.addr);
                stubs.insert(name, stub);
            }
            for l in part["static_resources"]["listeners"].as_array_mut().into_iter().flatten() {
                let base = l["name"].as_str().unwrap_or_default().to_string();
                let gateway_port = base.strip_prefix("gateway_").and_then(|p| p.parse().ok());
                let name = if several { format!("v{v}:{base}") } else { base };
                l["name"] = json!(name);
                l["address"]["socket_address"]["port_value"] = json!(0);
                wanted.push((v, name, gateway_port));
            }
            if config.is_null() {
                config = part;
            } else {
                for kind in ["listeners", "clusters"] {
                    let add = part["static_resources"][kind].as_array().cloned().unwrap_or_default();
                    if let Some(list) = config["static_resources"][kind].as_array_mut() {
                        list.extend(add);
                    }
                }
            }
        }
        let envoy =
            EnvoyProcess::start(&opts.envoy, &config, opts.log, &opts.log_level).map_err(HarnessError::Envoy)?;
        let mut listeners = Vec::new();
        for (view, name, gateway_port) in wanted {
            let addr = *envoy.listeners.get(&name).ok_or_else(|| HarnessError::Listener(name.clone()))?;
            listeners.push(Listener { view, name, addr, gateway_port });
        }
        Ok(Harness { envoy, stubs, listeners, notes })
    }

    /// The listener of `view` a request to `port` enters: the Gateway listener of that server
    /// port, else the sidecar's one listener.
    pub fn listener_for(&self, view: usize, port: u32) -> Option<&Listener> {
        let mine = || self.listeners.iter().filter(move |l| l.view == view);
        mine().find(|l| l.gateway_port == Some(port)).or_else(|| mine().find(|l| l.gateway_port.is_none()))
    }

    pub fn reset_stubs(&self) {
        for s in self.stubs.values() {
            s.reset();
        }
    }
}

/// One endpoint, the stub's; nothing that describes the real endpoints.
fn point_at_stub(c: &mut Value, addr: SocketAddr) {
    let name = c["name"].clone();
    if let Some(m) = c.as_object_mut() {
        for k in ["dns_lookup_family", "transport_socket", "original_dst_lb_config", "dns_refresh_rate"] {
            m.remove(k);
        }
        m.insert("type".into(), json!("STATIC"));
        if m.get("lb_policy").and_then(Value::as_str) == Some("CLUSTER_PROVIDED") {
            m.insert("lb_policy".into(), json!("ROUND_ROBIN"));
        }
        if let Some(common) = m.get_mut("common_lb_config").and_then(Value::as_object_mut) {
            common.remove("locality_weighted_lb_config");
        }
        m.insert(
            "load_assignment".into(),
            json!({
                "cluster_name": name,
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                    "address": addr.ip().to_string(), "port_value": addr.port()}}}}]}],
            }),
        );
        let key = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
        if let Some(p) = m.get_mut("typed_extension_protocol_options").and_then(|o| o.get_mut(key)) {
            if let Some(p) = p.as_object_mut() {
                p.remove("auto_config");
                p.remove("use_downstream_protocol_config");
                p.insert("explicit_http_config".into(), json!({"http_protocol_options": {}}));
            }
        }
    }
}

/// Per-cluster stub behaviour: entries keyed by a cluster name, `HOST/SUBSET` or `HOST` (short
/// or full name); the most specific key that matches wins.
#[derive(Debug, Clone, Default)]
pub struct Behaviours {
    entries: Vec<(String, Behaviour)>,
}

impl Behaviours {
    pub fn add(&mut self, key: &str, b: Behaviour) {
        self.entries.retain(|(k, _)| k != key);
        self.entries.push((key.to_string(), b));
    }

    /// The behaviour for cluster `name`.
    pub fn for_cluster(&self, name: &str, table: &RouteTable) -> Behaviour {
        let mut best: Option<(u8, &Behaviour)> = None;
        for (k, b) in &self.entries {
            let rank = rank(k, name, table);
            if rank > 0 && best.is_none_or(|(r, _)| rank > r) {
                best = Some((rank, b));
            }
        }
        best.map(|(_, b)| b.clone()).unwrap_or_default()
    }

    /// Keys that name none of `clusters` (a typo would silently change nothing).
    pub fn unknown_keys<'a>(&self, clusters: impl Iterator<Item = &'a str> + Clone, table: &RouteTable) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(k, _)| !clusters.clone().any(|c| rank(k, c, table) > 0))
            .map(|(k, _)| k.clone())
            .collect()
    }
}

/// Does `key` (a cluster name, `HOST/SUBSET` or `HOST`) name cluster `name`?
pub fn names_cluster(key: &str, name: &str, table: &RouteTable) -> bool {
    rank(key, name, table) > 0
}

/// A cluster's host and subset: from the route table, else from the default name template
/// `outbound|PORT|SUBSET|HOST` (clusters the generator adds for ServiceEntry subsets).
pub fn cluster_parts(name: &str, table: &RouteTable) -> Option<(String, Option<String>)> {
    if let Some(c) = table.clusters.iter().find(|c| c.name == name) {
        return Some((c.host.clone(), c.subset.clone()));
    }
    let parts: Vec<&str> = shown(name).split('|').collect();
    match parts[..] {
        [_, _, subset, host] => Some((host.to_string(), Some(subset.to_string()).filter(|s| !s.is_empty()))),
        _ => None,
    }
}

/// How well `key` names cluster `name`: 3 the cluster name, 2 `HOST/SUBSET`, 1 `HOST` (short or
/// full name), 0 not at all.
fn rank(key: &str, name: &str, table: &RouteTable) -> u8 {
    if key == name || key == shown(name) {
        return 3;
    }
    let Some((host, subset)) = cluster_parts(name, table) else { return 0 };
    let (h, s) = match key.split_once('/') {
        Some((h, s)) => (h, Some(s)),
        None => (key, None),
    };
    let host_ok = host == h || host.split('.').next() == Some(h);
    match (host_ok, s) {
        (true, Some(s)) if subset.as_deref() == Some(s) => 2,
        (true, None) => 1,
        _ => 0,
    }
}

/// Parses one behaviour object (`status`, `failStatus`, `failureRate`, `latency`, `failFirst`).
/// Unknown keys are errors.
pub fn parse_behaviour(v: &Value) -> Result<Behaviour, String> {
    let obj = v.as_object().ok_or("an upstream's behaviour must be an object (status, failureRate, latency, ...)")?;
    let mut b = Behaviour::default();
    for (k, val) in obj {
        match k.as_str() {
            "status" => b.status = status(val).map_err(|e| format!("status: {e}"))?,
            "failStatus" => b.fail_status = status(val).map_err(|e| format!("failStatus: {e}"))?,
            "failureRate" => b.failure_ppm = percent_ppm(val).map_err(|e| format!("failureRate: {e}"))?,
            "latency" => b.latency = duration(val).map_err(|e| format!("latency: {e}"))?,
            "failFirst" => {
                b.fail_first =
                    val.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or("failFirst: a count of attempts, e.g. 2")?
            }
            other => {
                return Err(format!(
                    "unknown field {other:?} (known: status, failStatus, failureRate, latency, failFirst)"
                ))
            }
        }
    }
    Ok(b)
}

fn status(v: &Value) -> Result<u16, String> {
    v.as_u64()
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| (100..=599).contains(n))
        .ok_or_else(|| format!("{v} is not an HTTP status (100-599)"))
}

/// `10%`, `"10%"`, `10` or `0.5` (percent) → parts per million, 0–100 %.
pub fn percent_ppm(v: &Value) -> Result<u32, String> {
    let p = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().trim_end_matches('%').trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| format!("{v} is not a percentage (e.g. 10 or \"10%\")"))?;
    if !(0.0..=100.0).contains(&p) {
        return Err(format!("{p} % is not between 0 and 100 %"));
    }
    Ok((p * 10_000.0).round() as u32)
}

pub fn duration(v: &Value) -> Result<Duration, String> {
    match v {
        Value::String(s) => meshroute::duration::parse(s),
        _ => Err(format!("{v} is not a duration (e.g. \"100ms\", \"2s\")")),
    }
}

/// Makes a path absolute (Envoy resolves relative paths against its own working directory).
pub fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}
