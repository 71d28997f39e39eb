//! Atomic file writes: a temp file in the same directory (created 0600 by
//! `tempfile`, so key material never sits in a looser file), write, fsync,
//! chmod to the final mode, rename, fsync the directory.

use std::fs::{File, Permissions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context;

/// Write `contents` to `path` atomically with `mode`. With `overwrite` false
/// an existing `path` is an error, checked atomically at the final link.
pub(crate) fn write_atomic(
    path: &Path,
    contents: &[u8],
    mode: u32,
    overwrite: bool,
) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".irsa-agent-")
        .tempfile_in(dir)
        .with_context(|| {
            format!(
                "{}: cannot create a temporary file in {}",
                path.display(),
                dir.display()
            )
        })?;
    tmp.write_all(contents)
        .and_then(|_| tmp.as_file().set_permissions(Permissions::from_mode(mode)))
        .and_then(|_| tmp.as_file().sync_all())
        .with_context(|| format!("{}: writing", path.display()))?;
    if overwrite {
        tmp.persist(path).map_err(|e| {
            anyhow::anyhow!("{}: cannot rename into place: {}", path.display(), e.error)
        })?;
    } else {
        tmp.persist_noclobber(path).map_err(|e| {
            if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                anyhow::anyhow!(
                    "{}: already exists (pass --force to overwrite)",
                    path.display()
                )
            } else {
                anyhow::anyhow!("{}: cannot link into place: {}", path.display(), e.error)
            }
        })?;
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("{}: syncing directory", dir.display()))?;
    Ok(())
}

/// Create `dir` and its parents (0755) if missing.
pub(crate) fn ensure_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("{}: cannot create directory", dir.display()))
}
