//! DestinationRule: Istio `ValidateDestinationRule`, `validateTrafficPolicy` and friends.

use super::common::{
    check_duration, check_enum, check_export_to, check_labels, is_dns1123_label, validate_percent,
    validate_wildcard_domain,
};
use super::{Ctx, Place};
use crate::crd;
use crate::diag::Severity;
use serde_json::Value;

pub(super) fn check(cx: &mut Ctx<'_>, at: &Place<'_>, dr: &crd::DestinationRule) {
    if dr.host.is_empty() {
        cx.error(at, "spec.host", "host is required (empty domain name not allowed)");
    } else if let Err(e) = validate_wildcard_domain(&dr.host) {
        cx.error(at, "spec.host", e);
    }
    if let Some(tp) = &dr.traffic_policy {
        check_traffic_policy(cx, at, "spec.trafficPolicy", tp);
    }
    let mut names: Vec<&str> = Vec::new();
    for (i, s) in dr.subsets.iter().enumerate() {
        let p = format!("spec.subsets[{i}]");
        if names.contains(&s.name.as_str()) {
            cx.error(at, format!("{p}.name"), format!("duplicate subset names: {}", s.name));
        }
        names.push(&s.name);
        if s.name.is_empty() {
            cx.error(at, format!("{p}.name"), "subset name cannot be empty");
        } else if !is_dns1123_label(&s.name) {
            cx.error(at, format!("{p}.name"), format!("subset name is invalid: {}", s.name));
        }
        check_labels(cx, at, &format!("{p}.labels"), &s.labels);
        if s.labels.is_empty() {
            cx.info(
                at,
                format!("{p}.labels"),
                format!("subset {} has no labels: it selects every endpoint of the host", s.name),
            );
        }
        if let Some(tp) = &s.traffic_policy {
            check_traffic_policy(cx, at, &format!("{p}.trafficPolicy"), tp);
        }
    }
    let top_simple =
        dr.traffic_policy.as_ref().and_then(|t| t.load_balancer.as_ref()).and_then(|l| l.simple.as_deref());
    for (i, s) in dr.subsets.iter().enumerate() {
        let simple = s
            .traffic_policy
            .as_ref()
            .and_then(|t| t.load_balancer.as_ref())
            .and_then(|l| l.simple.as_deref())
            .or(top_simple);
        if simple == Some("PASSTHROUGH") {
            let name = at.0.map(|r| r.key()).unwrap_or_default();
            cx.push(
                Severity::Warning,
                Some("MR0006"),
                at,
                format!("spec.subsets[{i}]"),
                format!("subset {} of DestinationRule {name} uses loadBalancer PASSTHROUGH; its labels do not select endpoints", s.name),
            );
        }
    }
    check_export_to(cx, at, at.namespace(), &dr.export_to, false);
    if let Some(ws) = &dr.workload_selector {
        check_labels(cx, at, "spec.workloadSelector.matchLabels", &ws.match_labels);
        if !dr.export_to.is_empty() && dr.export_to.iter().any(|e| e != "." && e != at.namespace()) {
            cx.error(
                at,
                "spec.exportTo",
                "destination rule with workload selector cannot have exportTo beyond current namespace",
            );
        }
    }
}

fn check_traffic_policy(cx: &mut Ctx<'_>, at: &Place<'_>, p: &str, tp: &crd::TrafficPolicy) {
    if tp.outlier_detection.is_none()
        && tp.connection_pool.is_none()
        && tp.load_balancer.is_none()
        && tp.tls.is_none()
        && tp.port_level_settings.is_empty()
        && tp.tunnel.is_none()
        && tp.proxy_protocol.is_none()
        && tp.retry_budget.is_none()
    {
        cx.error(at, p, "traffic policy must have at least one field");
        return;
    }
    if tp.tunnel.is_some() && tp.proxy_protocol.is_some() {
        cx.error(at, p, "tunnel and proxyProtocol must not be set together");
        return;
    }
    check_policy_parts(
        cx,
        at,
        p,
        tp.load_balancer.as_ref(),
        tp.connection_pool.as_ref(),
        tp.outlier_detection.as_ref(),
        tp.tls.as_ref(),
    );
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        let pp = format!("{p}.portLevelSettings[{i}]");
        if pl.port.is_none() {
            cx.error(at, format!("{pp}.port"), "portTrafficPolicy must have valid port");
        }
        if pl.outlier_detection.is_none()
            && pl.connection_pool.is_none()
            && pl.load_balancer.is_none()
            && pl.tls.is_none()
        {
            cx.error(at, pp, "port traffic policy must have at least one field");
            continue;
        }
        check_policy_parts(
            cx,
            at,
            &pp,
            pl.load_balancer.as_ref(),
            pl.connection_pool.as_ref(),
            pl.outlier_detection.as_ref(),
            pl.tls.as_ref(),
        );
    }
}

fn check_policy_parts(
    cx: &mut Ctx<'_>,
    at: &Place<'_>,
    p: &str,
    lb: Option<&crd::LoadBalancerSettings>,
    pool: Option<&crd::ConnectionPoolSettings>,
    outlier: Option<&crd::OutlierDetection>,
    tls: Option<&crd::ClientTlsSettings>,
) {
    if let Some(o) = outlier {
        check_outlier(cx, at, &format!("{p}.outlierDetection"), o);
    }
    if let Some(c) = pool {
        check_connection_pool(cx, at, &format!("{p}.connectionPool"), c);
    }
    if let Some(l) = lb {
        check_load_balancer(cx, at, &format!("{p}.loadBalancer"), l, outlier.is_some());
    }
    if let Some(t) = tls {
        check_client_tls(cx, at, &format!("{p}.tls"), t);
    }
}

fn check_outlier(cx: &mut Ctx<'_>, at: &Place<'_>, p: &str, o: &crd::OutlierDetection) {
    check_duration(cx, at, &format!("{p}.baseEjectionTime"), o.base_ejection_time.as_deref());
    check_duration(cx, at, &format!("{p}.interval"), o.interval.as_deref());
    if o.consecutive_errors.is_some_and(|c| c != 0) {
        cx.warn(
            at,
            format!("{p}.consecutiveErrors"),
            "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead",
        );
    }
    if o.consecutive_local_origin_failures.is_some_and(|c| c > 0)
        && !o.split_external_local_origin_errors.unwrap_or(false)
    {
        cx.error(
            at,
            format!("{p}.consecutiveLocalOriginFailures"),
            "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false",
        );
    }
    for (field, v) in [
        ("consecutive5xxErrors", o.consecutive_5xx_errors),
        ("consecutiveGatewayErrors", o.consecutive_gateway_errors),
        ("consecutiveLocalOriginFailures", o.consecutive_local_origin_failures),
    ] {
        if v.is_some_and(|v| v < 0 || v > i64::from(u32::MAX)) {
            cx.error(at, format!("{p}.{field}"), format!("{field} must be in the uint32 range"));
        }
    }
    for (field, v) in [("maxEjectionPercent", o.max_ejection_percent), ("minHealthPercent", o.min_health_percent)] {
        if let Some(Err(e)) = v.map(validate_percent) {
            cx.error(at, format!("{p}.{field}"), e);
        }
    }
}

fn check_connection_pool(cx: &mut Ctx<'_>, at: &Place<'_>, p: &str, c: &crd::ConnectionPoolSettings) {
    if c.http.is_none() && c.tcp.is_none() {
        cx.error(at, p, "connection pool must have at least one field");
        return;
    }
    if let Some(h) = &c.http {
        let hp = format!("{p}.http");
        for (field, v, what) in [
            ("http1MaxPendingRequests", h.http1_max_pending_requests, "http1 max pending requests"),
            ("http2MaxRequests", h.http2_max_requests, "http2 max requests"),
            ("maxRequestsPerConnection", h.max_requests_per_connection, "max requests per connection"),
            ("maxRetries", h.max_retries, "max retries"),
            ("maxConcurrentStreams", h.max_concurrent_streams, "max concurrent streams"),
        ] {
            if v.is_some_and(|v| v < 0) {
                cx.error(at, format!("{hp}.{field}"), format!("{what} must be non-negative"));
            }
        }
        check_duration(cx, at, &format!("{hp}.idleTimeout"), h.idle_timeout.as_deref());
        if let Some(policy) = &h.h2_upgrade_policy {
            check_enum(cx, at, &format!("{hp}.h2UpgradePolicy"), policy, &["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"]);
            if policy == "UPGRADE" && h.use_client_protocol == Some(true) {
                cx.error(
                    at,
                    format!("{hp}.useClientProtocol"),
                    "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
                );
            }
        }
    }
    if let Some(t) = &c.tcp {
        let tp = format!("{p}.tcp");
        if t.max_connections.is_some_and(|v| v < 0) {
            cx.error(at, format!("{tp}.maxConnections"), "max connections must be non-negative");
        }
        check_duration(cx, at, &format!("{tp}.connectTimeout"), t.connect_timeout.as_deref());
        check_duration(cx, at, &format!("{tp}.maxConnectionDuration"), t.max_connection_duration.as_deref());
        // `0s` disables the idle timeout and is allowed.
        let idle = t.idle_timeout.as_deref().filter(|s| crate::duration::parse(s).map_or(true, |d| !d.is_zero()));
        check_duration(cx, at, &format!("{tp}.idleTimeout"), idle);
        if let Some(Value::Object(ka)) = &t.tcp_keepalive {
            for field in ["time", "interval"] {
                match ka.get(field) {
                    Some(Value::String(s)) => check_duration(cx, at, &format!("{tp}.tcpKeepalive.{field}"), Some(s)),
                    Some(Value::Null) | None => {}
                    Some(_) => cx.error(at, format!("{tp}.tcpKeepalive.{field}"), "expected a duration string"),
                }
            }
        }
    }
}

const LB_SIMPLE: &[&str] = &["UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST"];

fn is_prime(x: u64) -> bool {
    if x != 0 && x < 4 {
        return true;
    }
    if x & 1 == 0 {
        return false;
    }
    let mut f = 3u64;
    while f.saturating_mul(f) <= x {
        if x % f == 0 {
            return false;
        }
        f += 2;
    }
    true
}

fn check_load_balancer(cx: &mut Ctx<'_>, at: &Place<'_>, p: &str, lb: &crd::LoadBalancerSettings, has_outlier: bool) {
    if let Some(s) = &lb.simple {
        if check_enum(cx, at, &format!("{p}.simple"), s, LB_SIMPLE) && s == "LEAST_CONN" {
            cx.own_warn(at, format!("{p}.simple"), "LEAST_CONN is deprecated; use LEAST_REQUEST");
        }
        if lb.consistent_hash.is_some() {
            cx.error(at, p, "only one of simple or consistentHash may be set");
        }
    }
    if let Some(ch) = &lb.consistent_hash {
        let cp = format!("{p}.consistentHash");
        let keys = [
            ch.http_header_name.is_some(),
            ch.http_cookie.is_some(),
            ch.use_source_ip.is_some(),
            ch.http_query_parameter_name.is_some(),
        ];
        match keys.iter().filter(|k| **k).count() {
            0 => cx.own_warn(
                at,
                cp.as_str(),
                "consistentHash has no hash key (httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName): it has no effect",
            ),
            1 => {}
            _ => cx.error(
                at,
                cp.as_str(),
                "only one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName may be set",
            ),
        }
        if let Some(c) = &ch.http_cookie {
            if c.name.is_empty() {
                cx.error(at, format!("{cp}.httpCookie.name"), "name required for HttpCookie");
            }
            if let Some(ttl) = &c.ttl {
                if let Err(e) = crate::duration::parse(ttl) {
                    cx.error(at, format!("{cp}.httpCookie.ttl"), e);
                }
            }
        }
        if ch.ring_hash.is_some() && ch.maglev.is_some() {
            cx.error(at, cp.as_str(), "only one of ringHash or maglev may be set");
        }
        if ch.minimum_ring_size.is_some_and(|m| m != 0) {
            cx.warn(
                at,
                format!("{cp}.minimumRingSize"),
                "consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's RingHash configuration instead",
            );
            if ch.ring_hash.is_some() || ch.maglev.is_some() {
                cx.error(
                    at,
                    format!("{cp}.minimumRingSize"),
                    "only one of MinimumRingSize or Maglev/Ringhash can be specified",
                );
            }
        }
        if let Some(m) = &ch.maglev {
            let size = m.table_size.unwrap_or(0);
            let mp = format!("{cp}.maglev.tableSize");
            if size == 0 {
                cx.error(at, mp.as_str(), "tableSize must be set for maglev");
            }
            if size >= 5_000_011 {
                cx.error(at, mp.as_str(), "tableSize must be less than 5000011 for maglev");
            }
            if !is_prime(size) {
                cx.error(at, mp, "tableSize must be a prime number for maglev");
            }
        }
    }
    if let Some(l) = &lb.locality_lb_setting {
        check_locality(cx, at, &format!("{p}.localityLbSetting"), l, has_outlier);
    }
    if let Some(w) = &lb.warmup_duration_secs {
        check_duration(cx, at, &format!("{p}.warmupDurationSecs"), Some(w));
    }
    if let Some(w) = &lb.warmup {
        let wp = format!("{p}.warmup");
        match &w.duration {
            None => cx.error(at, format!("{wp}.duration"), "duration is required"),
            Some(d) => check_duration(cx, at, &format!("{wp}.duration"), Some(d)),
        }
        if w.minimum_percent.is_some_and(|m| m > 100.0) {
            cx.error(at, format!("{wp}.minimumPercent"), "minimumPercent value should be less than or equal to 100");
        }
        if w.aggression.is_some_and(|a| a <= 0.0) {
            cx.error(at, format!("{wp}.aggression"), "aggression should be greater than 0");
        }
    }
}

/// Istio `agent.ValidateLocalityLbSetting` (with `validateLocalities`).
fn check_locality(cx: &mut Ctx<'_>, at: &Place<'_>, p: &str, l: &crd::LocalityLbSetting, has_outlier: bool) {
    if !l.distribute.is_empty() && !l.failover.is_empty() {
        cx.error(at, p, "can not simultaneously specify 'distribute' and 'failover'");
        return;
    }
    if !l.failover.is_empty() {
        for (i, label) in l.failover_priority.iter().enumerate() {
            if matches!(
                label.as_str(),
                "topology.kubernetes.io/region" | "topology.kubernetes.io/zone" | "topology.istio.io/subzone"
            ) {
                cx.error(
                    at,
                    format!("{p}.failoverPriority[{i}]"),
                    format!(
                        "can not simultaneously set 'failover' and topology label '{label}' in 'failover_priority'"
                    ),
                );
                return;
            }
        }
    }
    let mut sources = Vec::new();
    for (i, d) in l.distribute.iter().enumerate() {
        let dp = format!("{p}.distribute[{i}]");
        sources.push(d.from.clone());
        if d.to.values().any(|w| *w == 0 || *w > 100) {
            cx.error(at, format!("{dp}.to"), "locality weight must be in range [1, 100]");
            return;
        }
        let total: u32 = d.to.values().sum();
        if total != 100 {
            cx.error(at, format!("{dp}.to"), format!("total locality weight {total} != 100"));
            return;
        }
        let targets: Vec<String> = d.to.keys().cloned().collect();
        if let Err(e) = validate_localities(&targets) {
            cx.error(at, format!("{dp}.to"), e);
        }
    }
    if let Err(e) = validate_localities(&sources) {
        cx.error(at, format!("{p}.distribute"), e);
    }
    if (!l.failover.is_empty() || !l.failover_priority.is_empty()) && !has_outlier {
        cx.warn(at, p, "outlier detection policy must be provided for failover");
    }
    for (i, f) in l.failover.iter().enumerate() {
        let fp = format!("{p}.failover[{i}]");
        if f.from == f.to {
            cx.error(at, fp.as_str(), "locality lb failover settings must specify different regions");
        }
        if f.from.contains('/') || f.to.contains('/') {
            cx.error(at, fp.as_str(), "locality lb failover only specify region");
        }
        if f.from.contains('*') || f.to.contains('*') {
            cx.error(at, fp, "locality lb failover region should not contain '*' wildcard");
        }
    }
    if l.enabled == Some(false)
        && (!l.distribute.is_empty() || !l.failover.is_empty() || !l.failover_priority.is_empty())
    {
        cx.own_warn(
            at,
            format!("{p}.enabled"),
            "locality load balancing is disabled (enabled: false): distribute/failover are ignored",
        );
    }
}

/// Istio `validateLocalities`: `region[/zone[/subzone]]`, one trailing `*` at most, no overlap.
fn validate_localities(localities: &[String]) -> Result<(), String> {
    let mut seen: Vec<Vec<&str>> = Vec::new();
    for loc in localities {
        let stars = loc.matches('*').count();
        if stars > 1 || (stars == 1 && !loc.ends_with('*')) {
            return Err(format!("locality {loc} wildcard '*' number can not exceed 1 and must be in the end"));
        }
        let parts: Vec<&str> = loc.splitn(3, '/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(format!("locality {loc} must not contain empty region/zone/subzone info"));
        }
        // Two localities overlap when one is a prefix of the other (`*` matching anything).
        let overlaps = |a: &[&str], b: &[&str]| a.iter().zip(b.iter()).all(|(x, y)| x == y || *x == "*" || *y == "*");
        if seen.iter().any(|s| overlaps(s, &parts)) {
            return Err(format!("locality {loc} overlap with previous specified ones"));
        }
        seen.push(parts);
    }
    Ok(())
}

const CLIENT_TLS_MODES: &[&str] = &["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"];

/// Istio `agent.ValidateTLS` for client (upstream) TLS.
fn check_client_tls(cx: &mut Ctx<'_>, at: &Place<'_>, p: &str, t: &crd::ClientTlsSettings) {
    let mode = t.mode.as_deref().unwrap_or("DISABLE");
    if let Some(m) = &t.mode {
        check_enum(cx, at, &format!("{p}.mode"), m, CLIENT_TLS_MODES);
    }
    let set = |s: &Option<String>| s.as_deref().is_some_and(|v| !v.is_empty());
    if t.insecure_skip_verify == Some(true) {
        if mode == "SIMPLE" && (set(&t.ca_certificates) || set(&t.credential_name) || !t.subject_alt_names.is_empty()) {
            cx.error(
                at,
                format!("{p}.insecureSkipVerify"),
                "cannot specify CaCertificates or CredentialName or SubjectAltNames when InsecureSkipVerify is set true",
            );
        }
        if mode == "MUTUAL" && (set(&t.ca_certificates) || !t.subject_alt_names.is_empty()) {
            cx.error(
                at,
                format!("{p}.insecureSkipVerify"),
                "cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set true",
            );
        }
    }
    if (mode == "SIMPLE" || mode == "MUTUAL") && set(&t.credential_name) {
        if set(&t.client_certificate) || set(&t.ca_certificates) || set(&t.private_key) {
            cx.error(
                at,
                format!("{p}.credentialName"),
                "cannot specify client certificates or CA certificate or CA CRL If credentialName is set",
            );
        }
        return;
    }
    if mode == "MUTUAL" {
        if !set(&t.client_certificate) {
            cx.error(at, format!("{p}.clientCertificate"), "client certificate required for mutual tls");
        }
        if !set(&t.private_key) {
            cx.error(at, format!("{p}.privateKey"), "private key required for mutual tls");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn localities_overlap_when_one_covers_the_other() {
        assert!(validate_localities(&["us-east/*".into(), "us-west/*".into()]).is_ok());
        assert!(validate_localities(&["us-east/*".into(), "us-east/zone1".into()]).is_err());
        assert!(validate_localities(&["us-east/a/*/b".into()]).is_err());
        assert!(validate_localities(&["us-east//x".into()]).is_err());
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn maglev_sizes_must_be_prime() {
        assert!(is_prime(65537));
        assert!(!is_prime(65536));
    }
}
