//! `meshroute explain`: prints the core's [`meshroute::Explanation`] for one request.

use crate::{InputArgs, Loaded};
use clap::{ArgAction, Args};
use meshroute::explain::{
    Branch, Explanation, HeaderEdit, MatchedRule, Outcome, PlanExplained, ReplyExplained, RuleCheck,
};
use meshroute::Request;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// Show which VirtualService and rule a request matches and why each earlier rule did not, the
/// destinations with their probabilities, fault, retries, timeout, mirrors, redirect, direct
/// response and rewrite.
#[derive(Args)]
#[command(after_help = "-f takes one path per flag here (repeat it), so that METHOD and URL stay positional.
The URL's host (or a -H 'host: ...' header) selects the VirtualService; its port (default 80 for
http, 443 for https) is what `match.port` compares with.

Examples:
  meshroute explain -f examples/header-route.yaml GET http://product-service/ -H 'x-debug: true'
  meshroute explain -f examples/weight-route.yaml GET http://product-service/ --json
  meshroute explain -f gw.yaml -f vs.yaml --gateway istio-system/public-gateway GET https://api.example.com/products")]
pub struct ExplainArgs {
    /// Resource file, directory or `-` (repeat -f for more).
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true, action = ArgAction::Append)]
    files: Vec<String>,
    /// Settings of the proxy (JSON or YAML object).
    #[arg(long, value_name = "FILE")]
    settings: Option<PathBuf>,
    /// Act as this Gateway (`namespace/name`); overrides settings.gateway.
    #[arg(long, value_name = "NS/NAME")]
    gateway: Option<String>,
    /// A request header, `name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// HTTP method, e.g. GET.
    method: String,
    /// http://host[:port]/path?query (or host/path).
    url: String,
}

pub fn run(args: &ExplainArgs) -> ExitCode {
    let input = InputArgs {
        files: args.files.clone(),
        settings: args.settings.clone(),
        gateway: args.gateway.clone(),
        mesh_config: None,
    };
    let req = match build_request(&args.method, &args.url, &args.headers) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("meshroute: {e}");
            return ExitCode::from(2);
        }
    };
    let loaded = match Loaded::read(&input, false) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let diags = &loaded.compiled.diagnostics;
    // A clean configuration: the filter's own table. One with errors: the table istiod + Envoy
    // would serve (the filter, `compile` and `envoy` refuse it), findings printed first.
    let lenient;
    let (table, tolerated, code) = match &loaded.compiled.table {
        Some(t) if !diags.has_errors() => {
            loaded.print_diagnostics(false);
            (t, None, ExitCode::SUCCESS)
        }
        _ => match meshroute::lenient::compile_lenient(&loaded.bundle, meshroute::Diagnostics::default()) {
            Some(l) if !diags.errors().any(|d| d.resource.is_none()) => {
                lenient = l;
                (&lenient.table, Some(&lenient.tolerated), ExitCode::from(1))
            }
            _ => {
                return match loaded.require_table() {
                    Ok(_) => ExitCode::from(1),
                    Err(code) => code,
                };
            }
        },
    };
    let e = match tolerated {
        Some(t) => table.explain_with(&req, t),
        None => table.explain(&req),
    };
    let findings: Vec<Finding> = diags
        .iter()
        .map(|d| Finding { severity: d.severity.as_str(), code: d.code, text: loaded.inputs.render(d) })
        .collect();
    let refused: Vec<Refused> = tolerated
        .map(|t| {
            t.refused
                .iter()
                .map(|r| Refused {
                    resource: r.resource.to_string(),
                    by_istio: r.by_istio,
                    finding: loaded.inputs.render(&r.finding),
                })
                .collect()
        })
        .unwrap_or_default();
    let text = if args.json {
        let out = JsonOut { findings: &findings, refused: &refused, explanation: &e };
        match serde_json::to_string_pretty(&out) {
            Ok(t) => t + "\n",
            Err(err) => {
                eprintln!("meshroute: {err}");
                return ExitCode::from(1);
            }
        }
    } else {
        let mut out = String::new();
        if tolerated.is_some() {
            render_findings(&mut out, &findings, &refused);
        }
        out + &render(&e, &table.routing_header)
    };
    match crate::output::emit(None, &text) {
        c if c == ExitCode::SUCCESS => code,
        c => c,
    }
}

/// One finding of `validate`, for `explain`'s own report.
#[derive(Serialize)]
struct Finding {
    severity: &'static str,
    code: Option<&'static str>,
    /// As `validate` prints it (file and line included).
    text: String,
}

/// A resource the explanation leaves out.
#[derive(Serialize)]
struct Refused {
    resource: String,
    /// true: Istio's admission webhook refuses it (kubectl apply fails, istiod never sees it);
    /// false: Istio would accept it but meshroute cannot model it.
    by_istio: bool,
    finding: String,
}

#[derive(Serialize)]
struct JsonOut<'a> {
    /// Every finding of `validate`; with an error among them, the explanation is what istiod +
    /// Envoy would do, and each consequence of an error is marked in it.
    findings: &'a [Finding],
    /// Resources left out of the explanation.
    refused: &'a [Refused],
    #[serde(flatten)]
    explanation: &'a Explanation,
}

fn render_findings(out: &mut String, findings: &[Finding], refused: &[Refused]) {
    let errors = findings.iter().filter(|f| f.severity == "error").count();
    let _ = writeln!(
        out,
        "findings: {errors} error(s) — `compile` and `envoy` refuse this configuration; below is what istiod + Envoy would do with it"
    );
    for f in findings {
        let _ = writeln!(out, "  {}", f.text);
    }
    for (by_istio, title) in [
        (true, "refused by Istio's admission webhook (kubectl apply fails, istiod never sees them):"),
        (false, "left out: Istio would accept them, meshroute cannot model them (their traffic is not shown):"),
    ] {
        let these: Vec<&Refused> = refused.iter().filter(|r| r.by_istio == by_istio).collect();
        if !these.is_empty() {
            let _ = writeln!(out, "{title}");
        }
        for r in these {
            let _ = writeln!(out, "  {}", r.resource);
        }
    }
    let _ = writeln!(out);
}

/// Splits a URL into scheme, authority and path; `-H host:` overrides the authority.
pub fn build_request(method: &str, url: &str, headers: &[String]) -> Result<Request, String> {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => ("http".to_string(), url),
    };
    if scheme != "http" && scheme != "https" {
        return Err(format!("unsupported URL scheme {scheme:?} (use http or https)"));
    }
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('?') => (&rest[..i], format!("/{}", &rest[i..])),
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let mut req = Request::new(method, authority, &path);
    req.scheme = scheme;
    for h in headers {
        let Some((name, value)) = h.split_once(':') else {
            return Err(format!("header {h:?} is not `name: value`"));
        };
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim();
        if name == "host" || name == ":authority" {
            req.authority = value.to_string();
        } else {
            req = req.with_header(&name, value);
        }
    }
    if req.authority.is_empty() {
        return Err("the URL names no host (give http://HOST/path or -H 'host: HOST')".into());
    }
    Ok(req)
}

pub fn render(e: &Explanation, routing_header: &str) -> String {
    let mut out = String::new();
    let r = &e.request;
    let _ = writeln!(out, "request: {} {}://{}{} (port {})", r.method, r.scheme, r.authority, r.path, r.port);
    if let Some(c) = &e.consequence {
        let _ = writeln!(out, "→ {}", c.reason);
        let _ = writeln!(out, "  because: {}", c.finding);
    }
    match e.outcome {
        Outcome::Passthrough => {
            let _ = writeln!(
                out,
                "no VirtualService claims host {:?}: the filter lets the request through unchanged",
                r.authority
            );
        }
        Outcome::Blocked => {
            let _ = writeln!(
                out,
                "host {:?} is not in the registry and the outbound policy is REGISTRY_ONLY: 502",
                r.authority
            );
        }
        Outcome::DefaultRoute => {
            let _ = writeln!(
                out,
                "no VirtualService claims host {:?}; a ServiceEntry declares it: Istio's default route",
                r.authority
            );
        }
        Outcome::Matched | Outcome::NoRoute => {
            let _ = writeln!(
                out,
                "virtual service: {} (hosts: {})",
                e.virtual_service.as_deref().unwrap_or("?"),
                e.hosts.join(", ")
            );
            let _ = writeln!(out, "rules, in order:");
            render_trace(&mut out, &e.evaluated);
        }
    }
    match (&e.matched, e.outcome) {
        (None, Outcome::NoRoute) => {
            let _ = writeln!(out, "result: no rule matches: 404 (Envoy NR)");
        }
        (Some(m), Outcome::Matched) => {
            let name = m.name.as_ref().map(|n| format!(" ({n})")).unwrap_or_default();
            let _ = writeln!(out, "result: rule spec.http[{}]{name}", m.rule);
            if let Some(d) = &m.delegated {
                // The index above is the merged list's, as in istiod's merged VirtualService.
                let _ = writeln!(out, "  delegated: {d}");
            }
            render_matched(&mut out, m);
        }
        (Some(m), _) => render_matched(&mut out, m),
        (None, _) => {}
    }
    render_branches(&mut out, &e.branches, routing_header);
    out
}

fn render_trace(out: &mut String, evaluated: &[RuleCheck]) {
    for c in evaluated {
        let mut loc = format!("spec.http[{}]", c.rule);
        if let Some(m) = c.match_index {
            loc.push_str(&format!(".match[{m}]"));
        }
        if let Some(n) = c.rule_name.as_ref().or(c.match_name.as_ref()) {
            loc.push_str(&format!(" ({n})"));
        }
        match &c.reason {
            None if c.match_index.is_none() => {
                let _ = writeln!(out, "  MATCH     {loc} (no match conditions)");
            }
            None => {
                let _ = writeln!(out, "  MATCH     {loc}");
            }
            Some(why) => {
                let _ = writeln!(out, "  no match  {loc}: {why}");
            }
        }
    }
}

/// The rule's policies, described (what they do to the request is in the branches).
fn render_matched(out: &mut String, m: &MatchedRule) {
    for f in &m.findings {
        let _ = writeln!(out, "  finding in this rule: {f}");
    }
    match &m.fault {
        None => {
            let _ = writeln!(out, "  fault: none");
        }
        Some(f) => {
            if let Some(d) = &f.delay {
                let _ = writeln!(out, "  fault delay: {} ms for {}% of requests", d.fixed_delay_ms, fmt_pct(d.percent));
            }
            if let Some(a) = &f.abort {
                let what = match (a.http_status, a.grpc_status) {
                    (Some(s), _) => format!("HTTP {s}"),
                    (None, Some(g)) => format!("gRPC status {g}"),
                    _ => "abort".into(),
                };
                let _ = writeln!(out, "  fault abort: {what} for {}% of requests", fmt_pct(a.percent));
                if let Some(reply) = &a.reply {
                    render_reply(out, "    ", "abort reply", reply);
                }
            }
        }
    }
    let r = &m.retries;
    if r.attempts == 0 {
        let _ = writeln!(out, "  retries: disabled");
    } else {
        let mut on = vec![r.retry_on.clone()];
        if !r.grpc_retry_on.is_empty() {
            on.push(format!("grpc {}", r.grpc_retry_on));
        }
        if !r.retriable_status_codes.is_empty() {
            on.push(format!("status {}", r.retriable_status_codes));
        }
        let per_try = r.per_try_timeout_ms.map(|p| format!(", {p} ms per try")).unwrap_or_default();
        let backoff = r.backoff_ms.map(|b| format!(", back-off {b} ms")).unwrap_or_default();
        let hosts = match r.previous_hosts {
            Some(false) => ", may retry the same host",
            Some(true) => ", other hosts first",
            None => "",
        };
        let remote = if r.retry_remote_localities { ", other localities" } else { "" };
        let default = if r.istio_default { " (Istio default)" } else { "" };
        let _ = writeln!(
            out,
            "  retries: {} attempts on {}{per_try}{backoff}{hosts}{remote}{default}",
            r.attempts,
            on.join("; ")
        );
    }
    if r.own_route {
        // What `meshroute envoy` routes this policy by (R221, R225), so the plan's header is readable.
        let _ = writeln!(out, "  retry route: {} (x-meshroute-retry-policy)", r.route);
    }
    match m.timeout_ms {
        Some(t) => {
            let _ = writeln!(out, "  timeout: {t} ms");
        }
        None => {
            let _ = writeln!(out, "  timeout: none");
        }
    }
    if m.mirrors.is_empty() {
        let _ = writeln!(out, "  mirrors: none");
    }
    for mr in &m.mirrors {
        let _ = writeln!(out, "  mirror: {}% of requests to {}", fmt_pct(mr.percent), mr.cluster);
    }
    if let Some(c) = m.cors {
        let _ = writeln!(out, "  cors: {c}");
    }
}

/// What the filter does, branch by branch: every line below is the filter's plan (`set`, `add`,
/// `remove` request headers in order, the local reply, mirrors, response headers).
fn render_branches(out: &mut String, branches: &[Branch], routing_header: &str) {
    if branches.iter().any(|b| b.plan.cluster.is_some()) {
        let _ = writeln!(out, "route ({routing_header} set to the chosen cluster):");
    } else {
        let _ = writeln!(out, "what the filter does:");
    }
    for b in branches {
        match (&b.plan.cluster, &b.destination) {
            (Some(c), Some(d)) => {
                let subset = d.subset.as_ref().map(|s| format!(" subset {s}")).unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  {:>6.2}%  {c}  (host {}{subset}, port {}, weight {})",
                    b.percent, d.host, d.port, d.weight
                );
            }
            (Some(c), None) => {
                let _ = writeln!(out, "  {:>6.2}%  {c}", b.percent);
            }
            (None, _) => {}
        }
        if let Some(c) = &b.consequence {
            let _ = writeln!(out, "    → {} ({})", c.status, c.reason);
            let _ = writeln!(out, "      because: {}", c.finding);
        }
        let p = &b.plan;
        for h in &p.request_headers {
            render_edit(out, "request header", h);
        }
        if let Some(reply) = &p.reply {
            render_reply(out, "    ", "reply", reply);
        }
        for m in &p.mirrors {
            let _ = writeln!(out, "    mirror copy to: {m}");
        }
        for h in &p.response_headers {
            render_edit(out, "response header", h);
        }
        if p == &PlanExplained::default() {
            let _ = writeln!(out, "    nothing: the request goes on unchanged");
        }
    }
}

fn render_edit(out: &mut String, what: &str, h: &HeaderEdit) {
    match &h.value {
        Some(v) => {
            let _ = writeln!(out, "    {what} {} {}: {v}", h.op, h.name);
        }
        None => {
            let _ = writeln!(out, "    {what} {} {}", h.op, h.name);
        }
    }
}

fn render_reply(out: &mut String, indent: &str, what: &str, r: &ReplyExplained) {
    let grpc = r.grpc_status.map(|g| format!(" (grpc-status {g})")).unwrap_or_default();
    let _ = writeln!(out, "{indent}{what}: {}{grpc}", r.status);
    for (k, v) in &r.headers {
        let _ = writeln!(out, "{indent}{what} header: {k}: {v}");
    }
    if !r.body.is_empty() {
        let preview: String = r.body.chars().take(60).collect();
        let _ = writeln!(out, "{indent}{what} body: {} bytes {preview:?}", r.body.len());
    }
}

fn fmt_pct(p: f64) -> String {
    let s = format!("{p:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;
    use meshroute::RequestView;

    #[test]
    fn urls_split_into_scheme_authority_and_path() {
        let r = build_request("GET", "https://api.example.com:8443/a/b?x=1", &[]).unwrap();
        assert_eq!((r.scheme(), r.authority(), r.path()), ("https", "api.example.com:8443", "/a/b?x=1"));
        let bare = build_request("POST", "svc", &["X-Debug: true".into(), "Host: other".into()]).unwrap();
        assert_eq!((bare.authority(), bare.path()), ("other", "/"));
        assert_eq!(bare.header("x-debug").as_deref(), Some("true"));
        assert!(build_request("GET", "ftp://x/", &[]).is_err());
        assert!(build_request("GET", "http://x/", &["nocolon".into()]).is_err());
    }

    #[test]
    fn percentages_print_without_noise() {
        assert_eq!(fmt_pct(10.0), "10");
        assert_eq!(fmt_pct(0.5), "0.5");
    }
}
