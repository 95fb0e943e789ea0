//! End to end: TCP and TLS routes → `meshroute envoy` → a real Envoy → upstreams on 127.0.0.1.
//! Istio's tcp-traffic-shifting task (its own `samples/tcp-echo` resources), SNI passthrough
//! through a Gateway, and the sidecar's TLS listener telling services apart by SNI
//! (docs/semantics.md R190–R199, R230–R239).
//!
//! Skips loudly without Envoy or the filter's Wasm module locally; fails under `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;
use support::*;

// === helpers ===

fn temp_dir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("meshroute-l4-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

/// `meshroute envoy` on `resources`, the listener ports `moved` (as `port_value: N` in the
/// output) rewritten to 0 so that Envoy binds free ones; read them back by listener name.
fn start(wasm: &Path, tag: &str, resources: &str, extra: &[&str], moved: &[u16]) -> Envoy {
    let dir = temp_dir(tag);
    let res = dir.join("resources.yaml");
    std::fs::write(&res, resources).expect("write resources");
    let mut yaml = support::cli::meshroute_envoy(&dir, &[&res], wasm, 0, extra);
    for port in moved {
        let needle = format!("port_value: {port}\n");
        assert!(yaml.contains(&needle), "the generated config listens on {port}:\n{yaml}");
        yaml = yaml.replace(&needle, "port_value: 0\n");
    }
    Envoy::start(&yaml, &[])
}

/// A TCP echo server like Istio's `tcp-echo` sample: answers each line with `<prefix> <line>`.
struct Echo {
    port: u16,
}

impl Echo {
    fn start(prefix: &'static str) -> Echo {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind echo");
        let port = l.local_addr().expect("addr").port();
        thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { continue };
                thread::spawn(move || {
                    let mut w = conn.try_clone().expect("clone");
                    let mut line = String::new();
                    if BufReader::new(conn).read_line(&mut line).is_ok() {
                        let _ = w.write_all(format!("{prefix} {line}").as_bytes());
                    }
                });
            }
        });
        Echo { port }
    }
}

/// One connection through the proxy: send a line, read the echo (`""` when the proxy closed it).
fn echo_through(port: u16, text: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to Envoy");
    // A guard against a hung test, not an assertion on time.
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    s.write_all(format!("{text}\n").as_bytes()).expect("write");
    let mut out = String::new();
    let _ = BufReader::new(&mut s).read_line(&mut out);
    out.trim_end().to_string()
}

/// The interval a count of `n` Bernoulli(p) trials falls outside with probability ≈ 2e-9
/// (6 σ, exact binomial tails): such a test cannot flake.
fn assert_share(what: &str, count: u64, n: u64, p: f64) {
    let (lo, hi) = binomial_bounds(n, p, 6.0);
    assert!((lo..=hi).contains(&count), "{what}: {count} of {n} is outside [{lo}, {hi}] for p = {p}");
}

/// A self-signed certificate for `name` (openssl, as tests/cli_envoy.rs makes the Gateway's).
fn certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (crt, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    let o = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .args(["-subj", &format!("/CN={name}"), "-addext", &format!("subjectAltName=DNS:{name}")])
        .output()
        .expect("openssl is needed for the TLS tests");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (crt, key)
}

/// TLS upstreams: an Envoy of its own (no meshroute in it) terminating TLS for each name with
/// its own certificate and answering `upstream <name>`; the listener of `name` is `tls_<i>`.
fn tls_upstreams(dir: &Path, names: &[&str]) -> Envoy {
    let mut listeners = String::new();
    for (i, name) in names.iter().enumerate() {
        let (crt, key) = certificate(dir, name);
        listeners.push_str(&format!(
            r#"
  - name: tls_{i}
    address: {{socket_address: {{address: 127.0.0.1, port_value: {{{{TLS{i}_PORT}}}}}}}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates: [{{certificate_chain: {{filename: "{crt}"}}, private_key: {{filename: "{key}"}}}}]
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: tls_{i}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{{match: {{prefix: /}}, direct_response: {{status: 200, body: {{inline_string: "upstream {name}"}}}}}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
"#,
            crt = crt.display(),
            key = key.display()
        ));
    }
    let yaml = format!(
        "admin:\n  address: {{socket_address: {{address: 127.0.0.1, port_value: {{{{ADMIN_PORT}}}}}}}}\nstatic_resources:\n  listeners:{listeners}"
    );
    Envoy::start(&yaml, &[])
}

/// `curl https://<name>:<port>/` through the proxy, trusting only `<name>`'s certificate: the
/// body, or `None` when the handshake or the connection failed.
fn https_get(dir: &Path, name: &str, port: u16) -> Option<String> {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "20", "--resolve", &format!("{name}:{port}:127.0.0.1"), "--cacert"])
        .arg(dir.join(format!("{name}.crt")))
        .arg(format!("https://{name}:{port}/"))
        .output()
        .expect("curl is needed for the TLS tests");
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).to_string())
}

/// Istio's `samples/tcp-echo` Gateway, DestinationRule and VirtualService
/// (istio/istio samples/tcp-echo/tcp-echo-all-v1.yaml and tcp-echo-20-v2.yaml at
/// 86c9f01fd735fb01d8192f5bcaf0d424afb7f14c, namespace added), with a ServiceEntry standing in
/// for the Kubernetes Service and its two Deployments.
fn tcp_echo(v1: &Echo, v2: &Echo, route: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: tcp-echo-gateway, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 31400, name: tcp, protocol: TCP}}
    hosts: [\"*\"]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: tcp-echo-destination, namespace: default}}
spec:
  host: tcp-echo
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: tcp-echo, namespace: default}}
spec:
  hosts: [\"*\"]
  gateways: [tcp-echo-gateway]
  tcp:
  - match: [{{port: 31400}}]
    route:
{route}---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: tcp-echo, namespace: default}}
spec:
  hosts: [tcp-echo.default.svc.cluster.local]
  addresses: [240.240.0.9]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9000, name: tcp, protocol: TCP}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{tcp: {}}}, labels: {{app: tcp-echo, version: v1}}}}
  - {{address: 127.0.0.1, ports: {{tcp: {}}}, labels: {{app: tcp-echo, version: v2}}}}
",
        v1.port, v2.port
    )
}

const ALL_V1: &str = "    - destination: {host: tcp-echo, port: {number: 9000}, subset: v1}\n";
const V1_80_V2_20: &str = "    - destination: {host: tcp-echo, port: {number: 9000}, subset: v1}
      weight: 80
    - destination: {host: tcp-echo, port: {number: 9000}, subset: v2}
      weight: 20
";

// === tests ===

#[test]
fn tcp_traffic_shifting_task_moves_20_percent_of_connections_to_v2() {
    let Some((_, wasm)) = envoy_and_filter("tcp_traffic_shifting_task_moves_20_percent_of_connections_to_v2") else {
        return;
    };
    let (v1, v2) = (Echo::start("one"), Echo::start("two"));
    let gw = ["--gateway", "default/tcp-echo-gateway"];

    // Step 1 of the task: tcp-echo-all-v1.yaml, every connection to v1.
    let envoy = start(&wasm, "all-v1", &tcp_echo(&v1, &v2, ALL_V1), &gw, &[31400]);
    let port = envoy.listener_port("gateway_31400");
    for i in 0..50 {
        assert_eq!(echo_through(port, &format!("hello {i}")), format!("one hello {i}"), "connection {i}");
    }
    drop(envoy);

    // Step 2: tcp-echo-20-v2.yaml, 80/20 per connection.
    let envoy = start(&wasm, "v2-20", &tcp_echo(&v1, &v2, V1_80_V2_20), &gw, &[31400]);
    let port = envoy.listener_port("gateway_31400");
    let n = 400u64;
    let mut two = 0u64;
    for i in 0..n {
        let got = echo_through(port, "world");
        match got.as_str() {
            "one world" => {}
            "two world" => two += 1,
            other => panic!("connection {i}: unexpected answer {other:?}"),
        }
    }
    assert_share("connections to v2", two, n, 0.2);
}

#[test]
fn passthrough_gateway_routes_two_sni_names_to_two_tls_upstreams_without_terminating() {
    let Some((_, wasm)) =
        envoy_and_filter("passthrough_gateway_routes_two_sni_names_to_two_tls_upstreams_without_terminating")
    else {
        return;
    };
    let dir = temp_dir("sni-certs");
    let upstreams = tls_upstreams(&dir, &["a.example.com", "b.example.com"]);
    let (a, b) = (upstreams.listener_port("tls_0"), upstreams.listener_port("tls_1"));
    let se = |name: &str, host: &str, port: u16| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  hosts: [{host}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: 443, name: tls, protocol: TLS}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{tls: {port}}}}}]\n---\n"
        )
    };
    let vs = |name: &str, sni: &str, dest: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  hosts: [{sni}]\n  gateways: [istio-system/passthrough]\n  tls:\n  - match: [{{port: 8443, sniHosts: [{sni}]}}]\n    route:\n    - destination: {{host: {dest}, port: {{number: 443}}}}\n---\n"
        )
    };
    let resources = format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: passthrough, namespace: istio-system}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: 8443, name: tls, protocol: TLS}}\n    hosts: [\"*.example.com\"]\n    tls: {{mode: PASSTHROUGH}}\n---\n{}{}{}{}",
        se("a", "a.internal", a),
        se("b", "b.internal", b),
        vs("a", "a.example.com", "a.internal"),
        vs("b", "b.example.com", "b.internal"),
    );
    let envoy = start(&wasm, "passthrough", &resources, &["--gateway", "istio-system/passthrough"], &[8443]);
    let port = envoy.listener_port("gateway_8443");
    // Each name reaches its own upstream, whose certificate (trusted alone) the client checks:
    // the gateway forwarded the client's handshake untouched.
    for _ in 0..3 {
        assert_eq!(https_get(&dir, "a.example.com", port).as_deref(), Some("upstream a.example.com"));
        assert_eq!(https_get(&dir, "b.example.com", port).as_deref(), Some("upstream b.example.com"));
    }
    // A name no TLS route has matches no filter chain: Envoy closes the connection.
    certificate(&dir, "c.example.com");
    assert_eq!(https_get(&dir, "c.example.com", port), None);
    let stats = envoy.admin_get("/stats");
    let refused: u64 = stats
        .lines()
        .filter_map(|l| l.split_once(".no_filter_chain_match: ").and_then(|(_, n)| n.trim().parse::<u64>().ok()))
        .sum();
    assert_eq!(refused, 1, "the unknown SNI was refused by filter chain matching:\n{stats}");
}

#[test]
fn sidecar_tls_listener_tells_services_on_one_port_apart_by_sni_and_tcp_routes_shift() {
    let Some((_, wasm)) =
        envoy_and_filter("sidecar_tls_listener_tells_services_on_one_port_apart_by_sni_and_tcp_routes_shift")
    else {
        return;
    };
    let dir = temp_dir("sidecar-certs");
    let upstreams = tls_upstreams(&dir, &["a.example.com", "b.example.com"]);
    let (a, b) = (upstreams.listener_port("tls_0"), upstreams.listener_port("tls_1"));
    let (v1, v2) = (Echo::start("one"), Echo::start("two"));
    // Two external HTTPS services on port 9443 without addresses and without VirtualService:
    // istiod's wildcard listener gives each a chain matched on its host name (R192). A TCP
    // service on 9000 with a mesh VirtualService splitting 50/50.
    let mut resources = String::new();
    for (name, port) in [("a.example.com", a), ("b.example.com", b)] {
        resources.push_str(&format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  hosts: [{name}]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  ports: [{{number: 9443, name: https, protocol: HTTPS}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{https: {port}}}}}]\n---\n"
        ));
    }
    resources.push_str(&format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: echo, namespace: default}}\nspec:\n  hosts: [echo.internal]\n  addresses: [240.240.0.10]\n  resolution: STATIC\n  ports: [{{number: 9000, name: tcp, protocol: TCP}}]\n  endpoints:\n  - {{address: 127.0.0.1, ports: {{tcp: {}}}, labels: {{version: v1}}}}\n  - {{address: 127.0.0.1, ports: {{tcp: {}}}, labels: {{version: v2}}}}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: echo, namespace: default}}\nspec:\n  host: echo.internal\n  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: echo, namespace: default}}\nspec:\n  hosts: [echo.internal]\n  tcp:\n  - route:\n    - {{destination: {{host: echo.internal, subset: v1}}, weight: 50}}\n    - {{destination: {{host: echo.internal, subset: v2}}, weight: 50}}\n",
        v1.port, v2.port
    ));
    let envoy = start(&wasm, "sidecar", &resources, &[], &[9443, 9000]);
    let tls = envoy.listener_port("127.0.0.1_9443");
    assert_eq!(https_get(&dir, "a.example.com", tls).as_deref(), Some("upstream a.example.com"));
    assert_eq!(https_get(&dir, "b.example.com", tls).as_deref(), Some("upstream b.example.com"));
    let tcp = envoy.listener_port("127.0.0.1_9000");
    let n = 200u64;
    let mut two = 0u64;
    for _ in 0..n {
        match echo_through(tcp, "x").as_str() {
            "one x" => {}
            "two x" => two += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_share("connections to v2", two, n, 0.5);
    // The HTTP listener is still there for HTTP.
    assert!(envoy.listener_ports().expect("listeners").contains_key("meshroute_outbound"));
}

/// `openssl s_client` to 127.0.0.1:`port` with SNI `sni` (and ALPN `alpn`), sending `input`:
/// what the server answered, `None` when the handshake failed.
fn tls_exchange(port: u16, sni: &str, alpn: Option<&str>, ca: Option<&Path>, input: &str) -> Option<String> {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-quiet", "-connect", &format!("127.0.0.1:{port}"), "-servername", sni]);
    if let Some(a) = alpn {
        cmd.args(["-alpn", a]);
    }
    if let Some(ca) = ca {
        cmd.arg("-CAfile").arg(ca).args(["-verify_return_error", "-verify_hostname", sni]);
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl is needed for the TLS tests");
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    (!text.is_empty()).then_some(text)
}

#[test]
fn gateway_tls_server_terminates_for_tcp_routes_and_auto_passthrough_takes_istio_sni_names() {
    let Some((_, wasm)) =
        envoy_and_filter("gateway_tls_server_terminates_for_tcp_routes_and_auto_passthrough_takes_istio_sni_names")
    else {
        return;
    };
    let dir = temp_dir("gw-tls");
    let (crt, _) = certificate(&dir, "echo.example.com");
    let upstreams = tls_upstreams(&dir, &["a.example.com"]);
    let echo = Echo::start("one");
    let resources = format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: default}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: 9443, name: tls, protocol: TLS}}\n    hosts: [echo.example.com]\n    tls: {{mode: SIMPLE, credentialName: echo.example.com}}\n  - port: {{number: 15443, name: tls-auto, protocol: TLS}}\n    hosts: [\"*.internal\"]\n    tls: {{mode: AUTO_PASSTHROUGH}}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: echo, namespace: default}}\nspec:\n  hosts: [echo.example.com]\n  gateways: [gw]\n  tcp:\n  - route:\n    - destination: {{host: echo.internal}}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: echo, namespace: default}}\nspec:\n  hosts: [echo.internal]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: 9000, name: tcp, protocol: TCP}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{tcp: {}}}}}]\n---\n\
         apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: a, namespace: default}}\nspec:\n  hosts: [a.internal]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: 443, name: tls, protocol: TLS}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{tls: {}}}}}]\n",
        echo.port,
        upstreams.listener_port("tls_0"),
    );
    let dir_arg = dir.display().to_string();
    let envoy =
        start(&wasm, "gw-tls", &resources, &["--gateway", "default/gw", "--credentials-dir", &dir_arg], &[9443, 15443]);
    // TLS terminated with the Gateway's certificate (verified), then plain TCP to the echo.
    let port = envoy.listener_port("gateway_9443");
    assert_eq!(tls_exchange(port, "echo.example.com", None, Some(&crt), "hi\n").as_deref(), Some("one hi\n"));
    // AUTO_PASSTHROUGH: the SNI names the service and port, Istio's mTLS ALPN is required.
    let port = envoy.listener_port("gateway_15443");
    let get = "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let answer = tls_exchange(port, "outbound_.443_._.a.internal", Some("istio"), None, get).unwrap_or_default();
    assert!(answer.ends_with("upstream a.example.com"), "{answer:?}");
    assert_eq!(tls_exchange(port, "outbound_.443_._.a.internal", None, None, get), None, "no Istio ALPN");
    assert_eq!(tls_exchange(port, "a.internal", Some("istio"), None, get), None, "not an SNI-DNAT name");
}

#[test]
fn sidecar_ingress_ports_reach_their_default_endpoints_and_egress_ports_only_their_hosts() {
    let Some((_, wasm)) =
        envoy_and_filter("sidecar_ingress_ports_reach_their_default_endpoints_and_egress_ports_only_their_hosts")
    else {
        return;
    };
    let (local, echo, other) = (Echo::start("local"), Echo::start("echo"), Echo::start("other"));
    let app = Upstream::named("app");
    let se = |name: &str, e: &Echo| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  hosts: [{name}.internal]\n  addresses: [240.240.1.1]\n  resolution: STATIC\n  ports: [{{number: 9000, name: tcp, protocol: TCP}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{tcp: {}}}}}]\n---\n",
            e.port
        )
    };
    let resources = format!(
        "{}{}apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: default, namespace: default}}\nspec:\n  ingress:\n  - port: {{number: 7070, name: tcp, protocol: TCP}}\n    defaultEndpoint: 127.0.0.1:{}\n  - port: {{number: 7080, name: http, protocol: HTTP}}\n    defaultEndpoint: 0.0.0.0:{}\n  egress:\n  - port: {{number: 9100, name: tcp, protocol: TCP}}\n    hosts: [./echo.internal]\n  - hosts: [\"./other.internal\"]\n",
        se("echo", &echo),
        se("other", &other),
        local.port,
        app.port(),
    );
    let envoy = start(&wasm, "ingress", &resources, &[], &[7070, 7080, 9100, 9000]);
    assert_eq!(echo_through(envoy.listener_port("inbound_7070"), "in"), "local in");
    let r = http("GET", envoy.listener_port("inbound_7080"), "/", &[("Host", "me")], b"");
    assert_eq!((r.status, r.header("x-upstream")), (200, Some("app")));
    // The egress port 9100 carries only echo.internal (its only port, 9000, is the cluster's).
    assert_eq!(echo_through(envoy.listener_port("127.0.0.1_9100"), "e"), "echo e");
    // The catch-all egress listener imports other.internal only: port 9000 is its listener.
    assert_eq!(echo_through(envoy.listener_port("127.0.0.1_9000"), "o"), "other o");
}

#[test]
fn graph_draws_tcp_and_tls_routes_with_their_shares_of_connections() {
    let (v1, v2) = (Echo { port: 1 }, Echo { port: 2 });
    let mut resources = tcp_echo(&v1, &v2, V1_80_V2_20);
    resources.push_str(
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: sni, namespace: default}\nspec:\n  hosts: [a.example.com]\n  tls:\n  - match: [{port: 443, sniHosts: [a.example.com]}]\n    route:\n    - destination: {host: a.internal, port: {number: 8443}}\n",
    );
    let dir = temp_dir("graph");
    let path = dir.join("r.yaml");
    std::fs::write(&path, resources).expect("write");
    let o = Command::new(env!("CARGO_BIN_EXE_meshroute")).arg("graph").arg("-f").arg(&path).output().expect("graph");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    for line in [
        r#"src__default_tcp_echo_gateway(["Gateway default/tcp-echo-gateway"])"#,
        r#"rule__default_tcp_echo__tcp__0["TCP #0<br/>port 31400"]"#,
        r#"rule__default_tcp_echo__tcp__0 -->|"80% · connections"| dst__outbound_9000_v1_tcp_echo_default_svc_cluster_local"#,
        r#"rule__default_tcp_echo__tcp__0 -->|"20% · connections"| dst__outbound_9000_v2_tcp_echo_default_svc_cluster_local"#,
        r#"src__mesh --> vs__default_sni"#,
        r#"rule__default_sni__tls__0["TLS #0<br/>port 443, sni a.example.com"]"#,
        r#"rule__default_sni__tls__0 -->|"100% · connections"| dst__outbound_8443__a_internal"#,
    ] {
        assert!(text.lines().any(|l| l.trim() == line), "no line {line:?} in:\n{text}");
    }
    // The Gateway's TCP route is not the mesh's, and the other way round.
    assert!(!text.contains("src__mesh --> vs__default_tcp_echo"), "{text}");
    assert!(!text.contains("src__default_tcp_echo_gateway --> vs__default_sni"), "{text}");
}
