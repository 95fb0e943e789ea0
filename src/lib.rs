//! meshroute: Istio traffic management decided in-process.
//!
//! The pipeline is `config` (JSON → typed resources) → `validate` (Istio's webhook and
//! `istioctl analyze` checks) → `compile` (an indexed route table) → `RouteTable::decide`
//! (what Istio would do with one request). Nothing here talks to a proxy: the Proxy-Wasm adapter
//! in `filters/` and the CLI are thin layers over this crate.

pub mod config;
pub mod crd;
pub mod diag;
pub mod duration;
#[cfg(feature = "envoy")]
pub mod envoy;
pub mod host;
pub mod k8s;
pub mod mesh_config;
pub mod metrics;
pub mod pem;
pub mod table;

pub use config::{load_json, load_value, Bundle, Resource, Settings, Spec};
pub use diag::{Diagnostic, Diagnostics, ResourceRef, Severity};
pub mod apply;
pub mod budget;
pub mod compile;
pub mod cors;
pub mod decide;
pub mod delegate;
pub mod destination_rules;
pub mod explain;
pub mod gateway_binding;
pub mod index;
pub mod labels;
pub mod lenient;
pub mod matcher;
pub mod mirror_breaker;
pub mod request;
pub mod validate;
pub mod visibility;

#[cfg(test)]
mod testutil;

pub use compile::{compile, compile_json, Compiled, RouteTable};
pub use decide::{Decision, Matched, Selection};
pub use explain::Explanation;
pub use request::{Random, Request, RequestRef, RequestView, SplitMix64};
pub use validate::validate;
