//! The node's filesystem, seen through a root directory (`/`, or `--root`).
//! Callers use node paths (`/etc/kubernetes/...`); only this module joins them
//! to the root.
//!
//! Symbolic links are resolved the way the node itself sees them: an absolute
//! target is taken under the root and `..` stops at the root (openat2's
//! `RESOLVE_IN_ROOT`), so a link in a `--root` tree can never lead a read or a
//! write outside it, and a link inside the node (MicroK8s'
//! `/var/snap/microk8s/current -> <revision>`) works as on the node. A file
//! that is itself a link is read through, but never written through: see
//! [`write_file_atomic`].

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Links followed for one path before giving up, as Linux does (ELOOP).
const MAX_LINKS: usize = 40;

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
        let meta = match std::fs::metadata(&root) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("--root {}: no such directory", root.display())
            }
            r => r.with_context(|| format!("--root {}", root.display()))?,
        };
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

    /// The root joined with a node path, without resolving any link: for
    /// messages and for tests that build a tree. Reads and writes go through
    /// [`Sysroot::host_path`], which resolves links inside the root.
    pub fn path(&self, node_path: &str) -> PathBuf {
        self.root.join(node_path.trim_start_matches('/'))
    }

    /// The host path of a node path, every link resolved inside the root
    /// (the last component too): the path to hand to code that opens it.
    pub fn host_path(&self, node_path: &str) -> Result<PathBuf> {
        self.resolve(node_path, true)
    }

    /// The host path with the parent directories resolved inside the root and
    /// the last component left as it is (it may be a link): for writing,
    /// removing and `lstat`.
    pub fn host_path_nofollow(&self, node_path: &str) -> Result<PathBuf> {
        self.resolve(node_path, false)
    }

    /// Resolve `node_path` under the root. A missing component ends the
    /// resolution: the rest is appended as it is (nothing there can be a link).
    fn resolve(&self, node_path: &str, follow_last: bool) -> Result<PathBuf> {
        // Components still to walk, the next one last.
        let mut pending: Vec<OsString> = Vec::new();
        push_components(&mut pending, Path::new(node_path));
        // Components resolved so far, below the root.
        let mut below: Vec<OsString> = Vec::new();
        let mut links = 0;
        let join = |below: &[OsString]| -> PathBuf {
            let mut p = self.root.clone();
            p.extend(below);
            p
        };
        while let Some(c) = pending.pop() {
            if c == ".." {
                below.pop(); // at the root, `..` is the root
                continue;
            }
            let here = join(&below).join(&c);
            let last = pending.is_empty();
            match here.symlink_metadata() {
                Ok(m) if m.file_type().is_symlink() && (follow_last || !last) => {
                    links += 1;
                    if links > MAX_LINKS {
                        bail!("{node_path}: too many levels of symbolic links (more than {MAX_LINKS})");
                    }
                    let target = std::fs::read_link(&here).with_context(|| {
                        format!("{node_path}: reading the link {}", here.display())
                    })?;
                    if target.is_absolute() {
                        below.clear();
                    }
                    push_components(&mut pending, &target);
                }
                Ok(_) => below.push(c),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => below.push(c),
                Err(e) => {
                    return Err(e).with_context(|| format!("{node_path}: {}", here.display()))
                }
            }
        }
        Ok(join(&below))
    }

    pub fn exists(&self, node_path: &str) -> bool {
        self.host_path_nofollow(node_path)
            .is_ok_and(|p| p.symlink_metadata().is_ok())
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
        let p = self
            .host_path(node_path)
            .with_context(|| format!("reading {node_path}"))?;
        match std::fs::read(p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {node_path}")),
        }
    }

    pub fn read_bytes(&self, node_path: &str) -> Result<Vec<u8>> {
        let p = self
            .host_path(node_path)
            .with_context(|| format!("reading {node_path}"))?;
        std::fs::read(p).with_context(|| format!("reading {node_path}"))
    }

    /// Names of the entries of a directory, sorted; empty when it does not exist.
    pub fn list_dir(&self, node_dir: &str) -> Result<Vec<String>> {
        let p = self
            .host_path(node_dir)
            .with_context(|| format!("listing {node_dir}"))?;
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

    /// Mode and owner of the file (through a link), None when it does not exist.
    pub fn perms(&self, node_path: &str) -> Result<Option<Perms>> {
        let p = self
            .host_path(node_path)
            .with_context(|| format!("inspecting {node_path}"))?;
        match std::fs::metadata(p) {
            Ok(m) => Ok(Some(Perms {
                mode: m.permissions().mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("inspecting {node_path}")),
        }
    }

    /// Create a directory and its missing parents, each with `mode` from the
    /// start (0700 directories are never looser for a moment). A link on the
    /// way is followed inside the root; a link to nothing is refused rather
    /// than followed into a directory irsa-agent would create.
    pub fn create_dir_all(&self, node_dir: &str, mode: u32) -> Result<()> {
        let ctx = || format!("creating the directory {node_dir}");
        if self.host_path(node_dir).is_ok_and(|p| p.is_dir()) {
            return Ok(());
        }
        let mut prefix = String::new();
        for part in node_dir.split('/').filter(|s| !s.is_empty()) {
            prefix.push('/');
            prefix.push_str(part);
            let here = self.host_path_nofollow(&prefix).with_context(ctx)?;
            match here.symlink_metadata() {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    if !self.host_path(&prefix).with_context(ctx)?.is_dir() {
                        let target = std::fs::read_link(&here).unwrap_or_default();
                        bail!(
                            "{}: {prefix} is a symbolic link to {}, which is not an existing directory{}",
                            ctx(),
                            target.display(),
                            self.under_root_note()
                        );
                    }
                }
                Ok(_) => bail!("{}: {prefix} exists and is not a directory", ctx()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    match std::fs::DirBuilder::new().mode(mode).create(&here) {
                        Ok(()) => {
                            // Exactly `mode`, whatever the umask.
                            std::fs::set_permissions(&here, std::fs::Permissions::from_mode(mode))
                                .with_context(ctx)?;
                        }
                        // Another run made it in the meantime (two runs
                        // started together both create /run/irsa-agent).
                        Err(e)
                            if e.kind() == std::io::ErrorKind::AlreadyExists
                                && here.symlink_metadata().is_ok_and(|m| m.is_dir()) => {}
                        Err(e) => return Err(e).with_context(ctx),
                    }
                }
                Err(e) => return Err(e).with_context(ctx),
            }
        }
        Ok(())
    }

    /// " under --root DIR" when the root is not `/`: how a link target is read.
    fn under_root_note(&self) -> String {
        if self.is_host() {
            String::new()
        } else {
            format!(" (under --root {})", self.root.display())
        }
    }

    /// Could [`Sysroot::write_atomic`] replace (or create) this file? Checked
    /// before anything is written, so a file that cannot be written stops the
    /// run with nothing changed: a link (never written through), something
    /// that is not a regular file, an immutable file (`chattr +i`), a
    /// directory on a read-only mount. Mode bits do not stop root: a 0444 file
    /// is replaced and stays 0444.
    pub fn check_writable(&self, node_path: &str) -> Result<()> {
        let target = self.host_path_nofollow(node_path)?;
        match target.symlink_metadata() {
            Ok(m) if m.file_type().is_symlink() => bail!(link_refusal(node_path, &target)),
            Ok(m) if !m.is_file() => bail!("{node_path} exists and is not a regular file"),
            Ok(_) => {
                if let Err(e) = nix::unistd::access(&target, nix::unistd::AccessFlags::W_OK) {
                    bail!(
                        "{node_path} cannot be replaced: {}{}",
                        e.desc(),
                        why_not_writable(e)
                    );
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("inspecting {node_path}")),
        }
        // The directory the temporary file goes into (or the first existing
        // one above it, when irsa-agent will create the rest).
        let mut dir = node_path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        loop {
            let host = self.host_path(dir)?;
            if host.is_dir() {
                if let Err(e) = nix::unistd::access(&host, nix::unistd::AccessFlags::W_OK) {
                    let shown = if dir.is_empty() { "/" } else { dir };
                    bail!(
                        "cannot write {node_path}: no file can be created in {shown}: {}{}",
                        e.desc(),
                        why_not_writable(e)
                    );
                }
                return Ok(());
            }
            // A link to nothing would not be followed into a new directory.
            let here = self.host_path_nofollow(dir)?;
            if here
                .symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink())
            {
                let target = std::fs::read_link(&here).unwrap_or_default();
                bail!(
                    "cannot write {node_path}: {dir} is a symbolic link to {}, which is not an existing directory{}",
                    target.display(),
                    self.under_root_note()
                );
            }
            if dir.is_empty() {
                return Ok(());
            }
            dir = dir.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        }
    }

    /// Replace (or create) a file atomically: see [`write_file_atomic`]. The
    /// parent directories are resolved inside the root; the file itself must
    /// not be a link. The caller passes the existing file's mode and owner to
    /// keep them.
    pub fn write_atomic(&self, node_path: &str, bytes: &[u8], perms: Perms) -> Result<()> {
        let target = self
            .host_path_nofollow(node_path)
            .with_context(|| format!("writing {node_path}"))?;
        write_file_atomic(&target, node_path, bytes, perms, true)
    }

    /// Remove a file (and fsync its directory); a missing file is fine. A
    /// link is removed, not what it points to.
    pub fn remove(&self, node_path: &str) -> Result<()> {
        let p = self
            .host_path_nofollow(node_path)
            .with_context(|| format!("removing {node_path}"))?;
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
        let p = self
            .host_path_nofollow(node_dir)
            .with_context(|| format!("removing the directory {node_dir}"))?;
        match std::fs::remove_dir(p) {
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

    /// Remove a directory irsa-agent made (a backup) with everything in it;
    /// links inside are removed, never followed.
    pub fn remove_dir_all(&self, node_dir: &str) -> Result<()> {
        let p = self
            .host_path_nofollow(node_dir)
            .with_context(|| format!("removing the directory {node_dir}"))?;
        match std::fs::remove_dir_all(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing the directory {node_dir}")),
        }
    }
}

/// The refusal for a file that is a link.
fn link_refusal(name: &str, host: &Path) -> String {
    let target = std::fs::read_link(host)
        .map(|t| t.display().to_string())
        .unwrap_or_else(|_| "?".into());
    format!(
        "{name} is a symbolic link to {target}; irsa-agent does not write through links (the file the link \
         points to may be shared or managed elsewhere): replace the link with a copy of the file, or point the \
         configuration at the real file, then run again"
    )
}

/// The likely reason behind an errno from `access(W_OK)` as root.
fn why_not_writable(e: nix::errno::Errno) -> &'static str {
    match e {
        nix::errno::Errno::EROFS => " (a read-only mount)",
        nix::errno::Errno::EPERM => {
            " (the immutable attribute? see lsattr; chattr -i to allow changes)"
        }
        nix::errno::Errno::EACCES => " (irsa-agent must run as root)",
        _ => "",
    }
}

/// The one atomic write of the program: [`stage`] then [`Staged::commit`].
/// A crash leaves the old file or the new one, never a mix; a failure removes
/// the temporary file. `name` is how errors call the file.
pub fn write_file_atomic(
    target: &Path,
    name: &str,
    bytes: &[u8],
    perms: Perms,
    replace: bool,
) -> Result<()> {
    stage(target, name, bytes, perms)?.commit(replace)
}

/// A file written in full next to its target, not yet in place: dropped, it
/// is removed.
pub struct Staged {
    tmp: tempfile::NamedTempFile,
    target: PathBuf,
    name: String,
}

/// Write `bytes` to a temporary file in the target's directory, created
/// 0600 (O_EXCL, so never someone else's file, and key material never sits
/// in a looser file), given its owner, written, given its final mode only
/// then, and fsynced. Staging every file of a command before committing any
/// makes a full disk leave nothing behind.
pub fn stage(target: &Path, name: &str, bytes: &[u8], perms: Perms) -> Result<Staged> {
    if target
        .symlink_metadata()
        .map(|m| m.file_type().is_symlink())
        .unwrap_or(false)
    {
        bail!(link_refusal(name, target));
    }
    let ctx = || format!("writing {name}");
    let mut tmp = private_temp_file(parent_dir(target)).with_context(ctx)?;
    let f = tmp.as_file();
    // The owner first: a chown after the mode would clear set-id bits.
    let meta = f.metadata().with_context(ctx)?;
    if meta.uid() != perms.uid || meta.gid() != perms.gid {
        nix::unistd::fchown(
            std::os::fd::AsRawFd::as_raw_fd(f),
            Some(nix::unistd::Uid::from_raw(perms.uid)),
            Some(nix::unistd::Gid::from_raw(perms.gid)),
        )
        .with_context(|| format!("{name}: setting owner {}:{}", perms.uid, perms.gid))?;
    }
    let (head, tail) = bytes.split_at(bytes.len() / 2);
    tmp.write_all(head).with_context(ctx)?;
    crate::failpoint::mid_write(name)?;
    tmp.write_all(tail).with_context(ctx)?;
    let f = tmp.as_file();
    f.set_permissions(std::fs::Permissions::from_mode(perms.mode))
        .with_context(ctx)?;
    f.sync_all().with_context(ctx)?;
    Ok(Staged {
        tmp,
        target: target.to_path_buf(),
        name: name.to_string(),
    })
}

impl Staged {
    /// Rename into place (without `replace`: linked, failing if the target
    /// exists, checked atomically), then fsync the directory.
    pub fn commit(self, replace: bool) -> Result<()> {
        let Staged { tmp, target, name } = self;
        let ctx = || format!("writing {name}");
        if replace {
            tmp.persist(&target)
                .map_err(|e| e.error)
                .with_context(ctx)?;
        } else {
            tmp.persist_noclobber(&target).map_err(|e| {
                if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                    anyhow::anyhow!("{name}: already exists (pass --force to overwrite)")
                } else {
                    anyhow::Error::new(e.error).context(ctx())
                }
            })?;
        }
        sync_dir(parent_dir(&target)).with_context(ctx)?;
        Ok(())
    }
}

fn parent_dir(target: &Path) -> &Path {
    match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// A new, empty temporary file in `dir`, `.irsa-agent-*`, created with
/// `O_CREAT|O_EXCL` and mode 0600 in the same system call (the umask can only
/// make it stricter), removed again when dropped unless persisted.
fn private_temp_file(dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(".irsa-agent-")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Push the components of `path` onto `stack`, the first one last (so it is
/// popped first); `.` and the root are dropped.
fn push_components(stack: &mut Vec<OsString>, path: &Path) {
    let parts: Vec<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect();
    stack.extend(parts.into_iter().rev());
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
    use std::os::unix::fs::symlink;

    fn mine(mode: u32) -> Perms {
        let (uid, gid) = default_owner();
        Perms { mode, uid, gid }
    }

    #[test]
    fn atomic_write_keeps_mode_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = Sysroot::new(dir.path()).unwrap();
        root.create_dir_all("/etc/x", 0o755).unwrap();
        root.write_atomic("/etc/x/f", b"one", mine(0o640)).unwrap();
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
        symlink("/real", dir.path().join("link")).unwrap();
        let err = root.write_atomic("/link", b"y", mine(0o644)).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("/link is a symbolic link to /real"),
            "names the link and its target: {msg}"
        );
        let err = root.check_writable("/link").unwrap_err();
        assert!(format!("{err:#}").contains("symbolic link to /real"));
        assert_eq!(std::fs::read(dir.path().join("real")).unwrap(), b"x");
        // Reading goes through it, inside the root.
        assert_eq!(root.read_bytes("/link").unwrap(), b"x");
    }

    /// A tree `root/` next to `outside/`, both under one temp dir.
    fn root_and_outside() -> (tempfile::TempDir, Sysroot, PathBuf) {
        let top = tempfile::tempdir().unwrap();
        std::fs::create_dir(top.path().join("root")).unwrap();
        std::fs::create_dir(top.path().join("outside")).unwrap();
        let root = Sysroot::new(top.path().join("root")).unwrap();
        let outside = top.path().join("outside");
        (top, root, outside)
    }

    #[test]
    fn links_resolve_inside_the_root() {
        let (_top, root, outside) = root_and_outside();
        let r = root.path("/");
        std::fs::write(outside.join("f"), "outside").unwrap();
        // An absolute link to the outside directory's host path lands on the
        // same path under the root.
        let re_rooted = r.join(outside.strip_prefix("/").unwrap());
        std::fs::create_dir_all(&re_rooted).unwrap();
        std::fs::write(re_rooted.join("f"), "inside").unwrap();
        std::fs::create_dir(r.join("etc")).unwrap();
        symlink(&outside, r.join("etc/abs")).unwrap();
        assert_eq!(root.host_path("/etc/abs/f").unwrap(), re_rooted.join("f"));
        assert_eq!(root.read_bytes("/etc/abs/f").unwrap(), b"inside");
        // `..` stops at the root, however many there are.
        let dots = format!("../../../../../../../..{}", outside.display());
        symlink(&dots, r.join("etc/dots")).unwrap();
        assert_eq!(root.read_bytes("/etc/dots/f").unwrap(), b"inside");
        assert_eq!(
            root.read_bytes("/etc/../../../etc/abs/f").unwrap(),
            b"inside"
        );
        // A write through an intermediate link goes to the re-rooted file.
        root.write_atomic("/etc/abs/f", b"new", mine(0o644))
            .unwrap();
        assert_eq!(std::fs::read(re_rooted.join("f")).unwrap(), b"new");
        assert_eq!(std::fs::read(outside.join("f")).unwrap(), b"outside");
        // A relative link inside the root (MicroK8s' current -> revision).
        std::fs::create_dir_all(r.join("snap/1234/args")).unwrap();
        symlink("1234", r.join("snap/current")).unwrap();
        root.write_atomic("/snap/current/args/a", b"a", mine(0o644))
            .unwrap();
        assert_eq!(std::fs::read(r.join("snap/1234/args/a")).unwrap(), b"a");
        assert!(r
            .join("snap/current")
            .symlink_metadata()
            .unwrap()
            .is_symlink());
        // A final link to the outside is read under the root too.
        symlink(outside.join("f"), r.join("etc/file-link")).unwrap();
        assert_eq!(root.read_bytes("/etc/file-link").unwrap(), b"new");
        assert!(root.exists("/etc/file-link"));
        // A link to nothing is not found, not created.
        symlink("/nowhere", r.join("etc/dangling")).unwrap();
        assert_eq!(root.read_bytes_optional("/etc/dangling/x").unwrap(), None);
        let err = root.create_dir_all("/etc/dangling/pki", 0o755).unwrap_err();
        assert!(
            format!("{err:#}").contains("/etc/dangling is a symbolic link to /nowhere"),
            "{err:#}"
        );
        assert!(!r.join("nowhere").exists() && !Path::new("/nowhere").exists());
    }

    #[test]
    fn a_link_loop_is_an_error_naming_the_path() {
        let (_top, root, _) = root_and_outside();
        let r = root.path("/");
        symlink("/b", r.join("a")).unwrap();
        symlink("/a", r.join("b")).unwrap();
        let err = root.read_bytes_optional("/a/x").unwrap_err();
        assert!(
            format!("{err:#}").contains("/a/x: too many levels of symbolic links"),
            "{err:#}"
        );
        assert!(!root.exists("/a/x"));
    }

    #[test]
    fn new_directories_have_their_mode_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let root = Sysroot::new(dir.path()).unwrap();
        root.create_dir_all("/var/lib/x/backups", 0o700).unwrap();
        for d in ["var", "var/lib", "var/lib/x", "var/lib/x/backups"] {
            let m = std::fs::metadata(dir.path().join(d)).unwrap();
            assert_eq!(m.permissions().mode() & 0o7777, 0o700, "{d}");
        }
        std::fs::write(dir.path().join("file"), "").unwrap();
        let err = root.create_dir_all("/file/sub", 0o755).unwrap_err();
        assert!(format!("{err:#}").contains("/file exists and is not a directory"));
    }

    #[test]
    fn the_temporary_file_is_0600_before_a_byte_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = private_temp_file(dir.path()).unwrap();
        let m = tmp.as_file().metadata().unwrap();
        assert_eq!(m.len(), 0, "nothing written yet");
        assert_eq!(
            m.permissions().mode() & 0o777 & !0o600,
            0,
            "never looser than 0600"
        );
        assert!(
            tmp.path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".irsa-agent-"),
            "a hidden name: the kubelet skips it in the manifests directory"
        );
        let path = tmp.path().to_path_buf();
        drop(tmp);
        assert!(!path.exists(), "removed when dropped");
    }

    #[test]
    fn a_private_file_is_never_looser_than_its_final_mode() {
        // write_file_atomic with 0600 never sets another mode on the way.
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("k.key");
        write_file_atomic(&target, "k.key", b"secret", mine(0o600), false).unwrap();
        assert_eq!(
            std::fs::metadata(&target).unwrap().permissions().mode() & 0o7777,
            0o600
        );
        let err = write_file_atomic(&target, "k.key", b"other", mine(0o600), false).unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"secret");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left behind");
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
