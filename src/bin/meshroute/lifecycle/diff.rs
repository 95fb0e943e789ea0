//! What changes between two plugin configurations: resources added, removed and changed (field
//! by field), each VirtualService rule's traffic shares before → after, and rules added,
//! removed or reordered. `summary` is the one line `history` shows.

use meshroute::compile::{Action, CompiledVs, Rule};
use meshroute::explain::Outcome;
use meshroute::{Explanation, Request, RouteTable};
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
    /// Requests (built from the rules' own match conditions) whose fate differs.
    pub requests: Vec<String>,
}

impl Report {
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty() && self.shares.is_empty() && self.rules.is_empty() && self.requests.is_empty()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (title, lines) in [
            ("resources", &self.resources),
            ("traffic", &self.shares),
            ("rules", &self.rules),
            ("requests whose fate changes", &self.requests),
        ] {
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
    let requests = match old_table {
        Some(ot) => fates(old, new, ot, new_table),
        None => Vec::new(),
    };
    Report { resources, shares, rules, requests }
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

/// One request per match block of every VirtualService rule on either side (method, path from
/// `uri` exact/prefix, headers and query parameters from exact/prefix values; blocks with regex
/// conditions are skipped), plus `GET /` per host. Each is explained against both tables; the
/// ones whose fate (outcome, action, fault, retries, timeout, mirrors, header operations)
/// differs are listed with explain's wording, old ⇒ new.
fn fates(old: Option<&Value>, new: &Value, ot: &RouteTable, nt: &RouteTable) -> Vec<String> {
    let mut requests: Vec<(String, Request)> = Vec::new();
    for cfg in old.into_iter().chain(std::iter::once(new)) {
        for r in cfg["resources"].as_array().into_iter().flatten().filter(|r| r["kind"] == "VirtualService") {
            let Some(host) = r["spec"]["hosts"].as_array().and_then(|h| h.first()).and_then(Value::as_str) else {
                continue;
            };
            let host = host.replacen("*.", "any.", 1).replace('*', "any.host");
            let mut blocks: Vec<Value> = vec![Value::Null];
            for rule in r["spec"]["http"].as_array().into_iter().flatten() {
                blocks.extend(rule["match"].as_array().into_iter().flatten().cloned());
            }
            for b in blocks {
                if let Some(req) = request_for(&host, &b) {
                    let key = describe(&req);
                    if !requests.iter().any(|(k, _)| *k == key) {
                        requests.push((key, req));
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    for (key, req) in requests {
        let (a, b) = (ot.explain(&req), nt.explain(&req));
        if fate(&a) != fate(&b) {
            out.push(format!("{key}: {} ⇒ {}", one_line(&a), one_line(&b)));
        }
    }
    out
}

fn exact_or_prefix(m: &Value) -> Option<String> {
    m["exact"].as_str().or_else(|| m["prefix"].as_str()).map(str::to_string)
}

fn request_for(host: &str, block: &Value) -> Option<Request> {
    if block.is_null() {
        return Some(Request::new("GET", host, "/"));
    }
    let has_regex = |m: &Value| m.get("regex").is_some();
    let method = match block.get("method") {
        Some(m) if has_regex(m) => return None,
        Some(m) => exact_or_prefix(m)?,
        None => "GET".into(),
    };
    let mut path = match block.get("uri") {
        Some(m) if has_regex(m) => return None,
        Some(m) => exact_or_prefix(m)?,
        None => "/".into(),
    };
    let mut query = Vec::new();
    for (k, m) in block["queryParams"].as_object().into_iter().flatten() {
        if has_regex(m) {
            return None;
        }
        query.push(format!("{k}={}", exact_or_prefix(m).unwrap_or_default()));
    }
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    let mut req = Request::new(&method, host, &path);
    for (k, m) in block["headers"].as_object().into_iter().flatten() {
        if has_regex(m) {
            return None;
        }
        req = req.with_header(k, &exact_or_prefix(m).unwrap_or_default());
    }
    Some(req)
}

fn describe(r: &Request) -> String {
    let mut s = format!("{} http://{}{}", r.method, r.authority, r.path);
    for (k, v) in &r.headers {
        let _ = write!(s, " -H '{k}: {v}'");
    }
    s
}

/// What happens to the request, without the rule's position (a reorder alone is not a change).
fn fate(e: &Explanation) -> Value {
    let mut m = serde_json::to_value(&e.matched).unwrap_or_default();
    if let Some(o) = m.as_object_mut() {
        for k in ["rule", "name", "match_index"] {
            o.remove(k);
        }
    }
    // Where the request goes (destinations, their shares, the filter's plan) lives in the branches.
    let branches = serde_json::to_value(&e.branches).unwrap_or_default();
    serde_json::json!({"outcome": serde_json::to_value(e.outcome).unwrap_or_default(), "matched": m, "branches": branches})
}

/// explain's wording, on one line: the rule and what it does.
fn one_line(e: &Explanation) -> String {
    let Some(m) = &e.matched else {
        return match e.outcome {
            Outcome::NoRoute => "no rule matches: 404".into(),
            Outcome::Passthrough => "no VirtualService: passed through unchanged".into(),
            Outcome::Blocked => "not in the registry (REGISTRY_ONLY): 502".into(),
            Outcome::DefaultRoute => "Istio's default route".into(),
            Outcome::Matched => "matched".into(),
        };
    };
    let rule = match &m.name {
        Some(n) => format!("rule {} ({n})", m.rule),
        None => format!("rule {}", m.rule),
    };
    let reply = || e.branches.first().and_then(|b| b.plan.reply.as_ref());
    let what = match m.action {
        "redirect" => match reply() {
            Some(r) => {
                let location = r.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("location"));
                format!("redirect {} to {}", r.status, location.map_or("", |(_, v)| v.as_str()))
            }
            None => "redirect".into(),
        },
        "direct_response" => {
            reply().map_or_else(|| "direct response".into(), |r| format!("direct response {}", r.status))
        }
        _ => e
            .branches
            .iter()
            .filter_map(|b| Some((b.destination.as_ref()?, b.percent)))
            .map(|(d, percent)| {
                let host = d.host.split('.').next().unwrap_or(&d.host);
                let p = if percent.fract() == 0.0 { format!("{percent}%") } else { format!("{percent:.2}%") };
                match &d.subset {
                    Some(s) => format!("{host} {s} {p}"),
                    None => format!("{host} {p}"),
                }
            })
            .collect::<Vec<_>>()
            .join(", "),
    };
    let mut extra = String::new();
    if m.fault.is_some() {
        extra.push_str(", fault");
    }
    if let Some(t) = m.timeout_ms {
        let _ = write!(extra, ", timeout {t} ms");
    }
    format!("{rule} → {what}{extra}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(http: Value) -> Value {
        json!({"resources": [
            {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": "r", "namespace": "default"},
             "spec": {"hosts": ["reviews.internal"], "resolution": "STATIC", "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
                      "endpoints": [{"address": "10.0.0.1", "labels": {"v": "1"}}, {"address": "10.0.0.2", "labels": {"v": "2"}}]}},
            {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": "r", "namespace": "default"},
             "spec": {"host": "reviews.internal", "subsets": [{"name": "v1", "labels": {"v": "1"}}, {"name": "v2", "labels": {"v": "2"}}]}},
            {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "reviews", "namespace": "default"},
             "spec": {"hosts": ["reviews.internal"], "http": http}}], "settings": {}})
    }

    fn table(c: &Value) -> RouteTable {
        let (b, d) = meshroute::load_value(c.clone());
        let compiled = meshroute::compile(&b, d);
        compiled.table.unwrap_or_else(|| panic!("{}", compiled.diagnostics))
    }

    #[test]
    fn a_reordered_rule_and_the_requests_it_steals_are_reported() {
        let jason = json!({"match": [{"headers": {"end-user": {"exact": "jason"}}}],
                           "route": [{"destination": {"host": "reviews.internal", "subset": "v2"}}]});
        let rest = json!({"match": [{"headers": {"end-user": {"prefix": "j"}}}],
                          "route": [{"destination": {"host": "reviews.internal", "subset": "v1"}}]});
        let old = cfg(json!([jason, rest]));
        let new = cfg(json!([rest, jason]));
        let r = report(Some(&old), &new, Some(&table(&old)), &table(&new));
        assert!(r.rules.iter().any(|l| l.starts_with("reordered default/reviews")), "{:?}", r.rules);
        assert_eq!(
            r.requests,
            vec!["GET http://reviews.internal/ -H 'end-user: jason': rule 0 → reviews v2 100% ⇒ rule 0 → reviews v1 100%"]
        );
        assert!(r.shares.is_empty(), "{:?}", r.shares);
        let same = report(Some(&old), &old, Some(&table(&old)), &table(&old));
        assert!(same.is_empty());
    }
}
