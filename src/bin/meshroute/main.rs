//! `meshroute`: validate Istio traffic-management resources, compile them into the table the
//! filter loads, generate a runnable Envoy configuration, and explain a request.
//!
//! Exit codes: 0 success (warnings allowed), 1 configuration errors, 2 unreadable input or bad
//! usage.

mod emit;
mod envoy;
mod explain;
mod graph;
mod harness;
mod input;
mod lifecycle;
mod manifest;
mod output;
mod run;
mod traffic;
mod yaml;

use clap::{Args, Parser, Subcommand};
use input::Inputs;
use meshroute::{compile, load_value, Compiled, Severity};
use std::path::PathBuf;
use std::process::ExitCode;

/// With glibc's malloc, compiling grew faster than the rules: 20,000 took 2.1–2.4 × the time of
/// 10,000 (`make bench`), a whole `meshroute validate` 2.1–2.2 ×. mimalloc: 2.0–2.2 × and
/// 2.0–2.1 ×, and a fifth to a third faster (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const AFTER_HELP: &str = "\
Exit codes: 0 ok (warnings allowed), 1 configuration errors, 2 unreadable input or bad usage.

Examples:
  meshroute validate -f examples/
  meshroute compile -f vs.yaml -f dr.yaml --settings proxy.yaml -o table.json
  meshroute envoy -f examples/ --wasm meshroute.wasm -o envoy.yaml
  meshroute explain -f examples/header-route.yaml GET http://product-service/ -H 'x-debug: true'";

#[derive(Parser)]
#[command(
    name = "meshroute",
    version,
    about = "Istio traffic management (VirtualService, DestinationRule, ServiceEntry, Gateway, Sidecar, \
             WorkloadEntry) for any Envoy",
    after_help = AFTER_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Validate(ValidateArgs),
    Compile(CompileArgs),
    Envoy(envoy::EnvoyArgs),
    Explain(explain::ExplainArgs),
    Run(run::RunArgs),
    Test(traffic::TestArgs),
    Apply(lifecycle::commands::ApplyArgs),
    Up(lifecycle::up::UpArgs),
    History(lifecycle::commands::HistoryArgs),
    Rollback(lifecycle::commands::RollbackArgs),
    Diff(lifecycle::commands::DiffArgs),
    Status(lifecycle::status::StatusArgs),
    Canary(lifecycle::canary::CanaryArgs),
    Graph(graph::GraphArgs),
}

/// Where the resources come from and who the proxy is.
#[derive(Args, Debug, Clone)]
pub struct InputArgs {
    /// Resource files: YAML (multi-document) or JSON; a directory means every *.yaml, *.yml and
    /// *.json directly inside it, in name order; `-` reads standard input. Kubernetes `List`s and
    /// source plugin configurations ({"resources": [...], "settings": {...}}) are accepted too;
    /// a compiled table (`meshroute compile` output) is not: it keeps no resources.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true, num_args = 1..)]
    pub files: Vec<String>,
    /// Settings of the proxy (JSON or YAML object): namespace, labels, gateway, locality,
    /// clusterTemplate, routingHeader, domainSuffix, defaultPort, outboundTrafficPolicy, ...
    #[arg(long, value_name = "FILE")]
    pub settings: Option<PathBuf>,
    /// Act as this Gateway (`namespace/name`) instead of a sidecar; overrides settings.gateway.
    #[arg(long, value_name = "NS/NAME")]
    pub gateway: Option<String>,
    /// Istio's MeshConfig (as `istioctl analyze --meshConfigFile` takes it), or the `istio`
    /// ConfigMap holding it under `data.mesh`; without it, an `istio-system/istio` ConfigMap among
    /// the inputs is used. Explicit settings override what it gives.
    #[arg(long = "mesh-config", value_name = "FILE")]
    pub mesh_config: Option<PathBuf>,
}

/// Check resources the way Istio's webhook and `istioctl analyze` would, and print every problem
/// as `error|warning: FILE:LINE: Kind ns/name: field.path: message`.
#[derive(Args)]
#[command(after_help = "Examples:
  meshroute validate -f examples/
  meshroute validate -f vs.yaml dr.yaml --settings proxy.yaml
  kubectl get vs,dr,se -A -o yaml | meshroute validate -f -

Exit codes: 0 no errors (warnings allowed), 1 errors, 2 unreadable input (missing file, YAML syntax).")]
struct ValidateArgs {
    #[command(flatten)]
    input: InputArgs,
}

/// Compile the resources into the table the filter loads: {"format": "meshroute.table/v1",
/// "table": {...}} — the JSON an Envoy Wasm `configuration` or an Istio WasmPlugin `pluginConfig`
/// carries. The filter reads nothing else (no Istio resources).
#[derive(Args)]
#[command(after_help = "Nothing is written when the configuration has errors (exit 1); the output file is
written to a temporary name first and renamed, so it is never half-written.

The table is compiled for one proxy (the settings: namespace, labels, gateway, ...) and one version
of the filter: recompile when the resources, the settings or meshroute change. It is not an input
to meshroute; keep the resources (they are what validate, diff and apply read).

With --as, the output is the Istio resource (YAML) that attaches the filter with this table as
pluginConfig: namespace and selector from settings.namespace and settings.labels, outbound
(CLIENT) traffic for a sidecar, FAIL_CLOSE (or --fail-strategy reload: FAIL_RELOAD, Istio >= 1.27),
the module from --image.

Examples:
  meshroute compile -f k8s/traffic/ --settings proxy.yaml -o table.json
  meshroute compile -f vs.yaml --settings proxy.yaml --gateway istio-system/public-gateway
  meshroute compile -f k8s/traffic/ --settings proxy.yaml --as wasmplugin --image oci://registry/meshroute:0.1.0")]
struct CompileArgs {
    #[command(flatten)]
    input: InputArgs,
    /// Write an Istio WasmPlugin or TrafficExtension manifest instead of the bare table, or the
    /// EnvoyFilter with the routes the filter's decisions name (retry and hash policies).
    #[arg(long = "as", value_name = "KIND")]
    as_kind: Option<manifest::Kind>,
    /// The filter's module for --as (oci://, https:// or file://).
    #[arg(long, value_name = "URL", requires = "as_kind")]
    image: Option<String>,
    /// The manifest's failStrategy (--as wasmplugin|trafficextension).
    #[arg(long = "fail-strategy", value_name = "STRATEGY", default_value = "close", requires = "as_kind")]
    fail_strategy: manifest::FailStrategy,
    /// metadata.name of the manifest.
    #[arg(long, value_name = "NAME", default_value = "meshroute", requires = "as_kind")]
    name: String,
    /// Output file (default: standard output).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
}

/// Everything read, validated and compiled.
pub struct Loaded {
    pub inputs: Inputs,
    pub bundle: meshroute::Bundle,
    pub compiled: Compiled,
}

impl Loaded {
    /// Reads and compiles. Input errors are printed and make the caller exit 2.
    pub fn read(args: &InputArgs, to_stdout: bool) -> Result<Loaded, ExitCode> {
        Self::read_as(args, to_stdout, false)
    }

    /// [`Loaded::read`] for commands that run the filter behind routes they generate (`envoy`,
    /// `run`, `apply`, `up`, `canary`): the filter gets `retryPolicyOnRoute` and
    /// `retryPolicyRoutes` there (`meshroute::envoy::filter_config`), so the input is checked and
    /// compiled with them too, and no MR0007 claims a retry field those routes apply is lost.
    pub fn read_generated(args: &InputArgs) -> Result<Loaded, ExitCode> {
        Self::read_as(args, false, true)
    }

    fn read_as(args: &InputArgs, to_stdout: bool, generated_routes: bool) -> Result<Loaded, ExitCode> {
        let mut inputs = Inputs::read(&args.files, args.settings.as_deref());
        match &args.mesh_config {
            Some(m) => inputs.add_mesh_config_file(m),
            None => inputs.mesh_config_from_inputs(),
        }
        if let Some(m) = &inputs.mesh {
            if !m.config.unused.is_empty() {
                eprintln!("info: {}: MeshConfig fields not used by meshroute: {}", m.file, m.config.unused.join(", "));
            }
        }
        for e in &inputs.errors {
            if to_stdout {
                println!("{e}");
            } else {
                eprintln!("{e}");
            }
        }
        let mut config = inputs.plugin_config(args.gateway.as_deref());
        if generated_routes {
            meshroute::envoy::with_retry_policy_routes(&mut config);
        }
        let (mut bundle, diags) = load_value(config);
        // Gateway credentials are checked for expiry against this machine's clock.
        bundle.registry.now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_secs()).ok());
        let compiled = compile(&bundle, diags);
        let loaded = Loaded { inputs, bundle, compiled };
        if !loaded.inputs.errors.is_empty() {
            // Still report what could be checked, so one run shows everything.
            loaded.print_diagnostics(to_stdout);
            return Err(ExitCode::from(2));
        }
        Ok(loaded)
    }

    pub fn print_diagnostics(&self, to_stdout: bool) -> (usize, usize) {
        let (mut e, mut w) = (0, 0);
        for d in self.compiled.diagnostics.iter() {
            match d.severity {
                meshroute::Severity::Error => e += 1,
                meshroute::Severity::Warning => w += 1,
                meshroute::Severity::Info => {}
            }
            let line = self.inputs.render(d);
            if to_stdout {
                println!("{line}");
            } else {
                eprintln!("{line}");
            }
        }
        let diags = &self.compiled.diagnostics;
        if let Some(rest) = diags.omitted_summary() {
            if to_stdout {
                println!("meshroute: {rest}");
            } else {
                eprintln!("meshroute: {rest}");
            }
        }
        e += diags.omitted(Severity::Error);
        w += diags.omitted(Severity::Warning) + diags.omitted(Severity::Info);
        (e, w)
    }

    /// Prints diagnostics to stderr and fails with exit 1 on errors.
    pub fn require_table(&self) -> Result<&meshroute::RouteTable, ExitCode> {
        let (errors, _) = self.print_diagnostics(false);
        match &self.compiled.table {
            Some(t) if errors == 0 => Ok(t),
            _ => {
                eprintln!("meshroute: the configuration has {errors} error(s); nothing was generated");
                Err(ExitCode::from(1))
            }
        }
    }
}

fn validate(args: &ValidateArgs) -> ExitCode {
    let loaded = match Loaded::read(&args.input, true) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let (errors, warnings) = loaded.print_diagnostics(true);
    eprintln!("meshroute: {} resource(s), {errors} error(s), {warnings} warning(s)", loaded.inputs.resources.len());
    if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn compile_cmd(args: &CompileArgs) -> ExitCode {
    let loaded = match Loaded::read(&args.input, false) {
        Ok(l) => l,
        Err(code) => return code,
    };
    if let Err(code) = loaded.require_table() {
        return code;
    }
    let Some(table) = loaded.compiled.table.as_ref() else { return ExitCode::from(1) };
    // The settings name the proxy the manifests select; the table is what its filter loads.
    let settings = serde_json::Value::Object(loaded.inputs.settings_value(args.input.gateway.as_deref()));
    let table_text =
        if args.as_kind.is_some() { meshroute::table::to_json(table) } else { meshroute::table::to_json_pretty(table) };
    let table_text = match table_text {
        Ok(t) => t,
        Err(e) => {
            eprintln!("meshroute: cannot serialise the compiled table: {e}");
            return ExitCode::from(1);
        }
    };
    if args.as_kind == Some(manifest::Kind::Envoyfilter) {
        let on = |k: &str| settings[k] == serde_json::Value::Bool(true);
        if !(on("retryPolicyOnRoute") && on("retryPolicyRoutes")) {
            eprintln!(
                "warning: these routes carry every retry policy; compile the filter's table (--as wasmplugin) with \
                 settings retryPolicyOnRoute: true and retryPolicyRoutes: true, or its own policies lose what \
                 hints cannot carry"
            );
        }
        let routes = meshroute::envoy::sidecar_routes(&loaded.bundle, &table.clusters);
        let m = manifest::envoy_filter(&settings, &routes, &args.name);
        let header = vec!["Generated by `meshroute compile --as envoyfilter`; do not edit, regenerate.".to_string()];
        return output::emit(args.output.as_deref(), &emit::to_yaml(&m, &header));
    }
    if let Some(kind) = args.as_kind {
        let image = args.image.clone().unwrap_or_else(|| {
            eprintln!("warning: no --image; the manifest names {} (replace it)", manifest::DEFAULT_IMAGE);
            manifest::DEFAULT_IMAGE.to_string()
        });
        let plugin_config: serde_json::Value = match serde_json::from_str(&table_text) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("meshroute: cannot serialise the compiled table: {e}");
                return ExitCode::from(1);
            }
        };
        let m = manifest::manifest(kind, &settings, &plugin_config, &image, &args.name, args.fail_strategy);
        let header = vec!["Generated by `meshroute compile --as`; do not edit, regenerate.".to_string()];
        return output::emit(args.output.as_deref(), &emit::to_yaml(&m, &header));
    }
    output::emit(args.output.as_deref(), &(table_text + "\n"))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    match &cli.command {
        Command::Validate(a) => validate(a),
        Command::Compile(a) => compile_cmd(a),
        Command::Envoy(a) => envoy::run(a),
        Command::Explain(a) => explain::run(a),
        Command::Run(a) => run::run(a),
        Command::Test(a) => traffic::run(a),
        Command::Apply(a) => lifecycle::commands::run_apply(a),
        Command::Up(a) => lifecycle::up::run(a),
        Command::History(a) => lifecycle::commands::run_history(a),
        Command::Rollback(a) => lifecycle::commands::run_rollback(a),
        Command::Diff(a) => lifecycle::commands::run_diff(a),
        Command::Status(a) => lifecycle::status::run(a),
        Command::Canary(a) => lifecycle::canary::run(a),
        Command::Graph(a) => graph::run(a),
    }
}
