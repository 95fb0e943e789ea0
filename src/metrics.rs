//! The metric-name contract between the filter (which defines the metrics) and everything that
//! reads them (`meshroute status`, `apply`'s wait, the generated `stats_tags`). Envoy shows a
//! metric the filter defines as `NAME` under `/stats` as `wasmcustom.NAME`
//! (docs/envoy-findings.md, question 6).

/// Counter: a configuration the filter accepted (once per VM: the main thread and each worker).
pub const CONFIG_LOADED: &str = "meshroute.config.loaded";
/// Counter: a configuration the filter refused (Envoy keeps the previous one).
pub const CONFIG_REJECTED: &str = "meshroute.config.rejected";
/// Gauge: the revision number (`settings.revision.number`) of the configuration last loaded.
pub const CONFIG_REVISION: &str = "meshroute.config.revision";
/// Prefix of the per-rule counters `meshroute.route.vs.<ns>/<name>.rule.<N>.dest.<cluster>`.
pub const ROUTE_PREFIX: &str = "meshroute.route.vs.";
/// The prefix Envoy puts before a Wasm-defined metric in `/stats`.
pub const ENVOY_PREFIX: &str = "wasmcustom.";

/// The name of a filter metric in Envoy's `/stats`.
pub fn envoy_stat(name: &str) -> String {
    format!("{ENVOY_PREFIX}{name}")
}

/// A per-rule counter name split back into (VirtualService, rule index, destination), the
/// inverse of `apply::route_metric_name` (with the prefix Envoy adds).
pub fn parse_route_stat(stat: &str) -> Option<(&str, usize, &str)> {
    let rest = stat.strip_prefix(ENVOY_PREFIX).unwrap_or(stat).strip_prefix(ROUTE_PREFIX)?;
    let (vs, rest) = rest.split_once(".rule.")?;
    let (rule, dest) = rest.split_once(".dest.")?;
    Some((vs, rule.parse().ok()?, dest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_stat_names_split_back_into_their_parts() {
        assert_eq!(
            parse_route_stat("wasmcustom.meshroute.route.vs.default/reviews.rule.0.dest.outbound|80|v1|reviews"),
            Some(("default/reviews", 0, "outbound|80|v1|reviews"))
        );
        assert_eq!(parse_route_stat("wasmcustom.meshroute.requests"), None);
        assert_eq!(parse_route_stat("meshroute.route.vs.a/b.rule.x.dest.c"), None);
    }
}
