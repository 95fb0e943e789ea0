//! The state directory: what `meshroute apply` has made of it and what Envoy reads.
//!
//! ```text
//! DIR/meshroute-state.json   marker: format and the proxy (listen, admin, wasm, credentials)
//! DIR/revisions/000001.json  one file per revision: number, time, hash, message, sources,
//!                            summary, result, and the plugin configuration itself
//! DIR/current                the number of the revision Envoy runs (the last good one)
//! DIR/live/                  the xDS files Envoy watches (lds.json, cds.json, rds-*.json, ecds.json)
//! DIR/bootstrap.json         what `meshroute up` starts Envoy with
//! DIR/lock                   held while a command changes the directory
//! ```
//!
//! Every file is replaced by write-then-rename, so a reader (Envoy, another command) sees the
//! old or the new content, never half of it. A revision whose hash does not match its content
//! is reported as corrupt, not used.

use super::hash::content_hash;
use crate::output::write_atomic;
use meshroute::envoy::files::File;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub const MARKER: &str = "meshroute-state.json";
const FORMAT: &str = "meshroute-state/1";

/// The proxy the directory configures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Proxy {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    /// Absolute path of the meshroute filter (.wasm).
    pub wasm: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_dir: Option<PathBuf>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Marker {
    format: String,
    proxy: Proxy,
}

/// One revision as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Revision {
    pub number: u64,
    /// Seconds since the Unix epoch.
    pub time: u64,
    /// `hash::content_hash` of `config`.
    pub hash: String,
    pub message: String,
    pub sources: Vec<String>,
    /// One line: what changed against the revision live before it.
    pub summary: String,
    /// `applied`, `rejected: why`, or `pending` while an apply runs.
    pub result: String,
    /// The plugin configuration ({"resources", "settings"}) without the revision stamp.
    pub config: Value,
}

impl Revision {
    pub fn stamp(&self) -> meshroute::config::Revision {
        meshroute::config::Revision { number: self.number, hash: self.hash.clone() }
    }
}

#[derive(Debug)]
pub enum StateError {
    /// The directory exists and holds something else.
    NotOurs {
        dir: PathBuf,
        detail: String,
    },
    /// The directory has never been set up (`meshroute up` or a first `apply --wasm`).
    Uninitialised {
        dir: PathBuf,
    },
    /// A file of ours does not parse or does not match its hash.
    Corrupt {
        path: PathBuf,
        detail: String,
    },
    NoRevision {
        dir: PathBuf,
        number: u64,
    },
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotOurs { dir, detail } => write!(
                f,
                "{} is not a meshroute state directory ({detail}); choose an empty or new directory",
                dir.display()
            ),
            Self::Uninitialised { dir } => write!(
                f,
                "{} is not set up yet: start Envoy on it with `meshroute up --state {} --wasm FILE`",
                dir.display(),
                dir.display()
            ),
            Self::Corrupt { path, detail } => {
                write!(f, "{}: corrupt or edited by hand ({detail}); it is not used", path.display())
            }
            Self::NoRevision { dir, number } => write!(f, "{}: there is no revision {number}", dir.display()),
            Self::Io { path, error } => write!(f, "{}: {error}", path.display()),
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |error| StateError::Io { path: path.to_path_buf(), error }
}

pub struct State {
    /// Absolute.
    pub dir: PathBuf,
    pub proxy: Proxy,
}

impl State {
    /// Opens a directory set up before.
    pub fn open(dir: &Path) -> Result<State, StateError> {
        let dir = absolute(dir);
        let marker = dir.join(MARKER);
        if !marker.exists() {
            return Err(if is_empty_or_missing(&dir) {
                StateError::Uninitialised { dir }
            } else {
                StateError::NotOurs { dir, detail: format!("no {MARKER}") }
            });
        }
        let text = std::fs::read_to_string(&marker).map_err(io(&marker))?;
        let m: Marker = serde_json::from_str(&text)
            .map_err(|e| StateError::Corrupt { path: marker.clone(), detail: e.to_string() })?;
        if m.format != FORMAT {
            return Err(StateError::NotOurs {
                dir,
                detail: format!("{MARKER} has format {:?}, not {FORMAT:?}", m.format),
            });
        }
        Ok(State { dir, proxy: m.proxy })
    }

    /// Opens the directory, or sets up a new or empty one for `proxy`. An existing state keeps
    /// its proxy unless `proxy` differs, in which case the new one is recorded (the next apply
    /// writes listeners for it).
    pub fn open_or_init(dir: &Path, proxy: Option<Proxy>) -> Result<State, StateError> {
        let abs = absolute(dir);
        match (State::open(&abs), proxy) {
            (Ok(mut s), Some(p)) if s.proxy != p => {
                s.proxy = p;
                s.write_marker()?;
                Ok(s)
            }
            (Ok(s), _) => Ok(s),
            (Err(StateError::Uninitialised { .. }), Some(proxy)) => {
                std::fs::create_dir_all(abs.join("revisions")).map_err(io(&abs))?;
                std::fs::create_dir_all(abs.join("live")).map_err(io(&abs))?;
                let s = State { dir: abs, proxy };
                s.write_marker()?;
                Ok(s)
            }
            (Err(e), _) => Err(e),
        }
    }

    fn write_marker(&self) -> Result<(), StateError> {
        let m = Marker { format: FORMAT.into(), proxy: self.proxy.clone() };
        self.write_json(&self.dir.join(MARKER), &serde_json::to_value(&m).unwrap_or_default())
    }

    pub fn live_dir(&self) -> PathBuf {
        self.dir.join("live")
    }

    pub fn bootstrap_path(&self) -> PathBuf {
        self.dir.join("bootstrap.json")
    }

    fn revision_path(&self, n: u64) -> PathBuf {
        self.dir.join("revisions").join(format!("{n:06}.json"))
    }

    /// Every revision, oldest first; the first corrupt one is an error.
    pub fn revisions(&self) -> Result<Vec<Revision>, StateError> {
        let dir = self.dir.join("revisions");
        let mut numbers = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let e = e.map_err(io(&dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(n) = name.strip_suffix(".json").and_then(|n| n.parse::<u64>().ok()) {
                numbers.push(n);
            }
        }
        numbers.sort_unstable();
        numbers.into_iter().map(|n| self.revision(n)).collect()
    }

    pub fn last_number(&self) -> Result<u64, StateError> {
        Ok(self.revisions()?.last().map_or(0, |r| r.number))
    }

    pub fn revision(&self, n: u64) -> Result<Revision, StateError> {
        let path = self.revision_path(n);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NoRevision { dir: self.dir.clone(), number: n })
            }
            Err(e) => return Err(StateError::Io { path, error: e }),
        };
        let corrupt = |detail: String| StateError::Corrupt { path: path.clone(), detail };
        let r: Revision = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
        if r.number != n {
            return Err(corrupt(format!("it says it is revision {}", r.number)));
        }
        let actual = content_hash(&r.config);
        if actual != r.hash {
            return Err(corrupt(format!("content hash {actual}, recorded {}", r.hash)));
        }
        Ok(r)
    }

    pub fn write_revision(&self, r: &Revision) -> Result<(), StateError> {
        self.write_json(&self.revision_path(r.number), &serde_json::to_value(r).unwrap_or_default())
    }

    /// The revision Envoy runs, if any was applied.
    pub fn current(&self) -> Result<Option<Revision>, StateError> {
        let path = self.dir.join("current");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StateError::Io { path, error: e }),
        };
        let n: u64 = text.trim().parse().map_err(|_| StateError::Corrupt {
            path: path.clone(),
            detail: format!("{:?} is not a number", text.trim()),
        })?;
        self.revision(n).map(Some)
    }

    pub fn set_current(&self, n: u64) -> Result<(), StateError> {
        let path = self.dir.join("current");
        write_atomic(&path, format!("{n}\n").as_bytes()).map_err(io(&path))
    }

    /// Replaces one file Envoy watches (write, then rename inside the watched directory).
    pub fn write_live(&self, f: &File) -> Result<(), StateError> {
        self.write_json(&self.live_dir().join(&f.name), &f.content)
    }

    pub fn read_live(&self, name: &str) -> Option<Value> {
        let text = std::fs::read_to_string(self.live_dir().join(name)).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn write_json(&self, path: &Path, v: &Value) -> Result<(), StateError> {
        let text = serde_json::to_string_pretty(v).unwrap_or_default() + "\n";
        write_atomic(path, text.as_bytes()).map_err(io(path))
    }
}

fn absolute(dir: &Path) -> PathBuf {
    if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir().map(|c| c.join(dir)).unwrap_or_else(|_| dir.to_path_buf())
    }
}

fn is_empty_or_missing(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Ok(mut it) => it.next().is_none(),
        Err(_) => !dir.exists(),
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `2026-12-01T10:00:00Z` (UTC) from Unix seconds.
pub fn format_time(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("meshroute-state-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn proxy() -> Proxy {
        Proxy {
            listen: "127.0.0.1:1".parse().unwrap(),
            admin: "127.0.0.1:2".parse().unwrap(),
            wasm: "/m.wasm".into(),
            credentials_dir: None,
        }
    }

    #[test]
    fn times_are_utc_calendar_dates() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(1_796_119_627), "2026-12-01T10:07:07Z");
    }

    #[test]
    fn a_directory_with_other_files_is_not_ours_and_an_edited_revision_is_corrupt() {
        let d = tmp("notours");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("notes.txt"), "x").unwrap();
        assert!(matches!(State::open_or_init(&d, Some(proxy())), Err(StateError::NotOurs { .. })));

        let d = tmp("corrupt");
        let s = State::open_or_init(&d, Some(proxy())).unwrap();
        let config = json!({"resources": [], "settings": {}});
        let r = Revision {
            number: 1,
            time: 0,
            hash: content_hash(&config),
            message: String::new(),
            sources: vec![],
            summary: String::new(),
            result: "applied".into(),
            config,
        };
        s.write_revision(&r).unwrap();
        assert_eq!(State::open(&d).unwrap().revisions().unwrap(), vec![r]);
        let p = d.join("revisions/000001.json");
        let edited =
            std::fs::read_to_string(&p).unwrap().replace("\"settings\": {}", "\"settings\": {\"namespace\": \"x\"}");
        std::fs::write(&p, edited).unwrap();
        let e = s.revision(1).unwrap_err();
        assert!(matches!(e, StateError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("000001.json"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
