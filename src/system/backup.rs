//! Backups of every file `apply` is about to change, under
//! `/var/lib/irsa-agent/backups/<seq>-<timestamp>/`, never next to the file
//! (the kubelet runs every file in the manifests directory as a static pod).
//!
//! Crash safety: a backup is made in a hidden staging directory and renamed
//! into place once every copy and the index are written and synced, so a
//! backup that exists is complete. An `apply` backup stays `pending` until
//! that apply has finished (succeeded, or undone its change): a pending
//! backup found by a later run is an apply that was interrupted (crash,
//! SIGKILL, power loss), and its copies hold the files as they were before it.
//! Every function that writes here runs under the run lock.
//!
//! Only what irsa-agent wrote is put back: the index records, per file, the
//! sha256 of the bytes backed up and of the bytes the run is about to write
//! (recorded before the write, so a crash between write and record cannot
//! lose it). A restore checks every file first and changes nothing when one
//! holds anything else (a `kubeadm upgrade`, a MicroK8s refresh, an edit by
//! hand since): see [`ChangedSince`].
//!
//! Order: by the sequence number in each index (one more than the highest
//! found), never by wall clock (the boot unit may run before time sync). A
//! corrupt index is reported and skipped, never blocks a run.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::fs::{default_owner, Perms, Sysroot};

pub use crate::paths::BACKUP_DIR;
const INDEX: &str = "index.json";
/// Where a backup is made before it is renamed to its id.
const STAGING_PREFIX: &str = ".partial-";
/// The temporary files of `fs::write_file_atomic`: left behind only by a run
/// that died while writing.
const TEMP_PREFIX: &str = ".irsa-agent-";
/// How many finished backups `apply` keeps by default (plus every pending one).
pub const DEFAULT_KEEP: usize = 10;

/// The content of a file at one moment: absent, or the sha256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Content {
    Absent,
    Sha256(String),
}

impl Content {
    pub fn of(bytes: Option<&[u8]>) -> Self {
        match bytes {
            None => Content::Absent,
            Some(b) => Content::Sha256(
                Sha256::digest(b)
                    .iter()
                    .map(|x| format!("{x:02x}"))
                    .collect(),
            ),
        }
    }
}

impl std::fmt::Display for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Content::Absent => f.write_str("no file"),
            Content::Sha256(h) => write!(f, "sha256 {}", &h[..h.len().min(16)]),
        }
    }
}

/// One file as it was before a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Node path of the file.
    pub path: String,
    /// Its mode and owner, None when the file did not exist (the run created it).
    pub perms: Option<Perms>,
    /// What the file held when it was backed up (the copy's hash). None in
    /// backups made by older versions, which recorded no hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<Content>,
    /// What the run that made the backup writes to the file (recorded
    /// before the write). None in backups of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wrote: Option<Content>,
}

/// A completed backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    pub id: String,
    /// Order of the backups: one more than the highest found when it was
    /// made (0 in backups of older versions: ordered by id among themselves).
    #[serde(default)]
    pub seq: u64,
    /// What made it: `apply`, or `rollback` (the files a rollback overwrote;
    /// kept so nothing is lost, never picked as "the last backup").
    #[serde(default = "apply_reason")]
    pub reason: String,
    pub entries: Vec<Entry>,
    /// Set when `apply` put these files back itself after a failure: that
    /// apply never took effect, so `rollback` does not pick this backup.
    #[serde(default)]
    pub undone: bool,
    /// Set while the apply that made it runs: still set when a later run
    /// finds it, that apply was interrupted before it finished.
    #[serde(default)]
    pub pending: bool,
    /// Set just before the apply that made it restarts the apiserver: if
    /// that apply was interrupted, the apiserver may run its files.
    #[serde(default)]
    pub restarted: bool,
    /// Set when a later apply found this interrupted apply's files changed
    /// since by something else and left them as they were (the reason):
    /// no longer pending, never "the last backup".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded: Option<String>,
    /// Directories that did not exist and will be created for new files,
    /// deepest first: removed again on restore when empty.
    #[serde(default)]
    pub created_dirs: Vec<String>,
}

fn apply_reason() -> String {
    REASON_APPLY.to_string()
}

pub const REASON_APPLY: &str = "apply";
pub const REASON_ROLLBACK: &str = "rollback";
/// The files an `apply` overwrote when it undid an interrupted apply first.
pub const REASON_RECOVER: &str = "recover";

impl Backup {
    /// Node path of the backup directory.
    pub fn dir(&self) -> String {
        format!("{BACKUP_DIR}/{}", self.id)
    }

    fn copy_path(&self, path: &str) -> String {
        copy_in(&self.dir(), path)
    }
}

fn copy_in(dir: &str, path: &str) -> String {
    format!("{dir}/files{path}")
}

fn private_perms() -> Perms {
    let (uid, gid) = default_owner();
    Perms {
        mode: 0o600,
        uid,
        gid,
    }
}

/// A file to back up and what the run will write to it (None: remove it).
pub type Planned<'a> = (&'a str, Option<&'a [u8]>);

/// Copy the files of `planned` (those that exist) into a new backup whose
/// index records the hash of each copy and of what the run will write: made
/// in a staging directory, index last, synced, then renamed to its id, so a
/// backup is either complete or absent. Staging directories left by a run
/// that died are removed first (the caller holds the run lock).
pub fn create(root: &Sysroot, planned: &[Planned], reason: &str) -> Result<Backup> {
    let seq = list(root)?.iter().map(|b| b.seq).max().unwrap_or(0) + 1;
    let mut backup = Backup {
        id: format!("{seq:06}-{}", timestamp_id()),
        seq,
        reason: reason.to_string(),
        entries: Vec::new(),
        created_dirs: Vec::new(),
        undone: false,
        pending: reason == REASON_APPLY,
        restarted: false,
        superseded: None,
    };
    root.create_dir_all(BACKUP_DIR, 0o700)?;
    remove_staging_dirs(root)?;
    let staging = format!("{BACKUP_DIR}/{STAGING_PREFIX}{}", backup.id);
    let made = fill(root, &mut backup, &staging, planned)
        .and_then(|()| root.rename_in_dir(&staging, &backup.dir()));
    if let Err(e) = made {
        // A backup that could not be completed (a full disk) leaves nothing behind.
        if let Err(d) = root.remove_dir_all(&staging) {
            tracing::warn!("{d:#}");
        }
        return Err(e);
    }
    Ok(backup)
}

/// Remove a backup directory and everything in it (a backup of files that
/// were put back unchanged: nothing to roll back to).
pub fn discard(root: &Sysroot, backup: &Backup) -> Result<()> {
    root.remove_dir_all(&backup.dir())
        .with_context(|| format!("removing the unused backup {}", backup.id))
}

/// Remove the oldest finished backups so that `keep` of them stay, plus
/// every pending one (an apply running or interrupted) and the one
/// `rollback` would restore. Returns the ids removed. Backups hold copies of
/// installed private keys: removing them removes those copies.
pub fn prune(root: &Sysroot, keep: usize) -> Result<Vec<String>> {
    let last = latest(root)?.map(|b| b.id);
    let mut kept = 0;
    let mut removed = Vec::new();
    for b in list(root)? {
        if b.pending || Some(&b.id) == last.as_ref() {
            continue;
        }
        if kept < keep {
            kept += 1;
            continue;
        }
        root.remove_dir_all(&b.dir())
            .with_context(|| format!("removing the old backup {}", b.dir()))?;
        removed.push(b.id);
    }
    Ok(removed)
}

/// Remove staging directories of backups that were never completed (the
/// caller holds the run lock).
pub fn remove_staging_dirs(root: &Sysroot) -> Result<()> {
    for name in root.list_subdirs(BACKUP_DIR)? {
        if name.starts_with(STAGING_PREFIX) {
            tracing::info!("removing the incomplete backup {BACKUP_DIR}/{name}");
            root.remove_dir_all(&format!("{BACKUP_DIR}/{name}"))
                .with_context(|| format!("removing the incomplete backup {BACKUP_DIR}/{name}"))?;
        }
    }
    Ok(())
}

/// Write the copies and the index of `backup` into `dir`.
fn fill(root: &Sysroot, backup: &mut Backup, staging: &str, planned: &[Planned]) -> Result<()> {
    root.create_dir_all(staging, 0o700)?;
    let private = private_perms();
    for (path, wrote) in planned {
        let perms = root.perms(path)?;
        let mut original = Content::Absent;
        if perms.is_some() {
            let bytes = root.read_bytes(path)?;
            original = Content::of(Some(&bytes));
            let copy = copy_in(staging, path);
            let parent = copy.rsplit_once('/').map(|(d, _)| d).unwrap_or("/");
            root.create_dir_all(parent, 0o700)?;
            root.write_atomic(&copy, &bytes, private)
                .with_context(|| format!("backing up {path}"))?;
        }
        if perms.is_none() {
            let mut dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
            while !dir.is_empty() && !root.exists(dir) {
                if !backup.created_dirs.iter().any(|d| d == dir) {
                    backup.created_dirs.push(dir.to_string());
                }
                dir = dir.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
            }
        }
        backup.entries.push(Entry {
            path: path.to_string(),
            perms,
            original: Some(original),
            wrote: Some(Content::of(*wrote)),
        });
    }
    // Deepest first, so a parent is tried after its children.
    backup
        .created_dirs
        .sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
    let index = serde_json::to_vec_pretty(&*backup)?;
    root.write_atomic(&format!("{staging}/{INDEX}"), &index, private)?;
    root.sync_tree(staging)
}

/// What a restore of a backup would do to one of its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Already as in the backup.
    Unchanged,
    /// Holds what irsa-agent wrote: put the backup's copy back.
    Restore,
    /// irsa-agent created it and it still holds what it wrote: remove it.
    Remove,
    /// Changed since by something else (the reason): left alone, and the
    /// restore refused.
    ChangedSince(String),
}

impl State {
    /// The word for reports.
    pub fn action(&self) -> &'static str {
        match self {
            State::Unchanged => "unchanged",
            State::Restore => "restore",
            State::Remove => "remove",
            State::ChangedSince(_) => "changed-since",
        }
    }
}

/// A restore refused because files of the backup were changed since by
/// something else: nothing was changed.
#[derive(Debug)]
pub struct ChangedSince {
    pub backup: String,
    /// (path, what changed it)
    pub files: Vec<(String, String)>,
}

impl std::fmt::Display for ChangedSince {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let files: Vec<String> = self
            .files
            .iter()
            .map(|(p, why)| format!("{p} {why}"))
            .collect();
        write!(
            f,
            "not restoring backup {}: {} changed since by something else, not by irsa-agent; nothing was changed \
             (compare with the copies in {BACKUP_DIR}/{}/files and edit by hand if needed)",
            self.backup,
            files.join("; "),
            self.backup
        )
    }
}

impl std::error::Error for ChangedSince {}

/// What a restore of `backup` would do to each of its files, in its order.
/// Reads every file and copy; changes nothing.
pub fn examine(root: &Sysroot, backup: &Backup) -> Result<Vec<(String, State)>> {
    let later: Vec<Backup> = {
        let mut l: Vec<Backup> = list(root)?
            .into_iter()
            .filter(|b| b.seq > backup.seq)
            .collect();
        l.reverse();
        l
    };
    backup
        .entries
        .iter()
        .map(|e| Ok((e.path.clone(), entry_state(root, backup, e, &later)?)))
        .collect()
}

/// See [`examine`]; `later`: the backups made after `backup`, oldest first.
fn entry_state(root: &Sysroot, backup: &Backup, e: &Entry, later: &[Backup]) -> Result<State> {
    let now = Content::of(root.read_bytes_optional(&e.path)?.as_deref());
    let copy = match e.perms {
        Some(_) => Content::of(Some(
            &root
                .read_bytes_optional(&backup.copy_path(&e.path))?
                .ok_or_else(|| {
                    anyhow::anyhow!("backup {} is missing its copy of {}", backup.id, e.path)
                })?,
        )),
        None => Content::Absent,
    };
    if let Some(original) = &e.original {
        if *original != copy {
            anyhow::bail!(
                "backup {} is damaged: its copy of {} holds {copy}, the file held {original} when it was backed up",
                backup.id,
                e.path
            );
        }
    }
    if now == copy {
        // The content is as in the backup: at most the mode to put back.
        let mode_now = root.perms(&e.path)?.map(|p| p.mode);
        return Ok(if mode_now == e.perms.map(|p| p.mode) {
            State::Unchanged
        } else {
            State::Restore
        });
    }
    let Some(wrote) = &e.wrote else {
        return Ok(State::ChangedSince(
            "(the backup was made by an older irsa-agent that recorded no hash of what it wrote, so whether \
             the file was changed since cannot be told)"
                .to_string(),
        ));
    };
    // What irsa-agent wrote to the file, by this run and by later runs that
    // found it as irsa-agent had left it.
    let mut ours = vec![wrote.clone()];
    for b in later {
        for le in b.entries.iter().filter(|le| le.path == e.path) {
            if let (Some(o), Some(w)) = (&le.original, &le.wrote) {
                if ours.contains(o) && !ours.contains(w) {
                    ours.push(w.clone());
                }
            }
        }
    }
    if ours.contains(&now) {
        return Ok(match e.perms {
            Some(_) => State::Restore,
            None => State::Remove,
        });
    }
    let why = match &now {
        Content::Absent => format!("(was removed; irsa-agent wrote {wrote})"),
        Content::Sha256(_) => {
            let mtime = root
                .modified(&e.path)
                .ok()
                .flatten()
                .map(|t| format!(", modified {}", format_time(t)))
                .unwrap_or_default();
            format!("(holds {now}, irsa-agent wrote {wrote}{mtime})")
        }
    };
    Ok(State::ChangedSince(why))
}

/// `Err(ChangedSince)` when a file in `states` was changed since.
pub fn refuse_changed(backup: &Backup, states: &[(String, State)]) -> Result<()> {
    let files: Vec<(String, String)> = states
        .iter()
        .filter_map(|(p, s)| match s {
            State::ChangedSince(why) => Some((p.clone(), why.clone())),
            _ => None,
        })
        .collect();
    if files.is_empty() {
        return Ok(());
    }
    Err(ChangedSince {
        backup: backup.id.clone(),
        files,
    }
    .into())
}

/// Bytes to write instead of a backup's copy into files changed since by
/// something else: the current file with only the managed flags reversed.
pub type Overrides = std::collections::BTreeMap<String, Vec<u8>>;

/// Put every file of the backup back as it was (files the run created are
/// removed); files already as in the backup are not touched. Temporary
/// files a dead run left beside them go too. Returns the paths it changed.
///
/// Every file is checked first: when one was changed since by something
/// else (it holds neither the backup's bytes nor what irsa-agent wrote),
/// nothing is changed and the error is a [`ChangedSince`].
///
/// In the reverse order of the apply that made it (which writes key files
/// before the configuration naming them): the configuration is back before
/// a key it named is removed, so a crash part way never leaves a
/// configuration naming a missing key.
pub fn restore(root: &Sysroot, backup: &Backup) -> Result<Vec<String>> {
    restore_with(root, backup, &Overrides::new())
}

/// The states of [`examine`] with the files in `overrides` no longer
/// refused; refused when another file was changed since.
fn examine_with(
    root: &Sysroot,
    backup: &Backup,
    overrides: &Overrides,
) -> Result<Vec<(String, State)>> {
    let states = examine(root, backup)?;
    let refused: Vec<(String, State)> = states
        .iter()
        .filter(|(p, _)| !overrides.contains_key(p))
        .cloned()
        .collect();
    refuse_changed(backup, &refused)?;
    Ok(states)
}

/// [`restore`], writing the bytes of `overrides` into the files changed since.
fn restore_with(root: &Sysroot, backup: &Backup, overrides: &Overrides) -> Result<Vec<String>> {
    let states = examine_with(root, backup, overrides)?;
    remove_stale_temps(root, backup)?;
    let mut changed = Vec::new();
    for (e, (_, state)) in backup.entries.iter().zip(&states).rev() {
        match state {
            State::Unchanged => continue,
            State::ChangedSince(_) => {
                let Some(bytes) = overrides.get(&e.path) else {
                    continue;
                };
                let now = root.read_bytes_optional(&e.path)?;
                if now.as_ref() == Some(bytes) {
                    continue;
                }
                let perms = root
                    .perms(&e.path)?
                    .or(e.perms)
                    .context("internal error: no mode for the file to edit")?;
                root.write_atomic(&e.path, bytes, perms).with_context(|| {
                    format!("reversing the service-account flags in {}", e.path)
                })?;
            }
            State::Restore => {
                let perms = e
                    .perms
                    .context("internal error: restoring a file the backup has no copy of")?;
                let bytes = root
                    .read_bytes(&backup.copy_path(&e.path))
                    .with_context(|| {
                        format!("backup {} is missing its copy of {}", backup.id, e.path)
                    })?;
                root.write_atomic(&e.path, &bytes, perms)
                    .with_context(|| format!("restoring {}", e.path))?;
            }
            State::Remove => root.remove(&e.path)?,
        }
        changed.push(e.path.clone());
        crate::failpoint::hit("mid-restore")?;
    }
    for dir in &backup.created_dirs {
        root.remove_dir_if_empty(dir)?;
    }
    Ok(changed)
}

/// The bytes of the backup's copy of `path` (None: the run created it).
pub fn copy_of(root: &Sysroot, backup: &Backup, path: &str) -> Result<Option<Vec<u8>>> {
    match backup.entries.iter().find(|e| e.path == path) {
        Some(e) if e.perms.is_some() => Ok(Some(root.read_bytes(&backup.copy_path(path))?)),
        _ => Ok(None),
    }
}

/// Restore `chosen` after backing up what it overwrites (a backup made for
/// `reason`, returned), so nothing is lost; on failure the overwritten files
/// are put back. None when the files are already as in `chosen`. Refused,
/// changing nothing, when a file was changed since ([`ChangedSince`]).
pub fn restore_saving(root: &Sysroot, chosen: &Backup, reason: &str) -> Result<Option<Backup>> {
    restore_saving_with(root, chosen, reason, &Overrides::new())
}

/// [`restore_saving`], writing the bytes of `overrides` into the files
/// changed since instead of refusing.
pub fn restore_saving_with(
    root: &Sysroot,
    chosen: &Backup,
    reason: &str,
    overrides: &Overrides,
) -> Result<Option<Backup>> {
    let states = examine_with(root, chosen, overrides)?;
    if states.iter().all(|(_, s)| *s == State::Unchanged) {
        // Only temporary files and empty directories a dead run left.
        restore(root, chosen)?;
        return Ok(None);
    }
    // What the restore writes: the copies, the overrides, or no file.
    let copies: Vec<(String, Option<Vec<u8>>)> = chosen
        .entries
        .iter()
        .map(|e| {
            if let Some(bytes) = overrides.get(&e.path) {
                return Ok((e.path.clone(), Some(bytes.clone())));
            }
            Ok((e.path.clone(), copy_of(root, chosen, &e.path)?))
        })
        .collect::<Result<_>>()?;
    let planned: Vec<Planned> = copies
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_deref()))
        .collect();
    let saved = create(root, &planned, reason)
        .context("backing up the files the restore overwrites; nothing was changed")?;
    if let Err(e) = restore_with(root, chosen, overrides) {
        let undo = restore(root, &saved);
        return Err(e.context(match undo {
            Ok(_) => format!(
                "restoring backup {} failed; the files are as they were",
                chosen.id
            ),
            Err(u) => format!(
                "restoring backup {} failed, and putting the files back failed too ({u:#}); \
                 they are saved in {}",
                chosen.id,
                saved.dir()
            ),
        }));
    }
    Ok(Some(saved))
}

/// Remove the temporary files a dead run left in the directories of the
/// backup's files (they start with `.irsa-agent-`; the kubelet and k3s
/// ignore them, but they may hold key material).
fn remove_stale_temps(root: &Sysroot, backup: &Backup) -> Result<()> {
    let mut dirs: Vec<&str> = backup
        .entries
        .iter()
        .filter_map(|e| e.path.rsplit_once('/').map(|(d, _)| d))
        .collect();
    dirs.sort_unstable();
    dirs.dedup();
    for dir in dirs {
        for name in root.list_dir(dir)? {
            if name.starts_with(TEMP_PREFIX) {
                tracing::info!("removing {dir}/{name}, left by an interrupted run");
                root.remove(&format!("{dir}/{name}"))?;
            }
        }
    }
    Ok(())
}

/// The files of `backup` whose current state differs from the copy (or that
/// exist although the run created them): what a restore would change, or
/// refuse to change.
pub fn differing(root: &Sysroot, backup: &Backup) -> Result<Vec<String>> {
    Ok(examine(root, backup)?
        .into_iter()
        .filter(|(_, s)| *s != State::Unchanged)
        .map(|(p, _)| p)
        .collect())
}

fn save_index(root: &Sysroot, backup: &Backup) -> Result<()> {
    let index = serde_json::to_vec_pretty(backup)?;
    root.write_atomic(
        &format!("{}/{INDEX}", backup.dir()),
        &index,
        private_perms(),
    )
    .with_context(|| format!("updating backup {}", backup.id))
}

/// Record in the backup's index that `apply` undid its own change (or that a
/// later run undid an interrupted one).
pub fn mark_undone(root: &Sysroot, backup: &mut Backup) -> Result<()> {
    backup.undone = true;
    backup.pending = false;
    save_index(root, backup)
}

/// Record that a later run left the files of this interrupted apply as they
/// are because they were changed since by something else (`why`).
pub fn mark_superseded(root: &Sysroot, backup: &mut Backup, why: String) -> Result<()> {
    backup.superseded = Some(why);
    backup.pending = false;
    save_index(root, backup)
}

/// Record that the apply that made `backup` is about to restart the apiserver.
pub fn mark_restarting(root: &Sysroot, backup: &mut Backup) -> Result<()> {
    backup.restarted = true;
    save_index(root, backup)
}

/// Record that the apply that made `backup` has finished: it is no longer
/// an interrupted run to recover.
pub fn finish(root: &Sysroot, backup: &mut Backup) -> Result<()> {
    if !backup.pending {
        return Ok(());
    }
    backup.pending = false;
    save_index(root, backup)
}

/// The backup named `id` (a directory name under [`BACKUP_DIR`]).
pub fn load(root: &Sysroot, id: &str) -> Result<Backup> {
    if id.is_empty() || id.contains('/') || id.starts_with('.') {
        anyhow::bail!("--backup {id:?}: give the name of a directory under {BACKUP_DIR}");
    }
    let index = format!("{BACKUP_DIR}/{id}/{INDEX}");
    let bytes = root.read_bytes_optional(&index)?.ok_or_else(|| {
        anyhow::anyhow!("there is no complete backup {id:?}: {index} does not exist")
    })?;
    serde_json::from_slice(&bytes).with_context(|| format!("{index} is not a valid backup index"))
}

/// Every complete backup, newest first (by sequence number, then id). A
/// backup whose index cannot be read is reported (a warning naming it) and
/// skipped: one damaged backup never blocks a run.
pub fn list(root: &Sysroot) -> Result<Vec<Backup>> {
    let ids: Vec<String> = root
        .list_subdirs(BACKUP_DIR)?
        .into_iter()
        .filter(|name| !name.starts_with('.'))
        .collect();
    let mut out = Vec::new();
    for id in ids {
        let index = format!("{BACKUP_DIR}/{id}/{INDEX}");
        let read = root.read_bytes_optional(&index).and_then(|bytes| {
            bytes
                .map(|b| serde_json::from_slice::<Backup>(&b))
                .transpose()
                .map_err(anyhow::Error::from)
        });
        match read {
            Ok(Some(b)) if b.id == id => out.push(b),
            Ok(Some(b)) => warn_once(
                &index,
                format!(
                    "ignoring the backup {BACKUP_DIR}/{id}: {index} names another backup ({}); \
                     move it away or remove it",
                    b.id
                ),
            ),
            Ok(None) => {}
            Err(e) => warn_once(
                &index,
                format!(
                    "ignoring the backup {BACKUP_DIR}/{id}: {index} cannot be read ({e:#}); \
                     move it away or remove it"
                ),
            ),
        }
    }
    out.sort_by(|a, b| (b.seq, &b.id).cmp(&(a.seq, &a.id)));
    Ok(out)
}

/// Log `message` about `index` once per run (the backups are listed several times).
fn warn_once(index: &str, message: String) {
    static WARNED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    if !warned.iter().any(|w| w == index) {
        warned.push(index.to_string());
        tracing::warn!("{message}");
    }
}

/// The most recent complete backup made by an `apply` that took effect (or
/// may have: one that was interrupted).
pub fn latest(root: &Sysroot) -> Result<Option<Backup>> {
    Ok(list(root)?
        .into_iter()
        .find(|b| b.reason == REASON_APPLY && !b.undone && b.superseded.is_none()))
}

/// The backups of applies that were interrupted before they finished,
/// newest first (normally at most one: the next apply recovers it).
pub fn interrupted(root: &Sysroot) -> Result<Vec<Backup>> {
    Ok(list(root)?
        .into_iter()
        .filter(|b| b.reason == REASON_APPLY && b.pending && !b.undone)
        .collect())
}

/// `2026-11-25 14:05:01 UTC`.
fn format_time(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `20261125T140501.123456Z`: sortable, unique per microsecond.
fn timestamp_id() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_micros()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_417), (2025, 11, 25));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn backup_and_restore_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let root = Sysroot::new(dir.path()).unwrap();
        root.create_dir_all("/etc/k", 0o755).unwrap();
        let (uid, gid) = default_owner();
        root.write_atomic(
            "/etc/k/a",
            b"old",
            Perms {
                mode: 0o640,
                uid,
                gid,
            },
        )
        .unwrap();
        let b = create(
            &root,
            &[
                ("/etc/k/a", Some(&b"changed"[..])),
                ("/etc/k/new", Some(&b"created"[..])),
            ],
            REASON_APPLY,
        )
        .unwrap();
        root.write_atomic(
            "/etc/k/a",
            b"changed",
            Perms {
                mode: 0o640,
                uid,
                gid,
            },
        )
        .unwrap();
        root.write_atomic(
            "/etc/k/new",
            b"created",
            Perms {
                mode: 0o600,
                uid,
                gid,
            },
        )
        .unwrap();
        assert_eq!(latest(&root).unwrap().as_ref(), Some(&b));
        assert_eq!(load(&root, &b.id).unwrap(), b);
        assert!(load(&root, "../x").is_err());
        // A rollback's own backup is never "the last backup".
        let r = create(&root, &[("/etc/k/a", Some(&b"old"[..]))], REASON_ROLLBACK).unwrap();
        assert_ne!(r.id, b.id);
        assert_eq!(latest(&root).unwrap().as_ref(), Some(&b));
        assert_eq!(differing(&root, &b).unwrap(), ["/etc/k/a", "/etc/k/new"]);
        // Reverse order: what apply wrote last is put back first.
        assert_eq!(restore(&root, &b).unwrap(), ["/etc/k/new", "/etc/k/a"]);
        assert!(
            restore(&root, &b).unwrap().is_empty(),
            "nothing left to change"
        );
        assert!(differing(&root, &b).unwrap().is_empty());
        assert_eq!(std::fs::read(root.path("/etc/k/a")).unwrap(), b"old");
        assert_eq!(root.perms("/etc/k/a").unwrap().unwrap().mode, 0o640);
        assert!(!root.exists("/etc/k/new"));
        assert_eq!(
            root.list_dir("/etc/k").unwrap(),
            ["a"],
            "nothing else left behind"
        );
        // An apply that undid itself is not "the last backup" either.
        let mut b = b;
        mark_undone(&root, &mut b).unwrap();
        assert!(load(&root, &b.id).unwrap().undone);
        assert_eq!(latest(&root).unwrap(), None);
    }

    fn write(root: &Sysroot, path: &str, bytes: &[u8]) {
        let (uid, gid) = default_owner();
        let perms = Perms {
            mode: 0o644,
            uid,
            gid,
        };
        root.write_atomic(path, bytes, perms).unwrap();
    }

    #[test]
    fn an_incomplete_backup_is_never_used_and_is_cleared_by_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let root = Sysroot::new(dir.path()).unwrap();
        root.create_dir_all("/etc/k", 0o755).unwrap();
        write(&root, "/etc/k/a", b"old");
        // What a run killed while backing up leaves: a staging directory,
        // even one with an index.
        let staging = format!("{BACKUP_DIR}/{STAGING_PREFIX}20990101T000000.000000Z");
        root.create_dir_all(&format!("{staging}/files/etc/k"), 0o700)
            .unwrap();
        write(&root, &format!("{staging}/files/etc/k/a"), b"ol");
        let index = Backup {
            id: "20990101T000000.000000Z".into(),
            seq: 99,
            superseded: None,
            reason: REASON_APPLY.into(),
            entries: vec![],
            undone: false,
            pending: true,
            restarted: false,
            created_dirs: vec![],
        };
        write(
            &root,
            &format!("{staging}/{INDEX}"),
            &serde_json::to_vec(&index).unwrap(),
        );
        assert_eq!(latest(&root).unwrap(), None);
        assert!(interrupted(&root).unwrap().is_empty());
        assert!(list(&root).unwrap().is_empty());
        assert!(load(&root, &format!("{STAGING_PREFIX}20990101T000000.000000Z")).is_err());
        let b = create(&root, &[("/etc/k/a", Some(&b"new"[..]))], REASON_APPLY).unwrap();
        assert!(!root.exists(&staging), "the stale staging dir is removed");
        assert_eq!(
            std::fs::read_dir(root.path(BACKUP_DIR)).unwrap().count(),
            1,
            "only the new backup, no staging dir of its own left"
        );
        assert_eq!(
            root.read_bytes(&b.copy_path("/etc/k/a")).unwrap(),
            b"old",
            "the whole file"
        );
    }

    #[test]
    fn an_apply_backup_is_pending_until_finished_or_undone() {
        let dir = tempfile::tempdir().unwrap();
        let root = Sysroot::new(dir.path()).unwrap();
        root.create_dir_all("/etc/k", 0o755).unwrap();
        write(&root, "/etc/k/a", b"old");
        let mut b = create(&root, &[("/etc/k/a", Some(&b"new"[..]))], REASON_APPLY).unwrap();
        assert!(b.pending && load(&root, &b.id).unwrap().pending);
        assert_eq!(interrupted(&root).unwrap(), [b.clone()]);
        assert_eq!(
            latest(&root).unwrap().as_ref(),
            Some(&b),
            "rollback can use it"
        );
        finish(&root, &mut b).unwrap();
        assert!(!load(&root, &b.id).unwrap().pending);
        assert!(interrupted(&root).unwrap().is_empty());
        assert_eq!(latest(&root).unwrap().as_ref(), Some(&b));

        let mut c = create(&root, &[("/etc/k/a", Some(&b"new"[..]))], REASON_APPLY).unwrap();
        assert_eq!(interrupted(&root).unwrap(), [c.clone()]);
        mark_undone(&root, &mut c).unwrap();
        assert!(interrupted(&root).unwrap().is_empty());
        assert_eq!(latest(&root).unwrap().as_ref(), Some(&b));
        // Other reasons are never pending.
        for reason in [REASON_ROLLBACK, REASON_RECOVER] {
            assert!(
                !create(&root, &[("/etc/k/a", Some(&b"new"[..]))], reason)
                    .unwrap()
                    .pending
            );
        }
        assert!(interrupted(&root).unwrap().is_empty());
        assert_eq!(latest(&root).unwrap().as_ref(), Some(&b));
    }

    #[test]
    fn restore_saving_keeps_what_it_overwrites_and_clears_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = Sysroot::new(dir.path()).unwrap();
        root.create_dir_all("/etc/k", 0o755).unwrap();
        write(&root, "/etc/k/a", b"old");
        let b = create(
            &root,
            &[
                ("/etc/k/a", Some(&b"new"[..])),
                ("/etc/k/new", Some(&b"created"[..])),
            ],
            REASON_APPLY,
        )
        .unwrap();
        // Nothing differs, but a dead run's temp file is there.
        write(&root, "/etc/k/.irsa-agent-XyZ123", b"half");
        assert_eq!(restore_saving(&root, &b, REASON_RECOVER).unwrap(), None);
        assert_eq!(root.list_dir("/etc/k").unwrap(), ["a"]);

        write(&root, "/etc/k/a", b"new");
        write(&root, "/etc/k/new", b"created");
        write(&root, "/etc/k/.irsa-agent-AbC456", b"hal");
        let saved = restore_saving(&root, &b, REASON_RECOVER)
            .unwrap()
            .expect("something differed");
        assert_eq!(root.list_dir("/etc/k").unwrap(), ["a"]);
        assert_eq!(root.read_bytes("/etc/k/a").unwrap(), b"old");
        assert_eq!(saved.reason, REASON_RECOVER);
        assert_eq!(
            root.read_bytes(&saved.copy_path("/etc/k/a")).unwrap(),
            b"new"
        );
        assert_eq!(
            root.read_bytes(&saved.copy_path("/etc/k/new")).unwrap(),
            b"created"
        );
    }

    #[test]
    fn a_file_changed_since_by_something_else_stops_the_whole_restore() {
        let dir = tempfile::tempdir().unwrap();
        let root = Sysroot::new(dir.path()).unwrap();
        root.create_dir_all("/etc/k", 0o755).unwrap();
        write(&root, "/etc/k/conf", b"v1 old flags");
        let b = create(
            &root,
            &[
                ("/etc/k/key", Some(&b"key"[..])),
                ("/etc/k/conf", Some(&b"v1 new flags"[..])),
            ],
            REASON_APPLY,
        )
        .unwrap();
        write(&root, "/etc/k/key", b"key");
        write(&root, "/etc/k/conf", b"v2 new flags");
        let states = examine(&root, &b).unwrap();
        assert_eq!(states[0], ("/etc/k/key".to_string(), State::Remove));
        assert!(
            matches!(&states[1].1, State::ChangedSince(why) if why.contains("irsa-agent wrote sha256")),
            "{states:?}"
        );
        for err in [
            restore(&root, &b).unwrap_err(),
            restore_saving(&root, &b, REASON_ROLLBACK).unwrap_err(),
        ] {
            let c = err.downcast_ref::<ChangedSince>().expect("a ChangedSince");
            assert_eq!(c.files.len(), 1);
            assert_eq!(c.files[0].0, "/etc/k/conf");
        }
        // Nothing was touched, not even the file that could have been.
        assert_eq!(root.read_bytes("/etc/k/key").unwrap(), b"key");
        assert_eq!(root.read_bytes("/etc/k/conf").unwrap(), b"v2 new flags");
        assert_eq!(
            list(&root).unwrap().len(),
            1,
            "no backup of a refused restore"
        );
        // Removed since: refused as well.
        root.remove("/etc/k/conf").unwrap();
        assert!(matches!(
            &examine(&root, &b).unwrap()[1].1,
            State::ChangedSince(why) if why.contains("was removed")
        ));
        // A damaged copy is never put back.
        write(&root, "/etc/k/conf", b"v1 new flags");
        write(&root, &b.copy_path("/etc/k/conf"), b"v1 old flagz");
        let e = format!("{:#}", examine(&root, &b).unwrap_err());
        assert!(e.contains("damaged") && e.contains("/etc/k/conf"), "{e}");
    }

    #[test]
    fn what_later_runs_wrote_over_irsa_agents_own_bytes_is_irsa_agents_too() {
        let dir = tempfile::tempdir().unwrap();
        let root = Sysroot::new(dir.path()).unwrap();
        root.create_dir_all("/etc/k", 0o755).unwrap();
        write(&root, "/etc/k/conf", b"orig");
        let first = create(&root, &[("/etc/k/conf", Some(&b"one"[..]))], REASON_APPLY).unwrap();
        write(&root, "/etc/k/conf", b"one");
        let second = create(&root, &[("/etc/k/conf", Some(&b"two"[..]))], REASON_APPLY).unwrap();
        write(&root, "/etc/k/conf", b"two");
        assert!(second.seq > first.seq);
        assert_eq!(differing(&root, &first).unwrap(), ["/etc/k/conf"]);
        assert_eq!(examine(&root, &first).unwrap()[0].1, State::Restore);
        // A foreign change in between breaks the chain.
        write(&root, "/etc/k/conf", b"foreign");
        let third = create(&root, &[("/etc/k/conf", Some(&b"three"[..]))], REASON_APPLY).unwrap();
        write(&root, "/etc/k/conf", b"three");
        assert_eq!(examine(&root, &third).unwrap()[0].1, State::Restore);
        assert!(matches!(
            examine(&root, &first).unwrap()[0].1,
            State::ChangedSince(_)
        ));
        restore(&root, &third).unwrap();
        assert_eq!(root.read_bytes("/etc/k/conf").unwrap(), b"foreign");
    }

    #[test]
    fn prune_keeps_the_newest_finished_every_pending_and_the_last_apply() {
        let dir = tempfile::tempdir().unwrap();
        let root = Sysroot::new(dir.path()).unwrap();
        root.create_dir_all("/etc/k", 0o755).unwrap();
        write(&root, "/etc/k/a", b"old");
        let a = |reason| create(&root, &[("/etc/k/a", Some(&b"new"[..]))], reason).unwrap();
        let mut made = Vec::new();
        let pending_old = a(REASON_APPLY); // an interrupted apply, long ago
        let mut last_apply = a(REASON_APPLY);
        finish(&root, &mut last_apply).unwrap();
        for _ in 0..4 {
            made.push(a(REASON_ROLLBACK));
        }
        let removed = prune(&root, 2).unwrap();
        let left: Vec<String> = list(&root).unwrap().into_iter().map(|b| b.id).collect();
        assert_eq!(
            left,
            [
                made[3].id.clone(),
                made[2].id.clone(),
                last_apply.id.clone(),
                pending_old.id.clone()
            ],
            "newest first"
        );
        assert_eq!(removed, [made[1].id.clone(), made[0].id.clone()]);
        assert!(!root.exists(&made[0].dir()));
        // Sequence numbers go on from the highest left.
        assert_eq!(a(REASON_APPLY).seq, made[3].seq + 1);
    }

    #[test]
    fn a_damaged_index_is_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let root = Sysroot::new(dir.path()).unwrap();
        root.create_dir_all("/etc/k", 0o755).unwrap();
        write(&root, "/etc/k/a", b"old");
        let b = create(&root, &[("/etc/k/a", Some(&b"new"[..]))], REASON_APPLY).unwrap();
        let c = create(&root, &[("/etc/k/a", Some(&b"new"[..]))], REASON_APPLY).unwrap();
        write(&root, &format!("{}/{INDEX}", c.dir()), b"{not json");
        assert_eq!(list(&root).unwrap(), std::slice::from_ref(&b));
        assert_eq!(interrupted(&root).unwrap(), [b]);
        assert!(load(&root, &c.id).is_err());
        assert_eq!(prune(&root, 1).unwrap(), Vec::<String>::new());
        assert!(root.exists(&c.dir()), "never pruned");
    }
}
