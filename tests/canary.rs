//! `meshroute canary` through a real Envoy started by `meshroute up` on a state directory, with
//! a stable (v1) and a canary (v2) upstream on 127.0.0.1 and a bounded client sending traffic
//! during the run: a healthy canary reaches 100 %, a canary answering 500 is rolled back at its
//! first step (every later response from stable), and no traffic holds the step and stops without
//! promoting. Every step must be a revision in history.
//!
//! Skips loudly without Envoy or the filter's Wasm module locally; fails under `CI=true`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use support::cli::*;
use support::*;

/// reviews.internal: endpoints v1 and v2, all traffic to v1 (the stable revision).
fn config(v1: u16, v2: u16) -> String {
    reviews_config(&[("v1", v1), ("v2", v2)], "v1", "")
}

struct Rig {
    dir: PathBuf,
    state: String,
    file: String,
    listen: u16,
    _stop: StopEnvoy,
    ups: Vec<Upstream>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rig(test: &str, canary: Behaviour) -> Option<Rig> {
    let (_, wasm) = envoy_and_filter(test)?;
    let ups = vec![Upstream::named("v1"), Upstream::start(canary)];
    let dir = std::env::temp_dir().join(format!("meshroute-canary-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("reviews.yaml");
    std::fs::write(&file, config(ups[0].port(), ups[1].port())).unwrap();
    let state = dir.join("state");
    let (up, listen) = up_on_fresh_ports(&[
        "--state",
        state.to_str().unwrap(),
        "--wasm",
        wasm.to_str().unwrap(),
        "--detach",
        "-f",
        file.to_str().unwrap(),
        "-m",
        "stable",
    ]);
    let stop = StopEnvoy::new(&state);
    assert!(up.status.success(), "up: {}", text(&up));
    Some(Rig {
        dir: dir.clone(),
        state: state.display().to_string(),
        file: file.display().to_string(),
        listen,
        _stop: stop,
        ups,
    })
}

/// (status, x-upstream) of one request.
fn get(listen: u16) -> (u16, String) {
    let mut c = Conn::open(listen, Duration::from_secs(5)).unwrap();
    let r = c.request("GET", "/", &[("host", "reviews.internal")], b"", Duration::from_secs(5)).unwrap();
    (r.status, r.header("x-upstream").unwrap_or("?").to_string())
}

/// A client sending requests until stopped (at most 60 s): what came back, in order.
struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<(u16, String)>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Load {
    fn start(listen: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s, v) = (stop.clone(), seen.clone());
        let thread = thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut conn = Conn::open(listen, Duration::from_secs(5)).unwrap();
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                match conn.request("GET", "/", &[("host", "reviews.internal")], b"", Duration::from_secs(5)) {
                    Ok(r) => v.lock().unwrap().push((r.status, r.header("x-upstream").unwrap_or("?").to_string())),
                    Err(_) => conn = Conn::open(listen, Duration::from_secs(5)).unwrap(),
                }
                thread::sleep(Duration::from_millis(5));
            }
        });
        Load { stop, seen, thread: Some(thread) }
    }

    fn finish(mut self) -> Vec<(u16, String)> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.seen.lock().unwrap().clone()
    }
}

fn canary(r: &Rig, extra: &[&str]) -> (Output, Value) {
    let mut args = vec![
        "canary",
        "--state",
        &r.state,
        "-f",
        &r.file,
        "--host",
        "reviews.internal",
        "--stable",
        "v1",
        "--canary",
        "v2",
        "--max-error-rate",
        "1%",
        "--min-requests",
        "10",
        "--json",
    ];
    args.extend_from_slice(extra);
    if !extra.contains(&"--steps") {
        args.extend_from_slice(&["--steps", "50,100", "--interval", "1s"]);
    }
    let o = meshroute(&args);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    (o, v)
}

/// The revisions of the state directory: (number, message, result).
fn history(state: &str) -> Vec<(u64, String, String)> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(Path::new(state).join("revisions")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
            (
                v["number"].as_u64().unwrap(),
                v["message"].as_str().unwrap().to_string(),
                v["result"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn current(state: &str) -> u64 {
    std::fs::read_to_string(Path::new(state).join("current")).unwrap().trim().parse().unwrap()
}

fn verdicts(v: &Value) -> Vec<(u64, String)> {
    v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["weight"].as_u64().unwrap(), s["verdict"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn a_healthy_canary_reaches_100_percent() {
    let Some(r) = rig("healthy", Behaviour::named("v2")) else { return };
    let load = Load::start(r.listen);
    let (o, v) = canary(&r, &[]);
    eprintln!("canary report: {v}");
    let seen = load.finish();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(v["result"], "promoted", "{v}");
    assert_eq!(verdicts(&v), [(50, "healthy".to_string()), (100, "healthy".to_string())], "{v}");
    for s in v["steps"].as_array().unwrap() {
        assert!(s["requests"].as_u64().unwrap() >= 10, "{s}");
        assert_eq!(s["errors"], 0, "{s}");
    }
    let h = history(&r.state);
    let msgs: Vec<&str> = h.iter().map(|(_, m, _)| m.as_str()).collect();
    assert_eq!(msgs, ["stable", "canary reviews.internal 50%", "canary reviews.internal 100%"], "{h:?}");
    assert!(h.iter().all(|(_, _, res)| res == "applied"), "{h:?}");
    assert_eq!(current(&r.state), 3);
    assert!(seen.iter().all(|(s, _)| *s == 200), "a request failed during the canary");
    assert!(seen.iter().any(|(_, u)| u == "v2"), "the canary never answered");
    for _ in 0..20 {
        assert_eq!(get(r.listen), (200, "v2".to_string()));
    }
}

#[test]
fn a_failing_canary_is_rolled_back_at_its_first_step() {
    let Some(r) = rig("failing", Behaviour::named("v2").status(500)) else { return };
    let load = Load::start(r.listen);
    let (o, v) = canary(&r, &[]);
    eprintln!("canary report: {v}");
    let seen = load.finish();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(v["result"], "rolled back", "{v}");
    assert_eq!(verdicts(&v), [(50, "failed".to_string())], "{v}");
    assert!(v["steps"][0]["errors"].as_u64().unwrap() >= 10, "{v}");
    assert_eq!(v["rollbackRevision"], 3, "{v}");
    let h = history(&r.state);
    let msgs: Vec<&str> = h.iter().map(|(_, m, _)| m.as_str()).collect();
    assert_eq!(
        msgs,
        ["stable", "canary reviews.internal 50%", "canary reviews.internal rollback: stable v1 100%"],
        "{h:?}"
    );
    assert_eq!(current(&r.state), 3);
    // The canary answered 500 while it was live; after the rollback, only stable answers.
    assert!(seen.iter().any(|(s, u)| *s == 500 && u == "v2"), "the canary never answered");
    // No request is lost to the steps or the rollback themselves: only the canary failed.
    let lost: Vec<_> = seen.iter().filter(|(s, u)| *s != 200 && u != "v2").collect();
    assert!(lost.is_empty(), "{lost:?}");
    for _ in 0..30 {
        assert_eq!(get(r.listen), (200, "v1".to_string()));
    }
}

#[test]
fn no_traffic_holds_the_step_and_stops_without_promoting() {
    let Some(r) = rig("idle", Behaviour::named("v2")) else { return };
    let (o, v) = canary(&r, &["--max-holds", "1"]);
    eprintln!("canary report: {v}");
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert_eq!(v["result"], "not enough traffic", "{v}");
    assert_eq!(verdicts(&v), [(50, "not enough traffic".to_string())], "{v}");
    assert_eq!(v["steps"][0]["holds"], 1, "{v}");
    let h = history(&r.state);
    assert_eq!(h.len(), 2, "no revision beyond the held step: {h:?}");
    assert_eq!(h[1].1, "canary reviews.internal 50%");
    assert_eq!(current(&r.state), 2);
}

/// Envoy merges histograms at its stats flush (every 5 s), so this step is watched for 6 s: the
/// canary answers after 40 ms, above `--max-p99 20ms`, and is rolled back.
#[test]
fn a_slow_canary_is_rolled_back_on_its_p99() {
    let Some(r) = rig("slow", Behaviour::named("v2").delay(Duration::from_millis(40))) else { return };
    let load = Load::start(r.listen);
    let (o, v) = canary(&r, &["--steps", "100", "--interval", "6s", "--max-p99", "20ms"]);
    eprintln!("canary report: {v}");
    load.finish();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(verdicts(&v), [(100, "failed".to_string())], "{v}");
    assert_eq!(v["steps"][0]["errors"], 0, "{v}");
    assert!(v["steps"][0]["p99Ms"].as_f64().unwrap() > 20.0, "{v}");
    assert_eq!(current(&r.state), 3);
    assert_eq!(get(r.listen), (200, "v1".to_string()));
}

/// Bad arguments are refused before anything is applied (no Envoy needed).
#[test]
fn bad_steps_and_a_host_without_the_subsets_are_refused() {
    let dir = std::env::temp_dir().join(format!("meshroute-canary-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("reviews.yaml");
    std::fs::write(&file, config(1, 2)).unwrap();
    let (f, st) = (file.to_str().unwrap(), dir.join("state"));
    let run = |extra: &[&str]| {
        let mut a = vec!["canary", "--state", st.to_str().unwrap(), "-f", f, "--host", "reviews.internal"];
        a.extend_from_slice(extra);
        meshroute(&a)
    };
    let o = run(&["--stable", "v1", "--canary", "v2", "--steps", "50,10"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("increasing weights"), "{}", text(&o));
    let o = run(&["--stable", "v7", "--canary", "v8"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no VirtualService http route for host reviews.internal"), "{}", text(&o));
    assert!(!st.exists(), "nothing may be written");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The case: the canary is healthy at 50 % and starts failing once the 100 % step is live
/// (revision 3); that step is judged failed as soon as it has its requests, without a hold, and
/// stable takes all traffic again.
#[test]
fn a_canary_failing_at_step_2_is_rolled_back() {
    let Some(r) = rig("step2", Behaviour::named("v2")) else { return };
    let load = Load::start(r.listen);
    let done = AtomicBool::new(false);
    let (o, v) = thread::scope(|s| {
        s.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !done.load(Ordering::Relaxed) && Instant::now() < deadline {
                if std::fs::read_to_string(Path::new(&r.state).join("current")).is_ok_and(|c| c.trim() == "3") {
                    r.ups[1].set_behaviour(Behaviour::named("v2").status(500));
                    return;
                }
                thread::sleep(Duration::from_millis(10));
            }
        });
        let out = canary(&r, &[]);
        done.store(true, Ordering::Relaxed);
        out
    });
    eprintln!("canary report: {v}");
    let seen = load.finish();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(verdicts(&v), [(50, "healthy".to_string()), (100, "failed".to_string())], "{v}");
    assert_eq!(v["steps"][0]["errors"], 0, "{v}");
    assert_eq!(v["steps"][1]["holds"], 0, "{v}");
    assert_eq!(v["rollbackRevision"], 4, "{v}");
    assert_eq!(current(&r.state), 4);
    let lost: Vec<_> = seen.iter().filter(|(s, u)| *s != 200 && u != "v2").collect();
    assert!(lost.is_empty(), "{lost:?}");
    for _ in 0..20 {
        assert_eq!(get(r.listen), (200, "v1".to_string()));
    }
}
