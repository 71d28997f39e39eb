//! One `apply` (or `rollback`) at a time per node: an exclusive flock on
//! `/run/irsa-agent/apply.lock`, taken without waiting. The kernel drops a
//! flock when its holder dies, even by SIGKILL, so a crashed run never
//! blocks the next one; the pid in the file is only for the message.

use std::io::{Read, Seek, Write};

use anyhow::{anyhow, Context, Result};
use nix::fcntl::{Flock, FlockArg};

use super::fs::Sysroot;

pub const LOCK_DIR: &str = "/run/irsa-agent";
pub const LOCK_FILE: &str = "/run/irsa-agent/apply.lock";

/// Held until dropped.
pub struct RunLock {
    _lock: Flock<std::fs::File>,
}

/// Take the lock or fail at once, naming the process that holds it.
pub fn acquire(root: &Sysroot) -> Result<RunLock> {
    root.create_dir_all(LOCK_DIR, 0o755)?;
    let path = root.host_path(LOCK_FILE)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {LOCK_FILE}"))?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((mut f, _)) => {
            // The holder writes its pid just after locking: give it a moment.
            let mut holder = String::new();
            for _ in 0..20 {
                holder.clear();
                let _ = f.rewind();
                let _ = f.read_to_string(&mut holder);
                if !holder.trim().is_empty() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            let holder = holder.trim();
            return Err(anyhow!(
                "another irsa-agent run{} holds {LOCK_FILE}; nothing was changed: wait for it to finish, then run \
                 again",
                if holder.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {holder})")
                }
            ));
        }
    };
    lock.set_len(0).context(LOCK_FILE)?;
    lock.rewind().context(LOCK_FILE)?;
    write!(lock, "{}", std::process::id()).context(LOCK_FILE)?;
    Ok(RunLock { _lock: lock })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_fails_fast_with_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let root = Sysroot::new(dir.path()).unwrap();
        let first = acquire(&root).unwrap();
        let err = acquire(&root)
            .err()
            .expect("second run must not get the lock")
            .to_string();
        assert!(
            err.contains("another irsa-agent run") && err.contains(&std::process::id().to_string()),
            "{err}"
        );
        drop(first);
        acquire(&root).expect("free again once released");
    }
}
