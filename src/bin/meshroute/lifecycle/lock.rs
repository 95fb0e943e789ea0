//! One writer at a time per state directory: `DIR/lock` is created exclusively (`create_new`)
//! and holds the owner's process id. A second `apply` waits for it (up to a timeout) and then
//! fails naming the owner; a lock left by a process that no longer exists is taken over.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub struct Lock {
    path: PathBuf,
}

#[derive(Debug)]
pub enum LockError {
    /// Another live process holds the lock.
    Held {
        path: PathBuf,
        owner: String,
    },
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Held { path, owner } => write!(
                f,
                "{} is held by process {owner} (another apply or rollback is running); nothing was changed",
                path.display()
            ),
            Self::Io { path, error } => write!(f, "{}: {error}", path.display()),
        }
    }
}

impl Lock {
    pub fn acquire(dir: &Path, wait: Duration) -> Result<Lock, LockError> {
        let path = dir.join("lock");
        let deadline = Instant::now() + wait;
        loop {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    let _ = writeln!(f, "{}", std::process::id());
                    return Ok(Lock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner = std::fs::read_to_string(&path).unwrap_or_default().trim().to_string();
                    if !owner_alive(&owner) {
                        // The owner died without cleaning up (killed): its lock protects nothing.
                        let _ = std::fs::remove_file(&path);
                        continue;
                    }
                    if Instant::now() >= deadline {
                        return Err(LockError::Held { path, owner });
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(error) => return Err(LockError::Io { path, error }),
            }
        }
    }
}

/// Whether the process that wrote the lock still runs (`/proc/PID` on Linux). An empty file is
/// a lock being written right now: alive.
fn owner_alive(owner: &str) -> bool {
    if owner.is_empty() {
        return true;
    }
    match owner.parse::<u32>() {
        Ok(pid) => Path::new("/proc").join(pid.to_string()).exists() || !Path::new("/proc/self").exists(),
        Err(_) => false,
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_writer_fails_while_the_first_holds_and_gets_it_after() {
        let dir = std::env::temp_dir().join(format!("meshroute-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = Lock::acquire(&dir, Duration::ZERO).unwrap();
        let second = Lock::acquire(&dir, Duration::from_millis(100));
        assert!(matches!(second, Err(LockError::Held { .. })), "{:?}", second.err());
        drop(first);
        assert!(Lock::acquire(&dir, Duration::ZERO).is_ok());
        // A lock of a dead process is taken over.
        std::fs::write(dir.join("lock"), "999999999\n").unwrap();
        assert!(Lock::acquire(&dir, Duration::ZERO).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
