//! Fixtures shared by the unit tests.

use crate::compile::{compile_json, RouteTable};
use serde_json::{json, Value};

/// A table of one VirtualService for `reviews` (namespace `default`) with the given `http` rules,
/// and a DestinationRule defining subsets v1 and v2; panics on any validation error.
pub(crate) fn reviews_table(http: Value, settings: Value) -> RouteTable {
    let cfg = json!({"settings": settings, "resources": [
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "reviews", "namespace": "default"},
         "spec": {"hosts": ["reviews"], "http": http}},
        {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
         "metadata": {"name": "reviews", "namespace": "default"},
         "spec": {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                                  {"name": "v2", "labels": {"version": "v2"}}]}},
    ]});
    let c = compile_json(cfg.to_string().as_bytes());
    assert!(!c.diagnostics.has_errors(), "{}", c.diagnostics);
    c.table.expect("table")
}
