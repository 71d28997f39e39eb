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

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;

use crate::cli::{GlobalOpts, RollbackOpts};
use crate::flags::Effective;
use crate::formats;
use crate::live::{self, Live};
use crate::node;
use crate::output::{Exit, Failure, Outcome};
use crate::restart_pending;
use crate::system::{backup, lock, Sysroot};

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
    // A configuration file changed since (a kubeadm upgrade) keeps that
    // change: only the managed flags are put back as they were in it.
    let reversed = if states
        .iter()
        .any(|(_, s)| matches!(s, backup::State::ChangedSince(_)))
    {
        reverse_flags(&root, global, &chosen, &states)
    } else {
        Ok(backup::Overrides::new())
    };
    let overrides = reversed.as_ref().cloned().unwrap_or_default();
    let action = |path: &str, state: &backup::State| match state {
        backup::State::ChangedSince(_) if overrides.contains_key(path) => "reverse-flags",
        _ => state.action(),
    };
    let actions: Vec<_> = states
        .iter()
        .map(|(path, state)| match state {
            backup::State::ChangedSince(why) => {
                json!({"path": path, "action": action(path, state), "changed_since": why})
            }
            _ => json!({"path": path, "action": action(path, state)}),
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
        o.line(format!("  {:<13} {path}", action(path, state)));
        if let backup::State::ChangedSince(why) = state {
            o.line(format!(
                "                changed since by something else {why}"
            ));
        }
    }
    // Only what irsa-agent wrote is put back: when a file changed since by
    // something else cannot keep that change with only the managed flags
    // reversed, nothing is changed.
    if let Err(cannot) = &reversed {
        let refused = backup::refuse_changed(&chosen, &states)
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        o.set("changed", false)
            .set("rolled_back", false)
            .set("restarted", false);
        return Err(anyhow::Error::msg(Failure {
            exit: Exit::Failed,
            message: format!(
                "{refused}; reversing only the service-account flags in it is not possible either: {cannot:#}"
            ),
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

    let saved = backup::restore_saving_with(&root, &chosen, backup::REASON_ROLLBACK, &overrides)?
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
        let node = node::inspect(root.clone(), global.distro.as_deref())
            .context("reading the restored configuration")?;
        if opts.no_restart {
            // The apiserver does not run the restored files yet: every
            // later apply says so until one restarts and verifies.
            let issuers = node.effective.state().issuers;
            restart_pending::record(&root, node.profile(), &issuers)?;
            return Ok(false);
        }
        let live = Live::connect(&node, opts.wait.duration(), live::spinner_wanted(global))?;
        live.restart_and_wait(&node.effective.state(), "after the rollback")
            .context("restarting the apiserver on the restored files")?;
        if let Err(e) = restart_pending::clear(&root) {
            tracing::warn!("{e:#}");
        }
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
    o.set("restarted", restarted)
        .set("restart_pending", !restarted);
    Ok(o)
}

/// For the configuration files of `chosen` changed since by something else
/// (`states`): their current text with only the managed service-account
/// flags put back as they were before the apply, by the same editors apply
/// uses. An error says why that is not possible (a key file changed since,
/// a file the editors cannot read, an edit that would need another file).
fn reverse_flags(
    root: &Sysroot,
    global: &GlobalOpts,
    chosen: &backup::Backup,
    states: &[(String, backup::State)],
) -> Result<backup::Overrides> {
    let node = node::inspect(root.clone(), global.distro.as_deref())
        .context("the configuration as it is now cannot be read")?;
    let profile = node.profile();
    let text = |bytes: Vec<u8>, path: &str| {
        String::from_utf8(bytes).with_context(|| format!("{path} is not UTF-8"))
    };
    // The configuration once every file irsa-agent still owns is restored,
    // and as it was before the apply.
    let mut after = node.files.clone();
    let mut before = node.files.clone();
    let mut changed = Vec::new();
    for (path, state) in states {
        let copy = backup::copy_of(root, chosen, path)?;
        let is_config = node.files.contains_key(path) || path == &profile.config;
        match state {
            backup::State::ChangedSince(_) if !is_config => bail!(
                "{path} is not a configuration file of {} (a key file?)",
                profile.title
            ),
            backup::State::ChangedSince(_) => changed.push(path.clone()),
            _ if !is_config => continue,
            backup::State::Unchanged => {}
            backup::State::Restore | backup::State::Remove => match &copy {
                Some(c) => {
                    after.insert(path.clone(), text(c.clone(), path)?);
                }
                None => {
                    after.remove(path);
                }
            },
        }
        match copy {
            Some(c) => {
                before.insert(path.clone(), text(c, path)?);
            }
            None => {
                before.remove(path);
            }
        }
    }
    let old = Effective::from_args(&formats::read_args(profile, &before)?).state();
    let edited = formats::write(profile, &after, &old)?;
    let mut out = backup::Overrides::new();
    for path in after.keys().chain(edited.keys()) {
        if edited.get(path) == after.get(path) {
            continue;
        }
        if !changed.contains(path) {
            bail!("reversing them would change {path} too");
        }
    }
    for path in changed {
        let new = edited
            .get(&path)
            .with_context(|| format!("reversing them would remove {path}"))?;
        out.insert(path, new.clone().into_bytes());
    }
    Ok(out)
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
