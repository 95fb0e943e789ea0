//! The filter's configuration loader on arbitrary bytes: `meshroute::table::load` (the only
//! thing the filter parses since it loads compiled tables) must never panic, and a table it
//! accepts must decide any request, and plan it, without panicking, and write back text that
//! loads into the same table. Bytes that are a source-form configuration instead are compiled
//! (the CLI's path), and the table that comes out must load.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshroute::{apply, table, Request, RouteTable, SplitMix64};

fn exercise(t: &RouteTable) {
    let mut rng = SplitMix64(7);
    let hosts: Vec<&str> = t.virtual_services.iter().flat_map(|vs| vs.hosts.iter().map(String::as_str)).take(8).collect();
    for host in hosts.into_iter().chain(["unknown", ""]) {
        for path in ["/", "/a", "/api/v1/x?y=1", "/productpage"] {
            let req = Request::new("GET", host, path).with_header("x-user", "u").with_header("end-user", "jason");
            let d = t.decide(&req, &mut rng);
            let plan = apply::plan(t, &d, &req);
            let _ = apply::mirror_headers(&req, &plan, &t.routing_header);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    match table::load(data) {
        Ok(t) => {
            exercise(&t);
            let text = table::to_json(&t).expect("a loaded table serialises");
            let again = table::load(text.as_bytes()).expect("a loaded table's own text loads");
            assert_eq!(table::to_json(&again).expect("serialises"), text, "the text changes on a second load");
        }
        Err(e) => {
            assert!(!e.message.is_empty(), "refused without a reason");
            // Not a table: maybe the source form, which the CLI compiles into one.
            if let Ok(text) = table::compile_source(data) {
                let t = table::load(text.as_bytes()).expect("a compiled table loads");
                exercise(&t);
            }
        }
    }
});
