//! Field-level checks shared by every resource kind: DNS names, ports, labels, durations,
//! percentages, header names and values, regexes. Each returns the message Istio's webhook
//! gives (pkg/config/validation, pkg/config/validation/agent) so users recognise it.

use crate::duration;
use crate::validate::{Ctx, Place};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

/// Istio `labels.IsDNS1123Label`: 1..63 of `[a-zA-Z0-9-]`, alphanumeric at both ends. Note that
/// Istio's pattern accepts upper case, unlike Kubernetes'.
pub(crate) fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

/// Istio `labels.IsWildcardDNS1123Label`: `*`, or a label optionally preceded by `*` or `*-`.
fn is_wildcard_dns1123_label(s: &str) -> bool {
    if s == "*" {
        return true;
    }
    let rest = s.strip_prefix("*-").or_else(|| s.strip_prefix('*')).unwrap_or(s);
    s.len() <= 63 && is_dns1123_label(rest)
}

fn dns1123_preconditions(name: &str) -> Result<(), String> {
    if name.len() > 255 {
        return Err(format!("domain name {name:?} too long (max 255)"));
    }
    if name.is_empty() {
        return Err("empty domain name not allowed".into());
    }
    Ok(())
}

/// Istio `ValidateDNS1123Labels`: every label valid, the top-level one not all digits, a trailing
/// dot allowed.
fn dns1123_labels(domain: &str, shown: &str) -> Result<(), String> {
    let parts: Vec<&str> = domain.split('.').collect();
    let tld = parts.last().copied().unwrap_or_default();
    if !tld.is_empty() && tld.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("domain name {shown:?} invalid (top level domain {tld:?} cannot be all-numeric)"));
    }
    for (i, label) in parts.iter().enumerate() {
        if i == parts.len() - 1 && label.is_empty() {
            return Ok(());
        }
        if !is_dns1123_label(label) {
            return Err(format!("domain name {shown:?} invalid (label {label:?} invalid)"));
        }
    }
    Ok(())
}

/// Istio `ValidateFQDN` (despite the name, a single label such as `reviews` passes).
pub(crate) fn validate_fqdn(name: &str) -> Result<(), String> {
    dns1123_preconditions(name)?;
    dns1123_labels(name, name)
}

/// Istio `ValidateWildcardDomain`: a DNS name whose first label may be a wildcard (`*`,
/// `*.example.com`, `*-foo.example.com`); wildcards anywhere else are rejected.
pub(crate) fn validate_wildcard_domain(name: &str) -> Result<(), String> {
    dns1123_preconditions(name)?;
    let (first, rest) = match name.split_once('.') {
        Some((f, r)) => (f, Some(r)),
        None => (name, None),
    };
    if !is_wildcard_dns1123_label(first) {
        return Err(format!("domain name {name:?} invalid (label {first:?} invalid)"));
    }
    rest.map_or(Ok(()), |r| dns1123_labels(r, name))
}

/// Istio `ValidatePartialWildCard`: `*` alone or `*.` as a prefix, nothing else.
pub(crate) fn validate_partial_wildcard(name: &str) -> Result<(), String> {
    if name.contains('*') && name.len() != 1 && !name.starts_with("*.") {
        return Err(format!("partial wildcard {name:?} not allowed"));
    }
    Ok(())
}

pub(crate) fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

/// Istio `ValidateIPSubnet`: an address or a CIDR block.
pub(crate) fn validate_ip_subnet(s: &str) -> Result<(), String> {
    match s.split_once('/') {
        Some((ip, bits)) => {
            let max = match ip.parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => 32,
                Ok(IpAddr::V6(_)) => 128,
                Err(_) => return Err(format!("{s:?} is not a valid CIDR block")),
            };
            match bits.parse::<u32>() {
                Ok(b) if b <= max && !bits.starts_with('+') => Ok(()),
                _ => Err(format!("{s:?} is not a valid CIDR block")),
            }
        }
        None if is_ip(s) => Ok(()),
        None => Err(format!("{s} is not a valid IP")),
    }
}

/// Istio `ValidateUnixAddress` (the part after `unix://`).
pub(crate) fn validate_unix_address(addr: &str) -> Result<(), String> {
    if addr.is_empty() {
        return Err("unix address must not be empty".into());
    }
    if addr.starts_with('@') {
        return Ok(());
    }
    if !addr.starts_with('/') || addr.ends_with('/') {
        return Err(format!("{addr} is not an absolute path to a file"));
    }
    Ok(())
}

pub(crate) fn validate_port(port: i64) -> Result<(), String> {
    if (1..=65535).contains(&port) {
        Ok(())
    } else {
        Err(format!("port number {port} must be in the range 1..65535"))
    }
}

/// Kubernetes label key: optional DNS prefix and `/`, then a qualified name of at most 63.
fn validate_label_key(k: &str) -> Result<(), String> {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix {
        if p.is_empty() || !p.split('.').all(is_dns1123_label) {
            return Err(format!("invalid tag key: {k:?}"));
        }
        if p.len() > 253 {
            return Err(format!("invalid tag key: {k:?} (DNS prefix is too long)"));
        }
    }
    if !is_qualified_name(name) {
        return Err(format!("invalid tag key: {k:?}"));
    }
    if name.len() > 63 {
        return Err(format!("invalid tag key: {k:?} (name is too long)"));
    }
    Ok(())
}

/// `(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_qualified_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Istio `labels.Instance.Validate`: every key and value well formed (values may be empty).
/// Returns (path, message) pairs.
pub(crate) fn label_errors(path: &str, labels: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, v) in labels {
        if let Err(e) = validate_label_key(k) {
            out.push((format!("{path}.{k}"), e));
        }
        if !v.is_empty() && !is_qualified_name(v) {
            out.push((format!("{path}.{k}"), format!("invalid tag value: {v:?}")));
        }
    }
    out
}

pub(crate) fn check_labels(cx: &mut Ctx<'_>, at: &Place<'_>, path: &str, labels: &BTreeMap<String, String>) {
    for (p, e) in label_errors(path, labels) {
        cx.error(at, p, e);
    }
}

/// Istio `agent.ValidateDuration`: at least 1ms and whole milliseconds.
pub(crate) fn validate_duration(s: &str) -> Result<Duration, String> {
    let d = duration::parse(s)?;
    if d < Duration::from_millis(1) {
        return Err(format!("duration {s:?}: duration must be greater than 1ms"));
    }
    if d.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!("duration {s:?}: only durations to ms precision are supported"));
    }
    Ok(d)
}

/// Validates an optional duration field, reporting at `path`.
pub(crate) fn check_duration(cx: &mut Ctx<'_>, at: &Place<'_>, path: &str, value: Option<&str>) {
    if let Some(s) = value {
        if let Err(e) = validate_duration(s) {
            cx.error(at, path, e);
        }
    }
}

/// Istio `validatePercentage`: 0, or 0.0001..=100.
pub(crate) fn validate_percentage(v: f64) -> Result<(), String> {
    if !(0.0..=100.0).contains(&v) || (v > 0.0 && v < 0.0001) {
        return Err(format!("percentage {v} is neither 0.0, nor in range [0.0001, 100.0]"));
    }
    Ok(())
}

/// Istio `ValidatePercent` for integer percentages.
pub(crate) fn validate_percent(v: i64) -> Result<(), String> {
    if !(0..=100).contains(&v) {
        return Err(format!("percentage {v} is not in range 0..100"));
    }
    Ok(())
}

/// RFC 7230 token characters (Istio `validHeaderNameRegex`).
pub(crate) fn is_header_token(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A value that Istio rejects, or one Istio accepts but meshroute cannot apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Problem {
    /// What Istio's webhook says.
    Invalid(String),
    /// What meshroute cannot do, and a hint.
    Unsupported(String, &'static str),
}

impl Problem {
    #[cfg(test)]
    fn text(&self) -> String {
        match self {
            Problem::Invalid(m) => m.clone(),
            Problem::Unsupported(w, h) => format!("{w} is not supported by meshroute ({h})"),
        }
    }
}

/// Reports a [`Problem`] at `path`: an IST0106 error or an MR0007 error.
pub(crate) fn report(cx: &mut Ctx<'_>, at: &Place<'_>, path: &str, problem: Problem) {
    match problem {
        Problem::Invalid(m) => cx.error(at, path, m),
        Problem::Unsupported(what, hint) => cx.unsupported(at, path, what, hint),
    }
}

/// Header values are applied by meshroute itself, not by Envoy's header formatter, so Envoy
/// `%VARIABLE%` operators cannot be honoured; `%%` (Envoy's escape for a literal `%`) is
/// accepted and means one `%`. Control characters and a lone `%` are rejected as in Istio.
pub(crate) fn validate_header_value(v: &str) -> Result<(), Problem> {
    if v.chars().any(|c| matches!(c, '\u{0}'..='\u{8}' | '\u{a}'..='\u{1f}' | '\u{7f}')) {
        return Err(Problem::Invalid(format!("header value configuration {v} is invalid")));
    }
    let b = v.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if b.get(i + 1) == Some(&b'%') {
                i += 2;
                continue;
            }
            return match v[i + 1..].find('%') {
                Some(end) => Err(Problem::Unsupported(
                    format!("header value operator {}", &v[i..i + end + 2]),
                    "meshroute sets literal header values; write %% for a literal %",
                )),
                None => Err(Problem::Invalid(
                    "header value configuration: invalid header configuration. Un-escaped %".to_string(),
                )),
            };
        }
        i += 1;
    }
    Ok(())
}

/// RE2 syntax that regex-lite cannot compile or reads differently: (feature, hint).
fn re2_feature_unsupported(re: &str) -> Option<(&'static str, &'static str)> {
    const ENGINE: &str = "valid RE2, but meshroute's regex engine (regex-lite) lacks it";
    if re.contains("\\p") || re.contains("\\P") {
        return Some((
            "Unicode character classes (\\p{..}, \\P{..})",
            "use explicit ranges such as [a-zA-Z]; valid RE2, but meshroute's regex engine (regex-lite) lacks them",
        ));
    }
    if re.contains("\\Q") {
        return Some(("\\Q...\\E quoting", ENGINE));
    }
    if ["&&", "--", "~~"].iter().any(|op| re.contains(op)) && re.contains('[') {
        return Some((
            "`&&`, `--` or `~~` inside [...]",
            "RE2 reads them as literal characters, regex-lite as set operations; escape them, e.g. [a\\&\\&b]",
        ));
    }
    None
}

/// `(?x)` extended mode exists in regex-lite but not in RE2, so Istio rejects it.
fn uses_flag_x(re: &str) -> bool {
    let mut rest = re;
    while let Some(pos) = rest.find("(?") {
        let flags: String = rest[pos + 2..].chars().take_while(|c| c.is_ascii_alphabetic() || *c == '-').collect();
        if flags.contains('x') {
            return true;
        }
        rest = &rest[pos + 2..];
    }
    false
}

/// Istio `validateStringRegexp` plus meshroute's engine: non-empty, at most 1024 bytes, valid
/// RE2, and compilable by regex-lite (with full-match anchoring when `anchored`, as the compiler
/// uses it). `Ok(Some(warning))` when it compiles but may behave differently from RE2. Messages
/// are prefixed with `"<field>": ` as Istio does.
pub(crate) fn validate_regex(re: &str, field: &str, anchored: bool) -> Result<Option<String>, Problem> {
    const RE2_HINT: &str = "Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)";
    if re.is_empty() {
        return Err(Problem::Invalid(format!("{field:?}: regex string match should not be empty")));
    }
    if re.len() > 1024 {
        return Err(Problem::Invalid(format!("{field:?}: regex is too large, max length allowed is 1024")));
    }
    if uses_flag_x(re) {
        return Err(Problem::Invalid(format!(
            "{field:?}: invalid regex {re:?}: the x flag is not RE2 syntax; {RE2_HINT}"
        )));
    }
    if let Some((feature, hint)) = re2_feature_unsupported(re) {
        return Err(Problem::Unsupported(format!("{feature} in regex {re:?}"), hint));
    }
    let compiled = if anchored {
        crate::matcher::compile_regex(re).map(|_| ())
    } else {
        regex_lite::Regex::new(re).map(|_| ()).map_err(|e| format!("invalid regex {re:?}: {e}"))
    };
    compiled.map_err(|e| Problem::Invalid(format!("{field:?}: {e}; {RE2_HINT}")))?;
    if re.contains("(?i") && re.chars().any(|c| c.is_alphabetic() && !c.is_ascii()) {
        return Ok(Some(format!(
            "regex {re:?}: case-insensitive matching of non-ASCII letters is ASCII-only in meshroute (RE2 folds Unicode case)"
        )));
    }
    Ok(None)
}

/// Reports a regex problem at `path`.
pub(crate) fn check_regex(cx: &mut Ctx<'_>, at: &Place<'_>, path: &str, field: &str, re: &str, anchored: bool) {
    match validate_regex(re, field, anchored) {
        Ok(None) => {}
        Ok(Some(w)) => cx.own_warn(at, path, w),
        Err(p) => report(cx, at, path, p),
    }
}

/// Standard or URL-safe base64, padding optional (what protobuf JSON accepts for `bytes`).
/// Returns the decoded length.
pub(crate) fn base64_len(s: &str) -> Option<usize> {
    let body = s.trim_end_matches('=');
    if s.len() - body.len() > 2 {
        return None;
    }
    let ok = body.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_'));
    if !ok || body.len() % 4 == 1 {
        return None;
    }
    Some(body.len() * 3 / 4)
}

/// Checks a closed set of enum names; `what` names the field for the message.
pub(crate) fn check_enum(cx: &mut Ctx<'_>, at: &Place<'_>, path: &str, value: &str, allowed: &[&str]) -> bool {
    if allowed.contains(&value) {
        return true;
    }
    cx.error(at, path, format!("unknown value {value:?} (expected one of {})", allowed.join(", ")));
    false
}

/// Istio `validateExportTo`: `.`, `*`, namespaces (and `~` for ServiceEntry), no duplicates, and
/// `*`/`~` alone.
pub(crate) fn check_export_to(
    cx: &mut Ctx<'_>,
    at: &Place<'_>,
    ns: &str,
    export_to: &[String],
    is_service_entry: bool,
) {
    let mut seen: Vec<&str> = Vec::new();
    for (i, e) in export_to.iter().enumerate() {
        let path = format!("spec.exportTo[{i}]");
        let key = if e == "." { ns } else { e.as_str() };
        if seen.contains(&key) {
            let msg = if key != e {
                format!("duplicate entries in exportTo: . and current namespace {ns}")
            } else {
                format!("duplicate entries in exportTo for entry {e}")
            };
            cx.error(at, path, msg);
            continue;
        }
        let valid = matches!(e.as_str(), "." | "*") || (e == "~" && is_service_entry) || is_dns1123_label(e);
        if !valid {
            cx.error(at, path, format!("only . or * or valid DNS 1123 label is allowed as exportTo entry, got {e:?}"));
            continue;
        }
        seen.push(key);
    }
    if seen.contains(&"*") && export_to.len() > 1 {
        cx.error(at, "spec.exportTo", "cannot have both public (*) and non-public exportTo values for a resource");
    }
    if seen.contains(&"~") && export_to.len() > 1 {
        cx.error(at, "spec.exportTo", "cannot export service entry to no one (~) and someone");
    }
}

/// Istio protocol names (`protocol.Parse`, case-insensitive); `None` when unsupported.
pub(crate) fn parse_protocol(p: &str) -> Option<&'static str> {
    Some(match p.to_ascii_lowercase().as_str() {
        "tcp" => "TCP",
        "udp" => "UDP",
        "grpc" => "GRPC",
        "grpc-web" => "GRPC-Web",
        "http" => "HTTP",
        "http_proxy" => "HTTP_PROXY",
        "http2" => "HTTP2",
        "https" => "HTTPS",
        "tls" => "TLS",
        "mongo" => "Mongo",
        "redis" => "Redis",
        "mysql" => "MySQL",
        _ => return None,
    })
}

pub(crate) fn protocol_is_http(p: Option<&str>) -> bool {
    matches!(p, Some("HTTP" | "HTTP2" | "HTTP_PROXY" | "GRPC" | "GRPC-Web"))
}

pub(crate) fn protocol_is_tls(p: Option<&str>) -> bool {
    matches!(p, Some("HTTPS" | "TLS"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn wildcards_are_only_allowed_in_the_first_label() {
        assert!(validate_wildcard_domain("*.example.com").is_ok());
        assert!(validate_wildcard_domain("*").is_ok());
        assert!(validate_wildcard_domain("*-api.example.com").is_ok());
        assert!(validate_wildcard_domain("api.*.example.com").is_err());
        assert!(validate_wildcard_domain("").is_err());
        assert!(validate_wildcard_domain("a..b").is_err());
        assert!(validate_wildcard_domain("example.com.").is_ok());
        assert!(validate_wildcard_domain("example.123").is_err());
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn durations_must_be_whole_milliseconds_of_at_least_one() {
        assert!(validate_duration("1ms").is_ok());
        assert!(validate_duration("1.5s").is_ok());
        assert!(validate_duration("0s").is_err());
        assert!(validate_duration("500us").is_err());
        assert!(validate_duration("1.5ms").is_err());
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn header_values_allow_escaped_percent_but_not_operators() {
        assert!(validate_header_value("100%%").is_ok());
        assert!(validate_header_value("plain").is_ok());
        assert!(validate_header_value("%HOSTNAME%").unwrap_err().text().contains("not supported by meshroute"));
        assert!(validate_header_value("50%").unwrap_err().text().contains("Un-escaped"));
        assert!(validate_header_value("a\nb").is_err());
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn regexes_are_checked_for_re2_features_regex_lite_lacks() {
        assert!(validate_regex("/api/v[0-9]+", "uri", true).is_ok());
        assert!(validate_regex("\\p{Greek}+", "uri", true).unwrap_err().text().contains("Unicode character classes"));
        assert!(matches!(validate_regex("(?x) a b", "uri", true), Err(Problem::Invalid(_))));
        assert!(validate_regex("(", "uri", true).unwrap_err().text().contains("RE2"));
        assert!(validate_regex(&"a".repeat(1025), "uri", true).unwrap_err().text().contains("1024"));
        assert!(validate_regex("(?i)straße", "uri", true).unwrap().is_some());
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn labels_keys_and_base64_follow_kubernetes_and_protobuf_rules() {
        assert!(validate_label_key("app").is_ok());
        assert!(validate_label_key("topology.kubernetes.io/zone").is_ok());
        assert!(validate_label_key("-bad").is_err());
        assert_eq!(base64_len("aGVsbG8="), Some(5));
        assert_eq!(base64_len("not base64!"), None);
    }
}
