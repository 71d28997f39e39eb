//! A control-plane node as found: its distribution, configuration files,
//! apiserver arguments and effective service-account settings.

use anyhow::{bail, Result};

use crate::distro::{self, Detection, Format, Profile};
use crate::flags::{Arg, Effective};
use crate::formats::{self, ConfigSet};
use crate::system::Sysroot;

pub struct Node {
    pub root: Sysroot,
    pub detection: Detection,
    /// Every configuration file that holds flags (k3s: config.yaml and drop-ins).
    pub files: ConfigSet,
    pub args: Vec<Arg>,
    pub effective: Effective,
}

impl Node {
    pub fn profile(&self) -> &Profile {
        &self.detection.profile
    }
}

/// The configuration files of `profile` that exist on the node.
pub fn load_files(root: &Sysroot, profile: &Profile) -> Result<ConfigSet> {
    let mut paths = vec![profile.config.clone()];
    if profile.format == Format::K3s {
        let dir = format!("{}.d", profile.config);
        paths.extend(
            root.list_dir(&dir)?
                .into_iter()
                .filter(|n| formats::k3s::is_dropin_name(n))
                .map(|n| format!("{dir}/{n}")),
        );
    }
    let mut files = ConfigSet::new();
    for p in paths {
        if let Some(text) = root.read_optional(&p)? {
            files.insert(p, text);
        }
    }
    Ok(files)
}

/// Detect the distribution and read its service-account settings.
pub fn inspect(root: Sysroot, forced: Option<&str>) -> Result<Node> {
    let mut detection = distro::detect(&root, forced)?;
    if let Some(spec) = detection.profile.unit.clone() {
        if let Some(cl) =
            distro::unit::load(&root, &spec).map_err(|e| distro::unit::unit_error(&spec, e))?
        {
            distro::unit::apply_to_profile(&mut detection.profile, &spec, &cl);
        }
    }
    if detection.profile.format == Format::K0s {
        if let Some(unit) = detection.profile.restart.unit.clone() {
            let dirs = [
                "/etc/systemd/system",
                "/usr/local/lib/systemd/system",
                "/usr/lib/systemd/system",
            ]
            .map(String::from);
            if distro::unit::k0s_konnectivity_off(&root, &unit, &dirs)? {
                if let Some(a) = detection
                    .profile
                    .defaults
                    .get_mut(crate::flags::API_AUDIENCES)
                {
                    *a = crate::flags::write_csv(
                        &crate::flags::read_csv(a)?
                            .into_iter()
                            .filter(|x| x != "system:konnectivity-server")
                            .collect::<Vec<_>>(),
                    );
                }
            }
        }
    }
    let profile = &detection.profile;
    let files = load_files(&root, profile)?;
    let args = formats::read_args(profile, &files)?;
    let effective = Effective::from_args(&args);
    Ok(Node {
        root,
        detection,
        files,
        args,
        effective,
    })
}

/// The root the command works on: `--root`, or `/`.
pub fn sysroot(global: &crate::cli::GlobalOpts) -> Result<Sysroot> {
    Sysroot::new(global.root.clone().unwrap_or_else(|| "/".into()))
}

/// Is a process of the distribution's apiserver running? Only meaningful on
/// the real root (None under `--root`).
pub fn apiserver_running(node: &Node) -> Option<bool> {
    if !node.root.is_host() {
        return None;
    }
    Some(crate::system::process::any_named(
        &node.profile().detect.processes,
    ))
}

/// Writing to the real node needs root; `--check` and `--root` do not.
pub fn require_root(writes_host: bool, is_root: bool) -> Result<()> {
    if writes_host && !is_root {
        bail!(
            "apply changes the node's apiserver configuration and keys: run it as root (sudo irsa-agent apply ...), \
             or add --check to only see what would change"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_needed_only_to_write_the_real_node() {
        assert!(require_root(true, false)
            .unwrap_err()
            .to_string()
            .contains("run it as root"));
        require_root(true, true).unwrap();
        require_root(false, false).unwrap();
    }
}
