//! Per-request decisions: what Istio would do with this request, with every random choice
//! already made.

use crate::compile::{Abort, Action, CompiledVs, DefaultRoute, Dest, Entry, Mirror, Redirect, RouteTable, Rule};
use crate::host;
use crate::matcher::{path_only, MatchBlock, StrMatch};
use crate::request::{Random, RequestView};
use std::time::Duration;

#[derive(Debug)]
pub enum Decision<'t> {
    /// No VirtualService claims the host: the request goes on untouched (ALLOW_ANY).
    Passthrough,
    /// A registry (ServiceEntry) host no VirtualService claims: istiod's default route to the
    /// service's cluster.
    Default(&'t DefaultRoute),
    /// Unknown host while the Sidecar says REGISTRY_ONLY: 502, as istiod's `block_all` vhost.
    Blocked,
    /// The host is known but no rule matches: 404, Envoy's `NR`.
    NoRoute {
        vs: &'t CompiledVs,
    },
    Matched(Matched<'t>),
}

#[derive(Debug)]
pub struct Matched<'t> {
    pub vs: &'t CompiledVs,
    pub rule: &'t Rule,
    pub entry: &'t Entry,
    /// The chosen destination for a forwarding rule.
    pub destination: Option<&'t Dest>,
    /// Delay to inject before anything else, already rolled.
    pub delay: Option<Duration>,
    /// Abort to reply with after the delay, already rolled (independently of the delay).
    pub abort: Option<&'t Abort>,
    /// Mirrors whose percentage came up.
    pub mirrors: Vec<&'t Mirror>,
}

/// The part of a decision that involves no dice: which route serves the request. `decide` is
/// `select` then `roll`; `explain` starts from the same selection and builds one plan per
/// possible roll, so the two cannot disagree on the host lookup or the first match.
#[derive(Debug, Clone, Copy)]
pub enum Selection<'t> {
    Passthrough,
    Default(&'t DefaultRoute),
    Blocked,
    NoRoute { vs: &'t CompiledVs },
    Rule { vs: &'t CompiledVs, rule: &'t Rule, entry: &'t Entry },
}

impl<'t> Selection<'t> {
    /// Makes the selection's random choices (destination, fault, mirrors).
    pub fn roll(self, rng: &mut dyn Random) -> Decision<'t> {
        match self {
            Selection::Passthrough => Decision::Passthrough,
            Selection::Default(d) => Decision::Default(d),
            Selection::Blocked => Decision::Blocked,
            Selection::NoRoute { vs } => Decision::NoRoute { vs },
            Selection::Rule { vs, rule, entry } => Decision::Matched(roll(vs, rule, entry, rng)),
        }
    }

    /// The decision with these choices made instead of rolled (what `explain` enumerates):
    /// `destination` must be one of the rule's; `fault` applies the delay and abort the rule
    /// has; `mirrors` sends every mirror.
    pub fn with_choices(self, destination: Option<&'t Dest>, fault: bool, mirrors: bool) -> Decision<'t> {
        match self {
            Selection::Rule { vs, rule, entry } => {
                let f = rule.fault.as_ref().filter(|_| fault);
                Decision::Matched(Matched {
                    vs,
                    rule,
                    entry,
                    destination,
                    delay: f.and_then(|f| f.delay.map(|(d, _)| d)),
                    abort: f.and_then(|f| f.abort.as_ref().map(|(a, _)| a)),
                    mirrors: if mirrors { rule.mirrors.iter().collect() } else { Vec::new() },
                })
            }
            Selection::Passthrough => Decision::Passthrough,
            Selection::Default(d) => Decision::Default(d),
            Selection::Blocked => Decision::Blocked,
            Selection::NoRoute { vs } => Decision::NoRoute { vs },
        }
    }
}

impl RouteTable {
    pub fn decide<'t>(&'t self, req: &dyn RequestView, rng: &mut dyn Random) -> Decision<'t> {
        self.select(req).roll(rng)
    }

    /// Which route serves `req`: the host lookup and Istio's first match, nothing random.
    pub fn select<'t>(&'t self, req: &dyn RequestView) -> Selection<'t> {
        let port = self.request_port(req);
        let Some(vs) = self.find_vs_on(req.authority(), port) else {
            if let Some(d) = self.default_route(req.authority(), port) {
                return Selection::Default(d);
            }
            return if self.registry_only && !self.in_registry(req.authority()) {
                Selection::Blocked
            } else {
                Selection::Passthrough
            };
        };
        let Some(entry) = vs.first_match(req, port) else { return Selection::NoRoute { vs } };
        let Some(rule) = vs.rules.get(entry.rule) else { return Selection::NoRoute { vs } };
        Selection::Rule { vs, rule, entry }
    }

    /// The port the request addresses: the authority's, else the scheme's default, else the
    /// listener's.
    pub fn request_port(&self, req: &dyn RequestView) -> u32 {
        match host::authority_host(req.authority()).1 {
            Some(p) => p,
            None => match req.scheme() {
                "https" => 443,
                "http" => 80,
                _ => self.default_port,
            },
        }
    }
}

/// Draws, in a fixed order (destination, delay, abort, each mirror), so that a seeded source
/// replays exactly.
fn roll<'t>(vs: &'t CompiledVs, rule: &'t Rule, entry: &'t Entry, rng: &mut dyn Random) -> Matched<'t> {
    let destination = match &rule.action {
        Action::Forward { destinations, total_weight } => pick(destinations, *total_weight, rng),
        _ => None,
    };
    let (mut delay, mut abort) = (None, None);
    if let Some(f) = &rule.fault {
        if let Some((d, ppm)) = &f.delay {
            if rng.chance(*ppm) {
                delay = Some(*d);
            }
        }
        if let Some((a, ppm)) = &f.abort {
            if rng.chance(*ppm) {
                abort = Some(a);
            }
        }
    }
    let mirrors = rule.mirrors.iter().filter(|m| rng.chance(m.ppm)).collect();
    Matched { vs, rule, entry, destination, delay, abort, mirrors }
}

fn pick<'t>(dests: &'t [Dest], total: u64, rng: &mut dyn Random) -> Option<&'t Dest> {
    match dests {
        [] => None,
        [only] => Some(only),
        _ => {
            let mut r = rng.below(total);
            dests.iter().find(|d| {
                let w = u64::from(d.weight);
                if r < w {
                    true
                } else {
                    r -= w;
                    false
                }
            })
        }
    }
}

impl Redirect {
    /// The `location` of the redirect for this request (Envoy `RedirectAction`): the path is
    /// replaced whole, the query kept; the host swapped; default ports dropped.
    pub fn location(&self, req: &dyn RequestView) -> String {
        let scheme = self.scheme.as_deref().unwrap_or_else(|| match req.scheme() {
            "" => "http",
            s => s,
        });
        let (orig_host, orig_port) = host::authority_host(req.authority());
        let (host_part, mut port) = match &self.authority {
            Some(a) => {
                let (h, p) = host::authority_host(a);
                (h.to_string(), p.or(orig_port))
            }
            None => (orig_host.to_string(), orig_port),
        };
        // Both forms are an explicit `port_redirect` in istiod (route.go `translateRedirect`):
        // FROM_REQUEST_PORT writes the port the request came in on, which survives a scheme
        // change (`http://h/` → `https://h:80/`).
        let explicit = self.port.or_else(|| {
            self.derive_port_from_request.then(|| {
                orig_port.unwrap_or(match req.scheme() {
                    "https" => 443,
                    _ => 80,
                })
            })
        });
        if let Some(p) = explicit {
            port = Some(p);
        }
        if (scheme == "http" && port == Some(80)) || (scheme == "https" && port == Some(443)) {
            port = None;
        }
        // A scheme change drops the old scheme's port unless one was asked for.
        if self.scheme.is_some() && explicit.is_none() && Some(scheme) != Some(req.scheme()) {
            port = None;
        }
        let path = req.path();
        let new_path = match &self.uri {
            Some(u) if u.contains('?') => u.clone(),
            Some(u) => match path.split_once('?') {
                Some((_, q)) => format!("{u}?{q}"),
                None => u.clone(),
            },
            None => path.to_string(),
        };
        match port {
            Some(p) => format!("{scheme}://{host_part}:{p}{new_path}"),
            None => format!("{scheme}://{host_part}{new_path}"),
        }
    }
}

impl Rule {
    /// Where the rule is written: `(namespace/name, position in its spec.http)` — the delegate's
    /// for a rule a delegate brought in, else `vs` (the name findings are filed under) and the
    /// written position. Findings and consequences are looked up there.
    pub fn written_at<'a>(&'a self, vs: &'a str) -> (&'a str, usize) {
        match &self.delegated {
            Some(o) => (o.delegate.as_str(), o.delegate_rule),
            None => (vs, self.written_index),
        }
    }

    /// The request path after `rewrite`, if the rule rewrites it (Envoy `prefix_rewrite`
    /// replaces the matched prefix — or the whole path for exact and regex matches — and
    /// `regex_rewrite` substitutes every match; the query string is kept either way).
    pub fn rewritten_path(&self, block: &MatchBlock, path: &str) -> Option<String> {
        let rw = self.rewrite.as_ref()?;
        let p = path_only(path);
        let rest = &path[p.len()..];
        if let Some((re, template)) = &rw.uri_regex {
            return Some(format!("{}{rest}", re.replace_all(p, template.as_str())));
        }
        let new = rw.uri.as_ref()?;
        let matched_len = match &block.uri {
            Some(StrMatch::Prefix(pre)) => pre.len().min(p.len()),
            Some(StrMatch::Exact(_)) | Some(StrMatch::Regex(_)) => p.len(),
            // A rule without a uri match is an Envoy `prefix: "/"` route.
            _ => usize::from(p.starts_with('/')),
        };
        Some(format!("{new}{}{rest}", &p[matched_len..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::compile_json;
    use crate::request::{Request, SplitMix64};
    use serde_json::json;

    fn table(http: serde_json::Value) -> RouteTable {
        crate::testutil::reviews_table(http, json!({}))
    }

    fn cluster<'t>(d: &Decision<'t>) -> Option<&'t str> {
        match d {
            Decision::Matched(m) => m.destination.map(|d| d.cluster.as_str()),
            _ => None,
        }
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn header_match_routes_to_v2_and_default_to_v1() {
        let t = table(json!([
            {"match": [{"headers": {"x-debug": {"exact": "true"}}}],
             "route": [{"destination": {"host": "reviews", "subset": "v2"}}]},
            {"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}
        ]));
        let mut rng = SplitMix64(1);
        let dbg = Request::new("GET", "reviews", "/").with_header("x-debug", "true");
        assert_eq!(cluster(&t.decide(&dbg, &mut rng)), Some("outbound|80|v2|reviews.default.svc.cluster.local"));
        let plain = Request::new("GET", "reviews:9080", "/");
        assert_eq!(cluster(&t.decide(&plain, &mut rng)), Some("outbound|80|v1|reviews.default.svc.cluster.local"));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn unknown_host_passes_through_and_unmatched_known_host_is_no_route() {
        let t = table(json!([{"match": [{"uri": {"prefix": "/a"}}], "route": [{"destination": {"host": "reviews"}}]}]));
        let mut rng = SplitMix64(1);
        assert!(matches!(t.decide(&Request::new("GET", "other", "/a"), &mut rng), Decision::Passthrough));
        assert!(matches!(t.decide(&Request::new("GET", "reviews", "/b"), &mut rng), Decision::NoRoute { .. }));
        assert!(matches!(
            t.decide(&Request::new("GET", "REVIEWS.default.svc.cluster.local", "/a"), &mut rng),
            Decision::Matched(_)
        ));
    }

    fn compiled(resources: serde_json::Value) -> RouteTable {
        let c = compile_json(json!({"resources": resources}).to_string().as_bytes());
        assert!(!c.diagnostics.has_errors(), "{}", c.diagnostics);
        c.table.expect("table")
    }

    fn service_entry(host: &str) -> serde_json::Value {
        json!({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
               "metadata": {"name": host, "namespace": "default"},
               "spec": {"hosts": [host], "ports": [{"number": 8080, "name": "http", "protocol": "HTTP"}],
                        "location": "MESH_EXTERNAL", "resolution": "STATIC",
                        "endpoints": [{"address": "127.0.0.1"}]}})
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn registry_host_without_virtual_service_takes_the_default_route() {
        let t = compiled(json!([service_entry("weather.example.com")]));
        let mut rng = SplitMix64(1);
        let Decision::Default(d) = t.decide(&Request::new("GET", "weather.example.com:8080", "/"), &mut rng) else {
            panic!("expected the default route")
        };
        assert_eq!(d.cluster, "outbound|8080||weather.example.com");
        assert_eq!(d.retry.attempts, 2);
        // The service's only port serves a request that names none.
        assert!(matches!(t.decide(&Request::new("GET", "weather.example.com", "/"), &mut rng), Decision::Default(_)));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn registry_only_blocks_unknown_hosts_but_not_registry_ones() {
        let sidecar = json!({"apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
            "metadata": {"name": "default", "namespace": "default"},
            "spec": {"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}});
        let t = compiled(json!([service_entry("weather.example.com"), sidecar]));
        let mut rng = SplitMix64(1);
        assert!(matches!(t.decide(&Request::new("GET", "evil.example.org", "/"), &mut rng), Decision::Blocked));
        assert!(matches!(t.decide(&Request::new("GET", "weather.example.com", "/"), &mut rng), Decision::Default(_)));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn sidecar_egress_hosts_hide_what_they_do_not_import() {
        let sidecar = json!({"apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
            "metadata": {"name": "default", "namespace": "default"},
            "spec": {"egress": [{"hosts": ["./weather.example.com"]}],
                     "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}});
        let t = compiled(json!([service_entry("weather.example.com"), service_entry("stocks.example.com"), sidecar]));
        let mut rng = SplitMix64(1);
        assert!(matches!(t.decide(&Request::new("GET", "weather.example.com", "/"), &mut rng), Decision::Default(_)));
        assert!(matches!(t.decide(&Request::new("GET", "stocks.example.com", "/"), &mut rng), Decision::Blocked));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn match_level_gateways_replace_source_labels_as_istiod_does() {
        // The proxy has no labels, yet the block applies: with `gateways` on the match, istiod's
        // sourceMatchHTTP looks at nothing else.
        let vs = json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "r", "namespace": "default"},
            "spec": {"hosts": ["reviews"], "http": [
                {"match": [{"gateways": ["mesh"], "sourceLabels": {"app": "nobody"}}],
                 "route": [{"destination": {"host": "reviews"}}]}]}});
        let t = compiled(json!([vs]));
        let mut rng = SplitMix64(1);
        assert!(matches!(t.decide(&Request::new("GET", "reviews", "/"), &mut rng), Decision::Matched(_)));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn weight_zero_is_never_chosen() {
        let t = table(json!([{"route": [
            {"destination": {"host": "reviews", "subset": "v1"}, "weight": 100},
            {"destination": {"host": "reviews", "subset": "v2"}, "weight": 0}]}]));
        let mut rng = SplitMix64(9);
        for _ in 0..1000 {
            assert_eq!(
                cluster(&t.decide(&Request::new("GET", "reviews", "/"), &mut rng)),
                Some("outbound|80|v1|reviews.default.svc.cluster.local")
            );
        }
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn rewrite_replaces_the_matched_prefix_and_keeps_the_query() {
        let t = table(json!([{"match": [{"uri": {"prefix": "/old"}}], "rewrite": {"uri": "/new"},
                               "route": [{"destination": {"host": "reviews"}}]}]));
        let mut rng = SplitMix64(1);
        let req = Request::new("GET", "reviews", "/old/x?q=1");
        let Decision::Matched(m) = t.decide(&req, &mut rng) else { panic!("no match") };
        assert_eq!(m.rule.rewritten_path(&m.entry.block, &req.path).as_deref(), Some("/new/x?q=1"));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn redirect_location_swaps_path_and_keeps_query() {
        let r = Redirect {
            uri: Some("/v2".into()),
            authority: Some("new.example.com".into()),
            port: None,
            derive_port_from_request: false,
            scheme: Some("https".into()),
            code: 301,
        };
        let req = Request::new("GET", "old.example.com:80", "/v1?a=b");
        assert_eq!(r.location(&req), "https://new.example.com/v2?a=b");
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn derive_port_from_request_keeps_the_request_port_across_a_scheme_change() {
        let r = Redirect {
            uri: None,
            authority: None,
            port: None,
            derive_port_from_request: true,
            scheme: Some("https".into()),
            code: 301,
        };
        assert_eq!(r.location(&Request::new("GET", "shop.example.com:8080", "/a")), "https://shop.example.com:8080/a");
        // No port in the authority: the listener's (scheme default) port, now explicit under https.
        assert_eq!(r.location(&Request::new("GET", "shop.example.com", "/a")), "https://shop.example.com:80/a");
        // Without derivePort the scheme change drops the old port, as Envoy does.
        let plain = Redirect { derive_port_from_request: false, ..r };
        assert_eq!(plain.location(&Request::new("GET", "shop.example.com:8080", "/a")), "https://shop.example.com/a");
    }
}
