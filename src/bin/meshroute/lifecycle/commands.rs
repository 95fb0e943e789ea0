//! `apply`, `history`, `rollback` and `diff`: argument parsing and output around `apply`,
//! `state` and `diff`.

use super::apply::{apply, ApplyOptions, Outcome, Proposal};
use super::diff;
use super::state::{format_time, Proxy, Revision, State};
use crate::{InputArgs, Loaded};
use clap::Args;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// The proxy a state directory configures; recorded on first use, changed when given again.
#[derive(Args, Debug, Clone, Default)]
pub struct ProxyArgs {
    /// The meshroute filter (.wasm) Envoy loads (required the first time).
    #[arg(long, value_name = "FILE")]
    pub wasm: Option<PathBuf>,
    /// Address of the sidecar's outbound HTTP listener [first time: 127.0.0.1:15001].
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Option<SocketAddr>,
    /// Address of Envoy's admin interface [first time: 127.0.0.1:15000].
    #[arg(long, value_name = "IP:PORT")]
    pub admin: Option<SocketAddr>,
    /// Directory holding NAME.crt / NAME.key files for `credentialName: NAME`.
    #[arg(long, value_name = "DIR")]
    pub credentials_dir: Option<PathBuf>,
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Opens the state directory, setting it up (or updating its proxy) from the arguments.
pub fn open_state(dir: &Path, p: &ProxyArgs) -> Result<State, String> {
    let existing = super::state::State::open(dir).ok().map(|s| s.proxy);
    let proxy = match (&existing, &p.wasm) {
        (None, None) => None,
        (None, Some(w)) => Some(Proxy {
            listen: p.listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 15001))),
            admin: p.admin.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 15000))),
            wasm: canonical(w),
            credentials_dir: p.credentials_dir.as_deref().map(canonical),
        }),
        (Some(e), _) => Some(Proxy {
            listen: p.listen.unwrap_or(e.listen),
            admin: p.admin.unwrap_or(e.admin),
            wasm: p.wasm.as_deref().map(canonical).unwrap_or_else(|| e.wasm.clone()),
            credentials_dir: p.credentials_dir.as_deref().map(canonical).or_else(|| e.credentials_dir.clone()),
        }),
    };
    State::open_or_init(dir, proxy).map_err(|e| e.to_string())
}

/// Validate, compile and make the result live on the Envoy `meshroute up` started on the state
/// directory, as a new revision; wait until Envoy has taken it.
#[derive(Args)]
#[command(after_help = "Steps: validate → compile → generate Envoy resources → write them into DIR/live/ (each file
written under a temporary name and renamed) → wait for Envoy's admin stats to confirm (LDS/CDS/RDS/ECDS
version_text, update_rejected, the filter's meshroute.config.revision gauge). When Envoy refuses the
revision, the last good one is written back and confirmed. A configuration equal to the live revision
makes no new revision.

Exit codes: 0 applied (or nothing changed), 1 configuration errors (nothing written), 2 unusable input,
state directory, lock or Envoy not reachable (nothing written), 3 Envoy rejected the revision (the last
good one is live again).

Examples:
  meshroute up --state /var/lib/meshroute --wasm meshroute.wasm --detach
  meshroute apply -f k8s/traffic/ --state /var/lib/meshroute -m 'reviews canary 10%'")]
pub struct ApplyArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// The state directory (see `meshroute up`).
    #[arg(long, value_name = "DIR")]
    pub state: PathBuf,
    /// Why: shown by `meshroute history`.
    #[arg(short = 'm', long = "message", value_name = "TEXT", default_value = "")]
    pub message: String,
    /// Seconds to wait for Envoy to confirm each step.
    #[arg(long, value_name = "SECONDS", default_value_t = 15)]
    pub timeout: u64,
    #[command(flatten)]
    pub proxy: ProxyArgs,
}

pub fn run_apply(args: &ApplyArgs) -> ExitCode {
    let loaded = match Loaded::read_generated(&args.input) {
        Ok(l) => l,
        Err(code) => return code,
    };
    if let Err(code) = loaded.require_table() {
        return code;
    }
    let state = match open_state(&args.state, &args.proxy) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let proposal = Proposal {
        config: loaded.inputs.plugin_config(args.input.gateway.as_deref()),
        sources: args.input.files.clone(),
        message: args.message.clone(),
    };
    let opts = ApplyOptions { timeout: Duration::from_secs(args.timeout), ..ApplyOptions::default() };
    report(apply(&state, proposal, &opts))
}

/// Prints an apply's outcome and turns it into the exit status.
pub fn report(r: Result<Outcome, super::apply::ApplyError>) -> ExitCode {
    match r {
        Ok(Outcome::Unchanged(rev)) => {
            eprintln!("meshroute: nothing changed; revision {} ({}) stays live", rev.number, rev.hash);
            ExitCode::SUCCESS
        }
        Ok(Outcome::Applied { revision, notes }) => {
            for n in notes.iter() {
                eprintln!("{n}");
            }
            eprintln!(
                "meshroute: revision {} ({}) {}: {}",
                revision.number, revision.hash, revision.result, revision.summary
            );
            ExitCode::SUCCESS
        }
        Ok(Outcome::Rejected { revision, reason, restored }) => {
            eprintln!("meshroute: revision {} rejected: {reason}", revision.number);
            if restored == 0 {
                eprintln!("meshroute: no earlier revision; the empty configuration is live again");
            } else {
                eprintln!("meshroute: revision {restored} is live again");
            }
            ExitCode::from(3)
        }
        Err(super::apply::ApplyError::Invalid(d)) => {
            for x in d.iter() {
                eprintln!("{x}");
            }
            eprintln!("meshroute: the configuration has errors; nothing was applied");
            ExitCode::from(1)
        }
        Err(e) => fail(&e.to_string()),
    }
}

fn fail(e: &str) -> ExitCode {
    eprintln!("meshroute: {e}");
    ExitCode::from(2)
}

/// List the revisions of a state directory: number, time, content hash, result, message,
/// source files and what changed. `*` marks the revision Envoy runs.
#[derive(Args)]
pub struct HistoryArgs {
    #[arg(long, value_name = "DIR")]
    pub state: PathBuf,
}

pub fn run_history(args: &HistoryArgs) -> ExitCode {
    let state = match State::open(&args.state) {
        Ok(s) => s,
        Err(e) => return fail(&e.to_string()),
    };
    let (revs, current) = match (state.revisions(), state.current()) {
        (Ok(r), Ok(c)) => (r, c.map(|c| c.number)),
        (Err(e), _) | (_, Err(e)) => return fail(&e.to_string()),
    };
    println!("   REV  TIME                  HASH              RESULT    SOURCES / MESSAGE / CHANGE");
    for r in &revs {
        let mark = if Some(r.number) == current { '*' } else { ' ' };
        let result = r.result.split(':').next().unwrap_or("");
        println!(
            "{mark}{:>5}  {}  {}  {result:<8}  {}{}",
            r.number,
            format_time(r.time),
            r.hash,
            r.sources.join(" "),
            if r.message.is_empty() { String::new() } else { format!(" \"{}\"", r.message) }
        );
        println!("{:>30}{}", "", r.summary);
        if let Some((_, why)) = r.result.split_once(": ") {
            println!("{:>30}why: {why}", "");
        }
    }
    ExitCode::SUCCESS
}

/// Re-apply an earlier revision (default: the last applied one before the live one) as a new
/// revision, like `kubectl rollout undo`.
#[derive(Args)]
#[command(after_help = "Exit codes as for apply.")]
pub struct RollbackArgs {
    /// The revision to go back to.
    pub revision: Option<u64>,
    #[arg(long, value_name = "DIR")]
    pub state: PathBuf,
    #[arg(short = 'm', long = "message", value_name = "TEXT")]
    pub message: Option<String>,
    #[arg(long, value_name = "SECONDS", default_value_t = 15)]
    pub timeout: u64,
}

/// The revision `rollback` goes back to by default: the newest applied one older than the live.
pub fn previous(state: &State) -> Result<Revision, String> {
    let current = state.current().map_err(|e| e.to_string())?.map_or(0, |c| c.number);
    let revs = state.revisions().map_err(|e| e.to_string())?;
    revs.into_iter()
        .rev()
        .find(|r| r.number < current && r.result == "applied")
        .ok_or_else(|| format!("no applied revision before the live one ({current}) to roll back to"))
}

pub fn run_rollback(args: &RollbackArgs) -> ExitCode {
    let state = match State::open(&args.state) {
        Ok(s) => s,
        Err(e) => return fail(&e.to_string()),
    };
    let target = match args.revision {
        Some(n) => state.revision(n).map_err(|e| e.to_string()),
        None => previous(&state),
    };
    let target = match target {
        Ok(t) => t,
        Err(e) => return fail(&e),
    };
    let message = match &args.message {
        Some(m) => format!("rollback to {}: {m}", target.number),
        None => format!("rollback to {}", target.number),
    };
    let proposal = Proposal { config: target.config.clone(), sources: target.sources.clone(), message };
    let opts = ApplyOptions { timeout: Duration::from_secs(args.timeout), ..ApplyOptions::default() };
    report(apply(&state, proposal, &opts))
}

/// Compare resources with a revision, the live revision, or other files: resources added,
/// removed and changed (field by field), each rule's traffic share before → after, rules added,
/// removed or reordered.
#[derive(Args)]
#[command(after_help = "Exit codes: 0 no difference, 1 differences, 2 error (usable in CI before merging).

Examples:
  meshroute diff -f examples/canary-50.yaml --from examples/canary-10.yaml
  meshroute diff -f k8s/traffic/ --state /var/lib/meshroute            # against the live revision
  meshroute diff -f k8s/traffic/ --state /var/lib/meshroute --against 3")]
pub struct DiffArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// The state directory whose live revision (or --against REV) is the old side.
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// A revision of --state to compare with.
    #[arg(long, value_name = "REV", requires = "state")]
    pub against: Option<u64>,
    /// Files that are the old side (instead of a state directory).
    #[arg(long = "from", value_name = "PATH", num_args = 1.., conflicts_with = "state")]
    pub from: Vec<String>,
}

pub fn run_diff(args: &DiffArgs) -> ExitCode {
    let loaded = match Loaded::read(&args.input, false) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let Ok(new_table) = loaded.require_table() else { return ExitCode::from(2) };
    let new = loaded.inputs.plugin_config(args.input.gateway.as_deref());
    let old: Option<Value> = if !args.from.is_empty() {
        let from = InputArgs { files: args.from.clone(), ..args.input.clone() };
        match Loaded::read(&from, false) {
            Ok(l) => Some(l.inputs.plugin_config(args.input.gateway.as_deref())),
            Err(_) => return ExitCode::from(2),
        }
    } else if let Some(dir) = &args.state {
        let state = match State::open(dir) {
            Ok(s) => s,
            Err(e) => return fail(&e.to_string()),
        };
        let rev = match args.against {
            Some(n) => state.revision(n).map(Some),
            None => state.current(),
        };
        match rev {
            Ok(r) => r.map(|r| r.config),
            Err(e) => return fail(&e.to_string()),
        }
    } else {
        return fail("diff needs the old side: --state DIR [--against REV] or --from PATH...");
    };
    let old_table = old.as_ref().and_then(|o| {
        let (b, d) = meshroute::load_value(o.clone());
        meshroute::compile(&b, d).table
    });
    let r = diff::report(old.as_ref(), &new, old_table.as_ref(), new_table);
    if r.is_empty() {
        eprintln!("meshroute: no difference");
        ExitCode::SUCCESS
    } else {
        print!("{r}");
        ExitCode::from(1)
    }
}
