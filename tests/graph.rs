//! `meshroute graph`: for every seed example, the DOT (read back with layout-rs's own DOT parser)
//! and the Mermaid (read back with a small parser here) describe the same graph, and it has the
//! nodes, shares and marked mistakes the example should have. Pictures are never compared byte
//! for byte. The SVG's screenshot in headless chromium is `svg_screenshot_is_not_blank`, run by
//! `make test-graph-browser` (chromium is a large install, so it is not part of `make test`).
// A test crate: helpers outside `#[test]` may fail loudly.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use layout::gv::parser::ast::Stmt;
use layout::gv::DotParser;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const SUBSETS: &str = "tests/fixtures/seed-subsets.yaml";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn meshroute(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_meshroute")).args(args).current_dir(repo_root()).output().expect("run");
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// A graph as read back from a rendering.
#[derive(Debug, Default, PartialEq)]
struct Read {
    /// id → (label lines, broken)
    nodes: Vec<(String, Vec<String>, bool)>,
    /// (from, to, label, broken)
    edges: BTreeSet<(String, String, String, bool)>,
}

impl Read {
    fn node(&self, id: &str) -> &(String, Vec<String>, bool) {
        self.nodes.iter().find(|n| n.0 == id).unwrap_or_else(|| panic!("no node {id}"))
    }

    /// (label of the destination, text on the edge) for every edge out of a rule.
    fn shares(&self) -> BTreeSet<(String, String)> {
        self.edges
            .iter()
            .filter(|(from, ..)| from.starts_with("rule__"))
            .map(|(_, to, label, _)| (self.node(to).1.join(" / "), label.clone()))
            .collect()
    }

    fn broken(&self) -> BTreeSet<String> {
        self.nodes.iter().filter(|n| n.2).map(|n| n.1.join(" / ")).collect()
    }
}

fn read_dot(text: &str) -> Read {
    let mut p = DotParser::new(text);
    let g = p.process().unwrap_or_else(|e| panic!("DOT does not parse: {e}\n{text}"));
    let mut r = Read::default();
    let attr = |list: &[(String, String)], k: &str| list.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    for s in &g.list.list {
        match s {
            Stmt::Node(n) => {
                let label = attr(&n.list.list, "label").unwrap_or_default();
                let broken = attr(&n.list.list, "color").as_deref() == Some("red");
                r.nodes.push((n.id.name.clone(), label.lines().map(str::to_string).collect(), broken));
            }
            Stmt::Edge(e) => {
                let label = attr(&e.list.list, "label").unwrap_or_default();
                let broken = attr(&e.list.list, "color").as_deref() == Some("red");
                for (to, _) in &e.to {
                    r.edges.insert((e.from.name.clone(), to.name.clone(), label.clone(), broken));
                }
            }
            _ => {}
        }
    }
    r
}

fn read_mermaid(text: &str) -> Read {
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("flowchart LR"));
    let mut r = Read::default();
    let mut edges = Vec::new();
    let (mut broken_nodes, mut broken_links) = (BTreeSet::new(), BTreeSet::new());
    let unescape = |s: &str| s.replace("#quot;", "\"").replace("#lt;", "<").replace("#gt;", ">");
    for l in lines.map(str::trim) {
        if let Some(rest) = l.strip_prefix("class ") {
            let (ids, class) = rest.rsplit_once(' ').expect("class line");
            assert_eq!(class, "broken");
            broken_nodes.extend(ids.split(',').map(str::to_string));
        } else if let Some(rest) = l.strip_prefix("linkStyle ") {
            broken_links.insert(rest.split_whitespace().next().unwrap().parse::<usize>().unwrap());
        } else if l.starts_with("classDef ") {
        } else if let Some((from, rest)) = l.split_once(" -->").or_else(|| l.split_once(" -.->")) {
            let (label, to) = match rest.strip_prefix("|\"") {
                Some(x) => {
                    let (label, to) = x.split_once("\"| ").expect("labelled edge");
                    (unescape(label), to)
                }
                None => (String::new(), rest.trim_start()),
            };
            edges.push((from.to_string(), to.to_string(), label));
        } else {
            let open = l.find(['(', '[']).unwrap_or_else(|| panic!("unknown Mermaid line {l:?}"));
            let id = &l[..open];
            let text = &l[l.find('"').unwrap() + 1..l.rfind('"').unwrap()];
            r.nodes.push((id.to_string(), text.split("<br/>").map(unescape).collect(), false));
        }
    }
    for n in &mut r.nodes {
        n.2 = broken_nodes.contains(&n.0);
    }
    r.edges = edges.into_iter().enumerate().map(|(i, (f, t, l))| (f, t, l, broken_links.contains(&i))).collect();
    r
}

/// Both formats of the graph of `files`, checked to agree.
fn graph(files: &[&str]) -> Read {
    graph_with(files, &[])
}

fn graph_with(files: &[&str], extra: &[&str]) -> Read {
    let mut args = vec!["graph"];
    for f in files {
        args.extend(["-f", f]);
    }
    args.extend(extra);
    let dot = read_dot(&meshroute(&[&args[..], &["--format", "dot"]].concat()));
    let mermaid = read_mermaid(&meshroute(&[&args[..], &["--format", "mermaid"]].concat()));
    assert_eq!(dot, mermaid, "DOT and Mermaid differ for {files:?}");
    dot
}

fn set(items: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    items.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

fn strings(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

const RS: &str = "recommendation-service.default";
const PS: &str = "product-service.default";

#[test]
fn canary_stages_split_as_configured() {
    for (file, shares) in [
        ("examples/canary-10.yaml", &[("v1", "90%"), ("v2", "10%")][..]),
        ("examples/canary-50.yaml", &[("v1", "50%"), ("v2", "50%")]),
        ("examples/canary-100.yaml", &[("v2", "100%")]),
    ] {
        let g = graph(&[file, SUBSETS]);
        let want: Vec<(String, String)> =
            shares.iter().map(|(s, p)| (format!("{RS} / subset {s} · port 80"), p.to_string())).collect();
        assert_eq!(g.shares(), want.into_iter().collect(), "{file}");
        assert!(g.broken().is_empty(), "{file}: {:?}", g.broken());
        assert!(g.nodes.iter().any(|n| n.1 == ["mesh (sidecars)"]));
        // Alone, the subsets are undefined: every destination is a marked 503.
        let alone = graph(&[file]);
        assert_eq!(alone.broken().len(), shares.len(), "{file}");
        assert!(alone.edges.iter().filter(|e| e.0.starts_with("rule__")).all(|e| e.3), "{file}");
    }
}

#[test]
fn routing_examples_have_their_rules_and_shares() {
    let g = graph(&["examples/weight-route.yaml", SUBSETS]);
    assert_eq!(
        g.shares(),
        set(&[(&format!("{PS} / subset v1 · port 80"), "80%"), (&format!("{PS} / subset v2 · port 80"), "20%")])
    );
    let g = graph(&["examples/header-route.yaml", SUBSETS]);
    assert_eq!(
        g.shares(),
        set(&[(&format!("{PS} / subset v2 · port 80"), "100%"), (&format!("{PS} / subset v1 · port 80"), "100%")])
    );
    let rules: Vec<&Vec<String>> = g.nodes.iter().filter(|n| n.0.starts_with("rule__")).map(|n| &n.1).collect();
    assert_eq!(rules, [&vec!["#0".to_string(), "x-debug=true".into()], &vec!["#1".to_string(), "any request".into()]]);
    let g = graph(&["examples/uri-route.yaml", SUBSETS]);
    let conditions: BTreeSet<String> =
        g.nodes.iter().filter(|n| n.0.starts_with("rule__")).map(|n| n.1[1].clone()).collect();
    assert!(conditions.iter().all(|c| c.starts_with("uri prefix /")), "{conditions:?}");
    assert_eq!(conditions.len(), 3, "{conditions:?}");
    let g = graph(&["examples/basic-route.yaml"]);
    assert_eq!(g.broken(), strings(&[&format!("{PS} / subset v1 · port 80 / ⚠ 503: subset v1 undefined (IST0101)")]));
}

#[test]
fn policies_are_edge_labels() {
    let policy = |g: &Read| -> BTreeSet<String> {
        g.edges.iter().filter(|e| e.0.starts_with("vs__")).map(|e| e.2.clone()).collect()
    };
    assert_eq!(policy(&graph(&["examples/retry-config.yaml", SUBSETS])), strings(&["1. · retries 3 × 2s"]));
    assert_eq!(policy(&graph(&["examples/timeout-config.yaml"])), strings(&["1. · timeout 5s", "2. · timeout 30s"]));
    let fault = graph(&["examples/fault-injection.yaml"]);
    assert_eq!(policy(&fault), strings(&["1. · delay 5s 10%", "unreachable · abort 500 5%"]));
    // The rule after the catch-all (with the abort) is never taken: dashed red, with its target.
    assert_eq!(
        fault.broken(),
        strings(&["#1 / any request / ⚠ never taken (IST0130)", "rating-service / ⚠ receives nothing"])
    );
    let mirror = graph(&["examples/traffic-mirroring.yaml", SUBSETS]);
    assert!(mirror
        .shares()
        .contains(&("order-service.default / subset v2-canary · port 80".into(), "mirror 100%".into())));
    // The "production" destination with weight 0 receives nothing (MR0003): drawn at 0 %.
    assert!(
        mirror.shares().contains(&("order-service / subset v2 / weight 0: receives nothing".into(), "0%".into())),
        "{:?}",
        mirror.shares()
    );
}

#[test]
fn gateway_binding_mistake_is_a_marked_source() {
    let g = graph(&["examples/gateway-vs-binding.yaml", "examples/ingress-gateway.yaml"]);
    assert_eq!(g.broken(), strings(&["Gateway default/public-gateway / ⚠ no such Gateway (IST0101)"]), "{:?}", g.nodes);
    let fixed = std::fs::read_to_string(repo_root().join("examples/gateway-vs-binding.yaml"))
        .unwrap()
        .replace("- public-gateway", "- istio-system/public-gateway");
    let dir = std::env::temp_dir().join(format!("meshroute-graph-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("fixed.yaml");
    std::fs::write(&path, fixed).unwrap();
    let g = graph(&[path.to_str().unwrap(), "examples/ingress-gateway.yaml", SUBSETS]);
    assert!(g.broken().is_empty(), "{:?}", g.broken());
    assert!(g.nodes.iter().any(|n| n.1 == ["Gateway istio-system/public-gateway"]), "{:?}", g.nodes);
}

#[test]
fn every_seed_example_draws_and_shares_add_up() {
    for entry in std::fs::read_dir(repo_root().join("examples")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let file = format!("examples/{}", p.file_name().unwrap().to_str().unwrap());
        let g = graph(&[&file, SUBSETS]);
        // Per rule, the shares of its destinations (mirrors apart) add up to 100.
        for rule in g.nodes.iter().filter(|n| n.0.starts_with("rule__")) {
            let total: f64 = g
                .edges
                .iter()
                .filter(|e| e.0 == rule.0 && !e.2.starts_with("mirror"))
                .map(|e| e.2.trim_end_matches('%').parse::<f64>().unwrap_or_else(|_| panic!("{file}: share {:?}", e.2)))
                .sum();
            assert!((total - 100.0).abs() < 0.02, "{file}: rule {} shares sum to {total}", rule.0);
        }
        let has_vs = std::fs::read_to_string(&p).unwrap().contains("kind: VirtualService");
        assert_eq!(g.nodes.iter().any(|n| n.0.starts_with("vs__")), has_vs, "{file}");
    }
}

#[test]
fn host_filter_keeps_only_the_virtual_service_serving_it() {
    let g = graph_with(&["examples/canary-10.yaml", "examples/retry-config.yaml"], &["--host", "order-service"]);
    let vss: Vec<&str> = g.nodes.iter().filter(|n| n.0.starts_with("vs__")).map(|n| n.0.as_str()).collect();
    assert_eq!(vss, ["vs__default_order_service"]);
}

#[test]
fn svg_is_an_svg_document_with_every_label() {
    let svg = meshroute(&["graph", "-f", "examples/canary-10.yaml", "-f", SUBSETS, "--format", "svg"]);
    assert!(svg.starts_with("<?xml") && svg.contains("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");
    for text in ["mesh (sidecars)", "VirtualService default/recommendation-service", "90%", "10%", "subset v2"] {
        assert!(svg.contains(text), "{text} missing from the SVG");
    }
}

/// Opens an SVG in headless Debian chromium and checks that the screenshot is not blank. Needs
/// `chromium` (`make test-graph-browser` installs it); ignored otherwise.
#[test]
#[ignore = "needs chromium: make test-graph-browser"]
fn svg_screenshot_is_not_blank() {
    let dir = std::env::temp_dir().join(format!("meshroute-shot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("canary.svg");
    let png = dir.join("canary.png");
    let profile = dir.join("profile");
    meshroute(&[
        "graph",
        "-f",
        "examples/canary-10.yaml",
        "-f",
        SUBSETS,
        "--format",
        "svg",
        "-o",
        svg.to_str().unwrap(),
    ]);
    let status = Command::new(std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into()))
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            &format!("--user-data-dir={}", profile.display()),
            &format!("--screenshot={}", png.display()),
            "--window-size=1600,900",
            &format!("file://{}", svg.display()),
        ])
        .stderr(std::process::Stdio::null())
        .status()
        .expect("chromium runs");
    assert!(status.success());
    let (dark, total) = dark_pixels(&png);
    eprintln!("screenshot: {dark} of {total} pixels not near-white");
    // Boxes, arrows and text: well above nothing, well below a filled page.
    assert!(dark * 1000 > total && dark * 4 < total, "{dark} dark pixels of {total}");
}

/// Pixels of the screenshot that are not near-white.
fn dark_pixels(png: &Path) -> (usize, usize) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let pixels = &buf[..info.buffer_size()];
    let dark = pixels.chunks(channels).filter(|p| p.iter().take(3).any(|c| *c < 200)).count();
    (dark, pixels.len() / channels)
}

/// docs/graphs/ is what `make graphs` draws today (a freshness check of the docs, not of the
/// drawing: the tests above check what the graphs contain).
#[test]
fn docs_graphs_are_current() {
    let dir = repo_root().join("docs/graphs");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_stem().unwrap().to_str().unwrap().to_string();
        let mut args = vec!["graph".to_string()];
        match name.strip_suffix("-with-subsets") {
            Some(base) => args.extend(["-f".into(), format!("examples/{base}.yaml"), "-f".into(), SUBSETS.into()]),
            None => args.extend(["-f".into(), format!("examples/{name}.yaml")]),
        }
        args.extend(["--format".into(), "svg".into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let want = meshroute(&args);
        assert!(std::fs::read_to_string(&p).unwrap() == want, "{} is stale: run `make graphs`", p.display());
        checked += 1;
    }
    assert!(checked >= 15, "{checked} graphs in docs/graphs");
}

/// `--live --state DIR`: the shares measured from the Envoy the state directory names (its
/// admin `/stats`, sampled twice over the window) go next to the configured ones. The Envoy here
/// is a stand-in on 127.0.0.1 that answers two samples of the filter's route counters.
#[test]
fn live_shares_are_measured_over_the_window_next_to_the_configured_ones() {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = listener.local_addr().unwrap();
    let stat = |subset: &str, n: u64| {
        format!("wasmcustom.meshroute.route.vs.default/recommendation-service.rule.0.dest.outbound|80|{subset}|recommendation-service.default.svc.cluster.local: {n}\n")
    };
    let samples = [(100, 10), (190, 20)].map(|(a, b)| format!("server.uptime: 5\n{}{}", stat("v1", a), stat("v2", b)));
    let server = std::thread::spawn(move || {
        for body in samples {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = [0u8; 1024];
            let _ = s.read(&mut req).unwrap();
            assert!(String::from_utf8_lossy(&req).starts_with("GET /stats "));
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
            s.write_all(head.as_bytes()).unwrap();
            s.write_all(body.as_bytes()).unwrap();
        }
    });
    let dir = std::env::temp_dir().join(format!("meshroute-live-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let marker = serde_json::json!({"format": "meshroute-state/1",
        "proxy": {"listen": "127.0.0.1:1", "admin": admin.to_string(), "wasm": "/nonexistent/meshroute.wasm"}});
    std::fs::write(dir.join("meshroute-state.json"), marker.to_string()).unwrap();
    let dot = meshroute(&[
        "graph",
        "-f",
        "examples/canary-10.yaml",
        "-f",
        SUBSETS,
        "--format",
        "dot",
        "--live",
        "--state",
        dir.to_str().unwrap(),
        "--window",
        "1",
    ]);
    server.join().unwrap();
    let g = read_dot(&dot);
    assert_eq!(
        g.shares(),
        set(&[
            (&format!("{RS} / subset v1 · port 80"), "90% · live 90% (90 of 100, last 1 s)"),
            (&format!("{RS} / subset v2 · port 80"), "10% · live 10% (10 of 100, last 1 s)"),
        ])
    );
}
