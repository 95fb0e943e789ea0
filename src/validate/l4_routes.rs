//! Webhook checks of VirtualService `tcp` and `tls` routes (`VSVAL validateTCPRoute`,
//! `validateTLSRoute`, `validateTCPMatch`, `validateTLSMatch`, `validateSniHost`,
//! `validateRouteDestinations`). The HTTP filter never sees these connections; `meshroute envoy`
//! turns them into listeners (docs/semantics.md R190–R199), so a configuration meshroute accepts
//! must be one istiod accepts too.

use super::common::{check_labels, is_ip, validate_ip_subnet, validate_port, validate_wildcard_domain};
use super::virtual_service::{check_destination, check_gateway_names};
use super::{Ctx, Place};
use crate::crd;
use crate::gateway_binding::subset_of;

pub(super) fn check(cx: &mut Ctx<'_>, at: &Place<'_>, vs: &crd::VirtualService) {
    for (i, r) in vs.tcp.iter().enumerate() {
        let p = format!("spec.tcp[{i}]");
        for (j, m) in r.matches.iter().enumerate() {
            let mp = format!("{p}.match[{j}]");
            check_ip_subnets(cx, at, &mp, &m.destination_subnets);
            check_match_port(cx, at, &mp, m.port);
            check_labels(cx, at, &format!("{mp}.sourceLabels"), &m.source_labels);
            check_gateway_names(cx, at, &format!("{mp}.gateways"), &m.gateways);
        }
        if r.route.is_empty() {
            cx.error(at, format!("{p}.route"), "TCP route is required");
        }
        destinations(cx, at, &p, &r.route);
    }
    for (i, r) in vs.tls.iter().enumerate() {
        let p = format!("spec.tls[{i}]");
        if r.matches.is_empty() {
            cx.error(at, format!("{p}.match"), "TLS route must have at least one match condition");
        }
        for (j, m) in r.matches.iter().enumerate() {
            let mp = format!("{p}.match[{j}]");
            if m.sni_hosts.is_empty() {
                cx.error(at, format!("{mp}.sniHosts"), "TLS match must have at least one SNI host");
            }
            for (k, h) in m.sni_hosts.iter().enumerate() {
                sni_host(cx, at, &format!("{mp}.sniHosts[{k}]"), h, vs);
            }
            check_ip_subnets(cx, at, &mp, &m.destination_subnets);
            check_match_port(cx, at, &mp, m.port);
            check_labels(cx, at, &format!("{mp}.sourceLabels"), &m.source_labels);
            check_gateway_names(cx, at, &format!("{mp}.gateways"), &m.gateways);
        }
        if r.route.is_empty() {
            cx.error(at, format!("{p}.route"), "TLS route is required");
        }
        destinations(cx, at, &p, &r.route);
    }
}

fn check_ip_subnets(cx: &mut Ctx<'_>, at: &Place<'_>, mp: &str, subnets: &[String]) {
    for (k, s) in subnets.iter().enumerate() {
        if let Err(e) = validate_ip_subnet(s) {
            cx.error(at, format!("{mp}.destinationSubnets[{k}]"), e);
        }
    }
}

/// `port: 0` is "unset" in proto3, so only a non-zero port is range-checked.
fn check_match_port(cx: &mut Ctx<'_>, at: &Place<'_>, mp: &str, port: Option<i64>) {
    if let Some(port) = port.filter(|p| *p != 0) {
        if let Err(e) = validate_port(port) {
            cx.error(at, format!("{mp}.port"), e);
        }
    }
}

/// `validateSniHost`: a (wildcard) DNS name — for a VirtualService not bound to `mesh` also
/// the `outbound_.PORT_.SUBSET_.HOST` names AUTO_PASSTHROUGH gateways route by — that is a
/// subset of one of the VirtualService's hosts. An IP address is only a warning (SNI carries no
/// IPs, most clients never send one).
fn sni_host(cx: &mut Ctx<'_>, at: &Place<'_>, path: &str, h: &str, vs: &crd::VirtualService) {
    let gateway_bound = !vs.gateways.iter().any(|g| g == "mesh");
    let checked = if gateway_bound { gateway_bound_domain(true, h) } else { validate_wildcard_domain(h) };
    if let Err(e) = checked {
        if is_ip(h) {
            cx.warn(
                at,
                path,
                format!("using an IP address ({h:?}) goes against SNI spec and most clients do not support this"),
            );
        } else {
            cx.error(at, path, e);
        }
        return;
    }
    if !vs.hosts.iter().any(|vh| subset_of(h, vh)) {
        cx.error(
            at,
            path,
            format!(
                "SNI host {h:?} is not a compatible subset of any of the virtual service hosts: [{}]",
                vs.hosts.join(", ")
            ),
        );
    }
}

/// `ValidateWildcardDomainForVirtualServiceBoundToGateway`: with `sni`, also the
/// `outbound_.<port>_.<subset>_.<host>` names AUTO_PASSTHROUGH routes by.
pub(super) fn gateway_bound_domain(sni: bool, h: &str) -> Result<(), String> {
    if h.len() > 255 {
        return Err(format!("domain name {h:?} too long (max 255)"));
    }
    if h.is_empty() {
        return Err("empty domain name not allowed".into());
    }
    if !(sni && h.starts_with("outbound_")) {
        return validate_wildcard_domain(h);
    }
    let parts: Vec<&str> = h.split('_').collect();
    if parts.len() < 4 {
        return Err(format!("domain name {h} invalid, should follow 'outbound_.<port>_._.<hostname>' format"));
    }
    let port = parts[1].trim_matches('.');
    let host = parts[3].trim_matches('.');
    if parts[0] != "outbound" {
        return Err(format!("domain name {h:?} invalid (label {:?} invalid)", parts[0]));
    }
    if !port.bytes().any(|b| b.is_ascii_digit()) {
        return Err(format!(
            "domain name {h:?} invalid (label {port:?} invalid). should follow outbound_.<port>_._.<hostname> format"
        ));
    }
    if !host.bytes().any(|b| b.is_ascii_alphabetic()) {
        return Err(format!(
            "domain name {h:?} invalid (label {host:?} invalid). should follow outbound_.<port>_._.<hostname> format"
        ));
    }
    Ok(())
}

/// `validateRouteDestinations` + `validateWeight`: a destination each, weights in 0..=int32,
/// and with several destinations a non-zero total.
fn destinations(cx: &mut Ctx<'_>, at: &Place<'_>, p: &str, route: &[crd::RouteDestination]) {
    let mut total = 0i64;
    for (k, d) in route.iter().enumerate() {
        let dp = format!("{p}.route[{k}]");
        match &d.destination {
            Some(dest) => check_destination(cx, at, &format!("{dp}.destination"), dest),
            None => cx.error(at, format!("{dp}.destination"), "destination is required"),
        }
        let w = d.weight.unwrap_or(0);
        if w < 0 {
            cx.error(at, format!("{dp}.weight"), format!("weight {w} < 0"));
        } else if i32::try_from(w).is_err() {
            cx.error(at, format!("{dp}.weight"), format!("weight {w} is out of the int32 range"));
        }
        total = total.saturating_add(w);
    }
    if route.len() > 1 && total == 0 {
        cx.error(at, format!("{p}.route"), "total destination weight = 0");
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    fn errors(vs: serde_json::Value) -> Vec<(String, String)> {
        let doc = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                         "metadata": {"name": "db", "namespace": "default"}, "spec": vs});
        let (bundle, _) = crate::config::load_value(doc);
        crate::validate::validate(&bundle)
            .iter()
            .filter(|d| d.severity == crate::Severity::Error)
            .map(|d| (d.path.clone(), d.message.clone()))
            .collect()
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn tcp_route_ports_subnets_and_weights_are_checked_as_the_webhook_does() {
        let e = errors(json!({"hosts": ["db"], "tcp": [{
            "match": [{"port": 99999, "destinationSubnets": ["10.0.0.0/33"]}],
            "route": [{"destination": {"host": "db", "port": {"number": 5432}}, "weight": -5},
                      {"destination": {"host": "db-b", "port": {"number": 5432}}, "weight": 0}]}]}));
        let at = |p: &str, w: &str| e.iter().any(|(path, m)| path == p && m.contains(w));
        assert!(at("spec.tcp[0].match[0].port", "port number 99999 must be in the range 1..65535"), "{e:?}");
        assert!(at("spec.tcp[0].match[0].destinationSubnets[0]", ""), "{e:?}");
        assert!(at("spec.tcp[0].route[0].weight", "weight -5 < 0"), "{e:?}");
        let e = errors(json!({"hosts": ["db"], "tcp": [{"route": []}]}));
        assert!(e.iter().any(|(p, m)| p == "spec.tcp[0].route" && m.contains("TCP route is required")), "{e:?}");
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn tls_route_needs_a_match_with_sni_hosts() {
        let e =
            errors(json!({"hosts": ["a.example.com"], "tls": [{"route": [{"destination": {"host": "a.example.com"}}]},
            {"match": [{"port": 443}], "route": [{"destination": {"host": "a.example.com"}}]}]}));
        assert!(e.iter().any(|(_, m)| m.contains("TLS route must have at least one match condition")), "{e:?}");
        assert!(e.iter().any(|(p, m)| p == "spec.tls[1].match[0].sniHosts" && m.contains("at least one SNI host")));
    }
}
