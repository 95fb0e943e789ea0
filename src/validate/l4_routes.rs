//! Webhook checks of VirtualService `tcp` and `tls` routes (`VSVAL validateTCPRoute`,
//! `validateTLSRoute`, `validateTCPMatch`, `validateTLSMatch`, `validateRouteDestinations`).
//! meshroute does not route them (a warning says so), but Istio refuses a bad one, so a
//! configuration meshroute accepts must be one istiod accepts too.

use super::common::{check_labels, validate_ip_subnet, validate_port, validate_wildcard_domain};
use super::virtual_service::{check_destination, check_gateway_names};
use super::{Ctx, Place};
use crate::crd;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct L4Route {
    #[serde(default, rename = "match")]
    matches: Vec<L4Match>,
    #[serde(default)]
    route: Vec<RouteDestination>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct L4Match {
    #[serde(default)]
    port: Option<i64>,
    #[serde(default)]
    destination_subnets: Vec<String>,
    #[serde(default)]
    source_labels: BTreeMap<String, String>,
    #[serde(default)]
    gateways: Vec<String>,
    #[serde(default)]
    sni_hosts: Vec<String>,
}

#[derive(Deserialize)]
struct RouteDestination {
    #[serde(default)]
    destination: Option<crd::Destination>,
    #[serde(default)]
    weight: Option<i64>,
}

pub(super) fn check(cx: &mut Ctx<'_>, at: &Place<'_>, vs: &crd::VirtualService) {
    for (i, v) in vs.tcp.iter().enumerate() {
        route(cx, at, &format!("spec.tcp[{i}]"), v, false);
    }
    for (i, v) in vs.tls.iter().enumerate() {
        route(cx, at, &format!("spec.tls[{i}]"), v, true);
    }
}

fn route(cx: &mut Ctx<'_>, at: &Place<'_>, p: &str, v: &Value, tls: bool) {
    let r: L4Route = match serde_json::from_value(v.clone()) {
        Ok(r) => r,
        Err(e) => {
            cx.error(at, p, format!("invalid {} route: {e}", if tls { "TLS" } else { "TCP" }));
            return;
        }
    };
    if tls && r.matches.is_empty() {
        cx.error(at, format!("{p}.match"), "TLS route must have at least one match condition");
    }
    for (j, m) in r.matches.iter().enumerate() {
        let mp = format!("{p}.match[{j}]");
        if tls {
            if m.sni_hosts.is_empty() {
                cx.error(at, format!("{mp}.sniHosts"), "TLS match must have at least one SNI host");
            }
            for (k, h) in m.sni_hosts.iter().enumerate() {
                if h != "*" {
                    if let Err(e) = validate_wildcard_domain(h) {
                        cx.error(at, format!("{mp}.sniHosts[{k}]"), e);
                    }
                }
            }
        }
        for (k, s) in m.destination_subnets.iter().enumerate() {
            if let Err(e) = validate_ip_subnet(s) {
                cx.error(at, format!("{mp}.destinationSubnets[{k}]"), e);
            }
        }
        if let Some(port) = m.port.filter(|p| *p != 0) {
            if let Err(e) = validate_port(port) {
                cx.error(at, format!("{mp}.port"), e);
            }
        }
        check_labels(cx, at, &format!("{mp}.sourceLabels"), &m.source_labels);
        check_gateway_names(cx, at, &format!("{mp}.gateways"), &m.gateways);
    }
    if r.route.is_empty() {
        cx.error(at, format!("{p}.route"), if tls { "TLS route is required" } else { "TCP route is required" });
    }
    let mut total = 0i64;
    for (k, d) in r.route.iter().enumerate() {
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
    if r.route.len() > 1 && total == 0 {
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
