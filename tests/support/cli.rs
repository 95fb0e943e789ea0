//! Running the meshroute CLI from tests: only with the `cli` feature (which builds the binary
//! Cargo names in `CARGO_BIN_EXE_meshroute`).

use super::repo_root;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `meshroute ARGS` in the repository root.
pub fn meshroute(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshroute")).args(args).current_dir(repo_root()).output().expect("run meshroute")
}

/// stdout then stderr, for messages.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// `meshroute up ARGS --listen 127.0.0.1:L --admin 127.0.0.1:A` on ports picked afresh for each
/// attempt, retried while a picked port turns out to be taken by another process (Envoy could not
/// bind it, or another Envoy answers on the admin port): `up` records its ports in the state
/// directory before Envoy starts, so they cannot be left to Envoy to choose. Returns the last
/// output and the listener's port.
pub fn up_on_fresh_ports(args: &[&str]) -> (Output, u16) {
    let mut last = None;
    for _attempt in 0..5 {
        let (listen, admin) = (super::free_port(), super::free_port());
        let (l, a) = (format!("127.0.0.1:{listen}"), format!("127.0.0.1:{admin}"));
        let mut all = vec!["up"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--listen", &l, "--admin", &a]);
        let out = meshroute(&all);
        let t = text(&out);
        let taken = t.contains("ddress already in use") || t.contains("already answers on the admin address");
        if out.status.success() || !taken {
            return (out, listen);
        }
        last = Some((out, listen));
    }
    last.expect("five attempts")
}

/// `meshroute envoy -f FILE... --wasm WASM --listen 127.0.0.1:LISTEN --admin 127.0.0.1:0 EXTRA...`
/// into `dir/envoy.yaml`; fails the test when it fails, and returns the configuration.
pub fn meshroute_envoy(dir: &Path, files: &[&Path], wasm: &Path, listen: u16, extra: &[&str]) -> String {
    let out = dir.join("envoy.yaml");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshroute"));
    cmd.arg("envoy");
    for f in files {
        cmd.arg("-f").arg(f);
    }
    let o = cmd
        .arg("--wasm")
        .arg(wasm)
        .arg("-o")
        .arg(&out)
        .args(["--listen", &format!("127.0.0.1:{listen}"), "--admin", "127.0.0.1:0"])
        .args(extra)
        .output()
        .expect("run meshroute envoy");
    assert!(o.status.success(), "meshroute envoy failed:\n{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read_to_string(&out).expect("generated config")
}

/// An empty directory `meshroute-<tag>-<pid>` in the temp dir (emptied if a run left it).
pub fn fresh_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meshroute-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

/// Stops the Envoy `meshroute up --detach` started when the test ends, pass or fail. Made right
/// after `up`, from the id it wrote into the state directory (before a test removes it).
pub struct StopEnvoy(Option<String>);

impl StopEnvoy {
    pub fn new(state: &Path) -> StopEnvoy {
        StopEnvoy(std::fs::read_to_string(state.join("envoy.pid")).ok().map(|p| p.trim().to_string()))
    }
}

impl Drop for StopEnvoy {
    fn drop(&mut self) {
        if let Some(pid) = &self.0 {
            let _ = Command::new("kill").arg(pid).status();
        }
    }
}

/// reviews.internal as YAML: a ServiceEntry with one endpoint per `(version, port)`, a
/// DestinationRule with a subset per version (after `policy`, extra DestinationRule spec lines
/// indented by two spaces, or ""), and a VirtualService sending everything to subset `route`.
pub fn reviews_config(versions: &[(&str, u16)], route: &str, policy: &str) -> String {
    let endpoints: String = versions
        .iter()
        .map(|(v, p)| format!("  - {{address: 127.0.0.1, ports: {{http: {p}}}, labels: {{version: {v}}}}}\n"))
        .collect();
    let subsets: Vec<String> =
        versions.iter().map(|(v, _)| format!("{{name: {v}, labels: {{version: {v}}}}}")).collect();
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews.internal]
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints:
{endpoints}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: reviews.internal
{policy}  subsets: [{}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews.internal]
  http:
  - route:
    - {{destination: {{host: reviews.internal, subset: {route}}}}}
",
        subsets.join(", ")
    )
}
