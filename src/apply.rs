//! From a decision to what a proxy must do with the request: header edits, a local reply, a
//! delay, an abort, mirror calls, response header edits. Pure data, so that the Proxy-Wasm
//! adapter only carries it out and every rule of the translation is tested natively.
//!
//! The translation follows what istiod would have put in Envoy's route (see
//! `shared/reference/istio-semantics.md` §2–§3): the destination becomes the routing header read
//! by the route's `cluster_header`; retries and timeouts become the router's `x-envoy-*` request
//! hints; a fault behaves like Envoy's fault filter (delay, then an independently rolled abort).

use crate::compile::{Abort, Action, Dest, HeaderOps, RetryPolicy, RouteTable, Rule};
use crate::cors::CorsAction;
use crate::decide::{Decision, Matched};
use crate::request::{Request, RequestView};
use std::time::Duration;

/// Router hint headers the filter may write. A client's copy of any of them is removed first on
/// every path, so only the filter decides retries and timeouts (the HCM strips them from
/// external clients only; internal clients keep theirs).
pub const HINT_HEADERS: [&str; 10] = [
    "x-envoy-max-retries",
    "x-envoy-retry-on",
    "x-envoy-retry-grpc-on",
    "x-envoy-retriable-status-codes",
    "x-envoy-retriable-header-names",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-upstream-rq-timeout-alt-response",
    "x-envoy-hedge-on-per-try-timeout",
    "x-envoy-upstream-stream-duration-ms",
];

/// Body of a fault abort, as Envoy's fault filter writes it.
pub const FAULT_ABORT_BODY: &str = "fault filter abort";

/// One header edit, carried out in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderOp {
    /// Replace every value (or add when absent).
    Set(String, String),
    /// Append one more value.
    Add(String, String),
    Remove(String),
}

/// A reply the proxy makes itself instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalReply {
    Http {
        status: u32,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// For a gRPC request: HTTP 200 whose `grpc-status` the proxy writes (Envoy's local reply
    /// for gRPC); `message` becomes `grpc-message`.
    Grpc {
        status: u32,
        message: String,
    },
}

impl LocalReply {
    /// The HTTP status the client sees.
    pub fn http_status(&self) -> u32 {
        match self {
            LocalReply::Http { status, .. } => *status,
            LocalReply::Grpc { .. } => 200,
        }
    }
}

/// A copy of the request to send to a mirror cluster and forget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorTarget {
    pub cluster: String,
}

/// Everything the proxy does with one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Request header edits in order: removal of client-sent routing and hint headers first,
    /// then the decision's own (routing header, hints, rewrite, header operations).
    pub request_ops: Vec<HeaderOp>,
    /// Reply at once (redirect, direct response, no route, blocked, no destination).
    pub local_reply: Option<LocalReply>,
    /// Hold the request this long before anything else (fault delay).
    pub delay: Option<Duration>,
    /// Reply with this after the delay, or at once without one (fault abort).
    pub abort: Option<LocalReply>,
    /// Mirror copies to send once the request goes upstream (never for replies or aborts).
    pub mirrors: Vec<MirrorTarget>,
    /// Response header edits for the upstream's response, in order.
    pub response_ops: Vec<HeaderOp>,
}

/// Translates a decision into a plan. `req` is the request as received.
pub fn plan(table: &RouteTable, decision: &Decision<'_>, req: &dyn RequestView) -> Plan {
    let mut p = Plan::default();
    let mut edits = Vec::new();
    match decision {
        Decision::Passthrough => {}
        // A registry host without a VirtualService: istiod's default route to its cluster.
        Decision::Default(d) => {
            edits.push(HeaderOp::Set(table.routing_header.clone(), d.cluster.clone()));
            retry_hints(table, &d.retry, &mut edits);
        }
        Decision::Blocked => p.local_reply = Some(empty_reply(502)),
        Decision::NoRoute { .. } => p.local_reply = Some(empty_reply(404)),
        Decision::Matched(m) => matched(table, m, req, &mut p, &mut edits),
    }
    // Strip what the client sent, except where the plan writes the header anyway (a set
    // replaces every value, and each host call counts).
    let written = |name: &str| edits.iter().any(|op| matches!(op, HeaderOp::Set(k, _) if k == name));
    let strip = [table.routing_header.as_str(), crate::compile::RETRY_POLICY_HEADER].into_iter().chain(HINT_HEADERS);
    for name in strip {
        if req.header(name).is_some() && !written(name) {
            p.request_ops.push(HeaderOp::Remove(name.to_string()));
        }
    }
    p.request_ops.extend(edits);
    p
}

fn matched(table: &RouteTable, m: &Matched<'_>, req: &dyn RequestView, p: &mut Plan, edits: &mut Vec<HeaderOp>) {
    let rule = m.rule;
    let dest_response = m.destination.map(|d| &d.response_headers);
    let response_ops = ops_in_order(dest_response, &rule.response_headers);
    match &rule.action {
        Action::Redirect(r) => {
            let mut headers = vec![("location".to_string(), r.location(req))];
            apply_ops(&mut headers, &response_ops);
            p.local_reply = Some(LocalReply::Http { status: r.code, headers, body: Vec::new() });
        }
        Action::DirectResponse { status, body } => {
            let mut headers = Vec::new();
            apply_ops(&mut headers, &response_ops);
            p.local_reply = Some(LocalReply::Http { status: *status, headers, body: body.clone() });
        }
        Action::Forward { .. } => match m.destination {
            // Nothing to send it to (validation refuses such a rule; Envoy would say `NC`).
            None => p.local_reply = Some(empty_reply(503)),
            Some(dest) => {
                forward_edits(table, m, dest, req, edits);
                p.response_ops = response_ops;
            }
        },
    }
    // A fault sits before the router (Istio's filter order): it applies to redirects and
    // direct responses too, and an abort means the request never reaches a mirror.
    p.delay = m.delay;
    p.abort = m.abort.map(|a| abort_reply(a, req));
    // CORS sits between the fault filter and the router (R171): a preflight it answers after
    // any delay, its response headers go on whatever answers, and an abort (which the adapter
    // sends before any local reply, like the fault filter) never reaches it. Envoy's CORS
    // filter skips a route without a route entry: redirects and direct responses.
    let forwards = matches!(rule.action, Action::Forward { .. });
    if let (Some(cors), true) = (&rule.cors, forwards) {
        match cors.evaluate(req) {
            CorsAction::Preflight { headers, .. } => {
                edits.clear();
                p.response_ops.clear();
                p.local_reply = Some(LocalReply::Http { status: 200, headers, body: Vec::new() });
            }
            CorsAction::Response(headers) => {
                let ops: Vec<HeaderOp> = headers.into_iter().map(|(k, v)| HeaderOp::Set(k, v)).collect();
                if let Some(LocalReply::Http { headers, .. }) = p.local_reply.as_mut() {
                    apply_ops(headers, &ops);
                }
                p.response_ops.extend(ops);
            }
            CorsAction::NotCors | CorsAction::OriginNotAllowed => {}
        }
    }
    // Envoy shadows neither CONNECT nor upgrades (RequestMirrorPolicy).
    let upgrade = req.method() == "CONNECT" || req.header("upgrade").is_some();
    if p.local_reply.is_none() && p.abort.is_none() && !upgrade {
        let port = table.request_port(req);
        p.mirrors = m
            .mirrors
            .iter()
            .map(|mi| MirrorTarget { cluster: mi.cluster_on(&table.cluster_template, port).into_owned() })
            .collect();
    }
}

fn forward_edits(table: &RouteTable, m: &Matched<'_>, dest: &Dest, req: &dyn RequestView, edits: &mut Vec<HeaderOp>) {
    let rule = m.rule;
    let cluster = dest.cluster_on(&table.cluster_template, table.request_port(req)).into_owned();
    edits.push(HeaderOp::Set(table.routing_header.clone(), cluster));
    retry_hints(table, &rule.retry, edits);
    if let Some(t) = rule.timeout {
        edits.push(set("x-envoy-upstream-rq-timeout-ms", millis(t)));
    }
    if let Some(path) = rule.rewritten_path(&m.entry.block, req.path()) {
        edits.push(set(":path", path));
    }
    if let Some(a) = rule.rewrite.as_ref().and_then(|rw| rw.authority.as_ref()) {
        edits.push(set(":authority", a.clone()));
    }
    edits.extend(ops_in_order(Some(&dest.request_headers), &rule.request_headers));
}

/// Retries. With `retryPolicyOnRoute` Istio's default policy is on the route taken without
/// hints (a client's copies are stripped), so it writes nothing. With `retryPolicyRoutes` too
/// (what `meshroute envoy` and the generated EnvoyFilter write) every other policy has a route
/// of its own carrying it in full — back-off, host predicate, retry priority,
/// `host_selection_retry_max_attempts`, which no hint can carry (R220–R222) — and the filter
/// names it in [`crate::compile::RETRY_POLICY_HEADER`] and writes no hint. Otherwise a policy is
/// hinted: `x-envoy-max-retries` (0 where retries are off, selecting a hand-written route without
/// a policy) and the conditions.
fn retry_hints(table: &RouteTable, r: &RetryPolicy, edits: &mut Vec<HeaderOp>) {
    // A rule whose destinations hash has a route of its own even with Istio's default policy
    // (R225); without `retryPolicyRoutes` there is none, and the default stays unhinted.
    if table.retry_policy_routes && r.has_own_route() {
        edits.push(set(crate::compile::RETRY_POLICY_HEADER, r.route_id()));
        return;
    }
    if table.retry_policy_on_route && r.is_default {
        return;
    }
    edits.push(set("x-envoy-max-retries", r.attempts.to_string()));
    if r.attempts == 0 {
        return;
    }
    for (name, value) in [
        ("x-envoy-retry-on", &r.retry_on),
        ("x-envoy-retry-grpc-on", &r.grpc_retry_on),
        ("x-envoy-retriable-status-codes", &r.retriable_status_codes),
    ] {
        if !value.is_empty() {
            edits.push(set(name, value.clone()));
        }
    }
    if let Some(t) = r.per_try_timeout {
        edits.push(set("x-envoy-upstream-rq-per-try-timeout-ms", millis(t)));
    }
}

/// Destination-level operations first, then the route's (Envoy evaluates the weighted
/// cluster's before the route's); within one level remove, then set, then add, as Envoy's
/// header parser does with istiod's translation.
fn ops_in_order(dest: Option<&HeaderOps>, route: &HeaderOps) -> Vec<HeaderOp> {
    let mut out = Vec::new();
    for ops in dest.into_iter().chain(std::iter::once(route)) {
        out.extend(ops.remove.iter().map(|k| HeaderOp::Remove(k.clone())));
        out.extend(ops.set.iter().map(|(k, v)| HeaderOp::Set(k.clone(), v.clone())));
        out.extend(ops.add.iter().map(|(k, v)| HeaderOp::Add(k.clone(), v.clone())));
    }
    out
}

fn abort_reply(a: &Abort, req: &dyn RequestView) -> LocalReply {
    match a {
        Abort::Http(status) => {
            LocalReply::Http { status: *status, headers: Vec::new(), body: FAULT_ABORT_BODY.as_bytes().to_vec() }
        }
        Abort::Grpc(code) if is_grpc(req) => LocalReply::Grpc { status: *code, message: FAULT_ABORT_BODY.into() },
        // A non-gRPC client still gets the gRPC status, written out by hand (Envoy drops any
        // content-type from a local reply without body, so none is given).
        Abort::Grpc(code) => LocalReply::Http {
            status: 200,
            headers: vec![("grpc-status".into(), code.to_string()), ("grpc-message".into(), FAULT_ABORT_BODY.into())],
            body: Vec::new(),
        },
    }
}

/// Envoy's `Grpc::Common::isGrpcRequestHeaders`: content-type `application/grpc[+…|;…]`.
pub fn is_grpc(req: &dyn RequestView) -> bool {
    req.header("content-type").is_some_and(|ct| {
        ct.strip_prefix("application/grpc").is_some_and(|rest| rest.is_empty() || rest.starts_with(['+', ';']))
    })
}

fn empty_reply(status: u32) -> LocalReply {
    LocalReply::Http { status, headers: Vec::new(), body: Vec::new() }
}

fn set(name: &str, value: String) -> HeaderOp {
    HeaderOp::Set(name.to_string(), value)
}

/// Whole milliseconds, at least 1 (0 would mean "no timeout" to Envoy).
fn millis(d: Duration) -> String {
    d.as_millis().max(1).to_string()
}

/// Carries out header edits on a header list (names compared case-insensitively).
pub fn apply_ops(headers: &mut Vec<(String, String)>, ops: &[HeaderOp]) {
    for op in ops {
        match op {
            HeaderOp::Set(k, v) => match headers.iter().position(|(n, _)| n.eq_ignore_ascii_case(k)) {
                Some(i) => {
                    headers[i].1 = v.clone();
                    let mut seen = 0usize;
                    headers.retain(|(n, _)| {
                        let same = n.eq_ignore_ascii_case(k);
                        seen += usize::from(same);
                        !same || seen == 1
                    });
                }
                None => headers.push((k.clone(), v.clone())),
            },
            HeaderOp::Add(k, v) => headers.push((k.clone(), v.clone())),
            HeaderOp::Remove(k) => headers.retain(|(n, _)| !n.eq_ignore_ascii_case(k)),
        }
    }
}

/// The headers of a mirror copy: the request as it goes upstream (rewrites and header operations
/// applied, `:authority` kept as Istio ≥ 1.28 does), without the routing header, router hints
/// (the mirror call is routed by cluster name) and framing headers (the host sets
/// `content-length` from the body it is given).
pub fn mirror_headers<S: AsRef<str>>(req: &Request<S>, plan: &Plan, routing_header: &str) -> Vec<(String, String)> {
    let own = |s: &S| s.as_ref().to_string();
    let mut h = Vec::with_capacity(req.headers.len() + 4);
    h.push((":method".to_string(), own(&req.method)));
    h.push((":path".to_string(), own(&req.path)));
    h.push((":authority".to_string(), own(&req.authority)));
    if !req.scheme.as_ref().is_empty() {
        h.push((":scheme".to_string(), own(&req.scheme)));
    }
    h.extend(req.headers.iter().map(|(k, v)| (own(k), own(v))));
    apply_ops(&mut h, &plan.request_ops);
    h.retain(|(k, _)| {
        let k = k.as_str();
        !k.eq_ignore_ascii_case(routing_header)
            && !HINT_HEADERS.iter().any(|x| k.eq_ignore_ascii_case(x))
            && !matches!(k, "content-length" | "transfer-encoding" | "connection" | "keep-alive" | "upgrade")
    });
    h
}

/// A request body collected for mirrors, up to a limit; past it the copy is given up (and the
/// mirror skipped) rather than delaying or truncating anything.
#[derive(Debug, Clone, Default)]
pub struct BodyBuffer {
    limit: u64,
    data: Vec<u8>,
    overflowed: bool,
}

impl BodyBuffer {
    pub fn new(limit: u64) -> Self {
        BodyBuffer { limit, data: Vec::new(), overflowed: false }
    }

    /// Would `more` bytes still fit? Lets the caller skip reading a chunk it cannot keep.
    pub fn fits(&self, more: usize) -> bool {
        !self.overflowed && (self.data.len() as u64).saturating_add(more as u64) <= self.limit
    }

    /// Appends a chunk; returns false (and drops what was kept) once over the limit.
    pub fn push(&mut self, chunk: &[u8]) -> bool {
        if !self.fits(chunk.len()) {
            self.overflow();
            return false;
        }
        self.data.extend_from_slice(chunk);
        true
    }

    pub fn overflow(&mut self) {
        self.overflowed = true;
        self.data = Vec::new();
    }

    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.data)
    }
}

/// Counter name of one route destination: `meshroute.route.vs.<ns>/<name>.rule.<index>.dest.<cluster>`.
/// The cluster goes last and unchanged (Istio cluster names contain dots, as in Envoy's own
/// `cluster.<name>.*` stats); dots in the VirtualService name become `_` so that the tag
/// regexes of `envoy/sidecar.yaml` and of `meshroute envoy` can cut the name into `vs`, `rule` and `dest` labels.
/// Non-forwarding rules use `redirect` or `direct-response` as the destination.
pub fn route_metric_name(vs_name: &str, rule: &Rule, dest: Option<&Dest>) -> String {
    let d = match (&rule.action, dest) {
        (Action::Redirect(_), _) => "redirect",
        (Action::DirectResponse { .. }, _) => "direct-response",
        (Action::Forward { .. }, Some(d)) => d.cluster.as_str(),
        (Action::Forward { .. }, None) => "none",
    };
    let vs: String = vs_name.chars().map(|c| if c == '.' { '_' } else { c }).collect();
    format!("{}{vs}.rule.{}.dest.{d}", crate::metrics::ROUTE_PREFIX, rule.index)
}

/// One line for the log when a configuration is applied.
pub fn summary(table: &RouteTable) -> String {
    let rules: usize = table.virtual_services.iter().map(|v| v.rules.len()).sum();
    let hosts: usize = table.virtual_services.iter().map(|v| v.hosts.len()).sum();
    let revision = match &table.revision {
        Some(r) => format!("revision {r}: "),
        None => String::new(),
    };
    format!(
        "{revision}{} VirtualService(s), {} host(s), {} rule(s), {} cluster(s); routing header {}, mirror body limit {} B, \
         mirror timeout {} ms",
        table.virtual_services.len(),
        hosts,
        rules,
        table.clusters.len(),
        table.routing_header,
        table.mirror_body_limit,
        table.mirror_timeout_ms
    )
}

/// Requests held for a fault delay, by stream id, to be released when due. Order of release
/// for equal deadlines is arrival order.
#[derive(Debug)]
pub struct DelayQueue<T> {
    items: Vec<(u32, u64, T)>,
}

impl<T> Default for DelayQueue<T> {
    fn default() -> Self {
        DelayQueue { items: Vec::new() }
    }
}

impl<T> DelayQueue<T> {
    pub fn push(&mut self, id: u32, due_nanos: u64, item: T) {
        self.items.push((id, due_nanos, item));
    }

    /// Forgets a stream (it ended while held); true if it was there.
    pub fn remove(&mut self, id: u32) -> bool {
        let before = self.items.len();
        self.items.retain(|(i, _, _)| *i != id);
        self.items.len() != before
    }

    /// Takes every item due at `now`, earliest first.
    pub fn pop_due(&mut self, now_nanos: u64) -> Vec<(u32, T)> {
        if !self.items.iter().any(|(_, due, _)| *due <= now_nanos) {
            return Vec::new();
        }
        let (mut due, rest): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.items).into_iter().partition(|(_, d, _)| *d <= now_nanos);
        self.items = rest;
        due.sort_by_key(|(_, d, _)| *d);
        due.into_iter().map(|(id, _, t)| (id, t)).collect()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::compile_json;
    use crate::request::{Request, SplitMix64};
    use serde_json::json;

    fn table(http: serde_json::Value) -> RouteTable {
        table_with(http, json!({}))
    }

    fn table_with(http: serde_json::Value, settings: serde_json::Value) -> RouteTable {
        crate::testutil::reviews_table(http, settings)
    }

    fn plan_for(t: &RouteTable, req: &Request) -> Plan {
        let d = t.decide(req, &mut SplitMix64(3));
        plan(t, &d, req)
    }

    const V1: &str = "outbound|80|v1|reviews.default.svc.cluster.local";

    fn s(k: &str, v: &str) -> HeaderOp {
        HeaderOp::Set(k.into(), v.into())
    }

    fn r(k: &str) -> HeaderOp {
        HeaderOp::Remove(k.into())
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn forward_sets_routing_header_and_istio_default_retries() {
        let t = table(json!([{"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}]));
        let p = plan_for(&t, &Request::new("GET", "reviews", "/"));
        assert_eq!(
            p.request_ops,
            vec![
                s("x-meshroute-cluster", V1),
                s("x-envoy-max-retries", "2"),
                s("x-envoy-retry-on", "connect-failure,refused-stream,retriable-status-codes"),
                s("x-envoy-retry-grpc-on", "unavailable,cancelled"),
            ]
        );
        assert_eq!(p.local_reply, None);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn with_the_default_retry_policy_on_the_route_only_other_policies_write_hints() {
        let on_route = json!({"retryPolicyOnRoute": true, "retryPolicyRoutes": true});
        let v1 = json!([{"destination": {"host": "reviews", "subset": "v1"}}]);
        // The default: only the routing header; a client's hint is still stripped.
        let t = table_with(json!([{"route": v1}]), on_route.clone());
        let p = plan_for(&t, &Request::new("GET", "reviews", "/").with_header("x-envoy-max-retries", "9"));
        assert_eq!(p.request_ops, vec![r("x-envoy-max-retries"), s("x-meshroute-cluster", V1)]);
        // A policy of the rule's own names its route (R221), whatever the client sent, and
        // writes no hint: back-off and host predicates live on that route.
        let retries = json!({"attempts": 3, "backoff": "100ms", "retryIgnorePreviousHosts": false});
        let t = table_with(json!([{"route": v1, "retries": retries}]), on_route.clone());
        let id = t.virtual_services[0].rules[0].retry.route_id();
        let sneaky = Request::new("GET", "reviews", "/").with_header("x-meshroute-retry-policy", "rwhatever");
        let p = plan_for(&t, &sneaky);
        assert_eq!(p.request_ops, vec![s("x-meshroute-cluster", V1), s("x-meshroute-retry-policy", &id)]);
        let t = table_with(json!([{"route": v1, "retries": {"attempts": 0}, "timeout": "1s"}]), on_route.clone());
        let off = t.virtual_services[0].rules[0].retry.route_id();
        let p = plan_for(&t, &Request::new("GET", "reviews", "/"));
        assert_eq!(
            p.request_ops[1..],
            [s("x-meshroute-retry-policy", &off), s("x-envoy-upstream-rq-timeout-ms", "1000")]
        );
        // The default takes the route without the header: a client's copy is removed.
        let t = table_with(json!([{"route": v1}]), on_route);
        let p = plan_for(&t, &sneaky);
        assert_eq!(p.request_ops, vec![r("x-meshroute-retry-policy"), s("x-meshroute-cluster", V1)]);
        // Ids follow the content alone.
        assert_ne!(id, off);
        let again = table_with(json!([{"route": v1, "retries": retries}]), json!({"retryPolicyOnRoute": true}));
        assert_eq!(again.virtual_services[0].rules[0].retry.route_id(), id);
        // A hand-written route configuration with the default policy only: other policies are
        // hinted, and `x-envoy-max-retries` selects its route without a policy.
        let p = plan_for(&again, &Request::new("GET", "reviews", "/"));
        assert_eq!(p.request_ops[1], s("x-envoy-max-retries", "3"));
    }

    /// R225: a rule whose destinations may hash names its own route (which carries every
    /// destination's hash policy) even with Istio's default policy — only where such routes
    /// exist (`retryPolicyRoutes`); a rule whose DestinationRule does not hash keeps the
    /// header-less default route.
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn a_rule_whose_destinations_hash_names_its_own_route() {
        let weighted = json!([{"route": [{"destination": {"host": "reviews", "subset": "v1"}, "weight": 50},
                                         {"destination": {"host": "reviews", "subset": "v2"}, "weight": 50}]}]);
        let hashing = |http: &serde_json::Value, settings: serde_json::Value| {
            let cfg = json!({"settings": settings, "resources": [
                {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                 "metadata": {"name": "reviews", "namespace": "default"}, "spec": {"hosts": ["reviews"], "http": http}},
                {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                 "metadata": {"name": "reviews", "namespace": "default"},
                 "spec": {"host": "reviews", "trafficPolicy": {"loadBalancer": {"consistentHash": {"httpHeaderName": "u"}}},
                          "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                      {"name": "v2", "labels": {"version": "v2"}}]}}]});
            let c = compile_json(cfg.to_string().as_bytes());
            assert!(!c.diagnostics.has_errors(), "{}", c.diagnostics);
            c.table.expect("table")
        };
        let routes = json!({"retryPolicyOnRoute": true, "retryPolicyRoutes": true});
        let policy_header = |t: &RouteTable| {
            let p = plan_for(t, &Request::new("GET", "reviews", "/"));
            p.request_ops.iter().find_map(|op| match op {
                HeaderOp::Set(k, v) if k == crate::compile::RETRY_POLICY_HEADER => Some(v.clone()),
                _ => None,
            })
        };
        let t = hashing(&weighted, routes.clone());
        let retry = &t.virtual_services[0].rules[0].retry;
        assert!(retry.is_default);
        assert_eq!(policy_header(&t), Some(retry.route_id()));
        // Without its route the default stays unhinted, as before.
        let t = hashing(&weighted, json!({"retryPolicyOnRoute": true}));
        let p = plan_for(&t, &Request::new("GET", "reviews", "/"));
        assert_eq!(p.request_ops.len(), 1, "{:?}", p.request_ops);
        // One destination too: its route carries its hash, and Istio's default without the
        // predicate (R225).
        let single = json!([{"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}]);
        let t = hashing(&single, routes.clone());
        assert_eq!(policy_header(&t), Some(t.virtual_services[0].rules[0].retry.route_id()));
        // No consistent hash anywhere: nothing to carry.
        assert_eq!(policy_header(&table_with(weighted, routes)), None);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn client_routing_and_hint_headers_are_removed_on_every_path() {
        let t = table(json!([{"match": [{"uri": {"prefix": "/a"}}],
                               "route": [{"destination": {"host": "reviews", "subset": "v1"}}]}]));
        let sneaky = |authority: &str, path: &str| {
            Request::new("GET", authority, path)
                .with_header("x-meshroute-cluster", "outbound|80|v2|reviews.default.svc.cluster.local")
                .with_header("x-envoy-max-retries", "9")
                .with_header("x-envoy-upstream-rq-timeout-ms", "1")
        };
        // Passthrough and no route: only the stripping.
        for (auth, path, status) in [("other", "/a", None), ("reviews", "/b", Some(404))] {
            let p = plan_for(&t, &sneaky(auth, path));
            assert_eq!(
                p.request_ops,
                vec![r("x-meshroute-cluster"), r("x-envoy-max-retries"), r("x-envoy-upstream-rq-timeout-ms")]
            );
            assert_eq!(p.local_reply.map(|l| l.http_status()), status);
        }
        // Routed: headers the plan sets are replaced, not removed first.
        let p = plan_for(&t, &sneaky("reviews", "/a"));
        assert_eq!(p.request_ops[0], r("x-envoy-upstream-rq-timeout-ms"));
        assert_eq!(p.request_ops[1], s("x-meshroute-cluster", V1));
        assert!(p.request_ops.contains(&s("x-envoy-max-retries", "2")));
        assert!(!p.request_ops.contains(&r("x-meshroute-cluster")));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn configured_routing_header_is_the_one_stripped_and_set() {
        let t = table_with(
            json!([{"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}]),
            json!({"routingHeader": "x-route-to"}),
        );
        let req = Request::new("GET", "elsewhere", "/").with_header("x-route-to", "evil");
        assert_eq!(plan_for(&t, &req).request_ops, vec![r("x-route-to")]);
        let p = plan_for(&t, &Request::new("GET", "reviews", "/"));
        assert_eq!(p.request_ops[0], s("x-route-to", V1));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn retries_timeouts_and_per_try_become_router_hints() {
        let t = table(json!([
            {"match": [{"headers": {"x-priority": {"exact": "high"}}}], "timeout": "5s",
             "retries": {"attempts": 3, "perTryTimeout": "250ms", "retryOn": "5xx,503,unavailable"},
             "route": [{"destination": {"host": "reviews", "subset": "v1"}}]},
            {"timeout": "0.5s", "retries": {"attempts": 0},
             "route": [{"destination": {"host": "reviews", "subset": "v1"}}]}
        ]));
        let p = plan_for(&t, &Request::new("GET", "reviews", "/").with_header("x-priority", "high"));
        assert_eq!(
            p.request_ops[1..],
            [
                s("x-envoy-max-retries", "3"),
                s("x-envoy-retry-on", "5xx,retriable-status-codes"),
                s("x-envoy-retry-grpc-on", "unavailable"),
                s("x-envoy-retriable-status-codes", "503"),
                s("x-envoy-upstream-rq-per-try-timeout-ms", "250"),
                s("x-envoy-upstream-rq-timeout-ms", "5000"),
            ]
        );
        let p = plan_for(&t, &Request::new("GET", "reviews", "/"));
        assert_eq!(p.request_ops[1..], [s("x-envoy-max-retries", "0"), s("x-envoy-upstream-rq-timeout-ms", "500")]);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn rewrite_and_header_operations_destination_first_then_route() {
        let t = table(json!([{"match": [{"uri": {"prefix": "/old"}}],
            "rewrite": {"uri": "/new", "authority": "ratings"},
            "headers": {"request": {"set": {"x-a": "route"}, "add": {"x-b": "r"}, "remove": ["x-c"]},
                        "response": {"set": {"x-resp": "route"}}},
            "route": [{"destination": {"host": "reviews", "subset": "v1"},
                       "headers": {"request": {"set": {"x-a": "dest"}},
                                   "response": {"add": {"x-resp-d": "1"}}}}]}]));
        let req = Request::new("GET", "reviews", "/old/x?q=1");
        let p = plan_for(&t, &req);
        let tail: Vec<_> =
            p.request_ops.iter().skip_while(|o| !matches!(o, HeaderOp::Set(k, _) if k == ":path")).collect();
        assert_eq!(
            tail,
            [
                &s(":path", "/new/x?q=1"),
                &s(":authority", "ratings"),
                &s("x-a", "dest"),
                &r("x-c"),
                &s("x-a", "route"),
                &HeaderOp::Add("x-b".into(), "r".into()),
            ]
        );
        assert_eq!(p.response_ops, vec![HeaderOp::Add("x-resp-d".into(), "1".into()), s("x-resp", "route")]);
        let mut h = vec![("x-c".to_string(), "1".to_string())];
        apply_ops(&mut h, &p.request_ops);
        assert!(h.contains(&("x-a".into(), "route".into())) && !h.iter().any(|(k, _)| k == "x-c"));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn redirect_and_direct_response_are_local_replies_with_response_headers() {
        let t = table(json!([
            {"match": [{"uri": {"prefix": "/r"}}], "redirect": {"uri": "/moved", "redirectCode": 302},
             "headers": {"response": {"set": {"x-why": "moved"}}}},
            {"directResponse": {"status": 418, "body": {"string": "teapot"}}}
        ]));
        let p = plan_for(&t, &Request::new("GET", "reviews", "/r?a=1"));
        assert_eq!(
            p.local_reply,
            Some(LocalReply::Http {
                status: 302,
                headers: vec![("location".into(), "http://reviews/moved?a=1".into()), ("x-why".into(), "moved".into())],
                body: vec![],
            })
        );
        assert!(p.mirrors.is_empty() && p.response_ops.is_empty());
        let p = plan_for(&t, &Request::new("GET", "reviews", "/"));
        assert_eq!(p.local_reply, Some(LocalReply::Http { status: 418, headers: vec![], body: b"teapot".to_vec() }));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn fault_delay_then_abort_and_an_abort_suppresses_mirrors() {
        let t = table(json!([{"fault": {"delay": {"fixedDelay": "7s", "percentage": {"value": 100}},
                                         "abort": {"httpStatus": 503, "percentage": {"value": 100}}},
                               "mirror": {"host": "reviews", "subset": "v2"},
                               "route": [{"destination": {"host": "reviews", "subset": "v1"}}]}]));
        let p = plan_for(&t, &Request::new("GET", "reviews", "/"));
        assert_eq!(p.delay, Some(Duration::from_secs(7)));
        assert_eq!(
            p.abort,
            Some(LocalReply::Http { status: 503, headers: vec![], body: FAULT_ABORT_BODY.as_bytes().to_vec() })
        );
        assert!(p.mirrors.is_empty());
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn cors_preflight_is_answered_after_the_fault_delay_and_never_mirrored() {
        let cors = json!({"allowOrigins": [{"exact": "https://a"}], "allowMethods": ["GET"]});
        let t = table(json!([
            {"match": [{"uri": {"prefix": "/abort"}}], "corsPolicy": cors,
             "fault": {"abort": {"httpStatus": 418, "percentage": {"value": 100}}},
             "route": [{"destination": {"host": "reviews", "subset": "v1"}}]},
            {"match": [{"uri": {"prefix": "/direct"}}], "corsPolicy": cors,
             "directResponse": {"status": 200, "body": {"string": "d"}}},
            {"corsPolicy": cors, "fault": {"delay": {"fixedDelay": "1s", "percentage": {"value": 100}}},
             "mirror": {"host": "reviews", "subset": "v2"}, "headers": {"response": {"set": {"x-r": "1"}}},
             "route": [{"destination": {"host": "reviews", "subset": "v1"}}]}
        ]));
        let pre = |path: &str| {
            Request::new("OPTIONS", "reviews", path)
                .with_header("origin", "https://a")
                .with_header("access-control-request-method", "GET")
        };
        let p = plan_for(&t, &pre("/"));
        let allow = vec![
            ("access-control-allow-origin".to_string(), "https://a".to_string()),
            ("access-control-allow-methods".to_string(), "GET".to_string()),
        ];
        assert_eq!(p.local_reply, Some(LocalReply::Http { status: 200, headers: allow, body: vec![] }));
        assert_eq!(p.delay, Some(Duration::from_secs(1)));
        assert!(p.mirrors.is_empty() && p.request_ops.is_empty() && p.response_ops.is_empty());
        // The actual request: forwarded and mirrored, CORS set after the rule's response headers.
        let p = plan_for(&t, &Request::new("GET", "reviews", "/").with_header("origin", "https://a"));
        assert_eq!(p.mirrors.len(), 1);
        assert_eq!(p.response_ops, vec![s("x-r", "1"), s("access-control-allow-origin", "https://a")]);
        // An abort is sent instead of anything else, without CORS headers; a direct response
        // has no route entry.
        let p = plan_for(&t, &pre("/abort"));
        assert_eq!(p.abort, Some(abort_reply(&Abort::Http(418), &pre("/abort"))));
        assert!(p.mirrors.is_empty());
        let p = plan_for(&t, &pre("/direct"));
        assert_eq!(p.local_reply, Some(LocalReply::Http { status: 200, headers: vec![], body: b"d".to_vec() }));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn grpc_abort_is_http_200_with_grpc_status() {
        let t = table(json!([{"fault": {"abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 100}}},
                               "route": [{"destination": {"host": "reviews"}}]}]));
        let grpc = Request::new("POST", "reviews", "/pkg.Svc/M").with_header("content-type", "application/grpc+proto");
        assert_eq!(plan_for(&t, &grpc).abort, Some(LocalReply::Grpc { status: 14, message: FAULT_ABORT_BODY.into() }));
        let plain = plan_for(&t, &Request::new("GET", "reviews", "/")).abort.expect("abort");
        assert_eq!(plain.http_status(), 200);
        let LocalReply::Http { headers, .. } = plain else { panic!("http form") };
        assert!(headers.contains(&("grpc-status".into(), "14".into())));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn mirror_copy_keeps_authority_and_drops_routing_and_framing() {
        let t = table(json!([{"mirror": {"host": "reviews", "subset": "v2"},
                               "headers": {"request": {"set": {"x-added": "1"}}},
                               "route": [{"destination": {"host": "reviews", "subset": "v1"}}]}]));
        let req = Request::new("POST", "reviews:9080", "/p")
            .with_header("content-length", "3")
            .with_header("x-envoy-retry-on", "5xx")
            .with_header("x-user", "u");
        let p = plan_for(&t, &req);
        // No port in the destination and no registry entry: the request's port (istio
        // `GetDestinationCluster`).
        assert_eq!(
            p.mirrors,
            vec![MirrorTarget { cluster: "outbound|9080|v2|reviews.default.svc.cluster.local".into() }]
        );
        let h = mirror_headers(&req, &p, &t.routing_header);
        assert_eq!(
            h,
            vec![
                (":method".into(), "POST".into()),
                (":path".into(), "/p".into()),
                (":authority".into(), "reviews:9080".into()),
                (":scheme".into(), "http".into()),
                ("x-user".into(), "u".into()),
                ("x-added".into(), "1".into()),
            ]
        );
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn registry_host_without_virtual_service_takes_the_default_route() {
        let cfg = json!({"resources": [
            {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
             "metadata": {"name": "weather", "namespace": "default"},
             "spec": {"hosts": ["weather-api.example.com"], "location": "MESH_EXTERNAL", "resolution": "DNS",
                      "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}]}}]});
        let c = compile_json(cfg.to_string().as_bytes());
        let t = c.table.expect("table");
        let req = Request::new("GET", "weather-api.example.com", "/").with_header("x-envoy-max-retries", "9");
        let p = plan_for(&t, &req);
        assert_eq!(p.request_ops[0], s("x-meshroute-cluster", "outbound|80||weather-api.example.com"));
        assert!(p.request_ops.contains(&s("x-envoy-max-retries", "2")));
        assert_eq!(p.local_reply, None);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn connect_and_upgrades_are_not_mirrored() {
        let t = table(json!([{"mirror": {"host": "reviews", "subset": "v2"},
                               "route": [{"destination": {"host": "reviews", "subset": "v1"}}]}]));
        assert_eq!(plan_for(&t, &Request::new("GET", "reviews", "/")).mirrors.len(), 1);
        let ws = Request::new("GET", "reviews", "/").with_header("upgrade", "websocket");
        assert!(plan_for(&t, &ws).mirrors.is_empty());
        assert!(plan_for(&t, &Request::new("CONNECT", "reviews", "/")).mirrors.is_empty());
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn unknown_host_under_registry_only_is_502() {
        let t = table_with(
            json!([{"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}]),
            json!({"outboundTrafficPolicy": "REGISTRY_ONLY"}),
        );
        assert_eq!(plan_for(&t, &Request::new("GET", "nope", "/")).local_reply.map(|l| l.http_status()), Some(502));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn apply_ops_set_collapses_repeats_and_remove_is_case_insensitive() {
        let mut h = vec![("X-A".to_string(), "1".to_string()), ("x-a".to_string(), "2".to_string())];
        apply_ops(&mut h, &[s("x-a", "3"), HeaderOp::Add("x-b".into(), "4".into()), r("X-B")]);
        assert_eq!(h, vec![("X-A".to_string(), "3".to_string())]);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn body_buffer_gives_up_past_the_limit() {
        let mut b = BodyBuffer::new(4);
        assert!(b.push(b"ab") && b.push(b"cd"));
        assert!(!b.fits(1));
        assert!(!b.push(b"e"));
        assert!(b.overflowed() && b.take().is_empty());
        let mut ok = BodyBuffer::new(4);
        ok.push(b"abcd");
        assert_eq!(ok.take(), b"abcd");
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn delay_queue_releases_due_items_earliest_first_and_forgets_removed() {
        let mut q = DelayQueue::default();
        q.push(1, 30, 'a');
        q.push(2, 10, 'b');
        q.push(3, 20, 'c');
        q.push(4, 99, 'd');
        assert!(q.remove(3));
        assert!(!q.remove(3));
        assert!(q.pop_due(5).is_empty());
        assert_eq!(q.pop_due(30), vec![(2, 'b'), (1, 'a')]);
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop_due(100), vec![(4, 'd')]);
        assert!(q.is_empty());
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn route_metric_names_carry_vs_rule_and_cluster() {
        let t = table(json!([{"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}]));
        let vs = &t.virtual_services[0];
        let rule = &vs.rules[0];
        let Action::Forward { destinations, .. } = &rule.action else { panic!("forward") };
        assert_eq!(
            route_metric_name("default/my.vs", rule, destinations.first()),
            format!("meshroute.route.vs.default/my_vs.rule.0.dest.{V1}")
        );
        assert!(summary(&t).starts_with("1 VirtualService(s), "));
    }
}
