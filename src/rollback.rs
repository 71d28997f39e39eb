//! `rollback`: put back the files of an apply from its backup (the last one by
//! default) and restart the apiserver. The files it overwrites are backed up
//! first, so nothing is lost.
//!
//! After an interrupted apply (crash, SIGKILL) the last backup is that
//! apply's: rolling back restores the files as they were before it. An
//! interrupted apply that had not changed anything yet is skipped.

use anyhow::{anyhow, Context, Result};
use serde_json::json;

use crate::cli::{GlobalOpts, RollbackOpts};
use crate::live::{self, Live};
use crate::node;
use crate::output::Outcome;
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
    let differing = backup::differing(&root, &chosen)?;
    let action = |e: &backup::Entry| match (differing.contains(&e.path), e.perms.is_some()) {
        (false, _) => "unchanged",
        (true, true) => "restore",
        (true, false) => "remove",
    };
    let actions: Vec<_> = chosen
        .entries
        .iter()
        .map(|e| json!({"path": e.path, "action": action(e)}))
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
    for e in &chosen.entries {
        o.line(format!("  {:<9} {}", action(e), e.path));
    }
    o.set("changed", !differing.is_empty() && !opts.check);
    if opts.check || differing.is_empty() {
        if differing.is_empty() {
            o.line("the files are already as in this backup: nothing to do");
        }
        o.set("rolled_back", false).set("restarted", false);
        return Ok(o);
    }

    let saved = backup::restore_saving(&root, &chosen, backup::REASON_ROLLBACK)?
        .context("internal error: the files differed from the backup, then did not")?;
    // The operator chose the files now: an interrupted apply is no longer
    // for the next apply to recover (its backup stays for `--backup`).
    for mut b in backup::interrupted(&root)? {
        backup::finish(&root, &mut b)?;
    }
    o.set("rolled_back", true).set("saved", saved.id.clone());
    o.line(format!(
        "the files it replaced are saved in {}/{}",
        backup::BACKUP_DIR,
        saved.id
    ));

    let mut restarted = false;
    if !opts.no_restart {
        let node = node::inspect(root, global.distro.as_deref())
            .context("reading the restored configuration")?;
        let live = Live::connect(&node, opts.wait.duration(), live::spinner_wanted(global))?;
        live.restart_and_wait(&node.effective.state(), "after the rollback")
            .context("restarting the apiserver on the restored files")?;
        restarted = true;
        o.line("restart:     done, apiserver ready");
    } else {
        o.line("restart:     pending (--no-restart)");
    }
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
