//! `exportTo`: which namespaces see a VirtualService, DestinationRule or ServiceEntry.
//!
//! istiod indexes every resource by the namespaces it is exported to and a proxy only ever
//! reads the buckets of its own namespace (`MODEL push_context.go initVirtualServices`,
//! `IsServiceVisible`/`serviceExportTo`, `setDestinationRules`). An empty `exportTo` takes the
//! mesh-wide default (`defaultVirtualServiceExportTo`, `defaultServiceExportTo`,
//! `defaultDestinationRuleExportTo` in MeshConfig), which is `*` when unset.

/// Is a resource of namespace `owner_ns` with `export_to` visible to a proxy in `proxy_ns`?
/// `*` exports to every namespace, `.` to the owner's own, `~` to none, anything else names a
/// namespace.
pub fn visible(export_to: &[String], mesh_default: &[String], owner_ns: &str, proxy_ns: &str) -> bool {
    let set = if export_to.is_empty() { mesh_default } else { export_to };
    if set.is_empty() {
        return true;
    }
    // A VirtualService exported to `~` is hidden whatever else is listed (`initVirtualServices`);
    // validation refuses `~` next to anything else for the other kinds.
    if set.iter().any(|e| e == "~") {
        return false;
    }
    set.iter().any(|e| match e.as_str() {
        "*" => true,
        "." => owner_ns == proxy_ns,
        ns => ns == proxy_ns,
    })
}

/// How a visible VirtualService reached a gateway proxy, in the order istiod lists them for a
/// gateway (`VirtualServicesForGateway`): exported privately to the proxy's namespace first, then
/// exported to it by name, then public.
pub fn gateway_rank(export_to: &[String], mesh_default: &[String], owner_ns: &str, proxy_ns: &str) -> u8 {
    let set = if export_to.is_empty() { mesh_default } else { export_to };
    if set.is_empty() || set.iter().any(|e| e == "*") {
        2
    } else if owner_ns == proxy_ns {
        0
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn export_to_follows_istiod_visibility() {
        let none = v(&[]);
        assert!(visible(&none, &none, "other", "default"), "unset exportTo and unset default is public");
        assert!(!visible(&v(&["."]), &none, "other", "default"));
        assert!(visible(&v(&["."]), &none, "default", "default"));
        assert!(!visible(&v(&["~"]), &none, "default", "default"));
        assert!(visible(&v(&["default", "prod"]), &none, "other", "default"));
        assert!(!visible(&v(&["prod"]), &none, "other", "default"));
        assert!(visible(&v(&["*"]), &none, "other", "default"));
        // The mesh-wide default applies only when the resource says nothing.
        assert!(!visible(&none, &v(&["."]), "other", "default"));
        assert!(visible(&v(&["*"]), &v(&["."]), "other", "default"));
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn gateway_order_is_private_then_named_then_public() {
        let none = v(&[]);
        assert_eq!(gateway_rank(&v(&["."]), &none, "gw", "gw"), 0);
        assert_eq!(gateway_rank(&v(&["gw"]), &none, "gw", "gw"), 0);
        assert_eq!(gateway_rank(&v(&["gw"]), &none, "team", "gw"), 1);
        assert_eq!(gateway_rank(&none, &none, "gw", "gw"), 2);
    }
}
