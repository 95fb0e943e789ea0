//! Proves the shared test support (tests/support) against itself and a real
//! Envoy 1.40 with a plain static config (tests/fixtures/envoy-static.yaml).
// Needs processes and sockets: native only (`make test-wasm` builds every
// test target of a crate for wasm32-unknown-unknown).
#![cfg(not(target_arch = "wasm32"))]

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;
use support::*;

fn start_envoy(a: &Upstream, b: &Upstream) -> Envoy {
    Envoy::start(
        &fixture("envoy-static.yaml"),
        &[("UPSTREAM_A_PORT", &a.port().to_string()), ("UPSTREAM_B_PORT", &b.port().to_string())],
    )
}

#[test]
fn upstream_records_requests_and_answers_with_its_name() {
    let up = Upstream::named("alpha");
    let resp = http("POST", up.port(), "/echo?q=1", &[("X-Custom", "Yes"), ("Host", "svc.example")], b"hello");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-upstream"), Some("alpha"));
    assert_eq!(resp.text(), "alpha");

    let reqs = up.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.attempt, 1);
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/echo?q=1");
    assert_eq!(r.authority, "svc.example");
    assert_eq!(r.header("x-custom"), Some("Yes"));
    assert!(r.headers.iter().all(|(n, _)| *n == n.to_ascii_lowercase()));
    assert_eq!(r.body, b"hello");
    assert_eq!(up.attempts(), 1);
}

#[test]
fn upstream_keep_alive_and_chunked_bodies() {
    let up = Upstream::start(Behaviour::named("ka").body("custom").header("x-extra", "1"));
    let mut conn = Conn::open(up.port(), Duration::from_secs(5)).unwrap();
    for i in 0..3 {
        let resp = conn.request("GET", &format!("/r{i}"), &[], b"", Duration::from_secs(5)).unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.text(), "custom");
        assert_eq!(resp.header("x-extra"), Some("1"));
    }
    // A chunked request body on the same connection, written by hand.
    let mut raw = TcpStream::connect(("127.0.0.1", up.port())).unwrap();
    raw.write_all(
        b"PUT /chunked HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n\
          5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\ntrailer: t\r\n\r\n",
    )
    .unwrap();
    let reqs = up.wait_for_requests(4, Duration::from_secs(5));
    assert_eq!(reqs[3].method, "PUT");
    assert_eq!(reqs[3].body, b"hello world");
    assert_eq!(reqs.iter().map(|r| r.attempt).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
}

#[test]
fn upstream_scripts_failures_and_delays() {
    let up = Upstream::start(Behaviour::named("flaky").fail_first(2, 503));
    let statuses: Vec<u16> = (0..3).map(|_| http("GET", up.port(), "/", &[], b"").status).collect();
    assert_eq!(statuses, vec![503, 503, 200]);
    assert_eq!(up.attempts(), 3);

    // A delay far past the client's timeout (load only makes answers later, so neither check can
    // flake): the scripted one times the client out, the per-request override answers at once.
    up.set_behaviour(Behaviour::named("slow").delay(Duration::from_secs(60)));
    let err = try_http("GET", up.port(), "/", &[], b"", Duration::from_millis(100)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    let resp = http("GET", up.port(), "/", &[("x-test-delay-ms", "0"), ("x-test-status", "418")], b"");
    assert_eq!(resp.status, 418);

    up.reset();
    assert_eq!(up.attempts(), 0);
    assert!(up.requests().is_empty());
}

#[test]
fn binomial_bounds_are_sane() {
    let (lo, hi) = binomial_bounds(1000, 0.5, 5.0);
    assert!((415..=425).contains(&lo) && (575..=585).contains(&hi), "{lo}..{hi}");
    assert_eq!(binomial_bounds(50, 0.0, 5.0), (0, 0));
    assert_eq!(binomial_bounds(50, 1.0, 5.0), (50, 50));
    // Small n·p: the exact tail never gives a negative or impossible bound.
    let (lo, hi) = binomial_bounds(100, 0.01, 5.0);
    assert_eq!(lo, 0);
    assert!((5..=10).contains(&hi), "{hi}");
    assert!((normal_upper_tail(5.0) - 2.866_5e-7).abs() < 1e-9);
    assert_binomial("heads", 500, 1000, 0.5);
}

#[test]
fn envoy_proxies_to_static_upstreams() {
    let a = Upstream::named("a");
    let b = Upstream::named("b");
    let envoy = start_envoy(&a, &b);
    let port = envoy.port("LISTENER_PORT");

    let resp = http("GET", port, "/hello", &[("host", "example.test")], b"");
    assert_eq!(resp.status, 200, "{}", envoy.log_tail(30));
    assert_eq!(resp.header("x-upstream"), Some("a"));
    assert_eq!(resp.text(), "a");
    let seen = a.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/hello");
    assert_eq!(seen[0].authority, "example.test");
    assert!(seen[0].header("x-request-id").is_some());

    let resp = http("POST", port, "/b/x", &[], b"payload");
    assert_eq!(resp.header("x-upstream"), Some("b"));
    assert_eq!(b.requests()[0].body, b"payload");

    // Envoy reuses its upstream connections: many requests over keep-alive.
    for _ in 0..20 {
        assert_eq!(http("GET", port, "/", &[], b"").status, 200);
    }
    assert_eq!(a.attempts(), 21);
    assert_eq!(envoy.stat("cluster.upstream_a.upstream_rq_200"), Some(21));
    assert_eq!(envoy.stat("cluster.upstream_b.upstream_rq_200"), Some(1));
    assert_eq!(envoy.stat("no.such.stat"), None);
    assert!(envoy.admin_get("/server_info").contains("1.40"));
    // Envoy flushes its log file every 50 ms (--file-flush-interval-msec), so give it a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !envoy.log().contains("starting main dispatch loop") {
        assert!(std::time::Instant::now() < deadline, "{}", envoy.log_tail(30));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn envoy_cluster_header_retries_and_timeouts() {
    let a = Upstream::start(Behaviour::named("a").fail_first(2, 503));
    let b = Upstream::named("b");
    let envoy = start_envoy(&a, &b);
    let port = envoy.port("LISTENER_PORT");

    let resp = http("GET", port, "/by-header", &[("x-meshroute-cluster", "upstream_b")], b"");
    assert_eq!(resp.header("x-upstream"), Some("b"));
    // Missing header / unknown cluster: 503 (see docs/envoy-findings.md §3).
    assert_eq!(http("GET", port, "/by-header", &[], b"").status, 503);
    assert_eq!(envoy.stat("http.ingress.no_cluster"), Some(1));

    // Route retry policy: 503, 503, then 200 on the third attempt.
    let resp = http("GET", port, "/retry", &[], b"");
    assert_eq!(resp.status, 200);
    assert_eq!(a.attempts(), 3);
    assert_eq!(envoy.stat("cluster.upstream_a.upstream_rq_retry"), Some(2));

    // Route timeout 2 s vs. an upstream that answers after 3 s: 504.
    a.set_behaviour(Behaviour::named("a").delay(Duration::from_secs(3)));
    let resp = http("GET", port, "/slow", &[], b"");
    assert_eq!(resp.status, 504);
    // Not before the timeout; and before the upstream's answer at 3 s (else a 200), by Envoy's count.
    assert!(resp.elapsed >= Duration::from_millis(1900), "{:?}", resp.elapsed);
    assert_eq!(envoy.stat("cluster.upstream_a.upstream_rq_timeout"), Some(1));
    let access_log = envoy.dir().join("access.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(&access_log).unwrap_or_default().contains("/slow") {
        assert!(std::time::Instant::now() < deadline, "no access log line for /slow");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn envoy_start_failure_reports_the_log() {
    let result = std::panic::catch_unwind(|| Envoy::start("admin: {{ADMIN_PORT}}\nthis is: [not, valid envoy\n", &[]));
    let err = result.err().expect("a bad config must fail to start");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("Envoy exited during startup"), "{msg}");
    assert!(msg.to_lowercase().contains("error"), "{msg}");
}

#[test]
fn envoy_template_placeholders() {
    let mut vars = std::collections::HashMap::new();
    vars.insert("A".to_string(), "1".to_string());
    assert_eq!(render("x{{A}}y{{ A }}", &vars).unwrap(), "x1y1");
    assert!(render("{{B}}", &vars).unwrap_err().contains("{{B}}"));
    assert!(envoy_bin().is_file());
}

#[test]
fn envoy_binds_its_own_ports_and_the_harness_reads_them_back() {
    let a = Upstream::named("a");
    let b = Upstream::named("b");
    // Two at once: with ports picked and released by the harness these could collide.
    let (one, two) = (start_envoy(&a, &b), start_envoy(&a, &b));
    for envoy in [&one, &two] {
        let config = std::fs::read_to_string(envoy.dir().join("envoy.yaml")).unwrap();
        assert!(!config.contains("{{"), "every placeholder rendered");
        assert_eq!(config.matches("port_value: 0 ").count(), 2, "admin and listener left to Envoy:\n{config}");
        let port = envoy.port("LISTENER_PORT");
        assert_ne!(port, 0);
        assert_eq!(envoy.listener_port("main"), port);
        assert_eq!(http("GET", port, "/", &[], b"").header("x-upstream"), Some("a"));
        assert!(envoy.admin_get("/server_info").contains("\"state\": \"LIVE\""));
    }
    assert_ne!(one.port("LISTENER_PORT"), two.port("LISTENER_PORT"));
    assert_ne!(one.admin_port(), two.admin_port());
}

#[test]
fn a_port_placeholder_outside_a_listener_address_needs_a_value() {
    let template = "admin: {address: {socket_address: {address: 127.0.0.1, port_value: {{ADMIN_PORT}}}}}\n\
                    static_resources:\n  clusters:\n  - name: c\n    load_assignment: {cluster_name: c, endpoints: [{lb_endpoints: \
                    [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{C_PORT}}}}}}]}]}\n";
    let result = std::panic::catch_unwind(|| Envoy::start(template, &[]));
    let message = *result.err().expect("must fail").downcast::<String>().expect("a message");
    assert!(message.contains("{{C_PORT}} has no value"), "{message}");
}
