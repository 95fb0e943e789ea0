//! The regex code and the path index on arbitrary patterns and paths: compile_regex never
//! panics, and the literals the index files a regex under really are the prefixes (or suffixes)
//! of every path it fully matches.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshroute::index::{regex_literals, RegexLiterals};
use meshroute::matcher::compile_regex;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (pattern, paths) = text.split_once('\n').unwrap_or((text, "/"));
    if pattern.len() > 200 {
        return;
    }
    let literals = regex_literals(pattern);
    let Ok(re) = compile_regex(pattern) else { return };
    for p in paths.split('\n').take(16) {
        if !re.is_match(p) {
            continue;
        }
        match &literals {
            Some(RegexLiterals::Prefixes(ls)) => {
                assert!(ls.iter().any(|l| p.starts_with(l.as_str())), "{pattern:?} matches {p:?}, not under {ls:?}")
            }
            Some(RegexLiterals::Suffixes(ls)) => {
                assert!(ls.iter().any(|l| p.ends_with(l.as_str())), "{pattern:?} matches {p:?}, not under {ls:?}")
            }
            None => {}
        }
    }
});
