//! Opening a node path inside the root through file descriptors, so that no
//! path is resolved twice: the kernel resolves it (`openat2` with
//! `RESOLVE_IN_ROOT`, Linux 5.6 and later), or, where `openat2` is missing
//! or blocked, this module walks it one component at a time, each opened
//! with `O_NOFOLLOW` relative to the directory before, links read and
//! followed by hand under the root. Either way an absolute link target is
//! taken under the root and `..` stops at it, and a directory swapped for a
//! link between two steps can never lead outside the root.

use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path};

use rustix::fs::{fstat, openat, openat2, readlinkat, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Links followed for one path before giving up, as Linux does (ELOOP).
pub(super) const MAX_LINKS: usize = 40;

/// How node paths are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Resolver {
    /// `openat2(RESOLVE_IN_ROOT)`.
    Kernel,
    /// Component by component with `O_NOFOLLOW` (no `openat2`: Linux before
    /// 5.6, or a seccomp filter that refuses it).
    UserSpace,
}

/// `openat2` on the root itself: does this kernel (and seccomp filter) have it?
pub(super) fn probe(root: BorrowedFd<'_>) -> Resolver {
    match openat2(
        root,
        ".",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT,
    ) {
        Ok(_) => Resolver::Kernel,
        Err(e) => {
            tracing::debug!(
                "openat2(RESOLVE_IN_ROOT) is not available ({e}): resolving paths component by component"
            );
            Resolver::UserSpace
        }
    }
}

/// Open `node_path` below `root` with `flags` (`O_CLOEXEC` is added). With
/// `follow_last` false, a last component that is a link is not followed
/// (`O_PATH` opens the link itself, other opens fail with ELOOP).
pub(super) fn open_in(
    root: BorrowedFd<'_>,
    resolver: Resolver,
    node_path: &str,
    flags: OFlags,
    follow_last: bool,
) -> Result<OwnedFd, Errno> {
    let mut flags = flags | OFlags::CLOEXEC;
    if !follow_last {
        flags |= OFlags::NOFOLLOW;
    }
    match resolver {
        Resolver::Kernel => {
            let rel = node_path.trim_start_matches('/');
            let rel = if rel.is_empty() { "." } else { rel };
            // EAGAIN: a rename elsewhere raced the `..` checks; try again.
            let mut tries = 0;
            loop {
                match openat2(
                    root,
                    rel,
                    flags,
                    Mode::empty(),
                    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
                ) {
                    Err(Errno::AGAIN) if tries < 32 => tries += 1,
                    r => return r,
                }
            }
        }
        Resolver::UserSpace => walk(root, node_path, flags, follow_last),
    }
}

/// The user-space resolution: directories are held open, so `..` goes back
/// to the directory it came from (never above the root) and every step is
/// relative to a directory already inside the root.
fn walk(
    root: BorrowedFd<'_>,
    node_path: &str,
    flags: OFlags,
    follow_last: bool,
) -> Result<OwnedFd, Errno> {
    let mut pending: Vec<OsString> = Vec::new();
    push_components(&mut pending, Path::new(node_path));
    let mut dirs: Vec<OwnedFd> = Vec::new();
    let mut links = 0;
    while let Some(c) = pending.pop() {
        if c == ".." {
            dirs.pop();
            continue;
        }
        let cur = dirs.last().map(|d| d.as_fd()).unwrap_or(root);
        let last = pending.is_empty();
        let opened = if last {
            openat(cur, &c, flags | OFlags::NOFOLLOW, Mode::empty())
        } else {
            openat(
                cur,
                &c,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
        };
        let maybe_link = match &opened {
            // O_PATH|O_NOFOLLOW opens a link itself.
            Ok(fd) => {
                last && follow_last
                    && flags.contains(OFlags::PATH)
                    && fstat(fd)
                        .is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Symlink)
            }
            Err(Errno::LOOP) | Err(Errno::NOTDIR) => !last || follow_last,
            Err(_) => false,
        };
        if maybe_link {
            // A link: follow it. Not one after all (EINVAL): the first
            // answer stands.
            if let Ok(target) = readlinkat(cur, &c, Vec::new()) {
                links += 1;
                if links > MAX_LINKS {
                    return Err(Errno::LOOP);
                }
                let target = OsString::from_vec(target.into_bytes());
                if Path::new(&target).is_absolute() {
                    dirs.clear();
                }
                push_components(&mut pending, Path::new(&target));
                if pending.is_empty() {
                    // A link to `/` (or `.`) as the last component.
                    let cur = dirs.last().map(|d| d.as_fd()).unwrap_or(root);
                    return openat(cur, ".", flags.difference(OFlags::NOFOLLOW), Mode::empty());
                }
                continue;
            }
        }
        let fd = opened?;
        if last {
            return Ok(fd);
        }
        dirs.push(fd);
    }
    // The path was the root, or ended in `..`.
    let cur = dirs.last().map(|d| d.as_fd()).unwrap_or(root);
    openat(cur, ".", flags.difference(OFlags::NOFOLLOW), Mode::empty())
}

/// Push the components of `path` onto `stack`, the first one last (so it is
/// popped first); `.` and the root are dropped.
pub(super) fn push_components(stack: &mut Vec<OsString>, path: &Path) {
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
