//! Backups of every file `apply` is about to change, under
//! `/var/lib/irsa-agent/backups/<timestamp>/`, never next to the file (the
//! kubelet runs every file in the manifests directory as a static pod).
//!
//! Crash safety: a backup is made in a hidden staging directory and renamed
//! into place once every copy and the index are written and synced, so a
//! backup that exists is complete. An `apply` backup stays `pending` until
//! that apply has finished (succeeded, or undone its change): a pending
//! backup found by a later run is an apply that was interrupted (crash,
//! SIGKILL, power loss), and its copies hold the files as they were before it.
//! Every function that writes here runs under the run lock.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::fs::{default_owner, Perms, Sysroot};

pub use crate::paths::BACKUP_DIR;
const INDEX: &str = "index.json";
/// Where a backup is made before it is renamed to its id.
const STAGING_PREFIX: &str = ".partial-";
/// The temporary files of `fs::write_file_atomic`: left behind only by a run
/// that died while writing.
const TEMP_PREFIX: &str = ".irsa-agent-";

/// One file as it was before a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Node path of the file.
    pub path: String,
    /// Its mode and owner, None when the file did not exist (the run created it).
    pub perms: Option<Perms>,
}

/// A completed backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    pub id: String,
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

/// Copy `paths` (those that exist) into a new backup: made in a staging
/// directory, index last, synced, then renamed to its id, so a backup is
/// either complete or absent. Staging directories left by a run that died
/// are removed first (the caller holds the run lock).
pub fn create(root: &Sysroot, paths: &[String], reason: &str) -> Result<Backup> {
    let id = timestamp_id();
    let mut backup = Backup {
        id,
        reason: reason.to_string(),
        entries: Vec::new(),
        created_dirs: Vec::new(),
        undone: false,
        pending: reason == REASON_APPLY,
        restarted: false,
    };
    root.create_dir_all(BACKUP_DIR, 0o700)?;
    remove_staging_dirs(root)?;
    let staging = format!("{BACKUP_DIR}/{STAGING_PREFIX}{}", backup.id);
    let made = fill(root, &mut backup, &staging, paths).and_then(|()| {
        let (from, to) = (
            root.host_path_nofollow(&staging)?,
            root.host_path_nofollow(&backup.dir())?,
        );
        let parent = root.host_path(BACKUP_DIR)?;
        std::fs::rename(&from, &to)
            .and_then(|()| std::fs::File::open(&parent)?.sync_all())
            .with_context(|| format!("renaming {staging} to {}", backup.dir()))
    });
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

/// Remove staging directories of backups that were never completed (the
/// caller holds the run lock).
pub fn remove_staging_dirs(root: &Sysroot) -> Result<()> {
    let rd = match std::fs::read_dir(root.host_path(BACKUP_DIR)?) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("listing {BACKUP_DIR}")),
    };
    for entry in rd.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(STAGING_PREFIX) {
            tracing::info!("removing the incomplete backup {BACKUP_DIR}/{name}");
            std::fs::remove_dir_all(entry.path())
                .with_context(|| format!("removing the incomplete backup {BACKUP_DIR}/{name}"))?;
        }
    }
    Ok(())
}

/// Write the copies and the index of `backup` into `dir`.
fn fill(root: &Sysroot, backup: &mut Backup, staging: &str, paths: &[String]) -> Result<()> {
    root.create_dir_all(staging, 0o700)?;
    let private = private_perms();
    for path in paths {
        let perms = root.perms(path)?;
        if perms.is_some() {
            let bytes = root.read_bytes(path)?;
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
            path: path.clone(),
            perms,
        });
    }
    // Deepest first, so a parent is tried after its children.
    backup
        .created_dirs
        .sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
    let index = serde_json::to_vec_pretty(&*backup)?;
    root.write_atomic(&format!("{staging}/{INDEX}"), &index, private)?;
    sync_dirs(&root.host_path(staging)?).with_context(|| format!("syncing {staging}"))
}

/// fsync `dir` and every directory below it (the new directories' entries).
fn sync_dirs(dir: &std::path::Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            sync_dirs(&entry.path())?;
        }
    }
    std::fs::File::open(dir)?.sync_all()
}

/// Put every file of the backup back as it was (files the run created are
/// removed); files already as in the backup are not touched. Temporary
/// files a dead run left beside them go too. Returns the paths it changed.
///
/// In the reverse order of the apply that made it (which writes key files
/// before the configuration naming them): the configuration is back before
/// a key it named is removed, so a crash part way never leaves a
/// configuration naming a missing key.
pub fn restore(root: &Sysroot, backup: &Backup) -> Result<Vec<String>> {
    remove_stale_temps(root, backup)?;
    let mut changed = Vec::new();
    for e in backup.entries.iter().rev() {
        if !entry_differs(root, backup, e)? {
            continue;
        }
        changed.push(e.path.clone());
        match e.perms {
            Some(perms) => {
                let bytes = root
                    .read_bytes(&backup.copy_path(&e.path))
                    .with_context(|| {
                        format!("backup {} is missing its copy of {}", backup.id, e.path)
                    })?;
                // A file the run did not get to change is left alone (it may
                // not be writable: that is often why the run failed).
                if root.read_bytes_optional(&e.path)?.as_ref() == Some(&bytes)
                    && root.perms(&e.path)? == Some(perms)
                {
                    continue;
                }
                root.write_atomic(&e.path, &bytes, perms)
                    .with_context(|| format!("restoring {}", e.path))?;
            }
            None => root.remove(&e.path)?,
        }
        crate::failpoint::hit("mid-restore")?;
    }
    for dir in &backup.created_dirs {
        root.remove_dir_if_empty(dir)?;
    }
    Ok(changed)
}

/// Restore `chosen` after backing up what it overwrites (a backup made for
/// `reason`, returned), so nothing is lost; on failure the overwritten files
/// are put back. None when the files are already as in `chosen`.
pub fn restore_saving(root: &Sysroot, chosen: &Backup, reason: &str) -> Result<Option<Backup>> {
    if differing(root, chosen)?.is_empty() {
        // Only temporary files and empty directories a dead run left.
        restore(root, chosen)?;
        return Ok(None);
    }
    let paths: Vec<String> = chosen.entries.iter().map(|e| e.path.clone()).collect();
    let saved = create(root, &paths, reason)
        .context("backing up the files the restore overwrites; nothing was changed")?;
    if let Err(e) = restore(root, chosen) {
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

/// Does the file of entry `e` differ from its state in `backup`?
fn entry_differs(root: &Sysroot, backup: &Backup, e: &Entry) -> Result<bool> {
    let now = root.read_bytes_optional(&e.path)?;
    let same = match (e.perms, now) {
        (None, None) => true,
        (Some(perms), Some(bytes)) => {
            root.read_bytes_optional(&backup.copy_path(&e.path))?
                .as_ref()
                == Some(&bytes)
                && root.perms(&e.path)?.map(|p| p.mode) == Some(perms.mode)
        }
        _ => false,
    };
    Ok(!same)
}

/// The files of `backup` whose current state differs from the copy (or that
/// exist although the run created them): what a restore would change.
pub fn differing(root: &Sysroot, backup: &Backup) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in &backup.entries {
        if entry_differs(root, backup, e)? {
            out.push(e.path.clone());
        }
    }
    Ok(out)
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
    serde_json::from_slice(&bytes).with_context(|| index.clone())
}

/// Every complete backup, newest first.
pub fn list(root: &Sysroot) -> Result<Vec<Backup>> {
    let dir = root.host_path(BACKUP_DIR)?;
    let mut ids: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| !name.starts_with('.'))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {BACKUP_DIR}")),
    };
    ids.sort();
    let mut out = Vec::new();
    for id in ids.iter().rev() {
        if let Some(bytes) = root.read_bytes_optional(&format!("{BACKUP_DIR}/{id}/{INDEX}"))? {
            let b: Backup = serde_json::from_slice(&bytes)
                .with_context(|| format!("{BACKUP_DIR}/{id}/{INDEX}"))?;
            out.push(b);
        }
    }
    Ok(out)
}

/// The most recent complete backup made by an `apply` that took effect (or
/// may have: one that was interrupted).
pub fn latest(root: &Sysroot) -> Result<Option<Backup>> {
    Ok(list(root)?
        .into_iter()
        .find(|b| b.reason == REASON_APPLY && !b.undone))
}

/// The backups of applies that were interrupted before they finished,
/// newest first (normally at most one: the next apply recovers it).
pub fn interrupted(root: &Sysroot) -> Result<Vec<Backup>> {
    Ok(list(root)?
        .into_iter()
        .filter(|b| b.reason == REASON_APPLY && b.pending && !b.undone)
        .collect())
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
            &["/etc/k/a".into(), "/etc/k/new".into()],
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
        let r = create(&root, &["/etc/k/a".into()], REASON_ROLLBACK).unwrap();
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
        let b = create(&root, &["/etc/k/a".into()], REASON_APPLY).unwrap();
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
        let mut b = create(&root, &["/etc/k/a".into()], REASON_APPLY).unwrap();
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

        let mut c = create(&root, &["/etc/k/a".into()], REASON_APPLY).unwrap();
        assert_eq!(interrupted(&root).unwrap(), [c.clone()]);
        mark_undone(&root, &mut c).unwrap();
        assert!(interrupted(&root).unwrap().is_empty());
        assert_eq!(latest(&root).unwrap().as_ref(), Some(&b));
        // Other reasons are never pending.
        for reason in [REASON_ROLLBACK, REASON_RECOVER] {
            assert!(!create(&root, &["/etc/k/a".into()], reason).unwrap().pending);
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
            &["/etc/k/a".into(), "/etc/k/new".into()],
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
}
