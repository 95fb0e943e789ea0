//! `meshroute-trim-exports IN OUT NAME...`: writes IN to OUT without the exports NAME...
//!
//! Envoy (proxy-wasm-cpp-host) calls a stream callback only if the module exports it, and every
//! call into the VM costs about as much as a host call. The Rust SDK exports every callback, so a
//! filter pays for `proxy_on_response_body` on each response chunk and `proxy_on_log` at each
//! stream's end although it does nothing there. Rust cannot leave a dependency's `#[no_mangle]`
//! function out of a cdylib's exports, so `make wasm` removes them afterwards.
//!
//! Only the export section changes; every other section is copied byte for byte, so the code
//! behind a removed export stays (unreachable from the host). A name that is not exported is an
//! error: a typo or an SDK that renamed a callback must not pass unnoticed.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::process::ExitCode;

const MAGIC: &[u8] = b"\0asm";
const EXPORT_SECTION: u8 = 7;

#[derive(Debug, PartialEq, Eq)]
enum Error {
    NotWasm,
    Truncated(usize),
    NotExported(Vec<String>),
    NoExportSection,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotWasm => write!(f, "not a Wasm module (no \\0asm header, version 1)"),
            Error::Truncated(at) => write!(f, "truncated or malformed at byte {at}"),
            Error::NotExported(names) => write!(f, "not exported by the module: {}", names.join(", ")),
            Error::NoExportSection => write!(f, "the module has no export section"),
        }
    }
}

/// Reads an unsigned LEB128 u32 at `*at`, moving past it.
fn read_u32(b: &[u8], at: &mut usize) -> Result<u32, Error> {
    let start = *at;
    let mut value: u64 = 0;
    for shift in (0..35).step_by(7) {
        let byte = *b.get(*at).ok_or(Error::Truncated(start))?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return u32::try_from(value).map_err(|_| Error::Truncated(start));
        }
    }
    Err(Error::Truncated(start))
}

fn write_u32(out: &mut Vec<u8>, mut v: u32) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn take<'a>(b: &'a [u8], at: &mut usize, n: usize) -> Result<&'a [u8], Error> {
    let end = at.checked_add(n).filter(|&e| e <= b.len()).ok_or(Error::Truncated(*at))?;
    let s = &b[*at..end];
    *at = end;
    Ok(s)
}

/// The export section's body without the entries named in `drop`; records the names it saw.
fn trim_section(
    body: &[u8],
    base: usize,
    drop: &BTreeSet<&str>,
    seen: &mut BTreeSet<String>,
) -> Result<Vec<u8>, Error> {
    let at = &mut 0;
    let count = read_u32(body, at).map_err(|_| Error::Truncated(base))?;
    let mut kept = Vec::new();
    let mut n_kept = 0u32;
    for _ in 0..count {
        let entry_start = *at;
        let len = read_u32(body, at).map_err(|_| Error::Truncated(base + entry_start))?;
        let name = take(body, at, len as usize).map_err(|_| Error::Truncated(base + entry_start))?;
        // Kind byte, then the index.
        take(body, at, 1).map_err(|_| Error::Truncated(base + *at))?;
        read_u32(body, at).map_err(|_| Error::Truncated(base + *at))?;
        let name = String::from_utf8_lossy(name);
        if drop.contains(name.as_ref()) {
            seen.insert(name.into_owned());
        } else {
            kept.extend_from_slice(&body[entry_start..*at]);
            n_kept += 1;
        }
    }
    if *at != body.len() {
        return Err(Error::Truncated(base + *at));
    }
    let mut out = Vec::with_capacity(kept.len() + 5);
    write_u32(&mut out, n_kept);
    out.extend_from_slice(&kept);
    Ok(out)
}

/// The module without the exports in `drop`. Every other byte is the input's.
fn trim(module: &[u8], drop: &[String]) -> Result<Vec<u8>, Error> {
    if module.len() < 8 || &module[..4] != MAGIC || module[4..8] != [1, 0, 0, 0] {
        return Err(Error::NotWasm);
    }
    let wanted: BTreeSet<&str> = drop.iter().map(String::as_str).collect();
    let mut seen = BTreeSet::new();
    let mut found_exports = false;
    let mut out = module[..8].to_vec();
    let mut at = 8;
    while at < module.len() {
        let section_at = at;
        let id = module[at];
        at += 1;
        let size = read_u32(module, &mut at)? as usize;
        let body_at = at;
        let body = take(module, &mut at, size)?;
        if id == EXPORT_SECTION {
            found_exports = true;
            let body = trim_section(body, body_at, &wanted, &mut seen)?;
            out.push(id);
            write_u32(&mut out, u32::try_from(body.len()).map_err(|_| Error::Truncated(body_at))?);
            out.extend_from_slice(&body);
        } else {
            out.extend_from_slice(&module[section_at..at]);
        }
    }
    if !found_exports && !wanted.is_empty() {
        return Err(Error::NoExportSection);
    }
    let missing: Vec<String> = wanted.iter().filter(|n| !seen.contains(**n)).map(|n| n.to_string()).collect();
    if !missing.is_empty() {
        return Err(Error::NotExported(missing));
    }
    Ok(out)
}

fn run(args: &[String]) -> Result<(), String> {
    let [input, output, names @ ..] = args else {
        return Err("usage: meshroute-trim-exports IN.wasm OUT.wasm EXPORT...".into());
    };
    let module = std::fs::read(input).map_err(|e| format!("{input}: {e}"))?;
    let trimmed = trim(&module, names).map_err(|e| format!("{input}: {e}"))?;
    // A temporary file renamed over OUT: a reader never sees half a module, and when IN and OUT
    // are one path (cargo hard-links it to target/*/deps/), cargo's own copy is left as it was.
    let tmp = format!("{output}.tmp");
    std::fs::write(&tmp, &trimmed).map_err(|e| format!("{tmp}: {e}"))?;
    std::fs::rename(&tmp, output).map_err(|e| format!("{output}: {e}"))?;
    let name = Path::new(output).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    println!("{name}: removed the exports {}", names.join(", "));
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshroute-trim-exports: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(id: u8, body: &[u8]) -> Vec<u8> {
        let mut s = vec![id];
        write_u32(&mut s, body.len() as u32);
        s.extend_from_slice(body);
        s
    }

    fn exports(entries: &[(&str, u8, u32)]) -> Vec<u8> {
        let mut b = Vec::new();
        write_u32(&mut b, entries.len() as u32);
        for (name, kind, index) in entries {
            write_u32(&mut b, name.len() as u32);
            b.extend_from_slice(name.as_bytes());
            b.push(*kind);
            write_u32(&mut b, *index);
        }
        b
    }

    fn module(sections: &[Vec<u8>]) -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        sections.iter().for_each(|s| m.extend_from_slice(s));
        m
    }

    fn names(s: &[&str]) -> Vec<String> {
        s.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn removes_the_named_exports_and_copies_every_other_byte() {
        // A custom section with a padded LEB128 size (as linkers write) must survive unchanged.
        let custom = [0u8, 0x85, 0x80, 0x80, 0x80, 0x00, 4, b'n', b'a', b'm', b'e'];
        let code = section(10, &[1, 2, 3]);
        let before = exports(&[("memory", 2, 0), ("proxy_on_log", 0, 7), ("proxy_on_done", 0, 300)]);
        let input = module(&[custom.to_vec(), section(7, &before), code.clone()]);
        let out = trim(&input, &names(&["proxy_on_log"])).unwrap();
        let after = exports(&[("memory", 2, 0), ("proxy_on_done", 0, 300)]);
        assert_eq!(out, module(&[custom.to_vec(), section(7, &after), code]));
    }

    #[test]
    fn a_name_the_module_does_not_export_is_an_error() {
        let input = module(&[section(7, &exports(&[("proxy_on_log", 0, 1)]))]);
        let err = trim(&input, &names(&["proxy_on_log", "proxy_on_lgo"])).unwrap_err();
        assert_eq!(err, Error::NotExported(names(&["proxy_on_lgo"])));
        assert_eq!(trim(&module(&[]), &names(&["proxy_on_log"])).unwrap_err(), Error::NoExportSection);
    }

    #[test]
    fn malformed_input_is_refused_with_its_place() {
        assert_eq!(trim(b"\0asm\x02\0\0\0", &[]).unwrap_err(), Error::NotWasm);
        assert_eq!(trim(b"ELF", &[]).unwrap_err(), Error::NotWasm);
        let whole = module(&[section(7, &exports(&[("proxy_on_log", 0, 1)]))]);
        for cut in 9..whole.len() {
            assert!(matches!(trim(&whole[..cut], &names(&["proxy_on_log"])), Err(Error::Truncated(_))), "cut at {cut}");
        }
        // A section whose entries end before its stated size.
        let mut body = exports(&[("a", 0, 1)]);
        body.push(0);
        assert_eq!(trim(&module(&[section(7, &body)]), &[]).unwrap_err(), Error::Truncated(8 + 2 + body.len() - 1));
    }

    #[test]
    fn the_output_replaces_the_file_without_touching_a_hard_link() {
        let dir = std::env::temp_dir().join(format!("trim-exports-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cargo, uplifted) = (dir.join("deps.wasm"), dir.join("out.wasm"));
        let input = module(&[section(7, &exports(&[("memory", 2, 0), ("proxy_on_log", 0, 1)]))]);
        std::fs::write(&cargo, &input).unwrap();
        let _ = std::fs::remove_file(&uplifted);
        std::fs::hard_link(&cargo, &uplifted).unwrap();
        let p = uplifted.display().to_string();
        run(&[p.clone(), p, "proxy_on_log".into()]).unwrap();
        assert_eq!(std::fs::read(&cargo).unwrap(), input);
        assert_eq!(std::fs::read(&uplifted).unwrap(), module(&[section(7, &exports(&[("memory", 2, 0)]))]));
        assert!(run(&[]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
