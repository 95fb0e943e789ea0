//! The adapter's logic against a fake host (STYLE.md: Kuadrant's shape): headers in and out,
//! local replies, mirror dispatch and its budget and breaker, counter flushes, and a refused
//! configuration keeping the old table. Native only; what Envoy itself does with these calls is
//! proven end to end (tests/e2e_filter.rs).

use super::*;
use meshroute::apply::{HeaderOp, LocalReply};
use proxy_wasm::types::Status;
use serde_json::{json, Value};

const ROOT: u32 = 1;

/// proxy-wasm's header map encoding, as Envoy writes it (proxy-wasm-cpp-host `marshalPairs`).
fn encode_pairs(pairs: &[(String, String)]) -> Vec<u8> {
    let mut b = (pairs.len() as u32).to_le_bytes().to_vec();
    for (k, v) in pairs {
        b.extend_from_slice(&(k.len() as u32).to_le_bytes());
        b.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        for s in [k, v] {
            b.extend_from_slice(s.as_bytes());
            b.push(0);
        }
    }
    b
}

#[test]
fn the_header_block_decodes_to_the_pairs_envoy_encoded() {
    let pairs: Vec<(String, String)> = [(":authority", "reviews"), (":path", "/"), ("empty", ""), ("x-u", "caf\u{e9}")]
        .map(|(k, v)| (k.into(), v.into()))
        .to_vec();
    let block = encode_pairs(&pairs);
    let decoded = host::decode_pairs(&block).unwrap();
    let back: Vec<(String, String)> = decoded.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    assert_eq!(back, pairs);
    assert_eq!(host::decode_pairs(&[]).unwrap(), vec![]);
    // Every truncation is refused, never a panic; so is a count past the block.
    for cut in 1..block.len() - 1 {
        assert!(host::decode_pairs(&block[..cut]).is_none(), "cut at {cut}");
    }
    assert!(host::decode_pairs(&u32::MAX.to_le_bytes()).is_none());
    let mut huge = block.clone();
    huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(host::decode_pairs(&huge).is_none());
    // A value that is not UTF-8 is read lossily; a name that is not is skipped.
    let mut odd = encode_pairs(&[("ab".into(), "xy".into()), ("k".into(), "v".into())]);
    let (name_at, value_at) = (4 + 16, 4 + 16 + 3);
    odd[value_at] = 0xff;
    assert_eq!(host::decode_pairs(&odd).unwrap()[0].1, "\u{fffd}y");
    odd[name_at] = 0xff;
    assert_eq!(host::decode_pairs(&odd).unwrap(), vec![("k".into(), "v".into())]);
}
const MS: u64 = 1_000_000;
const V1: &str = "outbound|80|v1|product-service.default.svc.cluster.local";
const V2: &str = "outbound|80|v2|product-service.default.svc.cluster.local";
const SHADOW: &str = "outbound|80|shadow|product-service.default.svc.cluster.local";

/// What the fake host was asked, and what it answers.
#[derive(Default)]
struct State {
    /// Handed over instead of the encoded `request_headers` (a malformed block).
    raw_header_block: Option<Vec<u8>>,
    now: u64,
    /// How far each look at the clock moves it (a busy VM's clock runs while it works).
    clock_step: u64,
    config: Vec<u8>,
    request_headers: Vec<(String, String)>,
    body: Vec<u8>,
    call_status: Option<u32>,
    dispatch_fails: bool,
    effective: u32,
    // Recorded:
    calls: usize,
    request_ops: Vec<HeaderOp>,
    response_ops: Vec<HeaderOp>,
    replies: Vec<LocalReply>,
    /// (cluster, body, effective context at the time)
    dispatched: Vec<(String, Option<Vec<u8>>, u32)>,
    resumed: Vec<u32>,
    tick: Duration,
    metric_names: Vec<String>,
    metrics: HashMap<u32, u64>,
}

#[derive(Clone, Default)]
struct Fake(Rc<RefCell<State>>);

impl Fake {
    fn state(&self) -> std::cell::RefMut<'_, State> {
        let mut s = self.0.borrow_mut();
        s.calls += 1;
        s
    }

    /// A counter's value in "Envoy" (what was handed over), by name.
    fn counter(&self, name: &str) -> u64 {
        let s = self.0.borrow();
        let id = s.metric_names.iter().position(|n| n == name).map(|i| i as u32);
        id.and_then(|id| s.metrics.get(&id)).copied().unwrap_or(0)
    }

    fn calls(&self) -> usize {
        self.0.borrow().calls
    }

    fn set<F: FnOnce(&mut State)>(&self, f: F) {
        f(&mut self.0.borrow_mut());
    }

    fn dispatched(&self) -> Vec<String> {
        self.0.borrow().dispatched.iter().map(|d| d.0.clone()).collect()
    }
}

impl Host for Fake {
    fn plugin_configuration(&self) -> Option<Vec<u8>> {
        Some(self.state().config.clone())
    }
    fn plugin_key(&self) -> String {
        "meshroute\nmeshroute".into()
    }
    fn now_nanos(&self) -> u64 {
        let mut s = self.state();
        s.now += s.clock_step;
        s.now
    }
    fn request_header_block(&self) -> Option<Vec<u8>> {
        let s = self.state();
        match &s.raw_header_block {
            Some(raw) => Some(raw.clone()),
            None => Some(encode_pairs(&s.request_headers)),
        }
    }
    fn edit_request_headers(&self, ops: &[HeaderOp]) {
        self.state().request_ops.extend_from_slice(ops);
    }
    fn edit_response_headers(&self, ops: &[HeaderOp]) {
        self.state().response_ops.extend_from_slice(ops);
    }
    fn set_response_header(&self, name: &str, value: &str) {
        self.state().response_ops.push(HeaderOp::Set(name.into(), value.into()));
    }
    fn send_reply(&self, reply: &LocalReply) {
        self.state().replies.push(reply.clone());
    }
    fn request_body_chunk(&self, size: usize) -> Option<Vec<u8>> {
        let mut s = self.state();
        let n = size.min(s.body.len());
        Some(s.body.drain(..n).collect())
    }
    fn dispatch(
        &self,
        cluster: &str,
        _h: &[(String, String)],
        body: Option<&[u8]>,
        _t: Duration,
    ) -> Result<u32, Status> {
        let mut s = self.state();
        if s.dispatch_fails {
            return Err(Status::BadArgument);
        }
        let effective = s.effective;
        s.dispatched.push((cluster.to_string(), body.map(<[u8]>::to_vec), effective));
        Ok(s.dispatched.len() as u32)
    }
    fn call_response_status(&self) -> Option<u32> {
        self.state().call_status
    }
    fn set_effective_context(&self, id: u32) -> bool {
        self.state().effective = id;
        true
    }
    fn resume_request(&self) {
        let mut s = self.state();
        let id = s.effective;
        s.resumed.push(id);
    }
    fn set_tick_period(&self, period: Duration) -> bool {
        self.state().tick = period;
        true
    }
    fn define_counter(&self, name: &str) -> Option<u32> {
        let mut s = self.state();
        // Envoy gives a name defined again the same id.
        let id = match s.metric_names.iter().position(|n| n == name) {
            Some(i) => i,
            None => {
                s.metric_names.push(name.to_string());
                s.metric_names.len() - 1
            }
        };
        Some(id as u32)
    }
    fn define_gauge(&self, name: &str) -> Option<u32> {
        self.define_counter(name)
    }
    fn set_gauge(&self, id: Option<u32>, value: u64) {
        if let Some(id) = id {
            self.state().metrics.insert(id, value);
        }
    }
    fn add(&self, id: u32, n: u64) {
        *self.state().metrics.entry(id).or_default() += n;
    }
}

// === Set-up ===

fn dest(subset: &str) -> Value {
    json!({"destination": {"host": "product-service", "subset": subset}})
}

/// The filter's configuration (the compiled table) for one VirtualService's `http` rules.
fn config(http: Value, settings: Value) -> Vec<u8> {
    let source = source(http, settings);
    meshroute::table::compile_source(&source).unwrap().into_bytes()
}

fn source(http: Value, settings: Value) -> Vec<u8> {
    let mut s = json!({"namespace": "default"});
    s.as_object_mut().unwrap().extend(settings.as_object().unwrap().clone());
    json!({"settings": s, "resources": [
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "product-service", "namespace": "default"},
         "spec": {"hosts": ["product-service"], "http": http}},
        {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
         "metadata": {"name": "product-service", "namespace": "default"},
         "spec": {"host": "product-service", "subsets": [
             {"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}},
             {"name": "shadow", "labels": {"version": "shadow"}}]}}]})
    .to_string()
    .into_bytes()
}

/// A root context on the fake host with `cfg` applied.
fn vm(cfg: Vec<u8>) -> (Fake, Root<Fake>) {
    let fake = Fake::default();
    fake.set(|s| {
        s.config = cfg;
        s.effective = ROOT;
        s.now = 1_000 * MS;
    });
    let mut root = Root::new(ROOT, fake.clone());
    assert!(root.on_configure(0), "configuration refused");
    (fake, root)
}

/// One request's headers through a fresh stream (Envoy makes the stream the effective context).
fn request(
    fake: &Fake,
    root: &Root<Fake>,
    id: u32,
    path: &str,
    extra: &[(&str, &str)],
    end: bool,
) -> (Stream<Fake>, Flow) {
    let mut h = vec![
        (":method".to_string(), "GET".to_string()),
        (":scheme".into(), "http".into()),
        (":authority".into(), "product-service".into()),
        (":path".into(), path.into()),
    ];
    h.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    fake.set(|s| {
        s.request_headers = h;
        s.effective = id;
    });
    let mut stream = root.stream(id);
    let flow = stream.on_http_request_headers(4, end);
    (stream, flow)
}

/// Envoy's timer: the root is the effective context.
fn tick(fake: &Fake, root: &mut Root<Fake>, advance_ms: u64) {
    fake.set(|s| {
        s.now += advance_ms * MS;
        s.effective = ROOT;
    });
    root.on_tick();
}

fn routing_header(fake: &Fake) -> Option<String> {
    fake.0.borrow().request_ops.iter().rev().find_map(|op| match op {
        HeaderOp::Set(k, v) if k == "x-meshroute-cluster" => Some(v.clone()),
        _ => None,
    })
}

// === Headers in and out ===

#[test]
fn a_matched_request_gets_its_routing_header_in_two_host_calls_and_the_response_its_headers() {
    let (fake, root) = vm(config(
        json!([{"match": [{"headers": {"x-debug": {"exact": "true"}}}], "route": [dest("v2")],
                "headers": {"response": {"set": {"x-served-by": "v2"}}}},
               {"route": [dest("v1")]}]),
        json!({}),
    ));
    let routed = |id: u32| {
        let before = fake.calls();
        let (stream, flow) =
            request(&fake, &root, id, "/", &[("x-debug", "true"), ("x-meshroute-cluster", "evil")], true);
        assert_eq!(flow, Flow::Continue);
        (stream, fake.calls() - before)
    };
    // A rule's first request defines its route counter (once per VM)...
    let (_first, calls) = routed(7);
    assert_eq!(calls, 3, "host calls for a rule's first request");
    fake.set(|s| s.response_ops.clear());
    // ... then the hot path: one read of the headers, one batch of edits; counters stay in the VM.
    let (mut stream, calls) = routed(2);
    assert_eq!(calls, 2, "host calls for one routed request");
    assert_eq!(routing_header(&fake).as_deref(), Some(V2));
    assert_eq!(fake.counter("meshroute.requests"), 0, "counted in the VM until the flush");
    stream.on_http_response_headers(3, false);
    assert_eq!(fake.0.borrow().response_ops, [HeaderOp::Set("x-served-by".into(), "v2".into())]);

    let (_s, _) = request(&fake, &root, 3, "/", &[], true);
    assert_eq!(routing_header(&fake).as_deref(), Some(V1), "the client's routing header never wins");
}

// === Local replies ===

#[test]
fn direct_responses_and_unmatched_paths_are_answered_by_the_filter_itself() {
    let (fake, root) = vm(config(
        json!([{"match": [{"uri": {"exact": "/teapot"}}], "directResponse": {"status": 418}},
               {"match": [{"uri": {"prefix": "/api"}}], "route": [dest("v1")]}]),
        json!({}),
    ));
    let (_a, flow) = request(&fake, &root, 2, "/teapot", &[], true);
    assert_eq!(flow, Flow::Pause);
    let (_b, flow) = request(&fake, &root, 3, "/elsewhere", &[], true);
    assert_eq!(flow, Flow::Pause);
    let statuses: Vec<u32> = fake
        .0
        .borrow()
        .replies
        .iter()
        .map(|r| match r {
            LocalReply::Http { status, .. } => *status,
            LocalReply::Grpc { .. } => 0,
        })
        .collect();
    assert_eq!(statuses, [418, 404]);
}

#[test]
fn headers_that_cannot_be_read_fail_closed_not_with_the_clients_routing_header() {
    let (fake, root) = vm(config(json!([{"route": [dest("v1")]}]), json!({})));
    // A block whose count promises a pair it does not hold.
    fake.set(|s| s.raw_header_block = Some(1u32.to_le_bytes().to_vec()));
    let (_s, flow) = request(&fake, &root, 2, "/", &[("x-meshroute-cluster", V2)], true);
    assert_eq!(flow, Flow::Pause);
    let st = fake.0.borrow();
    assert!(matches!(st.replies[..], [LocalReply::Http { status: 500, .. }]), "{:?}", st.replies);
    assert!(st.request_ops.is_empty(), "{:?}", st.request_ops);
}

#[test]
fn a_delayed_request_is_resumed_by_the_tick_and_its_mirror_sent_by_the_root() {
    let (fake, mut root) = vm(config(
        json!([{"route": [dest("v1")], "mirror": {"host": "product-service", "subset": "shadow"},
                "fault": {"delay": {"percentage": {"value": 100}, "fixedDelay": "50ms"}}}]),
        json!({}),
    ));
    let (_s, flow) = request(&fake, &root, 7, "/", &[], true);
    assert_eq!(flow, Flow::Pause);
    assert_eq!(fake.0.borrow().tick, TICK, "the timer runs fast while a request is held");
    tick(&fake, &mut root, 49);
    assert!(fake.0.borrow().resumed.is_empty(), "not before its delay");
    tick(&fake, &mut root, 1);
    assert_eq!(fake.0.borrow().resumed, [7]);
    let d = fake.0.borrow().dispatched.clone();
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].0.as_str(), d[0].2), (SHADOW, ROOT), "the copy is the root's own call");
    assert_eq!(fake.0.borrow().tick, Duration::from_millis(1000), "back to the flush period");
}

// === Mirrors: dispatch, budget, breaker ===

fn mirrored(settings: Value) -> (Fake, Root<Fake>) {
    vm(config(json!([{"route": [dest("v1")], "mirror": {"host": "product-service", "subset": "shadow"}}]), settings))
}

#[test]
fn mirrors_go_out_at_the_next_tick_from_the_root_within_the_in_flight_cap() {
    let (fake, mut root) = mirrored(json!({"mirrorMaxInFlight": 2, "counterFlushMs": 0}));
    for id in 2..5 {
        let (s, flow) = request(&fake, &root, id, "/", &[], true);
        assert_eq!(flow, Flow::Continue, "the primary never waits for its copy");
        drop(s);
    }
    assert!(fake.dispatched().is_empty(), "nothing is dispatched from a stream");
    tick(&fake, &mut root, 1);
    let d = fake.0.borrow().dispatched.clone();
    assert_eq!(d.iter().map(|x| (x.0.as_str(), x.2)).collect::<Vec<_>>(), [(SHADOW, ROOT), (SHADOW, ROOT)]);
    assert_eq!(fake.counter("meshroute.mirrors.sent"), 2);
    assert_eq!(fake.counter("meshroute.mirrors.skipped"), 1, "no slot for the third");

    // An answer (after its stream is gone) frees a slot.
    fake.set(|s| s.call_status = Some(200));
    root.on_http_call_response(1, 3, 0, 0);
    let _ = request(&fake, &root, 5, "/", &[], true);
    tick(&fake, &mut root, 1);
    assert_eq!(fake.counter("meshroute.mirrors.sent"), 3);
    assert_eq!(fake.counter("meshroute.mirrors.failed"), 0);
}

#[test]
fn a_mirror_failing_five_times_in_a_row_is_paused_then_probed() {
    let (fake, mut root) = mirrored(json!({"counterFlushMs": 0}));
    fake.set(|s| s.call_status = Some(503));
    for id in 0..5u32 {
        let _ = request(&fake, &root, 10 + id, "/", &[], true);
        tick(&fake, &mut root, 1);
        root.on_http_call_response(id + 1, 3, 0, 0);
    }
    assert_eq!(fake.counter("meshroute.mirrors.failed"), 5);
    for id in 0..10 {
        let _ = request(&fake, &root, 20 + id, "/", &[], true);
        tick(&fake, &mut root, 10);
    }
    assert_eq!(fake.dispatched().len(), 5, "paused: no copy made");
    assert_eq!(fake.counter("meshroute.mirrors.skipped"), 10);
    // After the 1 s pause one probe goes; its success closes the breaker.
    tick(&fake, &mut root, 1000);
    for id in 0..3 {
        let _ = request(&fake, &root, 40 + id, "/", &[], true);
    }
    tick(&fake, &mut root, 1);
    assert_eq!(fake.dispatched().len(), 6, "one probe");
    fake.set(|s| s.call_status = Some(200));
    root.on_http_call_response(6, 3, 0, 0);
    let _ = request(&fake, &root, 50, "/", &[], true);
    tick(&fake, &mut root, 1);
    assert_eq!(fake.dispatched().len(), 7, "closed again");
}

#[test]
fn a_mirrored_body_is_copied_whole_and_its_budget_bytes_come_back_once_sent() {
    let (fake, mut root) = mirrored(json!({"mirrorBodyLimit": 100, "mirrorBodyBudget": 100}));
    let (mut a, _) = request(&fake, &root, 2, "/", &[], false);
    fake.set(|s| s.body = b"hello ".to_vec());
    a.on_http_request_body(6, false);
    // A second stream's 100 bytes do not fit next to what the first holds: its copy is skipped.
    let (mut b, _) = request(&fake, &root, 3, "/", &[], false);
    fake.set(|s| s.body = vec![b'x'; 100]);
    b.on_http_request_body(100, true);
    fake.set(|s| s.body = b"mirror".to_vec());
    a.on_http_request_body(6, true);
    assert_eq!(root.shared.budget.borrow().bytes(), 12, "held until the root sends the copy");
    tick(&fake, &mut root, 1);
    let d = fake.0.borrow().dispatched.clone();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].1.as_deref(), Some(&b"hello mirror"[..]));
    assert_eq!(root.shared.budget.borrow().bytes(), 0);
    tick(&fake, &mut root, 1000);
    assert_eq!(fake.counter("meshroute.mirrors.skipped"), 1);
}

// === Counters and configuration ===

#[test]
fn counters_reach_envoy_at_the_flush_and_configuration_counters_at_once() {
    let (fake, mut root) = vm(config(json!([{"route": [dest("v1")]}]), json!({"counterFlushMs": 1000})));
    assert_eq!(fake.counter(metrics::CONFIG_LOADED), 1, "never batched");
    for id in 2..5 {
        let _ = request(&fake, &root, id, "/", &[], true);
    }
    tick(&fake, &mut root, 999);
    assert_eq!(fake.counter("meshroute.requests"), 0, "not before the period");
    tick(&fake, &mut root, 1);
    assert_eq!(fake.counter("meshroute.requests"), 3);
    let route = fake.0.borrow().metric_names.iter().find(|n| n.contains(".dest.")).cloned().expect("route counter");
    assert_eq!(fake.counter(&route), 3);
}

#[test]
fn a_refused_configuration_is_counted_and_the_old_table_keeps_routing() {
    let (fake, mut root) = vm(config(json!([{"route": [dest("v2")]}]), json!({"counterFlushMs": 0})));
    // The source form (the filter loads only compiled tables), a broken table, `null`.
    let source = source(json!([{"route": [dest("v1")]}]), json!({}));
    let mut broken: Value = serde_json::from_slice(&config(json!([{"route": [dest("v1")]}]), json!({}))).unwrap();
    broken["table"]["virtual_services"][0]["entries"][0]["rule"] = json!(9);
    for bad in [source, broken.to_string().into_bytes(), b"null".to_vec()] {
        fake.set(|s| s.config = bad);
        assert!(!root.on_configure(0));
    }
    assert_eq!(fake.counter(metrics::CONFIG_REJECTED), 3, "each refused push counts");
    assert_eq!(fake.counter(metrics::CONFIG_LOADED), 1);
    let _ = request(&fake, &root, 2, "/", &[], true);
    assert_eq!(routing_header(&fake).as_deref(), Some(V2), "still the first configuration");
}

// === A big table pushed to a VM that serves already ===

/// `n` rules, each matching its own path, the last one forwarding to `last`; big enough to
/// load in slices when `n` is in the thousands.
fn many_rules(n: usize, last: &str) -> Vec<u8> {
    let mut http: Vec<Value> =
        (0..n).map(|i| json!({"match": [{"uri": {"prefix": format!("/rule-{i}/")}}], "route": [dest("v1")]})).collect();
    http.push(json!({"route": [dest(last)]}));
    config(Value::Array(http), json!({"counterFlushMs": 0}))
}

#[test]
fn a_big_push_to_a_serving_vm_loads_in_slices_while_the_previous_table_serves() {
    let (fake, _first) = vm(config(json!([{"route": [dest("v1")]}]), json!({"counterFlushMs": 0})));
    let big = many_rules(2_500, "v2");
    assert!(big.len() >= loading::SLICE_ABOVE, "{} bytes", big.len());
    // The push: a new root context of the same plugin, in the same VM.
    fake.set(|s| {
        s.config = big.clone();
        s.clock_step = MS;
    });
    let mut pushed = Root::new(ROOT + 10, fake.clone());
    assert!(pushed.on_configure(0), "accepted at once");
    assert_eq!(fake.0.borrow().tick, TICK, "slices run on the timer");
    assert_eq!(fake.counter(metrics::CONFIG_LOADED), 1, "counted when it serves, not before");
    let (_s, _) = request(&fake, &pushed, 2, "/", &[], true);
    assert_eq!(routing_header(&fake).as_deref(), Some(V1), "the previous table serves meanwhile");
    let mut ticks = 0;
    while fake.counter(metrics::CONFIG_LOADED) == 1 {
        ticks += 1;
        assert!(ticks < 100_000, "never loaded");
        fake.set(|s| s.effective = ROOT + 10);
        pushed.on_tick();
    }
    // 1 ms per look at the clock, a look every 8 pieces, 10 ms a slice: about 80 pieces a tick,
    // and the table has more than 2,500 rules and entries, each a piece or two.
    assert!(ticks > 10, "{ticks} slices");
    let (_s, _) = request(&fake, &pushed, 3, "/", &[], true);
    assert_eq!(routing_header(&fake).as_deref(), Some(V2), "the pushed table serves once loaded");
    assert_eq!(fake.0.borrow().tick, Duration::ZERO, "timer off again: counters unbatched, nothing held");
    // Route counters are defined as their rules are taken, not while loading.
    assert!(fake.0.borrow().metric_names.iter().any(|n| n.contains(".rule.2500.dest.")), "the taken rule's counter");
    assert!(!fake.0.borrow().metric_names.iter().any(|n| n.contains(".rule.17.dest.")), "a rule never taken");

    // A later push whose table is broken (Envoy's canary would have refused it): counted, and
    // the table loaded last keeps serving.
    let mut broken: Value = serde_json::from_slice(&many_rules(2_500, "v1")).unwrap();
    broken["table"]["virtual_services"][0]["entries"][2_400]["rule"] = json!(999_999);
    fake.set(|s| s.config = broken.to_string().into_bytes());
    let mut bad = Root::new(ROOT + 20, fake.clone());
    assert!(bad.on_configure(0));
    while fake.counter(metrics::CONFIG_REJECTED) == 0 {
        fake.set(|s| s.effective = ROOT + 20);
        bad.on_tick();
    }
    let (_s, _) = request(&fake, &bad, 4, "/", &[], true);
    assert_eq!(routing_header(&fake).as_deref(), Some(V2));
    assert_eq!(fake.counter(metrics::CONFIG_LOADED), 2);
}

#[test]
fn pushes_that_overlap_leave_the_latest_serving_whichever_load_ends_first() {
    let (fake, _first) = vm(config(json!([{"route": [dest("v1")]}]), json!({"counterFlushMs": 0})));
    let push = |id: u32, last: &str| {
        fake.set(|s| {
            s.config = many_rules(2_500, last);
            s.clock_step = MS;
        });
        let mut root = Root::new(id, fake.clone());
        assert!(root.on_configure(0));
        root
    };
    let load = |root: &mut Root<Fake>, id: u32| {
        let loaded = fake.counter(metrics::CONFIG_LOADED);
        while fake.counter(metrics::CONFIG_LOADED) == loaded {
            fake.set(|s| s.effective = id);
            root.on_tick();
        }
    };
    // B is pushed, then C while B still loads; C finishes first, then B.
    let mut b = push(20, "v2");
    let mut c = push(30, "shadow");
    load(&mut c, 30);
    load(&mut b, 20);
    // The next push serves the latest table meanwhile: C's, not B's that finished last.
    let d = push(40, "v1");
    let (_s, _) = request(&fake, &d, 2, "/", &[], true);
    assert_eq!(routing_header(&fake).as_deref(), Some(SHADOW));
}

#[test]
fn a_fresh_vm_loads_a_big_table_whole_so_it_can_refuse_it() {
    // Envoy's canary and a new worker VM serve nothing yet: one `on_configure` decides.
    std::thread::spawn(|| {
        let (fake, root) = vm(many_rules(2_500, "v2"));
        assert_eq!(fake.counter(metrics::CONFIG_LOADED), 1);
        let (_s, _) = request(&fake, &root, 2, "/", &[], true);
        assert_eq!(routing_header(&fake).as_deref(), Some(V2));
    })
    .join()
    .unwrap();
    std::thread::spawn(|| {
        let mut broken: Value = serde_json::from_slice(&many_rules(2_500, "v1")).unwrap();
        broken["table"]["virtual_services"][0]["entries"][2_400]["rule"] = json!(999_999);
        let fresh = Fake::default();
        fresh.set(|s| s.config = broken.to_string().into_bytes());
        assert!(!Root::new(ROOT, fresh.clone()).on_configure(0), "refused");
        assert_eq!(fresh.counter(metrics::CONFIG_REJECTED), 1);
    })
    .join()
    .unwrap();
}
