//! `meshroute canary`: progressive delivery on the Envoy `meshroute up` runs, the loop Flagger
//! and Argo Rollouts automate on Kubernetes. Each step rewrites only the weights of the
//! VirtualService routes of one host (stable `100-w` %, canary `w` %), applies the result as a
//! revision through `apply`, and judges the canary cluster by its own Envoy stats over the
//! interval: a 5xx rate above the limit (or a p99 above `--max-p99`) rolls back to stable 100 %;
//! too few requests hold the step, and after `--max-holds` holds the run stops without promoting.

use super::admin::{Admin, Stats};
use super::apply::{apply, ApplyError, ApplyOptions, Outcome, Proposal};
use super::commands::{open_state, ProxyArgs};
use super::state::State;
use crate::{InputArgs, Loaded};
use clap::Args;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Shift traffic of a host from a stable to a canary subset step by step, judging the canary by
/// its Envoy stats; roll back automatically when it fails.
#[derive(Args)]
#[command(after_help = "Per step: rewrite the weights of every VirtualService http route of --host that sends to
--stable or --canary (nothing else changes), apply it as a revision (`canary HOST W%`), then watch
the canary cluster's stats on Envoy's admin interface (cluster.<c>.upstream_rq_total and
upstream_rq_5xx deltas; p99 of the cluster.<c>.upstream_rq_time histogram). A step is judged once it
has --min-requests requests: error rate above --max-error-rate (or p99 above --max-p99) rolls back
at once to stable 100 % (a new revision); fewer requests after the interval hold the step another
interval, at most --max-holds times, then the run stops with the step left live and not promoted.

Exit codes: 0 every step healthy (the last step stays live), 1 rolled back, 2 bad input or an apply
that failed, 3 stopped for lack of traffic.

Example:
  meshroute canary --state ./mr -f k8s/traffic/ --host reviews.default.svc.cluster.local \\
    --stable v1 --canary v2 --steps 10,50,100 --interval 30s --max-error-rate 1% --max-p99 500ms")]
pub struct CanaryArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// The state directory `meshroute up` runs Envoy on.
    #[arg(long, value_name = "DIR")]
    pub state: PathBuf,
    /// The VirtualService host whose routes are shifted.
    #[arg(long, value_name = "HOST")]
    pub host: String,
    /// The subset that serves today (what a rollback restores to 100 %).
    #[arg(long, value_name = "SUBSET")]
    pub stable: String,
    /// The subset being introduced; its clusters' stats are judged.
    #[arg(long, value_name = "SUBSET")]
    pub canary: String,
    /// Canary weights in percent, increasing, each 1..=100.
    #[arg(long, value_name = "W,W,...", value_delimiter = ',', default_value = "10,50,100")]
    pub steps: Vec<u32>,
    /// How long each step is watched (`30s`, `500ms`, `2m`).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Largest share of 5xx among the canary's requests (`1%` or `0.01`).
    #[arg(long, value_name = "RATE", default_value = "1%", value_parser = parse_rate)]
    pub max_error_rate: f64,
    /// Largest p99 of the canary cluster's upstream request time.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_p99: Option<Duration>,
    /// Requests the canary must have served in a step before it is judged.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub min_requests: u64,
    /// Extra intervals a step waits for --min-requests before the run stops.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub max_holds: u32,
    /// Seconds to wait for Envoy to confirm each revision.
    #[arg(long, value_name = "SECONDS", default_value_t = 15)]
    pub timeout: u64,
    /// Print the report as JSON on standard output.
    #[arg(long)]
    pub json: bool,
}

/// `30s`, `500ms`, `2m`, or bare seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration (30s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m)")),
    };
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("{s:?}: must be above zero"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `1%` (percent) or `0.01` (a fraction), 0..=1.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let r = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0),
        None => s.parse::<f64>(),
    }
    .map_err(|_| format!("{s:?} is not a rate (1% or 0.01)"))?;
    if !(0.0..=1.0).contains(&r) {
        return Err(format!("{s:?}: a rate is between 0% and 100%"));
    }
    Ok(r)
}

fn same_host(a: &str, b: &str) -> bool {
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    a == b || a.starts_with(&format!("{b}.")) || b.starts_with(&format!("{a}."))
}

/// The resources with every http route of `host` that sends to `stable` or `canary` rewritten to
/// stable `100 - weight` %, canary `weight` % (each destination's other fields kept). Errors when
/// no route qualifies.
pub fn with_weights(config: &Value, host: &str, stable: &str, canary: &str, weight: u32) -> Result<Value, String> {
    let mut out = config.clone();
    let mut rewritten = 0;
    let resources = out.get_mut("resources").and_then(Value::as_array_mut);
    for r in resources.into_iter().flatten() {
        if r.get("kind").and_then(Value::as_str) != Some("VirtualService") {
            continue;
        }
        let hosts = r.pointer("/spec/hosts").and_then(Value::as_array).cloned().unwrap_or_default();
        if !hosts.iter().filter_map(Value::as_str).any(|h| same_host(h, host)) {
            continue;
        }
        let Some(http) = r.pointer_mut("/spec/http").and_then(Value::as_array_mut) else { continue };
        for rule in http {
            let Some(route) = rule.get_mut("route").and_then(Value::as_array_mut) else { continue };
            let ours = |d: &Value, subset: &str| {
                d.pointer("/destination/host").and_then(Value::as_str).is_some_and(|h| same_host(h, host))
                    && d.pointer("/destination/subset").and_then(Value::as_str) == Some(subset)
            };
            let s = route.iter().find(|d| ours(d, stable)).cloned();
            let c = route.iter().find(|d| ours(d, canary)).cloned();
            let template = match (&s, &c) {
                (Some(t), _) | (None, Some(t)) => t.clone(),
                (None, None) => continue,
            };
            let with = |d: Option<Value>, subset: &str, w: u32| {
                let mut d = d.unwrap_or_else(|| template.clone());
                if let Some(dest) = d.get_mut("destination").and_then(Value::as_object_mut) {
                    dest.insert("subset".into(), json!(subset));
                }
                if let Some(o) = d.as_object_mut() {
                    o.insert("weight".into(), json!(w));
                }
                d
            };
            // Other destinations of the rule (neither subset) are dropped: the split is the two.
            *route = vec![with(s, stable, 100 - weight), with(c, canary, weight)];
            rewritten += 1;
        }
    }
    if rewritten == 0 {
        return Err(format!(
            "no VirtualService http route for host {host} sends to subset {stable:?} or {canary:?}; nothing to shift"
        ));
    }
    Ok(out)
}

/// The canary's clusters (one per port) as the compiled table names them.
fn canary_clusters(config: &Value, host: &str, canary: &str) -> Result<Vec<String>, String> {
    let (bundle, diags) = meshroute::load_value(config.clone());
    let compiled = meshroute::compile(&bundle, diags);
    let table = compiled.table.ok_or("the configuration does not compile")?;
    let names: Vec<String> = table
        .clusters
        .iter()
        .filter(|c| !c.mirror_only && c.subset.as_deref() == Some(canary) && same_host(&c.host, host))
        .map(|c| c.name.clone())
        .collect();
    if names.is_empty() {
        return Err(format!("no cluster for subset {canary:?} of {host}: is the subset in a DestinationRule?"));
    }
    Ok(names)
}

/// The canary's counters at one moment, summed over its clusters.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    total: u64,
    errors: u64,
}

fn counts(s: &Stats, clusters: &[String]) -> Counts {
    let mut c = Counts::default();
    for name in clusters {
        c.total += s.get(&format!("cluster.{name}.upstream_rq_total"));
        c.errors += s.get(&format!("cluster.{name}.upstream_rq_5xx"));
    }
    c
}

/// The highest p99 (ms) of the clusters' `upstream_rq_time` histograms: the last stats-flush
/// interval's value when Envoy has one, else the cumulative one (the cluster's lifetime). None
/// before Envoy's first stats flush (every 5 s) with a sample.
fn p99(admin: &Admin, clusters: &[String]) -> Option<f64> {
    let (status, body) = admin.get("/stats?format=json&filter=upstream_rq_time").ok()?;
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    let h = v["stats"].as_array()?.iter().find_map(|s| s.get("histograms"))?;
    let i = h["supported_quantiles"].as_array()?.iter().position(|q| q.as_f64() == Some(99.0))?;
    let mut best: Option<f64> = None;
    for q in h["computed_quantiles"].as_array()? {
        let name = q["name"].as_str().unwrap_or("");
        if !clusters.iter().any(|c| name == format!("cluster.{c}.upstream_rq_time")) {
            continue;
        }
        let val = &q["values"][i];
        if let Some(x) = val["interval"].as_f64().or_else(|| val["cumulative"].as_f64()) {
            best = Some(best.map_or(x, |b: f64| b.max(x)));
        }
    }
    best
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Verdict {
    Healthy,
    Failed,
    NotEnoughTraffic,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Healthy => "healthy",
            Verdict::Failed => "failed",
            Verdict::NotEnoughTraffic => "not enough traffic",
        }
    }
}

struct Step {
    weight: u32,
    revision: u64,
    requests: u64,
    errors: u64,
    p99_ms: Option<f64>,
    holds: u32,
    verdict: Verdict,
    why: String,
}

impl Step {
    fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

fn fail(e: &str) -> ExitCode {
    eprintln!("meshroute: {e}");
    ExitCode::from(2)
}

/// Applies one weight; the revision number live afterwards.
fn apply_weight(state: &State, args: &CanaryArgs, config: Value, message: String) -> Result<u64, String> {
    let opts = ApplyOptions { timeout: Duration::from_secs(args.timeout), ..ApplyOptions::default() };
    let proposal = Proposal { config, sources: args.input.files.clone(), message };
    match apply(state, proposal, &opts) {
        Ok(Outcome::Applied { revision, .. }) | Ok(Outcome::Unchanged(revision)) => Ok(revision.number),
        Ok(Outcome::Rejected { revision, reason, restored }) => {
            Err(format!("revision {} was rejected ({reason}); revision {restored} is live again", revision.number))
        }
        Err(ApplyError::Invalid(d)) => Err(format!(
            "the rewritten configuration has errors: {}",
            d.iter().map(|x| x.to_string()).collect::<Vec<_>>().join("; ")
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Watches one step: judged as soon as it has enough requests and fails, else at the end of an
/// interval with enough requests; holds up to `max_holds` extra intervals for traffic.
fn watch(admin: &Admin, args: &CanaryArgs, clusters: &[String], weight: u32, revision: u64) -> Result<Step, String> {
    let start = counts(&admin.stats().map_err(|e| e.to_string())?, clusters);
    let poll = (args.interval / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut holds = 0;
    let mut end = Instant::now() + args.interval;
    loop {
        std::thread::sleep(poll);
        let now = counts(&admin.stats().map_err(|e| e.to_string())?, clusters);
        let requests = now.total.saturating_sub(start.total);
        let errors = now.errors.saturating_sub(start.errors);
        let mut step = Step {
            weight,
            revision,
            requests,
            errors,
            p99_ms: None,
            holds,
            verdict: Verdict::Healthy,
            why: String::new(),
        };
        let enough = requests >= args.min_requests.max(1);
        if enough && step.error_rate() > args.max_error_rate {
            step.verdict = Verdict::Failed;
            step.why =
                format!("error rate {:.2}% above {:.2}%", step.error_rate() * 100.0, args.max_error_rate * 100.0);
            step.p99_ms = p99(admin, clusters);
            return Ok(step);
        }
        if Instant::now() < end {
            continue;
        }
        step.p99_ms = p99(admin, clusters);
        if enough {
            match (args.max_p99, step.p99_ms) {
                (Some(max), Some(p)) if p > max.as_secs_f64() * 1000.0 => {
                    step.verdict = Verdict::Failed;
                    step.why = format!("p99 {p:.1}ms above {}ms", max.as_millis());
                }
                // Envoy merges histograms at its stats flush (every 5 s): none yet, not judged.
                (Some(_), None) => step.why = "p99 not known yet (Envoy merges histograms every 5 s)".into(),
                _ => {}
            }
            return Ok(step);
        }
        if holds >= args.max_holds {
            step.verdict = Verdict::NotEnoughTraffic;
            step.why = format!("{requests} request(s), {} needed", args.min_requests);
            return Ok(step);
        }
        holds += 1;
        end = Instant::now() + args.interval;
    }
}

pub fn run(args: &CanaryArgs) -> ExitCode {
    let mut steps = args.steps.clone();
    if steps.is_empty() || steps.iter().any(|w| *w == 0 || *w > 100) || steps.windows(2).any(|p| p[0] >= p[1]) {
        return fail(&format!("--steps {:?}: increasing weights, each 1..=100", args.steps));
    }
    steps.dedup();
    if args.stable == args.canary {
        return fail("--stable and --canary name the same subset");
    }
    let loaded = match Loaded::read_generated(&args.input) {
        Ok(l) => l,
        Err(code) => return code,
    };
    if let Err(code) = loaded.require_table() {
        return code;
    }
    let base = loaded.inputs.plugin_config(args.input.gateway.as_deref());
    // Every step is rewritten and checked before anything is applied.
    let mut configs = Vec::new();
    for w in steps.iter().copied().chain([0]) {
        match with_weights(&base, &args.host, &args.stable, &args.canary, w) {
            Ok(c) => configs.push(c),
            Err(e) => return fail(&e),
        }
    }
    let Some(stable_config) = configs.pop() else { return fail("no steps") };
    let clusters = match configs.first().map(|c| canary_clusters(c, &args.host, &args.canary)) {
        Some(Ok(c)) => c,
        Some(Err(e)) => return fail(&e),
        None => return fail("no steps"),
    };
    let state = match open_state(&args.state, &ProxyArgs::default()) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    if args.max_p99.is_some() && args.interval < Duration::from_secs(5) {
        eprintln!(
            "meshroute: warning: Envoy merges its histograms every 5 s; with --interval under 5s --max-p99 may not be checked"
        );
    }
    let admin = Admin::new(state.proxy.admin);
    let mut done: Vec<Step> = Vec::new();
    let mut result = "promoted";
    let mut rollback: Option<u64> = None;
    let mut error: Option<String> = None;
    for (w, config) in steps.iter().copied().zip(configs) {
        let rev = match apply_weight(&state, args, config, format!("canary {} {w}%", args.host)) {
            Ok(r) => r,
            Err(e) => {
                error = Some(e);
                result = "error";
                break;
            }
        };
        eprintln!("meshroute: canary {w}% live as revision {rev}; watching {}", clusters.join(", "));
        let step = match watch(&admin, args, &clusters, w, rev) {
            Ok(s) => s,
            Err(e) => {
                error = Some(e);
                result = "error";
                break;
            }
        };
        let verdict = step.verdict;
        done.push(step);
        match verdict {
            Verdict::Healthy => {}
            Verdict::NotEnoughTraffic => {
                result = "not enough traffic";
                break;
            }
            Verdict::Failed => {
                result = "rolled back";
                let msg = format!("canary {} rollback: stable {} 100%", args.host, args.stable);
                match apply_weight(&state, args, stable_config.clone(), msg) {
                    Ok(r) => rollback = Some(r),
                    Err(e) => {
                        error = Some(format!("the rollback failed: {e}"));
                        result = "error";
                    }
                }
                break;
            }
        }
    }
    print_report(args, &clusters, &done, result, rollback, error.as_deref());
    match result {
        "promoted" => ExitCode::SUCCESS,
        "rolled back" => ExitCode::from(1),
        "not enough traffic" => ExitCode::from(3),
        _ => ExitCode::from(2),
    }
}

fn print_report(
    args: &CanaryArgs,
    clusters: &[String],
    steps: &[Step],
    result: &str,
    rollback: Option<u64>,
    error: Option<&str>,
) {
    if args.json {
        let s: Vec<Value> = steps
            .iter()
            .map(|s| {
                json!({"weight": s.weight, "revision": s.revision, "requests": s.requests, "errors": s.errors,
                       "errorRate": s.error_rate(), "p99Ms": s.p99_ms, "holds": s.holds,
                       "verdict": s.verdict.as_str(), "why": s.why})
            })
            .collect();
        let v = json!({"host": args.host, "stable": args.stable, "canary": args.canary, "clusters": clusters,
                       "result": result, "steps": s, "rollbackRevision": rollback, "error": error});
        println!("{v}");
        return;
    }
    for (i, s) in steps.iter().enumerate() {
        let p99 = s.p99_ms.map_or_else(|| "-".to_string(), |p| format!("{p:.1}ms"));
        let why = if s.why.is_empty() { String::new() } else { format!(" ({})", s.why) };
        println!(
            "step {}  canary {:>3}%  revision {}  requests {}  5xx {}  error rate {:.2}%  p99 {p99}  holds {}  {}{why}",
            i + 1,
            s.weight,
            s.revision,
            s.requests,
            s.errors,
            s.error_rate() * 100.0,
            s.holds,
            s.verdict.as_str()
        );
    }
    let last = steps.last().map_or(0, |s| s.weight);
    match (result, rollback, error) {
        (_, _, Some(e)) => println!("canary {}: stopped: {e}", args.host),
        ("promoted", ..) => println!("canary {}: promoted; {} {last}% stays live", args.host, args.canary),
        ("rolled back", Some(r), _) => {
            println!("canary {}: rolled back; {} 100% live as revision {r}", args.host, args.stable)
        }
        _ => println!(
            "canary {}: stopped for lack of traffic; {} {last}% stays live, not promoted (`meshroute rollback` undoes it)",
            args.host, args.canary
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cfg() -> Value {
        json!({"resources": [{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "r", "namespace": "default"},
            "spec": {"hosts": ["reviews.internal"], "http": [
                {"match": [{"headers": {"x": {"exact": "1"}}}], "route": [{"destination": {"host": "other.internal"}}]},
                {"route": [{"destination": {"host": "reviews.internal", "subset": "v1", "port": {"number": 80}}}]}]}}],
            "settings": {}})
    }

    #[test]
    fn only_the_weights_of_the_host_routes_change() {
        let out = with_weights(&cfg(), "reviews.internal", "v1", "v2", 10).unwrap();
        let http = &out["resources"][0]["spec"]["http"];
        assert_eq!(http[0], cfg()["resources"][0]["spec"]["http"][0]);
        assert_eq!(
            http[1]["route"],
            json!([{"destination": {"host": "reviews.internal", "subset": "v1", "port": {"number": 80}}, "weight": 90},
                   {"destination": {"host": "reviews.internal", "subset": "v2", "port": {"number": 80}}, "weight": 10}])
        );
    }

    #[test]
    fn a_host_without_such_a_route_is_an_error() {
        let e = with_weights(&cfg(), "reviews.internal", "v7", "v8", 10).unwrap_err();
        assert!(e.contains("v7"), "{e}");
        assert!(with_weights(&cfg(), "ratings.internal", "v1", "v2", 10).is_err());
    }

    #[test]
    fn durations_and_rates_parse() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("3h").is_err());
        assert!(parse_duration("0s").is_err());
        assert!((parse_rate("1%").unwrap() - 0.01).abs() < 1e-12);
        assert!((parse_rate("0.05").unwrap() - 0.05).abs() < 1e-12);
        assert!(parse_rate("150%").is_err());
    }
}
