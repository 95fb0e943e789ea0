//! The configuration lifecycle through a real Envoy: `meshroute up` starts it on a state
//! directory, then `apply` / `rollback` alternate revisions under load while invalid ones
//! (refused by meshroute) and ones Envoy itself refuses are mixed in. No request may fail, every
//! response must come from a cluster of a revision live at that moment, and `history` /
//! `status` must tell exactly what happened.
//!
//! `make test` runs a short round; the full round (50 applies, 10 invalid, 10
//! rollbacks) is `cargo test --features cli --test lifecycle -- --ignored` (`make lifecycle`).
//!
//! Skips loudly without Envoy or the filter's Wasm module locally; fails under `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use support::cli::*;
use support::*;

/// Resources routing all of reviews.internal to `subset` (v1, v2, v3 are upstreams), with an
/// optional extra DestinationRule trafficPolicy.
fn config(ports: &[(&str, u16)], route: &str, policy: &str) -> String {
    reviews_config(ports, route, policy)
}

/// One operation: when it ran and which upstreams may answer once it is over.
struct Op {
    start: Instant,
    end: Instant,
    live_after: BTreeSet<&'static str>,
}

struct Seen {
    sent: Instant,
    received: Instant,
    upstream: String,
    /// `x-meshroute-revision`: `<number>-<hash>`.
    revision: String,
}

/// Envoy's resident memory, kB (`VmRSS` of the process `up` started).
fn envoy_rss(state: &std::path::Path) -> u64 {
    let pid = std::fs::read_to_string(state.join("envoy.pid")).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn round(test: &str, valid: usize, invalid: usize, rollbacks: usize) {
    let Some((_, wasm)) = envoy_and_filter(test) else { return };
    let ups: Vec<Upstream> = ["v1", "v2", "v3"].iter().map(|n| Upstream::named(n)).collect();
    let ports: Vec<(&str, u16)> = vec![("v1", ups[0].port()), ("v2", ups[1].port()), ("v3", ups[2].port())];
    let dir = fresh_dir(&format!("lifecycle-{test}"));
    let state = dir.join("state");
    let write = |name: &str, body: String| {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p.display().to_string()
    };
    let a = write("a.yaml", config(&ports, "v1", ""));
    let b = write("b.yaml", config(&ports, "v2", ""));
    // Refused by meshroute: the subset exists nowhere (IST0101).
    let invalid_file = write("invalid.yaml", config(&ports, "v9", ""));
    // Accepted by meshroute, refused by Envoy: the CA file does not exist.
    let rejected_file = write(
        "rejected.yaml",
        config(&ports, "v3", "  trafficPolicy: {tls: {mode: SIMPLE, caCertificates: /nonexistent/meshroute/ca.pem}}\n"),
    );
    // Responses say which revision decided them.
    let settings = write("settings.yaml", "revisionHeader: true\n".into());
    let st = state.display().to_string();
    // `apply -f FILE` on the state directory, with the settings and a message.
    let apply = |file: &str, message: &str| {
        meshroute(&["apply", "-f", file, "--settings", &settings, "--state", &st, "-m", message])
    };
    let t0 = Instant::now();
    let (up, listen) =
        up_on_fresh_ports(&["--state", &st, "--wasm", wasm.to_str().unwrap(), "--detach", "-f", &a, "-m", "first"]);
    let _stop = StopEnvoy::new(&state);
    assert!(up.status.success(), "up: {}", text(&up));
    let rss_start = envoy_rss(&state);
    let mut ops = vec![Op { start: t0, end: Instant::now(), live_after: BTreeSet::from(["v1"]) }];

    // Load: one keep-alive client (a listener that drained would show as a failed request).
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let load = {
        let (stop, seen, failures) = (stop.clone(), seen.clone(), failures.clone());
        thread::spawn(move || {
            let mut conn = Conn::open(listen, Duration::from_secs(5)).unwrap();
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                match conn.request("GET", "/", &[("host", "reviews.internal")], b"", Duration::from_secs(5)) {
                    Ok(r) if r.status == 200 => seen.lock().unwrap().push(Seen {
                        sent,
                        received: Instant::now(),
                        upstream: r.header("x-upstream").unwrap_or("?").to_string(),
                        revision: r.header("x-meshroute-revision").unwrap_or("").to_string(),
                    }),
                    Ok(r) => failures.lock().unwrap().push(format!("status {} {:?}", r.status, r.headers)),
                    Err(e) => {
                        failures.lock().unwrap().push(format!("error {e}"));
                        conn = Conn::open(listen, Duration::from_secs(5)).unwrap();
                    }
                }
                thread::sleep(Duration::from_millis(2));
            }
        })
    };

    // The plan: valid applies alternate a/b; invalid and Envoy-rejected ones and rollbacks are
    // spread among them.
    let mut live: BTreeSet<&'static str> = BTreeSet::from(["v1"]);
    let mut expect = vec![("applied", "first".to_string())];
    let (mut n_invalid, mut n_rollback) = (0, 0);
    let every = (valid / invalid.max(rollbacks).max(1)).max(2);
    for i in 0..valid {
        // Always the other one of the pair, so every apply changes something.
        let (file, to) = if live.contains("v1") { (&b, "v2") } else { (&a, "v1") };
        let start = Instant::now();
        let o = apply(file, &format!("valid {i}"));
        assert!(o.status.success(), "apply {i}: {}", text(&o));
        live = BTreeSet::from([to]);
        ops.push(Op { start, end: Instant::now(), live_after: live.clone() });
        expect.push(("applied", format!("valid {i}")));
        if n_invalid < invalid && i % every == 0 {
            n_invalid += 1;
            // Alternate: refused before Envoy sees it (exit 1, no revision) and refused by Envoy
            // (exit 3, a rejected revision, the last good one restored).
            let start = Instant::now();
            if n_invalid % 2 == 1 {
                let o = apply(&invalid_file, "invalid");
                assert_eq!(o.status.code(), Some(1), "invalid apply: {}", text(&o));
                assert!(text(&o).contains("IST0101"), "{}", text(&o));
            } else {
                let o = apply(&rejected_file, "rejected");
                assert_eq!(o.status.code(), Some(3), "Envoy-rejected apply: {}", text(&o));
                assert!(text(&o).contains("update_rejected"), "{}", text(&o));
                expect.push(("rejected", "rejected".into()));
            }
            ops.push(Op { start, end: Instant::now(), live_after: live.clone() });
        }
        if n_rollback < rollbacks && i % every == 1 {
            n_rollback += 1;
            let start = Instant::now();
            let o = meshroute(&["rollback", "--state", &st]);
            assert!(o.status.success(), "rollback: {}", text(&o));
            // The previous applied revision is the other one of the pair.
            live = if live.contains("v1") { BTreeSet::from(["v2"]) } else { BTreeSet::from(["v1"]) };
            ops.push(Op { start, end: Instant::now(), live_after: live.clone() });
            expect.push(("applied", "rollback to".into()));
        }
    }
    // Nothing changed → no new revision.
    let again = apply(if live.contains("v1") { &a } else { &b }, "");
    assert!(again.status.success() && text(&again).contains("nothing changed"), "{}", text(&again));
    thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();

    let failures = failures.lock().unwrap();
    let seen = seen.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed request(s) of {}: {:?}",
        failures.len(),
        seen.len() + failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(seen.len() > 50, "too little load: {}", seen.len());
    // Every response came from an upstream allowed by a revision live at some moment between
    // sending and receiving: the one before an operation and the one after it, while it ran.
    for s in seen.iter() {
        let mut allowed: BTreeSet<&str> = BTreeSet::new();
        for (k, op) in ops.iter().enumerate() {
            let next_start = ops.get(k + 1).map_or(Instant::now(), |n| n.start);
            // After op k ended and until op k+1 ended, op k's revision may be live.
            let until = ops.get(k + 1).map_or(next_start, |n| n.end);
            if s.sent <= until && s.received >= op.start {
                allowed.extend(op.live_after.iter().copied());
            }
        }
        assert!(allowed.contains(s.upstream.as_str()), "response from {} while only {allowed:?} were live", s.upstream);
        assert_ne!(s.upstream, "v3", "the refused revisions' upstream answered");
    }
    // The revision header: one content (a or b, whatever its revision number) always answers
    // from one upstream. A response may lack the header only while an operation ran: Envoy does
    // not call a filter instance whose configuration was just replaced for the rest of the
    // stream (docs/envoy-findings.md §7).
    let mut by_hash: std::collections::BTreeMap<&str, BTreeSet<&str>> = Default::default();
    let mut without = 0;
    for s in seen.iter() {
        match s.revision.split_once('-') {
            Some((_, h)) => {
                by_hash.entry(h).or_default().insert(s.upstream.as_str());
            }
            None => {
                without += 1;
                assert!(
                    ops.iter().any(|op| s.sent <= op.end && s.received >= op.start),
                    "a response without x-meshroute-revision outside any operation"
                );
            }
        }
    }
    assert!(by_hash.len() <= 2 && by_hash.values().all(|u| u.len() == 1), "revision → upstreams: {by_hash:?}");
    // history shows exactly what happened.
    let h = meshroute(&["history", "--state", &st]);
    assert!(h.status.success(), "{}", text(&h));
    let out = String::from_utf8_lossy(&h.stdout).to_string();
    let rows: Vec<&str> = out.lines().skip(1).filter(|l| !l.starts_with("      ")).collect();
    assert_eq!(rows.len(), expect.len(), "history:\n{out}");
    for (row, (result, msg)) in rows.iter().zip(&expect) {
        assert!(row.contains(result) && row.contains(msg.as_str()), "row {row:?} should be {result} {msg:?}\n{out}");
    }
    assert!(rows.last().unwrap().starts_with('*'), "the last revision is live:\n{out}");
    let s = meshroute(&["status", "--state", &st, "--window", "0"]);
    assert!(s.status.success(), "status: {}", text(&s));
    let last = expect.len();
    assert!(text(&s).contains(&format!("filter revision gauge {last}")), "{}", text(&s));
    let rss_end = envoy_rss(&state);
    eprintln!(
        "{test}: {} requests, 0 failed, {without} without the revision header (during an operation), {} operations in \
         {:?}; Envoy RSS {rss_start} kB → {rss_end} kB",
        seen.len(),
        ops.len(),
        t0.elapsed()
    );
    // Bounded: each revision replaces the previous filter instance instead of piling up.
    assert!(rss_end < rss_start * 2, "Envoy's RSS grew from {rss_start} kB to {rss_end} kB");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The seed's canary stages: `diff` prints the share changes exactly, exit 1; equal inputs exit 0.
#[test]
fn diff_of_the_canary_stages_prints_the_share_changes() {
    let subsets = "tests/fixtures/seed-subsets.yaml";
    let stage = |from: &str, to: &str| {
        let o = meshroute(&["diff", "-f", to, subsets, "--from", from, subsets]);
        (o.status.code(), String::from_utf8_lossy(&o.stdout).to_string())
    };
    let (code, out) = stage("examples/canary-10.yaml", "examples/canary-50.yaml");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(
            "default/recommendation-service rule 0: recommendation-service v1 90% → 50%, recommendation-service v2 10% → 50%"
        ),
        "{out}"
    );
    assert!(out.contains("spec.http[0].route[0].weight: 90 → 50"), "{out}");
    let (code, out) = stage("examples/canary-50.yaml", "examples/canary-100.yaml");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(
            "default/recommendation-service rule 0: recommendation-service v1 50% → 0%, recommendation-service v2 50% → 100%"
        ),
        "{out}"
    );
    let (code, out) = stage("examples/canary-50.yaml", "examples/canary-50.yaml");
    assert_eq!((code, out.as_str()), (Some(0), ""));
    let o = meshroute(&["diff", "-f", "examples/canary-50.yaml", subsets]);
    assert_eq!(o.status.code(), Some(2), "no old side is an error: {}", text(&o));
}

#[test]
fn compile_as_wasmplugin_writes_the_manifest_with_the_table_as_plugin_config() {
    for (kind, name) in [("wasmplugin", "kind: WasmPlugin"), ("trafficextension", "kind: TrafficExtension")] {
        let o = meshroute(&[
            "compile",
            "-f",
            "examples/canary-10.yaml",
            "tests/fixtures/seed-subsets.yaml",
            "--as",
            kind,
            "--image",
            "oci://registry.test/meshroute:1",
        ]);
        assert!(o.status.success(), "{}", text(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        for want in [
            name,
            "url: \"oci://registry.test/meshroute:1\"",
            "failStrategy: FAIL_CLOSE",
            "pluginConfig:",
            "format: meshroute.table/v1",
            "weight: 90",
        ] {
            assert!(out.contains(want), "{kind}: no {want:?} in\n{out}");
        }
        // The table the filter loads, not the resources it was compiled from.
        assert!(!out.contains("kind: VirtualService") && !out.contains("resources:"), "{kind}:\n{out}");
    }
    // A configuration with errors gives no manifest.
    let o = meshroute(&["compile", "-f", "examples/canary-10.yaml", "--as", "wasmplugin"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
}

#[test]
fn a_directory_that_is_not_ours_is_refused_and_left_alone() {
    let dir = fresh_dir("notours");
    std::fs::write(dir.join("precious.txt"), "keep").unwrap();
    // `apply` of the seed's 50 % stage on `state`, with `extra` arguments.
    let apply = |state: &std::path::Path, extra: &[&str]| {
        let st = state.display().to_string();
        let mut args =
            vec!["apply", "-f", "examples/canary-50.yaml", "tests/fixtures/seed-subsets.yaml", "--state", &st];
        args.extend_from_slice(&["--wasm", "/m.wasm"]);
        args.extend_from_slice(extra);
        meshroute(&args)
    };
    let o = apply(&dir, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("is not a meshroute state directory"), "{}", text(&o));
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("precious.txt")]);
    // Envoy not running: clear error, nothing written.
    // A port where connections are refused, not one released for anyone to take.
    let admin = format!("127.0.0.1:{}", refused_port());
    let o = apply(&dir.join("fresh"), &["--admin", &admin]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("does not answer") && text(&o).contains("nothing was applied"), "{}", text(&o));
    let revs = std::fs::read_dir(dir.join("fresh/revisions")).unwrap().count();
    assert_eq!(revs, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn applies_and_rollbacks_under_load_lose_no_request() {
    round("lifecycle_short", 6, 2, 2);
}

#[test]
#[ignore = "the issue's full round (50 applies, 10 invalid, 10 rollbacks): make lifecycle"]
fn fifty_applies_ten_invalid_ten_rollbacks_under_load_lose_no_request() {
    round("lifecycle_full", 50, 10, 10);
}

/// `up` on a listen address another process holds: Envoy refuses the listener and would serve on
/// without it, so `up` must fail with Envoy's reason and leave no Envoy running.
#[test]
fn up_on_a_taken_listen_address_fails_with_the_reason_and_leaves_no_envoy() {
    let Some((_, wasm)) = envoy_and_filter("up_on_a_taken_listen_address") else { return };
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = format!("127.0.0.1:{}", held.local_addr().unwrap().port());
    let dir = fresh_dir("lifecycle-taken");
    let ups = [Upstream::named("v1")];
    let resources = dir.join("a.yaml");
    std::fs::write(&resources, config(&[("v1", ups[0].port())], "v1", "")).unwrap();
    let refused = format!("cannot bind '{taken}': Address already in use");
    // `up` needs its admin address before Envoy starts: a picked one that someone else took in
    // between fails differently (naming that port), and is picked again.
    for attempt in 0..5 {
        let state = dir.join(format!("state-{attempt}"));
        let admin = format!("127.0.0.1:{}", free_port());
        let (st, w, f) = (state.display().to_string(), wasm.display().to_string(), resources.display().to_string());
        let o = meshroute(&[
            "up", "--state", &st, "--wasm", &w, "--detach", "-f", &f, "--listen", &taken, "--admin", &admin,
        ]);
        // An Envoy left running is stopped when the test ends (only then: a pid that exited may
        // be reused by someone else's process).
        let pid = std::fs::read_to_string(state.join("envoy.pid")).unwrap_or_default();
        let running = !pid.trim().is_empty() && std::path::Path::new(&format!("/proc/{}", pid.trim())).exists();
        let _stop = running.then(|| StopEnvoy::new(&state));
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(!running, "Envoy {} still runs: {}", pid.trim(), text(&o));
        if !text(&o).contains(&refused) {
            assert!(text(&o).contains(&admin), "fails for its listen or admin address: {}", text(&o));
            continue;
        }
        assert!(text(&o).contains("Envoy was stopped"), "{}", text(&o));
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    panic!("the admin address was taken five times over");
}
