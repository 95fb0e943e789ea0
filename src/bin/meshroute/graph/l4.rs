//! TCP and TLS routes in the traffic graph: for each source (the mesh, a Gateway) the
//! VirtualServices whose `tcp`/`tls` routes it applies, each route with its match (port, SNI
//! hosts, destination subnets) and its destinations with their shares of connections
//! (docs/semantics.md R239). The selection follows `meshroute envoy`'s listeners: a route bound
//! to `mesh` for sidecars, to the Gateway for that Gateway.

use super::model::{ident, short_host, subset_port, Edge, Graph, Kind};
use meshroute::config::{Bundle, Resource};
use meshroute::{crd, host};

/// One TCP or TLS route of a VirtualService, as drawn.
pub struct L4Route<'a> {
    res: &'a Resource,
    vs: &'a crd::VirtualService,
    tls: bool,
    index: usize,
    matches: Vec<String>,
    route: &'a [crd::RouteDestination],
}

/// The TCP/TLS routes `source` (`mesh` or `ns/name`) applies, in input order.
pub fn routes<'a>(bundle: &'a Bundle, source: &str, only_host: Option<&str>) -> Vec<L4Route<'a>> {
    let mut out = Vec::new();
    for (r, vs) in bundle.virtual_services() {
        let bound = if source == "mesh" {
            vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh")
        } else {
            vs.gateways.iter().any(|g| host::resolve_gateway(g, &r.namespace) == source)
        };
        let wanted = only_host.is_none_or(|h| {
            vs.hosts.iter().any(|vh| host::matches(&host::resolve(vh, &r.namespace, &bundle.settings.domain_suffix), h))
        });
        if !bound || !wanted {
            continue;
        }
        let gateway_ok = |gws: &[String]| {
            gws.is_empty()
                || gws.iter().any(|g| {
                    if source == "mesh" {
                        g == "mesh"
                    } else {
                        host::resolve_gateway(g, &r.namespace) == source
                    }
                })
        };
        for (i, t) in vs.tcp.iter().enumerate() {
            let ms: Vec<&crd::L4MatchAttributes> = t.matches.iter().filter(|m| gateway_ok(&m.gateways)).collect();
            if !t.matches.is_empty() && ms.is_empty() {
                continue;
            }
            let matches = ms.iter().map(|m| describe(m.port, &[], &m.destination_subnets)).collect();
            out.push(L4Route { res: r, vs, tls: false, index: i, matches, route: &t.route });
        }
        for (i, t) in vs.tls.iter().enumerate() {
            let ms: Vec<&crd::TlsMatchAttributes> = t.matches.iter().filter(|m| gateway_ok(&m.gateways)).collect();
            if ms.is_empty() {
                continue;
            }
            let matches = ms.iter().map(|m| describe(m.port, &m.sni_hosts, &m.destination_subnets)).collect();
            out.push(L4Route { res: r, vs, tls: true, index: i, matches, route: &t.route });
        }
    }
    out
}

/// `port 31400, sni a.example.com, to 10.0.0.0/8`.
fn describe(port: Option<i64>, sni: &[String], subnets: &[String]) -> String {
    let mut parts = Vec::new();
    if let Some(p) = port.filter(|p| *p != 0) {
        parts.push(format!("port {p}"));
    }
    if !sni.is_empty() {
        parts.push(format!("sni {}", sni.join(" ")));
    }
    if !subnets.is_empty() {
        parts.push(format!("to {}", subnets.join(" ")));
    }
    if parts.is_empty() {
        "any connection".into()
    } else {
        parts.join(", ")
    }
}

/// Draws `routes` under the source node `src`.
pub fn draw(g: &mut Graph, src: &str, bundle: &Bundle, routes: &[L4Route<'_>]) {
    let settings = &bundle.settings;
    for (order, r) in routes.iter().enumerate() {
        let key = r.res.key();
        let vs_id = g.node(
            ident(&["vs", &key]),
            Kind::VirtualService,
            vec![
                format!("VirtualService {key}"),
                r.vs.hosts.iter().map(|h| short_host(h)).collect::<Vec<_>>().join(", "),
            ],
            None,
        );
        g.edge(plain(src, &vs_id, Vec::new()));
        let kind = if r.tls { "tls" } else { "tcp" };
        let rule_id = g.node(
            ident(&["rule", &key, kind, &r.index.to_string()]),
            Kind::Rule,
            vec![
                format!("{} #{}", kind.to_ascii_uppercase(), r.index),
                if r.matches.is_empty() { "any connection".into() } else { r.matches.join(" | ") },
            ],
            None,
        );
        g.edge(plain(&vs_id, &rule_id, vec![format!("{kind} {}.", order + 1)]));
        let positive: Vec<&crd::RouteDestination> =
            r.route.iter().filter(|d| r.route.len() == 1 || d.weight.unwrap_or(0) > 0).collect();
        let total: i64 = positive.iter().map(|d| d.weight.unwrap_or(0).max(0)).sum();
        for d in &positive {
            let Some(dest) = &d.destination else { continue };
            let h = host::resolve(&dest.host, &r.res.namespace, &settings.domain_suffix);
            let port = dest.port.as_ref().map(|p| p.number).unwrap_or(0);
            let cluster =
                meshroute::compile::cluster_name(&settings.cluster_template, port, dest.subset.as_deref(), &h);
            let label = vec![
                short_host(&h),
                if port == 0 { "listener's port".into() } else { subset_port(dest.subset.as_deref(), port) },
            ];
            let id = g.node(ident(&["dst", &cluster]), Kind::Destination, label, None);
            let share = if positive.len() == 1 || total == 0 {
                100.0
            } else {
                d.weight.unwrap_or(0).max(0) as f64 * 100.0 / total as f64
            };
            g.edge(Edge {
                from: rule_id.clone(),
                to: id,
                share: Some(share),
                notes: vec!["connections".into()],
                broken: false,
                mirror: false,
                route: None,
            });
        }
    }
}

fn plain(from: &str, to: &str, notes: Vec<String>) -> Edge {
    Edge { from: from.to_string(), to: to.to_string(), share: None, notes, broken: false, mirror: false, route: None }
}
