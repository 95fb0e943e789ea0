//! `meshroute graph`: the traffic the configuration describes, as a picture (Mermaid, DOT, SVG).
//! The model (`model.rs`) is built once from the filter's route tables; each format is one
//! renderer.

pub mod dot;
pub mod mermaid;
pub mod model;
pub mod svg;

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

A configuration with errors is drawn as istiod would serve it (see `meshroute explain`), its
findings printed to standard error; the exit code stays 0 (use `meshroute validate` to gate).")]
pub struct GraphArgs {
    #[command(flatten)]
    input: InputArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "mermaid")]
    format: Format,
    /// Only the VirtualServices that serve this host (as the proxy looks hosts up).
    #[arg(long, value_name = "HOST")]
    host: Option<String>,
    /// Output file (default: standard output).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
}

pub fn run(args: &GraphArgs) -> ExitCode {
    let loaded = match Loaded::read(&args.input, false) {
        Ok(l) => l,
        Err(code) => return code,
    };
    loaded.print_diagnostics(false);
    let graph = match model::Graph::build(&loaded.bundle, args.host.as_deref()) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("meshroute: {}", e.0);
            return ExitCode::from(1);
        }
    };
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
