//! Sidecar (Istio `ValidateSidecar`) and meshroute's own settings.

use super::common::{
    check_enum, is_dns1123_label, is_header_token, label_errors, parse_protocol, validate_fqdn, validate_port,
};
use super::gateway::namespace_slash_hostname_errors;
use super::service_entry::check_selector;
use super::{Ctx, Place};
use crate::crd;

const OUTBOUND_MODES: &[&str] = &["REGISTRY_ONLY", "ALLOW_ANY"];

/// `ValidateSidecar`'s ingress part: a port each (valid name, protocol, number), unique ports,
/// an IP `bind`, a `defaultEndpoint` of the form `127.0.0.1:PORT`, `0.0.0.0:PORT`, `[::1]:PORT`,
/// `[::]:PORT` or `unix://path`, and the TLS settings a sidecar can take.
fn check_ingress(cx: &mut Ctx<'_>, at: &Place<'_>, sc: &crd::Sidecar) {
    let mut ports: Vec<u32> = Vec::new();
    for (i, l) in sc.ingress.iter().enumerate() {
        let p = format!("spec.ingress[{i}]");
        let Some(port) = &l.port else {
            cx.error(at, format!("{p}.port"), "sidecar: port is required for ingress listeners");
            continue;
        };
        if port.target_port.is_some_and(|t| t > 0) {
            cx.error(at, format!("{p}.port.targetPort"), "targetPort has no impact on Sidecars");
        }
        if !port.name.is_empty() && !is_dns1123_label(&port.name) {
            cx.error(at, format!("{p}.port.name"), format!("invalid port name: {}", port.name));
        }
        // `ValidateProtocol`: empty is protocol sniffing.
        if !port.protocol.is_empty() && parse_protocol(&port.protocol).is_none() {
            cx.error(at, format!("{p}.port.protocol"), format!("unsupported protocol: {}", port.protocol));
        }
        if let Err(err) = validate_port(i64::from(port.number)) {
            cx.error(at, format!("{p}.port.number"), err);
        }
        if let Some(b) = l.bind.as_deref().filter(|b| !b.is_empty()) {
            if b.parse::<std::net::IpAddr>().is_err() {
                cx.error(at, format!("{p}.bind"), format!("{b} is not a valid IP"));
            }
        }
        if ports.contains(&port.number) {
            cx.error(at, format!("{p}.port.number"), "sidecar: ports on IP bound listeners must be unique");
        }
        ports.push(port.number);
        if let Some(ep) = l.default_endpoint.as_deref().filter(|e| !e.is_empty()) {
            check_default_endpoint(cx, at, &format!("{p}.defaultEndpoint"), ep);
        }
        if let Some(tls) = &l.tls {
            let tp = format!("{p}.tls");
            for (set, what) in [
                (!tls.subject_alt_names.is_empty(), "sidecar: subjectAltNames is not supported in ingress tls"),
                (tls.https_redirect, "sidecar: httpsRedirect is not supported"),
                (tls.credential_name.is_some(), "sidecar: credentialName is not currently supported"),
                (!tls.credential_names.is_empty(), "sidecar: credentialNames is not currently supported"),
                (!tls.tls_certificates.is_empty(), "sidecar: tls_certificates is not currently supported"),
            ] {
                if set {
                    cx.error(at, tp.as_str(), what);
                }
            }
            if let Some(m @ ("ISTIO_MUTUAL" | "AUTO_PASSTHROUGH")) = tls.mode.as_deref() {
                cx.error(
                    at,
                    format!("{tp}.mode"),
                    format!("configuration is invalid: cannot set mode to {m} in sidecar ingress tls"),
                );
            }
            if !matches!(parse_protocol(&port.protocol), Some("HTTPS" | "TLS")) {
                cx.error(at, tp.as_str(), "server cannot have TLS settings for non HTTPS/TLS ports");
            }
        }
    }
}

fn check_default_endpoint(cx: &mut Ctx<'_>, at: &Place<'_>, path: &str, ep: &str) {
    if let Some(addr) = ep.strip_prefix("unix://") {
        if let Err(e) = super::common::validate_unix_address(addr) {
            cx.error(at, path, e);
        }
        return;
    }
    // Go's net.SplitHostPort: `host:port`, `[v6]:port`.
    let split = match ep.strip_prefix('[') {
        Some(rest) => rest.split_once("]:"),
        None => ep.rsplit_once(':').filter(|(h, _)| !h.contains(':')),
    };
    let Some((host, port)) = split else {
        cx.error(at, path, format!("address {ep}: missing port in address"));
        return;
    };
    if !host.is_empty() && !matches!(host, "127.0.0.1" | "0.0.0.0" | "::1" | "::") {
        cx.error(
            at,
            path,
            "sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,[::1]:port,[::]:port,unix://filepath or unset",
        );
    }
    match port.parse::<i64>() {
        Ok(n) => {
            if let Err(e) = validate_port(n) {
                cx.error(at, path, e);
            }
        }
        Err(e) => cx.error(at, path, format!("sidecar: defaultEndpoint port ({port}) is not a number: {e}")),
    }
}

pub(super) fn check(cx: &mut Ctx<'_>, at: &Place<'_>, sc: &crd::Sidecar) {
    if let Some(ws) = &sc.workload_selector {
        check_selector(cx, at, "spec.workloadSelector.labels", &ws.match_labels, "sidecar");
    }
    if sc.egress.is_empty() && sc.ingress.is_empty() && sc.outbound_traffic_policy.is_none() {
        cx.error(at, "spec", "sidecar: empty configuration provided");
        return;
    }
    check_ingress(cx, at, sc);
    let mut ports: Vec<u32> = Vec::new();
    let mut uds: Vec<&str> = Vec::new();
    let mut catch_all_found = false;
    for (i, e) in sc.egress.iter().enumerate() {
        let p = format!("spec.egress[{i}]");
        match &e.port {
            None => {
                if catch_all_found {
                    cx.error(at, p.as_str(), "sidecar: egress can have only one listener with empty port");
                    continue;
                }
                if i == sc.egress.len() - 1 {
                    catch_all_found = true;
                } else {
                    cx.error(
                        at,
                        p.as_str(),
                        "sidecar: the egress listener with empty port should be the last listener in the list",
                    );
                }
            }
            Some(port) => {
                if port.target_port.is_some_and(|t| t > 0) {
                    cx.error(at, format!("{p}.port.targetPort"), "targetPort has no impact on Sidecars");
                }
                if !port.name.is_empty() && !is_dns1123_label(&port.name) {
                    cx.error(at, format!("{p}.port.name"), format!("invalid port name: {}", port.name));
                }
                if !port.protocol.is_empty() && parse_protocol(&port.protocol).is_none() {
                    cx.error(at, format!("{p}.port.protocol"), format!("unsupported protocol: {}", port.protocol));
                }
                let bind = e.bind.as_deref().unwrap_or_default();
                // `validateSidecarEgressPortBindAndCaptureMode`.
                if port.number == 0 {
                    match bind.strip_prefix("unix://") {
                        None => cx.error(
                            at,
                            format!("{p}.bind"),
                            "sidecar: ports with 0 value must have a unix domain socket bind address",
                        ),
                        Some(path) => {
                            if let Err(err) = super::common::validate_unix_address(path) {
                                cx.error(at, format!("{p}.bind"), err);
                            }
                            if uds.contains(&bind) {
                                cx.error(
                                    at,
                                    format!("{p}.bind"),
                                    "sidecar: unix domain socket values for listeners must be unique",
                                );
                            }
                            uds.push(bind);
                        }
                    }
                    if !matches!(e.capture_mode.as_deref(), None | Some("DEFAULT" | "NONE")) {
                        cx.error(
                            at,
                            format!("{p}.captureMode"),
                            "sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners",
                        );
                    }
                } else {
                    if !bind.is_empty() && bind.parse::<std::net::IpAddr>().is_err() {
                        cx.error(at, format!("{p}.bind"), format!("{bind} is not a valid IP"));
                    }
                    if let Err(err) = validate_port(i64::from(port.number)) {
                        cx.error(at, format!("{p}.port.number"), err);
                    }
                    if ports.contains(&port.number) {
                        cx.error(at, format!("{p}.port.number"), "sidecar: ports on IP bound listeners must be unique");
                    }
                    ports.push(port.number);
                }
            }
        }
        if e.hosts.is_empty() {
            cx.error(at, format!("{p}.hosts"), "sidecar: egress listener must contain at least one host");
        }
        for (j, h) in e.hosts.iter().enumerate() {
            for err in namespace_slash_hostname_errors(h, false) {
                cx.error(at, format!("{p}.hosts[{j}]"), err);
            }
        }
    }
    if let Some(tp) = &sc.outbound_traffic_policy {
        let mode = tp.mode.as_deref().unwrap_or("REGISTRY_ONLY");
        if mode == "ALLOW_ANY_DYNAMIC_DNS" {
            cx.error(
                at,
                "spec.outboundTrafficPolicy.mode",
                "sidecar: ALLOW_ANY_DYNAMIC_DNS mode is only supported in MeshConfig, not in Sidecar resource",
            );
        } else if let Some(m) = &tp.mode {
            check_enum(cx, at, "spec.outboundTrafficPolicy.mode", m, OUTBOUND_MODES);
        }
        if let Some(proxy) = &tp.egress_proxy {
            if proxy.port.is_none() && mode == "ALLOW_ANY" {
                cx.error(
                    at,
                    "spec.outboundTrafficPolicy.egressProxy.port",
                    "sidecar: egress_proxy port must be non-nil",
                );
            }
            if mode != "ALLOW_ANY" {
                cx.error(
                    at,
                    "spec.outboundTrafficPolicy.egressProxy",
                    "sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode",
                );
            }
            cx.push(
                crate::diag::Severity::Warning,
                Some("IST0002"),
                at,
                "spec.outboundTrafficPolicy.egressProxy",
                "Deprecated: OutboundTrafficPolicy.EgressProxy ignored",
            );
        }
    }
}

/// meshroute's settings: the proxy identity and the filter's own knobs.
pub(super) fn check_settings(cx: &mut Ctx<'_>) {
    let bundle = cx.bundle;
    let s = &bundle.settings;
    let at = Place(None);
    if s.gateway != "mesh" {
        match s.gateway.split_once('/') {
            Some((ns, name)) if is_dns1123_label(ns) && is_dns1123_label(name) => {
                if !bundle.gateways().any(|(r, _)| r.namespace == ns && r.name == name) {
                    cx.own_warn(
                        &at,
                        "settings.gateway",
                        format!("no Gateway {} in the configuration: its servers cannot be checked", s.gateway),
                    );
                }
            }
            _ => cx.own_error(
                &at,
                "settings.gateway",
                format!("gateway must be \"mesh\" or \"<namespace>/<name>\", got {:?}", s.gateway),
            ),
        }
    }
    if !s.cluster_template.contains("{host}") {
        cx.own_error(
            &at,
            "settings.clusterTemplate",
            format!("clusterTemplate {:?} must contain {{host}}", s.cluster_template),
        );
    }
    let h = &s.routing_header;
    if h.is_empty() || !is_header_token(h) || h.bytes().any(|b| b.is_ascii_uppercase()) {
        cx.own_error(
            &at,
            "settings.routingHeader",
            format!("routingHeader {h:?} must be a valid lowercase header name (e.g. \"x-meshroute-cluster\")"),
        );
    }
    if let Some(m) = s.outbound_traffic_policy.as_ref().filter(|m| !OUTBOUND_MODES.contains(&m.as_str())) {
        cx.own_error(
            &at,
            "settings.outboundTrafficPolicy",
            format!("unknown value {m:?} (expected one of {})", OUTBOUND_MODES.join(", ")),
        );
    }
    if !is_dns1123_label(&s.namespace) {
        cx.own_error(&at, "settings.namespace", format!("namespace {:?} is not a valid DNS label", s.namespace));
    }
    if let Err(e) = validate_fqdn(&s.domain_suffix) {
        cx.own_error(&at, "settings.domainSuffix", e);
    }
    if let Err(e) = validate_port(i64::from(s.default_port)) {
        cx.own_error(&at, "settings.defaultPort", e);
    }
    for (path, e) in label_errors("settings.labels", &s.labels) {
        cx.own_error(&at, path, e);
    }
    check_mirror_settings(cx, s);
    if !crate::config::PATH_NORMALIZATIONS.contains(&s.path_normalization.as_str()) {
        cx.own_error(
            &at,
            "settings.pathNormalization",
            format!(
                "unknown value {:?} (expected one of {})",
                s.path_normalization,
                crate::config::PATH_NORMALIZATIONS.join(", ")
            ),
        );
    }
}

/// The mirror knobs bound what one VM holds (docs/semantics.md R160): a value outside its range
/// is refused rather than clamped, so the operator sees the limit.
fn check_mirror_settings(cx: &mut Ctx<'_>, s: &crate::Settings) {
    use crate::config::{MAX_MIRROR_BODY_BUDGET, MAX_MIRROR_BODY_LIMIT, MAX_MIRROR_IN_FLIGHT, MAX_MIRROR_TIMEOUT_MS};
    let at = Place(None);
    if s.mirror_body_limit > MAX_MIRROR_BODY_LIMIT {
        cx.own_error(
            &at,
            "settings.mirrorBodyLimit",
            format!(
                "mirrorBodyLimit {} is above the maximum {MAX_MIRROR_BODY_LIMIT} bytes (8 MiB): bodies are buffered in \
                 the Wasm VM, whose memory never shrinks",
                s.mirror_body_limit
            ),
        );
    }
    if s.mirror_body_budget > MAX_MIRROR_BODY_BUDGET {
        cx.own_error(
            &at,
            "settings.mirrorBodyBudget",
            format!(
                "mirrorBodyBudget {} is above the maximum {MAX_MIRROR_BODY_BUDGET} bytes (64 MiB) per VM",
                s.mirror_body_budget
            ),
        );
    } else if s.mirror_body_budget < s.mirror_body_limit && s.mirror_body_limit <= MAX_MIRROR_BODY_LIMIT {
        cx.own_error(
            &at,
            "settings.mirrorBodyBudget",
            format!(
                "mirrorBodyBudget {} is below mirrorBodyLimit {}: a body at the limit could never be mirrored",
                s.mirror_body_budget, s.mirror_body_limit
            ),
        );
    }
    if s.mirror_max_in_flight == 0 || s.mirror_max_in_flight > MAX_MIRROR_IN_FLIGHT {
        cx.own_error(
            &at,
            "settings.mirrorMaxInFlight",
            format!("mirrorMaxInFlight {} must be between 1 and {MAX_MIRROR_IN_FLIGHT}", s.mirror_max_in_flight),
        );
    }
    if s.mirror_timeout_ms == 0 || s.mirror_timeout_ms > MAX_MIRROR_TIMEOUT_MS {
        cx.own_error(
            &at,
            "settings.mirrorTimeoutMs",
            format!("mirrorTimeoutMs {} must be between 1 and {MAX_MIRROR_TIMEOUT_MS}", s.mirror_timeout_ms),
        );
    }
}
