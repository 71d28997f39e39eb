//! The effectful half of `apply`: back up and write the planned files, restart,
//! wait, verify, and put everything back when a step fails.

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::cli::ApplyOpts;
use crate::live::{Live, Mark};
use crate::node::Node;
use crate::output::{Exit, Failure};
use crate::system::fs::{default_owner, Perms};
use crate::system::{backup, Sysroot};
use crate::{failpoint, signals, verify};

use super::{FileChange, Plan};

/// Restart, wait for health, verify a fresh token and the old one. A
/// termination signal is noticed at each step boundary (and inside every
/// wait, see [`Live::block_on`]): the error makes the caller roll back.
pub(super) fn restart_and_verify(
    live: &Live,
    node: &Node,
    plan: &Plan,
    opts: &ApplyOpts,
    audience: &str,
    old_token: &str,
    written_at: &Mark,
) -> Result<verify::Verified> {
    failpoint::hit("after-write")?;
    signals::check()?;
    live.restart(&plan.target, written_at)
        .context("restarting the apiserver")?;
    failpoint::hit("after-restart")?;
    signals::check()?;
    live.wait_ready("after the restart")?;
    let issuer = &plan.target.issuers[0];
    let expect = verify::expect_for(node, &plan.target, issuer, audience)?;
    let (_, verified) = verify::fresh(live, &opts.service_account, &expect, None)
        .context("verifying a fresh token")?;
    failpoint::hit("during-verify")?;
    signals::check()?;
    let review = live
        .block_on(live.api.review(old_token, &[]))
        .context("checking a token issued before the change")?;
    if !review.authenticated {
        bail!(
            "a token issued before the change no longer authenticates ({}): existing pods would lose access",
            review.error.as_deref().unwrap_or("no reason given")
        );
    }
    failpoint::hit("before-finish")?;
    signals::check()?;
    Ok(verified)
}

/// Put the old files back after `cause`, restart, wait: the error to return.
pub(super) fn roll_back(
    live: &Live,
    node: &Node,
    backup: &backup::Backup,
    cause: anyhow::Error,
) -> anyhow::Error {
    tracing::warn!("apply failed after writing ({cause}); rolling back");
    // `restored`: the old files are back; `healthy`: the apiserver is ready on them.
    let failure = |exit: Exit, message: String, restored: bool| Failure {
        exit,
        message,
        json: json!({
            "changed": !restored,
            "distro": node.profile().name,
            "rolled_back": restored,
            "healthy": exit == Exit::RolledBack,
            "restarted": true,
            "backup": backup.id,
        })
        .as_object()
        .cloned()
        .unwrap_or_default(),
    };
    if let Err(e) = backup::restore(&node.root, backup) {
        return cause.context(failure(
            Exit::RollbackFailed,
            format!(
                "apply failed after writing AND restoring backup {} failed ({e:#}): the node still has the NEW \
                 configuration. Run `irsa-agent rollback --backup {}` or copy the files back from {}",
                backup.id,
                backup.id,
                backup.dir()
            ),
            false,
        ));
    }
    let old = node.effective.state();
    let back = live.restart_and_wait(&old, "after the rollback");
    // Only now: killed before this point, the backup is still pending and the
    // next apply brings the apiserver back onto the restored files.
    let mut marked = backup.clone();
    if let Err(e) = backup::mark_undone(&node.root, &mut marked) {
        tracing::warn!("could not mark backup {} as undone: {e:#}", backup.id);
    }
    match back {
        Ok(()) => cause.context(failure(
            Exit::RolledBack,
            format!(
                "apply failed after writing and was rolled back: the node is back on its old configuration \
                 (files restored from backup {}, apiserver restarted and ready)",
                backup.id
            ),
            true,
        )),
        Err(e) => cause.context(failure(
            Exit::RollbackFailed,
            format!(
                "apply failed after writing; the old files were restored from backup {} but the apiserver did not \
                 come back ({e:#}): the node needs attention",
                backup.id
            ),
            true,
        )),
    }
}

/// Back up (recording what each file will hold), prune the backups beyond
/// the newest `keep`, then write every change; on failure put everything back.
pub(super) fn write(root: &Sysroot, changes: &[FileChange], keep: usize) -> Result<backup::Backup> {
    let planned: Vec<backup::Planned> = changes
        .iter()
        .map(|c| (c.path.as_str(), Some(c.new.as_slice())))
        .collect();
    let mut b = backup::create(root, &planned, backup::REASON_APPLY)
        .context("backing up the files to change; nothing was written")?;
    // Old backups hold copies of old keys; failing to remove them stops nothing.
    match backup::prune(root, keep) {
        Ok(removed) if !removed.is_empty() => tracing::info!(
            "removed {} old backup(s) beyond the newest {keep}: {}",
            removed.len(),
            removed.join(", ")
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("could not remove old backups: {e:#}"),
    }
    let (uid, gid) = default_owner();
    let result = (|| -> Result<()> {
        failpoint::hit("after-backup")?;
        // Keys first: the configuration must never name a key that is not there yet.
        for c in changes.iter().filter(|c| c.old.is_none()) {
            if let Some((dir, _)) = c.path.rsplit_once('/') {
                root.create_dir_all(dir, 0o755)?;
            }
            root.write_atomic(
                &c.path,
                &c.new,
                Perms {
                    mode: c.mode,
                    uid,
                    gid,
                },
            )?;
            failpoint::hit("after-rename")?;
        }
        for c in changes.iter().filter(|c| c.old.is_some()) {
            let perms = root.perms(&c.path)?.unwrap_or(Perms {
                mode: c.mode,
                uid,
                gid,
            });
            root.write_atomic(&c.path, &c.new, perms)?;
            failpoint::hit("after-rename")?;
        }
        Ok(())
    })();
    if let Err(err) = result {
        return Err(undo_write(root, &mut b, err));
    }
    Ok(b)
}

/// Put the files of `b` back after `err` (before any restart): the error to
/// return. A backup that could not be restored stays pending, so the next
/// apply undoes it.
pub(super) fn undo_write(
    root: &Sysroot,
    b: &mut backup::Backup,
    err: anyhow::Error,
) -> anyhow::Error {
    match backup::restore(root, b) {
        Ok(_) => {
            // Nothing changed in the end: not a backup to roll back to. If it
            // cannot be removed, it is at least marked undone.
            if let Err(e) = backup::discard(root, b) {
                tracing::warn!("{e:#}");
                if let Err(e) = backup::mark_undone(root, b) {
                    tracing::warn!("could not mark backup {} as undone: {e:#}", b.id);
                }
            }
            err.context("writing failed; every file was restored from backup")
        }
        Err(restore_err) => err.context(format!(
            "writing failed AND restoring backup {} failed ({restore_err:#}); run `irsa-agent rollback` or copy the files back from {}",
            b.id,
            b.dir()
        )),
    }
}
