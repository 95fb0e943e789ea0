//! meshroute as an Envoy Proxy-Wasm HTTP filter: snapshot the request headers, `decide`, `plan`,
//! carry the plan out. Everything that decides lives in the `meshroute` crate; this crate only
//! keeps per-VM state (the compiled table, held requests, metric ids) and calls the host through
//! `host.rs`.
//!
//! Request flow (`on_http_request_headers`):
//! 1. one read of the request headers (a block the request borrows from; unreadable: 500);
//!    `decide` with the VM's random source; `plan`;
//! 2. the plan's header edits (client-sent routing and router-hint headers removed first, then the
//!    routing header, hints, rewrites, header operations) — each write also makes Envoy re-match
//!    the route, which is how the route's `cluster_header` sees the chosen cluster;
//! 3. a local reply (redirect, direct response, 404, 502, 503), or a fault delay (pause; the root
//!    context's tick resumes or aborts), or an abort, or forward — with mirrors queued once the
//!    body is complete and sent by the root context at its next tick.
//!
//! The host is reached through `host::Host` only (`WasmHost` in Envoy, a fake in `tests.rs`).

mod host;
mod loading;
#[cfg(test)]
mod tests;

use host::{Host, WasmHost};
use meshroute::apply::{self, BodyBuffer, DelayQueue, HeaderOp, LocalReply, Plan};
use meshroute::budget::MirrorBudget;
use meshroute::compile::{Action, CompiledVs, Dest, Rule};
use meshroute::mirror_breaker::MirrorBreakers;
use meshroute::{metrics, Decision, RequestRef, RouteTable, SplitMix64};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action as Flow, ContextType, LogLevel};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Build identity (the Makefile passes `git describe`), for telling deployed modules apart.
const BUILD: &str = match option_env!("MESHROUTE_BUILD") {
    Some(b) => b,
    None => "unknown",
};
/// Asked-for timer period while requests are held; Envoy's timer is quantised to ~4 ms anyway.
const TICK: Duration = Duration::from_millis(1);
/// How long past its timeout a mirror call keeps its in-flight slot when the host never
/// reports on it (see `meshroute::budget`): long enough for the host's own timeout to arrive.
const MIRROR_GRACE: Duration = Duration::from_secs(1);
/// Response header naming the revision that decided the request (`settings.revisionHeader`).
const REVISION_HEADER: &str = "x-meshroute-revision";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    host::install_panic_hook();
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> { Box::new(Root::new(context_id, WasmHost)) });
}}

// === Per-VM state ===

/// Counter ids of this VM (`/stats` shows them as `wasmcustom.<name>`).
#[derive(Default)]
struct Metrics {
    requests: Option<u32>,
    passthrough: Option<u32>,
    default_route: Option<u32>,
    noroute: Option<u32>,
    blocked: Option<u32>,
    delay: Option<u32>,
    abort: Option<u32>,
    mirrors_sent: Option<u32>,
    mirrors_skipped: Option<u32>,
    mirrors_failed: Option<u32>,
    config_loaded: Option<u32>,
    config_rejected: Option<u32>,
    config_revision: Option<u32>,
}

impl Metrics {
    fn define(host: &impl Host) -> Self {
        let c = |name: &str| host.define_counter(name);
        Metrics {
            requests: c("meshroute.requests"),
            passthrough: c("meshroute.passthrough"),
            default_route: c("meshroute.default_route"),
            noroute: c("meshroute.noroute"),
            blocked: c("meshroute.blocked"),
            delay: c("meshroute.faults.delay"),
            abort: c("meshroute.faults.abort"),
            mirrors_sent: c("meshroute.mirrors.sent"),
            mirrors_skipped: c("meshroute.mirrors.skipped"),
            mirrors_failed: c("meshroute.mirrors.failed"),
            config_loaded: c(metrics::CONFIG_LOADED),
            config_rejected: c(metrics::CONFIG_REJECTED),
            config_revision: host.define_gauge(metrics::CONFIG_REVISION),
        }
    }
}

/// One applied configuration and the per-route counters defined for it.
struct Active {
    table: RouteTable,
    /// Keyed by the rule's address (stable while the table lives), one id per destination
    /// (or a single id for rules that do not forward). Defined on a rule's first request: a
    /// counter is a host call to define, and defining one per route while loading was most of
    /// a big table's load in a VM (and of Envoy's stats lock, shared by every VM).
    route_counters: RefCell<HashMap<usize, Vec<Option<u32>>>>,
    /// `x-meshroute-revision`'s value when `settings.revisionHeader` asks for it.
    revision_header: Option<String>,
}

impl Active {
    fn new(table: RouteTable) -> Self {
        let revision_header = table.revision.as_ref().filter(|_| table.revision_header).map(|r| r.to_string());
        Active { table, route_counters: RefCell::new(HashMap::new()), revision_header }
    }

    fn route_counter(&self, host: &impl Host, vs: &CompiledVs, rule: &Rule, dest: Option<&Dest>) -> Option<u32> {
        let mut counters = self.route_counters.borrow_mut();
        let ids = counters.entry(rule as *const Rule as usize).or_insert_with(|| match &rule.action {
            Action::Forward { destinations, .. } if !destinations.is_empty() => destinations
                .iter()
                .map(|d| host.define_counter(&apply::route_metric_name(&vs.name, rule, Some(d))))
                .collect(),
            _ => vec![host.define_counter(&apply::route_metric_name(&vs.name, rule, None))],
        });
        let i = match (&rule.action, dest) {
            (Action::Forward { destinations, .. }, Some(d)) => destinations.iter().position(|x| std::ptr::eq(x, d))?,
            _ => 0,
        };
        ids.get(i).copied().flatten()
    }
}

/// A mirror copy ready to send.
struct MirrorCall {
    cluster: String,
    headers: Vec<(String, String)>,
}

/// Copies of one request waiting for the root context's next tick, with the body bytes they hold
/// in the VM's budget. A call belongs to the context that dispatched it, and Envoy cancels a
/// context's calls when the context goes (`Context::~Context`, source/extensions/common/wasm/
/// context.cc): a copy dispatched from the request's own stream was cut off as soon as the
/// primary finished, and its slot stayed taken until its deadline. Dispatched from the root
/// context (whose callback the SDK records the call under too), copies outlive their primary and
/// their answers reach `Root::on_http_call_response` (docs/semantics.md R164).
struct Outgoing {
    calls: Vec<MirrorCall>,
    body: Option<Vec<u8>>,
    reserved: u64,
    timeout: Duration,
}

/// What to do with a held request when its delay is over.
struct Held {
    /// Abort (or the rule's own local reply) instead of resuming.
    reply: Option<LocalReply>,
    /// Mirrors of a body-less request, sent on resume (a request with a body sends them at its
    /// end, which comes after the resume).
    mirrors: Vec<MirrorCall>,
}

/// State shared by the root context of a VM and its HTTP contexts (all on one thread).
struct Shared<H> {
    host: H,
    root_id: u32,
    active: RefCell<Option<Rc<Active>>>,
    held: RefCell<DelayQueue<Held>>,
    /// The root context's timer period now (zero: off).
    tick: Cell<Duration>,
    rng: RefCell<SplitMix64>,
    metrics: RefCell<Rc<Metrics>>,
    /// Mirror bodies held and mirror calls open, across all streams of this VM.
    budget: RefCell<MirrorBudget>,
    /// Mirror clusters that keep failing are paused (`meshroute::mirror_breaker`).
    breakers: RefCell<MirrorBreakers>,
    outbox: RefCell<Vec<Outgoing>>,
    counters: RefCell<Counters>,
    /// Plugin name and root id (`loading.rs`).
    plugin_key: RefCell<String>,
    /// A big table being loaded in slices while the previous one serves.
    loading: RefCell<Option<loading::Loading>>,
}

/// Counter increments this VM has not handed to Envoy yet. A host call costs about as much as
/// all of meshroute's own work on a request (docs/benchmarks-e2e.md), so events are added up
/// here and flushed on the root context's timer: one call per changed counter per period.
#[derive(Default)]
struct Counters {
    /// Zero: every event goes to Envoy at once (`settings.counterFlushMs: 0`).
    every: Duration,
    pending: HashMap<u32, u64>,
    last_flush_nanos: u64,
}

impl<H: Host> Shared<H> {
    fn hold(&self, id: u32, delay: Duration, held: Held) {
        let due = self.host.now_nanos().saturating_add(delay.as_nanos() as u64);
        self.held.borrow_mut().push(id, due, held);
        self.retime();
    }

    /// One more event on counter `id` (`None`: the host refused to define it).
    fn count(&self, id: Option<u32>) {
        let Some(id) = id else { return };
        let mut c = self.counters.borrow_mut();
        if c.every.is_zero() {
            self.host.add(id, 1);
        } else {
            *c.pending.entry(id).or_default() += 1;
        }
    }

    /// Hands the pending increments to Envoy.
    fn flush(&self, now: u64) {
        let mut c = self.counters.borrow_mut();
        c.last_flush_nanos = now;
        for (id, n) in c.pending.drain() {
            self.host.add(id, n);
        }
    }

    /// Queues a request's copies for the root context's next tick. Copies that could not go
    /// now (no slot, or their cluster paused) are skipped at once, so a dead mirror costs no
    /// queueing and no timer.
    fn queue_mirrors(&self, mut out: Outgoing, m: &Metrics) {
        if !out.calls.is_empty() {
            let now = self.host.now_nanos();
            let mut budget = self.budget.borrow_mut();
            let mut breakers = self.breakers.borrow_mut();
            for cluster in budget.expire(now) {
                self.count(m.mirrors_failed);
                breakers.failed(&cluster, now);
            }
            let full = !budget.has_slot();
            out.calls.retain(|c| {
                let go = !full && !breakers.paused(&c.cluster, now);
                if !go {
                    log::debug!("meshroute: mirror to {} skipped: no slot, or it keeps failing", c.cluster);
                    self.count(m.mirrors_skipped);
                }
                go
            });
        }
        if out.calls.is_empty() {
            self.budget.borrow_mut().release_bytes(out.reserved);
            return;
        }
        self.outbox.borrow_mut().push(out);
        self.retime();
    }

    /// Sends the queued copies that get an in-flight slot and whose cluster is not paused; the
    /// others are skipped (counted). Calls past their deadline free their slots first and count
    /// as failed. Runs in a root context callback, with the root as the effective context.
    fn send_mirrors(&self, now: u64, m: &Metrics) {
        let out = std::mem::take(&mut *self.outbox.borrow_mut());
        if out.is_empty() {
            return;
        }
        let mut budget = self.budget.borrow_mut();
        let mut breakers = self.breakers.borrow_mut();
        for cluster in budget.expire(now) {
            self.count(m.mirrors_failed);
            breakers.failed(&cluster, now);
        }
        for o in out {
            let due = now.saturating_add((o.timeout + MIRROR_GRACE).as_nanos() as u64);
            for c in &o.calls {
                // The slot first: a probe the breaker lets through must really go out.
                if !budget.has_slot() {
                    log::debug!(
                        "meshroute: mirror to {} skipped: {} mirror calls in flight",
                        c.cluster,
                        budget.in_flight()
                    );
                    self.count(m.mirrors_skipped);
                    continue;
                }
                if !breakers.allows(&c.cluster, now) {
                    log::debug!("meshroute: mirror to {} skipped: it keeps failing (paused)", c.cluster);
                    self.count(m.mirrors_skipped);
                    continue;
                }
                match self.host.dispatch(&c.cluster, &c.headers, o.body.as_deref().filter(|b| !b.is_empty()), o.timeout)
                {
                    Ok(token) => {
                        budget.started(token, due, &c.cluster);
                        self.count(m.mirrors_sent);
                    }
                    Err(s) => {
                        log::warn!("meshroute: mirror to {} not sent: {s:?}", c.cluster);
                        self.count(m.mirrors_failed);
                        breakers.failed(&c.cluster, now);
                    }
                }
            }
            // The host copied the body into each call: the budget is free again.
            budget.release_bytes(o.reserved);
        }
    }

    /// The table's settings for this root context's timer and mirror budget.
    fn settle(&self, table: &RouteTable) {
        self.counters.borrow_mut().every = Duration::from_millis(table.counter_flush_ms);
        self.budget.borrow_mut().set_limits(table.mirror_body_budget, table.mirror_max_in_flight);
    }

    /// The timer: fast while requests are held (their delays end on it), else the flush period
    /// while counters are batched, else off.
    fn retime(&self) {
        let every = self.counters.borrow().every;
        let busy =
            !self.held.borrow().is_empty() || !self.outbox.borrow().is_empty() || self.loading.borrow().is_some();
        let want = if busy { TICK } else { every };
        if want != self.tick.get() && self.host.set_tick_period(want) {
            self.tick.set(want);
        }
    }
}

/// The VM's linear memory, in bytes (0 outside Wasm: natively the filter only builds for
/// clippy and its unit tests).
fn memory_bytes() -> u64 {
    #[cfg(target_arch = "wasm32")]
    return core::arch::wasm32::memory_size(0) as u64 * 65_536;
    #[cfg(not(target_arch = "wasm32"))]
    0
}

fn mirror_timeout(active: &Active) -> Duration {
    Duration::from_millis(active.table.mirror_timeout_ms)
}

// === impl Root ===

struct Root<H: Host> {
    id: u32,
    shared: Rc<Shared<H>>,
}

/// The VM or this plugin goes away (Envoy deletes a root context right after its `on_done`, which
/// the module does not export: R243): nothing counted may be lost.
impl<H: Host> Drop for Root<H> {
    fn drop(&mut self) {
        self.shared.flush(self.shared.host.now_nanos());
    }
}

impl<H: Host> Root<H> {
    fn new(id: u32, host: H) -> Self {
        // Per-VM seed: the clock and the context id, so workers do not draw the same sequence.
        let seed = host.now_nanos() ^ (u64::from(id) << 48) ^ 0x6d65_7368_726f_7574;
        Root {
            id,
            shared: Rc::new(Shared {
                host,
                root_id: id,
                active: RefCell::new(None),
                held: RefCell::new(DelayQueue::default()),
                tick: Cell::new(Duration::ZERO),
                rng: RefCell::new(SplitMix64(seed)),
                metrics: RefCell::new(Rc::new(Metrics::default())),
                counters: RefCell::new(Counters::default()),
                budget: RefCell::new(MirrorBudget::default()),
                breakers: RefCell::new(MirrorBreakers::default()),
                outbox: RefCell::new(Vec::new()),
                plugin_key: RefCell::new(String::new()),
                loading: RefCell::new(None),
            }),
        }
    }
}

impl<H: Host + 'static> Context for Root<H> {
    fn on_http_call_response(&mut self, token: u32, num_headers: usize, _body: usize, _trailers: usize) {
        // Every mirror is dispatched by the root context, so every answer arrives here.
        count_mirror_answer(&self.shared, token, num_headers, &self.shared.metrics.borrow());
    }
}

impl<H: Host + 'static> RootContext for Root<H> {
    fn on_configure(&mut self, _size: usize) -> bool {
        let host = &self.shared.host;
        // Counted under the previous configuration's ids: hand them over first.
        self.shared.flush(host.now_nanos());
        let (began, memory_before) = (host.now_nanos(), memory_bytes());
        let metrics = Rc::new(Metrics::define(host));
        *self.shared.metrics.borrow_mut() = metrics.clone();
        let bytes = host.plugin_configuration().unwrap_or_default();
        let key = host.plugin_key();
        *self.shared.plugin_key.borrow_mut() = key.clone();
        // A VM serving this plugin already is a worker, and Envoy's canary has loaded these
        // bytes whole (and would have refused them): serve the previous table meanwhile.
        if bytes.len() >= loading::SLICE_ABOVE {
            if let Some(previous) = loading::serving(&key) {
                log::info!(
                    "meshroute {VERSION} ({BUILD}) root {}: loading {} KiB of table in slices of {} ms; the previous table serves meanwhile",
                    self.id,
                    bytes.len() / 1024,
                    loading::SLICE.as_millis()
                );
                self.shared.settle(&previous.table);
                *self.shared.active.borrow_mut() = Some(previous);
                *self.shared.loading.borrow_mut() = Some(loading::Loading::new(bytes, began));
                self.shared.retime();
                return true;
            }
        }
        // The CLI validated and compiled the resources; this VM only checks and indexes the
        // table (`meshroute::table`).
        let table = match meshroute::table::load(&bytes) {
            Ok(t) => t,
            Err(e) => {
                log::error!("meshroute: config rejected: {e}");
                host.increment(metrics.config_rejected);
                return false;
            }
        };
        let active = Active::new(table);
        let busy = host.now_nanos().saturating_sub(began) / 1_000_000;
        self.serve(active, &format!("in {busy} ms"), memory_before);
        true
    }

    fn on_tick(&mut self) {
        let host = &self.shared.host;
        self.load_slice();
        let now = host.now_nanos();
        let due = self.shared.held.borrow_mut().pop_due(now);
        let active = self.shared.active.borrow().clone();
        let metrics = self.shared.metrics.borrow().clone();
        let resumed_any = !due.is_empty();
        for (id, held) in due {
            if !host.set_effective_context(id) {
                continue;
            }
            match held.reply {
                Some(reply) => host.send_reply(&reply),
                None => {
                    if let Some(a) = &active {
                        let out = Outgoing { calls: held.mirrors, body: None, reserved: 0, timeout: mirror_timeout(a) };
                        self.shared.outbox.borrow_mut().push(out);
                    }
                    host.resume_request();
                }
            }
        }
        // Mirrors go out as the root's own calls (see `Outgoing`).
        if !self.shared.outbox.borrow().is_empty() && (!resumed_any || host.set_effective_context(self.shared.root_id))
        {
            self.shared.send_mirrors(now, &metrics);
        }
        let every = self.shared.counters.borrow().every;
        let last = self.shared.counters.borrow().last_flush_nanos;
        if now.saturating_sub(last) >= every.as_nanos() as u64 {
            self.shared.flush(now);
        }
        self.shared.retime();
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(self.stream(context_id)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl<H: Host> Root<H> {
    /// The next slice of a table loading in slices, and serving it once it is in.
    fn load_slice(&self) {
        let host = &self.shared.host;
        let outcome = match self.shared.loading.borrow_mut().as_mut() {
            Some(l) => l.slice(host),
            None => return,
        };
        match outcome {
            loading::Sliced::Pending => {}
            loading::Sliced::Loaded(active) => {
                let Some(l) = self.shared.loading.borrow_mut().take() else { return };
                self.serve(*active, &l.report(host.now_nanos()), l.memory_before);
            }
            loading::Sliced::Refused(e) => {
                self.shared.loading.borrow_mut().take();
                // Envoy's canary loaded these bytes: only running out of memory gets here.
                log::error!(
                    "meshroute: config rejected while loading in slices (the previous table keeps serving): {e}"
                );
                self.shared.host.increment(self.shared.metrics.borrow().config_rejected);
            }
        }
    }

    /// `active` serves this root context's new streams from now on.
    fn serve(&self, active: Active, how: &str, memory_before: u64) {
        let host = &self.shared.host;
        let summary = apply::summary(&active.table);
        self.shared.settle(&active.table);
        host.set_gauge(
            self.shared.metrics.borrow().config_revision,
            active.table.revision.as_ref().map_or(0, |r| r.number),
        );
        let active = Rc::new(active);
        loading::now_serving(&self.shared.plugin_key.borrow(), self.id, &active);
        *self.shared.active.borrow_mut() = Some(active);
        // How long this VM was busy loading and what its memory grew to (Wasm memory never
        // shrinks, so that is the load's peak): what `make bench-e2e` reads per VM (R240).
        let memory = memory_bytes();
        log::info!(
            "meshroute {VERSION} ({BUILD}) root {}: config loaded: {summary}; {how}, VM memory {} KiB (+{} KiB)",
            self.id,
            memory / 1024,
            memory.saturating_sub(memory_before) / 1024
        );
        // Configuration counters are never batched: `apply` and operators wait on them.
        host.increment(self.shared.metrics.borrow().config_loaded);
        self.shared.retime();
    }

    /// A stream decided with the configuration active now. (Tests call this directly: a boxed
    /// `dyn HttpContext` would pull in the SDK's default methods and their host imports.)
    fn stream(&self, context_id: u32) -> Stream<H> {
        Stream {
            id: context_id,
            shared: self.shared.clone(),
            active: self.shared.active.borrow().clone(),
            metrics: self.shared.metrics.borrow().clone(),
            response_ops: Vec::new(),
            mirrors: Vec::new(),
            body: None,
            body_bytes: 0,
            held: false,
        }
    }
}

fn count_mirror_answer<H: Host>(shared: &Shared<H>, token: u32, num_headers: usize, m: &Metrics) {
    let Some(cluster) = shared.budget.borrow_mut().answered(token) else {
        return; // already counted as failed when its deadline passed
    };
    // No headers: reset, timeout or no connection; a 5xx: the mirror (or Envoy for it) failed.
    let failed = num_headers == 0 || shared.host.call_response_status().is_none_or(|s| s >= 500);
    if failed {
        shared.count(m.mirrors_failed);
        shared.breakers.borrow_mut().failed(&cluster, shared.host.now_nanos());
    } else {
        shared.breakers.borrow_mut().succeeded(&cluster);
    }
}

// === impl Stream ===

struct Stream<H> {
    id: u32,
    shared: Rc<Shared<H>>,
    /// The configuration this request is decided with, fixed when the stream starts.
    active: Option<Rc<Active>>,
    metrics: Rc<Metrics>,
    response_ops: Vec<HeaderOp>,
    /// Mirror copies waiting for the end of the request body.
    mirrors: Vec<MirrorCall>,
    body: Option<BodyBuffer>,
    /// Bytes of `body` reserved in the VM's mirror budget, given back when the body goes.
    body_bytes: u64,
    held: bool,
}

impl<H: Host> Stream<H> {
    fn count(&self, decision: &Decision<'_>, active: &Active) {
        let m = &self.metrics;
        let id = match decision {
            Decision::Passthrough => m.passthrough,
            Decision::Default(_) => m.default_route,
            Decision::NoRoute { .. } => m.noroute,
            Decision::Blocked => m.blocked,
            Decision::Matched(x) => active.route_counter(&self.shared.host, x.vs, x.rule, x.destination),
        };
        self.shared.count(id);
    }

    /// Carries out the plan; returns whether the request goes on now.
    fn execute(&mut self, plan: Plan, req: &RequestRef<'_>, end_of_stream: bool, active: &Active) -> Flow {
        let m = self.metrics.clone();
        let host = &self.shared.host;
        host.edit_request_headers(&plan.request_ops);
        let mirrors: Vec<MirrorCall> = if plan.mirrors.is_empty() {
            Vec::new()
        } else {
            let headers = apply::mirror_headers(req, &plan, &active.table.routing_header);
            plan.mirrors.iter().map(|t| MirrorCall { cluster: t.cluster.clone(), headers: headers.clone() }).collect()
        };
        let after_delay = plan.abort.clone().or_else(|| plan.local_reply.clone());
        if let Some(delay) = plan.delay {
            self.shared.count(m.delay);
            if plan.abort.is_some() {
                self.shared.count(m.abort);
            }
            let (now, later) = if end_of_stream { (mirrors, Vec::new()) } else { (Vec::new(), mirrors) };
            self.arm_mirrors(later, active);
            if after_delay.is_none() {
                self.response_ops = plan.response_ops;
            }
            self.shared.hold(self.id, delay, Held { reply: after_delay, mirrors: now });
            self.held = true;
            return Flow::Pause;
        }
        if let Some(reply) = after_delay {
            if plan.abort.is_some() {
                self.shared.count(m.abort);
            }
            host.send_reply(&reply);
            return Flow::Pause;
        }
        self.response_ops = plan.response_ops;
        if end_of_stream {
            let out = Outgoing { calls: mirrors, body: None, reserved: 0, timeout: mirror_timeout(active) };
            self.shared.queue_mirrors(out, &m);
        } else {
            self.arm_mirrors(mirrors, active);
        }
        Flow::Continue
    }

    fn arm_mirrors(&mut self, mirrors: Vec<MirrorCall>, active: &Active) {
        if !mirrors.is_empty() {
            self.body = Some(BodyBuffer::new(active.table.mirror_body_limit));
            self.mirrors = mirrors;
        }
    }

    /// The request is complete: send the armed mirrors with the body collected.
    fn finish_mirrors(&mut self) {
        let Some(mut buf) = self.body.take() else { return };
        let calls = std::mem::take(&mut self.mirrors);
        if buf.overflowed() {
            for c in &calls {
                log::debug!("meshroute: mirror to {} skipped: body over the limit or the VM's budget", c.cluster);
                self.shared.count(self.metrics.mirrors_skipped);
            }
            self.release_body();
            return;
        }
        let body = buf.take();
        // The body's bytes stay taken from the budget until the root has sent the copies.
        let reserved = std::mem::take(&mut self.body_bytes);
        match &self.active {
            Some(a) => {
                let out = Outgoing { calls, body: Some(body), reserved, timeout: mirror_timeout(a) };
                self.shared.queue_mirrors(out, &self.metrics);
            }
            None => self.shared.budget.borrow_mut().release_bytes(reserved),
        }
    }

    /// Gives up the copy of the body: too big for the limit or for what the VM has left.
    fn drop_body(&mut self) {
        if let Some(buf) = self.body.as_mut() {
            buf.overflow();
        }
        self.release_body();
    }
}

// No `on_done`: Envoy deletes a stream's context right after it (R243), and `Drop` forgets a held
// stream.
impl<H: Host> Context for Stream<H> {}

impl<H> Stream<H> {
    fn release_body(&mut self) {
        self.shared.budget.borrow_mut().release_bytes(std::mem::take(&mut self.body_bytes));
    }

    /// A held stream that ends must never be resumed.
    fn forget(&mut self) {
        if self.held {
            self.held = false;
            self.shared.held.borrow_mut().remove(self.id);
        }
    }
}

impl<H> Drop for Stream<H> {
    fn drop(&mut self) {
        self.forget();
        self.release_body();
    }
}

impl<H: Host> HttpContext for Stream<H> {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Flow {
        self.shared.count(self.metrics.requests);
        let Some(active) = self.active.clone() else { return Flow::Continue };
        // Unread headers would leave a client's own routing header in place: fail closed.
        let block = self.shared.host.request_header_block();
        let Some(pairs) = block.as_deref().and_then(host::decode_pairs) else {
            log::error!("meshroute: the request headers could not be read; answering 500");
            self.shared.host.send_reply(&LocalReply::Http { status: 500, headers: Vec::new(), body: Vec::new() });
            return Flow::Pause;
        };
        #[cfg(feature = "crash-test")]
        if pairs.iter().any(|(k, _)| *k == "x-meshroute-crash-test") {
            // What running out of memory does: the VM traps (`unreachable`).
            std::process::abort();
        }
        let req = RequestRef::from_pairs(pairs);
        let decision = {
            let mut rng = self.shared.rng.borrow_mut();
            active.table.decide(&req, &mut *rng)
        };
        self.count(&decision, &active);
        let plan = apply::plan(&active.table, &decision, &req);
        self.execute(plan, &req, end_of_stream, &active)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Flow {
        let Some(buf) = self.body.as_mut() else { return Flow::Continue };
        if !buf.overflowed() {
            // Room is taken from the VM's budget before the chunk is read into the VM.
            let room = buf.fits(body_size) && self.shared.budget.borrow_mut().reserve_bytes(body_size as u64);
            if room {
                self.body_bytes += body_size as u64;
                match self.shared.host.request_body_chunk(body_size) {
                    Some(chunk) if buf.push(&chunk) => {}
                    _ => self.drop_body(),
                }
            } else {
                self.drop_body();
            }
        }
        if end_of_stream {
            self.finish_mirrors();
        }
        Flow::Continue
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Flow {
        self.finish_mirrors();
        Flow::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Flow {
        if !self.response_ops.is_empty() {
            self.shared.host.edit_response_headers(&std::mem::take(&mut self.response_ops));
        }
        if let Some(rev) = self.active.as_ref().and_then(|a| a.revision_header.as_deref()) {
            self.shared.host.set_response_header(REVISION_HEADER, rev);
        }
        Flow::Continue
    }
}
