//! The tests file of `meshroute test`: YAML read into typed cases, each remembering its file and
//! line so that every problem — a malformed field, a reference to nothing, an impossible
//! expectation — names where it is.
//!
//! ```yaml
//! config: [../weight-route.yaml]      # resources, relative to this file (added to -f)
//! tests:
//! - name: 80/20 between v1 and v2
//!   request: {url: http://product-service/, count: 200}
//!   expect: {status: 200, split: {v1: 80, v2: 20}}
//! ```

use crate::harness::stub::Behaviour;
use crate::harness::{self, Behaviours};
use crate::yaml::{self, Node, NodeKind};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A problem in a tests file, `FILE:LINE: message`.
#[derive(Debug, Clone)]
pub struct SpecError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// One tests file.
#[derive(Debug)]
pub struct TestsFile {
    pub path: String,
    /// `config:` entries, resolved against the file's directory.
    pub config: Vec<String>,
    pub cases: Vec<Case>,
}

/// Who sends the request: a sidecar (namespace, labels) or a Gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Identity {
    pub gateway: Option<String>,
    pub namespace: Option<String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub line: usize,
    pub request: RequestSpec,
    pub identity: Identity,
    pub upstreams: Vec<(String, usize, Behaviour)>,
    pub expect: Expect,
}

#[derive(Debug, Clone)]
pub struct RequestSpec {
    pub method: String,
    /// `http://host[:port]/path?query`.
    pub scheme: String,
    pub host: String,
    pub port: u32,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub count: u32,
    pub concurrency: u32,
    pub timeout: Duration,
}

/// A share of requests expected for a key, with the line it was written on.
#[derive(Debug, Clone)]
pub struct Share {
    pub key: String,
    pub line: usize,
    pub ppm: u32,
}

#[derive(Debug, Clone, Default)]
pub struct Expect {
    pub status: Option<u16>,
    /// Every response came from this cluster (a cluster name, `HOST/SUBSET` or `HOST`).
    pub cluster: Option<(String, usize)>,
    pub subset: Option<(String, usize)>,
    pub headers: Vec<(String, String)>,
    pub location: Option<String>,
    pub delay_min: Option<Duration>,
    pub delay_max: Option<Duration>,
    /// Share of requests taking at least this long.
    pub delayed: Option<(Duration, u32)>,
    /// Upstream attempts per request (all stubs, mirrors excluded).
    pub attempts: Option<u32>,
    /// Mirrored copies a cluster received: key, line, share of requests (ppm).
    pub mirror: Option<Share>,
    /// Share of requests per destination key.
    pub split: Vec<Share>,
    /// Share of requests per status.
    pub statuses: Vec<(u16, usize, u32)>,
    /// Probability that a correct configuration fails a statistical expectation.
    pub false_failure: f64,
}

/// Reads and checks a tests file (structure and values; references are checked once the
/// configuration is loaded). The cases that could be read come back with the problems of the
/// others, so that one run reports every problem.
pub fn read(path: &Path) -> Result<(TestsFile, Vec<SpecError>), Vec<SpecError>> {
    let file = path.display().to_string();
    let err = |line: usize, message: String| vec![SpecError { file: file.clone(), line, message }];
    let text = std::fs::read_to_string(path).map_err(|e| err(1, format!("cannot read: {e}")))?;
    let docs = yaml::parse_documents(&text).map_err(|e| err(e.line, e.message.clone()))?;
    let Some(doc) = docs.into_iter().find(|d| !d.is_null()) else {
        return Err(err(1, "empty tests file".into()));
    };
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut config = Vec::new();
    let cases_node = match &doc.kind {
        NodeKind::Seq(_) => doc.clone(),
        NodeKind::Map(entries) => {
            let mut cases = None;
            for (k, line, n) in entries {
                match k.as_str() {
                    "config" => {
                        for item in seq_or_one(n) {
                            let s =
                                item.as_str().ok_or_else(|| err(item.line, "config: a file or directory".into()))?;
                            config.push(join(&dir, s));
                        }
                    }
                    "tests" => cases = Some(n.clone()),
                    other => return Err(err(*line, format!("unknown key {other:?} (known: config, tests)"))),
                }
            }
            cases.ok_or_else(|| err(doc.line, "no `tests:` list".into()))?
        }
        NodeKind::Scalar(_) => return Err(err(doc.line, "expected `tests:` or a list of test cases".into())),
    };
    let NodeKind::Seq(items) = &cases_node.kind else {
        return Err(err(cases_node.line, "tests: expected a list of test cases".into()));
    };
    let mut cases = Vec::new();
    let mut errors = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match case(item, i) {
            Ok(c) => cases.push(c),
            Err((line, message)) => {
                let name = item.get("name").and_then(Node::as_str).map(str::to_string);
                let message = match name {
                    Some(n) if !message.starts_with("test ") => format!("test {n:?}: {message}"),
                    _ => message,
                };
                errors.push(SpecError { file: file.clone(), line, message })
            }
        }
    }
    Ok((TestsFile { path: file, config, cases }, errors))
}

fn join(dir: &Path, s: &str) -> String {
    let p = PathBuf::from(s);
    if p.is_absolute() || s == "-" {
        s.to_string()
    } else {
        dir.join(p).display().to_string()
    }
}

fn seq_or_one(n: &Node) -> Vec<&Node> {
    match &n.kind {
        NodeKind::Seq(items) => items.iter().collect(),
        _ => vec![n],
    }
}

type Fail = (usize, String);

fn entries(n: &Node, what: &str) -> Result<Vec<(String, usize, Node)>, Fail> {
    match &n.kind {
        NodeKind::Map(e) => Ok(e.clone()),
        _ => Err((n.line, format!("{what}: expected a map"))),
    }
}

fn string(n: &Node, what: &str) -> Result<String, Fail> {
    match &n.kind {
        NodeKind::Scalar(Value::String(s)) => Ok(s.clone()),
        NodeKind::Scalar(v @ (Value::Number(_) | Value::Bool(_))) => Ok(v.to_string()),
        _ => Err((n.line, format!("{what}: expected a string"))),
    }
}

fn count(n: &Node, what: &str) -> Result<u32, Fail> {
    n.to_value()
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .filter(|v| *v > 0)
        .ok_or((n.line, format!("{what}: expected a positive whole number")))
}

fn lift<T>(r: Result<T, String>, line: usize, what: &str) -> Result<T, Fail> {
    r.map_err(|e| (line, format!("{what}: {e}")))
}

fn case(n: &Node, index: usize) -> Result<Case, Fail> {
    let mut name = format!("case {}", index + 1);
    let mut request = None;
    let mut identity = Identity::default();
    let mut upstreams = Vec::new();
    let mut expect = None;
    for (k, line, v) in entries(n, "a test case")? {
        match k.as_str() {
            "name" => name = string(&v, "name")?,
            "request" => request = Some(request_spec(&v, &mut identity)?),
            "upstreams" => {
                for (key, l, b) in entries(&v, "upstreams")? {
                    let b = lift(harness::parse_behaviour(&b.to_value()), l, &format!("upstreams.{key}"))?;
                    upstreams.push((key, l, b));
                }
            }
            "expect" => expect = Some(expect_spec(&v)?),
            other => {
                return Err((
                    line,
                    format!("unknown key {other:?} in a test case (known: name, request, upstreams, expect)"),
                ))
            }
        }
    }
    let at = |m: &str| (n.line, format!("test {name:?}: {m}"));
    let request = request.ok_or_else(|| at("no `request`"))?;
    let expect = expect.ok_or_else(|| at("no `expect`"))?;
    let statistical = !expect.split.is_empty()
        || !expect.statuses.is_empty()
        || expect.delayed.is_some()
        || expect.mirror.as_ref().is_some_and(|m| m.ppm != 1_000_000 && m.ppm != 0);
    if statistical && request.count < 20 {
        return Err(at(
            "a share of requests (split, statuses, delayed, mirror percent) needs request.count of at least 20",
        ));
    }
    Ok(Case { name, line: n.line, request, identity, upstreams, expect })
}

fn request_spec(n: &Node, identity: &mut Identity) -> Result<RequestSpec, Fail> {
    let mut method = "GET".to_string();
    let mut url = None;
    let mut headers = Vec::new();
    let mut body = Vec::new();
    let mut cnt = 1;
    let mut concurrency = None;
    let mut timeout = Duration::from_secs(30);
    for (k, line, v) in entries(n, "request")? {
        match k.as_str() {
            "method" => method = string(&v, "method")?.to_ascii_uppercase(),
            "url" => url = Some((string(&v, "url")?, line)),
            "headers" => {
                for (hk, _, hv) in entries(&v, "headers")? {
                    headers.push((hk.to_ascii_lowercase(), string(&hv, &format!("headers.{hk}"))?));
                }
            }
            "body" => body = string(&v, "body")?.into_bytes(),
            "count" => cnt = count(&v, "count")?,
            "concurrency" => concurrency = Some(count(&v, "concurrency")?),
            "timeout" => timeout = lift(harness::duration(&v.to_value()), line, "timeout")?,
            "gateway" => identity.gateway = Some(string(&v, "gateway")?),
            "source" => {
                for (sk, sl, sv) in entries(&v, "source")? {
                    match sk.as_str() {
                        "namespace" => identity.namespace = Some(string(&sv, "source.namespace")?),
                        "labels" => {
                            for (lk, _, lv) in entries(&sv, "source.labels")? {
                                identity.labels.insert(lk, string(&lv, "label")?);
                            }
                        }
                        other => {
                            return Err((sl, format!("unknown key {other:?} in source (known: namespace, labels)")))
                        }
                    }
                }
            }
            other => {
                return Err((
                    line,
                    format!(
                        "unknown key {other:?} in request (known: method, url, headers, body, count, concurrency, \
                         timeout, gateway, source)"
                    ),
                ))
            }
        }
    }
    let (url, line) = url.ok_or((n.line, "request: no `url`".to_string()))?;
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r.to_string()),
        None => ("http".to_string(), url.clone()),
    };
    if scheme != "http" && scheme != "https" {
        return Err((line, format!("url {url:?}: scheme must be http or https")));
    }
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (rest[..i].to_string(), rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let path = if path.starts_with('?') { format!("/{path}") } else { path };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().map_err(|_| (line, format!("url {url:?}: bad port {p:?}")))?),
        None => (authority, if scheme == "https" { 443 } else { 80 }),
    };
    if host.is_empty() {
        return Err((line, format!("url {url:?}: no host")));
    }
    let concurrency = concurrency.unwrap_or(cnt.min(16));
    Ok(RequestSpec { method, scheme, host, port, path, headers, body, count: cnt, concurrency, timeout })
}

fn share(v: &Node, what: &str) -> Result<u32, Fail> {
    lift(harness::percent_ppm(&v.to_value()), v.line, what)
}

fn expect_spec(n: &Node) -> Result<Expect, Fail> {
    let mut e = Expect { false_failure: 1e-6, ..Expect::default() };
    for (k, line, v) in entries(n, "expect")? {
        match k.as_str() {
            "status" => {
                e.status = Some(
                    v.to_value()
                        .as_u64()
                        .and_then(|s| u16::try_from(s).ok())
                        .ok_or((line, "status: expected a number".to_string()))?,
                )
            }
            "cluster" => e.cluster = Some((string(&v, "cluster")?, line)),
            "subset" => e.subset = Some((string(&v, "subset")?, line)),
            "headers" => {
                for (hk, _, hv) in entries(&v, "headers")? {
                    e.headers.push((hk.to_ascii_lowercase(), string(&hv, &format!("headers.{hk}"))?));
                }
            }
            "location" => e.location = Some(string(&v, "location")?),
            "delay" => {
                for (dk, dl, dv) in entries(&v, "delay")? {
                    let d = lift(harness::duration(&dv.to_value()), dl, &format!("delay.{dk}"))?;
                    match dk.as_str() {
                        "min" => e.delay_min = Some(d),
                        "max" => e.delay_max = Some(d),
                        other => return Err((dl, format!("unknown key {other:?} in delay (known: min, max)"))),
                    }
                }
            }
            "delayed" => {
                let (mut by, mut pct) = (None, None);
                for (dk, dl, dv) in entries(&v, "delayed")? {
                    match dk.as_str() {
                        "atLeast" => by = Some(lift(harness::duration(&dv.to_value()), dl, "delayed.atLeast")?),
                        "percent" => pct = Some(share(&dv, "delayed.percent")?),
                        other => {
                            return Err((dl, format!("unknown key {other:?} in delayed (known: atLeast, percent)")))
                        }
                    }
                }
                match (by, pct) {
                    (Some(b), Some(p)) => e.delayed = Some((b, p)),
                    _ => return Err((line, "delayed: needs atLeast and percent".into())),
                }
            }
            "attempts" => e.attempts = Some(count(&v, "attempts")?),
            "mirror" => {
                let (mut to, mut pct) = (None, 1_000_000);
                for (mk, ml, mv) in entries(&v, "mirror")? {
                    match mk.as_str() {
                        "to" => to = Some((string(&mv, "mirror.to")?, ml)),
                        "percent" => pct = share(&mv, "mirror.percent")?,
                        other => return Err((ml, format!("unknown key {other:?} in mirror (known: to, percent)"))),
                    }
                }
                let (key, l) = to.ok_or((line, "mirror: needs `to` (the cluster receiving the copies)".to_string()))?;
                e.mirror = Some(Share { key, line: l, ppm: pct });
            }
            "split" => {
                let mut total: u64 = 0;
                for (sk, sl, sv) in entries(&v, "split")? {
                    let ppm = share(&sv, &format!("split.{sk}"))?;
                    total += u64::from(ppm);
                    e.split.push(Share { key: sk, line: sl, ppm });
                }
                if total > 1_000_000 {
                    return Err((line, format!("split adds up to {} %, more than 100 %", total as f64 / 10_000.0)));
                }
            }
            "statuses" => {
                let mut total: u64 = 0;
                for (sk, sl, sv) in entries(&v, "statuses")? {
                    let code: u16 = sk.parse().map_err(|_| (sl, format!("statuses: {sk:?} is not an HTTP status")))?;
                    let ppm = share(&sv, &format!("statuses.{sk}"))?;
                    total += u64::from(ppm);
                    e.statuses.push((code, sl, ppm));
                }
                if total > 1_000_000 {
                    return Err((line, format!("statuses add up to {} %, more than 100 %", total as f64 / 10_000.0)));
                }
            }
            "falseFailure" => {
                e.false_failure = v
                    .to_value()
                    .as_f64()
                    .filter(|p| *p > 0.0 && *p < 0.5)
                    .ok_or((line, "falseFailure: a probability between 0 and 0.5, e.g. 1e-6".to_string()))?
            }
            other => {
                return Err((
                    line,
                    format!(
                        "unknown key {other:?} in expect (known: status, cluster, subset, headers, location, delay, \
                         delayed, attempts, mirror, split, statuses, falseFailure)"
                    ),
                ))
            }
        }
    }
    Ok(e)
}

impl Case {
    /// The stub behaviours of this case.
    pub fn behaviours(&self) -> Behaviours {
        let mut b = Behaviours::default();
        for (k, _, v) in &self.upstreams {
            b.add(k, v.clone());
        }
        b
    }
}
