//! Shared end-to-end test support: a real Envoy process, scriptable HTTP/1.1
//! upstreams, a tiny HTTP/1.1 client and statistics helpers.
//!
//! Use it from an integration test with `mod support;` and
//! `use support::*;`. Everything is std-only on purpose: no async runtime, no
//! HTTP crate, so the harness builds fast and behaves the same everywhere.
//!
//! Failures panic with a message that says what to do (`make tools`,
//! `make wasm`) or with the tail of Envoy's log: this is test code, where a
//! panic *is* the failure report.

// Each test binary uses a different subset of the helpers.
#![allow(dead_code)]
// Test support: panicking with a good message is how a test fails.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

#[cfg(feature = "cli")]
pub mod cli;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------

/// The repository root (the root package's manifest directory).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the repo if
/// relative) or `<repo>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                repo_root().join(dir)
            }
        }
        _ => repo_root().join("target"),
    }
}

/// The Envoy binary: `$ENVOY_BIN`, else the one `make tools` installs in
/// `<repo>/.tools/envoy/envoy/_bin/envoy`. Panics if it is missing — also
/// under CI (`CI=true`), where a missing Envoy must fail the run, never skip.
pub fn envoy_bin() -> PathBuf {
    let bin = envoy_bin_location();
    if !bin.is_file() {
        panic!("Envoy not found: run `make tools` (looked for {}; set ENVOY_BIN to override)", bin.display());
    }
    bin
}

fn envoy_bin_location() -> PathBuf {
    match std::env::var_os("ENVOY_BIN") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => repo_root().join(".tools/envoy/envoy/_bin/envoy"),
    }
}

/// A filter's Wasm module: `<target>/wasm32-wasip1/release/<name>.wasm`
/// (`name` is the crate name; `-` may be given as is).
/// `$MESHROUTE_WASM` overrides it: a directory holding `<name>.wasm`, or the
/// `.wasm` file itself. Panics with "run `make wasm`" if it is missing.
pub fn wasm_path(name: &str) -> PathBuf {
    let path = wasm_location(name);
    if !path.is_file() {
        panic!("Wasm module {} not found: run `make wasm` (or set MESHROUTE_WASM)", path.display());
    }
    path
}

fn wasm_location(name: &str) -> PathBuf {
    // Cargo names the module after the crate with `-` turned into `_`.
    let file = format!("{}.wasm", name.replace('-', "_"));
    match std::env::var_os("MESHROUTE_WASM") {
        Some(p) if !p.is_empty() => {
            let p = PathBuf::from(p);
            if p.is_dir() {
                p.join(&file)
            } else {
                p
            }
        }
        _ => target_dir().join("wasm32-wasip1/release").join(&file),
    }
}

/// Envoy and the meshroute filter module for `test`, or `None` — said loudly — when one is
/// missing on a developer's machine. Under CI (`CI=true`) a missing one fails the test instead.
#[allow(dead_code)] // used by the CLI's Envoy tests only
pub fn envoy_and_filter(test: &str) -> Option<(PathBuf, PathBuf)> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let envoy = envoy_bin_location();
    let wasm = wasm_location("meshroute_filter");
    for (what, path, fix) in [("Envoy", &envoy, "make tools"), ("the filter module", &wasm, "make wasm")] {
        if !path.is_file() {
            if ci {
                panic!("{test}: {what} not found at {} (run `{fix}`); CI must not skip", path.display());
            }
            eprintln!("SKIPPED {test}: {what} not found at {} (run `{fix}`)", path.display());
            return None;
        }
    }
    Some((envoy, wasm))
}

/// Reads `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> String {
    let path = repo_root().join("tests/fixtures").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()))
}

/// A currently free TCP port on 127.0.0.1 (bind to :0, read, release).
/// Racy: another process may take it before it is used. Prefer letting the
/// process that listens bind port 0 (what [`Envoy::start`] does for its own
/// ports) and reading the port back.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// A port on 127.0.0.1 where connections are refused, for a dead upstream:
/// a privileged one (below 1024) that nothing listens on. Port-0 binds only
/// ever get ports from the kernel's ephemeral range and [`free_port`] too, so
/// no test can start listening there later, as it could on a released port.
pub fn refused_port() -> u16 {
    (1..1024)
        .find(|&port| {
            TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(1))
                .is_err_and(|e| e.kind() == io::ErrorKind::ConnectionRefused)
        })
        .expect("some port below 1024 on 127.0.0.1 refuses connections")
}

static UNIQUE: AtomicU32 = AtomicU32::new(0);

/// A fresh, empty temporary directory (std-only; removed by its owner).
pub fn unique_temp_dir(prefix: &str) -> PathBuf {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    dir
}

// ---------------------------------------------------------------------------
// The filter's configuration
// ---------------------------------------------------------------------------

/// The filter's configuration for a test written in meshroute's source form
/// (`{"resources": [...], "settings": {...}, "registry": {...}}`): the compiled table
/// (`meshroute.table/v1`), what `meshroute compile` writes and the filter loads. The filter
/// refuses source form, so tests write their cases readably and hand Envoy this. Panics with the
/// compiler's errors when the source does not compile (a broken test, not a filter refusal; a
/// test of refusals writes the bad table itself).
pub fn filter_configuration(source: &serde_json::Value) -> String {
    meshroute::table::compile_source(source.to_string().as_bytes())
        .unwrap_or_else(|errors| panic!("the test's source configuration does not compile:\n{errors}\n{source}"))
}

/// A configuration the filter must refuse, and what its rejection line must say.
pub struct RefusedConfiguration {
    /// What is wrong, for assertion messages.
    pub case: &'static str,
    /// The configuration's bytes as Envoy hands them to the filter.
    pub text: String,
    /// A part of the filter's `meshroute: config rejected: ...` line.
    pub logged: String,
}

/// Every kind of configuration the filter refuses (`meshroute::table::load`), each built from
/// `source` — which must compile and whose first VirtualService must forward — so that a filter
/// that took part of one would route as `source` does: source form, `null`, empty, `{}`,
/// truncated JSON, another format version, a rule index out of range, a bad regex, weights that do
/// not add up, a routing header that is no header name, mirror limits out of their bounds. Since
/// the CLI refuses bad Istio resources before any table exists, a bad table is the only bad
/// configuration a filter can be given.
pub fn refused_configurations(source: &serde_json::Value) -> Vec<RefusedConfiguration> {
    use serde_json::{json, Value};
    let good = filter_configuration(source);
    let table: Value = serde_json::from_str(&good).expect("the compiled table is JSON");
    let vs_name = table["table"]["virtual_services"][0]["name"].as_str().expect("a VirtualService").to_string();
    let at = format!("virtual_services[0] ({vs_name})");
    let entries = table["table"]["virtual_services"][0]["entries"].as_array().map_or(0, Vec::len);
    assert!(entries > 0, "the first VirtualService has no entries: {good}");
    let last = entries - 1;
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut t = table.clone();
        f(&mut t);
        t.to_string()
    };
    let rule = table["table"]["virtual_services"][0]["entries"][last]["rule"].as_u64().expect("rule") as usize;
    let forward = &table["table"]["virtual_services"][0]["rules"][rule]["action"]["Forward"];
    let total = forward["total_weight"].as_u64().expect("the last entry's rule forwards");
    let not_a_table = format!("compiled table: not a {} table", meshroute::table::FORMAT);
    let other_version = "meshroute.table/v0";
    let cases: Vec<(&'static str, String, String)> = vec![
        ("source form", source.to_string(), "this is meshroute's source form".into()),
        ("null", "null".into(), "compiled table: the configuration is not a JSON object".into()),
        ("empty", String::new(), "the configuration is empty".into()),
        ("{}", "{}".into(), format!("{not_a_table}: missing field `format`")),
        ("truncated", good[..good.len() / 2].to_string(), "compiled table: not JSON: EOF while parsing".into()),
        (
            "another format version",
            good.replacen(meshroute::table::FORMAT, other_version, 1),
            format!("format: \"{other_version}\" is not \"{}\"", meshroute::table::FORMAT),
        ),
        (
            "a rule index out of range",
            edit(&|t| t["table"]["virtual_services"][0]["entries"][last]["rule"] = json!(999)),
            format!("{at}.entries[{last}]: rule 999 does not exist"),
        ),
        (
            "a bad regex",
            edit(&|t| t["table"]["virtual_services"][0]["entries"][0]["block"]["uri"] = json!({"regex": "/r(["})),
            "invalid regex \"/r([\"".into(),
        ),
        (
            "weights that do not add up",
            edit(&|t| {
                t["table"]["virtual_services"][0]["rules"][rule]["action"]["Forward"]["total_weight"] = json!(total + 1)
            }),
            format!("{at}.rules[{rule}].action: weights add up to {total}, not total_weight {}", total + 1),
        ),
        (
            "a routing header that is no header name",
            edit(&|t| t["table"]["routing_header"] = json!("X Cluster")),
            "routing_header: \"X Cluster\" is not a lowercase header name".into(),
        ),
        (
            "mirror body limit above its maximum",
            edit(&|t| t["table"]["mirror_body_limit"] = json!(meshroute::config::MAX_MIRROR_BODY_LIMIT + 1)),
            "mirror_body_limit: above the maximum".into(),
        ),
        (
            "no mirror call in flight allowed",
            edit(&|t| t["table"]["mirror_max_in_flight"] = json!(0)),
            "mirror_max_in_flight: must be between 1 and".into(),
        ),
    ];
    cases.into_iter().map(|(case, text, logged)| RefusedConfiguration { case, text, logged }).collect()
}

// ---------------------------------------------------------------------------
// Envoy
// ---------------------------------------------------------------------------

/// Knobs for [`Envoy::start_with`].
#[derive(Clone, Debug)]
pub struct EnvoyOptions {
    /// Worker threads (`--concurrency`), 1 by default for determinism.
    pub concurrency: u32,
    /// `--log-level`.
    pub log_level: String,
    /// How long to wait for admin `/ready` to answer 200.
    pub ready_timeout: Duration,
    /// Extra command-line arguments.
    pub extra_args: Vec<String>,
}

impl Default for EnvoyOptions {
    fn default() -> Self {
        EnvoyOptions {
            concurrency: 1,
            log_level: "info".to_string(),
            ready_timeout: Duration::from_secs(20),
            extra_args: Vec::new(),
        }
    }
}

/// A running Envoy, killed (and its temp dir removed) on drop. If the test
/// is panicking, the temp dir (config + logs) is kept and its path printed.
pub struct Envoy {
    child: Child,
    dir: PathBuf,
    vars: HashMap<String, String>,
    admin_port: u16,
}

/// Renders `{{NAME}}` placeholders. Unknown placeholders are an error.
pub fn render(template: &str, vars: &HashMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| format!("unclosed {{{{ in template near: {}", &rest[start..]))?;
        let name = after[..end].trim();
        let value = vars.get(name).ok_or_else(|| format!("template placeholder {{{{{name}}}}} has no value"))?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The name of the listener whose address holds `{{placeholder}}`: the
/// `name:` right before it, with nothing in between but the address's own
/// keys (`address:`, `socket_address:`, `port_value:`) — anything else (a
/// cluster's endpoint, a listener named after its address) is not guessed.
fn listener_named_before(template: &str, placeholder: &str) -> Option<String> {
    let at = template.find(&format!("{{{{{placeholder}}}}}"))?;
    let before = &template[..at];
    let mut search = before.len();
    let key = loop {
        let found = before[..search].rfind("name:")?;
        if before[..found].chars().next_back().is_none_or(|c| !(c.is_alphanumeric() || c == '_')) {
            break found;
        }
        search = found;
    };
    let value = before[key + "name:".len()..].trim_start();
    let end = value.find([',', '}', '\n']).unwrap_or(value.len());
    let name = value[..end].trim().trim_matches(['"', '\'']);
    let between = &value[end..];
    let only_address_keys = between
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| word.ends_with(':') && word.len() > 1)
        .all(|k| matches!(k, "address:" | "socket_address:" | "port_value:"));
    (only_address_keys && !name.is_empty()).then(|| name.to_string())
}

/// Names of the `{{NAME}}` placeholders in a template.
fn placeholders(template: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        names.push(after[..end].trim().to_string());
        rest = &after[end + 2..];
    }
    names
}

impl Envoy {
    /// Starts Envoy with default [`EnvoyOptions`]. See [`Envoy::start_with`].
    pub fn start(yaml_template: &str, vars: &[(&str, &str)]) -> Envoy {
        Envoy::start_with(yaml_template, vars, EnvoyOptions::default())
    }

    /// Renders the template and starts Envoy, waiting until admin `/ready`
    /// answers 200.
    ///
    /// Placeholders filled automatically unless given in `vars`:
    /// * `{{ADMIN_PORT}}` and every other `{{..._PORT}}`: `0`, so Envoy binds
    ///   a port itself and nothing can take it in between (a port picked here
    ///   and released would race with every other process). The admin port is
    ///   read from `--admin-address-path`, a listener's from the admin's
    ///   `/listeners`; read them back with [`Envoy::port`]. A `{{..._PORT}}`
    ///   left to this must be a listener's port and the listener's `name:`
    ///   must come before it in the template (as in every fixture);
    /// * `{{TMP_DIR}}`: the instance's temp dir (for access logs etc.).
    ///
    /// Any other placeholder without a value is an error. Retries when a port
    /// given in `vars` (or written into the template) turned out to be taken.
    pub fn start_with(yaml_template: &str, vars: &[(&str, &str)], opts: EnvoyOptions) -> Envoy {
        let bin = envoy_bin();
        let mut last_error = String::new();
        for _attempt in 0..3 {
            match Envoy::try_start(&bin, yaml_template, vars, &opts) {
                Ok(envoy) => return envoy,
                Err((msg, retry)) => {
                    if !retry {
                        panic!("{msg}");
                    }
                    last_error = msg;
                }
            }
        }
        panic!("{last_error}");
    }

    /// Starts Envoy on a configuration made afresh for each attempt (by `make`, which picks its
    /// own ports), retrying when a port it picked turned out to be taken: for configurations
    /// whose ports must be known before Envoy starts (a Gateway server's port is part of the
    /// routing), where letting Envoy bind port 0 is not possible.
    pub fn start_fresh(mut make: impl FnMut() -> String) -> Envoy {
        let bin = envoy_bin();
        let mut last_error = String::new();
        for _attempt in 0..5 {
            match Envoy::try_start(&bin, &make(), &[], &EnvoyOptions::default()) {
                Ok(envoy) => return envoy,
                Err((msg, true)) => last_error = msg,
                Err((msg, false)) => panic!("{msg}"),
            }
        }
        panic!("{last_error}");
    }

    fn try_start(
        bin: &Path,
        template: &str,
        vars: &[(&str, &str)],
        opts: &EnvoyOptions,
    ) -> Result<Envoy, (String, bool)> {
        let dir = unique_temp_dir("meshroute-envoy");
        let mut map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        map.entry("TMP_DIR".into()).or_insert_with(|| dir.display().to_string());
        // Placeholder → listener name, for the ports Envoy binds itself.
        let mut bound_by_envoy: Vec<(String, String)> = Vec::new();
        map.entry("ADMIN_PORT".into()).or_insert_with(|| "0".to_string());
        for name in placeholders(template) {
            if name.ends_with("_PORT") && !map.contains_key(&name) {
                let listener = listener_named_before(template, &name).ok_or_else(|| {
                    (
                        format!(
                            "{{{{{name}}}}} has no value and no listener `name:` before it: give it a value, or put \
                             it in a listener's address after the listener's name"
                        ),
                        false,
                    )
                })?;
                bound_by_envoy.push((name.clone(), listener));
                map.insert(name, "0".to_string());
            }
        }
        let yaml = render(template, &map).map_err(|e| (e, false))?;
        let config = dir.join("envoy.yaml");
        std::fs::write(&config, yaml).map_err(|e| (format!("write config: {e}"), false))?;

        // Unique per process and instance, so parallel tests and parallel
        // test binaries never share Envoy's hot-restart identity.
        let base_id = (std::process::id() % 1_000_000) * 100 + UNIQUE.fetch_add(1, Ordering::Relaxed) % 100;
        let stderr =
            std::fs::File::create(dir.join("stderr.log")).map_err(|e| (format!("create stderr.log: {e}"), false))?;
        let mut cmd = Command::new(bin);
        cmd.arg("-c")
            .arg(&config)
            .args(["--concurrency", &opts.concurrency.to_string()])
            .args(["--base-id", &base_id.to_string()])
            // No shared memory / domain sockets: nothing leaks when we SIGKILL.
            .arg("--disable-hot-restart")
            .args(["--log-level", &opts.log_level])
            .arg("--log-path")
            .arg(dir.join("envoy.log"))
            // Envoy buffers log files for ~10 s by default; tests read them live.
            .args(["--file-flush-interval-msec", "50"])
            .args(&opts.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        // Envoy writes the admin address it bound here (the only way to learn port 0's).
        let admin_address_path = dir.join("admin.address");
        cmd.arg("--admin-address-path").arg(&admin_address_path);
        let child = cmd.spawn().map_err(|e| (format!("cannot run {}: {e}", bin.display()), false))?;
        let mut envoy = Envoy { child, dir, vars: map, admin_port: 0 };
        let deadline = Instant::now() + opts.ready_timeout;
        loop {
            if let Ok(Some(status)) = envoy.child.try_wait() {
                let log = envoy.log_tail(80);
                let retry = log.contains("ddress already in use");
                return Err((format!("Envoy exited during startup ({status}); log tail:\n{log}"), retry));
            }
            if envoy.admin_port == 0 {
                envoy.admin_port = std::fs::read_to_string(&admin_address_path)
                    .ok()
                    .and_then(|a| a.trim().rsplit_once(':').and_then(|(_, p)| p.parse().ok()))
                    .unwrap_or(0);
            }
            if envoy.admin_port != 0 {
                let ready = try_http("GET", envoy.admin_port, "/ready", &[], b"", Duration::from_millis(500));
                // With a given admin port, the answer may come from another Envoy that holds
                // it (this one then failed to bind it): check it is ours by its unique base id.
                if ready.is_ok_and(|r| r.status == 200) && envoy.admin_is_ours(base_id) {
                    let ports = envoy.listener_ports().map_err(|e| (e, false))?;
                    for (placeholder, listener) in bound_by_envoy {
                        let port = ports.get(&listener).ok_or_else(|| {
                            (
                                format!(
                                    "{{{{{placeholder}}}}} was bound by Envoy, but it has no listener \
                                     `{listener}` (listeners: {ports:?})"
                                ),
                                false,
                            )
                        })?;
                        envoy.vars.insert(placeholder, port.to_string());
                    }
                    return Ok(envoy);
                }
            }
            if Instant::now() > deadline {
                return Err((
                    format!("Envoy not ready after {:?}; log tail:\n{}", opts.ready_timeout, envoy.log_tail(80)),
                    false,
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Each listener's bound port, by listener name (admin `/listeners` prints
    /// `name::ip:port` lines; a listener with several addresses lists them
    /// comma-separated, the first is taken).
    pub fn listener_ports(&self) -> Result<HashMap<String, u16>, String> {
        let resp = try_http("GET", self.admin_port, "/listeners", &[], b"", Duration::from_secs(5))
            .map_err(|e| format!("admin /listeners: {e}"))?;
        let mut ports = HashMap::new();
        for line in resp.text().lines() {
            let Some((name, addrs)) = line.split_once("::") else { continue };
            let first = addrs.split(',').next().unwrap_or("");
            if let Some(port) = first.rsplit_once(':').and_then(|(_, p)| p.trim().parse::<u16>().ok()) {
                ports.insert(name.to_string(), port);
            }
        }
        Ok(ports)
    }

    /// The port a listener is bound to now (read from the admin each call, so
    /// it follows listeners that LDS replaced).
    pub fn listener_port(&self, listener: &str) -> u16 {
        let ports = self.listener_ports().unwrap_or_else(|e| panic!("{e}"));
        *ports.get(listener).unwrap_or_else(|| panic!("Envoy has no listener {listener}; it has {ports:?}"))
    }

    fn admin_is_ours(&self, base_id: u32) -> bool {
        try_http("GET", self.admin_port, "/server_info", &[], b"", Duration::from_millis(500))
            .is_ok_and(|r| r.status == 200 && r.text().contains(&format!("\"base_id\": \"{base_id}\"")))
    }

    /// The value a placeholder was rendered with (e.g. `"LISTENER_PORT"`).
    pub fn var(&self, name: &str) -> &str {
        self.vars.get(name).map(String::as_str).unwrap_or_else(|| panic!("no template variable {name}"))
    }

    /// A port placeholder's value (e.g. `envoy.port("LISTENER_PORT")`).
    pub fn port(&self, name: &str) -> u16 {
        self.var(name).parse().unwrap_or_else(|e| panic!("{name} is not a port: {e}"))
    }

    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// The Envoy process id (e.g. for its CPU time in `/proc/<pid>/stat`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The instance's temp dir (holds envoy.yaml, envoy.log, stderr.log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// GET on the admin interface; panics unless it answers 200.
    pub fn admin_get(&self, path: &str) -> String {
        let resp = http("GET", self.admin_port, path, &[], b"");
        if resp.status != 200 {
            panic!("admin GET {path}: status {} {}", resp.status, resp.text());
        }
        resp.text()
    }

    /// POST on the admin interface (e.g. `/reset_counters`); returns the body.
    pub fn admin_post(&self, path: &str) -> String {
        http("POST", self.admin_port, path, &[], b"").text()
    }

    /// A counter or gauge by its exact `/stats` name; `None` if it does not
    /// exist (or is a histogram).
    pub fn stat(&self, name: &str) -> Option<u64> {
        let filter = format!("^{}$", regex_escape(name));
        let body = self.admin_get(&format!("/stats?filter={}", url_encode(&filter)));
        body.lines().find_map(|line| {
            let (n, v) = line.split_once(": ")?;
            if n == name {
                v.trim().parse().ok()
            } else {
                None
            }
        })
    }

    /// Polls [`Envoy::stat`] until it is at least `min`; returns the value or
    /// panics after `timeout`.
    pub fn wait_stat(&self, name: &str, min: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.stat(name).unwrap_or(0);
            if value >= min {
                return value;
            }
            if Instant::now() > deadline {
                panic!("stat {name} = {value}, wanted >= {min} within {timeout:?}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Envoy's log so far (`--log-path`), followed by its stderr if any.
    pub fn log(&self) -> String {
        let mut log = std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default();
        let stderr = std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default();
        if !stderr.trim().is_empty() {
            log.push_str("\n--- stderr ---\n");
            log.push_str(&stderr);
        }
        log
    }

    /// The last `n` lines of [`Envoy::log`], without the start-up listing of
    /// compiled-in extensions (noise that would push the real error out).
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().filter(|line| !is_extension_listing(line)).collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("Envoy files kept for debugging in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Envoy logs every compiled-in extension at start-up as
/// `[...][info][main] [source/server/server.cc:NNN]   envoy.xyz: ...`.
fn is_extension_listing(line: &str) -> bool {
    line.contains("[source/server/server.cc:") && line.contains("]   ")
}

fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Scriptable upstream
// ---------------------------------------------------------------------------

/// How an [`Upstream`] answers. Built with [`Behaviour::named`] and the
/// builder methods; the default answer is `200` with the name as body.
///
/// Every response carries `x-upstream: NAME`. A request may override the
/// script for itself with `x-test-status: N` and/or `x-test-delay-ms: N`.
#[derive(Clone, Debug)]
pub struct Behaviour {
    pub name: String,
    pub status: u16,
    /// `None`: the body is the name.
    pub body: Option<Vec<u8>>,
    pub headers: Vec<(String, String)>,
    /// Waited before every answer.
    pub delay: Duration,
    /// The first N requests (attempts) wait this long instead.
    pub delay_first: Option<(usize, Duration)>,
    /// The first N requests (attempts) get this status.
    pub fail_first: Option<(usize, u16)>,
}

impl Behaviour {
    pub fn named(name: &str) -> Behaviour {
        Behaviour {
            name: name.to_string(),
            status: 200,
            body: None,
            headers: Vec::new(),
            delay: Duration::ZERO,
            delay_first: None,
            fail_first: None,
        }
    }
    /// Always answer with this status.
    pub fn status(mut self, status: u16) -> Behaviour {
        self.status = status;
        self
    }
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Behaviour {
        self.body = Some(body.into());
        self
    }
    /// An extra response header.
    pub fn header(mut self, name: &str, value: &str) -> Behaviour {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
    pub fn delay(mut self, delay: Duration) -> Behaviour {
        self.delay = delay;
        self
    }
    pub fn delay_first(mut self, n: usize, delay: Duration) -> Behaviour {
        self.delay_first = Some((n, delay));
        self
    }
    /// Answer the first `n` requests with `status`, later ones normally.
    pub fn fail_first(mut self, n: usize, status: u16) -> Behaviour {
        self.fail_first = Some((n, status));
        self
    }
}

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// 1-based arrival order at this upstream.
    pub attempt: usize,
    pub method: String,
    pub path: String,
    /// The `Host` header (HTTP/1.1 `:authority`).
    pub authority: String,
    /// Lowercase names, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Recorded {
    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

struct UpstreamShared {
    behaviour: Mutex<Behaviour>,
    requests: Mutex<Vec<Recorded>>,
    attempts: AtomicUsize,
    stop: AtomicBool,
}

/// A threaded HTTP/1.1 server on 127.0.0.1 (keep-alive, Content-Length and
/// chunked request bodies) that records what it receives and answers as
/// scripted. Stops accepting on drop.
pub struct Upstream {
    addr: SocketAddr,
    shared: Arc<UpstreamShared>,
}

impl Upstream {
    /// Starts an upstream on a free port.
    pub fn start(behaviour: Behaviour) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let addr = listener.local_addr().expect("upstream local_addr");
        let shared = Arc::new(UpstreamShared {
            behaviour: Mutex::new(behaviour),
            requests: Mutex::new(Vec::new()),
            attempts: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let accept_shared = Arc::clone(&shared);
        thread::spawn(move || {
            for conn in listener.incoming() {
                if accept_shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let conn_shared = Arc::clone(&accept_shared);
                thread::spawn(move || serve_connection(conn, &conn_shared));
            }
        });
        Upstream { addr, shared }
    }

    /// Shorthand for `Upstream::start(Behaviour::named(name))`.
    pub fn named(name: &str) -> Upstream {
        Upstream::start(Behaviour::named(name))
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    pub fn name(&self) -> String {
        self.shared.behaviour.lock().unwrap().name.clone()
    }

    /// Replaces the script (the attempt counter keeps counting).
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.shared.behaviour.lock().unwrap() = behaviour;
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Number of requests received so far (each retry is one attempt).
    pub fn attempts(&self) -> usize {
        self.shared.attempts.load(Ordering::SeqCst)
    }

    /// Forgets recorded requests and resets the attempt counter.
    pub fn reset(&self) {
        let mut requests = self.shared.requests.lock().unwrap();
        requests.clear();
        self.shared.attempts.store(0, Ordering::SeqCst);
    }

    /// Waits until at least `n` requests arrived; panics after `timeout`.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let deadline = Instant::now() + timeout;
        loop {
            let requests = self.requests();
            if requests.len() >= n {
                return requests;
            }
            if Instant::now() > deadline {
                panic!("upstream {}: {} requests, wanted {n} within {timeout:?}", self.name(), requests.len());
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn serve_connection(stream: TcpStream, shared: &UpstreamShared) {
    let _ = stream.set_nodelay(true);
    // Short read timeouts let idle keep-alive threads notice `stop`.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut reader = HttpReader::new(&stream, Some(&shared.stop));
    let mut writer = &stream;
    // Ends on EOF, a malformed request, a write error or `stop`.
    while let Ok(Some(request)) = read_request(&mut reader) {
        let attempt = shared.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        let behaviour = shared.behaviour.lock().unwrap().clone();
        let close = find_header(&request.headers, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let status_override = find_header(&request.headers, "x-test-status").and_then(|v| v.trim().parse::<u16>().ok());
        let delay_override = find_header(&request.headers, "x-test-delay-ms")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_millis);
        let is_head = request.method == "HEAD";
        shared.requests.lock().unwrap().push(Recorded {
            attempt,
            authority: find_header(&request.headers, "host").unwrap_or_default().to_string(),
            method: request.method,
            path: request.path,
            headers: request.headers,
            body: request.body,
            at: Instant::now(),
        });

        let delay = match (delay_override, behaviour.delay_first) {
            (Some(d), _) => d,
            (None, Some((n, d))) if attempt <= n => d,
            _ => behaviour.delay,
        };
        if !delay.is_zero() {
            thread::sleep(delay);
        }
        let status = match (status_override, behaviour.fail_first) {
            (Some(s), _) => s,
            (None, Some((n, s))) if attempt <= n => s,
            _ => behaviour.status,
        };
        let body = behaviour.body.clone().unwrap_or_else(|| behaviour.name.clone().into_bytes());
        let mut head = format!(
            "HTTP/1.1 {status} {}\r\nx-upstream: {}\r\ncontent-length: {}\r\n",
            reason(status),
            behaviour.name,
            body.len()
        );
        for (name, value) in &behaviour.headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        if close {
            head.push_str("connection: close\r\n");
        }
        head.push_str("\r\n");
        // One write: split writes + Nagle + delayed ACK cost 40 ms per request.
        let mut bytes = head.into_bytes();
        if !is_head {
            bytes.extend_from_slice(&body);
        }
        if writer.write_all(&bytes).is_err() || close {
            break;
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

// ---------------------------------------------------------------------------
// HTTP/1.1 wire helpers (shared by the upstream and the client)
// ---------------------------------------------------------------------------

struct HttpReader<'a> {
    stream: &'a TcpStream,
    buf: Vec<u8>,
    /// Server side: on read timeouts, keep waiting unless `stop` is set.
    /// Client side (`None`): a read timeout is an error.
    stop: Option<&'a AtomicBool>,
    deadline: Option<Instant>,
}

impl<'a> HttpReader<'a> {
    fn new(stream: &'a TcpStream, stop: Option<&'a AtomicBool>) -> HttpReader<'a> {
        HttpReader { stream, buf: Vec::new(), stop, deadline: None }
    }

    /// Reads more bytes into the buffer; Ok(0) at EOF.
    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some(deadline) = self.deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "HTTP timeout"));
                }
                self.stream.set_read_timeout(Some(left))?;
            }
            match (&*self.stream).read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => match self.stop {
                    Some(stop) if !stop.load(Ordering::SeqCst) => continue,
                    _ => return Err(io::Error::new(io::ErrorKind::TimedOut, "HTTP timeout")),
                },
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads up to and including `\r\n\r\n`. Ok(None) on EOF before any byte.
    fn read_head(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..pos + 4).collect();
                return Ok(Some(head));
            }
            if self.fill()? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF inside HTTP head"));
            }
        }
    }

    fn read_line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(pos) = find(&self.buf, b"\r\n") {
                let mut line: Vec<u8> = self.buf.drain(..pos + 2).collect();
                line.truncate(pos);
                return Ok(line);
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF in line"));
            }
        }
    }

    fn read_exact_n(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill()? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF in body"));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    fn read_to_end(&mut self) -> io::Result<Vec<u8>> {
        while self.fill()? > 0 {}
        Ok(std::mem::take(&mut self.buf))
    }

    fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line()?;
            let line = String::from_utf8_lossy(&line);
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("bad chunk size {line:?}")))?;
            if size == 0 {
                // Trailers (ignored) up to the empty line.
                while !self.read_line()?.is_empty() {}
                return Ok(body);
            }
            body.extend(self.read_exact_n(size)?);
            if !self.read_line()?.is_empty() {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "chunk without CRLF"));
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Splits a head into its first line and lowercase-named headers.
fn parse_head(head: &[u8]) -> io::Result<(String, Vec<(String, String)>)> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad header {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    Ok((first, headers))
}

struct ParsedRequest {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn read_request(reader: &mut HttpReader<'_>) -> io::Result<Option<ParsedRequest>> {
    let Some(head) = reader.read_head()? else {
        return Ok(None);
    };
    let (first, headers) = parse_head(&head)?;
    let mut parts = first.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    if find_header(&headers, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        (&*reader.stream).write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let chunked =
        find_header(&headers, "transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        reader.read_chunked()?
    } else if let Some(len) = find_header(&headers, "content-length") {
        let len = len.trim().parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad content-length"))?;
        reader.read_exact_n(len)?
    } else {
        Vec::new()
    };
    Ok(Some(ParsedRequest { method, path, headers, body }))
}

// ---------------------------------------------------------------------------
// HTTP/1.1 client
// ---------------------------------------------------------------------------

/// Where a request goes: a port on 127.0.0.1 (`u16`), `"host:port"` or
/// `"http://host:port[/...]"` (any path part is ignored).
pub trait Target {
    fn host_port(&self) -> String;
}

impl Target for u16 {
    fn host_port(&self) -> String {
        format!("127.0.0.1:{self}")
    }
}

impl Target for &str {
    fn host_port(&self) -> String {
        let rest = self.strip_prefix("http://").unwrap_or(self);
        rest.split('/').next().unwrap_or(rest).to_string()
    }
}

impl Target for String {
    fn host_port(&self) -> String {
        self.as_str().host_port()
    }
}

impl Target for &String {
    fn host_port(&self) -> String {
        self.as_str().host_port()
    }
}

/// A response as the client received it.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    /// Lowercase names, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// From sending the request to the last body byte.
    pub elapsed: Duration,
}

impl Response {
    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Default client timeout of [`http`].
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

/// One HTTP/1.1 request on a new connection; panics on I/O errors or after
/// [`HTTP_TIMEOUT`]. `Host` is added unless given in `headers`.
pub fn http(method: &str, target: impl Target, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let host_port = target.host_port();
    try_http(method, host_port.as_str(), path, headers, body, HTTP_TIMEOUT)
        .unwrap_or_else(|e| panic!("HTTP {method} http://{host_port}{path} failed: {e}"))
}

/// Like [`http`] with an explicit overall timeout, returning I/O errors
/// (`ErrorKind::TimedOut` on timeout) instead of panicking.
pub fn try_http(
    method: &str,
    target: impl Target,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<Response> {
    let mut conn = Conn::open(target, timeout)?;
    conn.request_inner(method, path, headers, body, timeout, true)
}

/// A keep-alive client connection, for many requests in a row.
pub struct Conn {
    stream: TcpStream,
    host_port: String,
    buf: Vec<u8>,
    sent_at: Instant,
}

impl Conn {
    pub fn open(target: impl Target, timeout: Duration) -> io::Result<Conn> {
        let host_port = target.host_port();
        let addr = host_port
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))?;
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, host_port, buf: Vec::new(), sent_at: Instant::now() })
    }

    /// Sends a request and reads the response on this connection.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> io::Result<Response> {
        self.request_inner(method, path, headers, body, timeout, false)
    }

    fn request_inner(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
        close: bool,
    ) -> io::Result<Response> {
        self.send_inner(method, path, headers, body, timeout, close)?;
        self.receive(method == "HEAD", timeout)
    }

    /// Sends a request without reading its answer (read it later with [`Conn::receive`]), so a
    /// test can order requests against each other: what is written here is in Envoy's socket
    /// before anything the test sends afterwards.
    pub fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> io::Result<()> {
        self.send_inner(method, path, headers, body, Duration::from_secs(10), false)
    }

    fn send_inner(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
        close: bool,
    ) -> io::Result<()> {
        self.sent_at = Instant::now();
        let mut head = format!("{method} {path} HTTP/1.1\r\n");
        let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
        if !has("host") {
            let _ = write!(head, "host: {}\r\n", self.host_port);
        }
        for (name, value) in headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        if !has("content-length")
            && !has("transfer-encoding")
            && (!body.is_empty() || method == "POST" || method == "PUT")
        {
            let _ = write!(head, "content-length: {}\r\n", body.len());
        }
        if close && !has("connection") {
            head.push_str("connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        self.stream.set_write_timeout(Some(timeout))?;
        self.stream.write_all(&bytes)
    }

    /// Reads the answer to the request sent last; `elapsed` counts from its sending.
    pub fn receive(&mut self, head_request: bool, timeout: Duration) -> io::Result<Response> {
        let mut reader = HttpReader::new(&self.stream, None);
        reader.buf = std::mem::take(&mut self.buf);
        reader.deadline = Some(Instant::now() + timeout);
        let result = read_response(&mut reader, head_request);
        self.buf = std::mem::take(&mut reader.buf);
        let (status, headers, body) = result?;
        Ok(Response { status, headers, body, elapsed: self.sent_at.elapsed() })
    }

    /// When the request sent last was written.
    pub fn sent_at(&self) -> Instant {
        self.sent_at
    }
}

type RawResponse = (u16, Vec<(String, String)>, Vec<u8>);

fn read_response(reader: &mut HttpReader<'_>, head_request: bool) -> io::Result<RawResponse> {
    loop {
        let head = reader
            .read_head()?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before response"))?;
        let (first, headers) = parse_head(&head)?;
        let status: u16 = first
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad status line {first:?}")))?;
        if (100..200).contains(&status) && status != 101 {
            continue; // interim response
        }
        let no_body = head_request || status == 204 || status == 304 || status < 200;
        let body = if no_body {
            Vec::new()
        } else if find_header(&headers, "transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            reader.read_chunked()?
        } else if let Some(len) = find_header(&headers, "content-length") {
            let len =
                len.trim().parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad content-length"))?;
            reader.read_exact_n(len)?
        } else {
            reader.read_to_end()?
        };
        return Ok((status, headers, body));
    }
}

// ---------------------------------------------------------------------------
// Broken peers (dead, black-holed and refusing upstreams or mirrors)
// ---------------------------------------------------------------------------

/// A TCP peer that accepts connections and reads them, but never answers: a hung server (a
/// "dead" mirror). Each connection stays open until its peer closes it or the test process ends.
pub struct HungPeer {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl HungPeer {
    pub fn start() -> HungPeer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind hung peer");
        let port = listener.local_addr().expect("hung peer local_addr").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                count.fetch_add(1, Ordering::SeqCst);
                thread::spawn(move || {
                    let mut conn = conn;
                    let mut buf = [0u8; 4096];
                    while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
                });
            }
        });
        HungPeer { port, accepted }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A port on 127.0.0.1 where a connection attempt is never answered, as behind a firewall that
/// drops packets (a "black-holed" peer): a listener that never accepts, whose accept queue is
/// filled first. Linux drops a SYN that finds the accept queue full, so later connects hang
/// until the client's own connect timeout. Held open while this value lives.
pub struct BlackHoledPort {
    port: u16,
    _listener: TcpListener,
    _queued: Vec<TcpStream>,
}

impl BlackHoledPort {
    pub fn start() -> BlackHoledPort {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind black-holed port");
        let addr = listener.local_addr().expect("black-holed local_addr");
        let mut queued = Vec::new();
        // std listens with a backlog of 128; the queue holds one more than that.
        while queued.len() < 4096 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(s) => queued.push(s),
                Err(_) => {
                    return BlackHoledPort { port: addr.port(), _listener: listener, _queued: queued };
                }
            }
        }
        panic!("the accept queue of {addr} never filled: connects are not dropped here");
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

// ---------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------

/// Acceptance bounds `(lo, hi)` for the number of successes `X` in `n`
/// independent trials with success probability `p`: a correct
/// implementation lands outside `[lo, hi]` with probability at most
/// `2·(1 − Φ(z))` (z = 5 ⇒ ≈ 5.7e-7, i.e. practically never flaky).
///
/// Computed from the *exact* binomial tails (not the normal approximation,
/// which is poor for small `n·p`): `lo` is the largest k with
/// `P(X < k) ≤ 1 − Φ(z)`, `hi` the smallest k with `P(X > k) ≤ 1 − Φ(z)`.
/// For `p = 0` or `p = 1` the bounds are exact (`(0, 0)` / `(n, n)`).
///
/// Example: `binomial_bounds(1000, 0.5, 5.0)` ≈ `(421, 579)`.
pub fn binomial_bounds(n: u64, p: f64, z: f64) -> (u64, u64) {
    assert!((0.0..=1.0).contains(&p), "p = {p} is not a probability");
    if p <= 0.0 {
        return (0, 0);
    }
    if p >= 1.0 {
        return (n, n);
    }
    let tail = normal_upper_tail(z);
    let pmf = binomial_pmf(n, p);
    let mut lo = 0u64;
    let mut below = 0.0; // P(X < k)
    for (k, mass) in pmf.iter().enumerate() {
        if below + mass > tail {
            lo = k as u64;
            break;
        }
        below += mass;
    }
    let mut hi = n;
    let mut above = 0.0; // P(X > k)
    for (k, mass) in pmf.iter().enumerate().rev() {
        if above + mass > tail {
            hi = k as u64;
            break;
        }
        above += mass;
    }
    (lo, hi)
}

/// Asserts `count` is within [`binomial_bounds`]`(n, p, 5)`.
pub fn assert_binomial(what: &str, count: u64, n: u64, p: f64) {
    let (lo, hi) = binomial_bounds(n, p, 5.0);
    assert!((lo..=hi).contains(&count), "{what}: {count} of {n} is outside [{lo}, {hi}] expected for p = {p}");
}

/// P(X = k) for k = 0..=n, computed in log space (no under/overflow).
fn binomial_pmf(n: u64, p: f64) -> Vec<f64> {
    let (lp, lq) = (p.ln(), (1.0 - p).ln());
    let mut log_choose = 0.0f64; // ln C(n, 0)
    let mut out = Vec::with_capacity(n as usize + 1);
    for k in 0..=n {
        if k > 0 {
            log_choose += ((n - k + 1) as f64).ln() - (k as f64).ln();
        }
        out.push((log_choose + k as f64 * lp + (n - k) as f64 * lq).exp());
    }
    out
}

/// 1 − Φ(z) for the standard normal, via `erfc` (relative error < 1.2e-7).
pub fn normal_upper_tail(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// Complementary error function (Numerical Recipes' Chebyshev fit).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

// ---------------------------------------------------------------------------
// The seed benchmark's configuration (tests/bench_e2e.rs, tests/bench_vm.rs)

/// Istio's cluster name for `host` (namespace `default`) and `subset`, port 80.
pub fn cluster(host: &str, subset: &str) -> String {
    format!("outbound|80|{subset}|{host}.default.svc.cluster.local")
}

/// The seed routing (examples/header-route.yaml's header match, then examples/weight-route.yaml's
/// 80/20 split) as one VirtualService — envoy/demo-config.json without its mirror.
pub fn seed_config() -> serde_json::Value {
    let d = |subset: &str| serde_json::json!({"host": "product-service", "subset": subset});
    serde_json::json!({"settings": {"namespace": "default", "retryPolicyOnRoute": true}, "resources": [
        {"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
         "metadata": {"name": "product-service", "namespace": "default"},
         "spec": {"hosts": ["product-service"], "http": [
             {"name": "debug-to-v2", "match": [{"headers": {"x-debug": {"exact": "true"}}}],
              "route": [{"destination": d("v2")}]},
             {"name": "canary-80-20",
              "route": [{"destination": d("v1"), "weight": 80}, {"destination": d("v2"), "weight": 20}]}]}},
        destination_rule("product-service", &["v1", "v2"])]})
}

pub fn destination_rule(host: &str, subsets: &[&str]) -> serde_json::Value {
    let subsets: Vec<serde_json::Value> =
        subsets.iter().map(|s| serde_json::json!({"name": s, "labels": {"version": s}})).collect();
    serde_json::json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
           "metadata": {"name": host, "namespace": "default"},
           "spec": {"host": host, "subsets": subsets}})
}

/// The middle value (the upper one of an even count).
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The lowest and the highest value.
pub fn range(v: &[f64]) -> (f64, f64) {
    (v.iter().copied().fold(f64::INFINITY, f64::min), v.iter().copied().fold(f64::NEG_INFINITY, f64::max))
}
