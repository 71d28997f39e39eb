//! Backups of every file `apply` is about to change, under
//! `/var/lib/irsa-agent/backups/<timestamp>/`, never next to the file (the
//! kubelet runs every file in the manifests directory as a static pod).

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::fs::{default_owner, Perms, Sysroot};

pub const BACKUP_DIR: &str = "/var/lib/irsa-agent/backups";
const INDEX: &str = "index.json";

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

impl Backup {
    /// Node path of the backup directory.
    pub fn dir(&self) -> String {
        format!("{BACKUP_DIR}/{}", self.id)
    }

    fn copy_path(&self, path: &str) -> String {
        format!("{}/files{}", self.dir(), path)
    }
}

/// Copy `paths` (those that exist) into a new backup directory; the index is
/// written last, so a backup without one is incomplete and ignored.
pub fn create(root: &Sysroot, paths: &[String], reason: &str) -> Result<Backup> {
    let id = timestamp_id();
    let mut backup = Backup {
        id,
        reason: reason.to_string(),
        entries: Vec::new(),
        created_dirs: Vec::new(),
        undone: false,
    };
    root.create_dir_all(BACKUP_DIR, 0o700)?;
    root.create_dir_all(&backup.dir(), 0o700)?;
    // A backup that could not be completed (a full disk) leaves nothing behind.
    fill(root, &mut backup, paths).inspect_err(|_| {
        if let Err(e) = discard(root, &backup) {
            tracing::warn!("{e:#}");
        }
    })?;
    Ok(backup)
}

/// Remove a backup directory and everything in it.
pub fn discard(root: &Sysroot, backup: &Backup) -> Result<()> {
    root.remove_dir_all(&backup.dir())
        .with_context(|| format!("removing the unused backup {}", backup.id))
}

fn fill(root: &Sysroot, backup: &mut Backup, paths: &[String]) -> Result<()> {
    let (uid, gid) = default_owner();
    let private = Perms {
        mode: 0o600,
        uid,
        gid,
    };
    for path in paths {
        let perms = root.perms(path)?;
        if perms.is_some() {
            let bytes = root.read_bytes(path)?;
            let copy = backup.copy_path(path);
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
    let index = serde_json::to_vec_pretty(&backup)?;
    root.write_atomic(&format!("{}/{INDEX}", backup.dir()), &index, private)?;
    Ok(())
}

/// Put every file of the backup back as it was (files the run created are removed).
pub fn restore(root: &Sysroot, backup: &Backup) -> Result<()> {
    for e in &backup.entries {
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
    }
    for dir in &backup.created_dirs {
        root.remove_dir_if_empty(dir)?;
    }
    Ok(())
}

/// The files of `backup` whose current state differs from the copy (or that
/// exist although the run created them): what a restore would change.
pub fn differing(root: &Sysroot, backup: &Backup) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in &backup.entries {
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
        if !same {
            out.push(e.path.clone());
        }
    }
    Ok(out)
}

/// Record in the backup's index that `apply` undid its own change.
pub fn mark_undone(root: &Sysroot, backup: &mut Backup) -> Result<()> {
    backup.undone = true;
    let (uid, gid) = default_owner();
    let index = serde_json::to_vec_pretty(&*backup)?;
    root.write_atomic(
        &format!("{}/{INDEX}", backup.dir()),
        &index,
        Perms {
            mode: 0o600,
            uid,
            gid,
        },
    )
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

/// The most recent complete backup made by an `apply` that took effect.
pub fn latest(root: &Sysroot) -> Result<Option<Backup>> {
    let dir = root.host_path(BACKUP_DIR)?;
    let mut ids: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("listing {BACKUP_DIR}")),
    };
    ids.sort();
    for id in ids.iter().rev() {
        if let Some(bytes) = root.read_bytes_optional(&format!("{BACKUP_DIR}/{id}/{INDEX}"))? {
            let b: Backup = serde_json::from_slice(&bytes)
                .with_context(|| format!("{BACKUP_DIR}/{id}/{INDEX}"))?;
            if b.reason == REASON_APPLY && !b.undone {
                return Ok(Some(b));
            }
        }
    }
    Ok(None)
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
        restore(&root, &b).unwrap();
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
}
