//! Validation: the checks Istio's admission webhook (`pkg/config/validation`) and
//! `istioctl analyze` (`pkg/config/analysis/analyzers`) make, run over a whole bundle.
//!
//! Every problem is collected (nothing stops at the first), each naming the resource and the
//! field path, worded as Istio words it, with the istioctl code where one applies. Severity:
//! what the webhook rejects is an error; analyzer findings keep istioctl's level, except where
//! meshroute cannot see the whole cluster (a Kubernetes Service or Pod it does not know about),
//! which is a warning. Where meshroute itself cannot implement something Istio accepts (RE2
//! features regex-lite lacks, Envoy header-formatter operators) the finding is an error, since
//! the filter could not apply the configuration faithfully. Any error makes the filter refuse the
//! whole configuration, so nothing Istio would accept is made an error beyond that.

use crate::config::{Bundle, Resource, Spec};
use crate::crd;
use crate::diag::{Diagnostic, Diagnostics, Severity};

mod analyze;
mod common;
mod delegation;
mod destination_rule;
mod gateway;
mod istio_parity;
mod k8s_registry;
mod l4_routes;
mod not_applied;
mod service_entry;
mod sidecar;
mod virtual_service;

/// Envoy's HTTP retry conditions as Istio accepts them in `retries.retryOn`
/// (agent `supportedRetryOnPolicies`, first part).
pub const RETRY_ON_HTTP: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
];

/// Envoy's gRPC retry conditions (`x-envoy-retry-grpc-on`), also accepted in `retryOn`.
pub const RETRY_ON_GRPC: &[&str] = &["cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"];

/// The HTTP status codes Go's `net/http.StatusText` knows: the numbers Istio accepts in
/// `retryOn` (webhook) and turns into `retriable_status_codes` (istiod `parseRetryOn`).
const KNOWN_HTTP_STATUS: &[u32] = &[
    100, 101, 102, 103, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304, 305, 307, 308, 400,
    401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 418, 421, 422, 423, 424, 425,
    426, 428, 429, 431, 451, 500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511,
];

/// A `retryOn` token that is a retriable status code (a registered HTTP status, as Istio
/// requires), or `None`.
pub fn retriable_status_code(token: &str) -> Option<u32> {
    token.parse::<u32>().ok().filter(|c| KNOWN_HTTP_STATUS.contains(c))
}

/// gRPC status names accepted in `fault.abort.grpcStatus` (istio `grpc.SupportedGRPCStatus`),
/// mapped to their numeric code.
pub fn grpc_status_code(name: &str) -> Option<u32> {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES.iter().position(|n| *n == name).and_then(|p| u32::try_from(p).ok())
}

/// Does this match block match every request, on every proxy? Like istiod `IsCatchAllRoute`:
/// the URI is absent, a `/` (or empty) prefix or the regex `.*`, and there is no scheme, method,
/// authority, header, withoutHeaders or query-parameter condition. A `port`, `sourceLabels`,
/// `gateways` or `sourceNamespace` selector makes it conditional, so not a catch-all here (istiod
/// evaluates those per proxy before it asks).
pub fn is_catch_all(m: &crd::HttpMatchRequest) -> bool {
    let uri_all = match &m.uri {
        None => true,
        Some(u) => match (&u.exact, &u.prefix, &u.regex) {
            (None, None, None) => true,
            (None, Some(p), None) => p == "/" || p.is_empty(),
            (None, None, Some(r)) => r == ".*",
            _ => false,
        },
    };
    uri_all
        && m.scheme.is_none()
        && m.method.is_none()
        && m.authority.is_none()
        && m.headers.is_empty()
        && m.without_headers.is_empty()
        && m.query_params.is_empty()
        && m.port.is_none_or(|p| p == 0)
        && m.source_labels.is_empty()
        && m.gateways.is_empty()
        && m.source_namespace.as_deref().is_none_or(str::is_empty)
}

/// Runs every check over the bundle: per-resource webhook checks in input order, then the
/// settings, then the cross-resource analyzers.
pub fn validate(bundle: &Bundle) -> Diagnostics {
    let mut cx = Ctx { bundle, out: Diagnostics::default() };
    for r in &bundle.resources {
        let at = Place(Some(r));
        match &r.spec {
            Spec::VirtualService(vs) => virtual_service::check(&mut cx, &at, vs),
            Spec::DestinationRule(dr) => destination_rule::check(&mut cx, &at, dr),
            Spec::ServiceEntry(se) => service_entry::check(&mut cx, &at, se),
            Spec::WorkloadEntry(we) => service_entry::check_workload_entry(&mut cx, &at, we),
            Spec::Gateway(gw) => gateway::check(&mut cx, &at, gw),
            Spec::Sidecar(sc) => sidecar::check(&mut cx, &at, sc),
        }
        if let Spec::VirtualService(vs) = &r.spec {
            l4_routes::check(&mut cx, &at, vs);
        }
        not_applied::check(&mut cx, &at, &r.spec);
    }
    sidecar::check_settings(&mut cx);
    analyze::run(&mut cx);
    delegation::run(&mut cx);
    k8s_registry::run(&mut cx);
    istio_parity::run(&mut cx);
    // Identical findings are reported once (as istioctl's `SortedDedupedCopy`): `Diagnostics`
    // drops repeats as they are pushed.
    cx.out
}

/// Where a diagnostic points: a resource, or (for `None`) the plugin settings.
pub(crate) struct Place<'a>(pub(crate) Option<&'a Resource>);

impl Place<'_> {
    pub(crate) fn namespace(&self) -> &str {
        self.0.map_or("default", |r| r.namespace.as_str())
    }
}

pub(crate) struct Ctx<'a> {
    pub(crate) bundle: &'a Bundle,
    pub(crate) out: Diagnostics,
}

impl Ctx<'_> {
    pub(crate) fn push(
        &mut self,
        severity: Severity,
        code: Option<&'static str>,
        at: &Place<'_>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.out.push(Diagnostic {
            severity,
            code,
            resource: at.0.map(Resource::reference),
            path: path.into(),
            message: message.into(),
        });
    }

    /// A webhook rejection: istioctl shows it as IST0106 `Schema validation error: <msg>`.
    pub(crate) fn error(&mut self, at: &Place<'_>, path: impl Into<String>, message: impl Into<String>) {
        let message = format!("Schema validation error: {}", message.into());
        self.push(Severity::Error, Some("IST0106"), at, path, message);
    }

    /// A webhook warning: istioctl shows it as IST0133 `Schema validation warning: <msg>`.
    pub(crate) fn warn(&mut self, at: &Place<'_>, path: impl Into<String>, message: impl Into<String>) {
        let message = format!("Schema validation warning: {}", message.into());
        self.push(Severity::Warning, Some("IST0133"), at, path, message);
    }

    /// An error of meshroute's own (Istio has no such check).
    pub(crate) fn own_error(&mut self, at: &Place<'_>, path: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Error, None, at, path, message);
    }

    /// A warning of meshroute's own (Istio has no such check).
    pub(crate) fn own_warn(&mut self, at: &Place<'_>, path: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Warning, None, at, path, message);
    }

    /// A note of meshroute's own.
    pub(crate) fn info(&mut self, at: &Place<'_>, path: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Info, None, at, path, message);
    }

    /// MR0007: something Istio accepts that meshroute cannot apply faithfully, so the
    /// configuration is refused rather than half-applied.
    pub(crate) fn unsupported(
        &mut self,
        at: &Place<'_>,
        path: impl Into<String>,
        what: impl std::fmt::Display,
        hint: &str,
    ) {
        let message = if hint.is_empty() {
            format!("{what} is not supported by meshroute")
        } else {
            format!("{what} is not supported by meshroute ({hint})")
        };
        self.push(Severity::Error, Some("MR0007"), at, path, message);
    }

    pub(crate) fn domain_suffix(&self) -> &str {
        &self.bundle.settings.domain_suffix
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn status_code_tokens_are_the_registered_http_codes() {
        assert_eq!(retriable_status_code("503"), Some(503));
        assert_eq!(retriable_status_code("499"), None);
        assert_eq!(retriable_status_code("5xx"), None);
        assert_eq!(grpc_status_code("UNAVAILABLE"), Some(14));
        assert_eq!(grpc_status_code("unavailable"), None);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn catch_all_is_root_prefix_or_dot_star_with_nothing_else() {
        let m = |v: serde_json::Value| serde_json::from_value::<crd::HttpMatchRequest>(v).unwrap();
        assert!(is_catch_all(&m(serde_json::json!({}))));
        assert!(is_catch_all(&m(serde_json::json!({"uri": {"prefix": "/"}, "name": "all"}))));
        assert!(is_catch_all(&m(serde_json::json!({"uri": {"regex": ".*"}}))));
        assert!(!is_catch_all(&m(serde_json::json!({"uri": {"prefix": "/api"}}))));
        assert!(!is_catch_all(&m(serde_json::json!({"uri": {"prefix": "/"}, "headers": {"x": {}}}))));
        assert!(!is_catch_all(&m(serde_json::json!({"sourceLabels": {"app": "a"}}))));
    }
}
