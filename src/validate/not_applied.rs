//! MR0007 notices for fields Istio applies but meshroute does not, so that no field of the CRD
//! model is dropped without a word (tests/no_silent_drops.rs walks the whole model to keep it
//! so). Warnings where the field changes traffic or security in Istio; infos where it only
//! names or labels things there.

use super::{Ctx, Place};
use crate::config::Spec;
use crate::crd;
use crate::diag::Severity;

pub(super) fn check(cx: &mut Ctx<'_>, at: &Place<'_>, spec: &Spec) {
    match spec {
        Spec::VirtualService(vs) => virtual_service(cx, at, vs),
        Spec::DestinationRule(dr) => destination_rule(cx, at, dr),
        Spec::ServiceEntry(se) => service_entry(cx, at, se),
        Spec::WorkloadEntry(we) => workload_entry(cx, at, "spec", we),
        Spec::Gateway(gw) => gateway(cx, at, gw),
        Spec::Sidecar(sc) => sidecar(cx, at, sc),
    }
}

fn notice(cx: &mut Ctx<'_>, at: &Place<'_>, severity: Severity, path: String, what: &str, why: &str) {
    let message = format!("{what} is not supported by meshroute and is ignored ({why})");
    cx.push(severity, Some("MR0007"), at, path, message);
}

fn warn(cx: &mut Ctx<'_>, at: &Place<'_>, path: String, what: &str, why: &str) {
    notice(cx, at, Severity::Warning, path, what, why);
}

fn virtual_service(cx: &mut Ctx<'_>, at: &Place<'_>, vs: &crd::VirtualService) {
    for (i, r) in vs.tcp.iter().enumerate() {
        for (j, m) in r.matches.iter().enumerate() {
            if m.source_subnet.is_some() {
                let path = format!("spec.tcp[{i}].match[{j}].sourceSubnet");
                // R193: istiod builds no listener match from it either.
                warn(cx, at, path, "sourceSubnet", "istiod ignores it too (no filter chain matches on it)");
            }
        }
    }
    for (i, r) in vs.http.iter().enumerate() {
        for (j, m) in r.matches.iter().enumerate() {
            if m.stat_prefix.is_some() {
                let path = format!("spec.http[{i}].match[{j}].statPrefix");
                warn(cx, at, path, "statPrefix", "meshroute counts requests per VirtualService and rule instead");
            }
        }
        if let Some(rt) = &r.retries {
            hinted_retries(cx, at, &format!("spec.http[{i}].retries"), rt);
        }
    }
}

/// What a rule's own retry policy loses when the filter hints it per request (R60): the parts
/// Envoy takes from route configuration only. With `retryPolicyOnRoute` and `retryPolicyRoutes`
/// (what `meshroute envoy`, `run`, `apply` and `up` give the filter, and what the routes of
/// `compile --as envoyfilter` expect) the policy's own route carries all of them (R220, R221),
/// so nothing is said. `attempts <= 0`: istiod writes no policy at all (R56), so nothing is lost
/// either (the webhook's own warning covers the inert fields). `retryIgnorePreviousHosts: false`
/// is what a hinted policy does anyway: no host predicate.
fn hinted_retries(cx: &mut Ctx<'_>, at: &Place<'_>, path: &str, rt: &crd::HttpRetry) {
    let s = &cx.bundle.settings;
    if (s.retry_policy_on_route && s.retry_policy_routes) || rt.attempts <= 0 {
        return;
    }
    let lost = [
        ("backoff", rt.backoff.is_some(), "retry back-off", "retry_back_off"),
        (
            "retryIgnorePreviousHosts",
            rt.retry_ignore_previous_hosts == Some(true),
            "retryIgnorePreviousHosts: true",
            "the previous_hosts retry host predicate (with host_selection_retry_max_attempts: 5)",
        ),
        (
            "retryRemoteLocalities",
            rt.retry_remote_localities == Some(true),
            "retryRemoteLocalities: true",
            "the previous_priorities retry priority",
        ),
    ];
    for (field, set, what, envoy) in lost {
        if set {
            let message = format!(
                "{what} is not applied: without settings.retryPolicyOnRoute and settings.retryPolicyRoutes the filter \
                 sends this rule's retry policy as per-request hints, and Envoy takes {envoy} from route \
                 configuration only; `meshroute envoy` (run, apply, up) applies it, and so does the filter with both \
                 settings behind the routes of `meshroute compile --as envoyfilter`"
            );
            cx.push(Severity::Warning, Some("MR0007"), at, format!("{path}.{field}"), message);
        }
    }
}

fn traffic_policy(cx: &mut Ctx<'_>, at: &Place<'_>, path: &str, p: &crd::TrafficPolicy) {
    let fields = [
        ("tunnel", p.tunnel.is_some(), "no CONNECT tunnel is generated"),
        ("proxyProtocol", p.proxy_protocol.is_some(), "generated clusters send no PROXY protocol header"),
        ("retryBudget", p.retry_budget.is_some(), "generated clusters keep Envoy's retry limits"),
    ];
    for (field, set, why) in fields {
        if set {
            warn(cx, at, format!("{path}.{field}"), field, why);
        }
    }
}

fn destination_rule(cx: &mut Ctx<'_>, at: &Place<'_>, dr: &crd::DestinationRule) {
    if let Some(p) = &dr.traffic_policy {
        traffic_policy(cx, at, "spec.trafficPolicy", p);
    }
    for (i, s) in dr.subsets.iter().enumerate() {
        if let Some(p) = &s.traffic_policy {
            traffic_policy(cx, at, &format!("spec.subsets[{i}].trafficPolicy"), p);
        }
    }
}

fn service_entry(cx: &mut Ctx<'_>, at: &Place<'_>, se: &crd::ServiceEntry) {
    if !se.addresses.is_empty() {
        let why = "requests are matched by host name; a VIP as :authority is not recognised";
        warn(cx, at, "spec.addresses".into(), "addresses", why);
    }
    // MESH_EXTERNAL (the default) is what meshroute does anyway; MESH_INTERNAL makes Istio
    // originate mutual TLS on its own (auto mTLS), which generated clusters do not.
    if se.location.as_deref() == Some("MESH_INTERNAL") {
        let why = "Istio would originate mutual TLS to these endpoints by itself; generated clusters use the \
                   DestinationRule's tls only";
        notice(cx, at, Severity::Info, "spec.location".into(), "location MESH_INTERNAL (auto mTLS)", why);
    }
    if !se.subject_alt_names.is_empty() {
        let why = "generated clusters verify only the DestinationRule's tls.subjectAltNames";
        warn(cx, at, "spec.subjectAltNames".into(), "subjectAltNames", why);
    }
    if se.resolution.as_deref() == Some("DYNAMIC_DNS") {
        let why = "meshroute envoy generates no dynamic forward proxy; requests pass through unrouted";
        warn(cx, at, "spec.resolution".into(), "resolution DYNAMIC_DNS", why);
    }
    for (i, we) in se.endpoints.iter().enumerate() {
        workload_entry(cx, at, &format!("spec.endpoints[{i}]"), we);
    }
}

fn workload_entry(cx: &mut Ctx<'_>, at: &Place<'_>, path: &str, we: &crd::WorkloadEntry) {
    if we.network.is_some() {
        let why = "there is no multi-network gateway routing; the endpoint is dialled directly";
        warn(cx, at, format!("{path}.network"), "network", why);
    }
    if we.service_account.is_some() {
        let why = "no workload identity is checked for the endpoint";
        warn(cx, at, format!("{path}.serviceAccount"), "serviceAccount", why);
    }
}

fn gateway(cx: &mut Ctx<'_>, at: &Place<'_>, gw: &crd::Gateway) {
    // istiod gives a gateway proxy the servers of every Gateway whose selector selects its pod
    // (`MODEL gateway.go MergeGateways` over `PushContext.gatewayWithInstances`); meshroute takes
    // the one named by settings.gateway, so when the proxy's labels are known, say if they differ.
    let s = &cx.bundle.settings;
    let named = at.0.is_some_and(|r| r.key() == s.gateway);
    if named && !s.labels.is_empty() && !gw.selector.iter().all(|(k, v)| s.labels.get(k) == Some(v)) {
        let msg = format!(
            "the selector {:?} does not select this proxy's labels (settings.labels {:?}); istiod would not give \
             it this Gateway's servers",
            gw.selector, s.labels
        );
        cx.own_warn(at, "spec.selector", msg);
    }
    for (i, s) in gw.servers.iter().enumerate() {
        if s.bind.is_some() {
            let why = "generated listeners bind the address given to meshroute envoy";
            warn(cx, at, format!("spec.servers[{i}].bind"), "bind", why);
        }
        if let Some(tls) = &s.tls {
            let file_based = tls.credential_name.is_none() && tls.credential_names.is_empty();
            for (j, c) in tls.tls_certificates.iter().enumerate() {
                if c.ca_certificates.is_some() {
                    let path = format!("spec.servers[{i}].tls.tlsCertificates[{j}].caCertificates");
                    let why = "istiod validates clients with tls.caCertificates only";
                    warn(cx, at, path, "a per-certificate caCertificates", why);
                }
            }
            // istiod applies pins with credentials only, the CRL with files only.
            let why = if file_based {
                "istiod applies it only with credentialName(s)"
            } else {
                "istiod applies it only with file certificates"
            };
            if file_based {
                if !tls.verify_certificate_spki.is_empty() {
                    warn(cx, at, format!("spec.servers[{i}].tls.verifyCertificateSpki"), "verifyCertificateSpki", why);
                }
                if !tls.verify_certificate_hash.is_empty() {
                    warn(cx, at, format!("spec.servers[{i}].tls.verifyCertificateHash"), "verifyCertificateHash", why);
                }
            } else if tls.ca_crl.is_some() {
                warn(cx, at, format!("spec.servers[{i}].tls.caCrl"), "caCrl", why);
            }
        }
        if s.name.is_some() {
            let why = "in Istio it only prefixes stats";
            notice(cx, at, Severity::Info, format!("spec.servers[{i}].name"), "server name", why);
        }
    }
}

fn sidecar(cx: &mut Ctx<'_>, at: &Place<'_>, sc: &crd::Sidecar) {
    // `meshroute envoy` binds every port itself, as istiod does for captureMode NONE (R234).
    let capture = "the generated listeners bind their ports themselves (captureMode NONE); capture by iptables \
                   needs the pod's network";
    for (i, l) in sc.ingress.iter().enumerate() {
        if l.capture_mode.as_deref().is_some_and(|m| m != "NONE") {
            warn(cx, at, format!("spec.ingress[{i}].captureMode"), "ingress captureMode", capture);
        }
        if l.tls.is_some() {
            // R238: istiod applies it only with ENABLE_TLS_ON_SIDECAR_INGRESS, off by default.
            let why = "istiod applies it only with ENABLE_TLS_ON_SIDECAR_INGRESS, which is off by default";
            warn(cx, at, format!("spec.ingress[{i}].tls"), "ingress tls", why);
        }
    }
    for (i, e) in sc.egress.iter().enumerate() {
        let http = e.port.as_ref().is_some_and(|p| {
            matches!(p.protocol.to_ascii_lowercase().as_str(), "http" | "http2" | "grpc" | "grpc-web" | "http_proxy")
        });
        if http {
            // R234: one HTTP listener (with the filter) serves every HTTP port.
            let why = "HTTP egress ports are served by the one outbound HTTP listener, not a listener of their own";
            warn(cx, at, format!("spec.egress[{i}].port"), "egress port", why);
            if e.bind.is_some() {
                warn(cx, at, format!("spec.egress[{i}].bind"), "egress bind", why);
            }
        }
        if e.capture_mode.as_deref().is_some_and(|m| m != "NONE") {
            warn(cx, at, format!("spec.egress[{i}].captureMode"), "egress captureMode", capture);
        }
    }
}
