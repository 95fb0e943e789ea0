//! `meshroute up`: write the bootstrap that points Envoy at the state directory and start Envoy
//! with it (then apply `-f` resources, if given, as the first revision).

use super::admin::Admin;
use super::apply::{apply, empty_config, render, ApplyOptions, Proposal};
use super::commands::{open_state, report, ProxyArgs};
use super::discover::find_envoy;
use super::state::State;
use crate::{InputArgs, Loaded};
use clap::Args;
use meshroute::envoy::bootstrap::dynamic_bootstrap;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// Start Envoy on a state directory: listeners and clusters come from DIR/live/ (file-based
/// LDS/CDS/RDS/ECDS), so `meshroute apply` changes them without a restart.
#[derive(Args)]
#[command(
    after_help = "Envoy is found with --envoy, then $ENVOY_BIN, then .tools/envoy/envoy/_bin/envoy in this directory
or above (`make tools`), then PATH. Without --detach, `up` stays in the foreground until Envoy exits
(its log: DIR/envoy.log). With --detach it returns once Envoy is ready; DIR/envoy.pid holds its
process id (stop it with `kill $(cat DIR/envoy.pid)`).

Examples:
  meshroute up --state ./mr --wasm meshroute.wasm -f k8s/traffic/ --detach
  meshroute apply --state ./mr -f k8s/traffic/ -m 'canary 10%'"
)]
pub struct UpArgs {
    #[arg(long, value_name = "DIR")]
    pub state: PathBuf,
    /// Resources to apply once Envoy runs (the first revision, or a new one).
    #[arg(short = 'f', long = "filename", value_name = "PATH", num_args = 1..)]
    pub files: Vec<String>,
    #[arg(long, value_name = "FILE")]
    pub settings: Option<PathBuf>,
    #[arg(long, value_name = "NS/NAME")]
    pub gateway: Option<String>,
    #[arg(short = 'm', long = "message", value_name = "TEXT", default_value = "")]
    pub message: String,
    #[command(flatten)]
    pub proxy: ProxyArgs,
    /// The Envoy binary.
    #[arg(long, value_name = "FILE")]
    pub envoy: Option<PathBuf>,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    pub concurrency: u32,
    /// Return once Envoy is ready instead of waiting for it to exit.
    #[arg(long)]
    pub detach: bool,
}

fn fail(e: &str) -> ExitCode {
    eprintln!("meshroute: {e}");
    ExitCode::from(2)
}

pub fn run(args: &UpArgs) -> ExitCode {
    let input = (!args.files.is_empty()).then(|| InputArgs {
        files: args.files.clone(),
        settings: args.settings.clone(),
        gateway: args.gateway.clone(),
        mesh_config: None,
    });
    // Check the input before starting anything.
    let loaded = match &input {
        Some(i) => match Loaded::read_generated(i) {
            Ok(l) => match l.require_table() {
                Ok(_) => Some(l),
                Err(code) => return code,
            },
            Err(code) => return code,
        },
        None => None,
    };
    let state = match open_state(&args.state, &args.proxy) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let envoy = match find_envoy(args.envoy.as_deref()) {
        Ok(e) => e,
        Err(e) => return fail(&e),
    };
    if let Ok(s) = Admin::new(state.proxy.admin).stats() {
        let _ = s;
        return fail(&format!(
            "an Envoy already answers on the admin address {}; nothing was started",
            state.proxy.admin
        ));
    }
    if let Err(e) = write_live_and_bootstrap(&state) {
        return fail(&e);
    }
    let mut child = match start(&state, &envoy, args) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    if let Err(e) = wait_ready(&state, &mut child).and_then(|()| live_listeners_taken(&state)) {
        let _ = child.kill();
        let _ = child.wait();
        return fail(&e);
    }
    eprintln!(
        "meshroute: Envoy {} (pid {}) runs on {}: listener {}, admin {}, log {}",
        envoy.display(),
        child.id(),
        state.dir.display(),
        state.proxy.listen,
        state.proxy.admin,
        state.dir.join("envoy.log").display()
    );
    let mut code = ExitCode::SUCCESS;
    if let (Some(l), Some(i)) = (loaded, &input) {
        let proposal = Proposal {
            config: l.inputs.plugin_config(i.gateway.as_deref()),
            sources: i.files.clone(),
            message: args.message.clone(),
        };
        code = report(apply(&state, proposal, &ApplyOptions::default()));
    }
    if args.detach {
        return code;
    }
    match child.wait() {
        Ok(s) if s.success() => code,
        Ok(s) => fail(&format!("Envoy exited: {s}")),
        Err(e) => fail(&format!("waiting for Envoy: {e}")),
    }
}

/// The live files of the current revision (or of the empty configuration) and the bootstrap.
fn write_live_and_bootstrap(state: &State) -> Result<(), String> {
    let current = state.current().map_err(|e| e.to_string())?;
    let config = current.as_ref().map_or_else(empty_config, |c| c.config.clone());
    let (files, _) = render(state, &config, current.as_ref()).map_err(|e| e.to_string())?;
    state.write_live(&files.cds).map_err(|e| e.to_string())?;
    for (f, _) in &files.rest {
        state.write_live(f).map_err(|e| e.to_string())?;
    }
    let boot = dynamic_bootstrap(&state.live_dir(), state.proxy.admin);
    state.write_json(&state.bootstrap_path(), &boot).map_err(|e| e.to_string())
}

fn start(state: &State, envoy: &std::path::Path, args: &UpArgs) -> Result<Child, String> {
    let log = state.dir.join("envoy.log");
    let stderr = std::fs::File::create(state.dir.join("envoy.stderr")).map_err(|e| format!("envoy.stderr: {e}"))?;
    let mut cmd = Command::new(envoy);
    cmd.arg("-c")
        .arg(state.bootstrap_path())
        .args(["--concurrency", &args.concurrency.to_string()])
        // No shared memory: several `up`s on one machine never collide, nothing leaks on kill.
        .arg("--disable-hot-restart")
        .args(["--log-level", "info", "--file-flush-interval-msec", "200"])
        .arg("--log-path")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    if args.detach {
        // Its own process group: a Ctrl-C in the terminal that ran `up --detach` does not stop it.
        cmd.process_group(0);
    }
    let child = cmd.spawn().map_err(|e| format!("cannot run {}: {e}", envoy.display()))?;
    let pid = state.dir.join("envoy.pid");
    crate::output::write_atomic(&pid, format!("{}\n", child.id()).as_bytes())
        .map_err(|e| format!("{}: {e}", pid.display()))?;
    Ok(child)
}

fn wait_ready(state: &State, child: &mut Child) -> Result<(), String> {
    let admin = Admin::new(state.proxy.admin);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let tail = std::fs::read_to_string(state.dir.join("envoy.stderr")).unwrap_or_default();
            let log = std::fs::read_to_string(state.dir.join("envoy.log")).unwrap_or_default();
            let last: Vec<&str> = log.lines().chain(tail.lines()).rev().take(8).collect();
            return Err(format!(
                "Envoy exited during start-up ({status}); last log lines:\n{}",
                last.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        // Ready, and ours: another Envoy that took the admin address after the check in `run`
        // would answer too (this one then exits, failing to bind it).
        if let Ok((200, _)) = admin.get("/ready") {
            if is_ours(state, &admin) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "Envoy did not become ready within 60 s (log: {})",
                state.dir.join("envoy.log").display()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether the Envoy answering on the admin address runs our bootstrap (`/server_info`'s
/// `command_line_options.config_path`).
fn is_ours(state: &State, admin: &Admin) -> bool {
    let Ok((200, body)) = admin.get("/server_info") else { return false };
    let info: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    info["command_line_options"]["config_path"].as_str() == Some(state.bootstrap_path().to_string_lossy().as_ref())
}

/// Envoy is ready even when it refused the live listeners (a listener address already in use is
/// refused like a bad listener, and Envoy serves on without it): `up` must then fail, with
/// Envoy's reason, rather than report an Envoy that does not listen where the state says.
fn live_listeners_taken(state: &State) -> Result<(), String> {
    let admin = Admin::new(state.proxy.admin);
    let rejected = admin.stats().map_err(|e| e.to_string())?.get("listener_manager.lds.update_rejected");
    if rejected == 0 {
        return Ok(());
    }
    // The log is flushed every 200 ms (`--file-flush-interval-msec` above).
    let log = state.dir.join("envoy.log");
    let deadline = Instant::now() + Duration::from_secs(2);
    let reason = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let found = text.lines().find_map(|l| l.split_once("config rejected: ").map(|(_, why)| why.to_string()));
        match found {
            Some(why) => break why,
            None if Instant::now() > deadline => break format!("see {}", log.display()),
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    Err(format!("Envoy refused the listeners of {} ({reason}); Envoy was stopped", state.live_dir().display()))
}
