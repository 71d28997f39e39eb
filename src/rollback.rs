//! `rollback`: put back the files of an apply from its backup (the last one by
//! default) and restart the apiserver. The files it overwrites are backed up
//! first, so nothing is lost.
//!
//! Only what irsa-agent wrote is put back: when a file of the backup holds
//! neither its old bytes nor what irsa-agent wrote (a `kubeadm upgrade`, a
//! MicroK8s refresh, an edit since), the rollback is refused, naming the
//! file, and nothing is changed. Once files are restored, every outcome
//! reports them; a failure after that exits 5 ("changed but not finished").
//!
//! After an interrupted apply (crash, SIGKILL) the last backup is that
//! apply's: rolling back restores the files as they were before it. An
//! interrupted apply that had not changed anything yet is skipped.

use anyhow::{anyhow, Context, Result};
use serde_json::json;

use crate::cli::{GlobalOpts, RollbackOpts};
use crate::live::{self, Live};
use crate::node;
use crate::output::{Exit, Failure, Outcome};
use crate::system::{backup, lock};

pub fn run(global: &GlobalOpts, opts: &RollbackOpts) -> Result<Outcome> {
    let root = node::sysroot(global)?;
    node::require_root(
        !opts.check && root.is_host(),
        nix::unistd::geteuid().is_root(),
    )?;
    // Choose and restore under the lock: an apply running now would change
    // the files and the backups under our feet.
    let _lock = if opts.check {
        None
    } else {
        let lock = lock::acquire(&root)?;
        // What a run killed while backing up left: never a usable backup.
        backup::remove_staging_dirs(&root)?;
        Some(lock)
    };
    let chosen = match &opts.backup {
        Some(id) => backup::load(&root, id)?,
        None => last_applied(&root, !opts.check)?.ok_or_else(|| {
            anyhow!(
                "there is no backup under {}: irsa-agent has not changed this node, nothing to roll back",
                backup::BACKUP_DIR
            )
        })?,
    };
    let states = backup::examine(&root, &chosen)?;
    let actions: Vec<_> = states
        .iter()
        .map(|(path, state)| match state {
            backup::State::ChangedSince(why) => {
                json!({"path": path, "action": state.action(), "changed_since": why})
            }
            _ => json!({"path": path, "action": state.action()}),
        })
        .collect();
    let to_change: Vec<&str> = states
        .iter()
        .filter(|(_, s)| *s != backup::State::Unchanged)
        .map(|(p, _)| p.as_str())
        .collect();
    let mut o = Outcome::new();
    o.set("backup", chosen.id.clone())
        .set("check", opts.check)
        .set("files", actions);
    o.line(format!(
        "backup {}/{}{}",
        backup::BACKUP_DIR,
        chosen.id,
        if opts.check {
            " (--check: nothing changed)"
        } else {
            ""
        }
    ));
    for (path, state) in &states {
        o.line(format!("  {:<13} {path}", state.action()));
    }
    // Only what irsa-agent wrote is put back: a file changed since by
    // something else (a kubeadm upgrade, a MicroK8s refresh) is left as it
    // is, and so is every other file.
    if let Err(refused) = backup::refuse_changed(&chosen, &states) {
        o.set("changed", false)
            .set("rolled_back", false)
            .set("restarted", false);
        return Err(anyhow::Error::msg(Failure {
            exit: Exit::Failed,
            message: format!("{refused:#}"),
            json: o.json,
        }));
    }
    o.set("changed", !to_change.is_empty() && !opts.check);
    if opts.check || to_change.is_empty() {
        if to_change.is_empty() {
            o.line("the files are already as in this backup: nothing to do");
        }
        o.set("rolled_back", false).set("restarted", false);
        return Ok(o);
    }

    let saved = backup::restore_saving(&root, &chosen, backup::REASON_ROLLBACK)?
        .context("internal error: the files differed from the backup, then did not")?;
    o.set("rolled_back", true).set("saved", saved.id.clone());
    o.line(format!(
        "the files it replaced are saved in {}/{}",
        backup::BACKUP_DIR,
        saved.id
    ));
    // From here on the files are changed: every outcome says so.
    let finished = (|| -> Result<bool> {
        // The operator chose the files now: an interrupted apply is no longer
        // for the next apply to recover (its backup stays for `--backup`).
        for mut b in backup::interrupted(&root)? {
            backup::finish(&root, &mut b)?;
        }
        if opts.no_restart {
            return Ok(false);
        }
        let node = node::inspect(root.clone(), global.distro.as_deref())
            .context("reading the restored configuration")?;
        let live = Live::connect(&node, opts.wait.duration(), live::spinner_wanted(global))?;
        live.restart_and_wait(&node.effective.state(), "after the rollback")
            .context("restarting the apiserver on the restored files")?;
        Ok(true)
    })();
    let restarted = match finished {
        Ok(restarted) => restarted,
        Err(e) => {
            o.set("restarted", false);
            let message = format!(
                "the files WERE rolled back ({} restored from backup {}; what they replaced is saved in {}/{}) \
                 but the rollback did not finish: the apiserver was not brought back on them. Restart it \
                 yourself once the cause below is fixed (the files are already as in the backup)",
                to_change.join(", "),
                chosen.id,
                backup::BACKUP_DIR,
                saved.id
            );
            return Err(e.context(Failure {
                exit: Exit::Incomplete,
                message,
                json: o.json,
            }));
        }
    };
    o.line(if restarted {
        "restart:     done, apiserver ready"
    } else {
        "restart:     pending (--no-restart)"
    });
    o.set("restarted", restarted);
    Ok(o)
}

/// The backup `rollback` restores by default: the last apply that took
/// effect. An interrupted apply whose files are all still as before it (it
/// died before writing) changed nothing and is skipped (and, with `mark`,
/// recorded as undone).
fn last_applied(root: &crate::system::Sysroot, mark: bool) -> Result<Option<backup::Backup>> {
    for mut b in backup::list(root)? {
        if b.reason != backup::REASON_APPLY || b.undone {
            continue;
        }
        if b.pending && backup::differing(root, &b)?.is_empty() {
            if mark {
                // Changes nothing but the temporary files it may have left.
                backup::restore(root, &b)?;
                backup::mark_undone(root, &mut b)?;
            }
            continue;
        }
        return Ok(Some(b));
    }
    Ok(None)
}
