//! The one atomic write of the program, done through the target directory's
//! file descriptor: a temporary file created in it, written, given the old
//! file's owner, extended attributes (POSIX ACLs, SELinux label, `user.*`)
//! and mode, fsynced, renamed over the target with `renameat`, and the
//! directory fsynced. Nothing is looked up by path after the directory is
//! open, so a directory swapped for a link meanwhile changes nothing.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use anyhow::{bail, Context, Result};
use rustix::fs::{
    fchmod, fchown, fgetxattr, flistxattr, fsetxattr, fstat, fsync, linkat, openat, readlinkat,
    renameat, renameat_with, statat, unlinkat, AtFlags, FileType, Gid, Mode, OFlags, RenameFlags,
    Uid, XattrFlags,
};
use rustix::io::Errno;

use super::{desc, Perms};

/// The prefix of temporary files (`backup` removes those a dead run left).
pub(super) const TEMP_PREFIX: &str = ".irsa-agent-";

/// A file written in full next to its target, not yet in place: dropped, it
/// is removed.
pub struct Staged {
    dir: OwnedFd,
    tmp: OsString,
    target: OsString,
    name: String,
    placed: bool,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.placed {
            let _ = unlinkat(&self.dir, self.tmp.as_os_str(), AtFlags::empty());
        }
    }
}

/// Write `bytes` to a temporary file in `dir` (the directory of `target`),
/// created 0600 (O_EXCL, so never someone else's file, and key material
/// never sits in a looser file), given its owner, written, given the
/// extended attributes of the file it replaces, then its final mode, and
/// fsynced. Staging every file of a command before committing any makes a
/// full disk leave nothing behind. `name` is how errors call the file.
pub(super) fn stage_at(
    dir: OwnedFd,
    target: &OsStr,
    name: &str,
    bytes: &[u8],
    perms: Perms,
) -> Result<Staged> {
    let ctx = || format!("writing {name}");
    // The file being replaced: never a link, and where the attributes come from.
    let old = match statat(&dir, target, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
            bail!(link_refusal(name, &link_target(&dir, target)))
        }
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => Some(
            openat(
                &dir,
                target,
                OFlags::RDONLY
                    | OFlags::NOFOLLOW
                    | OFlags::NONBLOCK
                    | OFlags::NOCTTY
                    | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map(File::from)
            .map_err(std::io::Error::from)
            .with_context(|| format!("{name}: opening the file to replace"))?,
        ),
        Ok(_) => None,
        Err(Errno::NOENT) => None,
        Err(e) => return Err(std::io::Error::from(e)).with_context(ctx),
    };
    let (tmp, file) = create_temp(&dir).with_context(ctx)?;
    let staged = Staged {
        dir,
        tmp,
        target: target.to_os_string(),
        name: name.to_string(),
        placed: false,
    };
    let mut f = file;
    // The owner first: a chown after the mode would clear set-id bits (and
    // after the attributes, `security.capability`).
    let st = fstat(&f).map_err(std::io::Error::from).with_context(ctx)?;
    if st.st_uid != perms.uid || st.st_gid != perms.gid {
        fchown(
            &f,
            Some(Uid::from_raw(perms.uid)),
            Some(Gid::from_raw(perms.gid)),
        )
        .map_err(std::io::Error::from)
        .with_context(|| format!("{name}: setting owner {}:{}", perms.uid, perms.gid))?;
    }
    let (head, tail) = bytes.split_at(bytes.len() / 2);
    f.write_all(head).with_context(ctx)?;
    crate::failpoint::mid_write(name)?;
    f.write_all(tail).with_context(ctx)?;
    if let Some(old) = &old {
        copy_xattrs(old, &f, name)?;
    }
    // Last: the mode (which also sets an ACL's mask to the group bits, as
    // chmod does on the old file).
    fchmod(&f, Mode::from_raw_mode(perms.mode))
        .map_err(std::io::Error::from)
        .with_context(ctx)?;
    f.sync_all().with_context(ctx)?;
    Ok(staged)
}

impl Staged {
    /// Rename into place (without `replace`: failing if the target exists,
    /// checked atomically), then fsync the directory.
    pub fn commit(mut self, replace: bool) -> Result<()> {
        let name = self.name.clone();
        let ctx = || format!("writing {name}");
        let (dir, tmp, target) = (&self.dir, self.tmp.as_os_str(), self.target.as_os_str());
        if replace {
            renameat(dir, tmp, dir, target)
                .map_err(std::io::Error::from)
                .with_context(ctx)?;
        } else {
            let placed = match renameat_with(dir, tmp, dir, target, RenameFlags::NOREPLACE) {
                // A file system without RENAME_NOREPLACE: a hard link fails
                // the same way when the target exists.
                Err(Errno::INVAL) | Err(Errno::NOSYS) => {
                    linkat(dir, tmp, dir, target, AtFlags::empty())
                        .and_then(|()| unlinkat(dir, tmp, AtFlags::empty()))
                }
                r => r,
            };
            match placed {
                Ok(()) => {}
                Err(Errno::EXIST) => bail!("{name}: already exists (pass --force to overwrite)"),
                Err(e) => return Err(std::io::Error::from(e)).with_context(ctx),
            }
        }
        self.placed = true;
        fsync(&self.dir)
            .map_err(std::io::Error::from)
            .with_context(ctx)?;
        Ok(())
    }
}

/// A new, empty temporary file `.irsa-agent-XXXXXXXX` in `dir`, created with
/// `O_CREAT|O_EXCL|O_NOFOLLOW` and mode 0600 in the same system call (the
/// umask can only make it stricter).
pub(super) fn create_temp(dir: &OwnedFd) -> std::io::Result<(OsString, File)> {
    use rand_core::RngCore;
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut last = Errno::EXIST;
    for _ in 0..100 {
        let mut random = [0u8; 8];
        rand_core::OsRng.fill_bytes(&mut random);
        let mut name = TEMP_PREFIX.as_bytes().to_vec();
        name.extend(random.iter().map(|b| CHARS[usize::from(*b) % CHARS.len()]));
        let name = OsString::from_vec(name);
        match openat(
            dir,
            name.as_os_str(),
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => return Ok((name, File::from(fd))),
            Err(Errno::EXIST) => last = Errno::EXIST,
            Err(e) => return Err(e.into()),
        }
    }
    Err(last.into())
}

/// Copy every extended attribute of `from` to `to`: POSIX ACLs
/// (`system.posix_acl_access`), the SELinux label (`security.selinux`),
/// `user.*` and whatever else the file has. An attribute that cannot be set
/// fails the write (nothing is in place yet), except a `security.*` one the
/// security module refuses: warned about (see [`lost_label_warning`]).
fn copy_xattrs(from: &File, to: &File, name: &str) -> Result<()> {
    let list = match read_growing(|buf| flistxattr(from, buf)) {
        Ok(l) => l,
        Err(Errno::NOTSUP) => return Ok(()),
        Err(e) => {
            return Err(std::io::Error::from(e))
                .with_context(|| format!("{name}: listing the extended attributes of the file"))
        }
    };
    for attr in list.split(|b| *b == 0).filter(|a| !a.is_empty()) {
        let attr = OsStr::from_bytes(attr);
        let value = match read_growing(|buf| fgetxattr(from, attr, buf)) {
            Ok(v) => v,
            Err(Errno::NODATA) => continue,
            Err(e) => {
                return Err(std::io::Error::from(e)).with_context(|| {
                    format!(
                        "{name}: reading its extended attribute {}",
                        attr.to_string_lossy()
                    )
                })
            }
        };
        if let Err(e) = fsetxattr(to, attr, &value, XattrFlags::empty()) {
            let attr = attr.to_string_lossy();
            if only_warn(&attr, e) {
                tracing::warn!("{}", lost_label_warning(name, &attr, &value, e));
            } else {
                bail!(
                    "{name}: cannot give the new file the extended attribute {attr} of the old one: {}",
                    desc(e)
                );
            }
        }
    }
    Ok(())
}

/// Is a failure to set `attr` only worth a warning? The labels of security
/// modules (`security.selinux`, `security.ima`, ...) that the policy does not
/// let this process set: the new file has the label the policy gives new
/// files in its directory.
pub(super) fn only_warn(attr: &str, e: Errno) -> bool {
    attr.starts_with("security.")
        && matches!(
            e,
            Errno::PERM | Errno::ACCESS | Errno::NOTSUP | Errno::INVAL
        )
}

/// The warning for a label that could not be kept.
pub(super) fn lost_label_warning(name: &str, attr: &str, value: &[u8], e: Errno) -> String {
    let value = String::from_utf8_lossy(value.strip_suffix(b"\0").unwrap_or(value)).into_owned();
    if attr == "security.selinux" {
        format!(
            "{name}: could not keep its SELinux label {value} ({}): the new file has the label of new files \
             in its directory; run `restorecon -v {name}` to give it the label the policy expects",
            desc(e)
        )
    } else {
        format!(
            "{name}: could not keep its extended attribute {attr} ({}): the new file does not have it",
            desc(e)
        )
    }
}

/// A `*xattr` read, retried with a larger buffer while it is too small.
fn read_growing(mut read: impl FnMut(&mut [u8]) -> Result<usize, Errno>) -> Result<Vec<u8>, Errno> {
    let mut size = 256;
    loop {
        let mut buf = vec![0u8; size];
        match read(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Errno::RANGE) if size < 1 << 20 => size *= 4,
            Err(e) => return Err(e),
        }
    }
}

/// What the link `name` in `dir` points to, for messages.
pub(super) fn link_target(dir: &OwnedFd, name: &OsStr) -> String {
    readlinkat(dir, name, Vec::new())
        .map(|t| String::from_utf8_lossy(t.as_bytes()).into_owned())
        .unwrap_or_else(|_| "?".into())
}

/// The refusal for a file that is a link.
pub(super) fn link_refusal(name: &str, target: &str) -> String {
    format!(
        "{name} is a symbolic link to {target}; irsa-agent does not write through links (the file the link \
         points to may be shared or managed elsewhere): replace the link with a copy of the file, or point the \
         configuration at the real file, then run again"
    )
}

/// Open a host directory (for files that are not node files: `keygen`'s
/// outputs) the ordinary way.
pub(super) fn open_host_dir(dir: &Path) -> std::io::Result<OwnedFd> {
    Ok(openat(
        rustix::fs::CWD,
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}
