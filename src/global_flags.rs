//! The global flags (`--root`, `--distro`) for the commands that do not
//! inspect a node: each either honours a flag or refuses it with a one-line
//! reason (exit 2), so a command never acts on the host when the user named a
//! root. `keygen`, `discovery` and `aws` resolve every absolute path of their
//! own flags under `--root`; `--distro` means nothing to them.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::cli::GlobalOpts;
use crate::output::{Exit, Failure};
use crate::system::Sysroot;

/// A command-line mistake: exit 2, nothing done.
fn usage(message: String) -> anyhow::Error {
    anyhow::Error::msg(Failure {
        exit: Exit::Usage,
        message,
        json: serde_json::Map::new(),
    })
}

/// Refuse `--distro` for `command`, which has no use for it (`why`).
pub fn refuse_distro(global: &GlobalOpts, command: &str, why: &str) -> Result<()> {
    match &global.distro {
        Some(d) => Err(usage(format!(
            "{command} does not take --distro (given: {d}): {why}; nothing was done"
        ))),
        None => Ok(()),
    }
}

/// Refuse `--root` for `command` (`why`).
pub fn refuse_root(global: &GlobalOpts, command: &str, why: &str) -> Result<()> {
    match &global.root {
        Some(r) => Err(usage(format!(
            "{command} does not take --root (given: {}): {why}; nothing was done",
            r.display()
        ))),
        None => Ok(()),
    }
}

/// Where the paths of a command's flags are: on the host, or, with `--root`,
/// absolute ones under the root (relative ones stay relative to the current
/// directory, as everywhere else).
#[derive(Debug, Clone)]
pub struct FlagPaths {
    root: Option<Sysroot>,
}

impl FlagPaths {
    /// From `--root` (which must be an existing directory).
    pub fn new(global: &GlobalOpts) -> Result<Self> {
        let root = match &global.root {
            Some(r) => Some(Sysroot::new(r.clone())?),
            None => None,
        };
        Ok(Self { root })
    }

    /// The root, when one was named (and is not `/`).
    fn sysroot(&self) -> Option<&Sysroot> {
        self.root.as_ref().filter(|r| !r.is_host())
    }

    /// The path to open for reading `path` (links resolved inside the root).
    pub fn read(&self, flag: &str, path: &Path) -> Result<PathBuf> {
        self.resolve(flag, path, true)
    }

    /// The path to write `path` at: parent links resolved inside the root, the
    /// last component left as it is (a link there is refused by the writer).
    pub fn write(&self, flag: &str, path: &Path) -> Result<PathBuf> {
        self.resolve(flag, path, false)
    }

    fn resolve(&self, flag: &str, path: &Path, follow_last: bool) -> Result<PathBuf> {
        match self.sysroot() {
            Some(root) if path.is_absolute() => {
                let node = path.to_string_lossy();
                let host = if follow_last {
                    root.host_path(&node)
                } else {
                    root.host_path_nofollow(&node)
                };
                host.with_context(|| format!("{flag} {}", path.display()))
            }
            _ => Ok(path.to_path_buf()),
        }
    }

    /// `" (under --root DIR)"` when a root was named, for messages.
    pub fn suffix(&self) -> String {
        self.sysroot()
            .map(|r| format!(" (under --root {})", r.display_root()))
            .unwrap_or_default()
    }

    /// The root for the JSON report (null without one).
    pub fn root_json(&self) -> serde_json::Value {
        self.sysroot()
            .map(|r| r.display_root().into())
            .unwrap_or(serde_json::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::OutputMode;

    fn global(root: Option<&Path>, distro: Option<&str>) -> GlobalOpts {
        GlobalOpts {
            root: root.map(Path::to_path_buf),
            distro: distro.map(str::to_string),
            output: OutputMode::Human,
            verbose: 0,
            quiet: false,
        }
    }

    #[test]
    fn absolute_paths_go_under_the_root_and_relative_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc/kubernetes/pki")).unwrap();
        let paths = FlagPaths::new(&global(Some(dir.path()), None)).unwrap();
        let abs = Path::new("/etc/kubernetes/pki/sa.pub");
        assert_eq!(
            paths.read("--public-key", abs).unwrap(),
            dir.path().join("etc/kubernetes/pki/sa.pub")
        );
        assert_eq!(
            paths.write("--private-key", abs).unwrap(),
            dir.path().join("etc/kubernetes/pki/sa.pub")
        );
        assert_eq!(
            paths.read("--out", Path::new("out/dir")).unwrap(),
            Path::new("out/dir")
        );
        assert!(paths.suffix().contains("under --root"));

        let host = FlagPaths::new(&global(None, None)).unwrap();
        assert_eq!(host.read("--public-key", abs).unwrap(), abs);
        assert_eq!(host.suffix(), "");
    }

    #[test]
    fn a_link_in_the_root_never_leads_out_of_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("etc/pki")).unwrap();
        let paths = FlagPaths::new(&global(Some(dir.path()), None)).unwrap();
        assert_eq!(
            paths
                .write("--private-key", Path::new("/etc/pki/new.key"))
                .unwrap(),
            dir.path().join("etc/new.key")
        );
    }

    #[test]
    fn refusals_name_the_command_the_flag_and_exit_2() {
        let g = global(Some(Path::new("node")), Some("k3s"));
        let e = refuse_distro(&g, "keygen", "it reads no node").unwrap_err();
        assert_eq!(
            e.to_string(),
            "keygen does not take --distro (given: k3s): it reads no node; nothing was done"
        );
        assert_eq!(Failure::of(&e).unwrap().exit, Exit::Usage);
        let e = refuse_root(&g, "generate", "packaging only").unwrap_err();
        assert!(e
            .to_string()
            .starts_with("generate does not take --root (given: node)"));
        refuse_distro(&global(None, None), "keygen", "x").unwrap();
        refuse_root(&global(None, None), "keygen", "x").unwrap();
    }
}
