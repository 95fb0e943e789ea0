//! Host names as Istio treats them: short names expand against a namespace, wildcards match by
//! suffix, and request authorities are compared case-insensitively without their port.

/// `reviews` in namespace `default` → `reviews.default.svc.cluster.local`. Names with a dot and
/// wildcards are taken as written (istio `ResolveShortnameToFQDN`).
///
/// One allocation of the final size: compile and the analyzers resolve every destination of
/// every rule several times, and `format!` grew the string piece by piece (five allocations).
pub fn resolve(host: &str, namespace: &str, domain_suffix: &str) -> String {
    if host.contains('.') || host.starts_with('*') {
        return host.to_ascii_lowercase();
    }
    let mut out = String::with_capacity(host.len() + namespace.len() + domain_suffix.len() + 6);
    out.push_str(host);
    out.make_ascii_lowercase();
    for part in [".", namespace, ".svc.", domain_suffix] {
        out.push_str(part);
    }
    out
}

/// Does `pattern` (exact, `*.suffix` or `*`) cover `name`? Istio `host.Name.Matches`: `*.foo.com`
/// matches any number of labels before `.foo.com` but not `foo.com` itself.
pub fn matches(pattern: &str, name: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => name.len() > suffix.len() && ends_with_ignore_case(name, suffix),
        None => pattern.eq_ignore_ascii_case(name),
    }
}

/// Do two host patterns overlap (some name matches both)? Used for conflict and reference checks.
pub fn overlaps(a: &str, b: &str) -> bool {
    matches(a, b) || matches(b, a) || {
        match (a.strip_prefix('*'), b.strip_prefix('*')) {
            (Some(x), Some(y)) => ends_with_ignore_case(x, y) || ends_with_ignore_case(y, x),
            _ => false,
        }
    }
}

fn ends_with_ignore_case(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len() && s.as_bytes()[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

/// The names a Kubernetes-style service answers to from a proxy in `proxy_ns`
/// (istiod `generateVirtualHostDomains`/`GenerateAltVirtualHosts`): the FQDN always; `name.ns` and
/// `name.ns.svc` always; the bare `name` only from the same namespace.
pub fn alt_names(fqdn: &str, proxy_ns: &str, domain_suffix: &str) -> Vec<String> {
    let mut out = vec![fqdn.to_string()];
    let svc_suffix = format!(".svc.{domain_suffix}");
    if let Some(base) = fqdn.strip_suffix(&svc_suffix) {
        if let Some((name, ns)) = base.split_once('.') {
            if !ns.contains('.') {
                out.push(format!("{name}.{ns}.svc"));
                out.push(format!("{name}.{ns}"));
                if ns == proxy_ns {
                    out.push(name.to_string());
                }
            }
        }
    }
    out
}

/// Strips the port from an authority (`host:port`, `[v6]:port`) and lower-cases the host.
pub fn authority_host(authority: &str) -> (&str, Option<u32>) {
    if let Some(rest) = authority.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            let port = rest[end + 1..].strip_prefix(':').and_then(|p| p.parse().ok());
            return (&authority[..end + 2], port);
        }
        return (authority, None);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => match p.parse() {
            Ok(port) => (h, Some(port)),
            Err(_) => (authority, None),
        },
        _ => (authority, None),
    }
}

/// The host a request addresses, as host lookups compare it: port stripped, lower-cased (only
/// copied when it has upper case) and without a trailing dot (`a.com.` is `a.com`).
pub fn request_host(authority: &str) -> std::borrow::Cow<'_, str> {
    let (h, _) = authority_host(authority);
    let h = h.strip_suffix('.').unwrap_or(h);
    if h.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(h.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(h)
    }
}

/// `ns/name`, `./name`, `name` and the legacy `name.ns.svc.cluster.local` all name a Gateway
/// (istio `resolveGatewayName`); `mesh` stays `mesh`.
pub fn resolve_gateway(gw: &str, vs_namespace: &str) -> String {
    if gw == "mesh" {
        return gw.to_string();
    }
    if let Some(name) = gw.strip_prefix("./") {
        return format!("{vs_namespace}/{name}");
    }
    if gw.contains('/') {
        return gw.to_string();
    }
    match gw.split_once('.') {
        Some((name, rest)) => {
            let ns = rest.split('.').next().unwrap_or(vs_namespace);
            format!("{ns}/{name}")
        }
        None => format!("{vs_namespace}/{gw}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn short_names_expand_against_the_resource_namespace() {
        assert_eq!(resolve("reviews", "default", "cluster.local"), "reviews.default.svc.cluster.local");
        assert_eq!(resolve("api.example.com", "default", "cluster.local"), "api.example.com");
        assert_eq!(resolve("*.example.com", "x", "cluster.local"), "*.example.com");
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn wildcard_matches_any_labels_but_not_the_bare_suffix() {
        assert!(matches("*.example.com", "api.example.com"));
        assert!(matches("*.example.com", "a.b.example.com"));
        assert!(!matches("*.example.com", "example.com"));
        assert!(matches("*", "anything"));
        assert!(matches("API.example.com", "api.EXAMPLE.com"));
        assert!(overlaps("*.example.com", "*.api.example.com"));
        assert!(!overlaps("a.com", "b.com"));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn alt_names_depend_on_the_proxy_namespace() {
        let same = alt_names("reviews.default.svc.cluster.local", "default", "cluster.local");
        assert!(same.contains(&"reviews".to_string()));
        let other = alt_names("reviews.default.svc.cluster.local", "prod", "cluster.local");
        assert!(!other.contains(&"reviews".to_string()));
        assert!(other.contains(&"reviews.default".to_string()));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn request_host_drops_port_case_and_trailing_dot() {
        assert_eq!(request_host("API.Example.com.:8080"), "api.example.com");
        assert!(matches!(request_host("a.com:80"), std::borrow::Cow::Borrowed("a.com")));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn authority_port_is_split_off() {
        assert_eq!(authority_host("a.com:8080"), ("a.com", Some(8080)));
        assert_eq!(authority_host("a.com"), ("a.com", None));
        assert_eq!(authority_host("[::1]:80"), ("[::1]", Some(80)));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn gateway_names_resolve_like_istiod() {
        assert_eq!(resolve_gateway("public-gateway", "default"), "default/public-gateway");
        assert_eq!(resolve_gateway("istio-system/gw", "default"), "istio-system/gw");
        assert_eq!(resolve_gateway("./gw", "prod"), "prod/gw");
        assert_eq!(resolve_gateway("gw.istio-system.svc.cluster.local", "default"), "istio-system/gw");
        assert_eq!(resolve_gateway("mesh", "default"), "mesh");
    }
}
