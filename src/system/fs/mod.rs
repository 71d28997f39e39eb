//! The node's filesystem, seen through a root directory (`/`, or `--root`).
//! Callers use node paths (`/etc/kubernetes/...`); only this module joins them
//! to the root.
//!
//! The root directory is opened once; every node path is then resolved
//! inside it by the kernel (`openat2` with `RESOLVE_IN_ROOT`) or, without
//! `openat2`, component by component through directory descriptors (see
//! [`at`]), and reads, writes, modes, owners and extended attributes go
//! through the descriptors that resolution returned. Symbolic links are
//! resolved the way the node itself sees them: an absolute target is taken
//! under the root and `..` stops at the root, so a link in a `--root` tree
//! can never lead a read or a write outside it, not even one swapped in
//! between a check and a write; a link inside the node (MicroK8s'
//! `/var/snap/microk8s/current -> <revision>`) works as on the node. A file
//! that is itself a link is read through, but never written through: see
//! [`Sysroot::write_atomic`].

mod at;
mod write;

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use rustix::fs::{
    accessat, fchmod, fstat, fsync, mkdirat, openat, statat, unlinkat, Access, AtFlags, Dir,
    FileType, Mode, OFlags,
};
use rustix::io::Errno;

use at::{open_in, push_components, Resolver, MAX_LINKS};
pub use write::Staged;

/// A root directory and the node paths under it.
#[derive(Debug, Clone)]
pub struct Sysroot {
    root: PathBuf,
    /// The root directory, opened once (`O_PATH`).
    dir: Arc<OwnedFd>,
    resolver: Resolver,
}

/// Mode and owner of an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Perms {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The system's text for an errno, without "(os error N)".
fn desc(e: Errno) -> &'static str {
    nix::errno::Errno::from_raw(e.raw_os_error()).desc()
}

fn io(e: Errno) -> std::io::Error {
    e.into()
}

fn file_type(mode: u32) -> FileType {
    FileType::from_raw_mode(mode)
}

impl Sysroot {
    /// `root` must be an existing directory.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let dir = match openat(
            rustix::fs::CWD,
            &root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(d) => d,
            Err(Errno::NOTDIR) if root.exists() => {
                bail!("--root {} is not a directory", root.display())
            }
            Err(Errno::NOENT) => bail!("--root {}: no such directory", root.display()),
            Err(e) => return Err(io(e)).with_context(|| format!("--root {}", root.display())),
        };
        let resolver = at::probe(dir.as_fd());
        Ok(Sysroot {
            root,
            dir: Arc::new(dir),
            resolver,
        })
    }

    /// The same root, resolving paths in user space (the fallback without
    /// `openat2`), for tests of that path.
    #[cfg(test)]
    fn user_space(mut self) -> Self {
        self.resolver = Resolver::UserSpace;
        self
    }

    /// Is this the real root of the machine?
    pub fn is_host(&self) -> bool {
        self.root == Path::new("/")
    }

    pub fn display_root(&self) -> String {
        self.root.display().to_string()
    }

    /// The root joined with a node path, without resolving any link: for
    /// messages and for tests that build a tree.
    pub fn path(&self, node_path: &str) -> PathBuf {
        self.root.join(node_path.trim_start_matches('/'))
    }

    /// The host path of a node path, every link resolved inside the root
    /// (the last component too), for code that can only take a path (the
    /// kubeconfig's certificate files, the lock file, the backup directory).
    /// A path is looked up again when it is used: this module's own reads
    /// and writes go through descriptors instead.
    pub fn host_path(&self, node_path: &str) -> Result<PathBuf> {
        self.resolve(node_path, true)
    }

    /// The host path with the parent directories resolved inside the root and
    /// the last component left as it is (it may be a link).
    pub fn host_path_nofollow(&self, node_path: &str) -> Result<PathBuf> {
        self.resolve(node_path, false)
    }

    /// Resolve `node_path` under the root into a host path. A missing
    /// component ends the resolution: the rest is appended as it is (nothing
    /// there can be a link).
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
                        bail!(too_many_links(node_path));
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

    /// Open `node_path` inside the root; `Ok(None)` when it does not exist.
    fn open(&self, node_path: &str, flags: OFlags, follow_last: bool) -> Result<Option<OwnedFd>> {
        match self.open_raw(node_path, flags, follow_last) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(resolve_error(node_path, e)),
        }
    }

    fn open_raw(
        &self,
        node_path: &str,
        flags: OFlags,
        follow_last: bool,
    ) -> Result<OwnedFd, Errno> {
        open_in(self.root_fd(), self.resolver, node_path, flags, follow_last)
    }

    fn root_fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    /// The directory of `node_path` (resolved inside the root, opened for
    /// reading so it can be fsynced) and the file's name in it; `Ok(None)`
    /// when the directory does not exist.
    fn open_parent(&self, node_path: &str) -> Result<Option<(OwnedFd, OsString)>> {
        let (parent, name) = split(node_path)?;
        Ok(self
            .open(parent, OFlags::RDONLY | OFlags::DIRECTORY, true)?
            .map(|d| (d, name)))
    }

    pub fn exists(&self, node_path: &str) -> bool {
        self.open_raw(node_path, OFlags::PATH, false).is_ok()
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
        let ctx = || format!("reading {node_path}");
        let Some(fd) = self
            .open(node_path, OFlags::RDONLY | OFlags::NOCTTY, true)
            .with_context(ctx)?
        else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        std::fs::File::from(fd)
            .read_to_end(&mut bytes)
            .with_context(ctx)?;
        Ok(Some(bytes))
    }

    pub fn read_bytes(&self, node_path: &str) -> Result<Vec<u8>> {
        self.read_bytes_optional(node_path)?.ok_or_else(|| {
            anyhow::Error::new(io(Errno::NOENT)).context(format!("reading {node_path}"))
        })
    }

    /// Names of the files (and links) of a directory, sorted; empty when it
    /// does not exist.
    pub fn list_dir(&self, node_dir: &str) -> Result<Vec<String>> {
        self.list_entries(node_dir, |t| {
            matches!(t, FileType::RegularFile | FileType::Symlink)
        })
    }

    /// Names of the directories in a directory (not links to one), sorted;
    /// empty when it does not exist.
    pub fn list_subdirs(&self, node_dir: &str) -> Result<Vec<String>> {
        self.list_entries(node_dir, |t| t == FileType::Directory)
    }

    fn list_entries(&self, node_dir: &str, want: impl Fn(FileType) -> bool) -> Result<Vec<String>> {
        let ctx = || format!("listing {node_dir}");
        let Some(fd) = self
            .open(node_dir, OFlags::RDONLY | OFlags::DIRECTORY, true)
            .with_context(ctx)?
        else {
            return Ok(Vec::new());
        };
        let mut names = Vec::new();
        for entry in Dir::read_from(&fd).map_err(io).with_context(ctx)? {
            let entry = entry.map_err(io).with_context(ctx)?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let t = match entry.file_type() {
                FileType::Unknown => statat(&fd, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW)
                    .map(|s| file_type(s.st_mode))
                    .unwrap_or(FileType::Unknown),
                t => t,
            };
            if want(t) {
                names.push(String::from_utf8_lossy(name).into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Rename `from` to `to`, two names in one directory (resolved inside
    /// the root once, renamed through its descriptor), then fsync that
    /// directory.
    pub fn rename_in_dir(&self, from: &str, to: &str) -> Result<()> {
        let ctx = || format!("renaming {from} to {to}");
        let (from_dir, from_name) = split(from)?;
        let (to_dir, to_name) = split(to)?;
        if from_dir != to_dir {
            bail!("internal error: {from} and {to} are not in one directory");
        }
        let Some((dir, _)) = self.open_parent(from).with_context(ctx)? else {
            return Err(anyhow::Error::new(io(Errno::NOENT)).context(ctx()));
        };
        rustix::fs::renameat(&dir, &from_name, &dir, &to_name)
            .map_err(io)
            .with_context(ctx)?;
        fsync(&dir).map_err(io).with_context(ctx)
    }

    /// fsync a directory and every directory below it (never through a link).
    pub fn sync_tree(&self, node_dir: &str) -> Result<()> {
        let ctx = || format!("syncing {node_dir}");
        let Some(fd) = self
            .open(node_dir, OFlags::RDONLY | OFlags::DIRECTORY, true)
            .with_context(ctx)?
        else {
            return Ok(());
        };
        sync_tree_at(fd).map_err(io).with_context(ctx)
    }

    /// When the file itself (not a link's target) was last modified; None
    /// when it does not exist.
    pub fn modified(&self, node_path: &str) -> Result<Option<std::time::SystemTime>> {
        let ctx = || format!("inspecting {node_path}");
        let Some((dir, name)) = self.open_parent(node_path).with_context(ctx)? else {
            return Ok(None);
        };
        match statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => {
                let since = std::time::Duration::new(
                    u64::try_from(st.st_mtime).unwrap_or(0),
                    u32::try_from(st.st_mtime_nsec).unwrap_or(0),
                );
                Ok(Some(std::time::UNIX_EPOCH + since))
            }
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(anyhow::Error::new(io(e)).context(ctx())),
        }
    }

    /// Mode and owner of the file (through a link), None when it does not exist.
    pub fn perms(&self, node_path: &str) -> Result<Option<Perms>> {
        let ctx = || format!("inspecting {node_path}");
        let Some(fd) = self.open(node_path, OFlags::PATH, true).with_context(ctx)? else {
            return Ok(None);
        };
        let st = fstat(&fd).map_err(io).with_context(ctx)?;
        Ok(Some(Perms {
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
        }))
    }

    /// Where the link `node_path` points (its text), None when it is not a link.
    fn link_target(&self, node_path: &str) -> Option<String> {
        let (parent, name) = split(node_path).ok()?;
        let dir = self
            .open(parent, OFlags::PATH | OFlags::DIRECTORY, true)
            .ok()??;
        let st = statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
        (file_type(st.st_mode) == FileType::Symlink).then(|| write::link_target(&dir, &name))
    }

    /// Create a directory and its missing parents, each with `mode` from the
    /// start (0700 directories are never looser for a moment), and fsync the
    /// directory each new one is made in. A link on the way is followed
    /// inside the root; a link to nothing is refused rather than followed
    /// into a directory irsa-agent would create.
    pub fn create_dir_all(&self, node_dir: &str, mode: u32) -> Result<()> {
        let ctx = || format!("creating the directory {node_dir}");
        if self
            .open_raw(node_dir, OFlags::PATH | OFlags::DIRECTORY, true)
            .is_ok()
        {
            return Ok(());
        }
        let mut cur: Option<OwnedFd> = None; // None: the root
        let mut prefix = String::new();
        for part in node_dir.split('/').filter(|s| !s.is_empty() && *s != ".") {
            prefix.push('/');
            prefix.push_str(part);
            let parent = cur.as_ref().map(|d| d.as_fd()).unwrap_or(self.root_fd());
            let next = match statat(parent, part, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if part != ".." && file_type(st.st_mode) == FileType::Directory => openat(
                    parent,
                    part,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(io)
                .with_context(ctx)?,
                Ok(st) if part == ".." || file_type(st.st_mode) == FileType::Symlink => {
                    match self.open_raw(&prefix, OFlags::PATH | OFlags::DIRECTORY, true) {
                        Ok(d) => d,
                        Err(Errno::NOENT) | Err(Errno::NOTDIR) => bail!(
                            "{}: {prefix} is a symbolic link to {}, which is not an existing directory{}",
                            ctx(),
                            self.link_target(&prefix).unwrap_or_else(|| "?".into()),
                            self.under_root_note()
                        ),
                        Err(e) => return Err(resolve_error(&prefix, e)).with_context(ctx),
                    }
                }
                Ok(_) => bail!("{}: {prefix} exists and is not a directory", ctx()),
                Err(Errno::NOENT) => self.make_dir(parent, part, mode).with_context(ctx)?,
                Err(e) => return Err(io(e)).with_context(ctx),
            };
            cur = Some(next);
        }
        Ok(())
    }

    /// `mkdir` `name` in `parent` with exactly `mode` (whatever the umask),
    /// fsync `parent`; a directory another run made meanwhile is fine.
    fn make_dir(&self, parent: BorrowedFd<'_>, name: &str, mode: u32) -> std::io::Result<OwnedFd> {
        let open = || {
            openat(
                parent,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
        };
        match mkdirat(parent, name, Mode::from_raw_mode(mode)) {
            Ok(()) => {
                let d = open()?;
                fchmod(&d, Mode::from_raw_mode(mode))?;
                // The new entry is durable before anything is put in it.
                let p = openat(
                    parent,
                    ".",
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                fsync(&p)?;
                Ok(d)
            }
            // Another run made it in the meantime (two runs started
            // together both create /run/irsa-agent).
            Err(Errno::EXIST) => Ok(open()?),
            Err(e) => Err(e.into()),
        }
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
    /// that is not a regular file, an immutable or append-only file (`chattr
    /// +i`, `+a`), a directory on a read-only mount. The file is opened for
    /// writing (not truncated) and the directory checked with the effective
    /// uid (`faccessat(AT_EACCESS)`), as the write itself will be. Mode bits
    /// do not stop root: a 0444 file is replaced and stays 0444.
    pub fn check_writable(&self, node_path: &str) -> Result<()> {
        let (parent, name) = split(node_path)?;
        if let Some(dir) = self.open(parent, OFlags::PATH | OFlags::DIRECTORY, true)? {
            match statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if file_type(st.st_mode) == FileType::Symlink => {
                    bail!(write::link_refusal(
                        node_path,
                        &write::link_target(&dir, &name)
                    ))
                }
                Ok(st) if file_type(st.st_mode) != FileType::RegularFile => {
                    bail!("{node_path} exists and is not a regular file")
                }
                Ok(_) => match openat(
                    &dir,
                    &name,
                    OFlags::WRONLY
                        | OFlags::NOFOLLOW
                        | OFlags::NONBLOCK
                        | OFlags::NOCTTY
                        | OFlags::CLOEXEC,
                    Mode::empty(),
                ) {
                    // EAGAIN: a lease holder would be told; the rename is not stopped.
                    Ok(_) | Err(Errno::AGAIN) => {}
                    Err(e) => bail!(
                        "{node_path} cannot be replaced: {}{}",
                        desc(e),
                        why_not_writable(e)
                    ),
                },
                Err(Errno::NOENT) => {}
                Err(e) => return Err(io(e)).with_context(|| format!("inspecting {node_path}")),
            }
        }
        // The directory the temporary file goes into (or the first existing
        // one above it, when irsa-agent will create the rest).
        let mut dir = parent;
        loop {
            match self.open_raw(dir, OFlags::PATH | OFlags::DIRECTORY, true) {
                Ok(fd) => {
                    match accessat(&fd, ".", Access::WRITE_OK, AtFlags::EACCESS) {
                        // NOSYS: no faccessat2 (Linux < 5.8) and a set-uid
                        // run: the write itself will tell.
                        Ok(()) | Err(Errno::NOSYS) => {}
                        Err(e) => {
                            let shown = if dir.is_empty() { "/" } else { dir };
                            bail!(
                                "cannot write {node_path}: no file can be created in {shown}: {}{}",
                                desc(e),
                                why_not_writable(e)
                            );
                        }
                    }
                    return Ok(());
                }
                Err(Errno::NOENT) | Err(Errno::NOTDIR) => {}
                Err(e) => return Err(resolve_error(dir, e)),
            }
            // A link to nothing would not be followed into a new directory.
            if let Some(target) = self.link_target(dir) {
                bail!(
                    "cannot write {node_path}: {dir} is a symbolic link to {target}, which is not an existing directory{}",
                    self.under_root_note()
                );
            }
            if dir.is_empty() {
                return Ok(());
            }
            dir = dir.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        }
    }

    /// Replace (or create) a file atomically: a temporary file in the same
    /// directory, given `perms` (the caller passes the existing file's mode
    /// and owner to keep them) and every extended attribute of the file it
    /// replaces (ACLs, SELinux label), renamed over it. A crash leaves the
    /// old file or the new one, never a mix; a failure removes the temporary
    /// file. The parent directories are resolved inside the root once; the
    /// file itself must not be a link.
    pub fn write_atomic(&self, node_path: &str, bytes: &[u8], perms: Perms) -> Result<()> {
        let ctx = || format!("writing {node_path}");
        let (dir, name) = self
            .open_parent(node_path)
            .with_context(ctx)?
            .ok_or_else(|| anyhow!("writing {node_path}: its directory does not exist"))?;
        write::stage_at(dir, &name, node_path, bytes, perms)?.commit(true)
    }

    /// Remove a file (and fsync its directory); a missing file is fine. A
    /// link is removed, not what it points to.
    pub fn remove(&self, node_path: &str) -> Result<()> {
        let ctx = || format!("removing {node_path}");
        let Some((dir, name)) = self.open_parent(node_path).with_context(ctx)? else {
            return Ok(());
        };
        match unlinkat(&dir, &name, AtFlags::empty()) {
            Ok(()) => {}
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(io(e)).with_context(ctx),
        }
        fsync(&dir).map_err(io).with_context(ctx)
    }

    /// Remove `node_dir` if it is empty; a directory that is not empty (or
    /// gone) is left alone.
    pub fn remove_dir_if_empty(&self, node_dir: &str) -> Result<()> {
        let ctx = || format!("removing the directory {node_dir}");
        let Some((dir, name)) = self.open_parent(node_dir).with_context(ctx)? else {
            return Ok(());
        };
        match unlinkat(&dir, &name, AtFlags::REMOVEDIR) {
            Ok(()) => fsync(&dir).map_err(io).with_context(ctx),
            Err(Errno::NOENT) | Err(Errno::NOTEMPTY) | Err(Errno::EXIST) => Ok(()),
            Err(e) => Err(io(e)).with_context(ctx),
        }
    }

    /// Remove a directory irsa-agent made (a backup) with everything in it;
    /// links inside are removed, never followed.
    pub fn remove_dir_all(&self, node_dir: &str) -> Result<()> {
        let ctx = || format!("removing the directory {node_dir}");
        let Some((dir, name)) = self.open_parent(node_dir).with_context(ctx)? else {
            return Ok(());
        };
        remove_tree(&dir, &name).map_err(io).with_context(ctx)
    }
}

/// Remove `name` in `dir`: a directory with everything in it (through
/// descriptors, never following a link), anything else as it is.
fn remove_tree(dir: &OwnedFd, name: &OsStr) -> Result<(), Errno> {
    let st = match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    if file_type(st.st_mode) != FileType::Directory {
        return match unlinkat(dir, name, AtFlags::empty()) {
            Err(Errno::NOENT) => Ok(()),
            r => r,
        };
    }
    let sub = openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for entry in Dir::read_from(&sub)? {
        let entry = entry?;
        let n = entry.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsString::from(OsStr::from_bytes(n)));
        }
    }
    for n in names {
        remove_tree(&sub, &n)?;
    }
    match unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Err(Errno::NOENT) => Ok(()),
        r => r,
    }
}

/// A node path's directory and last component; a path that names no file
/// (`/`, `..` at the end) is an error.
/// fsync the directory `fd` after every directory below it.
fn sync_tree_at(fd: OwnedFd) -> rustix::io::Result<()> {
    for entry in Dir::read_from(&fd)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        let is_dir = match entry.file_type() {
            FileType::Unknown => {
                file_type(statat(&fd, name, AtFlags::SYMLINK_NOFOLLOW)?.st_mode)
                    == FileType::Directory
            }
            t => t == FileType::Directory,
        };
        if is_dir {
            let sub = openat(
                &fd,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            sync_tree_at(sub)?;
        }
    }
    fsync(&fd)
}

fn split(node_path: &str) -> Result<(&str, OsString)> {
    let trimmed = node_path.trim_end_matches('/');
    let (parent, name) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
    if name.is_empty() || name == "." || name == ".." {
        bail!("{node_path}: not the path of a file");
    }
    Ok((parent, OsString::from(name)))
}

fn too_many_links(node_path: &str) -> String {
    format!("{node_path}: too many levels of symbolic links (more than {MAX_LINKS})")
}

/// An error from resolving `node_path`, a link loop named as such.
fn resolve_error(node_path: &str, e: Errno) -> anyhow::Error {
    if e == Errno::LOOP {
        anyhow!(too_many_links(node_path))
    } else {
        anyhow::Error::new(io(e)).context(node_path.to_string())
    }
}

/// The likely reason behind an errno from opening for writing as root.
fn why_not_writable(e: Errno) -> &'static str {
    match e {
        Errno::ROFS => " (a read-only mount)",
        Errno::PERM => {
            " (the immutable or append-only attribute? see lsattr; chattr -i or chattr -a to allow changes)"
        }
        Errno::ACCESS => " (irsa-agent must run as root)",
        _ => "",
    }
}

/// Replace (or create) a host file atomically, outside any root (`keygen`'s
/// outputs): [`stage`] then [`Staged::commit`]. `name` is how errors call
/// the file.
pub fn write_file_atomic(
    target: &Path,
    name: &str,
    bytes: &[u8],
    perms: Perms,
    replace: bool,
) -> Result<()> {
    stage(target, name, bytes, perms)?.commit(replace)
}

/// Write `bytes` in full to a temporary file next to the host file
/// `target`, not yet in place (see [`Sysroot::write_atomic`]).
pub fn stage(target: &Path, name: &str, bytes: &[u8], perms: Perms) -> Result<Staged> {
    let ctx = || format!("writing {name}");
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let file = target
        .file_name()
        .ok_or_else(|| anyhow!("{name}: not the path of a file"))?;
    let dir = write::open_host_dir(dir).with_context(ctx)?;
    write::stage_at(dir, file, name, bytes, perms)
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
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn mine(mode: u32) -> Perms {
        let (uid, gid) = default_owner();
        Perms { mode, uid, gid }
    }

    #[test]
    fn directory_operations_stay_inside_the_root_through_an_absolute_link() {
        // The state directory is a link to an absolute path: on the node that
        // is a path under the root, never the host's.
        let outside = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("var/lib")).unwrap();
        std::fs::create_dir_all(outside.path().join("state/.partial-1/sub")).unwrap();
        std::fs::create_dir_all(dir.path().join("state/.partial-1/sub")).unwrap();
        std::fs::write(dir.path().join("state/file"), "x").unwrap();
        symlink(outside.path().join("state"), dir.path().join("var/lib/s")).unwrap();
        // `outside/state` does not exist under the root: the link resolves to
        // <root><outside>/state, which is missing.
        let root = Sysroot::new(dir.path()).unwrap();
        assert!(root.list_subdirs("/var/lib/s").unwrap().is_empty());
        assert!(root
            .rename_in_dir("/var/lib/s/.partial-1", "/var/lib/s/1")
            .is_err());
        assert!(
            outside.path().join("state/.partial-1").is_dir(),
            "the host's directory is untouched"
        );

        std::fs::remove_file(dir.path().join("var/lib/s")).unwrap();
        symlink("/state", dir.path().join("var/lib/s")).unwrap();
        assert_eq!(root.list_subdirs("/var/lib/s").unwrap(), [".partial-1"]);
        assert_eq!(root.list_dir("/var/lib/s").unwrap(), ["file"]);
        root.sync_tree("/var/lib/s/.partial-1").unwrap();
        root.rename_in_dir("/var/lib/s/.partial-1", "/var/lib/s/1")
            .unwrap();
        assert!(dir.path().join("state/1/sub").is_dir());
        assert!(root.modified("/var/lib/s/file").unwrap().is_some());
        assert!(root.modified("/var/lib/s/none").unwrap().is_none());
        assert!(
            root.rename_in_dir("/var/lib/s/1", "/var/lib/t/1").is_err(),
            "one directory only"
        );
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
    fn root_and_outside(user_space: bool) -> (tempfile::TempDir, Sysroot, PathBuf) {
        let top = tempfile::tempdir().unwrap();
        std::fs::create_dir(top.path().join("root")).unwrap();
        std::fs::create_dir(top.path().join("outside")).unwrap();
        let mut root = Sysroot::new(top.path().join("root")).unwrap();
        if user_space {
            root = root.user_space();
        }
        let outside = top.path().join("outside");
        (top, root, outside)
    }

    #[test]
    fn links_resolve_inside_the_root() {
        for user_space in [false, true] {
            links_resolve_inside_the_root_with(user_space);
        }
    }

    fn links_resolve_inside_the_root_with(user_space: bool) {
        let (_top, root, outside) = root_and_outside(user_space);
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
        for user_space in [false, true] {
            let (_top, root, _) = root_and_outside(user_space);
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
    }

    /// A thread swaps a directory of the root and a link to a directory
    /// outside it, back and forth, while files are written, directories made
    /// and files removed under that directory: whichever way each lookup
    /// goes, nothing outside the root is ever written.
    #[test]
    fn a_directory_swapped_for_a_link_mid_write_never_leads_outside() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        for user_space in [false, true] {
            let (_top, root, outside) = root_and_outside(user_space);
            let r = root.path("/");
            std::fs::write(outside.join("f"), "outside").unwrap();
            // Where the link leads under the root: exists, so writes through
            // it succeed (inside the root) and the race goes on.
            let twin = r.join(outside.strip_prefix("/").unwrap());
            std::fs::create_dir_all(&twin).unwrap();
            std::fs::create_dir_all(r.join("etc/d")).unwrap();
            symlink(&outside, r.join("etc/swap")).unwrap();
            let stop = AtomicBool::new(false);
            let swaps = AtomicUsize::new(0);
            let (d, swap) = (r.join("etc/d"), r.join("etc/swap"));
            std::thread::scope(|s| {
                s.spawn(|| {
                    let start = std::time::Instant::now();
                    while !stop.load(Ordering::Relaxed)
                        && swaps.load(Ordering::Relaxed) < 2_000_000
                        && start.elapsed() < std::time::Duration::from_secs(20)
                    {
                        rustix::fs::renameat_with(
                            rustix::fs::CWD,
                            &d,
                            rustix::fs::CWD,
                            &swap,
                            rustix::fs::RenameFlags::EXCHANGE,
                        )
                        .unwrap();
                        swaps.fetch_add(1, Ordering::Relaxed);
                    }
                });
                for i in 0..25 {
                    let _ = root.check_writable("/etc/d/f");
                    let _ = root.write_atomic("/etc/d/f", format!("{i}").as_bytes(), mine(0o644));
                    let _ = root.create_dir_all(&format!("/etc/d/new{i}/sub"), 0o755);
                    let _ = root.remove(&format!("/etc/d/gone{i}"));
                    let _ = root.remove_dir_all(&format!("/etc/d/new{i}"));
                }
                stop.store(true, Ordering::Relaxed);
            });
            assert!(swaps.load(Ordering::Relaxed) > 100, "the race ran");
            let names: Vec<_> = std::fs::read_dir(&outside)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(
                names,
                ["f"],
                "user space {user_space}: nothing created outside"
            );
            assert_eq!(std::fs::read(outside.join("f")).unwrap(), b"outside");
            // Both sides were written, inside the root.
            assert!(
                d.join("f").exists() || swap.join("f").exists() || twin.join("f").exists(),
                "user space {user_space}: some write went through"
            );
        }
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
        let fd = write::open_host_dir(dir.path()).unwrap();
        let (name, file) = write::create_temp(&fd).unwrap();
        let m = file.metadata().unwrap();
        assert_eq!(m.len(), 0, "nothing written yet");
        assert_eq!(
            m.permissions().mode() & 0o777 & !0o600,
            0,
            "never looser than 0600"
        );
        assert!(
            name.to_string_lossy().starts_with(".irsa-agent-"),
            "a hidden name: the kubelet skips it in the manifests directory"
        );
        assert!(dir.path().join(&name).exists());
        // A staged file that is dropped instead of committed is removed.
        let staged = stage(&dir.path().join("f"), "f", b"x", mine(0o644)).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        drop(staged);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [name], "removed when dropped, never put in place");
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
    fn a_label_the_policy_refuses_is_a_warning_naming_restorecon_and_other_attributes_are_errors() {
        use rustix::io::Errno;
        for e in [Errno::PERM, Errno::NOTSUP, Errno::ACCESS, Errno::INVAL] {
            assert!(write::only_warn("security.selinux", e), "{e:?}");
        }
        assert!(!write::only_warn("security.selinux", Errno::NOSPC));
        for attr in ["user.x", "system.posix_acl_access", "trusted.y"] {
            assert!(!write::only_warn(attr, Errno::PERM), "{attr}");
        }
        let w = write::lost_label_warning(
            "/etc/kubernetes/manifests/kube-apiserver.yaml",
            "security.selinux",
            b"system_u:object_r:kubernetes_file_t:s0\0",
            Errno::PERM,
        );
        assert!(
            w.contains(
                "SELinux label system_u:object_r:kubernetes_file_t:s0 (Operation not permitted)"
            ) && w.contains("restorecon -v /etc/kubernetes/manifests/kube-apiserver.yaml"),
            "{w}"
        );
    }

    #[test]
    fn a_replaced_file_keeps_its_extended_attributes() {
        let dir = tempfile::tempdir().unwrap();
        let root = Sysroot::new(dir.path()).unwrap();
        root.write_atomic("/f", b"one", mine(0o640)).unwrap();
        let host = dir.path().join("f");
        if let Err(e) = rustix::fs::setxattr(&host, "user.k", b"v", rustix::fs::XattrFlags::empty())
        {
            println!("SKIPPED a_replaced_file_keeps_its_extended_attributes: no user.* attributes here ({e})");
            return;
        }
        root.write_atomic("/f", b"two", mine(0o640)).unwrap();
        let mut buf = [0u8; 16];
        let n = rustix::fs::getxattr(&host, "user.k", &mut buf[..]).unwrap();
        assert_eq!(&buf[..n], b"v");
        assert_eq!(std::fs::read(&host).unwrap(), b"two");
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
