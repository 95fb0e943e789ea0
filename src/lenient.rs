//! A route table for a configuration with errors, built the way istiod + Envoy would serve it,
//! for `explain` only. The filter, `compile` and `envoy` keep refusing such configurations
//! ([`crate::compile`] is unchanged); this module exists so that a user can see what a broken
//! change *would* do in a cluster.
//!
//! Istio's model of an error has two kinds, and they fail differently:
//! - what the admission webhook rejects (IST0106 and meshroute's own checks) never reaches
//!   istiod: `kubectl apply` fails and the resource does not exist. Here it is left out.
//! - what only `istioctl analyze` reports (IST0101, IST0109, ...) is accepted and served: a route
//!   to an undefined subset names a cluster istiod never builds, and Envoy answers 503 `NC`.
//!   Here it is compiled as written, and the error is kept so that `explain` can mark each
//!   request whose fate it decides.

use crate::compile::{Dest, RouteTable};
use crate::config::Bundle;
use crate::diag::{Diagnostic, Diagnostics, ResourceRef};

/// A table compiled despite errors, with what was tolerated to get it.
#[derive(Debug, Clone)]
pub struct Lenient {
    pub table: RouteTable,
    /// Every finding of the configuration as written (what `validate` prints).
    pub findings: Diagnostics,
    pub tolerated: Tolerance,
}

/// The errors a lenient table was built through.
#[derive(Debug, Clone, Default)]
pub struct Tolerance {
    /// Resources left out of the table, each with its first error.
    pub refused: Vec<Refusal>,
    /// Analyzer errors of the resources that remain: istiod serves them as written.
    pub served: Vec<Diagnostic>,
    /// The proxy acts as a Gateway no resource defines (IST0101 on the VirtualServices that name
    /// it): istiod builds no listener for it, so no request reaches any of its routes.
    pub missing_gateway: Option<String>,
}

/// A resource a lenient table leaves out.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub resource: ResourceRef,
    pub finding: Diagnostic,
    /// Istio's webhook refuses it (IST0106), so istiod never sees it. Otherwise the error is one
    /// of meshroute's own limits: Istio would serve the resource, meshroute cannot tell how.
    pub by_istio: bool,
}

/// What Envoy does to a request the filter forwards, because of a tolerated error.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Consequence {
    /// The status the client gets; 0 when it gets no HTTP answer at all.
    pub status: u32,
    pub reason: String,
    /// The finding that causes it, as `validate` prints it.
    pub finding: String,
}

/// An error istiod accepts: an `istioctl analyze` finding, not a webhook rejection (IST0106) and
/// not one of meshroute's own limits (no code, MR codes).
fn served_by_istiod(d: &Diagnostic) -> bool {
    d.code.is_some_and(|c| c.starts_with("IST") && c != "IST0106")
}

/// Validates and compiles, tolerating errors as istiod would. `None` when an error concerns no
/// resource (the settings or the input itself): there is no cluster state to explain then.
pub fn compile_lenient(bundle: &Bundle, load: Diagnostics) -> Option<Lenient> {
    let mut findings = load;
    findings.0.extend(crate::validate::validate(bundle).0);
    if findings.errors().any(|d| d.resource.is_none()) {
        return None;
    }
    let mut refused: Vec<Refusal> = Vec::new();
    for d in findings.errors().filter(|d| !served_by_istiod(d)) {
        if let Some(r) = &d.resource {
            match refused.iter_mut().find(|x| x.resource.index == r.index) {
                // A webhook rejection outweighs a limit of meshroute's on the same resource.
                Some(x) => x.by_istio |= d.code == Some("IST0106"),
                None => refused.push(Refusal {
                    resource: r.clone(),
                    finding: d.clone(),
                    by_istio: d.code == Some("IST0106"),
                }),
            }
        }
    }
    let kept = Bundle {
        resources: bundle
            .resources
            .iter()
            .filter(|r| !refused.iter().any(|x| x.resource.index == r.index))
            .cloned()
            .collect(),
        settings: bundle.settings.clone(),
        registry: bundle.registry.clone(),
    };
    // Analyze again without the refused resources: a refused DestinationRule leaves its subsets
    // undefined, and that is what istiod would see.
    let mut served: Vec<Diagnostic> =
        crate::validate::validate(&kept).0.into_iter().filter(Diagnostic::is_error).collect();
    let mut build = Diagnostics::default();
    let table = RouteTable::build(&kept, &mut build);
    served.extend(build.0.into_iter().filter(Diagnostic::is_error));
    let gw = &kept.settings.gateway;
    let missing_gateway = (gw != "mesh" && !kept.gateways().any(|(r, _)| &r.key() == gw)).then(|| gw.clone());
    Some(Lenient { table, findings, tolerated: Tolerance { refused, served, missing_gateway } })
}

impl Tolerance {
    pub fn is_empty(&self) -> bool {
        self.refused.is_empty() && self.served.is_empty() && self.missing_gateway.is_none()
    }

    /// What happens to every request when the proxy is a Gateway that does not exist.
    pub fn request_consequence(&self) -> Option<Consequence> {
        let gw = self.missing_gateway.as_ref()?;
        Some(Consequence {
            status: 0,
            reason: format!(
                "no Gateway {gw} exists: istiod builds no listener for it, so the connection is refused and none of the routes below is ever used"
            ),
            finding: format!("Gateway {gw} is defined by no resource of this configuration (IST0101 on the VirtualServices that name it)"),
        })
    }

    /// The served errors at or under `path` of VirtualService `vs` (`namespace/name`).
    fn under(&self, vs: &str, path: &str) -> Vec<&Diagnostic> {
        let below = |p: &str| p == path || p.strip_prefix(path).is_some_and(|rest| rest.starts_with(['.', '[']));
        self.served
            .iter()
            .filter(|d| {
                d.resource
                    .as_ref()
                    .is_some_and(|r| r.kind == "VirtualService" && format!("{}/{}", r.namespace, r.name) == vs)
                    && below(&d.path)
            })
            .collect()
    }

    /// What happens to a request forwarded to `dest` of rule `rule` of `vs`: a destination whose
    /// subset or port has no cluster (IST0101) is a route to a cluster istiod never builds, so
    /// Envoy's router answers 503 with `NC` (`cluster_not_found_response_code`).
    pub fn forward_consequence(&self, vs: &str, rule: usize, dest: &Dest) -> Option<Consequence> {
        let at = format!("spec.http[{rule}].route[{}].destination", dest.route_index);
        let d = *self.under(vs, &at).first()?;
        let reason = match (&dest.subset, d.path.ends_with(".subset")) {
            (Some(s), true) => format!("no healthy upstream: subset {s} is defined by no DestinationRule"),
            _ => format!("no healthy upstream: cluster {} does not exist", dest.cluster),
        };
        Some(Consequence { status: 503, reason, finding: d.to_string() })
    }

    /// Served errors anywhere in rule `rule` of `vs` (shown with the rule that matched).
    pub fn rule_findings(&self, vs: &str, rule: usize) -> Vec<&Diagnostic> {
        self.under(vs, &format!("spec.http[{rule}]"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lenient(resources: serde_json::Value) -> Lenient {
        let (bundle, diags) = crate::config::load_json(json!({"resources": resources}).to_string().as_bytes());
        compile_lenient(&bundle, diags).expect("lenient")
    }

    fn vs(http: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
               "metadata": {"name": "reviews", "namespace": "default"},
               "spec": {"hosts": ["reviews"], "http": http}})
    }

    fn dr(subsets: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
               "metadata": {"name": "reviews", "namespace": "default"},
               "spec": {"host": "reviews", "subsets": subsets}})
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn undefined_subset_is_served_and_its_route_is_a_503() {
        let resources = json!([
            vs(json!([{"route": [{"destination": {"host": "reviews", "subset": "v3"}}]}])),
            dr(json!([{"name": "v1", "labels": {"version": "v1"}}]))
        ]);
        let l = lenient(resources.clone());
        assert!(l.findings.has_errors() && l.tolerated.refused.is_empty());
        let vs = &l.table.virtual_services[0];
        let crate::compile::Action::Forward { destinations, .. } = &vs.rules[0].action else { panic!("forward") };
        let c = l.tolerated.forward_consequence(&vs.name, 0, &destinations[0]).expect("consequence");
        assert_eq!(c.status, 503);
        assert_eq!(c.reason, "no healthy upstream: subset v3 is defined by no DestinationRule");
        assert!(c.finding.contains("IST0101"), "{}", c.finding);
        // The strict path still refuses it.
        assert!(crate::compile_json(json!({"resources": resources}).to_string().as_bytes()).table.is_none());
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn webhook_rejections_leave_the_resource_out_and_their_subsets_undefined() {
        // The DestinationRule fails the webhook (a subset without a name), so istiod never sees
        // it: the VirtualService's subset v1 is then undefined too.
        let l = lenient(json!([
            vs(json!([{"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}])),
            dr(json!([{"name": "v1", "labels": {"version": "v1"}}, {"labels": {"x": "y"}}]))
        ]));
        assert_eq!(l.tolerated.refused.len(), 1, "{:?}", l.tolerated);
        assert_eq!(l.tolerated.refused[0].resource.kind, "DestinationRule");
        assert!(l.tolerated.refused[0].by_istio);
        let vs = &l.table.virtual_services[0];
        let crate::compile::Action::Forward { destinations, .. } = &vs.rules[0].action else { panic!("forward") };
        assert!(l.tolerated.forward_consequence(&vs.name, 0, &destinations[0]).is_some());
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn a_clean_configuration_tolerates_nothing() {
        let l = lenient(json!([
            vs(json!([{"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}])),
            dr(json!([{"name": "v1", "labels": {"version": "v1"}}]))
        ]));
        assert!(l.tolerated.is_empty() && !l.findings.has_errors());
    }
}
