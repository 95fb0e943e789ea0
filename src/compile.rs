//! Compilation: validated resources → `RouteTable`, built once per configuration and only read
//! per request.

use crate::config::{Bundle, Resource, Settings};
use crate::crd;
use crate::diag::{Diagnostic, Diagnostics};
use crate::duration;
use crate::gateway_binding;
use crate::host;
use crate::index::{regex_literals, Key, PathIndex, RegexLiterals};
use crate::matcher::{MatchBlock, StrMatch};
use crate::request::PPM;
use crate::validate::{grpc_status_code, RETRY_ON_GRPC};
use crate::visibility;
use regex_lite::Regex;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

/// Istio's retry policy for routes that set none (istio `retry.DefaultPolicy`): 2 retries on
/// connect-failure, refused-stream, unavailable, cancelled and retriable-status-codes.
pub const DEFAULT_RETRY_ON: &str = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";
/// [`DEFAULT_RETRY_ON`] as [`RetryPolicy::from_retry_on`] splits it, with Istio's 2 attempts.
const DEFAULT_ATTEMPTS: u32 = 2;
const DEFAULT_HTTP_RETRY_ON: &str = "connect-failure,refused-stream,retriable-status-codes";
const DEFAULT_GRPC_RETRY_ON: &str = "unavailable,cancelled";

/// Everything `decide` needs, resolved ahead of time. It is also what the filter loads: the
/// CLI writes it as JSON (`crate::table`) and each VM only checks it and rebuilds the indexes
/// (the `serde(skip)` fields), so no VM parses, validates or compiles Istio resources.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTable {
    /// Read one piece at a time by `crate::table::sliced`, never by this derive (which would
    /// put a second copy of every deserializer below into the Wasm module).
    #[serde(default, skip_serializing_if = "Vec::is_empty", skip_deserializing)]
    pub virtual_services: Vec<CompiledVs>,
    /// (host as claimed, VirtualService) in claim order; the host indexes below are built from it.
    /// Like the registry and `clusters`, read an element at a time by `crate::table::sliced`.
    #[serde(default, skip_serializing_if = "Vec::is_empty", skip_deserializing)]
    pub(crate) host_claims: Vec<(String, usize)>,
    /// The proxy's namespace and the cluster domain: the other names of a claimed host.
    pub(crate) namespace: String,
    pub(crate) domain_suffix: String,
    /// Each domain's candidate VirtualServices in claim order; the first that has routes on the
    /// request's port serves it (istiod builds one route configuration per port, and a
    /// VirtualService without routes on a port is left out of it).
    #[serde(skip)]
    exact_hosts: HashMap<String, Vec<usize>>,
    /// (`.suffix`, candidates), longest suffix first: Envoy's domain search order.
    #[serde(skip)]
    wildcard_hosts: Vec<(String, Vec<usize>)>,
    #[serde(skip)]
    any_host: Vec<usize>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub registry_only: bool,
    /// Hosts the registry (ServiceEntry) knows, with the default route istiod gives a service
    /// that no VirtualService claims: its `outbound|port||host` cluster.
    #[serde(serialize_with = "crate::table::sorted_map", default, skip_deserializing)]
    pub(crate) registry_exact: HashMap<String, Vec<DefaultRoute>>,
    #[serde(default, skip_deserializing)]
    pub(crate) registry_wildcards: Vec<String>,
    pub default_port: u32,
    /// `settings.clusterTemplate`, for destinations whose port is the request's.
    pub cluster_template: String,
    pub routing_header: String,
    pub mirror_body_limit: u64,
    pub mirror_body_budget: u64,
    pub mirror_max_in_flight: u32,
    pub mirror_timeout_ms: u64,
    /// `settings.retryPolicyOnRoute`: Istio's default retry policy needs no hints.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retry_policy_on_route: bool,
    /// `settings.retryPolicyRoutes`: every retry policy has its own route (R221).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retry_policy_routes: bool,
    /// `settings.counterFlushMs`.
    pub counter_flush_ms: u64,
    /// `settings.revision` and whether responses carry it (`settings.revisionHeader`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<crate::config::Revision>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revision_header: bool,
    /// Every cluster a decision may name, for the CLI's Envoy config and for sanity checks.
    #[serde(default, skip_serializing_if = "Vec::is_empty", skip_deserializing)]
    pub clusters: Vec<ClusterRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterRef {
    pub name: String,
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    pub port: u32,
    /// Only mirrors send to it: the Envoy generator bounds its circuit breakers and connect
    /// timeout so a dead mirror cannot hold the primary's resources (docs/semantics.md R162).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mirror_only: bool,
    /// The retry policies (other than Istio's default) of the rules that route to it: the Envoy
    /// generator writes one route per policy, and per policy and consistent-hash cluster (R222).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub retry_policies: BTreeSet<RetryPolicy>,
}

/// istiod's route for a registry service without a VirtualService (`BuildDefaultHTTPOutboundRoute`):
/// the service's cluster, Istio's default retries, no timeout.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultRoute {
    pub host: String,
    pub port: u32,
    pub cluster: String,
    #[serde(default = "RetryPolicy::istio_default", skip_serializing_if = "RetryPolicy::is_istio_default")]
    pub retry: RetryPolicy,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompiledVs {
    /// `namespace/name`
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Both read one piece at a time by `crate::table::sliced` (see `RouteTable`).
    #[serde(default, skip_serializing_if = "Vec::is_empty", skip_deserializing)]
    pub rules: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", skip_deserializing)]
    pub entries: Vec<Entry>,
    #[serde(skip)]
    index: PathIndex,
    /// The ports some entry matches on; `None` when an entry matches every port.
    #[serde(skip)]
    ports: Option<Vec<u32>>,
}

/// One match block of one rule; entries are numbered in Istio's evaluation order.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub rule: usize,
    /// Position in the rule's `match` list; `None` for a rule without `match`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_index: Option<usize>,
    pub block: MatchBlock,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// `namespace/name` of the VirtualService that declares the rule (a gateway host can merge
    /// several).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub virtual_service: String,
    /// Position in `spec.http`.
    pub index: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub action: Action,
    /// Istio's default (most rules) is left out of the table text.
    #[serde(default = "RetryPolicy::istio_default", skip_serializing_if = "RetryPolicy::is_istio_default")]
    pub retry: RetryPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<Mirror>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Boxed, like `cors`: few rules have one, and every rule would pay its size inline.
    pub rewrite: Option<Box<Rewrite>>,
    #[serde(default, skip_serializing_if = "HeaderOps::is_empty")]
    pub request_headers: HeaderOps,
    #[serde(default, skip_serializing_if = "HeaderOps::is_empty")]
    pub response_headers: HeaderOps,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Box<Cors>>,
    /// For a rule a delegate brought into its root (R186): where it was written. `index` is
    /// then the position in the merged `spec.http`, as in istiod's merged VirtualService.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegated: Option<crate::delegate::Origin>,
    /// Position in `spec.http` as written (differs from `index` after a delegating rule).
    pub written_index: usize,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Action {
    Forward { destinations: Vec<Dest>, total_weight: u64 },
    Redirect(Redirect),
    DirectResponse { status: u32, body: Vec<u8> },
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dest {
    /// Position in the rule's `route` list (weight-0 entries are dropped, so it may skip).
    pub route_index: usize,
    /// The cluster; when `port_from_request`, the one on `settings.defaultPort` (what the
    /// Envoy generator declares) — per request use [`Dest::cluster_on`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster: String,
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    pub port: u32,
    /// Neither the destination nor the registry fixes the port: the request's port decides
    /// (istio `GetDestinationCluster` falls back to the listener port).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub port_from_request: bool,
    pub weight: u32,
    #[serde(default, skip_serializing_if = "HeaderOps::is_empty")]
    pub request_headers: HeaderOps,
    #[serde(default, skip_serializing_if = "HeaderOps::is_empty")]
    pub response_headers: HeaderOps,
}

/// A rule's retry policy, as istiod converts it (`RETRY ConvertPolicy`); `attempts == 0`
/// disables retries. Per request it is either router hints or, with `retryPolicyOnRoute`, the
/// route that the policy header names (R220).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    pub attempts: u32,
    /// HTTP conditions for `x-envoy-retry-on`.
    pub retry_on: String,
    /// gRPC conditions for `x-envoy-retry-grpc-on` (Envoy ignores them in `x-envoy-retry-on`).
    pub grpc_retry_on: String,
    /// For `x-envoy-retriable-status-codes`.
    pub retriable_status_codes: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retry_remote_localities: bool,
    /// `backoff` → the route's `retry_back_off.base_interval` (route configuration only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Duration>,
    /// `retryIgnorePreviousHosts` as written; unset means the `previous_hosts` predicate unless
    /// the rule has one destination and it hashes consistently (`RETRY newRetryPolicy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_hosts: Option<bool>,
    /// The rule has exactly one destination (istiod's `len(in.Route) == 1`): with a
    /// consistent-hash destination its default predicate is dropped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub single_destination: bool,
    /// Set when the VirtualService did not say (Istio's default applies).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_default: bool,
    /// For a rule with a destination that may hash consistently: every destination with weight
    /// (the one of a single-destination rule whatever its weight), whose hash policies istiod
    /// puts on the rule's route (R225). Such a rule gets a route of its own even with Istio's
    /// default policy. Empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hash_sources: Vec<HashSource>,
}

/// One destination of a rule, as istiod looks up the hash policy it adds for it to the rule's
/// route (`ROUTE processDestination`, `processWeightedDestination`, `HashForHTTPDestination`): the host as written (resolved, before any ExternalName alias), the
/// subset, and the port only when the destination names one (port-level settings count only then).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashSource {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
}

impl RetryPolicy {
    /// Whether the filter names this policy's route (R221): a policy of the VirtualService's own,
    /// or a rule's whose route carries its destinations' hash policies (R225).
    pub fn has_own_route(&self) -> bool {
        !self.is_default || !self.hash_sources.is_empty()
    }

    /// `from_retry_on(2, DEFAULT_RETRY_ON)`, spelled out: a table load fills it into every rule
    /// that leaves it out, so it is built from its parts rather than split and joined each time
    /// (a test keeps the two equal).
    pub fn istio_default() -> Self {
        RetryPolicy {
            attempts: DEFAULT_ATTEMPTS,
            retry_on: DEFAULT_HTTP_RETRY_ON.to_string(),
            grpc_retry_on: DEFAULT_GRPC_RETRY_ON.to_string(),
            is_default: true,
            ..RetryPolicy::disabled()
        }
    }

    /// What a table leaves out of its text (`serde(skip_serializing_if)` on [`Rule::retry`]);
    /// compared field by field so that writing a table builds no policy per rule.
    pub fn is_istio_default(&self) -> bool {
        let RetryPolicy {
            attempts,
            retry_on,
            grpc_retry_on,
            retriable_status_codes,
            per_try_timeout,
            retry_remote_localities,
            backoff,
            previous_hosts,
            single_destination,
            is_default,
            hash_sources,
        } = self;
        *attempts == DEFAULT_ATTEMPTS
            && retry_on == DEFAULT_HTTP_RETRY_ON
            && grpc_retry_on == DEFAULT_GRPC_RETRY_ON
            && retriable_status_codes.is_empty()
            && per_try_timeout.is_none()
            && !retry_remote_localities
            && backoff.is_none()
            && previous_hosts.is_none()
            && !single_destination
            && *is_default
            && hash_sources.is_empty()
    }

    pub fn disabled() -> Self {
        RetryPolicy {
            attempts: 0,
            retry_on: String::new(),
            grpc_retry_on: String::new(),
            retriable_status_codes: String::new(),
            per_try_timeout: None,
            retry_remote_localities: false,
            backoff: None,
            previous_hosts: None,
            single_destination: false,
            is_default: false,
            hash_sources: Vec::new(),
        }
    }

    /// The name of this policy's route (R221): what the filter writes in
    /// [`RETRY_POLICY_HEADER`] and the route configuration matches. Derived from the policy's
    /// content alone (FNV-1a 64 of its canonical form), so `compile`, `envoy` and the filter agree
    /// without sharing a table, and equal policies share one route.
    pub fn route_id(&self) -> String {
        let ms = |d: Option<Duration>| d.map_or(String::new(), |d| d.as_millis().to_string());
        let mut canonical = format!(
            "{}|{}|{}|{}|{}|{}|{}|{:?}|{}|{}",
            self.attempts,
            self.retry_on,
            self.grpc_retry_on,
            self.retriable_status_codes,
            ms(self.per_try_timeout),
            self.retry_remote_localities,
            ms(self.backoff),
            self.previous_hosts,
            self.single_destination,
            self.is_default
        );
        // Only when there are any, so that the ids of all other policies stay what they were.
        for h in &self.hash_sources {
            let port = h.port.map_or(String::new(), |p| p.to_string());
            canonical.push_str(&format!("|{}/{}/{port}", h.host, h.subset.as_deref().unwrap_or_default()));
        }
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in canonical.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("r{h:016x}")
    }

    /// Splits Istio's `retryOn` the way istiod `parseRetryOn` does: numbers are status codes
    /// (and imply `retriable-status-codes`); gRPC names go to their own header.
    fn from_retry_on(attempts: u32, retry_on: &str) -> Self {
        let mut http = Vec::new();
        let mut grpc = Vec::new();
        let mut codes = Vec::new();
        for token in retry_on.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if token.parse::<u16>().is_ok() {
                codes.push(token);
            } else if RETRY_ON_GRPC.contains(&token) {
                grpc.push(token);
            } else if !http.contains(&token) {
                http.push(token);
            }
        }
        if !codes.is_empty() && !http.contains(&"retriable-status-codes") {
            http.push("retriable-status-codes");
        }
        RetryPolicy {
            attempts,
            retry_on: http.join(","),
            grpc_retry_on: grpc.join(","),
            retriable_status_codes: codes.join(","),
            per_try_timeout: None,
            retry_remote_localities: false,
            backoff: None,
            previous_hosts: None,
            single_destination: false,
            is_default: false,
            hash_sources: Vec::new(),
        }
    }
}

/// The filter-owned request header naming a rule's retry policy route (R221). The filter
/// overwrites or removes it on every request, so a client never picks its retry policy.
pub const RETRY_POLICY_HEADER: &str = "x-meshroute-retry-policy";

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<(Duration, u32)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<(Abort, u32)>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Abort {
    Http(u32),
    /// gRPC status code; sent as HTTP 200 with `grpc-status`, as Envoy's fault filter does.
    Grpc(u32),
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster: String,
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    pub port: u32,
    /// As [`Dest::port_from_request`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub port_from_request: bool,
    pub ppm: u32,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub derive_port_from_request: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    pub code: u32,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(with = "crate::table::regex_rewrite")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_regex: Option<(Regex, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderOps {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

pub use crate::cors::Cors;

/// The outcome of compiling a bundle: the table when no error was found, and every diagnostic.
pub struct Compiled {
    pub table: Option<RouteTable>,
    pub diagnostics: Diagnostics,
}

/// Validates, then compiles. Any error refuses the whole configuration (an atomic apply), so a
/// broken change never half-applies.
pub fn compile(bundle: &Bundle, mut diagnostics: Diagnostics) -> Compiled {
    diagnostics.append(crate::validate::validate(bundle));
    if diagnostics.has_errors() {
        return Compiled { table: None, diagnostics };
    }
    let table = RouteTable::build(bundle, &mut diagnostics);
    let table = (!diagnostics.has_errors()).then_some(table);
    Compiled { table, diagnostics }
}

/// Load JSON, validate and compile in one step; errors and warnings both come back.
pub fn compile_json(text: &[u8]) -> Compiled {
    let (bundle, diags) = crate::config::load_json(text);
    compile(&bundle, diags)
}

struct Ctx<'a> {
    settings: &'a Settings,
    /// The ports of each registry host (Kubernetes Services and ServiceEntries), for
    /// destinations that name none.
    service_ports: HashMap<String, Vec<u32>>,
    /// ExternalName Services: alias FQDN → `externalName` (K14).
    aliases: HashMap<String, String>,
    clusters: BTreeMap<String, ClusterRef>,
    /// Hosts of the DestinationRules that hash consistently somewhere (R225).
    hashing: HashingHosts,
    diags: &'a mut Diagnostics,
    origins: &'a HashMap<(usize, usize), crate::delegate::Origin>,
    written: &'a HashMap<(usize, usize), usize>,
}

impl RouteTable {
    /// Builds the table without validating; problems it cannot compile around are pushed to
    /// `diags`. Use [`compile`] unless the bundle was validated already.
    pub fn build(bundle: &Bundle, diags: &mut Diagnostics) -> RouteTable {
        // Delegates merged into their roots first, as istiod does before reading any route.
        let merged = crate::delegate::merge(bundle);
        let bundle = merged.bundle.as_ref().unwrap_or(bundle);
        let settings = &bundle.settings;
        let mut service_ports: HashMap<String, Vec<u32>> = HashMap::new();
        let se_visible = |res: &Resource, se: &crd::ServiceEntry| {
            visibility::visible(&se.export_to, &settings.default_service_export_to, &res.namespace, &settings.namespace)
        };
        // Kubernetes Services and ServiceEntries declaring one host merge their ports, the
        // Service's first (istiod's registries: Kubernetes before ServiceEntries).
        for svc in &bundle.registry.services {
            service_ports
                .entry(svc.host(&settings.domain_suffix))
                .or_default()
                .extend(svc.ports.iter().map(|p| p.port));
        }
        for (_, se) in bundle.service_entries().filter(|(r, se)| se_visible(r, se)) {
            for h in &se.hosts {
                service_ports.entry(h.to_ascii_lowercase()).or_default().extend(se.ports.iter().map(|p| p.number));
            }
        }
        for ports in service_ports.values_mut() {
            ports.sort_unstable();
            ports.dedup();
        }
        let sidecar = applicable_sidecar(bundle);
        let mut registry_exact: HashMap<String, Vec<DefaultRoute>> = HashMap::new();
        let mut registry_wildcards = Vec::new();
        let aliases = bundle.registry.aliases(&settings.domain_suffix);
        for svc in &bundle.registry.services {
            let h = svc.host(&settings.domain_suffix);
            // An ExternalName Service has no route of its own (K14); see `add_alias_routes`.
            if aliases.contains_key(&h)
                || !sidecar.is_none_or(|(sres, s)| sidecar_imports(s, &sres.namespace, &svc.namespace, &h))
            {
                continue;
            }
            add_default_routes(&mut registry_exact, settings, &h, svc.ports.iter().map(|p| p.port));
        }
        for (res, se) in bundle.service_entries().filter(|(r, se)| se_visible(r, se)) {
            for h in &se.hosts {
                let h = h.to_ascii_lowercase();
                if !sidecar.is_none_or(|(sres, s)| sidecar_imports(s, &sres.namespace, &res.namespace, &h)) {
                    continue;
                }
                if let Some(suffix) = h.strip_prefix('*') {
                    registry_wildcards.push(suffix.to_string());
                    continue;
                }
                add_default_routes(&mut registry_exact, settings, &h, se.ports.iter().map(|p| p.number));
            }
        }
        add_alias_routes(&mut registry_exact, settings, &aliases);
        let mode = settings
            .outbound_traffic_policy
            .clone()
            .or_else(|| sidecar.and_then(|(_, s)| s.outbound_traffic_policy.as_ref()?.mode.clone()));
        let registry_only = mode.as_deref() == Some("REGISTRY_ONLY");

        let mut ctx = Ctx {
            settings,
            service_ports,
            aliases,
            clusters: BTreeMap::new(),
            hashing: HashingHosts::new(bundle),
            diags,
            origins: &merged.origins,
            written: &merged.written,
        };
        ctx.hash_default_routes(&mut registry_exact);
        let mut table = RouteTable {
            virtual_services: Vec::new(),
            host_claims: Vec::new(),
            namespace: settings.namespace.clone(),
            domain_suffix: settings.domain_suffix.clone(),
            exact_hosts: HashMap::new(),
            wildcard_hosts: Vec::new(),
            any_host: Vec::new(),
            registry_only,
            registry_exact,
            registry_wildcards,
            default_port: settings.default_port,
            cluster_template: settings.cluster_template.clone(),
            routing_header: settings.routing_header.clone(),
            mirror_body_limit: settings.mirror_body_limit,
            mirror_body_budget: settings.mirror_body_budget,
            mirror_max_in_flight: settings.mirror_max_in_flight,
            mirror_timeout_ms: settings.mirror_timeout_ms,
            retry_policy_on_route: settings.retry_policy_on_route,
            retry_policy_routes: settings.retry_policy_on_route && settings.retry_policy_routes,
            counter_flush_ms: settings.counter_flush_ms,
            revision: settings.revision.clone(),
            revision_header: settings.revision_header,
            clusters: Vec::new(),
        };
        let is_gateway = settings.gateway != "mesh";
        let server_hosts = if is_gateway { gateway_binding::server_hosts(bundle, &settings.gateway) } else { None };
        let mut bound: Vec<(&Resource, &crd::VirtualService)> = bundle
            .virtual_services()
            .filter(|(res, vs)| {
                visibility::visible(
                    &vs.export_to,
                    &settings.default_virtual_service_export_to,
                    &res.namespace,
                    &settings.namespace,
                )
            })
            .collect();
        if is_gateway {
            // Stable: input order within each rank.
            bound.sort_by_key(|(res, vs)| {
                visibility::gateway_rank(
                    &vs.export_to,
                    &settings.default_virtual_service_export_to,
                    &res.namespace,
                    &settings.namespace,
                )
            });
        }
        // (domain, vs) in claim order.
        let mut claims: Vec<(String, usize)> = Vec::new();
        for (res, vs) in bound {
            let gateways = vs_gateways(&vs.gateways, &res.namespace);
            let applies_to_proxy = gateways.contains(&settings.gateway);
            let mut hosts: Vec<String> = vs
                .hosts
                .iter()
                .map(|h| host::resolve(h, &res.namespace, &settings.domain_suffix))
                .filter(|h| sidecar.is_none_or(|(sres, s)| sidecar_imports(s, &sres.namespace, &res.namespace, h)))
                .collect();
            if let Some(servers) = &server_hosts {
                hosts = gateway_binding::bound_hosts(servers, &res.namespace, &hosts);
            }
            // A match-level `gateways` can select this proxy even when the top level does not.
            let any_match_selects = vs
                .http
                .iter()
                .flat_map(|r| &r.matches)
                .any(|m| m.gateways.iter().any(|g| host::resolve_gateway(g, &res.namespace) == settings.gateway));
            if hosts.is_empty() || !(applies_to_proxy || any_match_selects) {
                continue;
            }
            let compiled = compile_vs(&mut ctx, res, vs, &gateways, &hosts);
            // istiod leaves out a VirtualService that yields no route for this proxy, so its
            // hosts keep their default route (`ROUTE buildSidecarVirtualHostsForVirtualService`).
            if compiled.entries.is_empty() {
                continue;
            }
            let id = table.virtual_services.len();
            claims.extend(hosts.iter().map(|h| (h.clone(), id)));
            table.virtual_services.push(compiled);
        }
        if is_gateway {
            // Gateways merge the VirtualServices of one host into one virtual host.
            let mut by_host: Vec<(String, Vec<usize>)> = Vec::new();
            let mut at: HashMap<String, usize> = HashMap::new();
            for (h, id) in claims {
                let slot = *at.entry(h.clone()).or_insert_with(|| {
                    by_host.push((h, Vec::new()));
                    by_host.len() - 1
                });
                if let Some((_, ids)) = by_host.get_mut(slot) {
                    ids.push(id);
                }
            }
            let mut merged: HashMap<Vec<usize>, usize> = HashMap::new();
            for (h, ids) in by_host {
                let id = match ids.as_slice() {
                    [only] => *only,
                    _ => match merged.get(&ids) {
                        Some(id) => *id,
                        None => {
                            let parts: Vec<&CompiledVs> =
                                ids.iter().filter_map(|i| table.virtual_services.get(*i)).collect();
                            let vs = merge_gateway_vs(&parts);
                            table.virtual_services.push(vs);
                            merged.insert(ids, table.virtual_services.len() - 1);
                            table.virtual_services.len() - 1
                        }
                    },
                };
                table.host_claims.push((h, id));
            }
        } else {
            table.host_claims = claims;
        }
        table.index_hosts();
        table.clusters = ctx.clusters.into_values().collect();
        table
    }

    /// The host indexes, from `host_claims` alone: what `build` makes and what a loaded table
    /// (`crate::table`) rebuilds, by the same code.
    pub(crate) fn index_hosts(&mut self) {
        self.start_host_index();
        for i in 0..self.host_claims.len() {
            self.index_host_claim(i);
        }
        self.finish_host_index();
    }

    /// [`index_hosts`](Self::index_hosts) a claim at a time, so a table can be loaded in
    /// slices (`crate::table::sliced`): empty indexes first, then each claim, then the merge.
    pub(crate) fn start_host_index(&mut self) {
        self.exact_hosts = HashMap::with_capacity(self.host_claims.len());
        self.wildcard_hosts = Vec::new();
        self.any_host = Vec::new();
    }

    pub(crate) fn index_host_claim(&mut self, i: usize) {
        let claims = std::mem::take(&mut self.host_claims);
        if let Some((h, id)) = claims.get(i) {
            self.add_host(h, *id);
        }
        self.host_claims = claims;
    }

    pub(crate) fn finish_host_index(&mut self) {
        // Repeated wildcard suffixes merge their claimants, in claim order (linear: one pass).
        let mut at: HashMap<String, usize> = HashMap::new();
        let mut merged_wild: Vec<(String, Vec<usize>)> = Vec::new();
        for (suffix, ids) in std::mem::take(&mut self.wildcard_hosts) {
            match at.get(&suffix) {
                Some(&i) => {
                    if let Some((_, existing)) = merged_wild.get_mut(i) {
                        for id in ids {
                            if !existing.contains(&id) {
                                existing.push(id);
                            }
                        }
                    }
                }
                None => {
                    at.insert(suffix.clone(), merged_wild.len());
                    merged_wild.push((suffix, ids));
                }
            }
        }
        self.wildcard_hosts = merged_wild;
        self.wildcard_hosts.sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
    }

    fn add_host(&mut self, h: &str, id: usize) {
        let push = |ids: &mut Vec<usize>| {
            if !ids.contains(&id) {
                ids.push(id);
            }
        };
        if h == "*" {
            push(&mut self.any_host);
        } else if let Some(suffix) = h.strip_prefix('*') {
            // Repeats are merged once all are in (`build`), so many wildcard hosts stay linear.
            self.wildcard_hosts.push((suffix.to_string(), vec![id]));
        } else {
            for name in host::alt_names(h, &self.namespace, &self.domain_suffix) {
                // Sidecars do not merge hosts: the first VirtualService to claim one keeps it.
                push(self.exact_hosts.entry(name).or_default());
            }
        }
    }

    /// The VirtualService serving a request host (port stripped, case-insensitive), whatever
    /// the port.
    pub fn find_vs(&self, authority: &str) -> Option<&CompiledVs> {
        self.candidates(authority).first().and_then(|id| self.virtual_services.get(*id))
    }

    /// The VirtualService serving a request host on `port`: the first claimant with a route on
    /// that port.
    pub fn find_vs_on(&self, authority: &str, port: u32) -> Option<&CompiledVs> {
        self.candidates(authority)
            .iter()
            .filter_map(|id| self.virtual_services.get(*id))
            .find(|vs| vs.ports.as_ref().is_none_or(|ps| ps.contains(&port)))
    }

    fn candidates(&self, authority: &str) -> &[usize] {
        let h = host::request_host(authority);
        let h = h.as_ref();
        if let Some(ids) = self.exact_hosts.get(h) {
            return ids;
        }
        self.wildcard_hosts
            .iter()
            .find(|(suffix, _)| h.len() > suffix.len() && h.ends_with(suffix.as_str()))
            .map_or(self.any_host.as_slice(), |(_, ids)| ids.as_slice())
    }

    /// Is the host known to the registry (for REGISTRY_ONLY)?
    pub fn in_registry(&self, authority: &str) -> bool {
        let h = host::request_host(authority);
        self.registry_exact.contains_key(h.as_ref())
            || self.registry_wildcards.iter().any(|s| h.len() > s.len() && h.ends_with(s.as_str()))
    }

    /// The default route of a registry service on the port addressed (or its only port).
    pub fn default_route(&self, authority: &str, port: u32) -> Option<&DefaultRoute> {
        let routes = self.registry_exact.get(host::request_host(authority).as_ref())?;
        routes.iter().find(|r| r.port == port).or(match routes.as_slice() {
            [only] => Some(only),
            _ => None,
        })
    }
}

impl CompiledVs {
    /// A VirtualService's compiled routes with their index, built from the entries alone (so a
    /// loaded table indexes exactly as `build` did).
    pub(crate) fn new(name: String, hosts: Vec<String>, rules: Vec<Rule>, entries: Vec<Entry>) -> CompiledVs {
        let mut vs = CompiledVs { name, hosts, rules, entries, index: PathIndex::default(), ports: None };
        vs.reindex();
        vs
    }

    pub(crate) fn reindex(&mut self) {
        let mut index = PathIndex::default();
        for (i, e) in self.entries.iter().enumerate() {
            index_entry(&mut index, i, e);
        }
        self.index = index;
        self.finish_index();
    }

    /// Appends the next entry (in Istio order) and indexes it: [`reindex`](Self::reindex) one
    /// entry at a time, so a table can be loaded in slices (`crate::table::sliced`).
    pub(crate) fn push_entry(&mut self, e: Entry) {
        index_entry(&mut self.index, self.entries.len(), &e);
        self.entries.push(e);
    }

    /// Once every entry is in.
    pub(crate) fn finish_index(&mut self) {
        self.index.shrink_to_fit();
        self.ports = entry_ports(&self.entries);
    }

    /// The first entry that matches, in Istio order.
    pub fn first_match(&self, req: &dyn crate::request::RequestView, port: u32) -> Option<&Entry> {
        let path = crate::matcher::path_only(req.path());
        let e = self.index.first_match(
            path,
            |name| req.header(name),
            |e| self.entries.get(e as usize).is_some_and(|en| en.block.matches(req, port)),
        )?;
        self.entries.get(e as usize)
    }
}

/// Default `[mesh]`; names resolved like istiod.
fn vs_gateways(gws: &[String], ns: &str) -> Vec<String> {
    if gws.is_empty() {
        vec!["mesh".into()]
    } else {
        gws.iter().map(|g| host::resolve_gateway(g, ns)).collect()
    }
}

/// The Sidecar that configures this proxy: one in its namespace whose selector matches its
/// labels, else the namespace-wide one, else a selector-less one in the root namespace.
pub fn applicable_sidecar(bundle: &Bundle) -> Option<(&Resource, &crd::Sidecar)> {
    let s = &bundle.settings;
    let selects = |sc: &crd::Sidecar| {
        sc.workload_selector
            .as_ref()
            .is_some_and(|sel| sel.match_labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
    };
    let mut sidecars: Vec<_> = bundle.sidecars().collect();
    sidecars.sort_by_key(|(r, _)| r.index);
    sidecars
        .iter()
        .find(|(r, sc)| r.namespace == s.namespace && selects(sc))
        .or_else(|| sidecars.iter().find(|(r, sc)| r.namespace == s.namespace && sc.workload_selector.is_none()))
        .or_else(|| sidecars.iter().find(|(r, sc)| r.namespace == "istio-system" && sc.workload_selector.is_none()))
        .copied()
}

/// Sidecar egress `hosts` are `namespace/dnsName`; `*` any namespace, `.` the Sidecar's own,
/// `~` none (istio sidecar.proto `IstioEgressListener.hosts`).
pub fn sidecar_imports(sc: &crd::Sidecar, sidecar_ns: &str, config_ns: &str, h: &str) -> bool {
    if sc.egress.is_empty() {
        return true;
    }
    sc.egress.iter().flat_map(|e| &e.hosts).any(|entry| {
        let (ns, dns) = entry.split_once('/').unwrap_or(("*", entry.as_str()));
        let ns_ok = match ns {
            "*" => true,
            "." => config_ns == sidecar_ns,
            "~" => false,
            other => other == config_ns,
        };
        ns_ok && (dns == "*" || host::matches(dns, h))
    })
}

fn compile_vs(
    ctx: &mut Ctx<'_>,
    res: &Resource,
    vs: &crd::VirtualService,
    gateways: &[String],
    hosts: &[String],
) -> CompiledVs {
    let settings = ctx.settings;
    // Sized up front and trimmed at the end: doubling growth would leave up to half of each
    // list unused (and, in a Wasm VM whose memory never shrinks, the peak of each regrowth).
    let mut rules = Vec::with_capacity(vs.http.len());
    let mut entries = Vec::with_capacity(vs.http.iter().map(|r| r.matches.len().max(1)).sum());
    let mut catch_all_seen = false;
    for (ri, route) in vs.http.iter().enumerate() {
        if catch_all_seen {
            break;
        }
        let path = format!("spec.http[{ri}]");
        let Some(rule) = compile_rule(ctx, res, route, ri, &path) else { continue };
        let rule_id = rules.len();
        let blocks: Vec<(Option<usize>, &crd::HttpMatchRequest)> = if route.matches.is_empty() {
            Vec::new()
        } else {
            route.matches.iter().enumerate().map(|(i, m)| (Some(i), m)).collect()
        };
        let mut added = 0;
        if blocks.is_empty() {
            // istiod stops at a rule without `match` even when it emitted nothing for this proxy.
            catch_all_seen = true;
            if gateways.contains(&settings.gateway) {
                entries.push(Entry { rule: rule_id, match_index: None, block: MatchBlock::default() });
                added += 1;
            }
        } else {
            for (mi, m) in blocks {
                if !selects_proxy(m, gateways, &res.namespace, settings) {
                    continue;
                }
                let Some(block) = compile_block(ctx, res, m, &format!("{path}.match[{mi}]", mi = mi.unwrap_or(0)))
                else {
                    continue;
                };
                if block.is_catch_all() {
                    catch_all_seen = true;
                }
                entries.push(Entry { rule: rule_id, match_index: mi, block });
                added += 1;
                if catch_all_seen {
                    break;
                }
            }
        }
        if added > 0 {
            rules.push(rule);
        }
    }
    rules.shrink_to_fit();
    entries.shrink_to_fit();
    CompiledVs::new(res.key(), hosts.to_vec(), rules, entries)
}

fn entry_ports(entries: &[Entry]) -> Option<Vec<u32>> {
    let mut ports = Vec::new();
    for e in entries {
        match e.block.port {
            None => return None,
            Some(p) if !ports.contains(&p) => ports.push(p),
            Some(_) => {}
        }
    }
    Some(ports)
}

/// One gateway virtual host from several VirtualServices: their routes in order, the
/// catch-all routes moved to the end (`GW buildGatewayHTTPRouteConfig` appends each
/// VirtualService's routes, `ROUTE SortVHostRoutes` then moves catch-alls last).
fn merge_gateway_vs(parts: &[&CompiledVs]) -> CompiledVs {
    let mut rules = Vec::new();
    let mut specific = Vec::new();
    let mut catch_all = Vec::new();
    for vs in parts {
        let base = rules.len();
        rules.extend(vs.rules.iter().cloned());
        for e in &vs.entries {
            let e = Entry { rule: e.rule + base, match_index: e.match_index, block: e.block.clone() };
            if e.block.is_catch_all() {
                catch_all.push(e);
            } else {
                specific.push(e);
            }
        }
    }
    let entries: Vec<Entry> = specific.into_iter().chain(catch_all).collect();
    let mut hosts: Vec<String> = Vec::new();
    for h in parts.iter().flat_map(|vs| &vs.hosts) {
        if !hosts.contains(h) {
            hosts.push(h.clone());
        }
    }
    let name = parts.iter().map(|vs| vs.name.as_str()).collect::<Vec<_>>().join(" + ");
    CompiledVs::new(name, hosts, rules, entries)
}

/// Config-time selectors (istiod `sourceMatchHTTP`): a match-level `gateways` list replaces the
/// VirtualService's; `sourceLabels`/`sourceNamespace` must describe this proxy.
fn selects_proxy(m: &crd::HttpMatchRequest, vs_gateways: &[String], ns: &str, s: &Settings) -> bool {
    if !m.gateways.is_empty() {
        return m.gateways.iter().any(|g| host::resolve_gateway(g, ns) == s.gateway);
    }
    if !vs_gateways.contains(&s.gateway) {
        return false;
    }
    if !m.source_labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)) {
        return false;
    }
    m.source_namespace.as_ref().is_none_or(|sn| *sn == s.namespace)
}

/// The keys a block is filed under: any one of them fitting the request is necessary for the
/// block to match (several for a regex with alternative literals).
fn index_entry(index: &mut PathIndex, i: usize, e: &Entry) {
    for key in index_keys(&e.block) {
        index.add(i as u32, key);
    }
}

fn index_keys(b: &MatchBlock) -> Vec<Key> {
    match &b.uri {
        Some(StrMatch::Exact(p)) => return vec![Key::UriExact { path: p.clone(), ignore_case: b.ignore_uri_case }],
        Some(StrMatch::Prefix(p)) if !p.is_empty() => {
            return vec![Key::UriPrefix { prefix: p.clone(), ignore_case: b.ignore_uri_case }]
        }
        // Regexes ignore `ignoreUriCase` (as in Envoy), so their keys are case-sensitive.
        Some(StrMatch::Regex(r)) => {
            let pattern = r.as_str().strip_prefix("^(?:").and_then(|s| s.strip_suffix(")$")).unwrap_or("");
            match regex_literals(pattern) {
                Some(RegexLiterals::Prefixes(ps)) => {
                    return ps.into_iter().map(|prefix| Key::UriPrefix { prefix, ignore_case: false }).collect()
                }
                Some(RegexLiterals::Suffixes(ss)) => {
                    return ss.into_iter().map(|suffix| Key::UriSuffix { suffix }).collect()
                }
                None => {}
            }
        }
        _ => {}
    }
    for (name, m) in &b.headers {
        if let StrMatch::Exact(v) = m {
            return vec![Key::Header { name: name.clone(), value: v.clone() }];
        }
    }
    vec![Key::Rest]
}

fn compile_block(ctx: &mut Ctx<'_>, res: &Resource, m: &crd::HttpMatchRequest, path: &str) -> Option<MatchBlock> {
    let mut ok = true;
    let mut one = |field: &str, sm: &Option<crd::StringMatch>, allow_present: bool| -> Option<StrMatch> {
        let sm = sm.as_ref()?;
        match StrMatch::compile(sm, allow_present) {
            Ok(c) => Some(c),
            Err(e) => {
                ctx.diags.push(Diagnostic::error(Some(res.reference()), format!("{path}.{field}"), e));
                ok = false;
                None
            }
        }
    };
    let uri = one("uri", &m.uri, false);
    let scheme = one("scheme", &m.scheme, false);
    let method = one("method", &m.method, false);
    let authority = one("authority", &m.authority, false);
    let mut map = |field: &str, src: &BTreeMap<String, crd::StringMatch>| -> Vec<(String, StrMatch)> {
        let mut out = Vec::new();
        for (k, sm) in src {
            match StrMatch::compile(sm, true) {
                Ok(c) => out.push((if field == "queryParams" { k.clone() } else { k.to_ascii_lowercase() }, c)),
                Err(e) => {
                    ctx.diags.push(Diagnostic::error(Some(res.reference()), format!("{path}.{field}.{k}"), e));
                    ok = false;
                }
            }
        }
        out
    };
    // Istio ignores header keys that name pseudo-headers' match fields (`uri`, `scheme`, ...).
    let headers: BTreeMap<String, crd::StringMatch> = m
        .headers
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "uri" | "scheme" | "method" | "authority"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let headers = map("headers", &headers);
    let without_headers = map("withoutHeaders", &m.without_headers);
    let query_params = map("queryParams", &m.query_params);
    ok.then(|| MatchBlock {
        name: m.name.clone(),
        uri,
        ignore_uri_case: m.ignore_uri_case,
        scheme,
        method,
        authority,
        headers,
        without_headers,
        query_params,
        port: m.port.filter(|p| *p != 0),
    })
}

fn compile_rule(ctx: &mut Ctx<'_>, res: &Resource, r: &crd::HttpRoute, index: usize, path: &str) -> Option<Rule> {
    if r.delegate.is_some() {
        // Reported by validation; a delegating rule routes nothing here.
        return None;
    }
    let mut hash_sources = Vec::new();
    let action = if let Some(rd) = &r.redirect {
        Action::Redirect(Redirect {
            uri: rd.uri.clone(),
            authority: rd.authority.clone(),
            port: rd.port.filter(|p| *p != 0),
            derive_port_from_request: rd.derive_port.as_deref() == Some("FROM_REQUEST_PORT"),
            scheme: rd.scheme.clone(),
            code: rd.redirect_code.filter(|c| *c != 0).unwrap_or(301),
        })
    } else if let Some(dr) = &r.direct_response {
        let body = match &dr.body {
            Some(crd::HttpBody { string: Some(s), .. }) => s.clone().into_bytes(),
            Some(crd::HttpBody { bytes: Some(b), .. }) => match base64_decode(b) {
                Some(b) => b,
                None => {
                    ctx.diags.push(Diagnostic::error(
                        Some(res.reference()),
                        format!("{path}.directResponse.body.bytes"),
                        "not valid base64",
                    ));
                    return None;
                }
            },
            _ => Vec::new(),
        };
        Action::DirectResponse { status: dr.status, body }
    } else {
        let single = r.route.len() == 1;
        let mut destinations = Vec::new();
        for (route_index, d) in r.route.iter().enumerate() {
            let Some(dest) = &d.destination else { continue };
            // One destination takes all traffic whatever its weight; otherwise weight 0 (or
            // unset) never receives any (istio `applyHTTPRouteDestination`).
            let weight = if single { 1 } else { u32::try_from(d.weight.unwrap_or(0)).unwrap_or(0) };
            if weight == 0 {
                continue;
            }
            hash_sources.push(HashSource {
                host: host::resolve(&dest.host, &res.namespace, &ctx.settings.domain_suffix),
                subset: dest.subset.clone().filter(|s| !s.is_empty()),
                port: dest.port.as_ref().map(|p| p.number).filter(|p| *p != 0),
            });
            let (cluster, host, port, port_from_request) = ctx.cluster_for(dest, &res.namespace, false);
            let (rq, rs) = header_ops(d.headers.as_ref());
            destinations.push(Dest {
                route_index,
                cluster,
                host,
                subset: dest.subset.clone().filter(|s| !s.is_empty()),
                port,
                port_from_request,
                weight,
                request_headers: rq,
                response_headers: rs,
            });
        }
        let total_weight = destinations.iter().map(|d| u64::from(d.weight)).sum();
        Action::Forward { destinations, total_weight }
    };
    let mut retry = match &r.retries {
        None => RetryPolicy::istio_default(),
        Some(rt) if rt.attempts <= 0 => RetryPolicy::disabled(),
        Some(rt) => {
            let attempts = u32::try_from(rt.attempts).unwrap_or(u32::MAX);
            let mut p = RetryPolicy::from_retry_on(attempts, rt.retry_on.as_deref().unwrap_or(DEFAULT_RETRY_ON));
            p.per_try_timeout = rt.per_try_timeout.as_deref().and_then(|d| duration::parse(d).ok());
            p.retry_remote_localities = rt.retry_remote_localities.unwrap_or(false);
            p.backoff = rt.backoff.as_deref().and_then(|d| duration::parse(d).ok()).filter(|d| !d.is_zero());
            p.previous_hosts = rt.retry_ignore_previous_hosts;
            p.single_destination = r.route.len() == 1;
            p
        }
    };
    if hash_sources.iter().any(|h| ctx.hashing.may_hash(&h.host)) {
        // istiod's `consistentHash` for the retry policy needs `len(in.Route) == 1` also for
        // Istio's default policy, whose route this rule now names.
        retry.single_destination = r.route.len() == 1;
        retry.hash_sources = hash_sources;
    }
    // The clusters this rule sends to carry its policy, so `meshroute envoy` writes its route.
    if let Action::Forward { destinations, .. } = &action {
        if retry.has_own_route() {
            for d in destinations {
                ctx.attach_policy(d, &retry);
            }
        }
    }
    let timeout = r.timeout.as_deref().and_then(|t| duration::parse(t).ok()).filter(|d| !d.is_zero());
    let fault = r.fault.as_ref().map(|f| Fault {
        delay: f.delay.as_ref().and_then(|d| {
            let dur = duration::parse(d.fixed_delay.as_deref()?).ok()?;
            Some((dur, ppm(d.percentage.as_ref(), d.percent.map(|p| p.clamp(0, 100) as f64))))
        }),
        abort: f.abort.as_ref().and_then(|a| {
            let abort = match (&a.http_status, &a.grpc_status) {
                (Some(s), _) => Abort::Http(u32::try_from(*s).ok()?),
                (None, Some(g)) => Abort::Grpc(grpc_status_code(g)?),
                _ => return None,
            };
            Some((abort, ppm(a.percentage.as_ref(), None)))
        }),
    });
    let mut mirrors = Vec::new();
    if let Some(m) = &r.mirror {
        let pct = match (&r.mirror_percentage, r.mirror_percent) {
            (Some(p), _) => percent_to_ppm(p.value),
            (None, Some(p)) => percent_to_ppm(f64::from(p)),
            (None, None) => PPM,
        };
        if pct > 0 {
            mirrors.push(ctx.mirror(m, &res.namespace, pct));
        }
    }
    for mp in &r.mirrors {
        let Some(d) = &mp.destination else { continue };
        let pct = mp.percentage.as_ref().map_or(PPM, |p| percent_to_ppm(p.value));
        if pct > 0 {
            mirrors.push(ctx.mirror(d, &res.namespace, pct));
        }
    }
    let (mut request_headers, response_headers) = header_ops(r.headers.as_ref());
    let mut rewrite = r.rewrite.as_ref().map(|rw| {
        Box::new(Rewrite {
            uri: rw.uri.clone(),
            uri_regex: rw
                .uri_regex_rewrite
                .as_ref()
                .and_then(|rr| Some((Regex::new(&rr.pattern).ok()?, envoy_to_regex_lite_template(&rr.rewrite)))),
            authority: rw.authority.clone(),
        })
    });
    // istiod turns a `:authority`/`host` header set (or add) into a host rewrite.
    let authority_op = take_authority(&mut request_headers);
    if let Some(a) = authority_op {
        let rw = rewrite.get_or_insert_with(|| Box::new(Rewrite { uri: None, uri_regex: None, authority: None }));
        rw.authority.get_or_insert(a);
    }
    let cors = r.cors_policy.as_ref().map(|c| Box::new(Cors::from_crd(c)));
    Some(Rule {
        virtual_service: res.key(),
        index,
        name: r.name.clone(),
        action,
        retry,
        timeout,
        fault,
        mirrors,
        rewrite,
        request_headers,
        response_headers,
        cors,
        delegated: ctx.origins.get(&(res.index, index)).cloned(),
        written_index: ctx.written.get(&(res.index, index)).copied().unwrap_or(index),
    })
}

/// istiod's default route for each port of a registry host (a Kubernetes Service or a
/// ServiceEntry host), filed under every name a proxy may use for the host.
fn add_default_routes(
    registry_exact: &mut HashMap<String, Vec<DefaultRoute>>,
    settings: &Settings,
    host: &str,
    ports: impl Iterator<Item = u32>,
) {
    let routes: Vec<DefaultRoute> = ports
        .map(|port| DefaultRoute {
            host: host.to_string(),
            port,
            cluster: cluster_name(&settings.cluster_template, port, None, host),
            retry: RetryPolicy::istio_default(),
        })
        .collect();
    for name in host::alt_names(host, &settings.namespace, &settings.domain_suffix) {
        registry_exact.entry(name).or_default().extend(routes.iter().cloned());
    }
}

/// istiod's Service aliases (`MODEL push_context.go resolveServiceAliases`,
/// `HTTPROUTE generateVirtualHostDomains`): an ExternalName Service's names are extra domains of
/// the virtual hosts of the service it names (through any chain of aliases, a loop resolving to
/// nothing), so a request to the alias takes the concrete service's default route. An alias of a
/// host outside the registry gets no route at all (istiod builds no virtual host for it).
fn add_alias_routes(
    registry_exact: &mut HashMap<String, Vec<DefaultRoute>>,
    settings: &Settings,
    aliases: &HashMap<String, String>,
) {
    // alias → concrete host (None: a loop), each alias resolved once (linear in the aliases).
    let mut resolved: BTreeMap<&str, Option<&str>> = BTreeMap::new();
    for start in aliases.keys() {
        let mut path: Vec<&str> = Vec::new();
        let mut on_path: std::collections::HashSet<&str> = std::collections::HashSet::new();
        let mut at: &str = start;
        let result = loop {
            if let Some(r) = resolved.get(at) {
                break *r;
            }
            if !on_path.insert(at) {
                break None; // a loop: Kubernetes answers NXDOMAIN
            }
            match aliases.get(at) {
                Some(next) => {
                    path.push(at);
                    at = next;
                }
                None => break Some(at),
            }
        };
        for p in path {
            resolved.insert(p, result);
        }
    }
    for (alias, concrete) in resolved {
        let Some(routes) = concrete.and_then(|c| registry_exact.get(c)).cloned() else { continue };
        for name in host::alt_names(alias, &settings.namespace, &settings.domain_suffix) {
            registry_exact.entry(name).or_default().extend(routes.iter().cloned());
        }
    }
}

/// The hosts whose DestinationRules set `consistentHash` anywhere (top level, a port, a subset):
/// which rules may need their destinations' hash policies on a route of their own (R225). A superset of what a proxy applies (no visibility or merging here): the Envoy
/// generator looks each destination's rule up as istiod does, and a rule none of whose
/// destinations hashes then gets a route without `hash_policy`, as it would anyway.
struct HashingHosts {
    exact: std::collections::HashSet<String>,
    wildcard: Vec<String>,
    /// The same for a hash at the top level or a port of the rule (what a service's default
    /// route can take, istiod `hashForService`).
    service_exact: std::collections::HashSet<String>,
    service_wildcard: Vec<String>,
}

impl HashingHosts {
    fn new(bundle: &Bundle) -> Self {
        let mut out = HashingHosts {
            exact: std::collections::HashSet::new(),
            wildcard: Vec::new(),
            service_exact: std::collections::HashSet::new(),
            service_wildcard: Vec::new(),
        };
        let hashes = |t: &crd::TrafficPolicy| {
            t.load_balancer.as_ref().is_some_and(|l| l.consistent_hash.is_some())
                || t.port_level_settings
                    .iter()
                    .any(|p| p.load_balancer.as_ref().is_some_and(|l| l.consistent_hash.is_some()))
        };
        for (r, dr) in bundle.destination_rules() {
            let service = dr.traffic_policy.as_ref().is_some_and(hashes);
            let any = service || dr.subsets.iter().any(|s| s.traffic_policy.as_ref().is_some_and(hashes));
            if !any {
                continue;
            }
            let h = host::resolve(&dr.host, &r.namespace, &bundle.settings.domain_suffix);
            if h.starts_with('*') {
                if service {
                    out.service_wildcard.push(h.clone());
                }
                out.wildcard.push(h);
            } else {
                if service {
                    out.service_exact.insert(h.clone());
                }
                out.exact.insert(h);
            }
        }
        out
    }

    fn may_hash(&self, h: &str) -> bool {
        self.exact.contains(h) || self.wildcard.iter().any(|w| host::matches(w, h))
    }

    fn service_may_hash(&self, h: &str) -> bool {
        self.service_exact.contains(h) || self.service_wildcard.iter().any(|w| host::matches(w, h))
    }
}

impl Ctx<'_> {
    /// R225: the default route of a registry host whose DestinationRule may hash is istiod's
    /// `buildSidecarVirtualHostForService` route — the service's hash for its port
    /// (`hashForService`: port-level over top level, no subset) and Istio's default retries
    /// with the predicate (`BuildDefaultHTTPOutboundRoute`, `ConvertPolicy(.., false)`) — so it
    /// names a route of its own, recorded on its cluster for the Envoy generator.
    fn hash_default_routes(&mut self, registry_exact: &mut HashMap<String, Vec<DefaultRoute>>) {
        for routes in registry_exact.values_mut() {
            for d in routes.iter_mut().filter(|d| self.hashing.service_may_hash(&d.host)) {
                d.retry.hash_sources = vec![HashSource { host: d.host.clone(), subset: None, port: Some(d.port) }];
                let c = self.clusters.entry(d.cluster.clone()).or_insert_with(|| ClusterRef {
                    name: d.cluster.clone(),
                    host: d.host.clone(),
                    subset: None,
                    port: d.port,
                    mirror_only: false,
                    retry_policies: BTreeSet::new(),
                });
                c.retry_policies.insert(d.retry.clone());
            }
        }
    }

    /// Cluster name, FQDN and port of a destination (istio `GetDestinationCluster`): the port is
    /// the destination's, else the service's only port, else the listener's.
    /// The last value says the port is the request's (`port` is then `settings.defaultPort`).
    fn cluster_for(&mut self, d: &crd::Destination, ns: &str, for_mirror: bool) -> (String, String, u32, bool) {
        let h = host::resolve(&d.host, ns, &self.settings.domain_suffix);
        let (port, from_request) = match d.port.as_ref().map(|p| p.number).filter(|p| *p != 0) {
            Some(p) => (p, false),
            None => match self.service_ports.get(&h).map(Vec::as_slice) {
                Some([only]) => (*only, false),
                _ => (self.settings.default_port, true),
            },
        };
        // A destination naming an ExternalName Service goes to the cluster of its target, with
        // the alias's port (`ROUTE GetDestinationCluster`: one hop, as istiod; K14).
        let h = self.aliases.get(&h).cloned().unwrap_or(h);
        let subset = d.subset.clone().filter(|s| !s.is_empty());
        let name = cluster_name(&self.settings.cluster_template, port, subset.as_deref(), &h);
        // A port taken from the request can be any port of a registry host (istiod builds a
        // cluster per service port, K13); of a host outside the registry only the default one
        // is known.
        for p in self.declared_ports(&h, port, from_request) {
            let name = cluster_name(&self.settings.cluster_template, p, subset.as_deref(), &h);
            let c = self.clusters.entry(name.clone()).or_insert_with(|| ClusterRef {
                name,
                host: h.clone(),
                subset: subset.clone(),
                port: p,
                mirror_only: for_mirror,
                retry_policies: BTreeSet::new(),
            });
            c.mirror_only &= for_mirror;
        }
        (name, h, port, from_request)
    }

    /// The ports a destination's clusters are declared on: its own, or for a port taken from the
    /// request every port of its registry host (K13).
    fn declared_ports(&self, h: &str, port: u32, from_request: bool) -> Vec<u32> {
        match self.service_ports.get(h) {
            Some(ports) if from_request && !ports.is_empty() => ports.clone(),
            _ => vec![port],
        }
    }

    /// Records `policy` on every cluster `d` can name.
    fn attach_policy(&mut self, d: &Dest, policy: &RetryPolicy) {
        for p in self.declared_ports(&d.host, d.port, d.port_from_request) {
            let name = cluster_name(&self.settings.cluster_template, p, d.subset.as_deref(), &d.host);
            if let Some(c) = self.clusters.get_mut(&name) {
                c.retry_policies.insert(policy.clone());
            }
        }
    }

    fn mirror(&mut self, d: &crd::Destination, ns: &str, ppm: u32) -> Mirror {
        let (cluster, host, port, port_from_request) = self.cluster_for(d, ns, true);
        Mirror { cluster, host, subset: d.subset.clone().filter(|s| !s.is_empty()), port, port_from_request, ppm }
    }
}

/// The cluster of a destination for a request on `request_port`. A destination whose port comes
/// from the request holds the name on `port` (the default port; compile names it so and
/// `table::load` puts it back so), which is most requests' port: the name is built only for
/// another one.
fn cluster_on<'a>(
    template: &str,
    cluster: &'a str,
    (port, from_request): (u32, bool),
    host: &str,
    subset: Option<&str>,
    request_port: u32,
) -> std::borrow::Cow<'a, str> {
    if from_request && request_port != port {
        std::borrow::Cow::Owned(cluster_name(template, request_port, subset, host))
    } else {
        std::borrow::Cow::Borrowed(cluster)
    }
}

impl Dest {
    /// The cluster for a request on `request_port` (`template` is the table's).
    pub fn cluster_on(&self, template: &str, request_port: u32) -> std::borrow::Cow<'_, str> {
        cluster_on(
            template,
            &self.cluster,
            (self.port, self.port_from_request),
            &self.host,
            self.subset.as_deref(),
            request_port,
        )
    }

    pub fn port_on(&self, request_port: u32) -> u32 {
        if self.port_from_request {
            request_port
        } else {
            self.port
        }
    }
}

impl Mirror {
    /// As [`Dest::cluster_on`].
    pub fn cluster_on(&self, template: &str, request_port: u32) -> std::borrow::Cow<'_, str> {
        cluster_on(
            template,
            &self.cluster,
            (self.port, self.port_from_request),
            &self.host,
            self.subset.as_deref(),
            request_port,
        )
    }

    pub fn port_on(&self, request_port: u32) -> u32 {
        if self.port_from_request {
            request_port
        } else {
            self.port
        }
    }
}

/// `outbound|<port>|<subset>|<fqdn>` by default (istio `BuildSubsetKey`).
///
/// Defined as three replacements in turn (`{port}`, then `{subset}`, then `{host}`); a table
/// load names every destination with it, so the usual template is filled in one pass into one
/// allocation, and only a template or subset with other braces (where a replacement could form
/// a later placeholder) takes the replacements themselves.
pub fn cluster_name(template: &str, port: u32, subset: Option<&str>, host: &str) -> String {
    let subset = subset.unwrap_or("");
    if !subset.contains(['{', '}']) {
        if let Some(name) = cluster_name_one_pass(template, port, subset, host) {
            return name;
        }
    }
    template.replace("{port}", &port.to_string()).replace("{subset}", subset).replace("{host}", host)
}

/// The template filled in left to right, or `None` when it has a brace outside its three
/// placeholders. Without such braces (and none in `subset`; the port is digits) the only
/// placeholders the replacements can see are the template's own, so both give the same name.
fn cluster_name_one_pass(template: &str, port: u32, subset: &str, host: &str) -> Option<String> {
    use std::fmt::Write as _;
    let mut name = String::with_capacity(template.len() + subset.len() + host.len() + 10);
    let mut rest = template;
    while let Some(at) = rest.find(['{', '}']) {
        name.push_str(&rest[..at]);
        let tail = &rest[at..];
        rest = if let Some(after) = tail.strip_prefix("{port}") {
            // Writing into a String cannot fail.
            let _ = write!(name, "{port}");
            after
        } else if let Some(after) = tail.strip_prefix("{subset}") {
            name.push_str(subset);
            after
        } else if let Some(after) = tail.strip_prefix("{host}") {
            name.push_str(host);
            after
        } else {
            return None;
        };
    }
    name.push_str(rest);
    Some(name)
}

/// Istio's `percentage.value` (a double, 0–100) as parts per million, as istiod writes
/// `FractionalPercent{numerator: value*10000, denominator: MILLION}`.
pub fn percent_to_ppm(value: f64) -> u32 {
    if value.is_nan() || value <= 0.0 {
        0
    } else if value >= 100.0 {
        PPM
    } else {
        (value * 10_000.0).round() as u32
    }
}

/// Fault percentages: `percentage` wins, then the deprecated integer `percent`; neither means
/// 0 % (the API: "If left unspecified, no request will be delayed/aborted").
fn ppm(p: Option<&crd::Percent>, deprecated: Option<f64>) -> u32 {
    match (p, deprecated) {
        (Some(p), _) => percent_to_ppm(p.value),
        (None, Some(v)) => percent_to_ppm(v),
        (None, None) => 0,
    }
}

fn header_ops(h: Option<&crd::Headers>) -> (HeaderOps, HeaderOps) {
    let conv = |o: Option<&crd::HeaderOperations>| {
        o.map(|o| HeaderOps {
            set: o.set.iter().map(|(k, v)| (k.to_ascii_lowercase(), unescape_percent(v))).collect(),
            add: o.add.iter().map(|(k, v)| (k.to_ascii_lowercase(), unescape_percent(v))).collect(),
            remove: o.remove.iter().map(|k| k.to_ascii_lowercase()).collect(),
        })
        .unwrap_or_default()
    };
    (conv(h.and_then(|h| h.request.as_ref())), conv(h.and_then(|h| h.response.as_ref())))
}

/// Header values are Envoy formatter strings where `%%` is a literal `%`; validation rejects
/// every other `%…%` operator, so this is all that is left to evaluate.
fn unescape_percent(v: &str) -> String {
    v.replace("%%", "%")
}

/// Removes `:authority`/`host` from set/add (set wins) and returns the value; other pseudo
/// headers are dropped, as istiod `TranslateHeadersOperations` does.
fn take_authority(ops: &mut HeaderOps) -> Option<String> {
    let is_auth = |k: &str| k == ":authority" || k == "host";
    let from_set = ops.set.iter().find(|(k, _)| is_auth(k)).map(|(_, v)| v.clone());
    let from_add = ops.add.iter().find(|(k, _)| is_auth(k)).map(|(_, v)| v.clone());
    ops.set.retain(|(k, _)| !k.starts_with(':') && k != "host");
    ops.add.retain(|(k, _)| !k.starts_with(':') && k != "host");
    ops.remove.retain(|k| !k.starts_with(':') && k != "host");
    from_set.or(from_add)
}

/// Envoy's RE2 substitution uses `\1`; regex-lite wants `${1}`.
fn envoy_to_regex_lite_template(t: &str) -> String {
    let mut out = String::with_capacity(t.len());
    let mut chars = t.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(char::is_ascii_digit) => {
                let mut n = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    n.push(*d);
                    chars.next();
                }
                out.push_str(&format!("${{{n}}}"));
            }
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace() && *b != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c)? << (18 - 6 * i);
        }
        match chunk.len() {
            4 => out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]),
            3 => out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8]),
            2 => out.push((acc >> 16) as u8),
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass fill must name every cluster as the three replacements in turn do, including
    /// templates and subsets whose braces let one replacement form the next placeholder.
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn cluster_name_is_the_three_replacements_in_turn() {
        let templates = [
            crate::config::DEFAULT_CLUSTER_TEMPLATE,
            "{host}",
            "",
            "plain",
            "{port}{port}-{subset}.{host}",
            "{h{subset}}",
            "{ho{port}st}",
            "{subset",
            "port}",
            "{unknown}|{host}",
            "}{host}{",
            "{{port}}",
        ];
        let subsets = [None, Some(""), Some("v1"), Some("ost"), Some("{host}"), Some("{"), Some("x}")];
        for t in templates {
            for s in subsets {
                let want = t.replace("{port}", "8080").replace("{subset}", s.unwrap_or("")).replace("{host}", "a.b");
                assert_eq!(cluster_name(t, 8080, s, "a.b"), want, "template {t:?}, subset {s:?}");
            }
        }
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn retry_on_splits_http_grpc_and_codes_like_istiod() {
        let p = RetryPolicy::from_retry_on(
            3,
            "connect-failure,refused-stream,unavailable,cancelled,503,retriable-status-codes",
        );
        assert_eq!(p.retry_on, "connect-failure,refused-stream,retriable-status-codes");
        assert_eq!(p.grpc_retry_on, "unavailable,cancelled");
        assert_eq!(p.retriable_status_codes, "503");
        let codes_only = RetryPolicy::from_retry_on(1, "502,503");
        assert_eq!(codes_only.retry_on, "retriable-status-codes");
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn istio_default_retry_is_two_attempts() {
        let d = RetryPolicy::istio_default();
        assert_eq!(d.attempts, 2);
        assert_eq!(d.retry_on, "connect-failure,refused-stream,retriable-status-codes");
        assert_eq!(d.grpc_retry_on, "unavailable,cancelled");
        let mut split = RetryPolicy::from_retry_on(2, DEFAULT_RETRY_ON);
        assert!(!split.is_istio_default(), "only a policy the VirtualService left unset is the default");
        split.is_default = true;
        assert_eq!(d, split);
        assert!(d.is_istio_default());
        let mut other = d.clone();
        other.previous_hosts = Some(false);
        assert!(!other.is_istio_default());
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn percentages_become_parts_per_million() {
        assert_eq!(percent_to_ppm(10.0), 100_000);
        assert_eq!(percent_to_ppm(0.0001), 1);
        assert_eq!(percent_to_ppm(100.0), PPM);
        assert_eq!(percent_to_ppm(f64::NAN), 0);
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn base64_and_regex_templates() {
        assert_eq!(base64_decode("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
        assert_eq!(base64_decode("aGk").as_deref(), Some(&b"hi"[..]));
        assert_eq!(base64_decode("!!"), None);
        assert_eq!(envoy_to_regex_lite_template("/v2/\\1/x$"), "/v2/${1}/x$$");
    }

    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn grpc_names_map_to_codes_through_the_shared_table() {
        assert_eq!(grpc_status_code("UNAVAILABLE"), Some(14));
        assert_eq!(grpc_status_code("NOPE"), None);
    }
}
