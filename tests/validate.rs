//! One test per validation rule: severity, istioctl code, field path and the key words of the
//! message.

// The assertion helpers below are test code too, though not `#[test]` functions.
#![allow(clippy::panic)]

use meshroute::{load_value, validate, Diagnostic, Diagnostics, Severity};
use serde_json::{json, Value};

const ERROR: Severity = Severity::Error;
const WARNING: Severity = Severity::Warning;
const INFO: Severity = Severity::Info;

fn res_in(kind: &str, ns: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": kind,
           "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

fn res(kind: &str, name: &str, spec: Value) -> Value {
    res_in(kind, "default", name, spec)
}

fn vs(spec: Value) -> Value {
    res("VirtualService", "reviews", spec)
}

/// A VirtualService for `reviews` with one rule built from `rule` (a route to reviews added when
/// the rule has no action).
fn vs_rule(rule: Value) -> Value {
    let mut rule = rule;
    let has_action = ["route", "redirect", "directResponse", "delegate"].iter().any(|k| rule.get(k).is_some());
    if !has_action {
        rule["route"] = json!([{"destination": {"host": "reviews"}}]);
    }
    vs(json!({"hosts": ["reviews"], "http": [rule]}))
}

fn reviews_dr() -> Value {
    res(
        "DestinationRule",
        "reviews",
        json!({"host": "reviews", "subsets": [
        {"name": "v1", "labels": {"version": "v1"}},
        {"name": "v2", "labels": {"version": "v2"}}]}),
    )
}

fn run(input: Value) -> Diagnostics {
    let (bundle, loaded) = load_value(input);
    assert!(loaded.is_empty(), "loader reported:\n{loaded}");
    validate(&bundle)
}

fn run_with_settings(resources: Value, settings: Value) -> Diagnostics {
    run(json!({"resources": resources, "settings": settings}))
}

#[track_caller]
fn expect<'a>(
    d: &'a Diagnostics,
    severity: Severity,
    code: Option<&str>,
    path: &str,
    words: &[&str],
) -> &'a Diagnostic {
    d.iter()
        .find(|x| {
            x.severity == severity && x.code == code && x.path == path && words.iter().all(|w| x.message.contains(w))
        })
        .unwrap_or_else(|| panic!("expected {severity:?} {code:?} at {path:?} containing {words:?}, got:\n{d}"))
}

#[track_caller]
fn expect_clean(d: &Diagnostics) {
    assert!(d.iter().all(|x| x.severity == INFO), "expected no errors or warnings, got:\n{d}");
}

#[track_caller]
fn expect_no_error(d: &Diagnostics) {
    assert!(!d.has_errors(), "expected no errors, got:\n{d}");
}

#[track_caller]
fn expect_nothing_at(d: &Diagnostics, path: &str) {
    assert!(d.iter().all(|x| x.path != path), "expected nothing at {path}, got:\n{d}");
}

// === VirtualService: hosts, gateways, structure ===

#[test]
fn valid_virtual_service_with_its_destination_rule_is_clean() {
    let d = run(json!([
        vs(json!({"hosts": ["reviews"], "http": [
            {"match": [{"uri": {"prefix": "/v2"}}], "route": [{"destination": {"host": "reviews", "subset": "v2"}}],
             "timeout": "2s", "retries": {"attempts": 3, "perTryTimeout": "500ms", "retryOn": "5xx,reset,503"}},
            {"route": [{"destination": {"host": "reviews", "subset": "v1"}, "weight": 90},
                       {"destination": {"host": "reviews", "subset": "v2"}, "weight": 10}]}]})),
        reviews_dr(),
    ]));
    expect_clean(&d);
}

#[test]
fn virtual_service_without_hosts_is_a_delegate_that_routes_nothing_alone() {
    let d = run(vs(json!({"http": [{"route": [{"destination": {"host": "reviews"}}]}]})));
    expect(&d, INFO, None, "spec.hosts", &["no VirtualService delegates to this one", "routes nothing"]);
    expect_no_error(&d);
}

#[test]
fn wildcard_is_allowed_only_as_the_first_label_of_a_host() {
    let d = run(vs(json!({"hosts": ["*.example.com", "api.*.example.com"],
                          "http": [{"route": [{"destination": {"host": "reviews"}}]}]})));
    expect_nothing_at(&d, "spec.hosts[0]");
    expect(&d, ERROR, Some("IST0106"), "spec.hosts[1]", &["api.*.example.com", "invalid"]);
}

#[test]
fn star_host_is_rejected_for_the_mesh_but_allowed_for_a_gateway_bound_virtual_service() {
    let route = json!([{"route": [{"destination": {"host": "reviews"}}]}]);
    let d = run(vs(json!({"hosts": ["*"], "http": route})));
    expect(&d, ERROR, Some("IST0106"), "spec.hosts[0]", &["wildcard host * is not allowed", "mesh gateway"]);
    let d = run(json!([
        vs(json!({"hosts": ["*"], "gateways": ["gw"], "http": route})),
        res(
            "Gateway",
            "gw",
            json!({"servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]})
        ),
    ]));
    expect_no_error(&d);
}

#[test]
fn overlapping_hosts_in_one_virtual_service_are_duplicates() {
    let d = run(vs(json!({"hosts": ["*.example.com", "api.example.com"],
                          "http": [{"route": [{"destination": {"host": "reviews"}}]}]})));
    expect(
        &d,
        ERROR,
        Some("IST0106"),
        "spec.hosts[1]",
        &["duplicate hosts in virtual service", "*.example.com & api.example.com"],
    );
}

#[test]
fn gateway_names_must_be_dns_labels_and_legacy_names_are_warned() {
    let d = run(vs(json!({"hosts": ["a.example.com"], "gateways": ["Bad_NS/gw", "gw.istio-system.svc.cluster.local"],
                          "http": [{"route": [{"destination": {"host": "reviews"}}]}]})));
    expect(&d, ERROR, Some("IST0106"), "spec.gateways[0]", &["invalid value for namespace", "Bad_NS"]);
    expect(&d, WARNING, Some("IST0133"), "spec.gateways[1]", &["legacy gatewayName format", "istio-system/gw"]);
}

#[test]
fn virtual_service_without_any_route_list_is_rejected() {
    let d = run(vs(json!({"hosts": ["reviews"]})));
    expect(&d, ERROR, Some("IST0106"), "spec", &["http, tcp or tls must be provided"]);
}

#[test]
fn rule_needs_one_of_route_redirect_or_direct_response() {
    let d = run(vs(json!({"hosts": ["reviews"], "http": [{"timeout": "1s"}]})));
    expect(&d, ERROR, Some("IST0106"), "spec.http[0]", &["HTTP route, redirect or direct_response is required"]);
}

#[test]
fn redirect_conflicts_with_route_fault_rewrite_and_direct_response() {
    let d = run(vs_rule(json!({"redirect": {"uri": "/new"}, "route": [{"destination": {"host": "reviews"}}],
        "fault": {"abort": {"httpStatus": 500, "percentage": {"value": 1}}}, "rewrite": {"uri": "/x"},
        "directResponse": {"status": 200}})));
    for words in [
        "both route and redirect",
        "both fault and redirect",
        "both rewrite and redirect",
        "both direct_response and redirect",
    ] {
        expect(&d, ERROR, Some("IST0106"), "spec.http[0].redirect", &[words]);
    }
}

#[test]
fn direct_response_conflicts_with_route_fault_and_rewrite() {
    let d = run(vs_rule(json!({"directResponse": {"status": 503}, "route": [{"destination": {"host": "reviews"}}],
        "rewrite": {"uri": "/x"}})));
    expect(&d, ERROR, Some("IST0106"), "spec.http[0].directResponse", &["both route and direct_response"]);
    expect(&d, ERROR, Some("IST0106"), "spec.http[0].directResponse", &["both rewrite and direct_response"]);
}

#[test]
fn delegate_to_a_missing_virtual_service_is_ignored_with_a_warning() {
    let d = run(vs_rule(json!({"delegate": {"name": "reviews-delegate", "namespace": "default"}})));
    expect(
        &d,
        WARNING,
        None,
        "spec.http[0].delegate",
        &["delegate virtual service default/reviews-delegate not found; the rule is ignored, as istiod ignores it"],
    );
    expect_no_error(&d);
}

#[test]
fn mirror_and_mirrors_cannot_both_be_set() {
    let d = run(vs_rule(json!({"mirror": {"host": "shadow"}, "mirrors": [{"destination": {"host": "shadow2"}}]})));
    expect(&d, ERROR, Some("IST0106"), "spec.http[0].mirrors", &["both mirror and mirrors"]);
}

#[test]
fn direct_response_status_must_be_200_to_599_and_body_small() {
    let d = run(vs_rule(json!({"directResponse": {"status": 700}})));
    expect(&d, ERROR, Some("IST0106"), "spec.http[0].directResponse.status", &["700", "200-599"]);
    let big = "x".repeat(200 * 1024);
    let d = run(vs_rule(json!({"directResponse": {"status": 200, "body": {"string": big}}})));
    expect(&d, WARNING, Some("IST0133"), "spec.http[0].directResponse.body", &["large direct_responses"]);
    let huge = "x".repeat(2 * 1024 * 1024);
    let d = run(vs_rule(json!({"directResponse": {"status": 200, "body": {"string": huge}}})));
    expect(&d, ERROR, Some("IST0106"), "spec.http[0].directResponse.body", &["less than 1MB"]);
}

#[test]
fn rewrite_takes_uri_or_uri_regex_rewrite_not_both() {
    let d = run(vs_rule(json!({"rewrite": {"uri": "/a", "uriRegexRewrite": {"match": "^/b", "rewrite": "/c"}}})));
    expect(&d, ERROR, Some("IST0106"), "spec.http[0].rewrite", &["only contain one of URI or UriRegexRewrite"]);
    let d = run(vs_rule(json!({"rewrite": {}})));
    expect(
        &d,
        ERROR,
        Some("IST0106"),
        "spec.http[0].rewrite",
        &["must specify at least one of URI, UriRegexRewrite, or authority"],
    );
}

#[test]
fn regex_rewrite_needs_both_fields_a_valid_regex_and_existing_groups() {
    let d = run(vs_rule(json!({"rewrite": {"uriRegexRewrite": {"match": "^/b"}}})));
    expect(&d, ERROR, Some("IST0106"), "spec.http[0].rewrite.uriRegexRewrite", &["requires both Rewrite and Match"]);
    let d = run(vs_rule(json!({"rewrite": {"uriRegexRewrite": {"match": "^/(b", "rewrite": "/c"}}})));
    expect(&d, ERROR, Some("IST0106"), "spec.http[0].rewrite.uriRegexRewrite.match", &["UriRegexRewrite.Match", "RE2"]);
    let d = run(vs_rule(json!({"rewrite": {"uriRegexRewrite": {"match": "^/(b)/(c)", "rewrite": "/\\2/\\3"}}})));
    expect(&d, ERROR, None, "spec.http[0].rewrite.uriRegexRewrite.rewrite", &["\\3", "2 capture group"]);
}

// === StringMatch and match blocks ===

#[test]
fn string_match_with_more_than_one_kind_is_rejected() {
    let d = run(vs_rule(json!({"match": [{"uri": {"exact": "/a", "prefix": "/b"}}]})));
    expect(&d, ERROR, Some("IST0106"), "spec.http[0].match[0].uri", &["only one of exact, prefix or regex"]);
}

#[test]
fn empty_prefix_is_rejected_except_for_the_uri() {
    let d = run(vs_rule(json!({"match": [{"uri": {"prefix": ""}, "headers": {"x-user": {"prefix": ""}},
                                           "method": {"prefix": ""}}]})));
    expect_nothing_at(&d, "spec.http[0].match[0].uri.prefix");
    expect(
        &d,
        ERROR,
        Some("IST0106"),
        "spec.http[0].match[0].headers.x-user.prefix",
        &["prefix string match should not be empty"],
    );
    expect(&d, ERROR, Some("IST0106"), "spec.http[0].match[0].method.prefix", &["\"method\"", "should not be empty"]);
}

#[test]
fn invalid_regex_is_rejected_with_the_re2_hint() {
    let d = run(vs_rule(json!({"match": [{"uri": {"regex": "/api/(v1"}}]})));
    expect(
        &d,
        ERROR,
        Some("IST0106"),
        "spec.http[0].match[0].uri.regex",
        &["\"uri\"", "Istio uses RE2 style regex-based match"],
    );
}

#[test]
fn unicode_class_regex_is_valid_re2_but_unsupported_by_meshroute() {
    let d = run(vs_rule(json!({"match": [{"headers": {"x-name": {"regex": "\\p{Greek}+"}}}]})));
    expect(
        &d,
        ERROR,
        Some("MR0007"),
        "spec.http[0].match[0].headers.x-name.regex",
        &["Unicode character classes", "regex-lite"],
    );
}

#[test]
fn regex_longer_than_1024_characters_is_rejected() {
    let d = run(vs_rule(json!({"match": [{"uri": {"regex": "a".repeat(1025)}}]})));
    expect(&d, ERROR, Some("IST0106"), "spec.http[0].match[0].uri.regex", &["max length allowed is 1024"]);
}

#[test]
fn uppercase_header_name_is_a_warning_and_an_invalid_one_an_error() {
    let d = run(vs_rule(json!({"match": [{"headers": {"X-User": {"exact": "a"}, "bad header": {"exact": "b"}}}]})));
    expect(&d, WARNING, None, "spec.http[0].match[0].headers.X-User", &["lowercase", "x-user"]);
    expect(&d, ERROR, Some("IST0106"), "spec.http[0].match[0].headers.bad header", &["not a valid header name"]);
}

#[test]
fn empty_string_match_means_presence_and_is_accepted() {
    let d =
        run(vs_rule(json!({"match": [{"headers": {"x-canary": {}}, "withoutHeaders": {"x-skip": {"regex": "*"}}}]})));
    expect_clean(&d);
}

#[test]
fn match_port_must_be_a_valid_port() {
    let d = run(vs_rule(json!({"match": [{"port": 70000}]})));
    expect(&d, ERROR, Some("IST0106"), "spec.http[0].match[0].port", &["70000", "1..65535"]);
}

#[test]
fn source_labels_without_mesh_in_gateways_only_select_gateway_workloads() {
    let d = run(json!([
        vs(json!({"hosts": ["a.example.com"], "gateways": ["gw"], "http": [
            {"match": [{"sourceLabels": {"app": "web"}}], "route": [{"destination": {"host": "reviews"}}]}]})),
        res(
            "Gateway",
            "gw",
            json!({"servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]})
        ),
    ]));
    expect(&d, WARNING, None, "spec.http[0].match[0]", &["sourceLabels", "\"mesh\""]);
    expect_no_error(&d);
}

#[test]
fn source_labels_are_ignored_when_the_match_lists_gateways() {
    let d = run(vs_rule(json!({"match": [{"gateways": ["mesh"], "sourceLabels": {"app": "web"}}]})));
    expect(&d, WARNING, None, "spec.http[0].match[0]", &["ignored when the match lists gateways"]);
}

#[test]
fn tls_and_tcp_routes_are_noted_as_applied_by_the_generated_listeners() {
    let d = run(vs(json!({"hosts": ["reviews"], "tcp": [{"route": [{"destination": {"host": "db"}}]}],
                          "tls": [{"match": [{"sniHosts": ["reviews"]}], "route": [{"destination": {"host": "reviews"}}]}]})));
    expect(&d, INFO, None, "spec.tcp", &["listeners `meshroute envoy` generates"]);
    expect(&d, INFO, None, "spec.tls", &["listeners `meshroute envoy` generates"]);
    expect_no_error(&d);
}

#[test]
fn jwt_claim_routing_needs_a_gateway_and_is_not_supported() {
    let d = run(vs_rule(json!({"match": [{"headers": {"@request.auth.claims.group": {"exact": "admin"}}}]})));
    expect(
        &d,
        ERROR,
        Some("IST0106"),
        "spec.http[0].match[0].headers.@request.auth.claims.group",
        &["only supported for gateway"],
    );
    expect(
        &d,
        ERROR,
        Some("MR0007"),
        "spec.http[0].match[0].headers.@request.auth.claims.group",
        &["not supported by meshroute"],
    );
}

// === Destinations and weights ===

#[test]
fn negative_weight_and_zero_total_weight_are_rejected() {
    let d = run(vs_rule(json!({"route": [{"destination": {"host": "a"}, "weight": -1},
                                          {"destination": {"host": "b"}, "weight": 0}]})));
    expect(&d, ERROR, Some("IST0106"), "spec.http[0].route[0].weight", &["weight -1 < 0"]);
    expect(&d, ERROR, Some("IST0106"), "spec.http[0].route", &["total destination weight = 0"]);
}

#[test]
fn weight_beyond_the_int32_range_is_rejected() {
    let d = run(vs_rule(json!({"route": [{"destination": {"host": "a"}, "weight": 3_000_000_000i64},
                                          {"destination": {"host": "b"}, "weight": 1}]})));
    expect(&d, ERROR, Some("IST0106"), "spec.http[0].route[0].weight", &["int32"]);
}

#[test]
fn destination_needs_a_host_and_a_valid_port() {
    let d = run(vs_rule(json!({"route": [{"destination": {"port": {"number": 0}}}]})));
    expect(&d, ERROR, Some("IST0106"), "spec.http[0].route[0].destination.host", &["destination host is required"]);
    expect(&d, ERROR, Some("IST0106"), "spec.http[0].route[0].destination.port.number", &["port number 0"]);
    let d = run(vs_rule(json!({"route": [{"destination": {"host": "*"}}]})));
    expect(&d, ERROR, Some("IST0106"), "spec.http[0].route[0].destination.host", &["invalid destination host *"]);
}

#[test]
fn durations_must_parse_and_be_at_least_one_millisecond() {
    let d = run(vs_rule(json!({"timeout": "5 seconds"})));
    expect(&d, ERROR, Some("IST0106"), "spec.http[0].timeout", &["invalid duration"]);
    let d = run(vs_rule(json!({"timeout": "0s"})));
    expect(&d, ERROR, Some("IST0106"), "spec.http[0].timeout", &["greater than 1ms"]);
    let d = run(vs_rule(json!({"fault": {"delay": {"fixedDelay": "100us", "percentage": {"value": 5}}}})));
    expect(&d, ERROR, Some("IST0106"), "spec.http[0].fault.delay.fixedDelay", &["greater than 1ms"]);
}

// === Retries ===

#[test]
fn retry_fields_with_zero_attempts_are_rejected() {
    let d = run(vs_rule(json!({"retries": {"attempts": 0, "perTryTimeout": "1s"}})));
    expect(&d, ERROR, Some("IST0106"), "spec.http[0].retries", &["attempts are set to 0 (disabled)"]);
    let d = run(vs_rule(json!({"retries": {"attempts": -1}})));
    expect(&d, ERROR, Some("IST0106"), "spec.http[0].retries.attempts", &["cannot be negative"]);
    let d = run(vs_rule(json!({"retries": {"attempts": 0}})));
    expect_clean(&d);
}

#[test]
fn unknown_retry_on_token_is_rejected_naming_it() {
    let d = run(vs_rule(json!({"retries": {"attempts": 2, "retryOn": "5xx,gateway-eror,499"}})));
    expect(
        &d,
        ERROR,
        Some("IST0106"),
        "spec.http[0].retries.retryOn",
        &["\"gateway-eror\" is not a valid retryOn policy"],
    );
    expect(&d, ERROR, Some("IST0106"), "spec.http[0].retries.retryOn", &["\"499\"", "registered HTTP status"]);
    let d = run(vs_rule(json!({"retries": {"attempts": 2, "retryOn": "5xx, reset"}})));
    expect(&d, ERROR, Some("IST0106"), "spec.http[0].retries.retryOn", &["\" reset\"", "remove the spaces"]);
}

#[test]
fn retry_on_accepts_http_and_grpc_conditions_and_status_codes() {
    let d = run(vs_rule(json!({"retries": {"attempts": 2,
        "retryOn": "gateway-error,connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes,503,http3-post-connect-failure"}})));
    expect_clean(&d);
}

// === Fault injection ===

#[test]
fn fault_needs_a_delay_or_an_abort() {
    let d = run(vs_rule(json!({"fault": {}})));
    expect(&d, ERROR, Some("IST0106"), "spec.http[0].fault", &["must have an abort and/or a delay"]);
}

#[test]
fn exponential_delay_is_not_supported() {
    let d = run(vs_rule(json!({"fault": {"delay": {"exponentialDelay": "1s", "percentage": {"value": 5}}}})));
    expect(
        &d,
        ERROR,
        Some("IST0106"),
        "spec.http[0].fault.delay.exponentialDelay",
        &["exponentialDelay not supported"],
    );
}

#[test]
fn fault_percentage_must_be_between_0_and_100() {
    let d = run(vs_rule(json!({"fault": {"abort": {"httpStatus": 503, "percentage": {"value": 150}}}})));
    expect(&d, ERROR, Some("IST0106"), "spec.http[0].fault.abort.percentage.value", &["150", "[0.0001, 100.0]"]);
}

#[test]
fn deprecated_delay_percent_is_an_ist0002_warning() {
    let d = run(vs_rule(json!({"fault": {"delay": {"fixedDelay": "1s", "percent": 10}}})));
    expect(&d, WARNING, Some("IST0002"), "spec.http[0].fault.delay.percent", &["fault.delay.percentage"]);
    expect_no_error(&d);
}

#[test]
fn abort_status_must_be_an_http_status_or_a_known_grpc_status() {
    let d = run(vs_rule(json!({"fault": {"abort": {"httpStatus": 99, "percentage": {"value": 1}}}})));
    expect(
        &d,
        ERROR,
        Some("IST0106"),
        "spec.http[0].fault.abort.httpStatus",
        &["HTTP status 99 is not in range 200-599"],
    );
    let d = run(vs_rule(json!({"fault": {"abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 1}}}})));
    expect_clean(&d);
    let d = run(vs_rule(json!({"fault": {"abort": {"grpcStatus": "NOPE", "percentage": {"value": 1}}}})));
    expect(
        &d,
        ERROR,
        Some("IST0106"),
        "spec.http[0].fault.abort.grpcStatus",
        &["gRPC status \"NOPE\" is not supported"],
    );
}

#[test]
fn http2_error_abort_is_not_supported() {
    let d = run(vs_rule(json!({"fault": {"abort": {"http2Error": "CANCEL", "percentage": {"value": 1}}}})));
    expect(
        &d,
        ERROR,
        Some("IST0106"),
        "spec.http[0].fault.abort.http2Error",
        &["HTTP/2 abort fault injection not supported"],
    );
}

// === Mirroring ===

#[test]
fn mirror_percentage_must_be_between_0_and_100() {
    let d = run(vs_rule(json!({"mirror": {"host": "shadow"}, "mirrorPercentage": {"value": 101}})));
    expect(&d, ERROR, Some("IST0106"), "spec.http[0].mirrorPercentage.value", &["max value of 100"]);
    let d = run(vs_rule(json!({"mirrors": [{"destination": {"host": "shadow"}, "percentage": {"value": -1}}]})));
    expect(&d, ERROR, Some("IST0106"), "spec.http[0].mirrors[0].percentage.value", &["min value of 0"]);
}

#[test]
fn deprecated_mirror_percent_suggests_mirror_percentage() {
    let d = run(vs_rule(json!({"mirror": {"host": "shadow"}, "mirrorPercent": 50})));
    expect(&d, WARNING, Some("IST0133"), "spec.http[0].mirrorPercent", &["deprecated", "mirrorPercentage"]);
    expect_no_error(&d);
}

// === Header operations and CORS ===

#[test]
fn pseudo_header_operations_other_than_authority_are_rejected() {
    let d = run(vs_rule(json!({"headers": {
        "request": {"set": {":authority": "other.example.com", ":path": "/x"}, "remove": ["host"]},
        "response": {"add": {":status": "200"}}}})));
    expect_nothing_at(&d, "spec.http[0].headers.request.set.:authority");
    expect(&d, ERROR, Some("IST0106"), "spec.http[0].headers.request.set.:path", &["cannot have \":\" prefix"]);
    expect(&d, ERROR, Some("IST0106"), "spec.http[0].headers.request.remove[0]", &["cannot set Host header"]);
    expect(&d, ERROR, Some("IST0106"), "spec.http[0].headers.response.add.:status", &["cannot have \":\" prefix"]);
}

#[test]
fn envoy_header_value_operators_are_not_supported_by_meshroute() {
    let d = run(vs_rule(json!({"headers": {"request": {"set": {"x-host": "%HOSTNAME%", "x-pct": "100%%"}}}})));
    expect(
        &d,
        ERROR,
        Some("MR0007"),
        "spec.http[0].headers.request.set.x-host",
        &["header value operator %HOSTNAME% is not supported by meshroute"],
    );
    expect_nothing_at(&d, "spec.http[0].headers.request.set.x-pct");
    let d = run(vs_rule(json!({"route": [{"destination": {"host": "reviews"},
        "headers": {"response": {"add": {"x-start": "%START_TIME%"}}}}]})));
    expect(
        &d,
        ERROR,
        Some("MR0007"),
        "spec.http[0].route[0].headers.response.add.x-start",
        &["not supported by meshroute"],
    );
}

#[test]
fn authority_cannot_be_rewritten_twice() {
    let d = run(vs_rule(json!({"rewrite": {"authority": "a.example.com"},
                                "headers": {"request": {"set": {"host": "b.example.com"}}}})));
    expect(
        &d,
        ERROR,
        Some("IST0106"),
        "spec.http[0].headers.request.set.host",
        &["authority header cannot be set multiple times"],
    );
}

#[test]
fn cors_methods_headers_and_max_age_are_checked() {
    let d = run(vs_rule(json!({"corsPolicy": {"allowOrigins": [{"exact": ""}], "allowMethods": ["GET", "FETCH"],
        "allowHeaders": ["x-ok", "bad header"], "maxAge": "1500ms"}})));
    expect(
        &d,
        ERROR,
        Some("IST0106"),
        "spec.http[0].corsPolicy.allowOrigins[0]",
        &["not a valid match type for CORS allow origins"],
    );
    expect(
        &d,
        ERROR,
        Some("IST0106"),
        "spec.http[0].corsPolicy.allowMethods[1]",
        &["\"FETCH\" is not a supported HTTP method"],
    );
    expect(&d, ERROR, Some("IST0106"), "spec.http[0].corsPolicy.allowHeaders[1]", &["not a valid header name"]);
    expect(&d, ERROR, Some("IST0106"), "spec.http[0].corsPolicy.maxAge", &["seconds precision"]);
}

#[test]
fn redirect_needs_a_target_and_a_3xx_code() {
    let d = run(vs_rule(json!({"redirect": {"redirectCode": 200}})));
    expect(&d, ERROR, Some("IST0106"), "spec.http[0].redirect", &["must specify URI, authority, scheme, or port"]);
    expect(&d, ERROR, Some("IST0106"), "spec.http[0].redirect.redirectCode", &["200 is not a valid redirect code"]);
    let d = run(vs_rule(json!({"redirect": {"uri": "/x", "redirectCode": 305, "scheme": "ftp"}})));
    expect(
        &d,
        ERROR,
        Some("MR0007"),
        "spec.http[0].redirect.redirectCode",
        &["redirectCode 305 is not supported by meshroute"],
    );
    expect(&d, ERROR, Some("IST0106"), "spec.http[0].redirect.scheme", &["\"http\" or \"https\""]);
}

// === Unreachable rules and ineffective matches ===

#[test]
fn rule_after_match_all_is_unreachable() {
    let d = run(vs(json!({"hosts": ["reviews"], "http": [
        {"route": [{"destination": {"host": "reviews"}}]},
        {"match": [{"uri": {"prefix": "/api"}}], "route": [{"destination": {"host": "api"}}]}]})));
    expect(
        &d,
        WARNING,
        Some("IST0130"),
        "spec.http[1]",
        &["VirtualService rule #1 not used", "route without matches defined before"],
    );
}

#[test]
fn rule_after_a_root_prefix_catch_all_is_never_reached_mr0008() {
    let d = run(vs(json!({"hosts": ["reviews"], "http": [
        {"name": "everything", "match": [{"uri": {"prefix": "/"}}], "route": [{"destination": {"host": "reviews"}}]},
        {"name": "api", "match": [{"uri": {"prefix": "/api"}}], "route": [{"destination": {"host": "api"}}]}]})));
    expect(
        &d,
        WARNING,
        Some("MR0008"),
        "spec.http[1]",
        &["VirtualService rule \"api\" is never reached: rule \"everything\" match #0 is a catch-all"],
    );
    assert!(d.iter().all(|x| x.code != Some("IST0130")), "Istio does not report this case:\n{d}");
}

#[test]
fn catch_all_with_a_header_condition_does_not_hide_later_rules() {
    let d = run(vs(json!({"hosts": ["reviews"], "http": [
        {"match": [{"uri": {"prefix": "/"}, "headers": {"x-canary": {"exact": "1"}}}], "route": [{"destination": {"host": "reviews"}}]},
        {"route": [{"destination": {"host": "reviews"}}]}]})));
    expect_clean(&d);
}

#[test]
fn match_identical_to_an_earlier_one_is_ineffective_ist0131() {
    let d = run(vs(json!({"hosts": ["reviews"], "http": [
        {"match": [{"uri": {"exact": "/a"}}], "route": [{"destination": {"host": "a"}}]},
        {"match": [{"name": "again", "uri": {"exact": "/a"}}, {"uri": {"exact": "/b"}}], "route": [{"destination": {"host": "b"}}]}]})));
    expect(&d, INFO, Some("IST0131"), "spec.http[1].match[0]", &["rule #1 match \"again\" is not used", "rule #0"]);
    expect_nothing_at(&d, "spec.http[1]");
}

#[test]
fn longer_prefix_under_an_earlier_prefix_is_an_overlapping_match_ist0131() {
    let d = run(vs(json!({"hosts": ["reviews"], "http": [
        {"match": [{"uri": {"prefix": "/api"}}], "route": [{"destination": {"host": "a"}}]},
        {"match": [{"uri": {"prefix": "/api/v2"}}], "route": [{"destination": {"host": "b"}}]},
        {"match": [{"uri": {"prefix": "/api/v3"}, "headers": {"x": {"exact": "1"}}}], "route": [{"destination": {"host": "c"}}]}]})));
    expect(
        &d,
        INFO,
        Some("IST0131"),
        "spec.http[1].match[0]",
        &["VirtualService rule #1 match #0 of prefix /api/v2 is not used (duplicate/overlapping match in rule #0 of prefix /api on #0)."],
    );
    // Istio compares header sets by their keys, so the third rule is not reported.
    expect_nothing_at(&d, "spec.http[2].match[0]");
    assert!(d.iter().all(|x| x.code != Some("IST0130")), "{d}");
}

// === Cross-resource: subsets, gateways, hosts ===

#[test]
fn undefined_subset_is_ist0101_with_field_path() {
    let d = run(json!([
        vs(json!({"hosts": ["reviews"], "http": [{"route": [
            {"destination": {"host": "reviews", "subset": "v1"}, "weight": 50},
            {"destination": {"host": "reviews", "subset": "v3"}, "weight": 50}]}]})),
        reviews_dr(),
    ]));
    let diag = expect(
        &d,
        ERROR,
        Some("IST0101"),
        "spec.http[0].route[1].destination.subset",
        &["Referenced host+subset in destinationrule not found: \"reviews+v3\"", "[v1 v2]"],
    );
    assert_eq!(diag.resource.as_ref().map(|r| r.to_string()), Some("VirtualService default/reviews".into()));
    expect_nothing_at(&d, "spec.http[0].route[0].destination.subset");
}

#[test]
fn subset_defined_by_a_wildcard_destination_rule_is_found() {
    let d = run(json!([
        vs(
            json!({"hosts": ["api.example.com"], "http": [{"route": [{"destination": {"host": "api.example.com", "subset": "v1"}}]}]})
        ),
        res(
            "DestinationRule",
            "all",
            json!({"host": "*.example.com", "subsets": [{"name": "v1", "labels": {"v": "1"}}]})
        ),
    ]));
    expect_no_error(&d);
}

#[test]
fn short_destination_host_resolves_in_the_virtual_service_namespace() {
    let d = run(json!([
        res_in(
            "VirtualService",
            "prod",
            "reviews",
            json!({"hosts": ["reviews"],
            "http": [{"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}]})
        ),
        res_in(
            "DestinationRule",
            "other",
            "reviews",
            json!({"host": "reviews.prod.svc.cluster.local",
            "subsets": [{"name": "v1", "labels": {"v": "1"}}]})
        ),
        res_in(
            "DestinationRule",
            "other",
            "decoy",
            json!({"host": "reviews",
            "subsets": [{"name": "v2", "labels": {"v": "2"}}]})
        ),
    ]));
    expect_nothing_at(&d, "spec.http[0].route[0].destination.subset");
}

#[test]
fn undefined_mirror_subset_is_ist0101() {
    let d = run(json!([
        vs_rule(json!({"mirror": {"host": "reviews", "subset": "shadow"},
                       "mirrors": [{"destination": {"host": "reviews", "subset": "v2"}}]})),
        reviews_dr(),
    ]));
    expect(&d, ERROR, Some("IST0101"), "spec.http[0].mirror.subset", &["mirror+subset", "reviews+shadow"]);
    expect_nothing_at(&d, "spec.http[0].mirrors[0].destination.subset");
}

#[test]
fn gateway_not_found_is_ist0101_with_a_resolution_hint() {
    let d = run(json!([
        vs(json!({"hosts": ["api.example.com"], "gateways": ["public-gateway"],
                  "http": [{"route": [{"destination": {"host": "api"}}]}]})),
        res_in(
            "Gateway",
            "istio-system",
            "public-gateway",
            json!({"servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*.example.com"]}]})
        ),
    ]));
    expect(
        &d,
        ERROR,
        Some("IST0101"),
        "spec.gateways[0]",
        &["Referenced gateway not found: \"public-gateway\"", "default/public-gateway", "istio-system/public-gateway"],
    );
}

#[test]
fn mesh_gateway_always_exists_and_namespaced_names_are_found() {
    let d = run(json!([
        vs(json!({"hosts": ["api.example.com"], "gateways": ["mesh", "istio-system/gw"],
                  "http": [{"route": [{"destination": {"host": "api"}}]}]})),
        res_in(
            "Gateway",
            "istio-system",
            "gw",
            json!({"servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*/api.example.com"]}]})
        ),
    ]));
    expect_clean(&d);
}

#[test]
fn two_mesh_virtual_services_for_one_host_are_ist0109_on_both() {
    let d = run(json!([
        res(
            "VirtualService",
            "a",
            json!({"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]})
        ),
        res(
            "VirtualService",
            "b",
            json!({"hosts": ["reviews.default.svc.cluster.local"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]})
        ),
    ]));
    let words = ["The VirtualServices default/a,default/b associated with mesh gateway define the same host */reviews.default.svc.cluster.local which can lead to undefined behavior"];
    let first = expect(&d, ERROR, Some("IST0109"), "spec.hosts[0]", &words);
    assert_eq!(first.resource.as_ref().map(|r| r.name.as_str()), Some("a"));
    assert_eq!(d.iter().filter(|x| x.code == Some("IST0109")).count(), 2, "{d}");
}

#[test]
fn mesh_virtual_services_exported_to_disjoint_namespaces_do_not_conflict() {
    let d = run(json!([
        res(
            "VirtualService",
            "a",
            json!({"hosts": ["reviews"], "exportTo": ["."], "http": [{"route": [{"destination": {"host": "reviews"}}]}]})
        ),
        res(
            "VirtualService",
            "b",
            json!({"hosts": ["reviews"], "exportTo": ["prod"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]})
        ),
    ]));
    assert!(d.iter().all(|x| x.code != Some("IST0109")), "{d}");
}

#[test]
fn virtual_services_sharing_a_gateway_host_are_a_warning_as_istio_merges_them() {
    let gw = res(
        "Gateway",
        "gw",
        json!({"servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}),
    );
    let d = run(json!([
        res(
            "VirtualService",
            "a",
            json!({"hosts": ["api.example.com"], "gateways": ["gw"], "http": [{"route": [{"destination": {"host": "a"}}]}]})
        ),
        res(
            "VirtualService",
            "b",
            json!({"hosts": ["api.example.com"], "gateways": ["default/gw"], "http": [{"route": [{"destination": {"host": "b"}}]}]})
        ),
        gw,
    ]));
    expect(&d, WARNING, None, "spec.hosts[0]", &["default/a,default/b bound to gateway default/gw", "merges"]);
    expect_no_error(&d);
}

#[test]
fn virtual_services_bound_to_mesh_and_a_gateway_conflict_on_both() {
    let gw = res(
        "Gateway",
        "gw",
        json!({"servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}),
    );
    let spec = json!({"hosts": ["api.example.com"], "gateways": ["gw", "mesh"], "http": [{"route": [{"destination": {"host": "a"}}]}]});
    let d = run(json!([res("VirtualService", "a", spec.clone()), res("VirtualService", "b", spec), gw]));
    expect(&d, ERROR, Some("IST0109"), "spec.hosts[0]", &["default/a,default/b associated with mesh gateway"]);
    expect(&d, WARNING, None, "spec.hosts[0]", &["bound to gateway default/gw"]);
    assert_eq!(d.iter().filter(|x| x.code == Some("IST0109")).count(), 2, "{d}");
}

#[test]
fn virtual_service_host_not_served_by_its_gateway_is_ist0132() {
    let d = run(json!([
        vs(
            json!({"hosts": ["shop.example.org"], "gateways": ["gw"], "http": [{"route": [{"destination": {"host": "shop"}}]}]})
        ),
        res(
            "Gateway",
            "gw",
            json!({"servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*.example.com", "prod/shop.example.org"]}]})
        ),
    ]));
    expect(&d, WARNING, Some("IST0132"), "spec.gateways[0]",
        &["one or more host [shop.example.org] defined in VirtualService default/reviews not found in Gateway default/gw."]);
}

#[test]
fn destination_rule_for_an_unknown_host_is_an_ist0174_warning() {
    let d = run(res(
        "DestinationRule",
        "ratings",
        json!({"host": "ratings", "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}}),
    ));
    expect(
        &d,
        WARNING,
        Some("IST0174"),
        "spec.host",
        &["The host ratings defined in the DestinationRule does not match any services", "Kubernetes Service"],
    );
    expect_no_error(&d);
}

#[test]
fn subset_selecting_no_service_entry_endpoint_is_an_ist0173_warning() {
    let d = run(json!([
        res(
            "ServiceEntry",
            "ext",
            json!({"hosts": ["api.example.com"], "resolution": "STATIC",
            "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
            "endpoints": [{"address": "10.0.0.1", "labels": {"version": "v1"}}]})
        ),
        res(
            "DestinationRule",
            "ext",
            json!({"host": "api.example.com", "subsets": [
            {"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]})
        ),
    ]));
    expect(
        &d,
        WARNING,
        Some("IST0173"),
        "spec.subsets[1].labels",
        &["The Subset v2", "does not select any known workload", "503 UH"],
    );
    expect_nothing_at(&d, "spec.subsets[0].labels");
}

#[test]
fn subsets_are_checked_against_workload_entries_the_service_entry_selects() {
    let d = run(json!([
        res(
            "ServiceEntry",
            "vm",
            json!({"hosts": ["vm.example.com"], "resolution": "STATIC",
            "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}], "workloadSelector": {"labels": {"app": "vm"}}})
        ),
        res("WorkloadEntry", "vm-1", json!({"address": "10.0.0.7", "labels": {"app": "vm", "version": "v1"}})),
        res(
            "DestinationRule",
            "vm",
            json!({"host": "vm.example.com", "subsets": [
            {"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]})
        ),
    ]));
    expect(&d, WARNING, Some("IST0173"), "spec.subsets[1].labels", &["The Subset v2"]);
    expect_nothing_at(&d, "spec.subsets[0].labels");
}

#[test]
fn duplicate_subset_name_is_an_error() {
    let d = run(json!([
        vs(json!({"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]})),
        res(
            "DestinationRule",
            "reviews",
            json!({"host": "reviews", "subsets": [
            {"name": "v1", "labels": {"version": "v1"}}, {"name": "v1", "labels": {"version": "v2"}}]})
        )
    ]));
    expect(&d, ERROR, Some("IST0106"), "spec.subsets[1].name", &["duplicate subset names: v1"]);
}

#[test]
fn two_destination_rules_for_one_host_are_a_warning() {
    let d = run(json!([
        vs(json!({"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]})),
        reviews_dr(),
        res(
            "DestinationRule",
            "reviews-lb",
            json!({"host": "reviews.default.svc.cluster.local",
            "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}})
        ),
    ]));
    let w = expect(
        &d,
        WARNING,
        None,
        "spec.host",
        &["default/reviews and default/reviews-lb both configure host", "merges"],
    );
    assert_eq!(w.resource.as_ref().map(|r| r.name.as_str()), Some("reviews-lb"));
}

#[test]
fn gateway_that_does_not_exist_is_also_ist0132_like_istioctl() {
    let d = run(vs(json!({"hosts": ["api.example.com"], "gateways": ["public-gateway"],
                          "http": [{"route": [{"destination": {"host": "api"}}]}]})));
    expect(&d, ERROR, Some("IST0101"), "spec.gateways[0]", &["Referenced gateway not found"]);
    expect(
        &d,
        WARNING,
        Some("IST0132"),
        "spec.gateways[0]",
        &["one or more host [api.example.com] defined in VirtualService default/reviews not found in Gateway default/public-gateway."],
    );
}

#[test]
fn gateway_names_after_the_first_short_name_are_not_validated_as_in_istio() {
    let d = run(vs(json!({"hosts": ["a.example.com"], "gateways": ["mesh", "Bad_NS/gw"],
                          "http": [{"route": [{"destination": {"host": "a"}}]}]})));
    assert!(d.iter().all(|x| x.code != Some("IST0106")), "{d}");
    expect(&d, ERROR, Some("IST0101"), "spec.gateways[1]", &["\"Bad_NS/gw\""]);
}

#[test]
fn weight_zero_destination_beside_others_is_mr0003_info() {
    let d = run(json!([
        vs_rule(json!({"route": [{"destination": {"host": "reviews", "subset": "v1"}, "weight": 100},
                                 {"destination": {"host": "reviews", "subset": "v2"}, "weight": 0}]})),
        reviews_dr(),
    ]));
    expect(
        &d,
        INFO,
        Some("MR0003"),
        "spec.http[0].route[1].weight",
        &["destination reviews+v2 (rule #0) has weight 0 and receives no traffic"],
    );
    expect_clean(&d);
}

#[test]
fn retriable_status_codes_without_codes_is_mr0004_and_grpc_conditions_mr0005() {
    let d = run(vs_rule(
        json!({"retries": {"attempts": 3, "retryOn": "connect-failure,unavailable,cancelled,retriable-status-codes"}}),
    ));
    expect(
        &d,
        INFO,
        Some("MR0004"),
        "spec.http[0].retries.retryOn",
        &["retryOn of rule #0 lists retriable-status-codes but no status code; it retries nothing"],
    );
    expect(
        &d,
        INFO,
        Some("MR0005"),
        "spec.http[0].retries.retryOn",
        &["retryOn of rule #0 uses gRPC conditions [unavailable cancelled]; they only apply to gRPC responses"],
    );
    let d = run(vs_rule(json!({"retries": {"attempts": 3, "retryOn": "retriable-status-codes,503"}})));
    expect_nothing_at(&d, "spec.http[0].retries.retryOn");
}

#[test]
fn passthrough_subsets_are_mr0006_warnings() {
    let d = run(res(
        "DestinationRule",
        "x",
        json!({"host": "x", "trafficPolicy": {"loadBalancer": {"simple": "PASSTHROUGH"}},
        "subsets": [{"name": "v1", "labels": {"v": "1"}},
                    {"name": "v2", "labels": {"v": "2"}, "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}}]}),
    ));
    expect(
        &d,
        WARNING,
        Some("MR0006"),
        "spec.subsets[0]",
        &["subset v1 of DestinationRule default/x uses loadBalancer PASSTHROUGH; its labels do not select endpoints"],
    );
    expect_nothing_at(&d, "spec.subsets[1]");
}

#[test]
fn destination_to_a_multi_port_service_entry_needs_a_port_ist0112() {
    let se = res(
        "ServiceEntry",
        "ext",
        json!({"hosts": ["api.example.com"], "resolution": "DNS",
        "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}, {"number": 443, "name": "https", "protocol": "HTTPS"}]}),
    );
    let d = run(json!([
        vs(json!({"hosts": ["api.example.com"], "http": [{"route": [
            {"destination": {"host": "api.example.com"}, "weight": 50},
            {"destination": {"host": "api.example.com", "port": {"number": 8080}}, "weight": 50}]}]})),
        se,
    ]));
    expect(
        &d,
        ERROR,
        Some("IST0112"),
        "spec.http[0].route[0].destination",
        &["routes to a service \"api.example.com\" that exposes multiple ports [80 443]"],
    );
    expect(
        &d,
        ERROR,
        Some("IST0101"),
        "spec.http[0].route[1].destination.port.number",
        &["Referenced host:port not found: \"api.example.com:8080\""],
    );
}

/// The ServiceEntry whose ports a destination is checked against: the first visible one naming
/// the host exactly, else the first visible wildcard covering it (looked up by name since the
/// scan per destination made many services quadratic).
#[test]
fn destination_ports_come_from_the_visible_exact_service_entry_before_a_wildcard() {
    let port = |n: u32, name: &str| json!({"number": n, "name": name, "protocol": "HTTP"});
    let wildcard = res(
        "ServiceEntry",
        "wild",
        json!({"hosts": ["*.example.com"], "resolution": "NONE", "ports": [port(9090, "http")]}),
    );
    let exact_here = res(
        "ServiceEntry",
        "exact",
        json!({"hosts": ["api.example.com"], "resolution": "DNS", "ports": [port(80, "http"), port(8080, "http-alt")]}),
    );
    let exact_elsewhere = res_in(
        "ServiceEntry",
        "other",
        "exact",
        json!({"hosts": ["api.example.com"], "resolution": "DNS", "exportTo": ["."], "ports": [port(80, "http"), port(8080, "http-alt")]}),
    );
    let route = || {
        vs(json!({"hosts": ["api.example.com"], "http": [{"route": [{"destination": {"host": "api.example.com"}}]}]}))
    };
    // Exact and visible, listed after the wildcard: its two ports make a port-less destination IST0112.
    let d = run(json!([wildcard.clone(), exact_here, route()]));
    expect(&d, ERROR, Some("IST0112"), "spec.http[0].route[0].destination", &["exposes multiple ports [80 8080]"]);
    // The exact one is exported only to its own namespace: the wildcard's single port serves.
    let d = run(json!([exact_elsewhere, wildcard, route()]));
    expect_nothing_at(&d, "spec.http[0].route[0].destination");
}

#[test]
fn gateway_route_without_subset_to_a_host_routed_by_subset_elsewhere_is_ist0140() {
    let d = run(json!([
        res(
            "VirtualService",
            "edge",
            json!({"hosts": ["shop.example.com"], "gateways": ["gw"],
            "http": [{"route": [{"destination": {"host": "reviews"}}]}]})
        ),
        res(
            "VirtualService",
            "reviews",
            json!({"hosts": ["reviews"],
            "http": [{"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}]})
        ),
        reviews_dr(),
        res(
            "Gateway",
            "gw",
            json!({"servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*.example.com"]}]})
        ),
    ]));
    expect(
        &d,
        WARNING,
        Some("IST0140"),
        "spec.http[0].route[0].destination",
        &["Subset in virtual service default/reviews has no effect on ingress gateway default/edge requests"],
    );
}

#[test]
fn tcp_service_entry_port_without_addresses_is_warned() {
    let d = run(res(
        "ServiceEntry",
        "db",
        json!({"hosts": ["db.example.com"], "resolution": "DNS",
        "ports": [{"number": 5432, "name": "pg", "protocol": "TCP"}]}),
    ));
    expect(&d, WARNING, Some("IST0133"), "spec.ports[0].protocol", &["addresses are required for ports serving TCP"]);
    expect_no_error(&d);
}

#[test]
fn identical_findings_are_reported_once() {
    let d = run(vs_rule(json!({"match": [{"uri": {"regex": "("}}, {"uri": {"regex": "("}}]})));
    let n = d.iter().filter(|x| x.path == "spec.http[0].match[0].uri.regex").count();
    assert_eq!(n, 1, "{d}");
}

// === DestinationRule webhook ===

#[test]
fn destination_rule_host_is_required_and_valid() {
    let d = run(res("DestinationRule", "x", json!({"subsets": [{"name": "v1", "labels": {"a": "b"}}]})));
    expect(&d, ERROR, Some("IST0106"), "spec.host", &["host is required"]);
    let d = run(res("DestinationRule", "x", json!({"host": "a.*.com"})));
    expect(&d, ERROR, Some("IST0106"), "spec.host", &["invalid"]);
}

#[test]
fn load_balancer_simple_must_be_known_and_least_conn_is_deprecated() {
    let d = run(res(
        "DestinationRule",
        "x",
        json!({"host": "x", "trafficPolicy": {"loadBalancer": {"simple": "FASTEST"}},
        "subsets": [{"name": "v1", "labels": {"a": "b"}, "trafficPolicy": {"loadBalancer": {"simple": "LEAST_CONN"}}}]}),
    ));
    expect(
        &d,
        ERROR,
        Some("IST0106"),
        "spec.trafficPolicy.loadBalancer.simple",
        &["unknown value \"FASTEST\"", "LEAST_REQUEST"],
    );
    expect(&d, WARNING, None, "spec.subsets[0].trafficPolicy.loadBalancer.simple", &["LEAST_CONN is deprecated"]);
}

#[test]
fn consistent_hash_takes_exactly_one_key() {
    let d = run(res(
        "DestinationRule",
        "x",
        json!({"host": "x", "trafficPolicy": {"loadBalancer": {"consistentHash":
        {"httpHeaderName": "x-user", "useSourceIp": true}}}}),
    ));
    expect(
        &d,
        ERROR,
        Some("IST0106"),
        "spec.trafficPolicy.loadBalancer.consistentHash",
        &["only one of httpHeaderName"],
    );
    let d = run(res(
        "DestinationRule",
        "x",
        json!({"host": "x", "trafficPolicy": {"loadBalancer": {"consistentHash": {}}}}),
    ));
    expect(&d, WARNING, None, "spec.trafficPolicy.loadBalancer.consistentHash", &["no hash key"]);
}

#[test]
fn ring_hash_and_maglev_are_exclusive_and_maglev_size_prime() {
    let d = run(res(
        "DestinationRule",
        "x",
        json!({"host": "x", "trafficPolicy": {"loadBalancer": {"consistentHash":
        {"httpHeaderName": "x-user", "ringHash": {"minimumRingSize": 1024}, "maglev": {"tableSize": 1000}}}}}),
    ));
    expect(
        &d,
        ERROR,
        Some("IST0106"),
        "spec.trafficPolicy.loadBalancer.consistentHash",
        &["only one of ringHash or maglev"],
    );
    expect(&d, ERROR, Some("IST0106"), "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize", &["prime"]);
}

#[test]
fn locality_distribute_weights_must_sum_to_100() {
    let d = run(res(
        "DestinationRule",
        "x",
        json!({"host": "x", "trafficPolicy": {"loadBalancer": {"localityLbSetting":
        {"distribute": [{"from": "us-west/*", "to": {"us-west/*": 70, "us-east/*": 20}}]}}}}),
    ));
    expect(
        &d,
        ERROR,
        Some("IST0106"),
        "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to",
        &["total locality weight 90 != 100"],
    );
}

#[test]
fn locality_distribute_and_failover_are_exclusive() {
    let d = run(res(
        "DestinationRule",
        "x",
        json!({"host": "x", "trafficPolicy": {"loadBalancer": {"localityLbSetting":
        {"distribute": [{"from": "us-west/*", "to": {"us-west/*": 100}}], "failover": [{"from": "us-west", "to": "us-east"}]}}}}),
    ));
    expect(
        &d,
        ERROR,
        Some("IST0106"),
        "spec.trafficPolicy.loadBalancer.localityLbSetting",
        &["can not simultaneously specify 'distribute' and 'failover'"],
    );
}

#[test]
fn locality_failover_without_outlier_detection_is_warned() {
    let d = run(res(
        "DestinationRule",
        "x",
        json!({"host": "x", "trafficPolicy": {"loadBalancer": {"localityLbSetting":
        {"failover": [{"from": "us-west", "to": "us-west"}]}}}}),
    ));
    expect(
        &d,
        WARNING,
        Some("IST0133"),
        "spec.trafficPolicy.loadBalancer.localityLbSetting",
        &["outlier detection policy must be provided"],
    );
    expect(
        &d,
        ERROR,
        Some("IST0106"),
        "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]",
        &["different regions"],
    );
}

#[test]
fn connection_pool_values_must_be_non_negative_with_valid_durations() {
    let d = run(res(
        "DestinationRule",
        "x",
        json!({"host": "x", "trafficPolicy": {"connectionPool": {
        "tcp": {"maxConnections": -1, "connectTimeout": "0.5ms"},
        "http": {"http2MaxRequests": -5, "h2UpgradePolicy": "SOMETIMES"}}}}),
    ));
    expect(
        &d,
        ERROR,
        Some("IST0106"),
        "spec.trafficPolicy.connectionPool.tcp.maxConnections",
        &["max connections must be non-negative"],
    );
    expect(&d, ERROR, Some("IST0106"), "spec.trafficPolicy.connectionPool.tcp.connectTimeout", &["greater than 1ms"]);
    expect(&d, ERROR, Some("IST0106"), "spec.trafficPolicy.connectionPool.http.http2MaxRequests", &["non-negative"]);
    expect(
        &d,
        ERROR,
        Some("IST0106"),
        "spec.trafficPolicy.connectionPool.http.h2UpgradePolicy",
        &["SOMETIMES", "DO_NOT_UPGRADE"],
    );
}

#[test]
fn outlier_detection_percentages_and_durations_are_bounded() {
    let d = run(res(
        "DestinationRule",
        "x",
        json!({"host": "x", "trafficPolicy": {"outlierDetection": {
        "maxEjectionPercent": 150, "minHealthPercent": -1, "interval": "0s", "consecutiveErrors": 3}}}),
    ));
    expect(
        &d,
        ERROR,
        Some("IST0106"),
        "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
        &["percentage 150 is not in range 0..100"],
    );
    expect(&d, ERROR, Some("IST0106"), "spec.trafficPolicy.outlierDetection.minHealthPercent", &["not in range"]);
    expect(&d, ERROR, Some("IST0106"), "spec.trafficPolicy.outlierDetection.interval", &["greater than 1ms"]);
    expect(&d, WARNING, Some("IST0133"), "spec.trafficPolicy.outlierDetection.consecutiveErrors", &["deprecated"]);
}

#[test]
fn client_tls_mode_must_be_known_and_mutual_needs_certificates() {
    let d = run(res(
        "DestinationRule",
        "x",
        json!({"host": "x", "trafficPolicy": {"tls": {"mode": "STRICT"},
        "portLevelSettings": [{"port": {"number": 443}, "tls": {"mode": "MUTUAL"}}]}}),
    ));
    expect(&d, ERROR, Some("IST0106"), "spec.trafficPolicy.tls.mode", &["unknown value \"STRICT\"", "ISTIO_MUTUAL"]);
    expect(
        &d,
        ERROR,
        Some("IST0106"),
        "spec.trafficPolicy.portLevelSettings[0].tls.clientCertificate",
        &["client certificate required"],
    );
}

#[test]
fn port_level_settings_need_a_port() {
    let d = run(res(
        "DestinationRule",
        "x",
        json!({"host": "x", "trafficPolicy": {"portLevelSettings": [
        {"loadBalancer": {"simple": "RANDOM"}}]}}),
    ));
    expect(
        &d,
        ERROR,
        Some("IST0106"),
        "spec.trafficPolicy.portLevelSettings[0].port",
        &["portTrafficPolicy must have valid port"],
    );
}

#[test]
fn subset_name_must_be_a_dns_label_and_labels_valid() {
    let d = run(res(
        "DestinationRule",
        "x",
        json!({"host": "x", "subsets": [
        {"name": "v1.0", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"-bad": "x"}}, {"name": "all"}]}),
    ));
    expect(&d, ERROR, Some("IST0106"), "spec.subsets[0].name", &["subset name is invalid: v1.0"]);
    expect(&d, ERROR, Some("IST0106"), "spec.subsets[1].labels.-bad", &["invalid tag key"]);
    expect(&d, INFO, None, "spec.subsets[2].labels", &["no labels"]);
}

#[test]
fn empty_traffic_policy_is_rejected() {
    let d = run(res("DestinationRule", "x", json!({"host": "x", "trafficPolicy": {}})));
    expect(&d, ERROR, Some("IST0106"), "spec.trafficPolicy", &["traffic policy must have at least one field"]);
}

// === ServiceEntry and WorkloadEntry ===

#[test]
fn service_entry_needs_hosts_and_rejects_a_lone_star() {
    let d = run(res("ServiceEntry", "x", json!({"ports": [{"number": 80, "name": "http", "protocol": "HTTP"}]})));
    expect(&d, ERROR, Some("IST0106"), "spec.hosts", &["at least one host"]);
    let d = run(res(
        "ServiceEntry",
        "x",
        json!({"hosts": ["*"], "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}]}),
    ));
    expect(&d, ERROR, Some("IST0106"), "spec.hosts[0]", &["invalid host *"]);
}

#[test]
fn service_entry_ports_must_be_unique_by_number_and_name() {
    let d = run(res(
        "ServiceEntry",
        "x",
        json!({"hosts": ["a.example.com"], "ports": [
        {"number": 80, "name": "http", "protocol": "HTTP"}, {"number": 80, "name": "http", "protocol": "HTTP"}]}),
    ));
    expect(&d, ERROR, Some("IST0106"), "spec.ports[1].name", &["service entry port name \"http\" already defined"]);
    expect(&d, ERROR, Some("IST0106"), "spec.ports[1].number", &["service entry port 80 already defined"]);
}

#[test]
fn service_entry_protocol_must_be_known() {
    let d = run(res(
        "ServiceEntry",
        "x",
        json!({"hosts": ["a.example.com"], "ports": [
        {"number": 80, "name": "web", "protocol": "WEB"}, {"number": 81, "name": "grpc-web", "protocol": "grpc-web"}]}),
    ));
    expect(&d, ERROR, Some("IST0106"), "spec.ports[0].protocol", &["unsupported protocol: WEB"]);
    expect_nothing_at(&d, "spec.ports[1].protocol");
}

#[test]
fn service_entry_resolution_and_location_must_be_known() {
    let d = run(res(
        "ServiceEntry",
        "x",
        json!({"hosts": ["a.example.com"], "resolution": "DNS_ONLY", "location": "OUTSIDE",
        "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}]}),
    ));
    expect(&d, ERROR, Some("IST0106"), "spec.resolution", &["unknown value \"DNS_ONLY\"", "DYNAMIC_DNS"]);
    expect(&d, ERROR, Some("IST0106"), "spec.location", &["unknown value \"OUTSIDE\"", "MESH_INTERNAL"]);
}

#[test]
fn static_endpoints_must_be_ip_addresses_or_unix_sockets() {
    let d = run(res(
        "ServiceEntry",
        "x",
        json!({"hosts": ["a.example.com"], "resolution": "STATIC",
        "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
        "endpoints": [{"address": "10.0.0.1"}, {"address": "db.example.com"}, {"address": "unix://relative"}]}),
    ));
    expect_nothing_at(&d, "spec.endpoints[0].address");
    expect(&d, ERROR, Some("IST0106"), "spec.endpoints[1].address", &["not a valid IP address"]);
    expect(&d, ERROR, Some("IST0106"), "spec.endpoints[2].address", &["not an absolute path"]);
}

#[test]
fn static_without_endpoints_or_selector_is_warned() {
    let d = run(res(
        "ServiceEntry",
        "x",
        json!({"hosts": ["a.example.com"], "resolution": "STATIC",
        "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}]}),
    ));
    expect(&d, WARNING, None, "spec.endpoints", &["no endpoints"]);
    expect_no_error(&d);
}

#[test]
fn dns_resolution_rejects_wildcard_hosts_without_endpoints() {
    let d = run(res(
        "ServiceEntry",
        "x",
        json!({"hosts": ["*.example.com"], "resolution": "DNS",
        "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}]}),
    ));
    expect(&d, ERROR, Some("IST0106"), "spec.hosts[0]", &["hosts must be FQDN", "resolution mode DNS"]);
}

#[test]
fn endpoints_and_workload_selector_are_exclusive() {
    let d = run(res(
        "ServiceEntry",
        "x",
        json!({"hosts": ["a.example.com"], "resolution": "STATIC",
        "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}], "workloadSelector": {"labels": {"app": "a"}},
        "endpoints": [{"address": "10.0.0.1"}]}),
    ));
    expect(&d, ERROR, Some("IST0106"), "spec.workloadSelector", &["only one of WorkloadSelector or Endpoints"]);
}

#[test]
fn endpoint_port_names_must_name_declared_ports() {
    let d = run(res(
        "ServiceEntry",
        "x",
        json!({"hosts": ["a.example.com"], "resolution": "STATIC",
        "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
        "endpoints": [{"address": "10.0.0.1", "ports": {"https": 8443}}]}),
    ));
    expect(
        &d,
        ERROR,
        Some("IST0106"),
        "spec.endpoints[0].ports.https",
        &["endpoint port 8443 is not defined by the service entry"],
    );
}

#[test]
fn multiple_hosts_need_http_or_tls_ports_unless_resolution_none() {
    let d = run(res(
        "ServiceEntry",
        "x",
        json!({"hosts": ["a.example.com", "b.example.com"], "resolution": "DNS",
        "ports": [{"number": 5432, "name": "pg", "protocol": "TCP"}]}),
    ));
    expect(&d, ERROR, Some("IST0106"), "spec.hosts", &["multiple hosts provided with non-HTTP, non-TLS ports"]);
}

#[test]
fn workload_entry_needs_an_address() {
    let d = run(res("WorkloadEntry", "vm", json!({"labels": {"app": "vm"}})));
    expect(&d, ERROR, Some("IST0106"), "spec.address", &["address is required"]);
}

// === Gateway ===

#[test]
fn gateway_needs_at_least_one_server() {
    let d = run(res("Gateway", "gw", json!({"selector": {"istio": "ingressgateway"}})));
    expect(&d, ERROR, Some("IST0106"), "spec.servers", &["at least one server"]);
}

#[test]
fn server_port_number_protocol_and_name_are_checked() {
    let d = run(res(
        "Gateway",
        "gw",
        json!({"servers": [
        {"port": {"number": 0, "protocol": "QUIC"}, "hosts": ["*.example.com"]}]}),
    ));
    expect(&d, ERROR, Some("IST0106"), "spec.servers[0].port.protocol", &["invalid protocol \"QUIC\""]);
    expect(&d, ERROR, Some("IST0106"), "spec.servers[0].port.number", &["port number 0"]);
    expect(&d, ERROR, Some("IST0106"), "spec.servers[0].port.name", &["port name must be set"]);
}

#[test]
fn server_hosts_need_the_namespace_slash_fqdn_form() {
    let d = run(res(
        "Gateway",
        "gw",
        json!({"servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"},
        "hosts": ["prod/api.example.com", "reviews", "Bad_NS/a.example.com", "*.example.com", "a*.example.com"]}]}),
    ));
    expect_nothing_at(&d, "spec.servers[0].hosts[0]");
    expect(&d, ERROR, Some("IST0106"), "spec.servers[0].hosts[1]", &["short names (non FQDN) are not allowed"]);
    expect(&d, ERROR, Some("IST0106"), "spec.servers[0].hosts[2]", &["invalid namespace value \"Bad_NS\" in gateway"]);
    expect_nothing_at(&d, "spec.servers[0].hosts[3]");
    expect(&d, ERROR, Some("IST0106"), "spec.servers[0].hosts[4]", &["partial wildcard"]);
}

#[test]
fn https_server_needs_tls_settings() {
    let d = run(res(
        "Gateway",
        "gw",
        json!({"servers": [{"port": {"number": 443, "name": "https", "protocol": "HTTPS"},
        "hosts": ["*.example.com"]}]}),
    ));
    expect(&d, ERROR, Some("IST0106"), "spec.servers[0]", &["server must have TLS settings for HTTPS/TLS protocols"]);
}

#[test]
fn simple_tls_needs_a_certificate_or_a_credential_name() {
    let d = run(res(
        "Gateway",
        "gw",
        json!({"servers": [{"port": {"number": 443, "name": "https", "protocol": "HTTPS"},
        "hosts": ["*.example.com"], "tls": {"mode": "SIMPLE"}}]}),
    ));
    expect(
        &d,
        ERROR,
        Some("IST0106"),
        "spec.servers[0].tls.serverCertificate",
        &["SIMPLE TLS requires a server certificate"],
    );
    expect(&d, ERROR, Some("IST0106"), "spec.servers[0].tls.privateKey", &["SIMPLE TLS requires a private key"]);
    let d = run(res(
        "Gateway",
        "gw",
        json!({"servers": [{"port": {"number": 443, "name": "https", "protocol": "HTTPS"},
        "hosts": ["*.example.com"], "tls": {"mode": "SIMPLE", "credentialName": "cert"}}]}),
    ));
    expect_clean(&d);
}

#[test]
fn https_redirect_belongs_on_http_servers() {
    let d = run(res(
        "Gateway",
        "gw",
        json!({"servers": [{"port": {"number": 443, "name": "https", "protocol": "HTTPS"},
        "hosts": ["*.example.com"], "tls": {"mode": "SIMPLE", "credentialName": "cert", "httpsRedirect": true}}]}),
    ));
    expect(
        &d,
        WARNING,
        Some("IST0133"),
        "spec.servers[0].tls.httpsRedirect",
        &["should only be used with http servers"],
    );
    let d = run(res(
        "Gateway",
        "gw",
        json!({"servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"},
        "hosts": ["*.example.com"], "tls": {"httpsRedirect": true}}]}),
    ));
    expect_clean(&d);
}

// === Sidecar ===

#[test]
fn sidecar_egress_hosts_need_the_namespace_slash_host_form() {
    let d = run(res(
        "Sidecar",
        "default",
        json!({"egress": [{"hosts": ["./*", "istio-system/*", "reviews.default.svc.cluster.local"]}]}),
    ));
    expect_nothing_at(&d, "spec.egress[0].hosts[0]");
    expect(&d, ERROR, Some("IST0106"), "spec.egress[0].hosts[2]", &["host must be of form namespace/dnsName"]);
}

#[test]
fn sidecar_outbound_traffic_policy_mode_must_be_known() {
    let d = run(res("Sidecar", "default", json!({"outboundTrafficPolicy": {"mode": "DENY_ALL"}})));
    expect(
        &d,
        ERROR,
        Some("IST0106"),
        "spec.outboundTrafficPolicy.mode",
        &["unknown value \"DENY_ALL\"", "REGISTRY_ONLY"],
    );
}

#[test]
fn two_sidecars_without_selector_in_one_namespace_are_ist0111() {
    let d = run(json!([
        res("Sidecar", "a", json!({"outboundTrafficPolicy": {"mode": "ALLOW_ANY"}})),
        res("Sidecar", "b", json!({"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}})),
        res_in("Sidecar", "prod", "c", json!({"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}})),
    ]));
    expect(
        &d,
        ERROR,
        Some("IST0111"),
        "spec.workloadSelector",
        &["The Sidecars [a b] in namespace \"default\" have no workload selector"],
    );
    assert_eq!(d.iter().filter(|x| x.code == Some("IST0111")).count(), 2, "{d}");
}

// === Settings ===

#[test]
fn settings_gateway_template_header_and_policy_are_checked() {
    let d = run_with_settings(
        json!([]),
        json!({"gateway": "public-gateway", "clusterTemplate": "outbound|{port}",
        "routingHeader": "X-Cluster", "outboundTrafficPolicy": "BLOCK"}),
    );
    expect(&d, ERROR, None, "settings.gateway", &["\"mesh\" or \"<namespace>/<name>\""]);
    expect(&d, ERROR, None, "settings.clusterTemplate", &["{host}"]);
    expect(&d, ERROR, None, "settings.routingHeader", &["lowercase header name"]);
    expect(&d, ERROR, None, "settings.outboundTrafficPolicy", &["unknown value \"BLOCK\""]);
    assert!(d.iter().all(|x| x.resource.is_none()), "{d}");
}

#[test]
fn settings_gateway_missing_from_the_configuration_is_warned() {
    let d = run_with_settings(json!([]), json!({"gateway": "istio-system/ingress"}));
    expect(&d, WARNING, None, "settings.gateway", &["no Gateway istio-system/ingress"]);
    expect_no_error(&d);
}

// === The seed examples ===

/// Validates each seed example alone and checks its real mistakes are found. The examples live in
/// `examples/json` (set `MESHROUTE_EXAMPLES` to read them elsewhere); without them the test only
/// says so.
#[test]
fn seed_examples_report_their_real_mistakes() {
    let dir = std::env::var("MESHROUTE_EXAMPLES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/json"));
    if !dir.is_dir() {
        eprintln!("no seed examples at {}: skipped", dir.display());
        return;
    }
    let check = |file: &str| -> (Diagnostics, Diagnostics) {
        let text = std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let (bundle, loaded) = meshroute::load_json(&text);
        (loaded, validate(&bundle))
    };

    let (_, d) = check("fault-injection.json");
    expect(&d, WARNING, Some("IST0130"), "spec.http[1]", &["rule #1 not used"]);

    let (_, d) = check("traffic-mirroring.json");
    expect(&d, ERROR, Some("IST0101"), "spec.http[0].mirror.subset", &["order-service+v2-canary"]);
    expect(
        &d,
        WARNING,
        Some("IST0133"),
        "spec.http[0].mirrorPercent",
        &["Schema validation warning: using deprecated setting \"mirrorPercent\", use \"mirrorPercentage\" instead"],
    );
    expect(
        &d,
        INFO,
        Some("MR0003"),
        "spec.http[0].route[1].weight",
        &["destination order-service+v2 (rule #0) has weight 0"],
    );

    let (_, d) = check("gateway-vs-binding.json");
    expect(&d, ERROR, Some("IST0101"), "spec.gateways[0]", &["\"public-gateway\"", "default/public-gateway"]);
    expect(&d, WARNING, Some("IST0132"), "spec.gateways[0]", &["[api.example.com]", "Gateway default/public-gateway."]);

    let (_, d) = check("retry-config.json");
    expect(&d, INFO, Some("MR0004"), "spec.http[0].retries.retryOn", &["retries nothing"]);
    expect(&d, INFO, Some("MR0005"), "spec.http[0].retries.retryOn", &["[unavailable cancelled]"]);
    expect_no_error(&d);

    let (_, d) = check("consistent-hash.json");
    expect(&d, WARNING, Some("MR0006"), "spec.subsets[0]", &["subset v1"]);
    expect(&d, WARNING, Some("MR0006"), "spec.subsets[1]", &["subset v2"]);

    let (loaded, _) = check("external-https.json");
    expect(&loaded, WARNING, Some("MR0002"), "spec.tls", &["unknown field \"spec.tls\""]);

    for (file, path, subset) in [
        ("basic-route.json", "spec.http[0].route[0].destination.subset", "product-service+v1"),
        ("header-route.json", "spec.http[0].route[0].destination.subset", "product-service+v2"),
        ("weight-route.json", "spec.http[0].route[1].destination.subset", "product-service+v2"),
        ("uri-route.json", "spec.http[0].route[0].destination.subset", "product-service+stable"),
    ] {
        let (_, d) = check(file);
        expect(&d, ERROR, Some("IST0101"), path, &[subset]);
    }

    // Together, the Gateway in istio-system is named in the hint.
    let mut all = Vec::new();
    for f in ["gateway-vs-binding.json", "ingress-gateway.json"] {
        all.push(serde_json::from_slice::<Value>(&std::fs::read(dir.join(f)).unwrap()).unwrap());
    }
    let d = run(Value::Array(all));
    expect(&d, ERROR, Some("IST0101"), "spec.gateways[0]", &["write \"istio-system/public-gateway\""]);
}

// === Linear checks on many rules (the hashed searches find what pairwise comparison found) ===

#[test]
fn header_only_duplicates_among_many_distinct_header_rules_are_found_ist0131() {
    // Blocks without a URI all looked alike to the old per-URI buckets; the duplicate of rule 3
    // must still be found among 500 distinct ones, and only it.
    let mut http: Vec<Value> = (0..500)
        .map(|i| json!({"match": [{"headers": {"x-t": {"exact": format!("t{i}")}}}], "route": [{"destination": {"host": "a"}}]}))
        .collect();
    http.push(json!({"match": [{"name": "again", "headers": {"x-t": {"exact": "t3"}}}], "route": [{"destination": {"host": "b"}}]}));
    let d = run(vs(json!({"hosts": ["reviews"], "http": http})));
    expect(&d, INFO, Some("IST0131"), "spec.http[500].match[0]", &["rule #500 match \"again\" is not used", "rule #3"]);
    expect(&d, WARNING, Some("IST0130"), "spec.http[500]", &["rule #500 not used"]);
    assert_eq!(d.iter().filter(|x| x.code == Some("IST0131")).count(), 1, "{d}");
}

#[test]
fn every_rule_after_a_rule_without_match_is_reported_once_ist0130() {
    let http: Vec<Value> = (0..300).map(|_| json!({"route": [{"destination": {"host": "a"}}]})).collect();
    let d = run(vs(json!({"hosts": ["reviews"], "http": http})));
    let paths: Vec<&str> = d.iter().filter(|x| x.code == Some("IST0130")).map(|x| x.path.as_str()).collect();
    let want: Vec<String> = (1..300).map(|i| format!("spec.http[{i}]")).collect();
    assert_eq!(paths, want);
}
