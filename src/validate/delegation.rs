//! What istiod's delegate merge leaves out, which istiod only logs (`mergeVirtualServices`,
//! `mergeHTTPRoute`): named here, so that no rule disappears without a word (R185).

use super::{Ctx, Place};
use crate::delegate::{self, Dropped};

pub(super) fn run(cx: &mut Ctx<'_>) {
    let bundle = cx.bundle;
    let resources = &bundle.resources;
    for d in delegate::merge(bundle).dropped {
        match d {
            Dropped::NotFound { root, rule, delegate } => {
                let at = Place(resources.get(root));
                let msg =
                    format!("delegate virtual service {delegate} not found; the rule is ignored, as istiod ignores it");
                cx.own_warn(&at, format!("spec.http[{rule}].delegate"), msg);
            }
            Dropped::NotExported { root, rule, delegate } => {
                let at = Place(resources.get(root));
                let ns = at.namespace().to_string();
                let msg = format!(
                    "delegate virtual service {delegate} is not exported to {ns}; the rule is ignored, as istiod ignores it"
                );
                cx.own_warn(&at, format!("spec.http[{rule}].delegate"), msg);
            }
            Dropped::Conflict { root, rule, delegate, delegate_rule } => {
                let key = resources.get(root).map(|r| r.key()).unwrap_or_default();
                let at = Place(resources.get(delegate));
                let msg = format!(
                    "the match of this delegate rule conflicts with every match of VirtualService {key} spec.http[{rule}], \
                     which delegates to it; istiod drops the rule"
                );
                cx.own_warn(&at, format!("spec.http[{delegate_rule}].match"), msg);
            }
            Dropped::Unreferenced { delegate } => {
                let at = Place(resources.get(delegate));
                cx.info(
                    &at,
                    "spec.hosts",
                    "no VirtualService delegates to this one (it has no hosts); it routes nothing",
                );
            }
        }
    }
}
