//! A rule's own retry policy through a real Envoy (docs/semantics.md R220–R222): what no
//! per-request hint can carry — the `previous_hosts` predicate with
//! `host_selection_retry_max_attempts`, `retryIgnorePreviousHosts`, `backoff` — is on the route
//! the filter names in its policy header, next to the consistent-hash `hash_policy` of the
//! destination. Everything is judged on counts (responses, upstream attempts, Envoy's
//! counters), never on times.
//!
//! Skips loudly without Envoy or the filter's Wasm module locally; fails under `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use support::*;

fn start(wasm: &Path, tag: &str, resources: &str) -> (Envoy, u16) {
    let dir = std::env::temp_dir().join(format!("meshroute-retry-routes-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let res = dir.join("resources.yaml");
    std::fs::write(&res, resources).unwrap();
    let envoy = Envoy::start(&support::cli::meshroute_envoy(&dir, &[&res], wasm, 0, &[]), &[]);
    let port = envoy.listener_port("meshroute_outbound");
    (envoy, port)
}

fn service_entry(host: &str, ups: &[&Upstream]) -> String {
    let eps: String = ups
        .iter()
        .map(|u| format!("  - {{address: 127.0.0.1, ports: {{http: {}}}, labels: {{name: {}}}}}\n", u.port(), u.name()))
        .collect();
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {host}, namespace: default}}\nspec:\n  hosts: [{host}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n  - {{number: 80, name: http, protocol: HTTP}}\n  endpoints:\n{eps}---\n"
    )
}

fn get(port: u16, host: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut h = vec![("Host", host)];
    h.extend_from_slice(headers);
    http("GET", port, path, &h, b"")
}

/// Two endpoints picked at random, one always answering 503; one retry on 5xx. With Istio's
/// `previous_hosts` predicate (the default of a rule's own policy) the retry goes to the other
/// endpoint unless all of its host reselections land on the bad one again; with
/// `retryIgnorePreviousHosts: false` it returns to the bad one half the time.
#[test]
fn previous_hosts_predicate_and_retry_ignore_previous_hosts_false_are_on_the_route() {
    let Some((_, wasm)) = envoy_and_filter("previous_hosts predicate") else { return };
    let good = Upstream::named("good");
    let bad = Upstream::start(Behaviour::named("bad").status(503));
    let host = "ph.internal";
    let resources = format!(
        "{}apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: ph, namespace: default}}\n\
         spec: {{host: {host}, trafficPolicy: {{loadBalancer: {{simple: RANDOM}}}}}}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: ph, namespace: default}}\nspec:\n  hosts: [{host}]\n  http:\n\
         \x20 - match: [{{uri: {{prefix: /same-host-allowed}}}}]\n    route: [{{destination: {{host: {host}}}}}]\n\
         \x20   retries: {{attempts: 1, retryOn: 5xx, retryIgnorePreviousHosts: false}}\n\
         \x20 - route: [{{destination: {{host: {host}}}}}]\n    retries: {{attempts: 1, retryOn: 5xx}}\n",
        service_entry(host, &[&good, &bad])
    );
    let (envoy, port) = start(&wasm, "ph", &resources);
    let n: u64 = 200;
    let failures = |path: &str| (0..n).filter(|_| get(port, host, path, &[]).status != 200).count() as u64;
    let with_predicate = failures("/predicate");
    let without = failures("/same-host-allowed");
    // A request fails only when its first pick and its retry both hit `bad`: with the
    // predicate the retry's host is re-drawn (host_selection_retry_max_attempts: 5) until it is
    // not the one tried, so at most (1/2)·(1/2)^5 of requests fail; without, (1/2)·(1/2).
    eprintln!("failures of {n}: with previous_hosts {with_predicate}, without {without}");
    let (_, hi) = binomial_bounds(n, 1.0 / 64.0, 5.0);
    let (lo, _) = binomial_bounds(n, 0.25, 5.0);
    assert!(with_predicate <= hi, "{with_predicate} of {n} failed with previous_hosts (at most {hi} expected)");
    assert!(without >= lo, "{without} of {n} failed without previous_hosts (at least {lo} expected)");
    // The retries really happened: Envoy counted one per first attempt on `bad`.
    let retries = envoy.stat(&format!("cluster.outbound|80||{host}.upstream_rq_retry")).unwrap_or(0);
    assert!(retries >= lo, "only {retries} retries");
    // The policy header never reaches an upstream.
    for r in good.requests().iter().chain(bad.requests().iter()) {
        assert!(r.headers.iter().all(|(k, _)| k != "x-meshroute-retry-policy"), "{:?}", r.headers);
    }
}

/// `backoff` is on the route: with a back-off far longer than the rule's timeout the retry is
/// never sent (one upstream attempt, 504); the same rule without back-off retries at once (Envoy's
/// 25 ms default), three times. Envoy draws the first delay uniformly below the base interval,
/// so with 3600 s against a 200 ms timeout the retry would fit once in 18,000 runs.
#[test]
fn backoff_from_the_route_holds_the_retry_past_the_timeout() {
    let Some((_, wasm)) = envoy_and_filter("retry backoff") else { return };
    let slow = Upstream::start(Behaviour::named("backoff").status(503));
    let fast = Upstream::start(Behaviour::named("no-backoff").status(503));
    let rule = |host: &str, backoff: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {host}, namespace: default}}\nspec:\n  hosts: [{host}]\n  http:\n\
             \x20 - route: [{{destination: {{host: {host}}}}}]\n    timeout: 200ms\n    retries: {{attempts: 3, retryOn: 5xx{backoff}}}\n---\n"
        )
    };
    let resources = format!(
        "{}{}{}{}",
        service_entry("slow.internal", &[&slow]),
        service_entry("fast.internal", &[&fast]),
        rule("slow.internal", ", backoff: 3600s"),
        rule("fast.internal", "")
    );
    let (_envoy, port) = start(&wasm, "backoff", &resources);
    assert_eq!(get(port, "slow.internal", "/", &[]).status, 504);
    assert_eq!(slow.attempts(), 1, "the back-off held the retry");
    assert_eq!(get(port, "fast.internal", "/", &[]).status, 503);
    assert_eq!(fast.attempts(), 4, "1 + 3 retries without back-off");
}

/// A consistent-hash DestinationRule and a rule with its own retry policy: the route the policy
/// header names carries the hash policy, so each user stays on one endpoint, and (one
/// destination, consistent hash: istiod drops `previous_hosts`) its retry goes back to that
/// endpoint — each endpoint fails its first request once and every user still gets 200 from it.
#[test]
fn consistent_hash_stays_sticky_through_a_rules_own_retry_policy() {
    let Some((_, wasm)) = envoy_and_filter("consistent hash with a retry policy") else { return };
    let ups: Vec<Upstream> =
        ["a", "b", "c"].iter().map(|n| Upstream::start(Behaviour::named(n).fail_first(1, 503))).collect();
    let host = "sticky.internal";
    let refs: Vec<&Upstream> = ups.iter().collect();
    let resources = format!(
        "{}apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: sticky, namespace: default}}\n\
         spec: {{host: {host}, trafficPolicy: {{loadBalancer: {{consistentHash: {{httpHeaderName: x-user}}}}}}}}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: sticky, namespace: default}}\nspec:\n  hosts: [{host}]\n  http:\n\
         \x20 - route: [{{destination: {{host: {host}}}}}]\n    retries: {{attempts: 2, retryOn: 5xx}}\n",
        service_entry(host, &refs)
    );
    let (envoy, port) = start(&wasm, "sticky", &resources);
    let mut seen = HashSet::new();
    for user in 0..12 {
        let u = format!("user-{user}");
        let got: Vec<(u16, String)> = (0..6)
            .map(|_| {
                let r = get(port, host, "/", &[("x-user", &u), ("x-meshroute-retry-policy", "forged")]);
                (r.status, r.header("x-upstream").unwrap_or("-").to_string())
            })
            .collect();
        assert!(got.iter().all(|g| *g == (200, got[0].1.clone()) && g.1 != "-"), "{u}: {got:?}");
        seen.insert(got[0].1.clone());
    }
    assert!(seen.len() >= 2, "12 users all hashed to one endpoint: {seen:?}");
    // Each endpoint reached failed once and was retried once, on itself (5xx is not in Istio's
    // default retryOn: the rule's own policy did it).
    let retries = envoy.stat(&format!("cluster.outbound|80||{host}.upstream_rq_retry")).unwrap_or(0);
    assert_eq!(retries, seen.len() as u64);
    let attempts: usize = ups.iter().map(Upstream::attempts).sum();
    assert_eq!(attempts as u64, 12 * 6 + retries);
}

/// `meshroute compile --as envoyfilter` (R223): the same routes for an Istio sidecar, each also
/// requiring the routing header, inserted first in reverse so they keep their order.
#[test]
fn the_generated_envoy_filter_carries_the_policy_and_hash_routes_in_order() {
    let dir = std::env::temp_dir().join(format!("meshroute-retry-routes-ef-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in.yaml");
    std::fs::write(
        &input,
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: s, namespace: default}\n\
         spec: {host: sticky.default.svc.cluster.local, trafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {name: user, ttl: 0s}}}}}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: s, namespace: default}\n\
         spec: {hosts: [sticky], http: [{route: [{destination: {host: sticky}}], retries: {attempts: 3, retryOn: 5xx, backoff: 50ms}}]}\n",
    )
    .unwrap();
    let settings = dir.join("settings.yaml");
    std::fs::write(&settings, "retryPolicyOnRoute: true\nretryPolicyRoutes: true\nlabels: {app: frontend}\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_meshroute"))
        .args(["compile", "--as", "envoyfilter", "-f"])
        .arg(&input)
        .arg("--settings")
        .arg(&settings)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("kind: EnvoyFilter") && text.contains("app: frontend"), "{text}");
    // INSERT_FIRST one by one: the last patch ends up first, so the names appear reversed.
    let names: Vec<&str> = text.lines().filter_map(|l| l.trim().strip_prefix("name: ")).collect();
    let pos = |n: &str| {
        names.iter().position(|x| x.trim_matches('"').starts_with(n)).unwrap_or_else(|| panic!("{n}: {names:?}"))
    };
    // Route order: the rule's own route with its destination's hash (R225), the cluster's hash
    // routes, then Istio's default and the catch-all (R222).
    assert!(pos("meshroute:default-retries") < pos("hash:"), "{names:?}");
    assert!(pos("hash:") < pos("meshroute:r"), "{names:?}");
    assert!(text.contains("base_interval: \"0.05s\""), "{text}");
    assert!(text.contains("cookie:"), "the hash route keeps the cookie hash policy: {text}");
    assert!(text.matches("present_match: true").count() >= text.matches("operation: INSERT_FIRST").count());
}
