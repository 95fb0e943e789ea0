//! The CLI's YAML reader on arbitrary text: never a panic, bounded work (alias bombs are refused),
//! and every error points inside the input.
#![no_main]

#[allow(dead_code)]
#[path = "../../src/bin/meshroute/yaml.rs"]
mod yaml;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match yaml::parse_documents(text) {
        Ok(docs) => {
            for d in &docs {
                let v = d.to_value();
                let mut lines = yaml::LineMap::default();
                d.record_lines("", &mut lines);
                // What the CLI does next: the core loads it.
                let _ = meshroute::load_value(v);
            }
        }
        Err(e) => {
            let lines = text.lines().count().max(1);
            assert!(e.line >= 1 && e.line <= lines, "error line {} outside 1..={lines}: {e}", e.line);
        }
    }
});
