//! The "routing floor": a Proxy-Wasm HTTP filter that does only what any filter choosing a
//! request's cluster must do under ABI 0.2.1 — read the request headers once (one host call,
//! which calls back into the VM to allocate the block) and write the routing header once (one
//! host call, after which Envoy matches the route again). It decides nothing: every request
//! goes to one fixed cluster. The seed benchmark sets meshroute against it, so what meshroute
//! costs over it is meshroute's own work, and what it costs over the do-nothing filter is the
//! host's price for reading and routing.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType, Status};

/// The seed bench's router-only cluster, which the do-nothing filter's requests name too (so the
/// bench's split counts of meshroute and native routes see none of these requests).
const CLUSTER: &str = "direct";
const ROUTING_HEADER: &str = "x-meshroute-cluster";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(FloorRoot) });
}}

struct FloorRoot;

impl Context for FloorRoot {}

impl RootContext for FloorRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Floor))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Floor;

impl Context for Floor {}

impl HttpContext for Floor {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // Read as meshroute reads (one block, not decoded into owned strings), so the two differ
        // only by what meshroute does with it.
        let Some(block) = request_header_block() else {
            return Action::Continue;
        };
        drop(std::hint::black_box(block));
        // The write clears Envoy's route cache: the same re-match meshroute's write causes.
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, ROUTING_HEADER, Some(CLUSTER));
        Action::Continue
    }
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(map_type: MapType, data: *mut *mut u8, size: *mut usize) -> Status;
}

fn request_header_block() -> Option<Vec<u8>> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: on `Ok` the host has written a pointer to `size` bytes it allocated through this
    // module's `proxy_on_memory_allocate` (the SDK's: a `Vec<u8>` of capacity `size`, forgotten),
    // which the caller owns from then on.
    match unsafe { proxy_get_header_map_pairs(MapType::HttpRequestHeaders, &mut data, &mut size) } {
        Status::Ok if !data.is_null() => Some(unsafe { Vec::from_raw_parts(data, size, size) }),
        _ => None,
    }
}
