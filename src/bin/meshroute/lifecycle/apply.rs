//! Making a configuration live as a new revision and confirming that Envoy took it.
//!
//! Order (make before break, as istiod pushes CDS before the routes that need it): the clusters
//! of the old and the new revision together (CDS), then the route configurations (RDS), the
//! filter (ECDS) and the listeners (LDS), then the new clusters alone. After each step `apply`
//! waits for Envoy's admin stats: the subscription's `version_text` shows the new version, or
//! its `update_rejected` grows (Envoy refused it), and the filter's revision gauge shows the new
//! number. A refusal or no confirmation within the timeout puts the last good revision back the
//! same way.

use super::admin::{Admin, AdminError, Stats};
use super::diff;
use super::hash::content_hash;
use super::lock::{Lock, LockError};
use super::state::{now, Revision, State, StateError};
use meshroute::envoy::files::{self, File, Files, Subscription};
use meshroute::envoy::{self, InvalidEnvoyConfig, Options};
use meshroute::{metrics, Diagnostics};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

pub struct ApplyOptions {
    /// Wait for Envoy (and restore the last good revision when it refuses). Without it the files
    /// are only written (Envoy not started yet).
    pub wait: bool,
    pub timeout: Duration,
    pub lock_wait: Duration,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions { wait: true, timeout: Duration::from_secs(15), lock_wait: Duration::from_secs(30) }
    }
}

#[derive(Debug)]
pub enum Outcome {
    /// The configuration equals the live revision: no new revision.
    Unchanged(Revision),
    /// Envoy runs the new revision (or, without waiting, its files are written).
    Applied { revision: Revision, notes: Diagnostics },
    /// Envoy refused the revision; `restored` is the revision live again (0: none before).
    Rejected { revision: Revision, reason: String, restored: u64 },
}

#[derive(Debug)]
pub enum ApplyError {
    State(StateError),
    Lock(LockError),
    /// Envoy not running or not Envoy: nothing was written.
    Admin(AdminError),
    /// The configuration has errors (a stored revision that no longer compiles).
    Invalid(Box<Diagnostics>),
    Envoy(InvalidEnvoyConfig),
    /// Restoring the last good revision failed as well: the live files may be neither.
    RestoreFailed {
        revision: u64,
        reason: String,
        restore: String,
    },
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::State(e) => e.fmt(f),
            Self::Lock(e) => e.fmt(f),
            Self::Admin(e) => write!(f, "{e}; nothing was applied (start Envoy with `meshroute up --state DIR`)"),
            Self::Invalid(d) => write!(f, "the configuration has errors:\n{d}"),
            Self::Envoy(e) => e.fmt(f),
            Self::RestoreFailed { revision, reason, restore } => write!(
                f,
                "revision {revision} was refused ({reason}) and restoring the last good revision failed too ({restore})"
            ),
        }
    }
}

impl From<StateError> for ApplyError {
    fn from(e: StateError) -> Self {
        Self::State(e)
    }
}

impl From<AdminError> for ApplyError {
    fn from(e: AdminError) -> Self {
        Self::Admin(e)
    }
}

/// What a new revision will be, before anything is written.
pub struct Proposal {
    pub config: Value,
    pub sources: Vec<String>,
    pub message: String,
}

/// Applies `proposal` (a validated plugin configuration) to the state directory's Envoy.
pub fn apply(state: &State, proposal: Proposal, opts: &ApplyOptions) -> Result<Outcome, ApplyError> {
    let _lock = Lock::acquire(&state.dir, opts.lock_wait).map_err(ApplyError::Lock)?;
    let current = state.current()?;
    let hash = content_hash(&proposal.config);
    if let Some(c) = current.as_ref().filter(|c| c.hash == hash) {
        return Ok(Outcome::Unchanged(c.clone()));
    }
    let number = state.last_number()? + 1;
    let summary = diff::summary(current.as_ref().map(|c| &c.config), &proposal.config);
    let mut revision = Revision {
        number,
        time: now(),
        hash,
        message: proposal.message,
        sources: proposal.sources,
        summary,
        result: "pending".into(),
        config: proposal.config,
    };
    let (files, notes) = render(state, &revision.config, Some(&revision))?;
    let admin = Admin::new(state.proxy.admin);
    // Envoy must answer before anything is written: an apply never leaves unconfirmed files.
    let before = if opts.wait { Some(admin.stats()?) } else { None };
    state.write_revision(&revision)?;
    let pushed = match &before {
        Some(before) => push(state, &admin, &files, Some(before), opts.timeout, number),
        None => push(state, &admin, &files, None, opts.timeout, number),
    };
    match pushed {
        Ok(()) => {
            revision.result = if opts.wait { "applied".into() } else { "written (Envoy not confirmed)".into() };
            state.write_revision(&revision)?;
            state.set_current(number)?;
            Ok(Outcome::Applied { revision, notes })
        }
        Err(reason) => {
            revision.result = format!("rejected: {reason}");
            state.write_revision(&revision)?;
            let restored = current.as_ref().map_or(0, |c| c.number);
            let (old, _) =
                render(state, &current.as_ref().map_or_else(empty_config, |c| c.config.clone()), current.as_ref())?;
            let after = admin.stats()?;
            if let Err(restore) = push(state, &admin, &old, Some(&after), opts.timeout, restored) {
                return Err(ApplyError::RestoreFailed { revision: number, reason, restore });
            }
            Ok(Outcome::Rejected { revision, reason, restored })
        }
    }
}

/// The configuration of a proxy without any revision: no resources, default settings.
pub fn empty_config() -> Value {
    json!({"resources": [], "settings": {}})
}

/// The files of a configuration, stamped with its revision (none for the empty baseline).
pub fn render(state: &State, config: &Value, revision: Option<&Revision>) -> Result<(Files, Diagnostics), ApplyError> {
    let mut stamped = config.clone();
    let version = match revision {
        Some(r) => {
            if let Some(settings) = stamped.get_mut("settings").and_then(Value::as_object_mut) {
                settings.insert("revision".into(), json!(r.stamp()));
            } else if let Some(obj) = stamped.as_object_mut() {
                obj.insert("settings".into(), json!({"revision": r.stamp()}));
            }
            r.stamp().to_string()
        }
        None => "0-empty".into(),
    };
    let (bundle, diags) = meshroute::load_value(stamped.clone());
    let compiled = meshroute::compile(&bundle, diags);
    let table = match compiled.table {
        Some(t) if !compiled.diagnostics.has_errors() => t,
        _ => return Err(ApplyError::Invalid(Box::new(compiled.diagnostics))),
    };
    let p = &state.proxy;
    let opts =
        Options { wasm: &p.wasm, listen: p.listen, admin: p.admin, credentials_dir: p.credentials_dir.as_deref() };
    let r = envoy::resources(&bundle, &table.clusters, &stamped, &opts).map_err(ApplyError::Envoy)?;
    let notes = r.notes.clone();
    Ok((files::files(&r, &state.live_dir(), &version), notes))
}

/// Writes the files in make-before-break order, confirming each step when `before` (Envoy's
/// stats before the first write) is given. The error says what Envoy refused.
fn push(
    state: &State,
    admin: &Admin,
    files: &Files,
    before: Option<&Stats>,
    timeout: Duration,
    number: u64,
) -> Result<(), String> {
    let version = files.cds.content["version_info"].as_str().unwrap_or_default().to_string();
    let w = |f: &File| state.write_live(f).map_err(|e| e.to_string());
    let wait = |subs: &[(Subscription, String)], revision: Option<u64>| match before {
        Some(b) => wait_for(admin, b, subs, revision, timeout),
        None => Ok(()),
    };
    // 1. Old and new clusters together, so no route or filter decision names a missing one.
    let union_version = format!("{version}-add");
    let union = files::cds(&union_version, &union(state.read_live(files::CDS).as_ref(), &files.cds.content));
    w(&union)?;
    wait(&[(Subscription::Cds, union_version)], None)?;
    // 2. Routes, the filter, listeners.
    let mut subs = Vec::new();
    let mut with_filter = false;
    for (f, sub) in &files.rest {
        w(f)?;
        with_filter |= *sub == Subscription::Ecds;
        subs.push((sub.clone(), version.clone()));
    }
    wait(&subs, with_filter.then_some(number))?;
    // 3. Only the new clusters.
    w(&files.cds)?;
    wait(&[(Subscription::Cds, version)], None)
}

/// Clusters of `old` (a CDS file) that `new` lacks, followed by all of `new`'s.
fn union(old: Option<&Value>, new: &Value) -> Vec<Value> {
    let new_list = new["resources"].as_array().cloned().unwrap_or_default();
    let names: Vec<&Value> = new_list.iter().map(|c| &c["name"]).collect();
    let mut out: Vec<Value> = old
        .and_then(|o| o["resources"].as_array())
        .map(|a| a.iter().filter(|c| !names.contains(&&c["name"])).cloned().collect())
        .unwrap_or_default();
    out.extend(new_list.iter().cloned());
    out
}

/// Polls the admin stats until every subscription shows its version (and the filter's revision
/// gauge `revision`), or one of them refuses.
fn wait_for(
    admin: &Admin,
    before: &Stats,
    subs: &[(Subscription, String)],
    revision: Option<u64>,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let rejected_stat = metrics::envoy_stat(metrics::CONFIG_REJECTED);
    let gauge = metrics::envoy_stat(metrics::CONFIG_REVISION);
    loop {
        let now = admin.stats().map_err(|e| e.to_string())?;
        let mut pending = Vec::new();
        for (sub, version) in subs {
            let p = sub.stats_prefix();
            let rejected = format!("{p}.update_rejected");
            if now.get(&rejected) > before.get(&rejected) {
                let filter = if now.get(&rejected_stat) > before.get(&rejected_stat) {
                    " (the meshroute filter refused its configuration: see Envoy's log)"
                } else {
                    ""
                };
                return Err(format!(
                    "Envoy rejected it: {rejected} {} → {}{filter}",
                    before.get(&rejected),
                    now.get(&rejected)
                ));
            }
            let have = now.text(&format!("{p}.version_text")).unwrap_or("");
            if have != version {
                pending.push(format!("{p}.version_text is {have:?}, want {version:?}"));
            }
        }
        if let Some(n) = revision {
            if now.get(&gauge) != n {
                pending.push(format!("{gauge} is {}, want {n}", now.get(&gauge)));
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "Envoy at {} did not confirm within {:?}: {} (does it run with the state directory's bootstrap.json?)",
                admin.addr,
                timeout,
                pending.join("; ")
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
