//! A restart the files are waiting for: `apply --no-restart` wrote a
//! configuration the running apiserver does not run yet. Recorded in a small
//! state file so that every later run says so (`restart_pending: true`)
//! until an apply restarts the apiserver and verifies it, or the running
//! apiserver visibly started after the record (host only: its process, see
//! [`crate::system::process`]).

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::distro::Profile;
use crate::paths::STATE_DIR;
use crate::system::fs::{default_owner, Perms};
use crate::system::{process, Sysroot};

/// The record (a node path).
pub const FILE: &str = "/var/lib/irsa-agent/restart-pending.json";

/// What was written without a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub distro: String,
    /// When the files were written, seconds since the epoch.
    pub written_at: u64,
    /// The issuers the files name.
    pub issuers: Vec<String>,
}

/// Record that the files now wait for a restart (atomically; replaces an older record).
pub fn record(root: &Sysroot, profile: &Profile, issuers: &[String]) -> Result<()> {
    let r = Record {
        distro: profile.name.clone(),
        written_at: process::epoch_secs(std::time::SystemTime::now()),
        issuers: issuers.to_vec(),
    };
    let mut text = serde_json::to_vec_pretty(&r)?;
    text.push(b'\n');
    let (uid, gid) = default_owner();
    root.create_dir_all(STATE_DIR, 0o755)?;
    root.write_atomic(
        FILE,
        &text,
        Perms {
            mode: 0o644,
            uid,
            gid,
        },
    )
    .with_context(|| format!("recording the pending restart in {FILE}"))
}

/// The record, if any. An unreadable record counts as a pending restart
/// (the safe answer) with a warning.
pub fn recorded(root: &Sysroot) -> Option<Record> {
    let text = match root.read_optional(FILE) {
        Ok(t) => t?,
        Err(e) => {
            tracing::warn!("{e:#}");
            return Some(unknown());
        }
    };
    match serde_json::from_str(&text) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(
                "{FILE} is not a record of a pending restart ({e}); taking a restart as pending"
            );
            Some(unknown())
        }
    }
}

fn unknown() -> Record {
    Record {
        distro: String::new(),
        written_at: u64::MAX,
        issuers: Vec::new(),
    }
}

/// Whether the apiserver still has to be restarted onto the files: recorded,
/// and (on the host) no apiserver process started after the record.
pub fn pending(root: &Sysroot, profile: &Profile) -> bool {
    let Some(r) = recorded(root) else {
        return false;
    };
    if root.is_host() {
        if let Some(p) = process::find(&profile.detect.processes)
            .into_iter()
            .find(|p| p.started > r.written_at)
        {
            tracing::info!(
                "the apiserver (pid {}) started after the files were written: no restart pending",
                p.pid
            );
            if let Err(e) = clear(root) {
                tracing::warn!("{e:#}");
            }
            return false;
        }
    }
    true
}

/// The apiserver runs the files (restarted and verified): forget the record.
pub fn clear(root: &Sysroot) -> Result<()> {
    if root.exists(FILE) {
        root.remove(FILE)
            .with_context(|| format!("removing the record of a pending restart {FILE}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> Profile {
        crate::distro::by_name("k3s").unwrap()
    }

    #[test]
    fn a_record_stays_pending_until_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let root = Sysroot::new(dir.path()).unwrap();
        assert!(!pending(&root, &profile()), "nothing recorded");
        record(&root, &profile(), &["https://a.example.com".into()]).unwrap();
        assert!(pending(&root, &profile()));
        assert!(pending(&root, &profile()), "asking does not forget it");
        let r = recorded(&root).unwrap();
        assert_eq!(r.issuers, ["https://a.example.com"]);
        assert_eq!(r.distro, "k3s");
        clear(&root).unwrap();
        assert!(!pending(&root, &profile()));
        clear(&root).unwrap();
    }

    #[test]
    fn a_damaged_record_counts_as_pending() {
        let dir = tempfile::tempdir().unwrap();
        let root = Sysroot::new(dir.path()).unwrap();
        std::fs::create_dir_all(dir.path().join("var/lib/irsa-agent")).unwrap();
        std::fs::write(dir.path().join(&FILE[1..]), "{not json").unwrap();
        assert!(pending(&root, &profile()));
    }
}
