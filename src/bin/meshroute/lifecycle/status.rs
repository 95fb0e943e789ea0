//! `meshroute status`: the revision Envoy runs, the last apply and its result, and the live
//! traffic split per VirtualService rule (the filter's counters over a window) next to the split
//! the revision configures.

use super::admin::{Admin, Stats};
use super::state::{format_time, State};
use clap::Args;
use meshroute::compile::Action;
use meshroute::metrics;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
#[command(after_help = "Exit codes: 0 Envoy runs the live revision, 1 it runs another one (or none), 2 error.")]
pub struct StatusArgs {
    #[arg(long, value_name = "DIR")]
    pub state: PathBuf,
    /// Seconds over which the live split is measured; 0 shows the counters' totals.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub window: u64,
}

fn fail(e: &str) -> ExitCode {
    eprintln!("meshroute: {e}");
    ExitCode::from(2)
}

pub fn run(args: &StatusArgs) -> ExitCode {
    let state = match State::open(&args.state) {
        Ok(s) => s,
        Err(e) => return fail(&e.to_string()),
    };
    let (current, revs) = match (state.current(), state.revisions()) {
        (Ok(c), Ok(r)) => (c, r),
        (Err(e), _) | (_, Err(e)) => return fail(&e.to_string()),
    };
    match &current {
        Some(c) => println!(
            "live revision: {} ({}) applied {} {}",
            c.number,
            c.hash,
            format_time(c.time),
            if c.message.is_empty() { String::new() } else { format!("\"{}\"", c.message) }
        ),
        None => println!("live revision: none (the empty configuration)"),
    }
    if let Some(last) = revs.last() {
        println!("last apply: revision {} at {}: {}", last.number, format_time(last.time), last.result);
    }
    let admin = Admin::new(state.proxy.admin);
    let first = match admin.stats() {
        Ok(s) => s,
        Err(e) => return fail(&e.to_string()),
    };
    let gauge = first.get(&metrics::envoy_stat(metrics::CONFIG_REVISION));
    let loaded = first.get(&metrics::envoy_stat(metrics::CONFIG_LOADED));
    let rejected = first.get(&metrics::envoy_stat(metrics::CONFIG_REJECTED));
    let concurrency = admin
        .get("/server_info")
        .ok()
        .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
        .and_then(|v| v["command_line_options"]["concurrency"].as_u64());
    println!(
        "envoy {}: filter revision gauge {gauge}, configurations loaded {loaded} / rejected {rejected} (main thread + {} worker(s) each load one)",
        state.proxy.admin,
        concurrency.map_or("?".to_string(), |c| c.to_string())
    );
    for p in ["listener_manager.lds", "cluster_manager.cds", "extension_config_discovery.http_filter.meshroute"] {
        println!(
            "  {p}: version {} (accepted {}, rejected {})",
            first.text(&format!("{p}.version_text")).unwrap_or("-"),
            first.get(&format!("{p}.update_success")),
            first.get(&format!("{p}.update_rejected"))
        );
    }
    let (window, counts) = if args.window == 0 {
        ("since start".to_string(), route_counts(&first, None))
    } else {
        std::thread::sleep(Duration::from_secs(args.window));
        match admin.stats() {
            Ok(s) => (format!("last {} s", args.window), route_counts(&s, Some(&first))),
            Err(e) => return fail(&e.to_string()),
        }
    };
    if let Some(c) = &current {
        let (b, d) = meshroute::load_value(c.config.clone());
        if let Some(table) = meshroute::compile(&b, d).table {
            println!("traffic ({window}): live share (requests) vs configured");
            for vs in &table.virtual_services {
                let key: String = vs.name.chars().map(|c| if c == '.' { '_' } else { c }).collect();
                for rule in &vs.rules {
                    let Action::Forward { destinations, total_weight } = &rule.action else { continue };
                    let seen: Vec<u64> = destinations
                        .iter()
                        .map(|d| counts.get(&(key.clone(), rule.index, d.cluster.clone())).copied().unwrap_or(0))
                        .collect();
                    let sum: u64 = seen.iter().sum();
                    println!("  {} rule {}: {sum} request(s)", vs.name, rule.index);
                    for (d, n) in destinations.iter().zip(&seen) {
                        let live =
                            if sum == 0 { "-".to_string() } else { format!("{:.1}%", *n as f64 * 100.0 / sum as f64) };
                        let conf =
                            if *total_weight == 0 { 0.0 } else { f64::from(d.weight) * 100.0 / *total_weight as f64 };
                        println!("    {:<40} {live:>7} ({n})  configured {conf:.1}%", d.cluster);
                    }
                }
            }
        }
    }
    match current {
        Some(c) if c.number == gauge => ExitCode::SUCCESS,
        None if gauge == 0 => ExitCode::SUCCESS,
        _ => {
            eprintln!("meshroute: Envoy's filter reports revision {gauge}, not the live one");
            ExitCode::from(1)
        }
    }
}

/// (vs, rule, cluster) → requests, as a difference to `before` when given.
pub fn route_counts(now: &Stats, before: Option<&Stats>) -> BTreeMap<(String, usize, String), u64> {
    let mut out = BTreeMap::new();
    for (name, v) in &now.numbers {
        if let Some((vs, rule, dest)) = metrics::parse_route_stat(name) {
            let b = before.map_or(0, |b| b.get(name));
            out.insert((vs.to_string(), rule, dest.to_string()), v.saturating_sub(b));
        }
    }
    out
}
