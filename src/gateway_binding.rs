//! Which hosts of a VirtualService a Gateway proxy serves: the intersection of the
//! VirtualService's hosts with the hosts of the Gateway's HTTP servers that admit the
//! VirtualService's namespace (`GW buildGatewayHTTPRouteConfig`, `host.NamesForNamespace`,
//! `host.Names.Intersection`).

use crate::config::Bundle;
use crate::crd;

/// The `[namespace/]host` entries of the HTTP servers of gateway `key` (`namespace/name`), the
/// namespace part resolved (`.` is the Gateway's namespace, absent is `*`). `None` when the
/// bundle has no such Gateway (validation reports the dangling reference, IST0101).
pub fn server_hosts(bundle: &Bundle, key: &str) -> Option<Vec<(String, String)>> {
    let (res, gw) = bundle.gateways().find(|(r, _)| r.key() == key)?;
    let mut out = Vec::new();
    for server in gw.servers.iter().filter(|s| serves_http(s)) {
        for h in &server.hosts {
            let (ns, name) = h.split_once('/').unwrap_or(("*", h.as_str()));
            let ns = if ns == "." { res.namespace.as_str() } else { ns };
            out.push((ns.to_string(), name.to_ascii_lowercase()));
        }
    }
    Some(out)
}

/// HTTP route configurations exist for HTTP-family servers and for TLS-terminating HTTPS
/// servers (`MODEL gateway.go MergeGateways`: PASSTHROUGH/AUTO_PASSTHROUGH and TLS/TCP
/// servers build TCP filter chains instead).
fn serves_http(s: &crd::Server) -> bool {
    let protocol = s.port.as_ref().map(|p| p.protocol.to_ascii_uppercase()).unwrap_or_default();
    match protocol.as_str() {
        "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB" => true,
        "HTTPS" => {
            !matches!(s.tls.as_ref().and_then(|t| t.mode.as_deref()), None | Some("PASSTHROUGH" | "AUTO_PASSTHROUGH"))
        }
        _ => false,
    }
}

/// The virtual-host domains a VirtualService of namespace `vs_ns` gets on this gateway: each
/// intersecting pair gives the more specific of the two names (`host.Names.Intersection`).
pub fn bound_hosts(server_hosts: &[(String, String)], vs_ns: &str, vs_hosts: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (ns, s) in server_hosts {
        if ns != "*" && ns != vs_ns {
            continue;
        }
        for v in vs_hosts {
            let v = v.to_ascii_lowercase();
            let pick = if subset_of(s, &v) {
                s.clone()
            } else if subset_of(&v, s) {
                v
            } else {
                continue;
            };
            if !out.contains(&pick) {
                out.push(pick);
            }
        }
    }
    out
}

/// istio `host.Name.SubsetOf`: every name `a` matches is matched by `b`.
pub(crate) fn subset_of(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(sa), Some(sb)) => sa.ends_with(sb),
        (Some(_), None) => false,
        (None, Some(sb)) => a.ends_with(sb),
        (None, None) => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(n, h)| (n.to_string(), h.to_string())).collect()
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn namespace_part_of_a_server_host_restricts_which_virtual_services_bind() {
        let server = hosts(&[("team-a", "*.example.com")]);
        let vs = vec!["api.example.com".to_string()];
        assert_eq!(bound_hosts(&server, "team-a", &vs), vec!["api.example.com"]);
        assert!(bound_hosts(&server, "team-b", &vs).is_empty());
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn the_more_specific_name_of_each_intersecting_pair_is_the_domain() {
        let server = hosts(&[("*", "a.example.com"), ("*", "b.example.com"), ("*", "other.org")]);
        let vs = vec!["*.example.com".to_string()];
        assert_eq!(bound_hosts(&server, "x", &vs), vec!["a.example.com", "b.example.com"]);
        let star = hosts(&[("*", "*")]);
        assert_eq!(bound_hosts(&star, "x", &["Shop.Example.com".to_string()]), vec!["shop.example.com"]);
        assert!(bound_hosts(&hosts(&[("*", "*.example.com")]), "x", &["example.com".to_string()]).is_empty());
    }
}
