//! ServiceEntry and WorkloadEntry: Istio `ValidateServiceEntry`, `validateWorkloadEntry`.

use super::common::{
    check_enum, check_export_to, check_labels, is_dns1123_label, is_ip, parse_protocol, protocol_is_http,
    protocol_is_tls, validate_fqdn, validate_ip_subnet, validate_partial_wildcard, validate_port,
    validate_unix_address, validate_wildcard_domain,
};
use super::{Ctx, Place};
use crate::crd;

const RESOLUTIONS: &[&str] = &["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"];
const LOCATIONS: &[&str] = &["MESH_EXTERNAL", "MESH_INTERNAL"];

pub(super) fn check(cx: &mut Ctx<'_>, at: &Place<'_>, se: &crd::ServiceEntry) {
    if let Some(ws) = &se.workload_selector {
        check_selector(cx, at, "spec.workloadSelector.labels", &ws.match_labels, "service entry");
        if !se.endpoints.is_empty() {
            cx.error(
                at,
                "spec.workloadSelector",
                "only one of WorkloadSelector or Endpoints is allowed in Service Entry",
            );
        }
    }
    let resolution = se.resolution.as_deref().unwrap_or("NONE");
    let resolution_known =
        se.resolution.as_deref().is_none_or(|r| check_enum(cx, at, "spec.resolution", r, RESOLUTIONS));
    let location = se.location.as_deref().unwrap_or("MESH_EXTERNAL");
    if let Some(l) = &se.location {
        check_enum(cx, at, "spec.location", l, LOCATIONS);
    }

    if se.hosts.is_empty() {
        cx.error(at, "spec.hosts", "service entry must have at least one host");
    }
    for (i, h) in se.hosts.iter().enumerate() {
        let p = format!("spec.hosts[{i}]");
        if h == "*" {
            cx.error(at, p, format!("invalid host {h}"));
            continue;
        }
        if let Err(e) = validate_wildcard_domain(h) {
            cx.error(at, p.as_str(), e);
        }
        if resolution != "DYNAMIC_DNS" {
            if let Err(e) = validate_partial_wildcard(h) {
                cx.warn(at, p, e);
            }
        }
    }

    let mut cidr = false;
    for (i, a) in se.addresses.iter().enumerate() {
        cidr |= a.contains('/');
        if let Err(e) = validate_ip_subnet(a) {
            cx.error(at, format!("spec.addresses[{i}]"), e);
        }
    }
    if cidr && resolution != "NONE" && resolution != "STATIC" {
        cx.error(at, "spec.addresses", "CIDR addresses are allowed only for NONE/STATIC resolution types");
    }

    let mut names: Vec<&str> = Vec::new();
    let mut numbers: Vec<u32> = Vec::new();
    for (i, port) in se.ports.iter().enumerate() {
        let p = format!("spec.ports[{i}]");
        if names.contains(&port.name.as_str()) {
            cx.error(at, format!("{p}.name"), format!("service entry port name {:?} already defined", port.name));
        }
        names.push(&port.name);
        if numbers.contains(&port.number) {
            cx.error(at, format!("{p}.number"), format!("service entry port {} already defined", port.number));
        }
        numbers.push(port.number);
        if let Some(t) = port.target_port.filter(|t| *t != 0) {
            if let Err(e) = validate_port(i64::from(t)) {
                cx.error(at, format!("{p}.targetPort"), e);
            }
        }
        if !is_dns1123_label(&port.name) {
            cx.error(at, format!("{p}.name"), format!("invalid port name: {}", port.name));
        }
        if let Some(proto) = port.protocol.as_deref().filter(|p| !p.is_empty()) {
            if parse_protocol(proto).is_none() {
                cx.error(
                    at,
                    format!("{p}.protocol"),
                    format!("unsupported protocol: {proto} (expected one of HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, TLS, TCP, UDP, MONGO, REDIS, MYSQL, HTTP_PROXY)"),
                );
            }
        }
        if let Err(e) = validate_port(i64::from(port.number)) {
            cx.error(at, format!("{p}.number"), e);
        }
        // Istio's webhook assumes no IP auto-allocation unless the mesh enables it; meshroute
        // knows no mesh config, so it warns as the default mesh would.
        let tcp = port.protocol.as_deref().is_none_or(|p| p.is_empty() || p.eq_ignore_ascii_case("TCP"));
        if se.addresses.is_empty() && tcp {
            cx.warn(
                at,
                format!("{p}.protocol"),
                "addresses are required for ports serving TCP (or unset) protocol when IP Autoallocation is not enabled",
            );
        }
    }
    let protocols: Vec<Option<&'static str>> =
        se.ports.iter().map(|p| parse_protocol(p.protocol.as_deref().unwrap_or_default())).collect();

    if resolution_known {
        check_resolution(cx, at, se, resolution, location, &names, &protocols);
    }

    if resolution != "NONE"
        && se.hosts.len() > 1
        && protocols.iter().any(|p| !protocol_is_http(*p) && !protocol_is_tls(*p))
    {
        cx.error(at, "spec.hosts", "multiple hosts provided with non-HTTP, non-TLS ports");
    }
    check_export_to(cx, at, at.namespace(), &se.export_to, true);
}

fn check_resolution(
    cx: &mut Ctx<'_>,
    at: &Place<'_>,
    se: &crd::ServiceEntry,
    resolution: &str,
    location: &str,
    port_names: &[&str],
    protocols: &[Option<&'static str>],
) {
    match resolution {
        "NONE" => {
            if !se.endpoints.is_empty() {
                cx.error(at, "spec.endpoints", "no endpoints should be provided for resolution type none");
            }
            if se.workload_selector.is_some() {
                cx.warn(at, "spec.workloadSelector", "workloadSelector should not be set when resolution mode is NONE");
            }
        }
        "STATIC" => {
            if se.endpoints.is_empty() && se.workload_selector.is_none() {
                cx.own_warn(
                    at,
                    "spec.endpoints",
                    "resolution STATIC without endpoints or workloadSelector: the service has no endpoints to send traffic to",
                );
            }
            for (i, e) in se.endpoints.iter().enumerate() {
                check_endpoint(cx, at, &format!("spec.endpoints[{i}]"), e, Some(port_names), false);
            }
        }
        "DNS" | "DNS_ROUND_ROBIN" => {
            if se.endpoints.is_empty() {
                if let Some((i, e)) =
                    se.hosts.iter().enumerate().find_map(|(i, h)| validate_fqdn(h).err().map(|e| (i, e)))
                {
                    cx.error(
                        at,
                        format!("spec.hosts[{i}]"),
                        format!("hosts must be FQDN or contain only prefix wildcards if no endpoints are provided for resolution mode {resolution}, {e}"),
                    );
                }
            }
            if resolution == "DNS_ROUND_ROBIN" && se.endpoints.len() > 1 {
                cx.error(
                    at,
                    "spec.endpoints",
                    format!("there must only be 0 or 1 endpoint for resolution mode {resolution}"),
                );
            }
            for (i, e) in se.endpoints.iter().enumerate() {
                let p = format!("spec.endpoints[{i}]");
                let addr = e.address.as_deref().unwrap_or_default();
                if !is_ip(addr) && validate_fqdn(addr).is_err() {
                    cx.error(
                        at,
                        format!("{p}.address"),
                        format!("endpoint address {addr:?} is not a valid FQDN or an IP address"),
                    );
                }
                check_labels(cx, at, &format!("{p}.labels"), &e.labels);
                check_endpoint_ports(cx, at, &p, e, Some(port_names));
            }
        }
        _ => {
            // DYNAMIC_DNS
            for (i, h) in se.hosts.iter().enumerate() {
                if !h.starts_with('*') {
                    cx.error(
                        at,
                        format!("spec.hosts[{i}]"),
                        format!("host must be wildcarded for resolution mode {resolution}"),
                    );
                }
            }
            if !se.addresses.is_empty() {
                cx.error(
                    at,
                    "spec.addresses",
                    format!("addresses cannot be set for resolution type {resolution}. HTTP route domains will only be generated from the hosts field values"),
                );
            }
            if !se.endpoints.is_empty() {
                cx.error(
                    at,
                    "spec.endpoints",
                    format!("endpoints cannot be set for resolution type {resolution}. Destination IP address determined from hosts field values"),
                );
            }
            for (i, p) in protocols.iter().enumerate() {
                if !matches!(p, Some("HTTP" | "TLS" | "GRPC" | "HTTP2")) {
                    cx.error(
                        at,
                        format!("spec.ports[{i}].protocol"),
                        format!(
                            "only HTTP, TLS, GRPC, and HTTP2 protocols are supported for resolution type {resolution}"
                        ),
                    );
                }
            }
            if location != "MESH_EXTERNAL" && location != "MESH_INTERNAL" {
                cx.error(
                    at,
                    "spec.location",
                    format!("location must be MESH_EXTERNAL or MESH_INTERNAL for resolution type {resolution}"),
                );
            }
        }
    }
}

/// Istio `ValidateAlphaWorkloadSelector`: no empty keys or wildcards; no labels is a warning.
pub(super) fn check_selector(
    cx: &mut Ctx<'_>,
    at: &Place<'_>,
    path: &str,
    labels: &std::collections::BTreeMap<String, String>,
    what: &str,
) {
    for (k, v) in labels {
        if k.is_empty() {
            cx.error(at, path, format!("empty key is not supported in selector: \"{k}={v}\""));
        }
        if k.contains('*') || v.contains('*') {
            cx.error(at, path, format!("wildcard is not supported in selector: \"{k}={v}\""));
        }
    }
    if labels.is_empty() {
        cx.warn(
            at,
            path,
            format!("{what}: workload selector specified without labels, will be applied to all services in namespace"),
        );
    }
}

/// Istio `validateWorkloadEntry`: an IP (or, outside STATIC, an FQDN) or `unix://` address,
/// named ports that the ServiceEntry declares, valid labels.
fn check_endpoint(
    cx: &mut Ctx<'_>,
    at: &Place<'_>,
    p: &str,
    e: &crd::WorkloadEntry,
    service_ports: Option<&[&str]>,
    allow_fqdn: bool,
) {
    let addr = e.address.as_deref().unwrap_or_default();
    if addr.is_empty() {
        match &e.network {
            Some(n) if !n.is_empty() => {
                cx.warn(at, format!("{p}.address"), format!("address is unset with network {n:?}"))
            }
            _ => {
                cx.error(at, format!("{p}.address"), "address is required");
                return;
            }
        }
    }
    if let Some(path) = addr.strip_prefix("unix://") {
        if let Err(err) = validate_unix_address(path) {
            cx.error(at, format!("{p}.address"), err);
        }
        if !e.ports.is_empty() {
            cx.error(at, format!("{p}.ports"), format!("unix endpoint {addr} must not include ports"));
        }
        if service_ports.is_some_and(|s| s.len() != 1) {
            cx.error(at, format!("{p}.address"), "exactly 1 service port required for unix endpoints");
        }
    } else if !addr.is_empty() && !is_ip(addr) {
        if !allow_fqdn {
            cx.error(at, format!("{p}.address"), format!("endpoint address {addr:?} is not a valid IP address"));
        } else if validate_fqdn(addr).is_err() {
            cx.error(
                at,
                format!("{p}.address"),
                format!("endpoint address {addr:?} is not a valid FQDN or an IP address"),
            );
        }
    }
    check_endpoint_ports(cx, at, p, e, service_ports);
    check_labels(cx, at, &format!("{p}.labels"), &e.labels);
}

fn check_endpoint_ports(
    cx: &mut Ctx<'_>,
    at: &Place<'_>,
    p: &str,
    e: &crd::WorkloadEntry,
    service_ports: Option<&[&str]>,
) {
    for (name, port) in &e.ports {
        let pp = format!("{p}.ports.{name}");
        if service_ports.is_some_and(|s| !s.contains(&name.as_str())) {
            cx.error(at, pp.as_str(), format!("endpoint port {port} is not defined by the service entry"));
        }
        if !is_dns1123_label(name) {
            cx.error(at, pp.as_str(), format!("invalid port name: {name}"));
        }
        if let Err(err) = validate_port(i64::from(*port)) {
            cx.error(at, pp, err);
        }
    }
}

pub(super) fn check_workload_entry(cx: &mut Ctx<'_>, at: &Place<'_>, we: &crd::WorkloadEntry) {
    check_endpoint(cx, at, "spec", we, None, true);
}
