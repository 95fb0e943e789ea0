//! `meshroute graph`: the traffic the configuration describes, as a picture (Mermaid, DOT, SVG).
//! The model (`model.rs`) is built once from the filter's route tables; each format is one
//! renderer.

pub mod dot;
pub mod l4;
pub mod mermaid;
pub mod model;
pub mod svg;

use crate::lifecycle::admin::Admin;
use crate::lifecycle::state::State;
use crate::lifecycle::status::route_counts;
use crate::{InputArgs, Loaded};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    Mermaid,
    Dot,
    Svg,
}

/// Draw the traffic: the mesh and each Gateway as sources, the VirtualServices they serve, each
/// rule in Istio's order with its match conditions, and the destinations with their shares;
/// fault, retries and timeout on the edge into a rule, mirrors as dashed edges. Mistakes that
/// `validate` reports are drawn dashed red: undefined subsets, unreachable rules, Gateways that do
/// not exist.
#[derive(Args)]
#[command(after_help = "Examples:
  meshroute graph -f examples/canary-10.yaml -f tests/fixtures/seed-subsets.yaml
  meshroute graph -f examples/ --format dot --host product-service
  meshroute graph -f examples/canary-50.yaml --format svg -o canary-50.svg
  meshroute graph --live --state ./state --window 10    # the live revision, measured shares beside

A configuration with errors is drawn as istiod would serve it (see `meshroute explain`), its
findings printed to standard error; the exit code stays 0 (use `meshroute validate` to gate).")]
pub struct GraphArgs {
    /// Resource files, directories or `-` (as for validate); with --live and none given, the
    /// state directory's live revision is drawn.
    #[arg(short = 'f', long = "filename", value_name = "PATH", num_args = 1..)]
    files: Vec<String>,
    /// Settings of the proxy (JSON or YAML object).
    #[arg(long, value_name = "FILE")]
    settings: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "mermaid")]
    format: Format,
    /// Only the VirtualServices that serve this host (as the proxy looks hosts up).
    #[arg(long, value_name = "HOST")]
    host: Option<String>,
    /// Output file (default: standard output).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
    /// Put the shares measured from the running Envoy's route counters (over --window) next to
    /// the configured ones; needs --state.
    #[arg(long, requires = "state")]
    live: bool,
    /// The state directory of `meshroute up`/`apply` (its Envoy admin address, its live revision).
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// Seconds over which --live measures; 0 uses the counters' totals since Envoy started.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    window: u64,
}

pub fn run(args: &GraphArgs) -> ExitCode {
    let bundle = if args.files.is_empty() {
        let Some(dir) = args.state.as_ref().filter(|_| args.live) else {
            eprintln!("meshroute: give -f PATH (or --live --state DIR to draw the live revision)");
            return ExitCode::from(2);
        };
        match live_revision(dir) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("meshroute: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        let input =
            InputArgs { files: args.files.clone(), settings: args.settings.clone(), gateway: None, mesh_config: None };
        let loaded = match Loaded::read(&input, false) {
            Ok(l) => l,
            Err(code) => return code,
        };
        loaded.print_diagnostics(false);
        loaded.bundle
    };
    let mut graph = match model::Graph::build(&bundle, args.host.as_deref()) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("meshroute: {}", e.0);
            return ExitCode::from(1);
        }
    };
    if let Some(dir) = args.state.as_ref().filter(|_| args.live) {
        match measure(dir, args.window) {
            Ok((counts, window)) => graph.add_measured(&counts, &window),
            Err(e) => {
                eprintln!("meshroute: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if graph.nodes.is_empty() {
        eprintln!("meshroute: no VirtualService to draw");
    }
    let text = match args.format {
        Format::Mermaid => mermaid::render(&graph),
        Format::Dot => dot::render(&graph),
        Format::Svg => svg::render(&graph),
    };
    crate::output::emit(args.output.as_deref(), &text)
}

/// Requests per (VirtualService, rule, cluster).
type RouteCounts = std::collections::BTreeMap<(String, usize, String), u64>;

/// The configuration Envoy runs: the state directory's live revision.
fn live_revision(dir: &std::path::Path) -> Result<meshroute::Bundle, String> {
    let state = State::open(dir).map_err(|e| e.to_string())?;
    let current = state.current().map_err(|e| e.to_string())?;
    let config = current.map(|r| r.config).ok_or_else(|| format!("{}: no live revision", dir.display()))?;
    Ok(meshroute::load_value(config).0)
}

/// Requests per (VirtualService, rule, cluster) over `window` seconds, from the admin stats of
/// the state directory's Envoy (the counters `meshroute status` reads).
fn measure(dir: &std::path::Path, window: u64) -> Result<(RouteCounts, String), String> {
    let state = State::open(dir).map_err(|e| e.to_string())?;
    let admin = Admin::new(state.proxy.admin);
    let first = admin.stats().map_err(|e| e.to_string())?;
    if window == 0 {
        return Ok((route_counts(&first, None), "since start".into()));
    }
    std::thread::sleep(std::time::Duration::from_secs(window));
    let second = admin.stats().map_err(|e| e.to_string())?;
    Ok((route_counts(&second, Some(&first)), format!("last {window} s")))
}
