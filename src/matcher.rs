//! Compiled request matchers: one `MatchBlock` per Istio `HTTPMatchRequest`, its conditions
//! AND'ed, evaluated against a `RequestView`.

use crate::crd::StringMatch;
use crate::request::RequestView;
use regex_lite::Regex;
use std::borrow::Cow;

/// Istio's StringMatch once compiled. `Present` is the `{}` form (header or query parameter must
/// exist, any value).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(into = "crate::table::StrMatchWire", try_from = "crate::table::StrMatchWire")]
pub enum StrMatch {
    Exact(String),
    Prefix(String),
    /// Anchored (`^(?:…)$`): RE2 in Envoy matches the whole value. Boxed: a `Regex` is
    /// 56 bytes and every match condition of every entry would pay it inline.
    Regex(Box<Regex>),
    Present,
}

impl PartialEq for StrMatch {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (StrMatch::Exact(a), StrMatch::Exact(b)) | (StrMatch::Prefix(a), StrMatch::Prefix(b)) => a == b,
            (StrMatch::Regex(a), StrMatch::Regex(b)) => a.as_str() == b.as_str(),
            (StrMatch::Present, StrMatch::Present) => true,
            _ => false,
        }
    }
}

impl StrMatch {
    /// `{}` and, like istiod's `canBeConvertedToPresentMatch`, `regex: "*"` become `Present`
    /// when `allow_present`; otherwise an empty match is an error.
    pub fn compile(m: &StringMatch, allow_present: bool) -> Result<StrMatch, String> {
        match (&m.exact, &m.prefix, &m.regex) {
            (Some(e), None, None) => Ok(StrMatch::Exact(e.clone())),
            (None, Some(p), None) => Ok(StrMatch::Prefix(p.clone())),
            (None, None, Some(r)) if allow_present && r == "*" => Ok(StrMatch::Present),
            (None, None, Some(r)) => compile_regex(r).map(|r| StrMatch::Regex(Box::new(r))),
            (None, None, None) if allow_present => Ok(StrMatch::Present),
            (None, None, None) => Err("one of exact, prefix or regex must be set".into()),
            _ => Err("only one of exact, prefix or regex may be set".into()),
        }
    }

    pub fn matches(&self, v: &str) -> bool {
        match self {
            StrMatch::Exact(e) => v == e,
            StrMatch::Prefix(p) => v.starts_with(p.as_str()),
            StrMatch::Regex(r) => r.is_match(v),
            StrMatch::Present => true,
        }
    }

    /// Case-insensitive for exact and prefix (Istio `ignoreUriCase`; regex is unaffected, as in
    /// Envoy where `case_sensitive` is ignored for `safe_regex`).
    fn matches_ignore_case(&self, v: &str) -> bool {
        match self {
            StrMatch::Exact(e) => v.eq_ignore_ascii_case(e),
            StrMatch::Prefix(p) => v.len() >= p.len() && v.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes()),
            other => other.matches(v),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            StrMatch::Exact(e) => format!("exact {e:?}"),
            StrMatch::Prefix(p) => format!("prefix {p:?}"),
            StrMatch::Regex(r) => format!("regex {:?}", unanchored(r.as_str())),
            StrMatch::Present => "present".into(),
        }
    }
}

/// Full-match RE2 semantics on top of regex-lite (linear time, small in Wasm).
pub fn compile_regex(pattern: &str) -> Result<Regex, String> {
    // The pattern must stand on its own before it is wrapped: `/a)|(/b` would otherwise compile
    // as `^(?:/a)|(/b)$`, which RE2 rejects and which matches partial paths.
    Regex::new(pattern).map_err(|e| format!("invalid regex {pattern:?}: {e}"))?;
    // regex-lite reads `\<` and `\>` as word boundaries; RE2 has no such escapes.
    if has_escape(pattern, &['<', '>']) {
        return Err(format!("invalid regex {pattern:?}: \\< and \\> are not RE2 syntax"));
    }
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| format!("invalid regex {pattern:?}: {e}"))
}

/// Is one of `chars` escaped (preceded by an odd number of backslashes) in `pattern`?
fn has_escape(pattern: &str, chars: &[char]) -> bool {
    let mut escaped = false;
    for c in pattern.chars() {
        if escaped && chars.contains(&c) {
            return true;
        }
        escaped = !escaped && c == '\\';
    }
    false
}

/// A compiled pattern without the anchors `compile_regex` added: the pattern as written.
pub(crate) fn unanchored(s: &str) -> &str {
    s.strip_prefix("^(?:").and_then(|s| s.strip_suffix(")$")).unwrap_or(s)
}

/// One `HTTPMatchRequest`. Config-time selectors (gateways, sourceLabels, sourceNamespace) are
/// resolved by the compiler and never reach here; `port` is checked against the request's port.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchBlock {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<StrMatch>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_uri_case: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<StrMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StrMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<StrMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, StrMatch)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub without_headers: Vec<(String, StrMatch)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<(String, StrMatch)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
}

/// Why a block did not match: the first condition that failed, for `explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch(pub String);

impl MatchBlock {
    /// Envoy's catch-all route (istiod `IsCatchAllRoute`): no condition but, at most, a `/`
    /// prefix; istiod emits no route after it. Config-time selectors are resolved before blocks
    /// exist, so this is per proxy (validate's `is_catch_all` is the all-proxies twin, on the CRD).
    pub fn is_catch_all(&self) -> bool {
        let uri_all = match &self.uri {
            None => true,
            Some(StrMatch::Prefix(p)) => p == "/" || p.is_empty(),
            Some(_) => false,
        };
        uri_all
            && self.scheme.is_none()
            && self.method.is_none()
            && self.authority.is_none()
            && self.headers.is_empty()
            && self.without_headers.is_empty()
            && self.query_params.is_empty()
            && self.port.is_none()
    }

    /// Per request and per candidate rule, so it builds nothing: a mismatch is only described
    /// when `check` asks (for `explain`).
    pub fn matches(&self, req: &dyn RequestView, port: u32) -> bool {
        self.first_failure(req, port).is_none()
    }

    /// Like [`MatchBlock::matches`], saying which condition failed.
    pub fn check(&self, req: &dyn RequestView, port: u32) -> Result<(), Mismatch> {
        match self.first_failure(req, port) {
            None => Ok(()),
            Some(f) => Err(f.describe()),
        }
    }

    /// Evaluates the conditions in a fixed, cheap-first order; the first that fails.
    fn first_failure<'a>(&'a self, req: &'a dyn RequestView, port: u32) -> Option<Failure<'a>> {
        if let Some(want) = self.port {
            if want != port {
                return Some(Failure::Port { port, want });
            }
        }
        if let Some(u) = &self.uri {
            let path = path_only(req.path());
            let ok = if self.ignore_uri_case { u.matches_ignore_case(path) } else { u.matches(path) };
            if !ok {
                return Some(Failure::Value { what: "uri", value: path.into(), m: u });
            }
        }
        for (what, m, v) in [
            ("method", &self.method, req.method()),
            ("scheme", &self.scheme, req.scheme()),
            ("authority", &self.authority, req.authority()),
        ] {
            if let Some(m) = m {
                if !m.matches(v) {
                    return Some(Failure::Value { what, value: v.into(), m });
                }
            }
        }
        for (name, m) in &self.headers {
            match req.header(name) {
                Some(v) if m.matches(&v) => {}
                Some(v) => return Some(Failure::Header { name, value: v, m }),
                None => return Some(Failure::HeaderAbsent { name }),
            }
        }
        // Envoy: inverted matcher with treat_missing_header_as_empty, except presence matches,
        // which only pass when the header is absent.
        for (name, m) in &self.without_headers {
            let hit = match (req.header(name), m) {
                (None, StrMatch::Present) => false,
                (None, m) => m.matches(""),
                (Some(v), m) => m.matches(&v),
            };
            if hit {
                return Some(Failure::WithoutHeader { name, m });
            }
        }
        if !self.query_params.is_empty() {
            let query = req.path().split_once('?').map(|(_, q)| q).unwrap_or("");
            for (name, m) in &self.query_params {
                match first_query_value(query, name) {
                    Some(v) if m.matches(v) => {}
                    Some(v) => return Some(Failure::Query { name, value: v, m }),
                    None => return Some(Failure::QueryAbsent { name }),
                }
            }
        }
        None
    }
}

/// The condition that failed, borrowed from the block and the request.
enum Failure<'a> {
    Port {
        port: u32,
        want: u32,
    },
    /// uri, method, scheme or authority.
    Value {
        what: &'static str,
        value: Cow<'a, str>,
        m: &'a StrMatch,
    },
    Header {
        name: &'a str,
        value: Cow<'a, str>,
        m: &'a StrMatch,
    },
    HeaderAbsent {
        name: &'a str,
    },
    WithoutHeader {
        name: &'a str,
        m: &'a StrMatch,
    },
    Query {
        name: &'a str,
        value: &'a str,
        m: &'a StrMatch,
    },
    QueryAbsent {
        name: &'a str,
    },
}

impl Failure<'_> {
    fn describe(&self) -> Mismatch {
        Mismatch(match self {
            Failure::Port { port, want } => format!("port {port} is not {want}"),
            Failure::Value { what, value, m } => format!("{what} {value:?} does not match {}", m.describe()),
            Failure::Header { name, value, m } => format!("header {name}: {value:?} does not match {}", m.describe()),
            Failure::HeaderAbsent { name } => format!("header {name} is absent"),
            Failure::WithoutHeader { name, m } => format!("header {name} matches withoutHeaders {}", m.describe()),
            Failure::Query { name, value, m } => format!("query {name}={value:?} does not match {}", m.describe()),
            Failure::QueryAbsent { name } => format!("query parameter {name} is absent"),
        })
    }
}

/// The path without its query string (and fragment), which is what uri matches see.
pub fn path_only(path: &str) -> &str {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    &path[..end]
}

/// Envoy considers only the first value of a repeated key; `?key` has the value "".
fn first_query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    let query = query.split('#').next().unwrap_or("");
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Request;

    fn sm(exact: Option<&str>, prefix: Option<&str>, regex: Option<&str>) -> StringMatch {
        StringMatch { exact: exact.map(Into::into), prefix: prefix.map(Into::into), regex: regex.map(Into::into) }
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn prefix_is_a_plain_byte_prefix_of_the_path_without_query() {
        let m = MatchBlock { uri: Some(StrMatch::Prefix("/api/v1/products".into())), ..Default::default() };
        assert!(m.matches(&Request::new("GET", "a", "/api/v1/productsXYZ"), 80));
        assert!(m.matches(&Request::new("GET", "a", "/api/v1/products?x=1"), 80));
        assert!(!m.matches(&Request::new("GET", "a", "/api/v1/product"), 80));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn exact_uri_ignores_the_query_string() {
        let m = MatchBlock { uri: Some(StrMatch::Exact("/login".into())), ..Default::default() };
        assert!(m.matches(&Request::new("GET", "a", "/login?next=/"), 80));
        assert!(!m.matches(&Request::new("GET", "a", "/login/"), 80));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn regex_must_match_the_whole_value() {
        let m = StrMatch::compile(&sm(None, None, Some("\\d+")), false).unwrap();
        assert!(m.matches("123"));
        assert!(!m.matches("a123"));
        assert!(!m.matches("123a"));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn catch_all_is_no_condition_or_a_bare_root_prefix() {
        assert!(MatchBlock::default().is_catch_all());
        assert!(MatchBlock { uri: Some(StrMatch::Prefix("/".into())), ..Default::default() }.is_catch_all());
        assert!(!MatchBlock { uri: Some(StrMatch::Prefix("/a".into())), ..Default::default() }.is_catch_all());
        let with_header = MatchBlock {
            uri: Some(StrMatch::Prefix("/".into())),
            headers: vec![("x".into(), StrMatch::Present)],
            ..Default::default()
        };
        assert!(!with_header.is_catch_all());
        assert!(!MatchBlock { port: Some(80), ..Default::default() }.is_catch_all());
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn a_regex_that_only_compiles_once_wrapped_is_rejected() {
        assert!(compile_regex("/a)|(/b").is_err());
        assert!(compile_regex(r"/\<api").is_err());
        assert!(compile_regex(r"/a\\<").is_ok(), "an escaped backslash before < is a literal");
        assert!(compile_regex("/a|/b").is_ok());
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn ignore_uri_case_applies_to_exact_and_prefix_only() {
        let m = MatchBlock { uri: Some(StrMatch::Prefix("/API".into())), ignore_uri_case: true, ..Default::default() };
        assert!(m.matches(&Request::new("GET", "a", "/api/x"), 80));
        let r = MatchBlock {
            uri: Some(StrMatch::compile(&sm(None, None, Some("/API")), false).unwrap()),
            ignore_uri_case: true,
            ..Default::default()
        };
        assert!(!r.matches(&Request::new("GET", "a", "/api"), 80));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn empty_string_match_means_present_for_headers() {
        assert_eq!(StrMatch::compile(&sm(None, None, None), true), Ok(StrMatch::Present));
        assert_eq!(StrMatch::compile(&sm(None, None, Some("*")), true), Ok(StrMatch::Present));
        assert!(StrMatch::compile(&sm(None, None, None), false).is_err());
        assert!(StrMatch::compile(&sm(Some("a"), Some("b"), None), true).is_err());
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn without_headers_treats_missing_as_empty_except_presence() {
        let not_a =
            MatchBlock { without_headers: vec![("x".into(), StrMatch::Exact("a".into()))], ..Default::default() };
        assert!(not_a.matches(&Request::new("GET", "h", "/"), 80));
        assert!(not_a.matches(&Request::new("GET", "h", "/").with_header("x", "b"), 80));
        assert!(!not_a.matches(&Request::new("GET", "h", "/").with_header("x", "a"), 80));
        let absent = MatchBlock { without_headers: vec![("x".into(), StrMatch::Present)], ..Default::default() };
        assert!(absent.matches(&Request::new("GET", "h", "/"), 80));
        assert!(!absent.matches(&Request::new("GET", "h", "/").with_header("x", ""), 80));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn query_params_use_the_first_value() {
        let m = MatchBlock { query_params: vec![("v".into(), StrMatch::Exact("1".into()))], ..Default::default() };
        assert!(m.matches(&Request::new("GET", "h", "/?v=1&v=2"), 80));
        assert!(!m.matches(&Request::new("GET", "h", "/?v=2&v=1"), 80));
        let flag =
            MatchBlock { query_params: vec![("debug".into(), StrMatch::Exact(String::new()))], ..Default::default() };
        assert!(flag.matches(&Request::new("GET", "h", "/?debug"), 80));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn headers_see_joined_values_and_authority_keeps_its_port() {
        let m = MatchBlock {
            headers: vec![("x".into(), StrMatch::Exact("1,2".into()))],
            authority: Some(StrMatch::Exact("a:8080".into())),
            ..Default::default()
        };
        assert!(m.matches(&Request::new("GET", "a:8080", "/").with_header("x", "1").with_header("x", "2"), 80));
        assert!(!m.matches(&Request::new("GET", "a", "/").with_header("x", "1").with_header("x", "2"), 80));
    }
}
