//! The `meshroute` command line, run as a user would: the built binary on the seed examples and
//! on broken input. Needs `--features cli` (Cargo.toml `[[test]] required-features`).
//!
//! The Envoy checks (`envoy --mode validate` on generated configurations) skip loudly when Envoy
//! or the filter's Wasm module is missing locally, and fail under `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use support::repo_root;

// === helpers ===

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn meshroute(args: &[&str]) -> Out {
    meshroute_stdin(args, None)
}

fn meshroute_stdin(args: &[&str], stdin: Option<&str>) -> Out {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshroute"))
        .args(args)
        .current_dir(repo_root())
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run meshroute");
    if let Some(text) = stdin {
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait for meshroute");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("meshroute-cli-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p.display().to_string()
}

fn example_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(repo_root().join("examples"))
        .expect("examples/")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 21, "the 21 seed examples");
    files
}

/// `error|warning|info: FILE:LINE: ...`, with the code in parentheses at the end if any.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reported {
    severity: String,
    file: String,
    line: u32,
    text: String,
    code: Option<String>,
}

fn parse_diagnostics(stdout: &str) -> Vec<Reported> {
    stdout
        .lines()
        .map(|l| {
            let (severity, rest) = l.split_once(": ").unwrap_or_else(|| panic!("not a diagnostic: {l}"));
            assert!(matches!(severity, "error" | "warning" | "info"), "{l}");
            let (loc, text) = rest.split_once(": ").unwrap_or_else(|| panic!("no location: {l}"));
            let (file, line) = loc.rsplit_once(':').unwrap_or_else(|| panic!("no line: {l}"));
            let line: u32 = line.parse().unwrap_or_else(|_| panic!("line is not a number: {l}"));
            let code = text
                .strip_suffix(')')
                .and_then(|t| t.rsplit_once(" ("))
                .map(|(_, c)| c.to_string())
                .filter(|c| (c.starts_with("IST") && c.len() == 7) || (c.starts_with("MR") && c.len() == 6));
            Reported { severity: severity.into(), file: file.into(), line, text: text.into(), code }
        })
        .collect()
}

/// Envoy for `--mode validate`, or `None` (skipped loudly) when missing outside CI.
fn envoy_or_skip(test: &str) -> Option<PathBuf> {
    let bin = match std::env::var_os("ENVOY_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => repo_root().join(".tools/envoy/envoy/_bin/envoy"),
    };
    if bin.is_file() {
        return Some(bin);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: Envoy not found at {} (run `make tools`); CI must not skip", bin.display());
    }
    eprintln!("SKIPPED {test}: Envoy not found at {} (run `make tools` or set ENVOY_BIN)", bin.display());
    None
}

/// The filter's Wasm module (`make wasm`, or `$MESHROUTE_WASM`), or `None` outside CI.
fn filter_wasm_or_skip(test: &str) -> Option<PathBuf> {
    let path = match std::env::var_os("MESHROUTE_WASM") {
        Some(p) if !p.is_empty() => {
            let p = PathBuf::from(p);
            if p.is_dir() {
                p.join("meshroute_filter.wasm")
            } else {
                p
            }
        }
        _ => support::target_dir().join("wasm32-wasip1/release/meshroute_filter.wasm"),
    };
    if path.is_file() {
        return Some(path);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: filter module {} not found (run `make wasm`); CI must not skip", path.display());
    }
    eprintln!("SKIPPED {test}: filter module {} not found (run `make wasm` or set MESHROUTE_WASM)", path.display());
    None
}

fn envoy_validate(envoy: &Path, config: &Path) -> Result<(), String> {
    let out = Command::new(envoy)
        .args(["--mode", "validate", "--log-level", "error", "--disable-hot-restart", "-c"])
        .arg(config)
        .output()
        .expect("run envoy");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

// === validate ===

/// docs/semantics.md §15, "Alone": the codes each seed example is reported with, and its exit
/// code (1 when any finding is an error). §15 assumes examples/registry/services.json; meshroute
/// reads no Kubernetes Service (R7), so a DestinationRule whose host no ServiceEntry declares is
/// also reported IST0174 (a warning).
fn seed_expectations() -> BTreeMap<&'static str, (i32, Vec<&'static str>)> {
    BTreeMap::from([
        ("basic-route.yaml", (1, vec!["IST0101"])),
        ("canary-10.yaml", (1, vec!["IST0101", "IST0101"])),
        ("canary-100.yaml", (1, vec!["IST0101"])),
        ("canary-50.yaml", (1, vec!["IST0101", "IST0101"])),
        ("connection-pool.yaml", (0, vec!["IST0174"])),
        ("consistent-hash.yaml", (0, vec!["IST0174", "MR0006", "MR0006"])),
        ("external-grpc.yaml", (0, vec![])),
        ("external-http.yaml", (0, vec![])),
        ("external-https.yaml", (0, vec!["MR0002"])),
        ("fault-injection.yaml", (0, vec!["IST0130"])),
        ("gateway-vs-binding.yaml", (1, vec!["IST0101", "IST0132"])),
        ("header-route.yaml", (1, vec!["IST0101", "IST0101"])),
        ("ingress-gateway.yaml", (0, vec![])),
        ("loadbalancer-config.yaml", (0, vec!["IST0174"])),
        ("locality-lb.yaml", (0, vec!["IST0174"])),
        ("outlier-detection.yaml", (0, vec!["IST0174"])),
        ("retry-config.yaml", (0, vec!["MR0004", "MR0005", "MR0007"])),
        ("timeout-config.yaml", (0, vec![])),
        ("traffic-mirroring.yaml", (1, vec!["IST0101", "IST0101", "IST0101", "IST0133", "MR0003"])),
        ("uri-route.yaml", (1, vec!["IST0101", "IST0101"])),
        ("weight-route.yaml", (1, vec!["IST0101", "IST0101"])),
    ])
}

#[test]
fn each_seed_example_reports_what_the_semantics_specify() {
    let expected = seed_expectations();
    for name in example_files() {
        let path = format!("examples/{name}");
        let out = meshroute(&["validate", "-f", &path]);
        let (code, codes) = &expected[name.as_str()];
        let diags = parse_diagnostics(&out.stdout);
        let mut got: Vec<String> = diags.iter().filter_map(|d| d.code.clone()).collect();
        got.sort();
        assert_eq!(got, *codes, "{name}:\n{}", out.stdout);
        assert_eq!(out.code, *code, "{name} exit code:\n{}{}", out.stdout, out.stderr);
        assert!(diags.iter().all(|d| d.file == path), "{name}: {diags:?}");
    }
}

#[test]
fn every_seed_example_is_readable_and_reported_with_file_and_line() {
    for name in example_files() {
        let path = format!("examples/{name}");
        let out = meshroute(&["validate", "-f", &path]);
        assert!(out.code == 0 || out.code == 1, "{name}: exit {} {}", out.code, out.stderr);
        let diags = parse_diagnostics(&out.stdout);
        let has_error = diags.iter().any(|d| d.severity == "error");
        assert_eq!(out.code, i32::from(has_error), "{name}:\n{}", out.stdout);
        let lines = std::fs::read_to_string(repo_root().join(&path)).expect("read").lines().count() as u32;
        for d in &diags {
            assert_eq!(d.file, path);
            assert!(d.line >= 1 && d.line <= lines, "{name}: line {} of {lines}: {}", d.line, d.text);
        }
        assert!(out.stderr.contains("resource(s)"), "summary on stderr: {}", out.stderr);
    }
}

#[test]
fn seed_findings_point_at_the_offending_field() {
    for (file, code, line) in [
        ("basic-route.yaml", "IST0101", 12),
        ("fault-injection.yaml", "IST0130", 18),
        ("traffic-mirroring.yaml", "IST0133", 21),
        ("traffic-mirroring.yaml", "MR0003", 17),
        ("consistent-hash.yaml", "MR0006", 11),
    ] {
        let path = format!("examples/{file}");
        let out = meshroute(&["validate", "-f", &path]);
        let diags = parse_diagnostics(&out.stdout);
        assert!(
            diags.iter().any(|d| d.code.as_deref() == Some(code) && d.line == line),
            "{file}: expected {code} at line {line}:\n{}",
            out.stdout
        );
    }
}

#[test]
fn unknown_service_entry_field_points_at_its_line() {
    let out = meshroute(&["validate", "-f", "examples/external-https.yaml"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.starts_with(
            "warning: examples/external-https.yaml:14: ServiceEntry default/external-payment-api: spec.tls: "
        ),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("(MR0002)"), "{}", out.stdout);
}

#[test]
fn a_directory_is_read_in_name_order_and_redefinitions_point_at_the_shadowed_file() {
    let out = meshroute(&["validate", "-f", "examples"]);
    let diags = parse_diagnostics(&out.stdout);
    let shadowed: Vec<(String, u32)> = diags
        .iter()
        .filter(|d| d.code.as_deref() == Some("MR0001"))
        .map(|d| (d.file.trim_start_matches("examples/").to_string(), d.line))
        .collect();
    // docs/semantics.md §15: the last file in name order wins.
    for f in [
        "basic-route.yaml",
        "fault-injection.yaml",
        "header-route.yaml",
        "retry-config.yaml",
        "canary-10.yaml",
        "canary-100.yaml",
        "consistent-hash.yaml",
        "loadbalancer-config.yaml",
        "connection-pool.yaml",
    ] {
        assert!(shadowed.contains(&(f.to_string(), 1)), "{f} is shadowed, reported at line 1: {shadowed:?}");
    }
    assert_eq!(shadowed.len(), 9, "{}", out.stdout);
    assert!(
        out.stdout.contains("VirtualService default/product-service is redefined by examples/weight-route.yaml:1"),
        "the shadowing file is named: {}",
        out.stdout
    );
    assert!(out.stderr.contains("21 resource(s)"), "{}", out.stderr);
}

#[test]
fn multi_document_yaml_json_and_stdin_are_read() {
    let dir = temp_dir("multi");
    let json = std::fs::read_to_string(repo_root().join("examples/json/weight-route.json")).expect("json");
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: p}\nspec:\n  host: product-service\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n";
    let yaml = write(&dir, "both.yaml", &format!("---\n{dr}---\n# empty document follows\n---\n"));
    let out = meshroute_stdin(&["validate", "-f", "-", &yaml], Some(&json));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("2 resource(s)"), "{}", out.stderr);
}

#[test]
fn malformed_yaml_exits_2_with_file_line_and_column() {
    let dir = temp_dir("malformed");
    let bad = write(
        &dir,
        "bad.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: [a, b\nspec: {}\n",
    );
    let out = meshroute(&["validate", "-f", &bad]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    let first = out.stdout.lines().next().unwrap_or_default();
    let prefix = format!("error: {bad}:");
    assert!(first.starts_with(&prefix), "{first}");
    let loc: Vec<&str> = first[prefix.len()..].splitn(3, ':').collect();
    assert!(loc[0].parse::<u32>().is_ok_and(|l| (4..=6).contains(&l)), "line: {first}");
    assert!(loc[1].parse::<u32>().is_ok(), "column: {first}");
    assert!(first.contains("YAML syntax error"), "{first}");

    let dup = write(&dir, "dup.yaml", "kind: VirtualService\nkind: Gateway\n");
    let out = meshroute(&["validate", "-f", &dup]);
    assert_eq!(out.code, 2);
    assert!(out.stdout.starts_with(&format!("error: {dup}:2:")), "{}", out.stdout);
    assert!(out.stdout.contains("duplicate key"), "{}", out.stdout);
}

#[test]
fn missing_file_exits_2_and_other_files_are_still_checked() {
    let out = meshroute(&["validate", "-f", "no/such/file.yaml", "examples/external-https.yaml"]);
    assert_eq!(out.code, 2);
    assert!(out.stdout.contains("error: no/such/file.yaml: cannot read"), "{}", out.stdout);
    assert!(out.stdout.contains("MR0002"), "the readable file is still validated: {}", out.stdout);
}

#[test]
fn wrong_kind_type_errors_and_missing_names_point_at_their_lines() {
    let dir = temp_dir("bad");
    let f = write(
        &dir,
        "bad.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualServce\nmetadata: {name: a}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: b}\nspec:\n  hosts: [b]\n  http:\n  - route:\n    - destination: {host: b}\n      weight: \"80\"\n---\n\
         apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  namespace: x\nspec: {}\n",
    );
    let out = meshroute(&["validate", "-f", &f]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let diags = parse_diagnostics(&out.stdout);
    let at = |line: u32, needle: &str| {
        assert!(
            diags.iter().any(|d| d.severity == "error" && d.line == line && d.text.contains(needle)),
            "expected an error at line {line} containing {needle:?}:\n{}",
            out.stdout
        )
    };
    at(2, "unsupported kind \"VirtualServce\"");
    at(13, "spec.http[0].route[0].weight");
    at(17, "missing name");
}

#[test]
fn settings_errors_point_into_the_settings_file() {
    let dir = temp_dir("settings");
    let s = write(&dir, "proxy.yaml", "namespace: prod\nnamespce: typo\n");
    let out = meshroute(&["validate", "-f", "examples/timeout-config.yaml", "--settings", &s]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.starts_with(&format!("error: {s}:")), "{}", out.stdout);
    assert!(out.stdout.contains("namespce"), "{}", out.stdout);
}

// === compile ===

#[test]
fn compile_output_is_the_table_the_filter_loads() {
    let dir = temp_dir("compile");
    let settings = write(&dir, "proxy.json", "{\"namespace\": \"default\", \"labels\": {\"app\": \"web\"}}");
    let out_file = dir.join("plugin.json");
    let out = meshroute(&[
        "compile",
        "-f",
        "examples/timeout-config.yaml",
        "examples/external-http.yaml",
        "--settings",
        &settings,
        "-o",
        &out_file.display().to_string(),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = std::fs::read_to_string(&out_file).expect("output written");
    let v: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(v["format"], meshroute::table::FORMAT);

    // What the filter does with it: load the table and decide.
    let table = meshroute::table::load(text.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let high = meshroute::Request::new("GET", "checkout-service", "/").with_header("x-priority", "high");
    assert_eq!(table.explain(&high).matched.expect("matched").timeout_ms, Some(5000));
    let low = meshroute::Request::new("GET", "checkout-service", "/");
    assert_eq!(table.explain(&low).matched.expect("matched").timeout_ms, Some(30000));
    // The ServiceEntry's host is in the table's registry: istiod's default route to its cluster.
    let weather = meshroute::Request::new("GET", "weather-api.example.com", "/");
    match table.decide(&weather, &mut meshroute::SplitMix64(1)) {
        meshroute::Decision::Default(d) => assert_eq!(d.cluster, "outbound|80||weather-api.example.com"),
        other => panic!("weather-api.example.com: {other:?}"),
    }

    // The same table as the library compiles from the same resources, and the same bytes on
    // standard output as in the file.
    let direct = meshroute(&[
        "compile",
        "-f",
        "examples/timeout-config.yaml",
        "examples/external-http.yaml",
        "--settings",
        &settings,
    ]);
    assert_eq!(direct.code, 0);
    assert_eq!(direct.stdout, text);
    // The table is not an input: it keeps no resources to read back.
    let again = meshroute(&["validate", "-f", &out_file.display().to_string()]);
    assert_eq!(again.code, 2, "{}{}", again.stdout, again.stderr);
    assert!(again.stdout.contains("this is a compiled table"), "{}{}", again.stdout, again.stderr);
    let as_settings =
        meshroute(&["validate", "-f", "examples/timeout-config.yaml", "--settings", &out_file.display().to_string()]);
    assert_eq!(as_settings.code, 2, "{}{}", as_settings.stdout, as_settings.stderr);
    assert!(
        as_settings.stdout.contains("compiled table (`meshroute compile` output), not settings"),
        "{}",
        as_settings.stdout
    );
}

#[test]
fn compile_refuses_errors_and_writes_nothing() {
    let dir = temp_dir("refuse");
    let out_file = dir.join("plugin.json");
    let bad = write(&dir, "bad.yaml", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec:\n  http:\n  - route:\n    - destination: {host: a}\n      weight: oops\n");
    let out = meshroute(&["compile", "-f", &bad, "-o", &out_file.display().to_string()]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(!out_file.exists(), "no output on errors");
    assert!(out.stderr.contains(&format!("error: {bad}:8:")), "{}", out.stderr);
    assert!(std::fs::read_dir(&dir).expect("dir").all(|e| !e
        .expect("entry")
        .file_name()
        .to_string_lossy()
        .contains("tmp")));
    let out = meshroute(&["compile", "-f", "nope.yaml", "-o", &out_file.display().to_string()]);
    assert_eq!(out.code, 2);
    assert!(!out_file.exists());
}

/// `--gateway` compiles what that Gateway's proxy serves: the VirtualServices bound to it, not
/// the mesh's (and the other way round without the flag).
#[test]
fn gateway_flag_compiles_the_gateways_routes() {
    let dir = temp_dir("gateway");
    let vs = write(
        &dir,
        "bound.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: api, namespace: default}\n\
         spec:\n  hosts: [api.example.com]\n  gateways: [istio-system/public-gateway]\n  http:\n\
         \x20 - route: [{destination: {host: api.internal.svc.cluster.local, port: {number: 8080}}}]\n",
    );
    let decide = |args: &[&str]| {
        let mut all = vec!["compile", "-f", "examples/ingress-gateway.yaml", &vs];
        all.extend_from_slice(args);
        let out = meshroute(&all);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let table = meshroute::table::load(out.stdout.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let req = meshroute::Request::new("GET", "api.example.com", "/");
        match table.decide(&req, &mut meshroute::SplitMix64(1)) {
            meshroute::Decision::Matched(m) => m.destination.map(|d| d.cluster.clone()),
            _ => None,
        }
    };
    assert_eq!(
        decide(&["--gateway", "istio-system/public-gateway"]).as_deref(),
        Some("outbound|8080||api.internal.svc.cluster.local")
    );
    assert_eq!(decide(&[]), None, "a sidecar does not serve a VirtualService bound only to a Gateway");
}

/// deploy/istio/wasmplugin.yaml and trafficextension.yaml carry a compiled table (the filter loads
/// nothing else), so they are generated: below their comments, each is exactly what the command
/// it names writes from deploy/istio/example/ (regenerate after changing meshroute's table).
#[test]
fn the_deploy_manifests_are_what_compile_as_writes() {
    for (kind, file) in
        [("wasmplugin", "deploy/istio/wasmplugin.yaml"), ("trafficextension", "deploy/istio/trafficextension.yaml")]
    {
        let out = meshroute(&[
            "compile",
            "-f",
            "deploy/istio/example/product-service.yaml",
            "--settings",
            "deploy/istio/example/proxy.yaml",
            "--as",
            kind,
            "--image",
            "oci://registry.example.com/meshroute:0.1.0",
            "--fail-strategy",
            "reload",
        ]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(out.stdout.contains("failStrategy: FAIL_RELOAD"), "{}", out.stdout);
        let text = std::fs::read_to_string(repo_root().join(file)).expect(file);
        let at =
            text.find("# Generated by `meshroute compile --as`").unwrap_or_else(|| panic!("{file}: no generated part"));
        assert!(text[..at].lines().all(|l| l.starts_with('#')), "{file}: only comments above the generated part");
        assert!(
            text[at..] == out.stdout,
            "{file} is not what `meshroute compile --as {kind}` writes now: regenerate it with `make deploy-istio`"
        );
    }
}

// === explain ===

/// DestinationRules defining the subsets the seed examples name (alone they are refused: IST0101).
const SUBSETS: &str = "tests/fixtures/seed-subsets.yaml";

#[test]
fn explain_shows_a_cors_preflight_answered_by_the_proxy_and_the_actual_requests_headers() {
    let dir = temp_dir("explain-cors");
    let f = write(
        &dir,
        "cors.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: api, namespace: default}\n\
         spec:\n  hosts: [api]\n  http:\n  - corsPolicy:\n      allowOrigins: [{exact: 'https://app.example'}]\n\
         \x20     allowMethods: [GET, PUT]\n      maxAge: 1h\n    route: [{destination: {host: api}}]\n",
    );
    let pre = meshroute(&[
        "explain",
        "-f",
        &f,
        "OPTIONS",
        "http://api/",
        "-H",
        "origin: https://app.example",
        "-H",
        "access-control-request-method: PUT",
    ]);
    assert_eq!(pre.code, 0, "{}", pre.stderr);
    for line in [
        "  cors: preflight, origin allowed: answered by the proxy",
        "what the filter does:",
        "    reply: 200",
        "    reply header: access-control-allow-origin: https://app.example",
        "    reply header: access-control-allow-methods: GET,PUT",
        "    reply header: access-control-max-age: 3600",
    ] {
        assert!(pre.stdout.lines().any(|l| l == line), "{line:?} not in\n{}", pre.stdout);
    }
    let get = meshroute(&["explain", "-f", &f, "GET", "http://api/", "-H", "origin: https://app.example"]);
    assert!(
        get.stdout.contains("    response header set access-control-allow-origin: https://app.example"),
        "{}",
        get.stdout
    );
    let other = meshroute(&["explain", "-f", &f, "GET", "http://api/", "-H", "origin: https://evil.example"]);
    assert!(
        other.stdout.contains("  cors: origin not allowed") && !other.stdout.contains("access-control"),
        "{}",
        other.stdout
    );
}

#[test]
fn explain_names_the_delegate_rule_a_request_matched() {
    let dir = temp_dir("explain-delegate");
    let f = write(
        &dir,
        "vs.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: root, namespace: default}\n\
         spec:\n  hosts: [bookinfo.example.com]\n  http:\n  - name: pp\n    match: [{uri: {prefix: /productpage}}]\n\
         \x20   delegate: {name: productpage, namespace: team-a}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: productpage, namespace: team-a}\n\
         spec:\n  http:\n  - name: v2\n    match: [{headers: {end-user: {exact: jason}}}]\n\
         \x20   route: [{destination: {host: productpage-v2}}]\n  - route: [{destination: {host: productpage}}]\n",
    );
    let out = meshroute(&["explain", "-f", &f, "GET", "http://bookinfo.example.com/productpage/1"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for line in [
        "  no match  spec.http[0].match[0] (pp-v2): header end-user is absent",
        "result: rule spec.http[1] (pp)",
        "  delegated: spec.http[0] delegates to VirtualService team-a/productpage spec.http[1]",
        "  100.00%  outbound|80||productpage.team-a.svc.cluster.local",
    ] {
        assert!(out.stdout.lines().any(|l| l.starts_with(line)), "{line:?} not in\n{}", out.stdout);
    }
    // An error in the delegate shows as the consequence of the merged rule in the root.
    let text = std::fs::read_to_string(&f).unwrap().replace("host: productpage}", "host: productpage, subset: v9}");
    let bad = write(&dir, "bad.yaml", &text);
    let out = meshroute(&["explain", "-f", &bad, "GET", "http://bookinfo.example.com/productpage/1"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stdout.contains("    → 503 (no healthy upstream: subset v9 is defined by no DestinationRule)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("because: error: VirtualService team-a/productpage: spec.http[1].route[0]"),
        "{}",
        out.stdout
    );
}

#[test]
fn explain_header_route_says_why_the_first_rule_did_not_match() {
    let out =
        meshroute(&["explain", "-f", SUBSETS, "-f", "examples/header-route.yaml", "GET", "http://product-service/"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("virtual service: default/product-service"), "{}", out.stdout);
    assert!(out.stdout.contains("no match  spec.http[0].match[0]: header x-debug is absent"), "{}", out.stdout);
    assert!(out.stdout.contains("MATCH     spec.http[1]"), "{}", out.stdout);
    assert!(out.stdout.contains("100.00%  outbound|80|v1|product-service.default.svc.cluster.local"), "{}", out.stdout);

    let dbg = meshroute(&[
        "explain",
        "-f",
        SUBSETS,
        "-f",
        "examples/header-route.yaml",
        "GET",
        "http://product-service/",
        "-H",
        "x-debug: true",
        "--json",
    ]);
    assert_eq!(dbg.code, 0, "{}", dbg.stderr);
    let v: Value = serde_json::from_str(&dbg.stdout).expect("JSON");
    assert_eq!(v["outcome"], "matched");
    assert_eq!(v["matched"]["rule"], 0);
    assert_eq!(v["branches"][0]["destination"]["subset"], "v2");
    assert_eq!(v["branches"][0]["plan"]["cluster"], "outbound|80|v2|product-service.default.svc.cluster.local");
    assert!(v["findings"].as_array().expect("findings").iter().all(|f| f["severity"] != "error"), "{}", dbg.stdout);
    let wrong = meshroute(&[
        "explain",
        "-f",
        SUBSETS,
        "-f",
        "examples/header-route.yaml",
        "GET",
        "http://product-service/",
        "-H",
        "x-debug: false",
        "--json",
    ]);
    let v: Value = serde_json::from_str(&wrong.stdout).expect("JSON");
    assert_eq!(v["evaluated"][0]["reason"], "header x-debug: \"false\" does not match exact \"true\"");
}

#[test]
fn explain_canary_split_gives_80_and_20_percent() {
    let out =
        meshroute(&["explain", "-f", SUBSETS, "-f", "examples/weight-route.yaml", "GET", "http://product-service/"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains(" 80.00%  outbound|80|v1|product-service.default.svc.cluster.local"), "{}", out.stdout);
    assert!(out.stdout.contains(" 20.00%  outbound|80|v2|product-service.default.svc.cluster.local"), "{}", out.stdout);
    let json = meshroute(&[
        "explain",
        "-f",
        SUBSETS,
        "-f",
        "examples/weight-route.yaml",
        "GET",
        "http://product-service/",
        "--json",
    ]);
    let v: Value = serde_json::from_str(&json.stdout).expect("JSON");
    let pct: Vec<f64> =
        v["branches"].as_array().expect("branches").iter().map(|b| b["percent"].as_f64().expect("percent")).collect();
    assert_eq!(pct, vec![80.0, 20.0]);
}

#[test]
fn explain_shows_fault_retries_timeout_and_mirrors() {
    let fault =
        meshroute(&["explain", "-f", SUBSETS, "-f", "examples/fault-injection.yaml", "GET", "http://product-service/"]);
    assert!(fault.stdout.contains("fault delay: 5000 ms for 10% of requests"), "{}", fault.stdout);
    let retry =
        meshroute(&["explain", "-f", SUBSETS, "-f", "examples/retry-config.yaml", "GET", "http://order-service/"]);
    assert!(retry.stdout.contains("retries: 3 attempts on"), "{}", retry.stdout);
    assert!(
        retry.stdout.contains("request header set x-envoy-upstream-rq-per-try-timeout-ms: 2000"),
        "{}",
        retry.stdout
    );
    let timeout =
        meshroute(&["explain", "-f", SUBSETS, "-f", "examples/timeout-config.yaml", "GET", "http://checkout-service/"]);
    assert!(timeout.stdout.contains("timeout: 30000 ms"), "{}", timeout.stdout);
    assert!(timeout.stdout.contains("x-envoy-upstream-rq-timeout-ms: 30000"), "{}", timeout.stdout);
    let mirror =
        meshroute(&["explain", "-f", SUBSETS, "-f", "examples/traffic-mirroring.yaml", "GET", "http://order-service/"]);
    assert!(
        mirror.stdout.contains("mirror: 100% of requests to outbound|80|v2-canary|order-service"),
        "{}",
        mirror.stdout
    );
    let none =
        meshroute(&["explain", "-f", SUBSETS, "-f", "examples/uri-route.yaml", "GET", "http://api.example.com/other"]);
    assert!(none.stdout.contains("result: no rule matches: 404"), "{}", none.stdout);
    let pass = meshroute(&["explain", "-f", SUBSETS, "-f", "examples/uri-route.yaml", "GET", "http://elsewhere/"]);
    assert!(pass.stdout.contains("no VirtualService claims host"), "{}", pass.stdout);
}

#[test]
fn explain_on_a_broken_configuration_prints_findings_then_each_consequence() {
    // Without the DestinationRules the canary's subsets are undefined (IST0101): istiod serves it
    // anyway, and every request ends in Envoy's 503.
    let out = meshroute(&["explain", "-f", "examples/weight-route.yaml", "GET", "http://product-service/"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stdout.starts_with("findings: 2 error(s)"), "{}", out.stdout);
    let findings_end = out.stdout.find("request: GET").expect("explanation after the findings");
    assert!(out.stdout[..findings_end].contains("examples/weight-route.yaml:12:"), "{}", out.stdout);
    assert!(
        out.stdout.contains("→ 503 (no healthy upstream: subset v1 is defined by no DestinationRule)"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains(" 20.00%  outbound|80|v2|product-service"), "{}", out.stdout);

    let json = meshroute(&["explain", "-f", "examples/weight-route.yaml", "GET", "http://product-service/", "--json"]);
    assert_eq!(json.code, 1);
    let v: Value = serde_json::from_str(&json.stdout).expect("JSON");
    let errors: Vec<&Value> =
        v["findings"].as_array().expect("findings").iter().filter(|f| f["severity"] == "error").collect();
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0]["code"], "IST0101");
    for b in v["branches"].as_array().expect("branches") {
        assert_eq!(b["consequence"]["status"], 503, "{b}");
    }

    // A resource the webhook refuses is left out: its host falls back to passthrough.
    let dir = temp_dir("explain-broken");
    let bad = write(&dir, "bad.yaml", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec:\n  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n      weight: -5\n    - destination: {host: b}\n      weight: 105\n");
    let out = meshroute(&["explain", "-f", &bad, "GET", "http://a/"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stdout.contains("refused by Istio's admission webhook"), "{}", out.stdout);
    assert!(out.stdout.contains("no VirtualService claims host \"a\""), "{}", out.stdout);

    // Acting as a Gateway that does not exist: no request reaches the routes at all.
    let out = meshroute(&[
        "explain",
        "-f",
        "examples/gateway-vs-binding.yaml",
        "-f",
        SUBSETS,
        "--gateway",
        "default/public-gateway",
        "GET",
        "http://api.example.com/products",
        "--json",
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert!(
        v["consequence"]["reason"].as_str().is_some_and(|r| r.starts_with("no Gateway default/public-gateway exists")),
        "{}",
        out.stdout
    );

    // compile and envoy keep refusing.
    for cmd in [&["compile"][..], &["envoy", "--wasm", "meshroute.wasm"]] {
        let out = meshroute(&[cmd, &["-f", "examples/weight-route.yaml"]].concat());
        assert_eq!(out.code, 1, "{cmd:?}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{cmd:?}: {}", out.stdout);
    }
}

#[test]
fn explain_rejects_a_bad_url() {
    let out = meshroute(&["explain", "-f", SUBSETS, "-f", "examples/uri-route.yaml", "GET", "ftp://x/"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("unsupported URL scheme"), "{}", out.stderr);
}

// === help ===

#[test]
fn every_command_has_help_with_examples() {
    for cmd in
        [&["--help"][..], &["validate", "--help"], &["compile", "--help"], &["envoy", "--help"], &["explain", "--help"]]
    {
        let out = meshroute(cmd);
        assert_eq!(out.code, 0, "{cmd:?}");
        assert!(out.stdout.contains("Examples:"), "{cmd:?}: {}", out.stdout);
    }
    let bad = meshroute(&["validate"]);
    assert_eq!(bad.code, 2, "missing -f is a usage error");
}

// === envoy ===

#[test]
fn envoy_config_for_every_seed_example_passes_envoy_validate() {
    let Some(envoy) = envoy_or_skip("envoy_config_for_every_seed_example_passes_envoy_validate") else { return };
    let Some(wasm) = filter_wasm_or_skip("envoy_config_for_every_seed_example_passes_envoy_validate") else { return };
    let dir = temp_dir("envoy");
    let wasm = wasm.display().to_string();
    // Each example with the subsets it names defined, as a user would deploy it.
    let mut inputs: Vec<(String, Vec<String>)> = example_files()
        .into_iter()
        .map(|f| (f.clone(), vec![format!("examples/{f}"), "tests/fixtures/seed-subsets.yaml".into()]))
        .collect();
    inputs.push(("all".into(), vec!["examples".into(), "tests/fixtures/seed-subsets.yaml".into()]));
    let mut refused = Vec::new();
    for (name, files) in inputs {
        let out_file = dir.join(format!("{name}.envoy.yaml"));
        let mut args = vec!["envoy", "--wasm", &wasm, "-o"];
        let out_s = out_file.display().to_string();
        args.push(&out_s);
        args.push("-f");
        args.extend(files.iter().map(String::as_str));
        let out = meshroute(&args);
        if out.code == 1 {
            // A configuration with errors generates nothing, by design.
            assert!(!out_file.exists(), "{name}");
            assert!(out.stderr.contains("nothing was generated"), "{name}: {}", out.stderr);
            refused.push(name);
            continue;
        }
        assert_eq!(out.code, 0, "{name}: {}", out.stderr);
        envoy_validate(&envoy, &out_file).unwrap_or_else(|e| panic!("{name}: envoy --mode validate failed:\n{e}"));
    }
    // gateway-vs-binding names a Gateway that does not exist (IST0101 error), so `all` too.
    assert_eq!(refused, vec!["gateway-vs-binding.yaml".to_string(), "all".to_string()]);
}

#[test]
fn gateway_config_with_https_redirect_and_tls_passes_envoy_validate() {
    let Some(envoy) = envoy_or_skip("gateway_config_with_https_redirect_and_tls_passes_envoy_validate") else { return };
    let Some(wasm) = filter_wasm_or_skip("gateway_config_with_https_redirect_and_tls_passes_envoy_validate") else {
        return;
    };
    let dir = temp_dir("gateway");
    let creds = dir.join("creds");
    std::fs::create_dir_all(&creds).expect("mkdir");
    support_tls::self_signed(&creds, "example-tls", "api.example.com");
    let vs = write(
        &dir,
        "vs.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: api, namespace: default}\nspec:\n  hosts: [api.example.com]\n  gateways: [istio-system/public-gateway]\n  http:\n  - route:\n    - destination: {host: product-service, port: {number: 8080}}\n",
    );
    let out_file = dir.join("gw.yaml");
    let out = meshroute(&[
        "envoy",
        "-f",
        "examples/ingress-gateway.yaml",
        &vs,
        "--gateway",
        "istio-system/public-gateway",
        "--credentials-dir",
        &creds.display().to_string(),
        "--wasm",
        &wasm.display().to_string(),
        "-o",
        &out_file.display().to_string(),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = std::fs::read_to_string(&out_file).expect("written");
    assert!(text.contains("require_tls: ALL"), "{text}");
    assert!(text.contains("DownstreamTlsContext"), "{text}");
    envoy_validate(&envoy, &out_file).unwrap_or_else(|e| panic!("envoy --mode validate failed:\n{e}"));

    // Without the credentials directory the HTTPS server cannot be built: a warning says so.
    let out = meshroute(&[
        "envoy",
        "-f",
        "examples/ingress-gateway.yaml",
        "--gateway",
        "istio-system/public-gateway",
        "--wasm",
        "x.wasm",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("credentialName \"example-tls\" needs --credentials-dir"), "{}", out.stderr);
}

#[test]
fn every_translated_traffic_policy_feature_passes_envoy_validate() {
    let Some(envoy) = envoy_or_skip("every_translated_traffic_policy_feature_passes_envoy_validate") else { return };
    let Some(wasm) = filter_wasm_or_skip("every_translated_traffic_policy_feature_passes_envoy_validate") else {
        return;
    };
    let dir = temp_dir("rich");
    let creds = dir.join("creds");
    std::fs::create_dir_all(&creds).expect("mkdir");
    support_tls::self_signed(&creds, "client", "client.internal");
    let settings = write(&dir, "proxy.yaml", "locality: us-west-2/zone-a\n");
    let out_file = dir.join("envoy.yaml");
    let out = meshroute(&[
        "envoy",
        "-f",
        "tests/fixtures/rich-traffic-policy.yaml",
        "--settings",
        &settings,
        "--credentials-dir",
        &creds.display().to_string(),
        "--wasm",
        &wasm.display().to_string(),
        "-o",
        &out_file.display().to_string(),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = std::fs::read_to_string(&out_file).expect("written");
    for needle in [
        "lb_policy: MAGLEV",
        "lb_policy: RING_HASH",
        "slow_start_config",
        "outlier_detection",
        "priority: 1",
        "http2_protocol_options",
        "UpstreamTlsContext",
        "ORIGINAL_DST",
        "source_ip: true",
        "query_parameter",
        "header_name: x-user",
        "tcp_keepalive",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    envoy_validate(&envoy, &out_file).unwrap_or_else(|e| panic!("envoy --mode validate failed:\n{e}\n{text}"));
}

#[test]
fn envoy_refuses_a_gateway_that_does_not_exist() {
    let out =
        meshroute(&["envoy", "-f", "examples/ingress-gateway.yaml", "--gateway", "default/nope", "--wasm", "x.wasm"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("default/nope"), "{}", out.stderr);
}

/// The retry fields only route configuration carries (R220, R221): MR0007 where the filter hints
/// the policy (plain plugin configuration, `compile`, `validate`), none where the generated
/// routes carry it (`envoy`; the filter's settings behind `compile --as envoyfilter`), and none
/// for what a hint does anyway (`retryIgnorePreviousHosts: false`) or where istiod writes no
/// policy (`attempts: 0`).
#[test]
fn retry_fields_only_routes_carry_are_reported_exactly_where_they_are_lost() {
    let dir = temp_dir("retry-truth");
    let vs = write(
        &dir,
        "vs.yaml",
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: b, namespace: default}\nspec:\n  \
         hosts: [b.example.com]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: STATIC\n  \
         endpoints: [{address: 127.0.0.1}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n\
         metadata: {name: b, namespace: default}\nspec:\n  hosts: [b.example.com]\n  http:\n  \
         - match: [{uri: {prefix: /all}}]\n    route: [{destination: {host: b.example.com}}]\n    \
         retries: {attempts: 3, retryOn: 5xx, backoff: 100ms, retryIgnorePreviousHosts: true, retryRemoteLocalities: true}\n  \
         - match: [{uri: {prefix: /other}}]\n    route: [{destination: {host: b.example.com}}]\n    \
         retries: {attempts: 2, retryIgnorePreviousHosts: false}\n  \
         - route: [{destination: {host: b.example.com}}]\n    retries: {attempts: 0, backoff: 1s}\n",
    );
    let lost = [
        "spec.http[0].retries.backoff: retry back-off is not applied",
        "spec.http[0].retries.retryIgnorePreviousHosts: retryIgnorePreviousHosts: true is not applied",
        "spec.http[0].retries.retryRemoteLocalities: retryRemoteLocalities: true is not applied",
    ];
    let mr0007 = |text: &str| text.lines().filter(|l| l.contains("(MR0007)")).map(str::to_string).collect::<Vec<_>>();

    // The filter alone hints: exactly the three fields of the first rule are lost.
    for (cmd, text) in [
        ("validate", meshroute(&["validate", "-f", &vs]).stdout),
        ("compile", meshroute(&["compile", "-f", &vs]).stderr),
        ("envoyfilter without settings", meshroute(&["compile", "--as", "envoyfilter", "-f", &vs]).stderr),
    ] {
        let got = mr0007(&text);
        assert_eq!(got.len(), lost.len(), "{cmd}:\n{text}");
        for (line, want) in got.iter().zip(lost) {
            assert!(line.contains(want), "{cmd}: {line:?} lacks {want:?}");
        }
    }

    // The generated routes carry them all: no MR0007, and the route has every part.
    let out_file = dir.join("envoy.yaml");
    let out = meshroute(&["envoy", "-f", &vs, "--wasm", "x.wasm", "-o", &out_file.display().to_string()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(mr0007(&out.stderr), Vec::<String>::new(), "{}", out.stderr);
    let text = std::fs::read_to_string(&out_file).expect("written");
    for needle in ["retry_back_off", "base_interval: \"0.1s\"", "previous_priorities", "previous_hosts"] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }

    // So does a filter given both settings (what `compile --as envoyfilter` asks for).
    let settings = write(&dir, "proxy.yaml", "retryPolicyOnRoute: true\nretryPolicyRoutes: true\n");
    for args in [&["validate"][..], &["compile"], &["compile", "--as", "envoyfilter"]] {
        let out = meshroute(&[args, &["-f", &vs, "--settings", &settings]].concat());
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        assert_eq!(mr0007(&format!("{}{}", out.stdout, out.stderr)), Vec::<String>::new(), "{args:?}");
    }
    // retryPolicyOnRoute alone still hints a rule's own policy.
    let on_route = write(&dir, "on-route.yaml", "retryPolicyOnRoute: true\n");
    assert_eq!(mr0007(&meshroute(&["validate", "-f", &vs, "--settings", &on_route]).stdout).len(), lost.len());
}

/// Certificates for TLS tests, made with the `openssl` command.
mod support_tls {
    use std::path::Path;
    use std::process::Command;

    pub fn self_signed(dir: &Path, name: &str, host: &str) {
        let status = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout"])
            .arg(dir.join(format!("{name}.key")))
            .arg("-out")
            .arg(dir.join(format!("{name}.crt")))
            .args(["-subj", &format!("/CN={host}"), "-addext", &format!("subjectAltName=DNS:{host}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("the openssl command is needed for TLS tests");
        assert!(status.success(), "openssl failed");
    }
}

#[test]
fn beyond_a_thousand_errors_the_rest_are_counted_not_printed() {
    let rules: Vec<String> = (0..1005)
        .map(|i| {
            format!("  - match: [{{uri: {{regex: \"/g/{i}/[0-9\"}}}}]\n    route: [{{destination: {{host: backend}}}}]")
        })
        .collect();
    let yaml = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: many, namespace: default}}\nspec:\n  hosts: [shop]\n  http:\n{}\n",
        rules.join("\n")
    );
    let dir = temp_dir("cap");
    let file = write(&dir, "many.yaml", &yaml);
    let out = meshroute(&["validate", "-f", &file]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let errors = out.stdout.lines().filter(|l| l.starts_with("error: ")).count();
    assert_eq!(errors, 1000, "{}", out.stdout);
    assert!(
        out.stdout.contains("meshroute: 5 more errors not shown (the first 1000 of each severity are kept)"),
        "{}",
        out.stdout
    );
    assert!(out.stderr.contains("1005 error(s)"), "{}", out.stderr);
}
