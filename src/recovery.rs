//! Recovering from an `apply` that was interrupted (crash, SIGKILL, power
//! loss) before it finished.
//!
//! Such a run leaves a complete backup still marked `pending` (backups are
//! complete before the first write), and every node file entirely as before
//! it or entirely as it meant to write it (one atomic rename per file), plus
//! perhaps a hidden temporary file. The apiserver may run either
//! configuration. The next `apply`, under the run lock, undoes that run
//! before planning: it restores the backup (saving what it overwrites in a
//! `recover` backup), removes the temporary files, marks the backup undone,
//! and, if the restore changed the configuration or the interrupted run had
//! restarted the apiserver (its own rollback may have put the files back
//! without restarting again), brings the apiserver back onto the restored
//! files and waits for it. It then converges from the original files, so its own
//! backup holds them and `rollback` afterwards restores them; the
//! interrupted run's backup also still holds them (`rollback --backup ID`).
//!
//! Only what the interrupted run wrote is undone. When one of its files was
//! changed since by something else (a `kubeadm upgrade`, an edit by hand:
//! the file holds neither its old bytes nor what the run wrote), none of its
//! files is touched: the newer change is the operator's, and overwriting it
//! with bytes from before the interruption would be worse than leaving it.
//! The backup is marked `superseded` (no longer pending, with the reason),
//! a warning names the file, and the apply goes on from the files as they
//! are, converging them like any other run; the old copies stay for
//! `rollback --backup ID`.

use anyhow::{Context, Result};
use serde_json::json;

use crate::live::Live;
use crate::node::{self, Node};
use crate::output::{Exit, Failure};
use crate::system::backup;

/// Undo every interrupted apply (newest first); the caller holds the run
/// lock. Returns the ids of the backups it undid, None when there was none.
pub fn recover(node: &Node, live: Option<&Live>) -> Result<Option<Vec<String>>> {
    let root = &node.root;
    let pending = backup::interrupted(root)?;
    if pending.is_empty() {
        return Ok(None);
    }
    let before = node::load_files(root, node.profile())?;
    let restarted = pending.iter().any(|b| b.restarted);
    let mut ids = Vec::new();
    for mut b in pending {
        // Only what that apply wrote is undone: when something else changed
        // one of its files since (a kubeadm upgrade, an edit by hand), its
        // files are left as they are and this apply converges from them.
        let states = backup::examine(root, &b)?;
        if let Err(changed) = backup::refuse_changed(&b, &states) {
            tracing::warn!(
                "an earlier apply was interrupted before it finished (backup {}/{}), but its files were \
                 changed since by something else: leaving them as they are and converging from them ({changed:#}); \
                 its backup stays for `irsa-agent rollback --backup {}`",
                backup::BACKUP_DIR,
                b.id,
                b.id
            );
            backup::mark_superseded(root, &mut b, format!("{changed:#}"))?;
            continue;
        }
        tracing::warn!(
            "an earlier apply was interrupted before it finished (backup {}): undoing it first",
            b.id
        );
        let saved = backup::restore_saving(root, &b, backup::REASON_RECOVER).with_context(|| {
            format!(
                "undoing the interrupted apply of backup {}/{}; run `irsa-agent rollback --backup {}`",
                backup::BACKUP_DIR,
                b.id,
                b.id
            )
        })?;
        if let Some(saved) = saved {
            tracing::info!(
                "the files it overwrote are saved in {}/{}",
                backup::BACKUP_DIR,
                saved.id
            );
        }
        backup::mark_undone(root, &mut b)?;
        ids.push(b.id);
    }
    if ids.is_empty() {
        // Every interrupted apply was superseded: nothing was changed.
        return Ok(None);
    }
    let config_changed = node::load_files(root, node.profile())? != before;
    if let (Some(live), true) = (live, config_changed || restarted) {
        let restored = node::inspect(root.clone(), Some(&node.profile().name))?;
        // Any apiserver on the restored files will do: a static pod the
        // kubelet never replaced, or one it replaced back.
        let back = live.restart_and_wait(
            &restored.effective.state(),
            "after undoing the interrupted apply",
        );
        if let Err(e) = back {
            let message = format!(
                "an interrupted apply was undone (its files restored from backup {}) but the apiserver did not \
                 come back on them: the node needs attention",
                ids.join(", ")
            );
            return Err(e.context(Failure {
                exit: Exit::RollbackFailed,
                message,
                json: json!({
                    "changed": true,
                    "distro": node.profile().name,
                    "rolled_back": true,
                    "healthy": false,
                    "recovered": ids,
                })
                .as_object()
                .cloned()
                .unwrap_or_default(),
            }));
        }
    }
    Ok(Some(ids))
}
