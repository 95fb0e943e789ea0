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
