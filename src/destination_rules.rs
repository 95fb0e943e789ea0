//! The DestinationRule a proxy applies to a host, found and merged as istiod does
//! (`MODEL push_context.go setDestinationRules` and `destinationRule`, `MODEL destination_rule.go
//! mergeDestinationRule`, `MODEL sidecar.go SidecarScope.DestinationRule`).
//!
//! Lookup, first bucket with a host match wins: the proxy's own namespace (every rule visible
//! there), then the service's namespace, then the root namespace (rules exported to the proxy's
//! namespace). In a bucket the exact host beats the most specific wildcard. Rules for one host in
//! one bucket merge: subsets concatenated (the first of a name wins), the first top-level traffic
//! policy wins. A rule with a `workloadSelector` stays in its namespace and applies only to
//! workloads it selects, before the selector-less rule.

use crate::config::{Bundle, Resource, Settings};
use crate::crd;
use crate::host;
use std::collections::{BTreeMap, HashMap};

/// istiod's default config root namespace.
const ROOT_NAMESPACE: &str = "istio-system";

/// One consolidated rule: the merged spec and every resource it came from, in merge order.
#[derive(Debug, Clone)]
pub struct Consolidated<'a> {
    pub from: Vec<&'a Resource>,
    pub rule: crd::DestinationRule,
    export_to: Vec<String>,
}

/// A rule with its resolved host and effective `exportTo`.
type Candidate<'a> = (&'a Resource, &'a crd::DestinationRule, String, Vec<String>);

/// The merged DestinationRule for `fqdn` as the proxy described by `settings` sees it;
/// `service_ns` is the namespace of the service the host belongs to, when known. For many
/// lookups, build an [`Index`] once.
pub fn for_host<'a>(bundle: &'a Bundle, fqdn: &str, service_ns: Option<&str>) -> Option<Consolidated<'a>> {
    Index::new(bundle).for_host(fqdn, service_ns)
}

/// Every DestinationRule resolved and ordered once, by host: a lookup reads the rules of its
/// host and the wildcard ones, not all of them, so looking up every host stays linear.
pub struct Index<'a> {
    settings: &'a Settings,
    /// `sortConfigBySelectorAndCreationTime`: rules with a selector first, then input order.
    all: Vec<Candidate<'a>>,
    exact: HashMap<String, Vec<usize>>,
    wildcard: Vec<usize>,
}

impl<'a> Index<'a> {
    pub fn new(bundle: &'a Bundle) -> Self {
        let s = &bundle.settings;
        let mut all: Vec<Candidate<'a>> = bundle
            .destination_rules()
            .map(|(r, dr)| {
                let h = host::resolve(&dr.host, &r.namespace, &s.domain_suffix).to_ascii_lowercase();
                // A rule with a workload selector is never exported (`setDestinationRules`).
                let export = if dr.workload_selector.is_some() { vec![".".to_string()] } else { dr.export_to.clone() };
                (r, dr, h, export)
            })
            .collect();
        all.sort_by_key(|(r, dr, _, _)| (dr.workload_selector.is_none(), r.index));
        let (mut exact, mut wildcard): (HashMap<String, Vec<usize>>, Vec<usize>) = (HashMap::new(), Vec::new());
        for (i, (_, _, h, _)) in all.iter().enumerate() {
            if h.starts_with('*') {
                wildcard.push(i);
            } else {
                exact.entry(h.clone()).or_default().push(i);
            }
        }
        Index { settings: s, all, exact, wildcard }
    }

    /// See [`for_host`].
    pub fn for_host(&self, fqdn: &str, service_ns: Option<&str>) -> Option<Consolidated<'a>> {
        let s = self.settings;
        // Only these can match `fqdn`; in the index's order, as if all rules were scanned.
        let mut ids: Vec<usize> = self.exact.get(fqdn).cloned().unwrap_or_default();
        ids.extend(&self.wildcard);
        ids.sort_unstable();
        let all: Vec<&Candidate<'a>> = ids.iter().filter_map(|&i| self.all.get(i)).collect();

        let local =
            |ns: &str, export: &[String]| export.is_empty() || export.iter().any(|e| e == "*" || e == "." || e == ns);
        let private_only = |ns: &str, export: &[String]| {
            (export.is_empty() && s.default_destination_rule_export_to.iter().any(|e| e == "."))
                || (export.len() == 1 && export.iter().any(|e| e == "." || e == ns))
        };
        let exported_to_proxy =
            |export: &[String]| export.is_empty() || export.iter().any(|e| e == "*" || *e == s.namespace);

        let mut buckets: Vec<Vec<Candidate<'a>>> = Vec::new();
        let pick = |pred: &dyn Fn(&Resource, &[String]) -> bool| {
            all.iter().filter(|(r, _, _, e)| pred(r, e)).map(|c| (*c).clone()).collect::<Vec<_>>()
        };
        if s.namespace != ROOT_NAMESPACE {
            buckets.push(pick(&|r, e| r.namespace == s.namespace && local(&r.namespace, e)));
        } else {
            buckets.push(pick(&|r, e| r.namespace == ROOT_NAMESPACE && private_only(&r.namespace, e)));
        }
        if let Some(ns) = service_ns {
            buckets.push(pick(&|r, e| r.namespace == ns && !private_only(&r.namespace, e) && exported_to_proxy(e)));
        }
        buckets.push(pick(&|r, e| {
            r.namespace == ROOT_NAMESPACE && !private_only(&r.namespace, e) && exported_to_proxy(e)
        }));

        for bucket in buckets {
            let Some(best) = most_specific(fqdn, bucket.iter().map(|(_, _, h, _)| h.as_str())) else { continue };
            let merged = merge(bucket.into_iter().filter(|(_, _, h, _)| *h == best).map(|(r, dr, _, e)| (r, dr, e)));
            return select(merged, s);
        }
        None
    }
}

/// istio `MostSpecificHostMatch`: the exact name, else the longest matching wildcard.
fn most_specific<'h>(fqdn: &str, hosts: impl Iterator<Item = &'h str>) -> Option<String> {
    let mut best: Option<&str> = None;
    for h in hosts {
        if h == fqdn {
            return Some(h.to_string());
        }
        if h.starts_with('*') && host::matches(h, fqdn) && best.is_none_or(|b| h.len() > b.len()) {
            best = Some(h);
        }
    }
    best.map(str::to_string)
}

/// `mergeDestinationRule` with istiod's default `ENABLE_ENHANCED_DESTINATIONRULE_MERGE`: rules
/// merge only when their `exportTo` sets are equal (or the newcomer's is a superset, in which
/// case it also stands alone), and rules with different selectors never merge.
fn merge<'a>(
    rules: impl Iterator<Item = (&'a Resource, &'a crd::DestinationRule, Vec<String>)>,
) -> Vec<Consolidated<'a>> {
    let mut out: Vec<Consolidated<'a>> = Vec::new();
    for (res, dr, export) in rules {
        let mut separate = true;
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v.dedup();
            v
        };
        let mine = sorted(&export);
        for c in out.iter_mut() {
            let theirs = sorted(&c.export_to);
            if mine == theirs {
                separate = false;
            } else if !theirs.is_empty() && theirs.iter().all(|e| mine.contains(e)) {
                separate = true;
            } else {
                separate = true;
                continue;
            }
            let sel = |d: &crd::DestinationRule| d.workload_selector.as_ref().map(|w| w.match_labels.clone());
            match (sel(&c.rule), sel(dr)) {
                (Some(a), Some(b)) if a != b => {
                    separate = true;
                    continue;
                }
                (Some(_), Some(_)) | (None, None) => separate = false,
                _ => {}
            }
            c.from.push(res);
            for sub in &dr.subsets {
                if !c.rule.subsets.iter().any(|x| x.name == sub.name) {
                    c.rule.subsets.push(sub.clone());
                }
            }
            if c.rule.traffic_policy.is_none() {
                c.rule.traffic_policy = dr.traffic_policy.clone();
            }
        }
        if separate {
            out.push(Consolidated { from: vec![res], rule: dr.clone(), export_to: export });
        }
    }
    out
}

/// `SidecarScope.DestinationRule`: a rule of the proxy's namespace whose selector matches the
/// proxy's labels, else the (last) selector-less one.
fn select<'a>(merged: Vec<Consolidated<'a>>, s: &Settings) -> Option<Consolidated<'a>> {
    let selects = |sel: &BTreeMap<String, String>| crate::labels::selects(sel, &s.labels);
    let mut catch_all = None;
    for c in merged {
        match &c.rule.workload_selector {
            None => catch_all = Some(c),
            Some(w) => {
                if c.from.first().is_some_and(|r| r.namespace == s.namespace) && selects(&w.match_labels) {
                    return Some(c);
                }
            }
        }
    }
    catch_all
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn bundle(resources: Value, settings: Value) -> Bundle {
        let (b, d) = crate::config::load_value(json!({"resources": resources, "settings": settings}));
        assert!(!d.has_errors(), "{d}");
        b
    }

    fn dr(ns: &str, name: &str, spec: Value) -> Value {
        json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
               "metadata": {"name": name, "namespace": ns}, "spec": spec})
    }

    fn subsets(c: &Consolidated<'_>) -> Vec<String> {
        c.rule.subsets.iter().map(|s| s.name.clone()).collect()
    }

    const REVIEWS: &str = "reviews.default.svc.cluster.local";

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn two_rules_for_one_host_merge_subsets_and_keep_the_first_policy() {
        let b = bundle(
            json!([
                dr(
                    "default",
                    "a",
                    json!({"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}}],
                    "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}})
                ),
                dr(
                    "default",
                    "b",
                    json!({"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "x"}},
                    {"name": "v2", "labels": {"version": "v2"}}],
                    "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}})
                ),
            ]),
            json!({}),
        );
        let c = for_host(&b, REVIEWS, Some("default")).unwrap();
        assert_eq!(subsets(&c), ["v1", "v2"]);
        assert_eq!(c.rule.subsets[0].labels["version"], "v1");
        let lb = c.rule.traffic_policy.as_ref().and_then(|p| p.load_balancer.as_ref()).and_then(|l| l.simple.clone());
        assert_eq!(lb.as_deref(), Some("ROUND_ROBIN"));
        assert_eq!(c.from.len(), 2);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn private_rule_of_another_namespace_is_invisible_and_the_proxy_namespace_wins() {
        let host = "ratings.prod.svc.cluster.local";
        let private = dr("prod", "r", json!({"host": host, "exportTo": ["."], "subsets": [{"name": "p"}]}));
        let b = bundle(json!([private.clone()]), json!({"namespace": "default"}));
        assert!(for_host(&b, host, Some("prod")).is_none());
        let public = dr("prod", "r", json!({"host": host, "subsets": [{"name": "p"}]}));
        let mine = dr("default", "mine", json!({"host": host, "subsets": [{"name": "m"}]}));
        let b = bundle(json!([public, mine]), json!({"namespace": "default"}));
        assert_eq!(subsets(&for_host(&b, host, Some("prod")).unwrap()), ["m"]);
        let root = dr("istio-system", "all", json!({"host": "*.svc.cluster.local", "subsets": [{"name": "root"}]}));
        let b = bundle(json!([root]), json!({"namespace": "default"}));
        assert_eq!(subsets(&for_host(&b, host, Some("prod")).unwrap()), ["root"]);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn workload_selector_rule_applies_only_to_the_workloads_it_selects() {
        let resources = json!([
            dr(
                "default",
                "canary",
                json!({"host": "reviews", "workloadSelector": {"matchLabels": {"app": "canary"}},
                "subsets": [{"name": "c"}]})
            ),
            dr("default", "all", json!({"host": "reviews", "subsets": [{"name": "v1"}]})),
        ]);
        let b = bundle(resources.clone(), json!({"labels": {"app": "canary"}}));
        // Their exportTo sets differ (a selector rule is private), so they do not merge.
        assert_eq!(subsets(&for_host(&b, REVIEWS, Some("default")).unwrap()), ["c"]);
        let b = bundle(resources, json!({"labels": {"app": "web"}}));
        assert_eq!(subsets(&for_host(&b, REVIEWS, Some("default")).unwrap()), ["v1"]);
    }
}
