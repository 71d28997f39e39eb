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

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;

use crate::cli::{ApplyOpts, GlobalOpts};
use crate::distro::{Profile, RestartMethod};
use crate::flags::{converge, Desired, Effective, SaState};
use crate::issuer::{differ_only_by_trailing_slash, Issuer};
use crate::keys::{self, PrivateKey, PublicKey};
use crate::live::{self, Live, Mark};
use crate::node::{self, Node};
use crate::output::{Exit, Failure, Outcome};
use crate::system::fs::{default_owner, Perms};
use crate::system::{backup, lock, Sysroot};
use crate::verify;
use crate::{failpoint, formats, keycheck, recovery};

/// Prefix of every key file irsa-agent installs.
pub const KEY_PREFIX: &str = "irsa-agent-";

/// One file the run writes.
#[derive(Debug, Clone)]
pub struct FileChange {
    /// Node path.
    pub path: String,
    pub old: Option<String>,
    pub new: Vec<u8>,
    /// Mode for a new file (an existing one keeps its own).
    pub mode: u32,
    /// Private key material: never shown.
    pub secret: bool,
}

impl FileChange {
    fn action(&self) -> &'static str {
        if self.old.is_some() {
            "modified"
        } else {
            "created"
        }
    }

    /// A unified diff, or a note for secret files.
    pub fn diff(&self) -> String {
        if self.secret {
            return format!(
                "--- /dev/null\n+++ b{}\n(private key, content not shown)\n",
                self.path
            );
        }
        let new = String::from_utf8_lossy(&self.new);
        let old = self.old.as_deref().unwrap_or("");
        let old_name = if self.old.is_some() {
            format!("a{}", self.path)
        } else {
            "/dev/null".to_string()
        };
        similar::TextDiff::from_lines(old, new.as_ref())
            .unified_diff()
            .context_radius(3)
            .header(&old_name, &format!("b{}", self.path))
            .to_string()
    }
}

/// Everything `apply` decided, before touching the node.
pub struct Plan {
    pub target: SaState,
    pub changes: Vec<FileChange>,
    pub warnings: Vec<String>,
    /// Advice that is not a problem (kubeadm ClusterConfiguration snippets).
    pub notes: Vec<String>,
}

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
        return Ok(report(&node, opts, &plan, &done));
    }
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
                    verify::TOKEN_LIFETIME,
                ))
                .context("getting a token under the current configuration; nothing was changed")?;
            Some(token)
        }
        None => None,
    };
    let written_at = live.as_ref().map(Live::mark);
    let mut backup = write(&node.root, &plan.changes)?;
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
            }
            Err(cause) => return Err(roll_back(live, &node, &backup, cause)),
        }
    } else if let Err(cause) =
        failpoint::hit("after-write").and_then(|()| failpoint::hit("before-finish"))
    {
        return Err(undo_write(&node.root, &mut backup, cause));
    }
    // Done: the backup no longer marks an interrupted run. Failing to record
    // that only costs the next apply an undo and redo of this change.
    if let Err(e) = backup::finish(&node.root, &mut backup) {
        tracing::warn!("could not mark backup {} as finished: {e:#}", backup.id);
    }
    Ok(report(&node, opts, &plan, &done))
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
    }
    Ok(report(node, opts, plan, &done))
}

/// What happened after planning.
#[derive(Debug, Default)]
struct Done {
    backup: Option<String>,
    /// Backups of interrupted applies undone before this run.
    recovered: Vec<String>,
    restarted: bool,
    verified: Option<verify::Verified>,
    old_token_authenticated: Option<bool>,
}

/// Restart, wait for health, verify a fresh token and the old one.
fn restart_and_verify(
    live: &Live,
    node: &Node,
    plan: &Plan,
    opts: &ApplyOpts,
    audience: &str,
    old_token: &str,
    written_at: &Mark,
) -> Result<verify::Verified> {
    failpoint::hit("after-write")?;
    live.restart(&plan.target, written_at)
        .context("restarting the apiserver")?;
    failpoint::hit("after-restart")?;
    live.wait_ready("after the restart")?;
    let issuer = &plan.target.issuers[0];
    let expect = verify::expect_for(node, &plan.target, issuer, audience)?;
    let (_, verified) = verify::fresh(live, &opts.service_account, &expect, None)
        .context("verifying a fresh token")?;
    failpoint::hit("during-verify")?;
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
    Ok(verified)
}

/// Put the old files back after `cause`, restart, wait: the error to return.
fn roll_back(
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

/// Writing to the real node needs root; `--check` and `--root` do not.
pub fn require_root(writes_host: bool, is_root: bool) -> Result<()> {
    if writes_host && !is_root {
        bail!(
            "apply changes the node's apiserver configuration and keys: run it as root (sudo irsa-agent apply ...), \
             or add --check to only see what would change"
        );
    }
    Ok(())
}

pub fn check_audience(a: &str) -> Result<()> {
    if a.is_empty() || a.trim() != a || a.chars().any(char::is_whitespace) {
        bail!("--audience {a:?}: an audience must be non-empty and contain no whitespace");
    }
    if a.contains(',') {
        bail!("--audience {a:?}: the apiserver splits --api-audiences on commas; pass each audience with its own --audience");
    }
    Ok(())
}

/// Decide every change. Reads the node and the key files given on the command
/// line; writes nothing.
pub fn plan(node: &Node, issuer: &Issuer, opts: &ApplyOpts) -> Result<Plan> {
    let profile = node.profile();
    let current = node.effective.state();
    let mut warnings: Vec<String> = issuer.warnings.clone();
    for s in &node.effective.issuers {
        if differ_only_by_trailing_slash(&s.value, issuer.as_str()) {
            bail!(
                "--issuer {} differs from the configured issuer {} ({}) only by a trailing slash; the apiserver \
                 compares issuers as exact strings and would treat them as two. Use exactly the spelling you publish",
                issuer,
                s.value,
                s.source
            );
        }
    }
    if current.issuers.is_empty() {
        warnings.push(format!(
            "no --service-account-issuer was set in {}; the apiserver cannot have been running with this configuration",
            profile.config
        ));
    }

    let mut changes: Vec<FileChange> = Vec::new();
    let mut extra_key_files: Vec<String> = Vec::new();
    let mut signing_key_file = None;
    let mut signing_public: Option<PublicKey> = None;

    // The signing key: installed, generated, or the current one kept.
    let new_private = if let Some(path) = &opts.signing_key {
        let bytes =
            fs_err::read(path).map_err(|e| anyhow!("--signing-key {}: {e}", path.display()))?;
        Some(
            PrivateKey::parse(&bytes, path)
                .with_context(|| format!("--signing-key {}", path.display()))?,
        )
    } else if opts.generate_key {
        if generated_key_in_use(node, &current) {
            None
        } else {
            Some(PrivateKey::generate(opts.key_type).context("generating a signing key")?)
        }
    } else {
        None
    };
    if let Some(private) = &new_private {
        let public = private.public_key();
        let stem = format!("{}/{KEY_PREFIX}{}", profile.key_dir, short_kid(&public));
        let key_path = format!("{stem}.key");
        let pub_path = format!("{stem}.pub");
        install_key(
            node,
            &key_path,
            private.to_pkcs8_pem().as_bytes(),
            0o600,
            true,
            &mut changes,
        )?;
        install_key(
            node,
            &pub_path,
            public.to_pem().as_bytes(),
            0o644,
            false,
            &mut changes,
        )?;
        signing_key_file = Some(key_path);
        extra_key_files.push(pub_path);
        signing_public = Some(public);
    }
    // The files the configuration names today: a missing one keeps the
    // apiserver from starting. Keeping the current key, it must verify, or the
    // apiserver could not validate its own tokens.
    let report = keycheck::check(&node.root, profile, &current)?;
    if let (None, Some(problem)) = (&new_private, report.signing_key_unverifiable) {
        bail!("{problem}; fix the key files or pass --signing-key / --generate-key");
    }
    warnings.extend(report.warnings);
    let accepted = report.accepted;

    // Extra public keys to accept (those not accepted already).
    for path in &opts.public_keys {
        let bytes =
            fs_err::read(path).map_err(|e| anyhow!("--public-key {}: {e}", path.display()))?;
        let keys: Vec<PublicKey> = keys::parse_public_keys(&bytes, path)
            .with_context(|| format!("--public-key {}", path.display()))?
            .into_iter()
            .collect();
        if keys.is_empty() {
            bail!(
                "--public-key {}: the file holds no public key the apiserver would read",
                path.display()
            );
        }
        let keys: Vec<PublicKey> = keys
            .into_iter()
            .filter(|k| Some(k) != signing_public.as_ref() && !accepted.contains(k))
            .collect();
        let Some(first) = keys.first() else {
            continue; // every key in it is accepted already
        };
        let dest = format!(
            "{}/{KEY_PREFIX}extra-{}.pub",
            profile.key_dir,
            short_kid(first)
        );
        let pem: String = keys.iter().map(PublicKey::to_pem).collect();
        install_key(node, &dest, pem.as_bytes(), 0o644, false, &mut changes)?;
        extra_key_files.push(dest);
    }

    let desired = Desired {
        issuer: issuer.as_str().to_string(),
        audiences: opts.audiences.clone(),
        signing_key_file,
        extra_key_files,
    };
    let target = converge(&current, &desired);
    let new_files = formats::write(profile, &node.files, &target)?;
    // Read the result back the way the distribution will, before writing anything.
    let after = Effective::from_args(&formats::read_args(profile, &new_files)?).state();
    if after != target {
        bail!(
            "internal error: the edited configuration would give {after:?} instead of {target:?}; nothing was written"
        );
    }
    for (path, new) in &new_files {
        let old = node.files.get(path);
        if old != Some(new) {
            let mode = node.root.perms(path)?.map(|p| p.mode).unwrap_or(0o600);
            changes.push(FileChange {
                path: path.clone(),
                old: old.cloned(),
                new: new.clone().into_bytes(),
                mode,
                secret: false,
            });
        }
    }
    // A file that cannot be written stops the run before anything is.
    for c in &changes {
        node.root.check_writable(&c.path)?;
    }
    // The current files were checked above; the ones this run adds must be
    // visible to the apiserver too.
    let added: Vec<String> = target
        .key_files
        .iter()
        .filter(|k| !current.key_files.contains(k))
        .cloned()
        .collect();
    warnings.extend(keycheck::outside_pod_mounts(profile, &added));
    let mut notes = Vec::new();
    if !changes.is_empty() {
        warnings.extend(profile.warnings.apply.iter().cloned());
        if profile.format == crate::distro::Format::Manifest && profile.name == "kubeadm" {
            notes.extend(crate::kubeadm::notes(&target));
        }
    }
    if !node.detection.also_found.is_empty() {
        warnings.push(format!(
            "markers of {} were found too; pass --distro if {} is not the one running",
            node.detection.also_found.join(", "),
            profile.name
        ));
    }
    Ok(Plan {
        target,
        changes,
        warnings,
        notes,
    })
}

/// With --generate-key: the current signing key if irsa-agent generated it
/// (a second run must not rotate the key again).
fn generated_key_in_use(node: &Node, current: &SaState) -> bool {
    let profile = node.profile();
    let Some(sk) = &current.signing_key_file else {
        return false;
    };
    let in_dir = Path::new(sk).parent() == Some(Path::new(&profile.key_dir));
    let ours = Path::new(sk)
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| {
            n.starts_with(KEY_PREFIX) && !n.starts_with(&format!("{KEY_PREFIX}extra-"))
        });
    in_dir && ours && node.root.exists(sk)
}

/// The first 16 characters of the kid: enough to tell keys apart in a file name.
fn short_kid(k: &PublicKey) -> String {
    k.kid().chars().take(16).collect()
}

/// Plan to install a key file unless the same key is already there.
fn install_key(
    node: &Node,
    path: &str,
    pem: &[u8],
    mode: u32,
    secret: bool,
    changes: &mut Vec<FileChange>,
) -> Result<()> {
    if let Some(existing) = node.root.read_bytes_optional(path)? {
        let same = if secret {
            PrivateKey::parse(&existing, Path::new(path))
                .ok()
                .zip(PrivateKey::parse(pem, Path::new(path)).ok())
                .is_some_and(|(a, b)| a.public_key() == b.public_key())
        } else {
            keys::parse_public_keys(&existing, Path::new(path)).ok()
                == keys::parse_public_keys(pem, Path::new(path)).ok()
        };
        if same {
            return Ok(());
        }
        bail!(
            "{path} already exists and holds a different key; move it away or choose another key"
        );
    }
    changes.push(FileChange {
        path: path.to_string(),
        old: None,
        new: pem.to_vec(),
        mode,
        secret,
    });
    Ok(())
}

/// Back up, then write every change; on failure put everything back.
fn write(root: &Sysroot, changes: &[FileChange]) -> Result<backup::Backup> {
    let paths: Vec<String> = changes.iter().map(|c| c.path.clone()).collect();
    let mut b = backup::create(root, &paths, backup::REASON_APPLY)
        .context("backing up the files to change; nothing was written")?;
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
fn undo_write(root: &Sysroot, b: &mut backup::Backup, err: anyhow::Error) -> anyhow::Error {
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

fn restart_hint(profile: &Profile) -> String {
    match (profile.restart.method, &profile.restart.unit) {
        (RestartMethod::Systemd, Some(unit)) => format!("restart the apiserver: systemctl restart {unit}"),
        _ => "the kubelet restarts the apiserver pod by itself when the manifest changes; wait for it to be ready".into(),
    }
}

fn report(node: &Node, opts: &ApplyOpts, plan: &Plan, done: &Done) -> Outcome {
    let profile = node.profile();
    let changed = !plan.changes.is_empty();
    let pending = changed && !opts.check && opts.no_restart;
    let mut o = Outcome::new();
    let files: Vec<_> = plan
        .changes
        .iter()
        .map(|c| json!({"path": c.path, "action": c.action(), "diff": c.diff()}))
        .collect();
    o.set("changed", changed)
        .set("check", opts.check)
        .set("distro", profile.name.clone())
        .set("files", files)
        .set("issuers", plan.target.issuers.clone())
        .set("api_audiences", plan.target.api_audiences.clone())
        .set("signing_key_file", plan.target.signing_key_file.clone())
        .set("key_files", plan.target.key_files.clone())
        .set("restarted", done.restarted)
        .set("restart_pending", pending)
        .set("verified", json!(done.verified))
        .set("old_token_authenticated", done.old_token_authenticated)
        .set("rolled_back", false)
        .set("backup", done.backup.clone())
        .set("recovered", done.recovered.clone())
        .set("warnings", plan.warnings.clone())
        .set("notes", plan.notes.clone());

    let verb = match (changed, opts.check) {
        (false, _) => "already converged: nothing to change",
        (true, true) => "would change (--check: nothing written)",
        (true, false) => "changed",
    };
    o.line(format!("{}: {verb}", profile.title));
    for c in &plan.changes {
        o.line(format!("  {:<8} {}", c.action(), c.path));
    }
    if opts.diff {
        for c in &plan.changes {
            o.human.push_str(&c.diff());
        }
    }
    o.line(format!(
        "issuers:     {} (signs){}",
        plan.target.issuers[0],
        plan.target.issuers[1..]
            .iter()
            .map(|i| format!(", {i}"))
            .collect::<String>()
    ));
    o.line(format!(
        "audiences:   {}",
        plan.target.api_audiences.join(", ")
    ));
    for id in &done.recovered {
        o.line(format!(
            "recovered:   undid an interrupted apply first (backup {}/{id})",
            backup::BACKUP_DIR
        ));
    }
    if let Some(id) = &done.backup {
        o.line(format!("backup:      {}/{id}", backup::BACKUP_DIR));
    }
    if done.restarted {
        o.line("restart:     done, apiserver ready");
    }
    if pending {
        o.line(format!("restart:     pending; {}", restart_hint(profile)));
    }
    if let Some(v) = &done.verified {
        verify::human_claims(&mut o, v);
    }
    if done.old_token_authenticated == Some(true) {
        o.line("old token:   still authenticates");
    }
    for n in &plan.notes {
        o.line(format!("note: {n}"));
    }
    for w in &plan.warnings {
        tracing::warn!("{w}");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_needed_only_to_write_the_real_node() {
        assert!(require_root(true, false)
            .unwrap_err()
            .to_string()
            .contains("run it as root"));
        require_root(true, true).unwrap();
        require_root(false, false).unwrap();
    }

    #[test]
    fn audiences_must_be_single_values() {
        check_audience("sts.amazonaws.com").unwrap();
        for bad in ["", " a", "a,b", "a b"] {
            let e = check_audience(bad).unwrap_err().to_string();
            assert!(e.starts_with("--audience"), "{e}");
        }
    }
}
