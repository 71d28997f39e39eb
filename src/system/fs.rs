//! The node's filesystem, seen through a root directory (`/`, or `--root`).
//! Callers use node paths (`/etc/kubernetes/...`); only this module joins them
//! to the root.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// A root directory and the node paths under it.
#[derive(Debug, Clone)]
pub struct Sysroot {
    root: PathBuf,
}

/// Mode and owner of an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Perms {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Sysroot {
    /// `root` must be an existing directory.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let meta = fs_err::metadata(&root).with_context(|| format!("--root {}", root.display()))?;
        if !meta.is_dir() {
            bail!("--root {} is not a directory", root.display());
        }
        Ok(Sysroot { root })
    }

    /// Is this the real root of the machine?
    pub fn is_host(&self) -> bool {
        self.root == Path::new("/")
    }

    pub fn display_root(&self) -> String {
        self.root.display().to_string()
    }

    /// The host path of a node path.
    pub fn path(&self, node_path: &str) -> PathBuf {
        self.root.join(node_path.trim_start_matches('/'))
    }

    pub fn exists(&self, node_path: &str) -> bool {
        self.path(node_path).symlink_metadata().is_ok()
    }

    /// The file's text, or None when it does not exist.
    pub fn read_optional(&self, node_path: &str) -> Result<Option<String>> {
        match self.read_bytes_optional(node_path)? {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes)
                .map(Some)
                .with_context(|| format!("{node_path} is not UTF-8 text")),
        }
    }

    pub fn read_bytes_optional(&self, node_path: &str) -> Result<Option<Vec<u8>>> {
        match std::fs::read(self.path(node_path)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {node_path}")),
        }
    }

    pub fn read_bytes(&self, node_path: &str) -> Result<Vec<u8>> {
        std::fs::read(self.path(node_path)).with_context(|| format!("reading {node_path}"))
    }

    /// Names of the entries of a directory, sorted; empty when it does not exist.
    pub fn list_dir(&self, node_dir: &str) -> Result<Vec<String>> {
        let p = self.path(node_dir);
        let rd = match std::fs::read_dir(&p) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("listing {node_dir}")),
        };
        let mut names = Vec::new();
        for entry in rd {
            let entry = entry.with_context(|| format!("listing {node_dir}"))?;
            if entry
                .file_type()
                .map(|t| t.is_file() || t.is_symlink())
                .unwrap_or(false)
            {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    pub fn perms(&self, node_path: &str) -> Result<Option<Perms>> {
        match std::fs::metadata(self.path(node_path)) {
            Ok(m) => Ok(Some(Perms {
                mode: m.permissions().mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("inspecting {node_path}")),
        }
    }

    /// Create a directory and its parents (mode 0755 for new ones; `mode` for the last).
    pub fn create_dir_all(&self, node_dir: &str, mode: u32) -> Result<()> {
        let p = self.path(node_dir);
        if p.is_dir() {
            return Ok(());
        }
        fs_err::create_dir_all(&p)?;
        fs_err::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
        Ok(())
    }

    /// Replace (or create) a file atomically: a temporary file in the same
    /// directory, created 0600, written, given its final mode and owner,
    /// fsynced, renamed over the target, then the directory fsynced. A crash
    /// leaves the old file or the new one, never a mix. An existing file keeps
    /// its mode and owner; a new one gets `perms`.
    pub fn write_atomic(&self, node_path: &str, bytes: &[u8], perms: Perms) -> Result<()> {
        write_file_atomic(&self.path(node_path), node_path, bytes, perms, true)
    }

    /// Remove a file (and fsync its directory); a missing file is fine.
    pub fn remove(&self, node_path: &str) -> Result<()> {
        let p = self.path(node_path);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("removing {node_path}")),
        }
        if let Some(dir) = p.parent() {
            sync_dir(dir).with_context(|| format!("removing {node_path}"))?;
        }
        Ok(())
    }
}

impl Sysroot {
    /// Remove `node_dir` if it is empty; a directory that is not empty (or
    /// gone) is left alone.
    pub fn remove_dir_if_empty(&self, node_dir: &str) -> Result<()> {
        match std::fs::remove_dir(self.path(node_dir)) {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::DirectoryNotEmpty
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e).with_context(|| format!("removing the directory {node_dir}")),
        }
    }
}

/// The one atomic write of the program: a temporary file in the target's
/// directory (created 0600, so key material never sits in a looser file),
/// written, given `perms`, fsynced, renamed into place (without `replace`:
/// linked, failing if the target exists, checked atomically), then the
/// directory fsynced. `name` is how errors call the file.
pub fn write_file_atomic(
    target: &Path,
    name: &str,
    bytes: &[u8],
    perms: Perms,
    replace: bool,
) -> Result<()> {
    if target
        .symlink_metadata()
        .map(|m| m.file_type().is_symlink())
        .unwrap_or(false)
    {
        bail!("{name} is a symbolic link; irsa-agent does not write through links");
    }
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let ctx = || format!("writing {name}");
    let mut tmp = tempfile::Builder::new()
        .prefix(".irsa-agent-")
        .tempfile_in(dir)
        .with_context(ctx)?;
    let (head, tail) = bytes.split_at(bytes.len() / 2);
    tmp.write_all(head).with_context(ctx)?;
    crate::failpoint::mid_write(name)?;
    tmp.write_all(tail).with_context(ctx)?;
    let f = tmp.as_file();
    f.set_permissions(std::fs::Permissions::from_mode(perms.mode))
        .with_context(ctx)?;
    let meta = f.metadata().with_context(ctx)?;
    if meta.uid() != perms.uid || meta.gid() != perms.gid {
        nix::unistd::fchown(
            std::os::fd::AsRawFd::as_raw_fd(f),
            Some(nix::unistd::Uid::from_raw(perms.uid)),
            Some(nix::unistd::Gid::from_raw(perms.gid)),
        )
        .with_context(|| format!("{name}: setting owner {}:{}", perms.uid, perms.gid))?;
    }
    f.sync_all().with_context(ctx)?;
    if replace {
        tmp.persist(target).map_err(|e| e.error).with_context(ctx)?;
    } else {
        tmp.persist_noclobber(target).map_err(|e| {
            if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                anyhow::anyhow!("{name}: already exists (pass --force to overwrite)")
            } else {
                anyhow::Error::new(e.error).context(ctx())
            }
        })?;
    }
    sync_dir(dir).with_context(ctx)?;
    Ok(())
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Owner for files irsa-agent creates: root on a real node, the current user
/// under `--root`.
pub fn default_owner() -> (u32, u32) {
    (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_keeps_mode_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = Sysroot::new(dir.path()).unwrap();
        root.create_dir_all("/etc/x", 0o755).unwrap();
        let (uid, gid) = default_owner();
        root.write_atomic(
            "/etc/x/f",
            b"one",
            Perms {
                mode: 0o640,
                uid,
                gid,
            },
        )
        .unwrap();
        let p = root.perms("/etc/x/f").unwrap().unwrap();
        assert_eq!(p.mode, 0o640);
        root.write_atomic("/etc/x/f", b"two", p).unwrap();
        assert_eq!(std::fs::read(root.path("/etc/x/f")).unwrap(), b"two");
        assert_eq!(root.list_dir("/etc/x").unwrap(), ["f"]);
    }

    #[test]
    fn refuses_to_write_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let root = Sysroot::new(dir.path()).unwrap();
        std::fs::write(dir.path().join("real"), "x").unwrap();
        std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("link")).unwrap();
        let (uid, gid) = default_owner();
        let err = root
            .write_atomic(
                "/link",
                b"y",
                Perms {
                    mode: 0o644,
                    uid,
                    gid,
                },
            )
            .unwrap_err();
        assert!(err.to_string().contains("symbolic link"));
        assert_eq!(std::fs::read(dir.path().join("real")).unwrap(), b"x");
    }

    #[test]
    fn missing_root_is_an_error_naming_the_flag() {
        let err = Sysroot::new("/nonexistent/irsa-agent-root").unwrap_err();
        assert!(
            format!("{err:#}").starts_with("--root /nonexistent/irsa-agent-root"),
            "{err:#}"
        );
    }
}
