//! `apply`: plan the change, show it, install keys and write the configuration
//! atomically after a backup, restart the apiserver, wait for it, verify a
//! fresh token and an old one; on any failure after the write, put the old
//! files back and restart again.
//!
//! Crash safety: every write happens under the run lock, after a complete
//! backup, one atomic rename per file. An apply killed part way leaves its
//! backup `pending`; the next apply first undoes it (see [`crate::recovery`])
//! and then converges from the files as they were, so `rollback` afterwards
//! still gets the original bytes back.
//!
//! Signals and time: a termination signal before the first write ends the
//! run with nothing written; after it, the run rolls back as after a failed
//! step (see [`crate::signals`]). `--timeout` is the budget of the whole run,
//! a rollback gets its own (see [`crate::live`]).

mod execute;
mod plan;
mod report;

use anyhow::{bail, Context, Result};

use crate::cli::{ApplyOpts, GlobalOpts};
use crate::issuer::{check_audience, Issuer};
use crate::live::{self, Live};
use crate::node::{self, require_root, Node};
use crate::output::Outcome;
use crate::system::{backup, lock};
use crate::verify;
use crate::{failpoint, recovery, restart_pending, signals};

use execute::{restart_and_verify, roll_back, undo_write, write};
pub use plan::{plan, FileChange, Plan, KEY_PREFIX};
use report::report;

pub fn run(global: &GlobalOpts, opts: &ApplyOpts) -> Result<Outcome> {
    let issuer = Issuer::from_flag(opts.issuer()?, opts.allow_port)?;
    for a in &opts.audiences {
        check_audience(a)?;
    }
    let root = node::sysroot(global)?;
    require_root(
        !opts.check && root.is_host(),
        nix::unistd::geteuid().is_root(),
    )?;
    let node = node::inspect(root, global.distro.as_deref())?;
    let mut plan = plan(&node, &issuer, opts)?;
    let mut done = Done::default();
    if opts.check {
        if let Some(b) = backup::interrupted(&node.root)?.first() {
            plan.warnings.push(format!(
                "an earlier apply was interrupted before it finished (backup {}/{}); the next apply undoes \
                 it first, `irsa-agent rollback` restores the files as they were before it",
                backup::BACKUP_DIR,
                b.id
            ));
        }
        done.restart_pending = restart_pending::pending(&node.root, node.profile());
        return Ok(report(&node, opts, &plan, &done));
    }
    signals::install()?;
    let live = if opts.no_restart {
        None
    } else {
        Some(Live::connect(
            &node,
            opts.wait.duration(),
            live::spinner_wanted(global),
        )?)
    };
    let audience = opts
        .audiences
        .first()
        .map(String::as_str)
        .unwrap_or_default();
    if plan.changes.is_empty() && backup::interrupted(&node.root)?.is_empty() {
        return converged(&node, opts, &plan, done, live.as_ref(), &issuer, audience);
    }
    let _lock = lock::acquire(&node.root)?;
    failpoint::hit("after-lock")?;
    signals::check().context(NOTHING_WRITTEN)?;
    // Under the lock: an apply that was interrupted is undone first, and this
    // run plans again from the files as they were before it.
    let (node, plan) = match recovery::recover(&node, live.as_ref())? {
        Some(ids) => {
            let node = node::inspect(node.root.clone(), global.distro.as_deref())?;
            let mut replanned = self::plan(&node, &issuer, opts)?;
            replanned.warnings.insert(
                0,
                format!(
                    "an earlier apply was interrupted before it finished: its changes were undone first \
                     (backup {})",
                    ids.join(", ")
                ),
            );
            done.recovered = ids;
            (node, replanned)
        }
        None => {
            // Another writer may have changed the files between reading and locking.
            let now = node::load_files(&node.root, node.profile())?;
            if now != node.files {
                bail!("the configuration changed while irsa-agent was planning; nothing was written, run again");
            }
            (node, plan)
        }
    };
    if plan.changes.is_empty() {
        return converged(&node, opts, &plan, done, live.as_ref(), &issuer, audience);
    }
    signals::check().context(NOTHING_WRITTEN)?;
    // Before touching anything: the apiserver is healthy and a token issued
    // now can be checked after the change.
    let old_token = match &live {
        Some(live) => {
            live.wait_ready("before the change").context(
                "the apiserver must be healthy before irsa-agent changes its flags; nothing was changed \
                 (use --no-restart to only write the files)",
            )?;
            let token = live
                .block_on(live.api.token(
                    &opts.service_account.namespace,
                    &opts.service_account.name,
                    &[],
                    verify::old_token_lifetime(live.left()),
                ))
                .context("getting a token under the current configuration; nothing was changed")?;
            Some(token)
        }
        None => None,
    };
    signals::check().context(NOTHING_WRITTEN)?;
    let written_at = live.as_ref().map(Live::mark);
    let mut backup = write(&node.root, &plan.changes, opts.keep_backups())?;
    done.backup = Some(backup.id.clone());
    if let (Some(live), Some(old_token), Some(written_at)) = (&live, &old_token, &written_at) {
        let restarted = backup::mark_restarting(&node.root, &mut backup).and_then(|()| {
            restart_and_verify(live, &node, &plan, opts, audience, old_token, written_at)
        });
        match restarted {
            Ok(v) => {
                done.restarted = true;
                done.verified = Some(v);
                done.old_token_authenticated = Some(true);
                forget_pending_restart(&node);
            }
            Err(cause) => {
                live.begin_rollback();
                return Err(roll_back(live, &node, &backup, cause));
            }
        }
    } else if let Err(cause) = failpoint::hit("after-write")
        .and_then(|()| signals::check())
        .and_then(|()| failpoint::hit("before-finish"))
        .and_then(|()| signals::check())
    {
        signals::rolling_back();
        return Err(undo_write(&node.root, &mut backup, cause));
    } else {
        // The files now wait for a restart: every later run says so until
        // one restarts and verifies.
        if let Err(e) = restart_pending::record(&node.root, node.profile(), &plan.target.issuers) {
            tracing::warn!("{e:#}");
        }
        done.restart_pending = true;
    }
    // Done: the backup no longer marks an interrupted run. Failing to record
    // that only costs the next apply an undo and redo of this change.
    if let Err(e) = backup::finish(&node.root, &mut backup) {
        tracing::warn!("could not mark backup {} as finished: {e:#}", backup.id);
    }
    Ok(report(&node, opts, &plan, &done))
}

/// What an interrupted run says when it stopped before writing.
const NOTHING_WRITTEN: &str = "stopped before this run wrote anything; nothing was changed";

/// The apiserver was restarted and verified on the files: no restart pending.
fn forget_pending_restart(node: &Node) {
    if let Err(e) = restart_pending::clear(&node.root) {
        tracing::warn!("{e:#}");
    }
}

/// Nothing to write: with a live apiserver, prove it runs the converged files.
fn converged(
    node: &Node,
    opts: &ApplyOpts,
    plan: &Plan,
    mut done: Done,
    live: Option<&Live>,
    issuer: &Issuer,
    audience: &str,
) -> Result<Outcome> {
    if let Some(live) = live {
        live.wait_ready("to verify")?;
        let expect = verify::expect_for(node, &plan.target, issuer.as_str(), audience)?;
        let hint = "the files are already converged but the running apiserver does not match them: a restart \
                    may be pending from an earlier `apply --no-restart`; restart the apiserver, then run apply again";
        let (_, v) = verify::fresh(live, &opts.service_account, &expect, Some(hint))?;
        done.verified = Some(v);
        forget_pending_restart(node);
    } else {
        done.restart_pending = restart_pending::pending(&node.root, node.profile());
    }
    Ok(report(node, opts, plan, &done))
}

/// What happened after planning.
#[derive(Debug, Default)]
pub(crate) struct Done {
    pub(crate) backup: Option<String>,
    /// Backups of interrupted applies undone before this run.
    pub(crate) recovered: Vec<String>,
    pub(crate) restarted: bool,
    pub(crate) verified: Option<verify::Verified>,
    pub(crate) old_token_authenticated: Option<bool>,
    /// The files wait for a restart (written by this run or an earlier
    /// `--no-restart` one, see [`crate::restart_pending`]).
    pub(crate) restart_pending: bool,
}
