//! `explain`: what the route table does with one request and why — which VirtualService claims
//! the host, each rule tried in Istio's order with the condition that failed, and what the proxy
//! will do.
//!
//! What the proxy does is not described here but computed: `explain` takes the same
//! [`RouteTable::select`] as `decide`, makes each possible choice in turn
//! ([`Selection::with_choices`]) and hands every resulting decision to the filter's own
//! [`apply::plan`]. Its destinations, header edits and replies are the plan's, so explain and the
//! filter cannot disagree. The per-rule "why not" trace and the descriptive parts (retries,
//! timeout, percentages) are added on top. Pure data, serialisable; printing is the CLI's.

use crate::apply::{self, HeaderOp, LocalReply, Plan};
use crate::compile::{Abort, Action, Dest, RetryPolicy, RouteTable};
use crate::decide::Selection;
use crate::lenient::{Consequence, Tolerance};
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
    /// What the proxy does: one branch per destination a roll may choose (one branch when there
    /// is no choice), each the filter's plan for that choice, without fault (see
    /// [`MatchedRule::fault`]); mirrors are all shown, with their chance in `matched`.
    pub branches: Vec<Branch>,
    /// What happens to the request whatever the branch, because of an error in the
    /// configuration (a Gateway that does not exist).
    pub consequence: Option<Consequence>,
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
    /// `forward`, `redirect` or `direct_response`.
    pub action: &'static str,
    pub fault: Option<FaultExplained>,
    pub retries: RetryExplained,
    /// `None`: no timeout (Istio's default).
    pub timeout_ms: Option<u64>,
    pub mirrors: Vec<MirrorExplained>,
    /// What the rule's CORS policy does with this request (`None`: the rule has none); the
    /// preflight reply or the response headers themselves are in the branches' plans.
    pub cors: Option<&'static str>,
    /// For a rule a delegate VirtualService brought in: where it is written (R186).
    pub delegated: Option<String>,
    /// Errors in this rule that istiod serves anyway (only with a configuration that has errors).
    pub findings: Vec<String>,
}

/// One possible fate of the request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Branch {
    /// Chance of this branch, in percent.
    pub percent: f64,
    /// The destination chosen, for a forwarding rule.
    pub destination: Option<DestinationExplained>,
    /// What the filter does (its plan).
    pub plan: PlanExplained,
    /// What Envoy then does because of an error in the configuration (a cluster that does not
    /// exist); `None` when the plan is the whole story.
    pub consequence: Option<Consequence>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DestinationExplained {
    pub host: String,
    pub subset: Option<String>,
    pub port: u32,
    pub weight: u32,
}

/// A [`Plan`] in serialisable form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PlanExplained {
    /// The cluster the routing header names: where Envoy's router sends the request.
    pub cluster: Option<String>,
    /// Request header edits, in order (the routing header and router hints included).
    pub request_headers: Vec<HeaderEdit>,
    /// The reply the proxy makes instead of forwarding.
    pub reply: Option<ReplyExplained>,
    pub delay_ms: Option<u64>,
    pub abort: Option<ReplyExplained>,
    /// Mirror clusters a copy goes to.
    pub mirrors: Vec<String>,
    pub response_headers: Vec<HeaderEdit>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeaderEdit {
    /// `set`, `add` or `remove`.
    pub op: &'static str,
    pub name: String,
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplyExplained {
    /// The HTTP status the client sees.
    pub status: u32,
    /// For a gRPC reply: the `grpc-status`.
    pub grpc_status: Option<u32>,
    pub headers: Vec<(String, String)>,
    pub body: String,
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
    /// The reply, as the filter's plan makes it for this request.
    pub reply: Option<ReplyExplained>,
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
    /// `backoff` (route configuration only).
    pub backoff_ms: Option<u64>,
    /// `retryIgnorePreviousHosts` as written (unset: Istio's `previous_hosts` predicate, except
    /// for a single consistent-hash destination).
    pub previous_hosts: Option<bool>,
    /// The name of the policy's route (R221): the `x-meshroute-retry-policy` value the filter
    /// writes where the route configuration has one route per policy (`meshroute envoy`).
    pub route: String,
    /// The VirtualService set no `retries`; Istio's default applies.
    pub istio_default: bool,
    /// The filter names `route` (a policy of the rule's own, or a weighted rule whose route
    /// carries its destinations' hash policies, R225); else the header-less default route.
    pub own_route: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MirrorExplained {
    pub cluster: String,
    pub host: String,
    pub subset: Option<String>,
    pub port: u32,
    pub percent: f64,
}

impl PlanExplained {
    /// `routing_header` names the header whose value is the cluster.
    pub fn new(p: &Plan, routing_header: &str) -> Self {
        let cluster = p.request_ops.iter().find_map(|op| match op {
            HeaderOp::Set(k, v) if k == routing_header => Some(v.clone()),
            _ => None,
        });
        PlanExplained {
            cluster,
            request_headers: p.request_ops.iter().map(HeaderEdit::from).collect(),
            reply: p.local_reply.as_ref().map(ReplyExplained::from),
            delay_ms: p.delay.map(ms),
            abort: p.abort.as_ref().map(ReplyExplained::from),
            mirrors: p.mirrors.iter().map(|m| m.cluster.clone()).collect(),
            response_headers: p.response_ops.iter().map(HeaderEdit::from).collect(),
        }
    }
}

impl From<&HeaderOp> for HeaderEdit {
    fn from(op: &HeaderOp) -> Self {
        match op {
            HeaderOp::Set(k, v) => HeaderEdit { op: "set", name: k.clone(), value: Some(v.clone()) },
            HeaderOp::Add(k, v) => HeaderEdit { op: "add", name: k.clone(), value: Some(v.clone()) },
            HeaderOp::Remove(k) => HeaderEdit { op: "remove", name: k.clone(), value: None },
        }
    }
}

impl From<&LocalReply> for ReplyExplained {
    fn from(r: &LocalReply) -> Self {
        match r {
            LocalReply::Http { status, headers, body } => ReplyExplained {
                status: *status,
                grpc_status: None,
                headers: headers.clone(),
                body: String::from_utf8_lossy(body).into_owned(),
            },
            LocalReply::Grpc { status, message } => ReplyExplained {
                status: r.http_status(),
                grpc_status: Some(*status),
                headers: vec![("grpc-message".into(), message.clone())],
                body: String::new(),
            },
        }
    }
}

impl RouteTable {
    /// Explains what [`RouteTable::decide`] and [`apply::plan`] do with `req`, without rolling
    /// any dice: every choice is shown with its probability.
    pub fn explain(&self, req: &dyn RequestView) -> Explanation {
        self.explain_with(req, &Tolerance::default())
    }

    /// As [`RouteTable::explain`], for a table built by [`crate::lenient::compile_lenient`]:
    /// each branch that an error decides carries its consequence.
    pub fn explain_with(&self, req: &dyn RequestView, tolerated: &Tolerance) -> Explanation {
        let port = self.request_port(req);
        let request = RequestSummary {
            method: req.method().to_string(),
            scheme: req.scheme().to_string(),
            authority: req.authority().to_string(),
            path: req.path().to_string(),
            port,
        };
        let selection = self.select(req);
        let plan_of = |destination: Option<&Dest>, fault: bool| {
            let decision = selection.with_choices(destination, fault, !fault);
            PlanExplained::new(&apply::plan(self, &decision, req), &self.routing_header)
        };
        let single = |plan: PlanExplained| vec![Branch { percent: 100.0, destination: None, plan, consequence: None }];
        let mut e = Explanation {
            request,
            outcome: Outcome::Passthrough,
            virtual_service: None,
            hosts: Vec::new(),
            evaluated: Vec::new(),
            matched: None,
            branches: Vec::new(),
            consequence: tolerated.request_consequence(),
        };
        match selection {
            Selection::Passthrough => e.branches = single(plan_of(None, false)),
            Selection::Blocked => {
                e.outcome = Outcome::Blocked;
                e.branches = single(plan_of(None, false));
            }
            Selection::Default(d) => {
                e.outcome = Outcome::DefaultRoute;
                e.hosts = vec![d.host.clone()];
                e.matched = Some(MatchedRule {
                    rule: 0,
                    name: None,
                    match_index: None,
                    action: "forward",
                    fault: None,
                    retries: retry(&d.retry),
                    timeout_ms: None,
                    mirrors: Vec::new(),
                    cors: None,
                    delegated: None,
                    findings: Vec::new(),
                });
                e.branches = vec![Branch {
                    percent: 100.0,
                    destination: Some(DestinationExplained {
                        host: d.host.clone(),
                        subset: None,
                        port: d.port,
                        weight: 1,
                    }),
                    plan: plan_of(None, false),
                    consequence: None,
                }];
            }
            Selection::NoRoute { vs } => {
                e.outcome = Outcome::NoRoute;
                e.virtual_service = Some(vs.name.clone());
                e.hosts = vs.hosts.clone();
                e.evaluated = trace(vs, req, port, None);
                e.branches = single(plan_of(None, false));
            }
            Selection::Rule { vs, rule, entry } => {
                e.outcome = Outcome::Matched;
                e.virtual_service = Some(vs.name.clone());
                e.hosts = vs.hosts.clone();
                e.evaluated = trace(vs, req, port, Some(entry));
                let fault = rule.fault.as_ref().map(|f| {
                    let forced = plan_of(first_destination(&rule.action), true);
                    FaultExplained {
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
                            reply: forced.abort.clone(),
                        }),
                    }
                });
                e.matched = Some(MatchedRule {
                    rule: rule.index,
                    name: rule.name.clone(),
                    match_index: entry.match_index,
                    action: match rule.action {
                        Action::Forward { .. } => "forward",
                        Action::Redirect(_) => "redirect",
                        Action::DirectResponse { .. } => "direct_response",
                    },
                    fault,
                    retries: retry(&rule.retry),
                    timeout_ms: rule.timeout.map(ms),
                    mirrors: rule
                        .mirrors
                        .iter()
                        .map(|m| MirrorExplained {
                            cluster: m.cluster_on(&self.cluster_template, port).into_owned(),
                            host: m.host.clone(),
                            subset: m.subset.clone(),
                            port: m.port_on(port),
                            percent: percent(m.ppm),
                        })
                        .collect(),
                    cors: rule.cors.as_ref().map(|c| c.evaluate(req).describe()),
                    delegated: rule.delegated.as_ref().map(ToString::to_string),
                    findings: {
                        let (at, i) = rule.written_at(&vs.name);
                        tolerated.rule_findings(at, i).iter().map(|d| d.to_string()).collect()
                    },
                });
                e.branches = match &rule.action {
                    Action::Forward { destinations, total_weight } if !destinations.is_empty() => destinations
                        .iter()
                        .map(|d| {
                            let plan = plan_of(Some(d), false);
                            // Answered before the router (a CORS preflight): the destination's
                            // errors never show.
                            let forwarded = plan.cluster.is_some();
                            Branch {
                                percent: if destinations.len() == 1 || *total_weight == 0 {
                                    100.0
                                } else {
                                    f64::from(d.weight) * 100.0 / *total_weight as f64
                                },
                                destination: Some(DestinationExplained {
                                    host: d.host.clone(),
                                    subset: d.subset.clone(),
                                    port: d.port_on(port),
                                    weight: d.weight,
                                }),
                                plan,
                                consequence: forwarded
                                    .then(|| {
                                        let (at, i) = rule.written_at(&vs.name);
                                        tolerated.forward_consequence(at, i, d)
                                    })
                                    .flatten(),
                            }
                        })
                        .collect(),
                    _ => single(plan_of(None, false)),
                };
                // A reply made before any destination is chosen is one branch, not one a destination.
                if e.branches.iter().all(|b| b.plan.cluster.is_none() && b.plan.reply.is_some()) {
                    if let Some(b) = e.branches.first() {
                        e.branches = single(b.plan.clone());
                    }
                }
                // A finding that already marks a branch is not repeated on the rule.
                if let Some(m) = e.matched.as_mut() {
                    m.findings.retain(|f| {
                        !e.branches.iter().any(|b| b.consequence.as_ref().is_some_and(|c| &c.finding == f))
                    });
                }
            }
        }
        e
    }
}

fn first_destination(a: &Action) -> Option<&Dest> {
    match a {
        Action::Forward { destinations, .. } => destinations.first(),
        _ => None,
    }
}

/// The "why not" trace: every entry before the selected one with the condition that failed,
/// then the selected one (`None`: none matched, so every entry).
fn trace(
    vs: &crate::compile::CompiledVs,
    req: &dyn RequestView,
    port: u32,
    selected: Option<&crate::compile::Entry>,
) -> Vec<RuleCheck> {
    let mut out = Vec::new();
    for entry in &vs.entries {
        let Some(rule) = vs.rules.get(entry.rule) else { continue };
        let chosen = selected.is_some_and(|s| std::ptr::eq(s, entry));
        let reason = if chosen { None } else { entry.block.check(req, port).err().map(|m| m.0) };
        out.push(RuleCheck {
            rule: rule.index,
            rule_name: rule.name.clone(),
            match_index: entry.match_index,
            match_name: entry.block.name.clone(),
            matched: chosen,
            reason,
        });
        if chosen {
            break;
        }
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
        backoff_ms: r.backoff.map(ms),
        previous_hosts: r.previous_hosts,
        route: r.route_id(),
        istio_default: r.is_default,
        own_route: r.has_own_route(),
    }
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

    fn set(plan: &PlanExplained, name: &str) -> Option<String> {
        plan.request_headers.iter().find(|h| h.op == "set" && h.name == name).and_then(|h| h.value.clone())
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
        assert_eq!(set(&e.branches[0].plan, "x-envoy-max-retries").as_deref(), Some("2"));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn disabled_retries_show_the_zero_the_filter_writes() {
        // Issue 8 item 9: the filter writes `x-envoy-max-retries: 0`; explain used to show none.
        let t = table(json!([{"retries": {"attempts": 0}, "route": [{"destination": {"host": "reviews"}}]}]));
        let e = t.explain(&Request::new("GET", "reviews", "/"));
        assert_eq!(e.matched.expect("matched").retries.attempts, 0);
        assert_eq!(set(&e.branches[0].plan, "x-envoy-max-retries").as_deref(), Some("0"));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn weighted_destinations_report_probabilities() {
        let t = table(json!([{"route": [
            {"destination": {"host": "reviews", "subset": "v1"}, "weight": 80},
            {"destination": {"host": "reviews", "subset": "v2"}, "weight": 20}],
            "timeout": "5s", "fault": {"abort": {"httpStatus": 500, "percentage": {"value": 5}}}}]));
        let e = t.explain(&Request::new("GET", "reviews", "/"));
        let pct: Vec<f64> = e.branches.iter().map(|b| b.percent).collect();
        assert_eq!(pct, vec![80.0, 20.0]);
        assert_eq!(e.branches[1].plan.cluster.as_deref(), Some("outbound|80|v2|reviews.default.svc.cluster.local"));
        assert_eq!(set(&e.branches[0].plan, "x-envoy-upstream-rq-timeout-ms").as_deref(), Some("5000"));
        // Branches are the plans without fault; the fault is shown with the reply it makes.
        assert!(e.branches.iter().all(|b| b.plan.abort.is_none()));
        let m = e.matched.expect("matched");
        assert_eq!(m.timeout_ms, Some(5000));
        let abort = m.fault.and_then(|f| f.abort).expect("abort");
        assert_eq!((abort.http_status, abort.percent), (Some(500), 5.0));
        assert_eq!(abort.reply.map(|r| (r.status, r.body)), Some((500, "fault filter abort".into())));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn redirects_show_the_location_the_plan_replies_with() {
        let t = table(json!([{"redirect": {"uri": "/moved", "authority": "new.example.com"}}]));
        let e = t.explain(&Request::new("GET", "reviews", "/old?a=1"));
        let reply = e.branches[0].plan.reply.clone().expect("reply");
        assert_eq!(reply.status, 301);
        assert_eq!(reply.headers, vec![("location".to_string(), "http://new.example.com/moved?a=1".to_string())]);
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
        assert_eq!(e.branches[0].plan.cluster.as_deref(), Some("outbound|80||weather.example.com"));
        assert!(e.matched.expect("default route").retries.istio_default);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn unknown_host_is_passthrough_and_unmatched_is_no_route() {
        let t = table(json!([{"match": [{"uri": {"prefix": "/a"}}], "route": [{"destination": {"host": "reviews"}}]}]));
        let e = t.explain(&Request::new("GET", "other", "/"));
        assert_eq!(e.outcome, Outcome::Passthrough);
        assert_eq!(e.branches[0].plan, PlanExplained::default());
        let e = t.explain(&Request::new("GET", "reviews", "/b"));
        assert_eq!(e.outcome, Outcome::NoRoute);
        assert_eq!(e.evaluated[0].reason.as_deref(), Some("uri \"/b\" does not match prefix \"/a\""));
        assert_eq!(e.branches[0].plan.reply.as_ref().map(|r| r.status), Some(404));
    }
}
