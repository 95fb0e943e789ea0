//! The filter's configuration loader on arbitrary bytes: JSON → load → validate → compile must
//! never panic, and a configuration that compiles must decide any request without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshroute::{apply, Request, SplitMix64};

fuzz_target!(|data: &[u8]| {
    let compiled = meshroute::compile_json(data);
    let Some(table) = compiled.table else {
        // Refused: then there is an error saying why.
        assert!(compiled.diagnostics.errors().next().is_some(), "refused without an error");
        return;
    };
    let mut rng = SplitMix64(7);
    for host in table.virtual_services.iter().flat_map(|vs| vs.hosts.iter()).take(8) {
        for path in ["/", "/a", "/api/v1/x?y=1"] {
            let req = Request::new("GET", host, path).with_header("x-user", "u");
            let d = table.decide(&req, &mut rng);
            let _ = apply::plan(&table, &d, &req);
        }
    }
});
