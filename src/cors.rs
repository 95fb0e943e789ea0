//! CORS as Envoy's CORS filter (`envoy.filters.http.cors`, `source/extensions/filters/http/cors/
//! cors_filter.cc`) applies the per-route `CorsPolicy` istiod generates (`pilot/pkg/networking/
//! core/route/route.go` `TranslateCORSPolicy`). Pure decision: given the matched rule's policy
//! and the request, what the filter answers (a preflight) or adds to the response. The plan
//! (`apply`) places it in Istio's filter order (fault, then CORS, then router) and the adapter
//! only carries it out. Rules R170–R179 in docs/semantics.md.

use crate::crd;
use crate::duration;
use crate::matcher::StrMatch;
use crate::request::RequestView;

/// One route's CORS policy, in the form istiod hands to Envoy (`envoy.config.route.v3.CorsPolicy`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    /// `allowOrigins`, or the deprecated `allowOrigin` (exact) when `allowOrigins` is empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origins: Vec<StrMatch>,
    /// Joined with `,` as istiod does; empty: no header.
    pub allow_methods: String,
    pub allow_headers: String,
    pub expose_headers: String,
    /// Whole seconds, as istiod writes `max_age` (`GetSeconds()`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_credentials: bool,
    /// `forward_not_matching_preflights`: true unless `unmatchedPreflights: IGNORE`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forward_unmatched_preflights: bool,
}

/// What the CORS filter does with one request that reached its route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsAction {
    /// No `Origin` (or an empty one): not a CORS request, nothing is added.
    NotCors,
    /// A CORS request whose origin matches no `allowOrigins` entry: forwarded, and the response
    /// gets no CORS header (also a preflight under `unmatchedPreflights: FORWARD`, the default).
    OriginNotAllowed,
    /// A preflight answered by the proxy: `200` with these headers, no body.
    Preflight { origin_allowed: bool, headers: Vec<(String, String)> },
    /// Forwarded; these headers are set on its response, whoever makes it (upstream, redirect,
    /// direct response, router error).
    Response(Vec<(String, String)>),
}

pub const ALLOW_ORIGIN: &str = "access-control-allow-origin";
pub const ALLOW_CREDENTIALS: &str = "access-control-allow-credentials";
pub const ALLOW_METHODS: &str = "access-control-allow-methods";
pub const ALLOW_HEADERS: &str = "access-control-allow-headers";
pub const EXPOSE_HEADERS: &str = "access-control-expose-headers";
pub const MAX_AGE: &str = "access-control-max-age";
const REQUEST_METHOD: &str = "access-control-request-method";
const REQUEST_HEADERS: &str = "access-control-request-headers";

impl Cors {
    /// istiod's `TranslateCORSPolicy`. Bad entries were refused by validation (R87); one that
    /// still does not compile matches nothing, as istiod's `ConvertToEnvoyMatch` drops it.
    pub fn from_crd(c: &crd::CorsPolicy) -> Cors {
        let allow_origins = if c.allow_origins.is_empty() {
            c.allow_origin.iter().map(|o| StrMatch::Exact(o.clone())).collect()
        } else {
            c.allow_origins.iter().filter_map(|o| StrMatch::compile(o, false).ok()).collect()
        };
        Cors {
            allow_origins,
            allow_methods: c.allow_methods.join(","),
            allow_headers: c.allow_headers.join(","),
            expose_headers: c.expose_headers.join(","),
            max_age: c.max_age.as_deref().and_then(|d| duration::parse(d).ok()).map(|d| d.as_secs().to_string()),
            allow_credentials: c.allow_credentials.unwrap_or(false),
            forward_unmatched_preflights: c.unmatched_preflights.as_deref() != Some("IGNORE"),
        }
    }

    /// Envoy's `isOriginAllowed`: an entry that matches the literal `*` (an exact `*`, a regex
    /// `.*`) allows every origin; otherwise the origin itself must match (case-sensitive).
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.allow_origins.iter().any(|m| m.matches("*") || m.matches(origin))
    }

    /// Envoy's `decodeHeaders` (the preflight) and `encodeHeaders` (the response) for `req`.
    /// Repeated `Origin` headers count as one joined with `,`, as Envoy's inline headers do.
    pub fn evaluate(&self, req: &dyn RequestView) -> CorsAction {
        let Some(origin) = req.header("origin").filter(|o| !o.is_empty()) else {
            return CorsAction::NotCors;
        };
        let allowed = self.origin_allowed(&origin);
        let request_method = req.header(REQUEST_METHOD).unwrap_or_default();
        let preflight = req.method() == "OPTIONS" && !request_method.is_empty();
        if preflight && (allowed || !self.forward_unmatched_preflights) {
            let mut h = Vec::with_capacity(5);
            if allowed {
                h.push((ALLOW_ORIGIN.to_string(), origin.to_string()));
            }
            // Unlike the allow-origin, Envoy writes the rest even for an origin not allowed.
            if self.allow_credentials {
                h.push((ALLOW_CREDENTIALS.to_string(), "true".to_string()));
            }
            if !self.allow_methods.is_empty() {
                let v = if self.allow_methods == "*" { request_method.to_string() } else { self.allow_methods.clone() };
                h.push((ALLOW_METHODS.to_string(), v));
            }
            if !self.allow_headers.is_empty() {
                let v = if self.allow_headers == "*" {
                    req.header(REQUEST_HEADERS).unwrap_or_default().into_owned()
                } else {
                    self.allow_headers.clone()
                };
                h.push((ALLOW_HEADERS.to_string(), v));
            }
            if let Some(age) = &self.max_age {
                h.push((MAX_AGE.to_string(), age.clone()));
            }
            // The reply passes the filter's own encodeHeaders too (R173).
            if allowed {
                self.response_headers(&origin, &mut h);
            }
            return CorsAction::Preflight { origin_allowed: allowed, headers: h };
        }
        if !allowed {
            return CorsAction::OriginNotAllowed;
        }
        let mut h = Vec::with_capacity(3);
        self.response_headers(&origin, &mut h);
        CorsAction::Response(h)
    }

    /// `encodeHeaders` for an allowed origin: set (replacing) allow-origin, credentials, expose.
    fn response_headers(&self, origin: &str, h: &mut Vec<(String, String)>) {
        set(h, ALLOW_ORIGIN, origin);
        if self.allow_credentials {
            set(h, ALLOW_CREDENTIALS, "true");
        }
        if !self.expose_headers.is_empty() {
            set(h, EXPOSE_HEADERS, &self.expose_headers);
        }
    }
}

fn set(h: &mut Vec<(String, String)>, name: &str, value: &str) {
    match h.iter_mut().find(|(k, _)| k == name) {
        Some(slot) => slot.1 = value.to_string(),
        None => h.push((name.to_string(), value.to_string())),
    }
}

impl CorsAction {
    /// One line for `explain`: what the CORS filter does with this request and why.
    pub fn describe(&self) -> &'static str {
        match self {
            CorsAction::NotCors => "not a CORS request (no Origin): no CORS headers",
            CorsAction::OriginNotAllowed => "origin not allowed: forwarded, no CORS headers on the response",
            CorsAction::Preflight { origin_allowed: true, .. } => "preflight, origin allowed: answered by the proxy",
            CorsAction::Preflight { origin_allowed: false, .. } => {
                "preflight, origin not allowed, unmatchedPreflights IGNORE: answered by the proxy without allow-origin"
            }
            CorsAction::Response(_) => "origin allowed: CORS headers set on the response",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Request;
    use serde_json::json;

    fn cors(v: serde_json::Value) -> Cors {
        let c: crd::CorsPolicy = serde_json::from_value(v).expect("policy");
        Cors::from_crd(&c)
    }

    fn preflight(origin: &str) -> Request {
        Request::new("OPTIONS", "api", "/")
            .with_header("origin", origin)
            .with_header("access-control-request-method", "PUT")
            .with_header("access-control-request-headers", "x-a,x-b")
    }

    fn hs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn preflight_from_an_allowed_origin_is_answered_with_every_header() {
        let c = cors(json!({"allowOrigins": [{"exact": "https://a.example"}], "allowMethods": ["GET", "PUT"],
            "allowHeaders": ["x-a"], "exposeHeaders": ["x-e"], "maxAge": "24h", "allowCredentials": true}));
        assert_eq!(
            c.evaluate(&preflight("https://a.example")),
            CorsAction::Preflight {
                origin_allowed: true,
                headers: hs(&[
                    (ALLOW_ORIGIN, "https://a.example"),
                    (ALLOW_CREDENTIALS, "true"),
                    (ALLOW_METHODS, "GET,PUT"),
                    (ALLOW_HEADERS, "x-a"),
                    (MAX_AGE, "86400"),
                    (EXPOSE_HEADERS, "x-e"),
                ])
            }
        );
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn unmatched_preflight_is_forwarded_by_default_and_answered_bare_under_ignore() {
        let forward = cors(json!({"allowOrigins": [{"exact": "https://a.example"}], "allowMethods": ["GET"]}));
        assert_eq!(forward.evaluate(&preflight("https://evil.example")), CorsAction::OriginNotAllowed);
        let ignore = cors(json!({"allowOrigins": [{"exact": "https://a.example"}], "allowMethods": ["GET"],
            "allowCredentials": true, "unmatchedPreflights": "IGNORE"}));
        assert_eq!(
            ignore.evaluate(&preflight("https://evil.example")),
            CorsAction::Preflight {
                origin_allowed: false,
                headers: hs(&[(ALLOW_CREDENTIALS, "true"), (ALLOW_METHODS, "GET")])
            }
        );
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn wildcard_methods_and_headers_echo_the_request() {
        let c = cors(json!({"allowOrigins": [{"regex": "https://.*\\.example"}], "allowMethods": ["*"],
            "allowHeaders": ["*"]}));
        let CorsAction::Preflight { headers, .. } = c.evaluate(&preflight("https://b.example")) else {
            panic!("preflight")
        };
        assert_eq!(headers[1..], hs(&[(ALLOW_METHODS, "PUT"), (ALLOW_HEADERS, "x-a,x-b")])[..]);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn origins_match_exact_prefix_full_regex_and_star_case_sensitively() {
        let c = cors(json!({"allowOrigins": [{"exact": "https://a.example"}, {"prefix": "https://dev."},
            {"regex": "https://[a-z]+\\.test"}]}));
        for (origin, ok) in [
            ("https://a.example", true),
            ("https://A.example", false),
            ("https://dev.anything", true),
            ("http://dev.x", false),
            ("https://abc.test", true),
            ("https://abc.test.evil", false),
        ] {
            assert_eq!(c.origin_allowed(origin), ok, "{origin}");
        }
        assert!(cors(json!({"allowOrigins": [{"exact": "*"}]})).origin_allowed("https://any"));
        assert!(cors(json!({"allowOrigins": [{"regex": ".*"}]})).origin_allowed("https://any"));
        // The deprecated list counts only when allowOrigins is empty (istiod's `else if`).
        let both = cors(json!({"allowOrigins": [{"exact": "https://new"}], "allowOrigin": ["https://old"]}));
        assert!(both.origin_allowed("https://new") && !both.origin_allowed("https://old"));
        assert!(cors(json!({"allowOrigin": ["https://old"]})).origin_allowed("https://old"));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn actual_requests_get_origin_credentials_and_expose_only_when_allowed() {
        let c = cors(json!({"allowOrigins": [{"exact": "https://a.example"}], "allowMethods": ["GET"],
            "exposeHeaders": ["x-e", "x-f"], "allowCredentials": true, "maxAge": "10s"}));
        let get = |origin: Option<&str>| {
            let r = Request::new("GET", "api", "/");
            c.evaluate(&match origin {
                Some(o) => r.with_header("origin", o),
                None => r,
            })
        };
        assert_eq!(
            get(Some("https://a.example")),
            CorsAction::Response(hs(&[
                (ALLOW_ORIGIN, "https://a.example"),
                (ALLOW_CREDENTIALS, "true"),
                (EXPOSE_HEADERS, "x-e,x-f")
            ]))
        );
        assert_eq!(get(Some("https://b.example")), CorsAction::OriginNotAllowed);
        assert_eq!(get(Some("")), CorsAction::NotCors);
        assert_eq!(get(None), CorsAction::NotCors);
        // OPTIONS without Access-Control-Request-Method is not a preflight.
        let options = Request::new("OPTIONS", "api", "/").with_header("origin", "https://a.example");
        assert!(matches!(c.evaluate(&options), CorsAction::Response(_)));
    }
}
