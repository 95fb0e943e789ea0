//! Writing results: standard output, or a file replaced atomically (temporary file in the same
//! directory, then rename) so that a reader never sees half a configuration.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

pub fn emit(path: Option<&Path>, text: &str) -> ExitCode {
    match path {
        None => {
            let mut out = std::io::stdout().lock();
            match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("meshroute: cannot write to standard output: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Some(p) => match write_atomic(p, text.as_bytes()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("meshroute: cannot write {}: {e}", p.display());
                ExitCode::from(1)
            }
        },
    }
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
