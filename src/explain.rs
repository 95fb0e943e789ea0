//! `explain`: what the route table does with one request and why — which VirtualService claims
//! the host, each rule tried in Istio's order with the condition that failed, and everything the
//! matching rule will do (destinations with their probabilities, fault, retries, timeout,
//! mirrors, redirect, direct response, rewrite). Pure data, serialisable; printing is the CLI's.

use crate::compile::{Abort, Action, HeaderOps, RetryPolicy, RouteTable, Rule};
use crate::request::{RequestView, PPM};
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    pub request: RequestSummary,
    pub outcome: Outcome,
    /// `namespace/name` of the VirtualService serving the host.
    pub virtual_service: Option<String>,
    pub hosts: Vec<String>,
    /// Every match block tried, in order, up to and including the one that matched.
    pub evaluated: Vec<RuleCheck>,
    pub matched: Option<MatchedRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestSummary {
    pub method: String,
    pub scheme: String,
    pub authority: String,
    pub path: String,
    /// The port the request addresses (matches on `port` compare with it).
    pub port: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A rule matched.
    Matched,
    /// The host is served but no rule matched: Envoy answers 404 (`NR`).
    NoRoute,
    /// No VirtualService claims the host but a ServiceEntry declares it: istiod's default route
    /// to the service's cluster, with Istio's default retries.
    DefaultRoute,
    /// No VirtualService claims the host: the filter leaves the request alone.
    Passthrough,
    /// Unknown host under REGISTRY_ONLY: 502.
    Blocked,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleCheck {
    /// Position of the rule in `spec.http`.
    pub rule: usize,
    pub rule_name: Option<String>,
    /// Position of the block in the rule's `match`; `None` for a rule without `match`.
    pub match_index: Option<usize>,
    pub match_name: Option<String>,
    pub matched: bool,
    /// The first condition that failed.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatchedRule {
    pub rule: usize,
    pub name: Option<String>,
    pub match_index: Option<usize>,
    pub action: ActionExplained,
    pub rewrite: Option<RewriteExplained>,
    pub fault: Option<FaultExplained>,
    pub retries: RetryExplained,
    /// `None`: no timeout (Istio's default).
    pub timeout_ms: Option<u64>,
    pub mirrors: Vec<MirrorExplained>,
    pub request_headers: HeaderOpsExplained,
    pub response_headers: HeaderOpsExplained,
    pub cors: bool,
    /// Envoy router headers the filter adds so that the router retries and times out as Istio
    /// would (`x-envoy-retry-on`, `x-envoy-upstream-rq-timeout-ms`, ...).
    pub router_hints: Vec<Hint>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ActionExplained {
    Forward { destinations: Vec<DestinationExplained> },
    Redirect { code: u32, location: String },
    DirectResponse { status: u32, body_bytes: usize, body: String },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DestinationExplained {
    pub cluster: String,
    pub host: String,
    pub subset: Option<String>,
    pub port: u32,
    pub weight: u32,
    /// weight / total weight, in percent.
    pub percent: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RewriteExplained {
    /// The path the upstream will see (query kept).
    pub path: Option<String>,
    pub authority: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultExplained {
    pub delay: Option<DelayExplained>,
    pub abort: Option<AbortExplained>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DelayExplained {
    pub fixed_delay_ms: u64,
    pub percent: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AbortExplained {
    pub http_status: Option<u32>,
    pub grpc_status: Option<u32>,
    pub percent: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetryExplained {
    /// 0: retries disabled.
    pub attempts: u32,
    pub retry_on: String,
    pub grpc_retry_on: String,
    pub retriable_status_codes: String,
    pub per_try_timeout_ms: Option<u64>,
    pub retry_remote_localities: bool,
    /// The VirtualService set no `retries`; Istio's default applies.
    pub istio_default: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MirrorExplained {
    pub cluster: String,
    pub host: String,
    pub subset: Option<String>,
    pub port: u32,
    pub percent: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HeaderOpsExplained {
    pub set: Vec<(String, String)>,
    pub add: Vec<(String, String)>,
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hint {
    pub name: String,
    pub value: String,
}

impl RouteTable {
    /// Explains what [`RouteTable::decide`] does with `req`, without rolling any dice: every
    /// probability is reported instead.
    pub fn explain(&self, req: &dyn RequestView) -> Explanation {
        let port = self.request_port(req);
        let request = RequestSummary {
            method: req.method().to_string(),
            scheme: req.scheme().to_string(),
            authority: req.authority().to_string(),
            path: req.path().to_string(),
            port,
        };
        let Some(vs) = self.find_vs(req.authority()) else {
            if let Some(d) = self.default_route(req.authority(), port) {
                let matched = MatchedRule {
                    rule: 0,
                    name: None,
                    match_index: None,
                    action: ActionExplained::Forward {
                        destinations: vec![DestinationExplained {
                            cluster: d.cluster.clone(),
                            host: d.host.clone(),
                            subset: None,
                            port: d.port,
                            weight: 1,
                            percent: 100.0,
                        }],
                    },
                    rewrite: None,
                    fault: None,
                    retries: retry(&d.retry),
                    timeout_ms: None,
                    mirrors: Vec::new(),
                    request_headers: HeaderOpsExplained::default(),
                    response_headers: HeaderOpsExplained::default(),
                    cors: false,
                    router_hints: router_hints(&d.retry, None),
                };
                return Explanation {
                    request,
                    outcome: Outcome::DefaultRoute,
                    virtual_service: None,
                    hosts: vec![d.host.clone()],
                    evaluated: Vec::new(),
                    matched: Some(matched),
                };
            }
            let outcome = if self.registry_only && !self.in_registry(req.authority()) {
                Outcome::Blocked
            } else {
                Outcome::Passthrough
            };
            return Explanation {
                request,
                outcome,
                virtual_service: None,
                hosts: Vec::new(),
                evaluated: Vec::new(),
                matched: None,
            };
        };
        let mut evaluated = Vec::new();
        let mut matched = None;
        for entry in &vs.entries {
            let Some(rule) = vs.rules.get(entry.rule) else { continue };
            let result = entry.block.check(req, port);
            evaluated.push(RuleCheck {
                rule: rule.index,
                rule_name: rule.name.clone(),
                match_index: entry.match_index,
                match_name: entry.block.name.clone(),
                matched: result.is_ok(),
                reason: result.err().map(|m| m.0),
            });
            if evaluated.last().is_some_and(|c| c.matched) {
                matched = Some(explain_rule(self, rule, entry, req, port));
                break;
            }
        }
        Explanation {
            request,
            outcome: if matched.is_some() { Outcome::Matched } else { Outcome::NoRoute },
            virtual_service: Some(vs.name.clone()),
            hosts: vs.hosts.clone(),
            evaluated,
            matched,
        }
    }
}

fn explain_rule(
    table: &RouteTable,
    rule: &Rule,
    entry: &crate::compile::Entry,
    req: &dyn RequestView,
    port: u32,
) -> MatchedRule {
    let action = match &rule.action {
        Action::Forward { destinations, total_weight } => ActionExplained::Forward {
            destinations: destinations
                .iter()
                .map(|d| DestinationExplained {
                    cluster: d.cluster_on(&table.cluster_template, port).into_owned(),
                    host: d.host.clone(),
                    subset: d.subset.clone(),
                    port: d.port_on(port),
                    weight: d.weight,
                    percent: if *total_weight == 0 { 0.0 } else { f64::from(d.weight) * 100.0 / *total_weight as f64 },
                })
                .collect(),
        },
        Action::Redirect(r) => ActionExplained::Redirect { code: r.code, location: r.location(req) },
        Action::DirectResponse { status, body } => ActionExplained::DirectResponse {
            status: *status,
            body_bytes: body.len(),
            body: String::from_utf8_lossy(body).into_owned(),
        },
    };
    let rewrite = rule.rewrite.as_ref().map(|rw| RewriteExplained {
        path: rule.rewritten_path(&entry.block, req.path()),
        authority: rw.authority.clone(),
    });
    let fault = rule.fault.as_ref().map(|f| FaultExplained {
        delay: f.delay.map(|(d, ppm)| DelayExplained { fixed_delay_ms: ms(d), percent: percent(ppm) }),
        abort: f.abort.as_ref().map(|(a, ppm)| AbortExplained {
            http_status: match a {
                Abort::Http(s) => Some(*s),
                Abort::Grpc(_) => None,
            },
            grpc_status: match a {
                Abort::Grpc(s) => Some(*s),
                Abort::Http(_) => None,
            },
            percent: percent(*ppm),
        }),
    });
    let r = &rule.retry;
    MatchedRule {
        rule: rule.index,
        name: rule.name.clone(),
        match_index: entry.match_index,
        action,
        rewrite,
        fault,
        retries: retry(r),
        timeout_ms: rule.timeout.map(ms),
        mirrors: rule
            .mirrors
            .iter()
            .map(|m| MirrorExplained {
                cluster: m.cluster_on(&table.cluster_template, port).into_owned(),
                host: m.host.clone(),
                subset: m.subset.clone(),
                port: m.port_on(port),
                percent: percent(m.ppm),
            })
            .collect(),
        request_headers: ops(&rule.request_headers),
        response_headers: ops(&rule.response_headers),
        cors: rule.cors.is_some(),
        router_hints: router_hints(&rule.retry, rule.timeout),
    }
}

/// The Envoy router request headers that carry a rule's retry and timeout policy (the route
/// itself says `timeout: 0s` and no retries, as the CLI's Envoy config does).
pub fn router_hints(retry: &RetryPolicy, timeout: Option<Duration>) -> Vec<Hint> {
    let mut out = Vec::new();
    let mut hint = |name: &str, value: String| out.push(Hint { name: name.to_string(), value });
    if retry.attempts > 0 {
        if !retry.retry_on.is_empty() {
            hint("x-envoy-retry-on", retry.retry_on.clone());
        }
        if !retry.grpc_retry_on.is_empty() {
            hint("x-envoy-retry-grpc-on", retry.grpc_retry_on.clone());
        }
        hint("x-envoy-max-retries", retry.attempts.to_string());
        if !retry.retriable_status_codes.is_empty() {
            hint("x-envoy-retriable-status-codes", retry.retriable_status_codes.clone());
        }
        if let Some(p) = retry.per_try_timeout {
            hint("x-envoy-upstream-rq-per-try-timeout-ms", ms(p).to_string());
        }
    }
    if let Some(t) = timeout {
        hint("x-envoy-upstream-rq-timeout-ms", ms(t).to_string());
    }
    out
}

fn retry(r: &RetryPolicy) -> RetryExplained {
    RetryExplained {
        attempts: r.attempts,
        retry_on: r.retry_on.clone(),
        grpc_retry_on: r.grpc_retry_on.clone(),
        retriable_status_codes: r.retriable_status_codes.clone(),
        per_try_timeout_ms: r.per_try_timeout.map(ms),
        retry_remote_localities: r.retry_remote_localities,
        istio_default: r.is_default,
    }
}

fn ops(h: &HeaderOps) -> HeaderOpsExplained {
    HeaderOpsExplained { set: h.set.clone(), add: h.add.clone(), remove: h.remove.clone() }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Parts per million as a percentage.
pub fn percent(ppm: u32) -> f64 {
    f64::from(ppm) * 100.0 / f64::from(PPM)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::compile_json;
    use crate::request::Request;
    use serde_json::json;

    fn table(http: serde_json::Value) -> RouteTable {
        crate::testutil::reviews_table(http, json!({}))
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn earlier_rules_say_why_they_did_not_match() {
        let t = table(json!([
            {"match": [{"headers": {"x-debug": {"exact": "true"}}}],
             "route": [{"destination": {"host": "reviews", "subset": "v2"}}]},
            {"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}
        ]));
        let e = t.explain(&Request::new("GET", "reviews", "/"));
        assert_eq!(e.outcome, Outcome::Matched);
        assert_eq!(e.virtual_service.as_deref(), Some("default/reviews"));
        assert_eq!(e.evaluated.len(), 2);
        assert_eq!(e.evaluated[0].reason.as_deref(), Some("header x-debug is absent"));
        assert!(e.evaluated[1].matched);
        let m = e.matched.expect("matched");
        assert_eq!(m.rule, 1);
        assert!(m.retries.istio_default);
        assert_eq!(m.router_hints[0].name, "x-envoy-retry-on");
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn weighted_destinations_report_probabilities() {
        let t = table(json!([{"route": [
            {"destination": {"host": "reviews", "subset": "v1"}, "weight": 80},
            {"destination": {"host": "reviews", "subset": "v2"}, "weight": 20}],
            "timeout": "5s", "fault": {"abort": {"httpStatus": 500, "percentage": {"value": 5}}}}]));
        let e = t.explain(&Request::new("GET", "reviews", "/"));
        let m = e.matched.expect("matched");
        let ActionExplained::Forward { destinations } = &m.action else { panic!("{:?}", m.action) };
        let pct: Vec<f64> = destinations.iter().map(|d| d.percent).collect();
        assert_eq!(pct, vec![80.0, 20.0]);
        assert_eq!(m.timeout_ms, Some(5000));
        assert!(m.router_hints.iter().any(|h| h.name == "x-envoy-upstream-rq-timeout-ms" && h.value == "5000"));
        let abort = m.fault.and_then(|f| f.abort).expect("abort");
        assert_eq!((abort.http_status, abort.percent), (Some(500), 5.0));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn registry_host_without_virtual_service_takes_the_default_route() {
        let cfg = json!({"resources": [
            {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
             "metadata": {"name": "w", "namespace": "default"},
             "spec": {"hosts": ["weather.example.com"], "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
                      "resolution": "DNS"}}]});
        let c = compile_json(cfg.to_string().as_bytes());
        let t = c.table.expect("table");
        let e = t.explain(&Request::new("GET", "weather.example.com", "/"));
        assert_eq!(e.outcome, Outcome::DefaultRoute);
        let m = e.matched.expect("default route");
        assert!(
            matches!(&m.action, ActionExplained::Forward { destinations } if destinations[0].cluster == "outbound|80||weather.example.com")
        );
        assert!(m.retries.istio_default);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn unknown_host_is_passthrough_and_unmatched_is_no_route() {
        let t = table(json!([{"match": [{"uri": {"prefix": "/a"}}], "route": [{"destination": {"host": "reviews"}}]}]));
        assert_eq!(t.explain(&Request::new("GET", "other", "/")).outcome, Outcome::Passthrough);
        let e = t.explain(&Request::new("GET", "reviews", "/b"));
        assert_eq!(e.outcome, Outcome::NoRoute);
        assert_eq!(e.evaluated[0].reason.as_deref(), Some("uri \"/b\" does not match prefix \"/a\""));
    }
}
