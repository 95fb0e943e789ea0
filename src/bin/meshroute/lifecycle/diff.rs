//! What changes between two plugin configurations: resources added, removed and changed (field
//! by field), each VirtualService rule's traffic shares before → after, and rules added,
//! removed or reordered. `summary` is the one line `history` shows.

use meshroute::compile::{Action, CompiledVs, Rule};
use meshroute::RouteTable;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write;

/// `Kind namespace/name` → the resource.
fn by_key(config: Option<&Value>) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for r in config.and_then(|c| c["resources"].as_array()).into_iter().flatten() {
        let kind = r["kind"].as_str().unwrap_or("?");
        let ns = r["metadata"]["namespace"].as_str().unwrap_or("default");
        let name = r["metadata"]["name"].as_str().unwrap_or("?");
        out.insert(format!("{kind} {ns}/{name}"), r.clone());
    }
    out
}

/// Leaf differences, `path: old → new`.
fn fields(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        _ if a == b => {}
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                fields(&p, x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null), out);
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                fields(
                    &format!("{path}[{i}]"),
                    x.get(i).unwrap_or(&Value::Null),
                    y.get(i).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        _ => out.push(format!("{path}: {} → {}", short(a), short(b))),
    }
}

fn short(v: &Value) -> String {
    let s = if v.is_null() { "(none)".to_string() } else { v.to_string() };
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

/// Everything that differs, one finding per line; empty when nothing does.
pub struct Report {
    pub resources: Vec<String>,
    pub shares: Vec<String>,
    pub rules: Vec<String>,
}

impl Report {
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty() && self.shares.is_empty() && self.rules.is_empty()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (title, lines) in [("resources", &self.resources), ("traffic", &self.shares), ("rules", &self.rules)] {
            if !lines.is_empty() {
                writeln!(f, "{title}:")?;
                for l in lines {
                    writeln!(f, "  {l}")?;
                }
            }
        }
        Ok(())
    }
}

pub fn report(old: Option<&Value>, new: &Value, old_table: Option<&RouteTable>, new_table: &RouteTable) -> Report {
    let (a, b) = (by_key(old), by_key(Some(new)));
    let mut resources = Vec::new();
    for (k, v) in &b {
        match a.get(k) {
            None => resources.push(format!("+ {k}")),
            Some(o) if o != v => {
                let mut f = Vec::new();
                fields("", o, v, &mut f);
                resources.push(format!("~ {k}"));
                resources.extend(f.into_iter().map(|l| format!("    {l}")));
            }
            Some(_) => {}
        }
    }
    for k in a.keys().filter(|k| !b.contains_key(*k)) {
        resources.push(format!("- {k}"));
    }
    if old.is_some_and(|o| o["settings"] != new["settings"]) {
        let mut f = Vec::new();
        fields("settings", old.map_or(&Value::Null, |o| &o["settings"]), &new["settings"], &mut f);
        resources.extend(f.into_iter().map(|l| format!("~ {l}")));
    }
    let (shares, rules) = tables(old, new, old_table, new_table);
    Report { resources, shares, rules }
}

/// A rule's identity across revisions: its name, else its match conditions.
fn rule_key(config: Option<&Value>, vs: &str, rule: &Rule) -> String {
    if let Some(n) = &rule.name {
        return format!("name {n}");
    }
    let (ns, name) = vs.split_once('/').unwrap_or(("default", vs));
    let spec = config
        .and_then(|c| c["resources"].as_array())
        .into_iter()
        .flatten()
        .find(|r| {
            r["kind"] == "VirtualService"
                && r["metadata"]["name"] == name
                && r["metadata"]["namespace"].as_str().unwrap_or("default") == ns
        })
        .map(|r| r["spec"]["http"][rule.index]["match"].clone())
        .unwrap_or(Value::Null);
    if spec.is_null() {
        "match any".into()
    } else {
        format!("match {spec}")
    }
}

/// `reviews v1` → share in parts per million.
fn shares(rule: &Rule) -> Vec<(String, u64)> {
    match &rule.action {
        Action::Forward { destinations, total_weight } if *total_weight > 0 => destinations
            .iter()
            .map(|d| {
                let host = d.host.split('.').next().unwrap_or(&d.host);
                let label = match &d.subset {
                    Some(s) => format!("{host} {s}"),
                    None => host.to_string(),
                };
                (label, u64::from(d.weight) * 1_000_000 / total_weight)
            })
            .collect(),
        Action::Forward { .. } => Vec::new(),
        Action::Redirect(_) => vec![("redirect".into(), 1_000_000)],
        Action::DirectResponse { status, .. } => vec![(format!("direct response {status}"), 1_000_000)],
    }
}

fn percent(ppm: u64) -> String {
    if ppm % 10_000 == 0 {
        format!("{}%", ppm / 10_000)
    } else {
        format!("{:.2}%", ppm as f64 / 10_000.0)
    }
}

fn vs_map(t: Option<&RouteTable>) -> BTreeMap<&str, &CompiledVs> {
    t.map(|t| t.virtual_services.iter().map(|v| (v.name.as_str(), v)).collect()).unwrap_or_default()
}

fn tables(old: Option<&Value>, new: &Value, ot: Option<&RouteTable>, nt: &RouteTable) -> (Vec<String>, Vec<String>) {
    let (a, b) = (vs_map(ot), vs_map(Some(nt)));
    let mut share_lines = Vec::new();
    let mut rule_lines = Vec::new();
    let names: std::collections::BTreeSet<&str> = a.keys().chain(b.keys()).copied().collect();
    for name in names {
        let keyed = |vs: Option<&&CompiledVs>, cfg: Option<&Value>| -> Vec<(String, Rule)> {
            vs.map(|v| v.rules.iter().map(|r| (rule_key(cfg, name, r), r.clone())).collect()).unwrap_or_default()
        };
        let (ra, rb) = (keyed(a.get(name), old), keyed(b.get(name), Some(new)));
        for (k, r) in &rb {
            let Some((_, o)) = ra.iter().find(|(ka, _)| ka == k) else {
                rule_lines.push(format!("+ {name} rule {} ({k})", r.index));
                continue;
            };
            let (sa, sb) = (shares(o), shares(r));
            if sa != sb {
                let mut labels: Vec<&String> = sa.iter().map(|(l, _)| l).collect();
                for (l, _) in &sb {
                    if !labels.contains(&l) {
                        labels.push(l);
                    }
                }
                let get = |s: &[(String, u64)], l: &str| s.iter().filter(|(x, _)| x == l).map(|(_, p)| p).sum::<u64>();
                let mut line = format!("{name} rule {}:", r.index);
                let mut first = true;
                for l in labels {
                    let (x, y) = (get(&sa, l), get(&sb, l));
                    if x != y {
                        let _ = write!(line, "{} {l} {} → {}", if first { "" } else { "," }, percent(x), percent(y));
                        first = false;
                    }
                }
                share_lines.push(line);
            }
        }
        for (k, o) in &ra {
            if !rb.iter().any(|(kb, _)| kb == k) {
                rule_lines.push(format!("- {name} rule {} ({k})", o.index));
            }
        }
        // Rules present in both whose relative order changed: first match wins, so it matters.
        let common_a: Vec<&String> = ra.iter().map(|(k, _)| k).filter(|k| rb.iter().any(|(kb, _)| kb == *k)).collect();
        let common_b: Vec<&String> = rb.iter().map(|(k, _)| k).filter(|k| ra.iter().any(|(ka, _)| ka == *k)).collect();
        if common_a != common_b {
            rule_lines.push(format!(
                "reordered {name}: rules now in order {}",
                common_b.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    (share_lines, rule_lines)
}

/// One line for `history`: the traffic changes if any, else the resource changes.
pub fn summary(old: Option<&Value>, new: &Value) -> String {
    let compile = |v: &Value| {
        let (b, d) = meshroute::load_value(v.clone());
        meshroute::compile(&b, d).table
    };
    let ot = old.and_then(compile);
    let Some(nt) = compile(new) else { return "does not compile".into() };
    let r = report(old, new, ot.as_ref(), &nt);
    if !r.shares.is_empty() {
        return r.shares.join("; ");
    }
    let heads: Vec<&str> = r.resources.iter().filter(|l| !l.starts_with(' ')).map(String::as_str).collect();
    if heads.is_empty() && r.rules.is_empty() {
        "no change".into()
    } else {
        heads.iter().copied().chain(r.rules.iter().map(String::as_str)).collect::<Vec<_>>().join("; ")
    }
}
