//! Fixture sysroots: locate, copy into a temp dir, snapshot.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// `tests/fixtures/<case>` in the source tree (read-only: tests that write
/// must use [`copy_fixture`]).
pub fn fixture_path(case: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(case);
    assert!(p.is_dir(), "no fixture case {case:?} at {}", p.display());
    p
}

/// A fresh copy of fixture `case` in a temp dir, to use as `--root`.
///
/// Regular files keep their permission bits, symlinks are copied as symlinks.
/// Note that git only records the executable bit, so a checked-out `sa.key` is
/// 0644 (or per umask), not the 0600 a real node has.
pub fn copy_fixture(case: &str) -> tempfile::TempDir {
    copy_fixture_in(case, &std::env::temp_dir())
}

/// [`copy_fixture`] into a temp dir under `parent`.
pub fn copy_fixture_in(case: &str, parent: &Path) -> tempfile::TempDir {
    let src = fixture_path(case);
    let dir = tempfile::Builder::new()
        .prefix(&format!("fixture-{case}-"))
        .tempdir_in(parent)
        .expect("creating temp dir");
    copy_tree(&src, dir.path()).unwrap_or_else(|e| panic!("copying fixture {case}: {e}"));
    dir
}

fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let ft = entry.file_type()?;
        if ft.is_dir() {
            fs::create_dir(&to)?;
            copy_tree(&from, &to)?;
            let mode = fs::metadata(&from)?.permissions().mode();
            fs::set_permissions(&to, fs::Permissions::from_mode(mode))?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
        } else {
            // fs::copy also copies the permission bits.
            fs::copy(&from, &to)?;
        }
    }
    Ok(())
}

/// Every entry under `root`, keyed by path relative to `root`:
/// `(content, st_mode)`. `st_mode` includes the file-type bits, so a file
/// turning into a directory or a symlink is a difference too. Directories map
/// to empty content, symlinks to their target's bytes. `root` itself is not
/// included.
pub fn snapshot(root: &Path) -> Tree {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out).unwrap_or_else(|e| panic!("snapshot of {}: {e}", root.display()));
    out
}

/// A snapshot: node path (relative to the root) -> (content, st_mode).
pub type Tree = BTreeMap<PathBuf, (Vec<u8>, u32)>;

/// [`snapshot`] of the node's own files: without irsa-agent's state (its
/// backups under `var/lib/irsa-agent` and the directories above them, which
/// it may create, and the lock under `run`).
pub fn node_files(root: &Path) -> Tree {
    snapshot(root)
        .into_iter()
        .filter(|(p, _)| {
            !p.starts_with("var/lib/irsa-agent")
                && !Path::new("var/lib/irsa-agent").starts_with(p)
                && !p.starts_with("run")
        })
        .collect()
}

fn walk(
    root: &Path,
    dir: &Path,
    out: &mut BTreeMap<PathBuf, (Vec<u8>, u32)>,
) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let rel = path.strip_prefix(root).expect("under root").to_path_buf();
        let meta = fs::symlink_metadata(&path)?;
        let ft = meta.file_type();
        if ft.is_dir() {
            out.insert(rel, (Vec::new(), meta.mode()));
            walk(root, &path, out)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&path)?;
            out.insert(
                rel,
                (target.into_os_string().into_encoded_bytes(), meta.mode()),
            );
        } else {
            out.insert(rel, (fs::read(&path)?, meta.mode()));
        }
    }
    Ok(())
}
