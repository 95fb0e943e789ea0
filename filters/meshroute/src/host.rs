//! The only module that talks to the host. Every call returns a `Result` (or a plain value after
//! logging) and an error is logged, never unwrapped: an unexpected host status must not take the
//! VM down, because with `failure_policy: FAIL_CLOSED` a dead VM fails every later request.
//!
//! The adapter reaches the host only through the [`Host`] trait, so its logic runs natively
//! against a fake in unit tests (`tests.rs`); [`WasmHost`] is the real one, a zero-sized type
//! whose methods are the functions below (static dispatch: no cost per call).
//!
//! The SDK's `HttpContext` trait helpers `unwrap()` host results, so they are not used. Note that
//! `proxy_wasm::hostcalls` itself still panics on statuses its ABI table calls impossible (e.g. a
//! header write when no header map is available); the adapter only writes request headers inside
//! `on_http_request_headers` or while the request is paused, where the map exists.

use meshroute::apply::{HeaderOp, LocalReply};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, GrpcStatusCode, LogLevel, MapType, MetricType, Status};
use std::borrow::Cow;
use std::time::{Duration, UNIX_EPOCH};

/// Everything the adapter asks of Envoy. Methods mirror the functions of this module one to one.
pub trait Host {
    fn plugin_configuration(&self) -> Option<Vec<u8>>;
    /// The plugin's name and root id: what stays the same when a control plane pushes it again.
    fn plugin_key(&self) -> String;
    fn now_nanos(&self) -> u64;
    /// The request headers in the host's encoding (read them with [`decode_pairs`]).
    fn request_header_block(&self) -> Option<Vec<u8>>;
    fn edit_request_headers(&self, ops: &[HeaderOp]);
    fn edit_response_headers(&self, ops: &[HeaderOp]);
    fn set_response_header(&self, name: &str, value: &str);
    fn send_reply(&self, reply: &LocalReply);
    fn request_body_chunk(&self, size: usize) -> Option<Vec<u8>>;
    fn dispatch(
        &self,
        cluster: &str,
        headers: &[(String, String)],
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<u32, Status>;
    fn call_response_status(&self) -> Option<u32>;
    fn set_effective_context(&self, id: u32) -> bool;
    fn resume_request(&self);
    fn set_tick_period(&self, period: Duration) -> bool;
    fn define_counter(&self, name: &str) -> Option<u32>;
    fn define_gauge(&self, name: &str) -> Option<u32>;
    fn set_gauge(&self, id: Option<u32>, value: u64);
    fn add(&self, id: u32, n: u64);

    fn increment(&self, id: Option<u32>) {
        if let Some(id) = id {
            self.add(id, 1);
        }
    }
}

/// Envoy, through `proxy_wasm::hostcalls`.
#[derive(Clone, Copy, Debug, Default)]
pub struct WasmHost;

impl Host for WasmHost {
    fn plugin_configuration(&self) -> Option<Vec<u8>> {
        plugin_configuration()
    }
    fn plugin_key(&self) -> String {
        plugin_key()
    }
    fn now_nanos(&self) -> u64 {
        now_nanos()
    }
    fn request_header_block(&self) -> Option<Vec<u8>> {
        request_header_block()
    }
    fn edit_request_headers(&self, ops: &[HeaderOp]) {
        edit_request_headers(ops)
    }
    fn edit_response_headers(&self, ops: &[HeaderOp]) {
        edit_response_headers(ops)
    }
    fn set_response_header(&self, name: &str, value: &str) {
        set_response_header(name, value)
    }
    fn send_reply(&self, reply: &LocalReply) {
        send_reply(reply)
    }
    fn request_body_chunk(&self, size: usize) -> Option<Vec<u8>> {
        request_body_chunk(size)
    }
    fn dispatch(
        &self,
        cluster: &str,
        headers: &[(String, String)],
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<u32, Status> {
        dispatch(cluster, headers, body, timeout)
    }
    fn call_response_status(&self) -> Option<u32> {
        call_response_status()
    }
    fn set_effective_context(&self, id: u32) -> bool {
        set_effective_context(id)
    }
    fn resume_request(&self) {
        resume_request()
    }
    fn set_tick_period(&self, period: Duration) -> bool {
        set_tick_period(period)
    }
    fn define_counter(&self, name: &str) -> Option<u32> {
        define_counter(name)
    }
    fn define_gauge(&self, name: &str) -> Option<u32> {
        define_gauge(name)
    }
    fn set_gauge(&self, id: Option<u32>, value: u64) {
        set_gauge(id, value)
    }
    fn add(&self, id: u32, n: u64) {
        add(id, n)
    }
}

/// Installs a panic hook that logs the panic (message and location) at critical level before the
/// VM aborts, so a crash is visible in Envoy's log with our prefix.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let _ = hostcalls::log(LogLevel::Critical, &format!("meshroute: panic: {info}"));
    }));
}

/// The plugin configuration (`configuration` of the Wasm filter), if any.
fn plugin_configuration() -> Option<Vec<u8>> {
    match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
        Ok(b) => b,
        Err(s) => {
            log::error!("meshroute: reading the plugin configuration failed: {s:?}");
            None
        }
    }
}

/// `plugin_name` and `plugin_root_id` (Envoy's Wasm attributes), joined; what is missing is empty.
fn plugin_key() -> String {
    let property = |name: &str| match hostcalls::get_property(vec![name]) {
        Ok(v) => v.and_then(|b| String::from_utf8(b).ok()).unwrap_or_default(),
        Err(s) => {
            log::warn!("meshroute: reading {name} failed: {s:?}");
            String::new()
        }
    };
    format!("{}\n{}", property("plugin_name"), property("plugin_root_id"))
}

/// Nanoseconds since the epoch (the host's wall clock), 0 if unavailable.
fn now_nanos() -> u64 {
    match hostcalls::get_current_time() {
        Ok(t) => t.duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0),
        Err(s) => {
            log::warn!("meshroute: get_current_time failed: {s:?}");
            0
        }
    }
}

// All request headers, pseudo-headers included, in one host call, as the block the host
// encoded. The SDK's `get_map` would copy every name and value into its own `String`/`Vec` (two
// allocations a header, on every request) and unwraps `String::from_utf8` on values: HTTP allows
// obs-text (bytes 0x80–0xFF), and one such header from any client panicked the VM, after which
// `FAIL_CLOSED` answered every request with 503. The request borrows from the block instead
// (`decode_pairs`); a value that is not UTF-8 is decoded lossily (U+FFFD), so it equals no
// configured string (Envoy compares bytes, and config strings are UTF-8) yet still matches a regex
// such as `.*`.
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> Status;
}

fn request_header_block() -> Option<Vec<u8>> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: on `Ok` the host has written a pointer to `size` bytes it allocated through this
    // module's `proxy_on_memory_allocate` (the SDK's: a `Vec<u8>` of capacity `size`, forgotten),
    // which the caller owns from then on; the SDK's own `get_map` takes it back the same way.
    match unsafe { proxy_get_header_map_pairs(MapType::HttpRequestHeaders, &mut data, &mut size) } {
        Status::Ok if data.is_null() => Some(Vec::new()),
        Status::Ok => Some(unsafe { Vec::from_raw_parts(data, size, size) }),
        s => {
            log::error!("meshroute: reading request headers failed: {s:?}");
            None
        }
    }
}

/// Reads proxy-wasm's header map encoding — a little-endian u32 count N, N pairs of u32 (name
/// length, value length), then each name and each value followed by a NUL — borrowing every
/// name and value. A value that is not UTF-8 is read lossily (as the SDK's `get_map` did); a
/// name that is not UTF-8 (Envoy's codecs refuse those) is skipped. `None` when the block is
/// malformed: host data never panics the VM.
pub fn decode_pairs(block: &[u8]) -> Option<Vec<(Cow<'_, str>, Cow<'_, str>)>> {
    if block.is_empty() {
        return Some(Vec::new());
    }
    let word = |at: usize| -> Option<usize> {
        let b = block.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let n = word(0)?;
    let mut at = n.checked_mul(8)?.checked_add(4)?;
    let mut take = |len: usize| -> Option<&[u8]> {
        let end = at.checked_add(len)?;
        let bytes = block.get(at..end)?;
        // Each string is followed by a NUL the lengths do not count.
        at = end + 1;
        Some(bytes)
    };
    let mut pairs = Vec::with_capacity(n.min(block.len() / 10));
    for i in 0..n {
        let (name_len, value_len) = (word(4 + 8 * i)?, word(8 + 8 * i)?);
        let name = take(name_len)?;
        let value = take(value_len)?;
        if let Ok(name) = std::str::from_utf8(name) {
            pairs.push((Cow::Borrowed(name), String::from_utf8_lossy(value)));
        }
    }
    Some(pairs)
}

fn edit_request_headers(ops: &[HeaderOp]) {
    edit_headers(MapType::HttpRequestHeaders, ops);
}

fn edit_response_headers(ops: &[HeaderOp]) {
    edit_headers(MapType::HttpResponseHeaders, ops);
}

fn set_response_header(name: &str, value: &str) {
    if let Err(s) = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, Some(value)) {
        log::error!("meshroute: setting response header {name} failed: {s:?}");
    }
}

fn edit_headers(map: MapType, ops: &[HeaderOp]) {
    for op in ops {
        let (what, r) = match op {
            HeaderOp::Set(k, v) => (k, hostcalls::set_map_value(map, k, Some(v))),
            HeaderOp::Add(k, v) => (k, hostcalls::add_map_value(map, k, v)),
            HeaderOp::Remove(k) => (k, hostcalls::remove_map_value(map, k)),
        };
        if let Err(s) = r {
            log::error!("meshroute: editing header {what} ({map:?}) failed: {s:?}");
        }
    }
}

/// Replies instead of forwarding. The host defers the reply until the callback returns.
fn send_reply(reply: &LocalReply) {
    let r = match reply {
        LocalReply::Http { status, headers, body } => {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            hostcalls::send_http_response(*status, h, (!body.is_empty()).then_some(body.as_slice()))
        }
        LocalReply::Grpc { status, message } => {
            hostcalls::send_grpc_response(grpc_code(*status), Some(message.as_str()), Vec::new())
        }
    };
    if let Err(s) = r {
        log::error!("meshroute: sending a local reply failed: {s:?}");
    }
}

fn grpc_code(code: u32) -> GrpcStatusCode {
    use GrpcStatusCode as G;
    match code {
        0 => G::Ok,
        1 => G::Cancelled,
        2 => G::Unknown,
        3 => G::InvalidArgument,
        4 => G::DeadlineExceeded,
        5 => G::NotFound,
        6 => G::AlreadyExists,
        7 => G::PermissionDenied,
        8 => G::ResourceExhausted,
        9 => G::FailedPrecondition,
        10 => G::Aborted,
        11 => G::OutOfRange,
        12 => G::Unimplemented,
        13 => G::Internal,
        14 => G::Unavailable,
        15 => G::DataLoss,
        16 => G::Unauthenticated,
        _ => G::Unknown,
    }
}

/// The current chunk of the request body (`size` bytes as announced by the callback).
fn request_body_chunk(size: usize) -> Option<Vec<u8>> {
    match hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size) {
        Ok(b) => Some(b.unwrap_or_default()),
        Err(s) => {
            log::warn!("meshroute: reading the request body failed: {s:?}");
            None
        }
    }
}

/// Starts an HTTP call whose answer nobody waits for.
fn dispatch(
    cluster: &str,
    headers: &[(String, String)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<u32, Status> {
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    hostcalls::dispatch_http_call(cluster, h, body, Vec::new(), timeout)
}

/// `:status` of an HTTP call's response, inside `on_http_call_response`.
fn call_response_status() -> Option<u32> {
    match hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status") {
        Ok(v) => v.and_then(|s| s.parse().ok()),
        Err(s) => {
            log::debug!("meshroute: reading an HTTP call's status failed: {s:?}");
            None
        }
    }
}

/// Makes later host calls act on stream `id` (from the root context). False if it is gone.
fn set_effective_context(id: u32) -> bool {
    match hostcalls::set_effective_context(id) {
        Ok(()) => true,
        Err(s) => {
            log::debug!("meshroute: stream {id} is gone ({s:?}), not resuming it");
            false
        }
    }
}

fn resume_request() {
    if let Err(s) = hostcalls::resume_http_request() {
        log::error!("meshroute: resuming a request failed: {s:?}");
    }
}

/// The root context's timer; zero turns it off.
fn set_tick_period(period: Duration) -> bool {
    match hostcalls::set_tick_period(period) {
        Ok(()) => true,
        Err(s) => {
            log::error!("meshroute: set_tick_period({period:?}) failed: {s:?}");
            false
        }
    }
}

/// A counter id, `None` if the host refused (then increments are skipped).
fn define_counter(name: &str) -> Option<u32> {
    match hostcalls::define_metric(MetricType::Counter, name) {
        Ok(id) => Some(id),
        Err(s) => {
            log::error!("meshroute: defining metric {name} failed: {s:?}");
            None
        }
    }
}

/// A gauge id, `None` if the host refused.
fn define_gauge(name: &str) -> Option<u32> {
    match hostcalls::define_metric(MetricType::Gauge, name) {
        Ok(id) => Some(id),
        Err(s) => {
            log::error!("meshroute: defining metric {name} failed: {s:?}");
            None
        }
    }
}

fn set_gauge(id: Option<u32>, value: u64) {
    if let Some(id) = id {
        if let Err(s) = hostcalls::record_metric(id, value) {
            log::warn!("meshroute: recording metric {id} failed: {s:?}");
        }
    }
}

/// Adds `n` to counter `id`.
fn add(id: u32, n: u64) {
    let Ok(n) = i64::try_from(n) else { return };
    if let Err(s) = hostcalls::increment_metric(id, n) {
        log::warn!("meshroute: adding {n} to metric {id} failed: {s:?}");
    }
}
