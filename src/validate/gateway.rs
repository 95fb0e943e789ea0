//! Gateway: Istio `ValidateGateway`, `validateServer`, `validateTLSOptions`.

use super::common::{
    check_enum, is_dns1123_label, is_ip, parse_protocol, protocol_is_http, protocol_is_tls, validate_partial_wildcard,
    validate_port, validate_unix_address, validate_wildcard_domain,
};
use super::{Ctx, Place};
use crate::crd;

const SERVER_TLS_MODES: &[&str] =
    &["PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"];
const TLS_VERSIONS: &[&str] = &["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"];

pub(super) fn check(cx: &mut Ctx<'_>, at: &Place<'_>, gw: &crd::Gateway) {
    if let Some(r) = at.0 {
        if !is_dns1123_label(&r.name) {
            cx.error(at, "metadata.name", format!("invalid gateway name: {:?}", r.name));
        }
    }
    if gw.servers.is_empty() {
        cx.error(at, "spec.servers", "gateway must have at least one server");
    }
    let mut port_names: Vec<&str> = Vec::new();
    for (i, s) in gw.servers.iter().enumerate() {
        let p = format!("spec.servers[{i}]");
        check_server(cx, at, &p, s);
        if let Some(port) = &s.port {
            if port_names.contains(&port.name.as_str()) {
                cx.error(
                    at,
                    format!("{p}.port.name"),
                    format!("port names in servers must be unique: duplicate name {}", port.name),
                );
            }
            port_names.push(&port.name);
            if !protocol_is_http(parse_protocol(&port.protocol)) && s.tls.as_ref().is_some_and(|t| t.https_redirect) {
                cx.warn(
                    at,
                    format!("{p}.tls.httpsRedirect"),
                    "tls.httpsRedirect should only be used with http servers",
                );
            }
        }
    }
}

fn check_server(cx: &mut Ctx<'_>, at: &Place<'_>, p: &str, s: &crd::Server) {
    if s.hosts.is_empty() {
        cx.error(at, format!("{p}.hosts"), "server config must contain at least one host");
    }
    for (i, h) in s.hosts.iter().enumerate() {
        for e in namespace_slash_hostname_errors(h, true) {
            cx.error(at, format!("{p}.hosts[{i}]"), e);
        }
    }
    let bind = s.bind.as_deref().unwrap_or_default();
    let mut port_ok = false;
    match &s.port {
        None => cx.error(at, format!("{p}.port"), "port is required"),
        Some(port) => {
            port_ok = true;
            if parse_protocol(&port.protocol).is_none() {
                port_ok = false;
                cx.error(
                    at,
                    format!("{p}.port.protocol"),
                    format!(
                        "invalid protocol {:?}, supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP",
                        port.protocol
                    ),
                );
            }
            if port.number > 0 || !bind.starts_with("unix://") {
                if let Err(e) = validate_port(i64::from(port.number)) {
                    port_ok = false;
                    cx.error(at, format!("{p}.port.number"), e);
                }
            }
            if port.target_port.is_some_and(|t| t > 0) {
                port_ok = false;
                cx.error(at, format!("{p}.port.targetPort"), "targetPort has no impact on Gateways");
            }
            if port.name.is_empty() {
                port_ok = false;
                cx.error(at, format!("{p}.port.name"), "port name must be set");
            }
        }
    }
    if let Some(path) = bind.strip_prefix("unix://") {
        if let Err(e) = validate_unix_address(path) {
            cx.error(at, format!("{p}.bind"), e);
        }
        if s.port.as_ref().is_some_and(|port| port.number != 0) {
            cx.error(at, format!("{p}.bind"), "port number must be 0 for unix domain socket");
        }
    } else if !bind.is_empty() && !is_ip(bind) {
        cx.error(at, format!("{p}.bind"), format!("{bind} is not a valid IP"));
    }
    if let Some(tls) = &s.tls {
        check_server_tls(cx, at, &format!("{p}.tls"), tls);
    }
    if port_ok {
        let protocol = s.port.as_ref().and_then(|port| parse_protocol(&port.protocol));
        match &s.tls {
            None if protocol_is_tls(protocol) => {
                cx.error(at, p, "server must have TLS settings for HTTPS/TLS protocols");
            }
            Some(tls) if !protocol_is_tls(protocol) => {
                if protocol_is_http(protocol) {
                    let passthrough = matches!(tls.mode.as_deref(), None | Some("PASSTHROUGH" | "AUTO_PASSTHROUGH"));
                    if !passthrough || has_certificates(tls) {
                        cx.error(at, format!("{p}.tls"), "server cannot have TLS settings for plain text HTTP ports");
                    }
                } else {
                    cx.error(at, format!("{p}.tls"), "server cannot have TLS settings for non HTTPS/TLS ports");
                }
            }
            _ => {}
        }
    }
}

fn has_certificates(t: &crd::ServerTlsSettings) -> bool {
    let set = |s: &Option<String>| s.as_deref().is_some_and(|v| !v.is_empty());
    set(&t.server_certificate)
        || set(&t.private_key)
        || set(&t.ca_certificates)
        || set(&t.ca_crl)
        || !t.tls_certificates.is_empty()
}

/// Istio `validateTLSOptions` (pkg/config/validation/validation.go), including the Istio 1.26
/// `credentialNames` and `tlsCertificates` sources: exactly one certificate source, and the
/// per-certificate checks run on `tlsCertificates` when it is given.
fn check_server_tls(cx: &mut Ctx<'_>, at: &Place<'_>, p: &str, t: &crd::ServerTlsSettings) {
    let set = |s: &Option<String>| s.as_deref().is_some_and(|v| !v.is_empty());
    let mode = t.mode.as_deref().unwrap_or("PASSTHROUGH");
    if let Some(m) = &t.mode {
        check_enum(cx, at, &format!("{p}.mode"), m, SERVER_TLS_MODES);
    }
    for (field, v) in [("minProtocolVersion", &t.min_protocol_version), ("maxProtocolVersion", &t.max_protocol_version)]
    {
        if let Some(v) = v {
            check_enum(cx, at, &format!("{p}.{field}"), v, TLS_VERSIONS);
        }
    }
    if matches!(t.min_protocol_version.as_deref(), Some("TLSV1_0" | "TLSV1_1")) && t.cipher_suites.is_empty() {
        cx.warn(
            at,
            format!("{p}.minProtocolVersion"),
            "TLS version below TLSV1_2 require setting compatible ciphers as by default they no longer include compatible ciphers.",
        );
    }
    let has_names = !t.credential_names.is_empty();
    let has_list = !t.tls_certificates.is_empty();
    if mode == "ISTIO_MUTUAL" {
        for (field, present, what) in [
            ("serverCertificate", set(&t.server_certificate), "server certificate"),
            ("privateKey", set(&t.private_key), "private key"),
            ("caCertificates", set(&t.ca_certificates), "CA bundle"),
            ("tlsCertificates", has_list, "tlsCertificates"),
            ("credentialName", set(&t.credential_name), "credentialName"),
            ("credentialNames", has_names, "credentialNames"),
        ] {
            if present {
                cx.error(at, format!("{p}.{field}"), format!("ISTIO_MUTUAL TLS cannot have associated {what}"));
            }
        }
        return;
    }
    if (mode == "PASSTHROUGH" || mode == "AUTO_PASSTHROUGH")
        && (has_certificates(t) || set(&t.credential_name) || has_names)
    {
        cx.warn(at, p, format!("{mode} mode does not use certificates, they will be ignored"));
    }
    let sources = usize::from(set(&t.server_certificate) && set(&t.private_key))
        + usize::from(set(&t.credential_name))
        + usize::from(has_names)
        + usize::from(has_list);
    if sources > 1 {
        cx.error(at, p, "only one of credential_name, credential_names, server_certificate/private_key, tls_certificates should be specified");
    }
    let terminating = matches!(mode, "SIMPLE" | "MUTUAL" | "OPTIONAL_MUTUAL");
    if terminating && (set(&t.credential_name) || has_names) {
        return;
    }
    if terminating {
        let prefix = if mode == "SIMPLE" { "SIMPLE TLS" } else { "MUTUAL TLS" };
        if mode != "SIMPLE" && !set(&t.ca_certificates) {
            cx.error(at, format!("{p}.caCertificates"), format!("{prefix} requires a client CA bundle"));
        }
        if t.tls_certificates.len() > 2 {
            cx.warn(at, format!("{p}.tlsCertificates"), format!("{prefix} can support up to 2 server certificates"));
        }
        let pairs: Vec<(String, Option<&String>, Option<&String>)> = if has_list {
            t.tls_certificates
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    (format!("{p}.tlsCertificates[{i}]."), c.server_certificate.as_ref(), c.private_key.as_ref())
                })
                .collect()
        } else {
            vec![(format!("{p}."), t.server_certificate.as_ref(), t.private_key.as_ref())]
        };
        for (at_path, cert, key) in pairs {
            if cert.is_none_or(|c| c.is_empty()) {
                cx.error(at, format!("{at_path}serverCertificate"), format!("{prefix} requires a server certificate"));
            }
            if key.is_none_or(|k| k.is_empty()) {
                cx.error(at, format!("{at_path}privateKey"), format!("{prefix} requires a private key"));
            }
        }
    }
    if set(&t.ca_crl) {
        if set(&t.credential_name) {
            cx.error(
                at,
                format!("{p}.caCrl"),
                "CRL is not supported with credentialName. CRL has to be specified in the credential",
            );
        }
        if mode == "SIMPLE" {
            cx.error(at, format!("{p}.caCrl"), "CRL is not supported with SIMPLE TLS");
        }
    }
}

/// Istio `ValidateNamespaceSlashWildcardHostname`: `[ns/]dnsName` for Gateway servers,
/// `ns/dnsName` for Sidecar egress.
pub(super) fn namespace_slash_hostname_errors(h: &str, is_gateway: bool) -> Vec<String> {
    let mut errs = Vec::new();
    let Some((ns, name)) = h.split_once('/') else {
        if is_gateway {
            return hostname_part_errors(h, true);
        }
        errs.push("host must be of form namespace/dnsName".to_string());
        return errs;
    };
    if ns.is_empty() || name.is_empty() {
        errs.push("config namespace and dnsName in host entry cannot be empty".into());
    }
    if is_gateway {
        if ns != "*" && ns != "." && !is_dns1123_label(ns) {
            errs.push(format!("invalid namespace value {ns:?} in gateway"));
        }
    } else {
        let bare = ns.strip_prefix('~').unwrap_or(ns);
        if !bare.is_empty() && bare != "*" && bare != "." && !is_dns1123_label(bare) {
            errs.push(format!("invalid namespace value {ns:?} in sidecar"));
        }
    }
    errs.extend(hostname_part_errors(name, is_gateway));
    errs
}

fn hostname_part_errors(h: &str, is_gateway: bool) -> Vec<String> {
    let mut errs = Vec::new();
    if h != "*" && !h.contains('.') {
        errs.push("short names (non FQDN) are not allowed".to_string());
    }
    if let Err(e) = validate_wildcard_domain(h) {
        // Gateways also accept an IP address.
        if !is_gateway || !is_ip(h) {
            errs.push(e);
        }
    }
    if let Err(e) = validate_partial_wildcard(h) {
        errs.push(e);
    }
    errs
}
