//! VirtualService: Istio `ValidateVirtualService` / `validateHTTPRoute` and the webhook's
//! unreachable-rule analysis (IST0130 / IST0131).

use super::common::{
    check_duration, check_enum, check_export_to, check_labels, check_regex, is_dns1123_label, is_header_token, is_ip,
    validate_fqdn, validate_header_value, validate_percentage, validate_port, validate_wildcard_domain,
};
use super::{is_catch_all, retriable_status_code, Ctx, Place, RETRY_ON_GRPC, RETRY_ON_HTTP};
use crate::crd::{self, HttpMatchRequest, HttpRoute, StringMatch};
use crate::diag::Severity;
use crate::host;
use std::collections::{BTreeMap, HashMap, HashSet};

const KB: usize = 1024;
const MB: usize = 1024 * KB;
const JWT_CLAIM_PREFIX: &str = "@request.auth.claims";

pub(super) fn check(cx: &mut Ctx<'_>, at: &Place<'_>, vs: &crd::VirtualService) {
    // No hosts: a delegate, merged into the roots that name it (crate::delegate, R180).
    if vs.hosts.is_empty() {
        if !vs.gateways.is_empty() {
            cx.error(at, "spec.gateways", "delegate virtual service must have no gateways specified");
        }
        if !vs.tls.is_empty() {
            cx.error(at, "spec.tls", "delegate virtual service must have no tls route specified");
        }
        if !vs.tcp.is_empty() {
            cx.error(at, "spec.tcp", "delegate virtual service must have no tcp route specified");
        }
    }
    let applies_to_gateway = !vs.gateways.is_empty() && !vs.gateways.iter().any(|g| g == "mesh");
    check_gateway_names(cx, at, "spec.gateways", &vs.gateways);

    let applies_to_mesh = vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh");
    // A gateway-bound VirtualService with SNI matches may name AUTO_PASSTHROUGH's
    // `outbound_.PORT_.SUBSET_.HOST` hosts (`ValidateWildcardDomainForVirtualServiceBoundToGateway`).
    let sni = vs.tls.iter().any(|t| t.matches.iter().any(|m| !m.sni_hosts.is_empty()));
    let mut all_hosts_valid = true;
    for (i, h) in vs.hosts.iter().enumerate() {
        let checked = if applies_to_gateway {
            super::l4_routes::gateway_bound_domain(sni, h)
        } else {
            validate_wildcard_domain(h)
        };
        match checked {
            Err(e) if !is_ip(h) => {
                cx.error(at, format!("spec.hosts[{i}]"), e);
                all_hosts_valid = false;
            }
            Ok(()) if applies_to_mesh && h == "*" => {
                cx.error(
                    at,
                    format!("spec.hosts[{i}]"),
                    "wildcard host * is not allowed for virtual services bound to the mesh gateway",
                );
                all_hosts_valid = false;
            }
            _ => {}
        }
    }
    if all_hosts_valid {
        for i in 0..vs.hosts.len() {
            for j in i + 1..vs.hosts.len() {
                if host::overlaps(&vs.hosts[i], &vs.hosts[j]) {
                    cx.error(
                        at,
                        format!("spec.hosts[{j}]"),
                        format!("duplicate hosts in virtual service: {} & {}", vs.hosts[i], vs.hosts[j]),
                    );
                }
            }
        }
    }

    if vs.http.is_empty() && vs.tcp.is_empty() && vs.tls.is_empty() {
        cx.error(at, "spec", "http, tcp or tls must be provided in virtual service");
    }
    // The HTTP filter never sees TCP connections: `meshroute envoy` builds listeners for these
    // routes (R190), an Istio sidecar gets them from istiod.
    if !vs.tls.is_empty() {
        cx.info(
            at,
            "spec.tls",
            "tls routes are applied by the listeners `meshroute envoy` generates, not by the HTTP filter",
        );
    }
    if !vs.tcp.is_empty() {
        cx.info(
            at,
            "spec.tcp",
            "tcp routes are applied by the listeners `meshroute envoy` generates, not by the HTTP filter",
        );
    }
    for (i, route) in vs.http.iter().enumerate() {
        check_http_route(cx, at, vs, applies_to_gateway, i, route);
    }
    check_export_to(cx, at, at.namespace(), &vs.export_to, false);
    analyze_unreachable_rules(cx, at, &vs.http);
}

/// Istio `validateGatewayNames`: `mesh`, `name`, `ns/name` (both DNS labels), or the legacy
/// `name.ns.svc.cluster.local` (a warning).
pub(super) fn check_gateway_names(cx: &mut Ctx<'_>, at: &Place<'_>, path: &str, names: &[String]) {
    for (i, g) in names.iter().enumerate() {
        let p = format!("{path}[{i}]");
        match g.split_once('/') {
            None => {
                if g.contains('.') {
                    let parts: Vec<&str> = g.split('.').collect();
                    let recommended = format!("{}/{}", parts.get(1).unwrap_or(&""), parts[0]);
                    cx.warn(
                        at,
                        p.as_str(),
                        format!("using legacy gatewayName format {g:?}; prefer the <namespace>/<name> format: {recommended:?}"),
                    );
                }
                if let Err(e) = validate_fqdn(g) {
                    cx.error(at, p, e);
                }
                // Istio's `validateGatewayNames` returns after the first name without `/`.
                return;
            }
            Some((ns, name)) => {
                if ns.is_empty() || name.is_empty() {
                    cx.error(at, p.as_str(), "config namespace and gateway name cannot be empty");
                }
                if !is_dns1123_label(ns) {
                    cx.error(at, p.as_str(), format!("invalid value for namespace: {ns:?}"));
                }
                if !is_dns1123_label(name) {
                    cx.error(at, p, format!("invalid value for gateway name: {name:?}"));
                }
            }
        }
    }
}

fn check_http_route(
    cx: &mut Ctx<'_>,
    at: &Place<'_>,
    vs: &crd::VirtualService,
    applies_to_gateway: bool,
    index: usize,
    route: &HttpRoute,
) {
    let p = &format!("spec.http[{index}]");
    let rule = rule_name(route, index);
    check_route_conflicts(cx, at, p, route);
    if vs.hosts.is_empty() && route.delegate.is_some() {
        cx.error(at, format!("{p}.delegate"), "delegate HTTP route cannot contain delegate");
    }
    for (j, m) in route.matches.iter().enumerate() {
        check_match(cx, at, vs, applies_to_gateway, &format!("{p}.match[{j}]"), m);
    }
    if let Some(h) = &route.headers {
        check_header_operations(cx, at, &format!("{p}.headers"), h);
    }
    check_authority_rewrite(cx, at, p, route);
    if let Some(c) = &route.cors_policy {
        check_cors(cx, at, &format!("{p}.corsPolicy"), c);
    }
    if let Some(f) = &route.fault {
        check_fault(cx, at, &format!("{p}.fault"), f);
    }
    check_mirrors(cx, at, p, route);
    if let Some(r) = &route.redirect {
        check_redirect(cx, at, &format!("{p}.redirect"), r);
    }
    if let Some(d) = &route.direct_response {
        check_direct_response(cx, at, &format!("{p}.directResponse"), d);
    }
    if let Some(r) = &route.retries {
        check_retries(cx, at, &format!("{p}.retries"), &rule, r);
    }
    if let Some(r) = &route.rewrite {
        check_rewrite(cx, at, &format!("{p}.rewrite"), r);
    }
    check_route_destinations(cx, at, p, &rule, &route.route);
    if route.timeout.is_some() {
        check_duration(cx, at, &format!("{p}.timeout"), route.timeout.as_deref());
    }
}

/// Istio `validateHTTPRouteConflict`: exactly one of route, redirect, directResponse, or for a
/// root rule a delegate and neither route nor redirect.
fn check_route_conflicts(cx: &mut Ctx<'_>, at: &Place<'_>, p: &str, r: &HttpRoute) {
    if r.delegate.is_some() {
        let name = r.name.as_deref().unwrap_or_default();
        if r.redirect.is_some() {
            cx.error(at, format!("{p}.redirect"), format!("root HTTP route {name} must not specify redirect"));
        }
        if !r.route.is_empty() {
            cx.error(at, format!("{p}.route"), format!("root HTTP route {name} must not specify route"));
        }
    } else if r.redirect.is_some() {
        let rp = format!("{p}.redirect");
        if !r.route.is_empty() {
            cx.error(at, rp.as_str(), "HTTP route cannot contain both route and redirect");
        }
        if r.fault.is_some() {
            cx.error(at, rp.as_str(), "HTTP route cannot contain both fault and redirect");
        }
        if r.rewrite.is_some() {
            cx.error(at, rp.as_str(), "HTTP route rule cannot contain both rewrite and redirect");
        }
        if r.direct_response.is_some() {
            cx.error(at, rp.as_str(), "HTTP route rule cannot contain both direct_response and redirect");
        }
    } else if r.direct_response.is_some() {
        let dp = format!("{p}.directResponse");
        if !r.route.is_empty() {
            cx.error(at, dp.as_str(), "HTTP route cannot contain both route and direct_response");
        }
        if r.fault.is_some() {
            cx.error(at, dp.as_str(), "HTTP route cannot contain both fault and direct_response");
        }
        if r.rewrite.is_some() {
            cx.error(at, dp.as_str(), "HTTP route rule cannot contain both rewrite and direct_response");
        }
    } else if r.route.is_empty() {
        cx.error(at, p, "HTTP route, redirect or direct_response is required");
    }
    if r.mirror.is_some() && !r.mirrors.is_empty() {
        cx.error(at, format!("{p}.mirrors"), "HTTP route cannot contain both mirror and mirrors");
    }
}

/// How strictly a StringMatch is checked (Istio `validateStringMatch` vs
/// `validateStringMatchRegexp`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Strictness {
    /// Only the regex is checked; an empty prefix is allowed (uri).
    RegexOnly,
    /// An empty prefix is rejected too (scheme, method, authority, headers, queryParams).
    NoEmptyPrefix,
}

fn check_string_match(
    cx: &mut Ctx<'_>,
    at: &Place<'_>,
    path: &str,
    field: &str,
    m: &StringMatch,
    strictness: Strictness,
) {
    let set = [m.exact.is_some(), m.prefix.is_some(), m.regex.is_some()].iter().filter(|s| **s).count();
    if set > 1 {
        cx.error(at, path, format!("{field:?}: only one of exact, prefix or regex may be set"));
        return;
    }
    if strictness == Strictness::NoEmptyPrefix && m.prefix.as_deref() == Some("") {
        cx.error(at, format!("{path}.prefix"), format!("{field:?}: prefix string match should not be empty"));
    }
    if let Some(re) = &m.regex {
        check_regex(cx, at, &format!("{path}.regex"), field, re, true);
    }
}

/// Istio `ValidateHTTPHeaderNameOrJwtClaimRoute` for match keys, plus the API's "keys must be
/// lowercase" as a warning (Envoy matches header names case-insensitively, so Istio accepts it).
fn check_match_header_name(cx: &mut Ctx<'_>, at: &Place<'_>, path: &str, name: &str) {
    if name.is_empty() {
        cx.error(at, path, "header name cannot be empty");
    } else if name.starts_with(JWT_CLAIM_PREFIX) {
        cx.unsupported(at, path, format!("JWT claim match {name}"), "the filter cannot read JWT claims");
    } else if matches!(name, ":method" | ":scheme" | ":authority" | ":path" | ":status") {
    } else if !is_header_token(name) {
        cx.error(at, path, format!("header name {name} is not a valid header name"));
    } else if name.bytes().any(|b| b.is_ascii_uppercase()) {
        cx.own_warn(
            at,
            path,
            format!("header names must be lowercase (the match uses {:?})", name.to_ascii_lowercase()),
        );
    }
}

fn check_match(
    cx: &mut Ctx<'_>,
    at: &Place<'_>,
    vs: &crd::VirtualService,
    applies_to_gateway: bool,
    p: &str,
    m: &HttpMatchRequest,
) {
    for (name, sm) in &m.headers {
        let hp = format!("{p}.headers.{name}");
        check_match_header_name(cx, at, &hp, name);
        check_string_match(cx, at, &hp, "headers", sm, Strictness::NoEmptyPrefix);
    }
    for (name, sm) in &m.without_headers {
        let hp = format!("{p}.withoutHeaders.{name}");
        check_match_header_name(cx, at, &hp, name);
        // `regex: "*"` is istiod's spelling of "present", not a regex.
        if sm.regex.as_deref() != Some("*") {
            check_string_match(cx, at, &hp, "withoutHeaders", sm, Strictness::NoEmptyPrefix);
        }
    }
    if !applies_to_gateway {
        for name in m.headers.keys().chain(m.without_headers.keys()).filter(|k| k.starts_with(JWT_CLAIM_PREFIX)) {
            cx.error(
                at,
                format!("{p}.headers.{name}"),
                format!(
                    "JWT claim based routing (key: {name}) is only supported for gateway, found no gateways: [{}]",
                    vs.gateways.join(" ")
                ),
            );
        }
    }
    if let Some(u) = &m.uri {
        check_string_match(cx, at, &format!("{p}.uri"), "uri", u, Strictness::RegexOnly);
    }
    for (field, sm) in [("scheme", &m.scheme), ("method", &m.method), ("authority", &m.authority)] {
        if let Some(sm) = sm {
            check_string_match(cx, at, &format!("{p}.{field}"), field, sm, Strictness::NoEmptyPrefix);
        }
    }
    for (name, sm) in &m.query_params {
        check_string_match(cx, at, &format!("{p}.queryParams.{name}"), "queryParams", sm, Strictness::NoEmptyPrefix);
    }
    if let Some(port) = m.port.filter(|p| *p != 0) {
        if let Err(e) = validate_port(i64::from(port)) {
            cx.error(at, format!("{p}.port"), e);
        }
    }
    // Both paths only when there is something to check: formatting them for every block of a
    // big table was a third of the allocations of validating a plain match.
    if !m.source_labels.is_empty() {
        check_labels(cx, at, &format!("{p}.sourceLabels"), &m.source_labels);
    }
    if !m.gateways.is_empty() {
        check_gateway_names(cx, at, &format!("{p}.gateways"), &m.gateways);
    }
    if let Some(ns) = m.source_namespace.as_deref().filter(|s| !s.is_empty()) {
        if !is_dns1123_label(ns) {
            cx.error(at, format!("{p}.sourceNamespace"), format!("sourceNamespace match {ns} is invalid"));
        }
    }
    // istiod `sourceMatchHTTP`: a match-level `gateways` list decides alone; sourceLabels and
    // sourceNamespace are then never looked at.
    let has_source_selector =
        !m.source_labels.is_empty() || m.source_namespace.as_deref().is_some_and(|s| !s.is_empty());
    if has_source_selector && !m.gateways.is_empty() {
        cx.own_warn(
            at,
            p,
            "sourceLabels/sourceNamespace are ignored when the match lists gateways (Istio checks only the gateways then)",
        );
    } else if has_source_selector && applies_to_gateway {
        cx.own_warn(
            at,
            p,
            "sourceLabels/sourceNamespace only select sidecars when the VirtualService's gateways include \"mesh\"; here they are checked against the gateway workloads only",
        );
    }
}

/// Istio header-operation checks: names (`:`-prefixed and `host` only where allowed) and values.
fn check_header_operations(cx: &mut Ctx<'_>, at: &Place<'_>, p: &str, h: &crd::Headers) {
    if let Some(req) = &h.request {
        for (op, map) in [("set", &req.set), ("add", &req.add)] {
            for (name, value) in map {
                let path = format!("{p}.request.{op}.{name}");
                check_operation_name(cx, at, &path, name, true);
                check_header_value(cx, at, &path, value);
            }
        }
        for (k, name) in req.remove.iter().enumerate() {
            check_operation_name(cx, at, &format!("{p}.request.remove[{k}]"), name, false);
        }
    }
    if let Some(resp) = &h.response {
        for (op, map) in [("set", &resp.set), ("add", &resp.add)] {
            for (name, value) in map {
                let path = format!("{p}.response.{op}.{name}");
                check_operation_name(cx, at, &path, name, false);
                check_header_value(cx, at, &path, value);
            }
        }
        for (k, name) in resp.remove.iter().enumerate() {
            check_operation_name(cx, at, &format!("{p}.response.remove[{k}]"), name, false);
        }
    }
}

fn is_authority_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

/// `ValidateHTTPHeaderWithAuthorityOperationName` (request set/add: `:authority`/`host` allowed,
/// they rewrite the authority) and `ValidateHTTPHeaderOperationName` (everything else).
fn check_operation_name(cx: &mut Ctx<'_>, at: &Place<'_>, path: &str, name: &str, authority_allowed: bool) {
    if name.is_empty() {
        cx.error(at, path, "header name cannot be empty");
    } else if authority_allowed && is_authority_header(name) {
    } else if name.eq_ignore_ascii_case("host") {
        cx.error(at, path, format!("invalid header {name:?}: cannot set Host header"));
    } else if name.starts_with(':') {
        cx.error(at, path, format!("invalid header {name:?}: header cannot have \":\" prefix"));
    } else if !is_header_token(name) {
        cx.error(at, path, format!("header name {name} is not a valid header name"));
    }
}

fn check_header_value(cx: &mut Ctx<'_>, at: &Place<'_>, path: &str, value: &str) {
    if let Err(problem) = validate_header_value(value) {
        super::common::report(cx, at, path, problem);
    }
}

/// Istio `validateAuthorityRewrite`: the authority is rewritten in one place only.
fn check_authority_rewrite(cx: &mut Ctx<'_>, at: &Place<'_>, p: &str, r: &HttpRoute) {
    let mut current = r.rewrite.as_ref().and_then(|rw| rw.authority.clone()).filter(|a| !a.is_empty());
    let Some(req) = r.headers.as_ref().and_then(|h| h.request.as_ref()) else { return };
    for (op, map) in [("set", &req.set), ("add", &req.add)] {
        for (k, v) in map.iter().filter(|(k, _)| is_authority_header(k)) {
            if let Some(have) = &current {
                cx.error(
                    at,
                    format!("{p}.headers.request.{op}.{k}"),
                    format!("authority header cannot be set multiple times: have {have:?}, attempting to set {v:?}"),
                );
                return;
            }
            current = Some(v.clone());
        }
    }
}

const CORS_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*"];

fn check_cors(cx: &mut Ctx<'_>, at: &Place<'_>, p: &str, c: &crd::CorsPolicy) {
    for (i, o) in c.allow_origins.iter().enumerate() {
        let path = format!("{p}.allowOrigins[{i}]");
        let value = o.exact.as_deref().or(o.prefix.as_deref()).or(o.regex.as_deref()).unwrap_or_default();
        if value.is_empty() {
            cx.error(at, path, format!("'{value}' is not a valid match type for CORS allow origins"));
            continue;
        }
        check_string_match(cx, at, &path, "corsPolicy.allowOrigins", o, Strictness::RegexOnly);
    }
    if !c.allow_origin.is_empty() {
        cx.warn(at, format!("{p}.allowOrigin"), "allowOrigin is deprecated; use allowOrigins");
    }
    for (i, m) in c.allow_methods.iter().enumerate() {
        if !CORS_METHODS.contains(&m.as_str()) {
            cx.error(at, format!("{p}.allowMethods[{i}]"), format!("{m:?} is not a supported HTTP method"));
        }
    }
    for (field, names) in [("allowHeaders", &c.allow_headers), ("exposeHeaders", &c.expose_headers)] {
        for (i, n) in names.iter().enumerate() {
            let path = format!("{p}.{field}[{i}]");
            if n.is_empty() {
                cx.error(at, path, "header name cannot be empty");
            } else if n != "*" && !is_header_token(n) {
                cx.error(at, path, format!("header name {n} is not a valid header name"));
            }
        }
    }
    if let Some(max_age) = &c.max_age {
        match super::common::validate_duration(max_age) {
            Err(e) => cx.error(at, format!("{p}.maxAge"), e),
            Ok(d) if d.subsec_nanos() != 0 => {
                cx.error(at, format!("{p}.maxAge"), "max_age duration is accurate only to seconds precision")
            }
            Ok(_) => {}
        }
    }
    if let Some(u) = &c.unmatched_preflights {
        check_enum(cx, at, &format!("{p}.unmatchedPreflights"), u, &["UNSPECIFIED", "FORWARD", "IGNORE"]);
    }
}

fn check_fault(cx: &mut Ctx<'_>, at: &Place<'_>, p: &str, f: &crd::HttpFaultInjection) {
    if f.abort.is_none() && f.delay.is_none() {
        cx.error(at, p, "HTTP fault injection must have an abort and/or a delay");
    }
    if let Some(a) = &f.abort {
        let ap = format!("{p}.abort");
        if let Some(pct) = &a.percentage {
            if let Err(e) = validate_percentage(pct.value) {
                cx.error(at, format!("{ap}.percentage.value"), e);
            }
        } else {
            cx.own_warn(at, format!("{ap}.percentage"), "no percentage: no request will be aborted");
        }
        let kinds = [a.http_status.is_some(), a.grpc_status.is_some(), a.http2_error.is_some()];
        if kinds.iter().filter(|k| **k).count() > 1 {
            cx.error(at, ap.as_str(), "only one of httpStatus, grpcStatus or http2Error may be set");
        }
        if let Some(s) = a.http_status {
            if !(200..=599).contains(&s) {
                cx.error(at, format!("{ap}.httpStatus"), format!("HTTP status {s} is not in range 200-599"));
            }
        }
        if let Some(g) = &a.grpc_status {
            if super::grpc_status_code(g).is_none() {
                cx.error(
                    at,
                    format!("{ap}.grpcStatus"),
                    format!("gRPC status {g:?} is not supported. See https://github.com/grpc/grpc/blob/master/doc/statuscodes.md for a list of supported codes, for example 'NOT_FOUND'"),
                );
            }
        }
        if a.http2_error.is_some() {
            cx.error(at, format!("{ap}.http2Error"), "HTTP/2 abort fault injection not supported yet");
        }
        if kinds.iter().all(|k| !k) {
            cx.warn(at, ap, "abort configured, but error type not set");
        }
    }
    if let Some(d) = &f.delay {
        let dp = format!("{p}.delay");
        if let Some(pct) = &d.percentage {
            if let Err(e) = validate_percentage(pct.value) {
                cx.error(at, format!("{dp}.percentage.value"), e);
            }
        }
        if let Some(pc) = d.percent.filter(|p| *p > 0) {
            cx.push(
                Severity::Warning,
                Some("IST0002"),
                at,
                format!("{dp}.percent"),
                "Deprecated: HTTPRoute.fault.delay.percent is deprecated; use HTTPRoute.fault.delay.percentage",
            );
            if pc > 100 {
                cx.own_warn(at, format!("{dp}.percent"), format!("percent {pc} is above 100: Envoy treats it as 100"));
            }
        }
        if d.percentage.is_none() && d.percent.is_none() {
            cx.own_warn(at, format!("{dp}.percentage"), "no percentage: no request will be delayed");
        }
        if d.fixed_delay.is_some() && d.exponential_delay.is_some() {
            cx.error(at, dp.as_str(), "only one of fixedDelay or exponentialDelay may be set");
        }
        check_duration(cx, at, &format!("{dp}.fixedDelay"), d.fixed_delay.as_deref());
        if let Some(e) = &d.exponential_delay {
            check_duration(cx, at, &format!("{dp}.exponentialDelay"), Some(e));
            cx.error(at, format!("{dp}.exponentialDelay"), "exponentialDelay not supported yet");
        }
        if d.fixed_delay.is_none() && d.exponential_delay.is_none() {
            cx.own_warn(at, dp, "delay without fixedDelay: Istio ignores this delay");
        }
    }
}

fn check_mirrors(cx: &mut Ctx<'_>, at: &Place<'_>, p: &str, r: &HttpRoute) {
    if let Some(pc) = r.mirror_percent {
        if pc > 100 {
            cx.error(
                at,
                format!("{p}.mirrorPercent"),
                format!("mirror_percent must have a max value of 100 (it has {pc})"),
            );
        }
        cx.warn(
            at,
            format!("{p}.mirrorPercent"),
            "using deprecated setting \"mirrorPercent\", use \"mirrorPercentage\" instead",
        );
    }
    if let Some(pc) = &r.mirror_percentage {
        let v = pc.value;
        if v > 100.0 {
            cx.error(
                at,
                format!("{p}.mirrorPercentage.value"),
                format!("mirror_percentage must have a max value of 100 (it has {v})"),
            );
        }
        if v < 0.0 {
            cx.error(
                at,
                format!("{p}.mirrorPercentage.value"),
                format!("mirror_percentage must have a min value of 0 (it has {v})"),
            );
        }
    }
    if r.mirror.is_none() && (r.mirror_percent.is_some() || r.mirror_percentage.is_some()) {
        cx.own_warn(at, p, "mirrorPercentage/mirrorPercent have no effect without mirror");
    }
    if let Some(m) = &r.mirror {
        check_destination(cx, at, &format!("{p}.mirror"), m);
    }
    for (k, m) in r.mirrors.iter().enumerate() {
        let mp = format!("{p}.mirrors[{k}]");
        match &m.destination {
            None => cx.error(at, format!("{mp}.destination"), "destination is required for mirrors"),
            Some(d) => check_destination(cx, at, &format!("{mp}.destination"), d),
        }
        if let Some(pc) = &m.percentage {
            let v = pc.value;
            if v > 100.0 {
                cx.error(
                    at,
                    format!("{mp}.percentage.value"),
                    format!("mirror percentage must have a max value of 100 (it has {v})"),
                );
            }
            if v < 0.0 {
                cx.error(
                    at,
                    format!("{mp}.percentage.value"),
                    format!("mirror percentage must have a min value of 0 (it has {v})"),
                );
            }
        }
    }
}

/// Istio `validateDestination`.
pub(super) fn check_destination(cx: &mut Ctx<'_>, at: &Place<'_>, p: &str, d: &crd::Destination) {
    if d.host.is_empty() {
        cx.error(at, format!("{p}.host"), "destination host is required");
    } else if d.host == "*" {
        cx.error(at, format!("{p}.host"), "invalid destination host *");
    } else if let Err(e) = validate_wildcard_domain(&d.host) {
        cx.error(at, format!("{p}.host"), e);
    }
    if let Some(s) = d.subset.as_deref().filter(|s| !s.is_empty()) {
        if !is_dns1123_label(s) {
            cx.error(at, format!("{p}.subset"), format!("subset name is invalid: {s}"));
        }
    }
    if let Some(port) = &d.port {
        if let Err(e) = validate_port(i64::from(port.number)) {
            cx.error(at, format!("{p}.port.number"), e);
        }
    }
}

/// Redirect codes Envoy's `RedirectAction` can express; istiod drops any other 3xx.
const ENVOY_REDIRECT_CODES: [u32; 5] = [301, 302, 303, 307, 308];

fn check_redirect(cx: &mut Ctx<'_>, at: &Place<'_>, p: &str, r: &crd::HttpRedirect) {
    let set = |s: &Option<String>| s.as_deref().is_some_and(|v| !v.is_empty());
    if !set(&r.uri) && !set(&r.authority) && !set(&r.scheme) && r.port.is_none() && r.derive_port.is_none() {
        cx.error(at, p, "redirect must specify URI, authority, scheme, or port");
    }
    if let Some(code) = r.redirect_code.filter(|c| *c != 0) {
        if !(300..=399).contains(&code) {
            cx.error(at, format!("{p}.redirectCode"), format!("{code} is not a valid redirect code, must be 3xx"));
        } else if !ENVOY_REDIRECT_CODES.contains(&code) {
            cx.unsupported(
                at,
                format!("{p}.redirectCode"),
                format!("redirectCode {code}"),
                "Envoy redirects with 301, 302, 303, 307 or 308; istiod drops any other redirect",
            );
        }
    }
    if let Some(s) = r.scheme.as_deref().filter(|s| !s.is_empty()) {
        if s != "http" && s != "https" {
            cx.error(at, format!("{p}.scheme"), "invalid redirect scheme, must be \"http\" or \"https\"");
        }
    }
    if let Some(port) = r.port {
        if let Err(e) = validate_port(i64::from(port)) {
            cx.error(at, format!("{p}.port"), e);
        }
        if r.derive_port.is_some() {
            cx.error(at, p, "only one of port or derivePort may be set");
        }
    }
    if let Some(d) = &r.derive_port {
        check_enum(cx, at, &format!("{p}.derivePort"), d, &["FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"]);
    }
}

fn check_direct_response(cx: &mut Ctx<'_>, at: &Place<'_>, p: &str, d: &crd::HttpDirectResponse) {
    if !(200..=599).contains(&d.status) {
        cx.error(at, format!("{p}.status"), format!("HTTP status {} is not in range 200-599", d.status));
    }
    let Some(body) = &d.body else { return };
    let size = match (&body.string, &body.bytes) {
        (Some(_), Some(_)) => {
            cx.error(at, format!("{p}.body"), "only one of string or bytes may be set");
            return;
        }
        (Some(s), None) => s.len(),
        (None, Some(b)) => match super::common::base64_len(b) {
            Some(n) => n,
            None => {
                cx.error(at, format!("{p}.body.bytes"), "body.bytes must be base64");
                return;
            }
        },
        (None, None) => 0,
    };
    if size > MB {
        cx.error(
            at,
            format!("{p}.body"),
            "large direct_responses may impact control plane performance, must be less than 1MB",
        );
    } else if size > 100 * KB {
        cx.warn(at, format!("{p}.body"), "large direct_responses may impact control plane performance");
    }
}

/// Istio `agent.ValidateHTTPRetry`.
fn check_retries(cx: &mut Ctx<'_>, at: &Place<'_>, p: &str, rule: &str, r: &crd::HttpRetry) {
    if r.attempts < 0 {
        cx.error(at, format!("{p}.attempts"), "attempts cannot be negative");
    } else if r.attempts > i64::from(i32::MAX) {
        cx.error(at, format!("{p}.attempts"), format!("attempts {} is out of the int32 range", r.attempts));
    }
    let retry_on = r.retry_on.as_deref().unwrap_or_default();
    if r.attempts == 0 {
        if r.per_try_timeout.is_some() || !retry_on.is_empty() || r.retry_remote_localities.is_some() {
            cx.error(at, p, "http retry policy configured when attempts are set to 0 (disabled)");
        } else if r.backoff.is_some() || r.retry_ignore_previous_hosts.is_some() {
            cx.own_warn(at, p, "backoff/retryIgnorePreviousHosts are ignored: retries are disabled (attempts is 0)");
        }
    }
    check_duration(cx, at, &format!("{p}.perTryTimeout"), r.per_try_timeout.as_deref());
    if !retry_on.is_empty() {
        for token in retry_on.split(',') {
            let known = |t: &str| {
                RETRY_ON_HTTP.contains(&t) || RETRY_ON_GRPC.contains(&t) || retriable_status_code(t).is_some()
            };
            if known(token) {
                continue;
            }
            let hint = if token != token.trim() && known(token.trim()) {
                " (Istio splits retryOn on ',' only: remove the spaces)"
            } else if token.trim().parse::<u32>().is_ok() {
                " (only registered HTTP status codes are accepted)"
            } else {
                ""
            };
            cx.error(at, format!("{p}.retryOn"), format!("{token:?} is not a valid retryOn policy{hint}"));
        }
    }
    check_duration(cx, at, &format!("{p}.backoff"), r.backoff.as_deref());
    // What istiod makes of the tokens (trimmed, `parseRetryOn`).
    let tokens: Vec<&str> = retry_on.split(',').map(str::trim).filter(|t| !t.is_empty()).collect();
    if tokens.contains(&"retriable-status-codes") && !tokens.iter().any(|t| retriable_status_code(t).is_some()) {
        cx.push(
            Severity::Info,
            Some("MR0004"),
            at,
            format!("{p}.retryOn"),
            format!("retryOn of rule {rule} lists retriable-status-codes but no status code; it retries nothing"),
        );
    }
    let grpc: Vec<&str> = tokens.iter().copied().filter(|t| RETRY_ON_GRPC.contains(t)).collect();
    if !grpc.is_empty() {
        cx.push(
            Severity::Info,
            Some("MR0005"),
            at,
            format!("{p}.retryOn"),
            format!(
                "retryOn of rule {rule} uses gRPC conditions [{}]; they only apply to gRPC responses",
                grpc.join(" ")
            ),
        );
    }
}

fn check_rewrite(cx: &mut Ctx<'_>, at: &Place<'_>, p: &str, r: &crd::HttpRewrite) {
    let uri = r.uri.as_deref().is_some_and(|u| !u.is_empty());
    let authority = r.authority.as_deref().is_some_and(|a| !a.is_empty());
    if uri && r.uri_regex_rewrite.is_some() {
        cx.error(at, p, "rewrite may only contain one of URI or UriRegexRewrite");
        return;
    }
    if !uri && r.uri_regex_rewrite.is_none() && !authority {
        cx.error(
            at,
            p,
            "rewrite must specify at least one of URI, UriRegexRewrite, or authority. Only one of URI or UriRegexRewrite may be specified",
        );
    }
    let Some(rr) = &r.uri_regex_rewrite else { return };
    let rp = format!("{p}.uriRegexRewrite");
    if rr.pattern.is_empty() || rr.rewrite.is_empty() {
        cx.error(
            at,
            rp,
            "UriRegexRewrite has errors: UriRegexRewrite requires both Rewrite and Match fields to be specified",
        );
        return;
    }
    check_regex(cx, at, &format!("{rp}.match"), "HTTPRewrite.UriRegexRewrite.Match", &rr.pattern, false);
    // Envoy checks `\N` references against the pattern's groups and rejects the route otherwise.
    if let Ok(re) = regex_lite::Regex::new(&rr.pattern) {
        let groups = re.captures_len().saturating_sub(1);
        let b = rr.rewrite.as_bytes();
        let mut i = 0;
        while i + 1 < b.len() {
            if b[i] == b'\\' && b[i + 1].is_ascii_digit() {
                let n = usize::from(b[i + 1] - b'0');
                if n > groups {
                    cx.own_error(
                        at,
                        format!("{rp}.rewrite"),
                        format!("rewrite refers to \\{n} but the match regex has {groups} capture group(s); Envoy rejects it"),
                    );
                }
                i += 2;
            } else {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
        }
    }
}

/// Istio `validateHTTPRouteDestinations`.
fn check_route_destinations(
    cx: &mut Ctx<'_>,
    at: &Place<'_>,
    p: &str,
    rule: &str,
    routes: &[crd::HttpRouteDestination],
) {
    let mut total: i64 = 0;
    for (k, d) in routes.iter().enumerate() {
        let dp = format!("{p}.route[{k}]");
        match &d.destination {
            None => cx.error(at, format!("{dp}.destination"), "destination is required"),
            Some(dest) => check_destination(cx, at, &format!("{dp}.destination"), dest),
        }
        if let Some(h) = &d.headers {
            check_header_operations(cx, at, &format!("{dp}.headers"), h);
        }
        let w = d.weight.unwrap_or(0);
        if w < 0 {
            cx.error(at, format!("{dp}.weight"), format!("weight {w} < 0"));
        } else if w > i64::from(i32::MAX) {
            cx.error(at, format!("{dp}.weight"), format!("weight {w} is out of the int32 range"));
        } else {
            total += w;
        }
    }
    if routes.len() > 1 && total == 0 {
        cx.error(at, format!("{p}.route"), "total destination weight = 0");
    } else if routes.len() > 1 {
        // MR0003: istiod omits weight-0 entries from `weighted_clusters`.
        for (k, d) in routes.iter().enumerate().filter(|(_, d)| d.weight.unwrap_or(0) == 0) {
            let Some(dest) = &d.destination else { continue };
            let name = match dest.subset.as_deref().filter(|s| !s.is_empty()) {
                Some(subset) => format!("{}+{subset}", dest.host),
                None => dest.host.clone(),
            };
            cx.push(
                Severity::Info,
                Some("MR0003"),
                at,
                format!("{p}.route[{k}].weight"),
                format!("destination {name} (rule {rule}) has weight 0 and receives no traffic"),
            );
        }
    }
}

/// Istio's rule/match naming in IST0130/IST0131: the quoted name, or `#index`.
fn rule_name(r: &HttpRoute, i: usize) -> String {
    match r.name.as_deref().filter(|n| !n.is_empty()) {
        Some(n) => format!("{n:?}"),
        None => format!("#{i}"),
    }
}

fn match_name(m: &HttpMatchRequest, j: usize) -> String {
    match m.name.as_deref().filter(|n| !n.is_empty()) {
        Some(n) => format!("{n:?}"),
        None => format!("#{j}"),
    }
}

/// Istio `OverlappingMatchValidationForHTTPRoute`: a block with a non-empty URI prefix, its other
/// conditions summarised as `exact:<v>`/`prefix:<v>` strings (`genMatchHTTPRoutes`).
struct PrefixBlock {
    rule_index: usize,
    match_index: usize,
    rule: String,
    block: String,
    prefix: String,
    port: u32,
    method: String,
    authority: String,
    headers: BTreeMap<String, String>,
    query_params: BTreeMap<String, String>,
    without_headers: BTreeMap<String, String>,
}

/// Istio `assignExactOrPrefix`.
fn exact_or_prefix(m: Option<&StringMatch>) -> String {
    let Some(m) = m else { return String::new() };
    match (m.exact.as_deref().filter(|e| !e.is_empty()), m.prefix.as_deref().filter(|p| !p.is_empty())) {
        (Some(e), _) => format!("exact:{e}"),
        (None, Some(p)) => format!("prefix:{p}"),
        _ => String::new(),
    }
}

fn prefix_block(rules: &[HttpRoute], i: usize, j: usize, m: &HttpMatchRequest) -> Option<PrefixBlock> {
    let prefix = m.uri.as_ref()?.prefix.as_deref().filter(|p| !p.is_empty())?;
    let method = match exact_or_prefix(m.method.as_ref()) {
        s if s.is_empty() => "exact:GET".to_string(),
        s => s,
    };
    let summarise = |map: &BTreeMap<String, StringMatch>| -> BTreeMap<String, String> {
        map.iter().map(|(k, v)| (k.clone(), exact_or_prefix(Some(v)))).collect()
    };
    Some(PrefixBlock {
        rule_index: i,
        match_index: j,
        rule: rule_name(&rules[i], i),
        block: match_name(m, j),
        prefix: prefix.to_string(),
        port: m.port.unwrap_or(0),
        method,
        authority: exact_or_prefix(m.authority.as_ref()),
        headers: summarise(&m.headers),
        query_params: summarise(&m.query_params),
        without_headers: summarise(&m.without_headers),
    })
}

/// Istio `coveredValidation`: does block `a` (earlier) cover block `b` (later)?
fn covered(a: &PrefixBlock, b: &PrefixBlock) -> bool {
    let value_ok = |x: &str, y: &str| x == y || x.starts_with(y);
    let maps_ok = |x: &BTreeMap<String, String>, y: &BTreeMap<String, String>| {
        x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| value_ok(v, w)))
    };
    b.prefix.starts_with(&a.prefix)
        && a.port == b.port
        && value_ok(&a.method, &b.method)
        && value_ok(&a.authority, &b.authority)
        && maps_ok(&a.headers, &b.headers)
        && maps_ok(&a.query_params, &b.query_params)
        && maps_ok(&a.without_headers, &b.without_headers)
}

/// The webhook's `analyzeUnreachableHTTPRules` (IST0130 warnings, IST0131 infos), then MR0008
/// for rules hidden by a catch-all match block, which istiod never emits (`IsCatchAllRoute`)
/// but the webhook does not notice.
fn analyze_unreachable_rules(cx: &mut Ctx<'_>, at: &Place<'_>, rules: &[HttpRoute]) {
    // The first rule of each distinct match block (its name aside), hashed, so the duplicate
    // search stays linear on tables of thousands of rules whatever the blocks match on.
    let mut seen: HashMap<HttpMatchRequest, usize> = HashMap::new();
    let mut empty_match_rule: Option<usize> = None;
    let mut prefix_blocks: Vec<PrefixBlock> = Vec::new();
    let mut reported_unused: HashSet<usize> = HashSet::new();
    let mut unreachable = |cx: &mut Ctx<'_>, i: usize, reason: &str| {
        if reported_unused.insert(i) {
            cx.push(
                Severity::Warning,
                Some("IST0130"),
                at,
                format!("spec.http[{i}]"),
                format!("VirtualService rule {} not used ({reason}).", rule_name(&rules[i], i)),
            );
        }
    };
    for (i, r) in rules.iter().enumerate() {
        if r.matches.is_empty() {
            if empty_match_rule.is_some() {
                unreachable(cx, i, "only the last rule can have no matches");
            }
            empty_match_rule = Some(i);
            continue;
        }
        if empty_match_rule.is_some() {
            unreachable(cx, i, "route without matches defined before");
            continue;
        }
        let mut duplicates = 0;
        for (j, m) in r.matches.iter().enumerate() {
            let key = HttpMatchRequest { name: None, ..m.clone() };
            if let Some(k) = seen.get(&key) {
                duplicates += 1;
                cx.push(
                    Severity::Info,
                    Some("IST0131"),
                    at,
                    format!("spec.http[{i}].match[{j}]"),
                    format!(
                        "VirtualService rule {} match {} is not used (duplicate/overlapping match in rule {}).",
                        rule_name(r, i),
                        match_name(m, j),
                        rule_name(&rules[*k], *k)
                    ),
                );
                continue;
            }
            seen.insert(key, i);
            prefix_blocks.extend(prefix_block(rules, i, j, m));
        }
        if duplicates == r.matches.len() {
            unreachable(cx, i, "all matches used by prior rules");
        }
    }
    // Only an earlier block whose prefix is a strict prefix of `b`'s can cover `b`: look those
    // up by prefix instead of comparing every pair (tables of thousands of rules). Reported in
    // the webhook's order, earlier block first.
    let mut by_prefix: HashMap<&str, Vec<usize>> = HashMap::new();
    for (x, a) in prefix_blocks.iter().enumerate() {
        by_prefix.entry(a.prefix.as_str()).or_default().push(x);
    }
    let mut pairs = Vec::new();
    for (y, b) in prefix_blocks.iter().enumerate() {
        for (end, _) in b.prefix.char_indices().skip(1) {
            for &x in by_prefix.get(&b.prefix[..end]).map(Vec::as_slice).unwrap_or_default() {
                if x < y && covered(&prefix_blocks[x], b) {
                    pairs.push((x, y));
                }
            }
        }
    }
    pairs.sort_unstable();
    for (a, b) in pairs.into_iter().map(|(x, y)| (&prefix_blocks[x], &prefix_blocks[y])) {
        cx.push(
            Severity::Info,
            Some("IST0131"),
            at,
            format!("spec.http[{}].match[{}]", b.rule_index, b.match_index),
            format!(
                "VirtualService rule {} match {} of prefix {} is not used (duplicate/overlapping match in rule {} of prefix {} on {}).",
                b.rule, b.block, b.prefix, a.block, a.prefix, a.rule
            ),
        );
    }
    // MR0008: after a catch-all match block nothing more is emitted.
    let catch_all = rules
        .iter()
        .enumerate()
        .find_map(|(i, r)| r.matches.iter().enumerate().find(|(_, m)| is_catch_all(m)).map(|(j, m)| (i, j, m)));
    if let Some((c, j, m)) = catch_all {
        for i in c + 1..rules.len() {
            // Rules after a rule without match are IST0130 already.
            if empty_match_rule.is_some_and(|e| e < i) {
                continue;
            }
            cx.push(
                Severity::Warning,
                Some("MR0008"),
                at,
                format!("spec.http[{i}]"),
                format!(
                    "VirtualService rule {} is never reached: rule {} match {} is a catch-all",
                    rule_name(&rules[i], i),
                    rule_name(&rules[c], c),
                    match_name(m, j)
                ),
            );
        }
    }
}
