//! Distribution profiles (`distros/*.toml`, embedded in the binary) and
//! detection from marker files.

use std::collections::BTreeMap;

use anyhow::{anyhow, Context, Result};
use serde::Deserialize;

use crate::system::Sysroot;

pub mod unit;

/// The embedded profiles, in no particular order.
const PROFILES: [(&str, &str); 6] = [
    ("microk8s", include_str!("../../distros/microk8s.toml")),
    ("kubeadm", include_str!("../../distros/kubeadm.toml")),
    ("minikube", include_str!("../../distros/minikube.toml")),
    ("k3s", include_str!("../../distros/k3s.toml")),
    ("rke2", include_str!("../../distros/rke2.toml")),
    ("k0s", include_str!("../../distros/k0s.toml")),
];

/// How the apiserver's flags are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// One argument per line (MicroK8s).
    Args,
    /// A static-pod manifest's container command list (kubeadm, minikube).
    Manifest,
    /// config.yaml + config.yaml.d drop-ins (k3s, RKE2).
    K3s,
    /// k0s.yaml spec.api.extraArgs / rawArgs.
    K0s,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartMethod {
    /// A systemd unit runs the apiserver.
    Systemd,
    /// The kubelet restarts the static pod when its manifest changes.
    StaticPod,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Detect {
    pub order: u32,
    /// Paths whose existence identifies the distribution (any one suffices).
    pub markers: Vec<String>,
    /// Process names that run the apiserver.
    #[serde(default)]
    pub processes: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restart {
    pub method: RestartMethod,
    #[serde(default)]
    pub unit: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Warnings {
    /// Shown by `apply` when it changes something.
    #[serde(default)]
    pub apply: Vec<String>,
}

/// One distribution.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    pub title: String,
    pub format: Format,
    /// The file holding the apiserver flags (k3s: the main config.yaml).
    pub config: String,
    /// k3s/RKE2: the drop-in irsa-agent owns.
    #[serde(default)]
    pub dropin: Option<String>,
    /// Where keys are installed: a directory the apiserver can read.
    pub key_dir: String,
    pub admin_kubeconfig: String,
    pub apiserver_port: u16,
    /// Static pods: the only host directories mounted into the apiserver pod.
    #[serde(default)]
    pub readable_dirs: Vec<String>,
    pub detect: Detect,
    pub restart: Restart,
    /// Service-account flags the distribution passes itself (k3s, RKE2, k0s).
    #[serde(default)]
    pub defaults: BTreeMap<String, String>,
    /// Variables expanded in the args file (MicroK8s).
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    #[serde(default)]
    pub warnings: Warnings,
    /// k3s/RKE2: the systemd unit whose command line adds flags.
    #[serde(default)]
    pub unit: Option<unit::UnitSpec>,
    /// k3s/RKE2: the unit's `--kube-apiserver-arg` items as found on the
    /// node (not in the profile file); they come after every config file's.
    #[serde(skip)]
    pub command_line: Vec<(String, crate::flags::Source)>,
}

impl Profile {
    /// Built-in defaults as (flag, value) pairs.
    pub fn default_args(&self) -> Vec<(String, String)> {
        self.defaults
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Every embedded profile, in detection order.
pub fn all() -> Vec<Profile> {
    let mut v: Vec<Profile> = PROFILES
        .iter()
        .map(|(name, text)| {
            toml::from_str::<Profile>(text)
                .with_context(|| format!("embedded profile distros/{name}.toml"))
                .expect("embedded profiles are checked by the test suite")
        })
        .collect();
    v.sort_by_key(|p| p.detect.order);
    v
}

/// The names accepted by `--distro`.
pub fn names() -> Vec<String> {
    all().into_iter().map(|p| p.name).collect()
}

/// The profile called `name`.
pub fn by_name(name: &str) -> Result<Profile> {
    all().into_iter().find(|p| p.name == name).ok_or_else(|| {
        anyhow!(
            "--distro {name:?} is not a known distribution (known: {})",
            names().join(", ")
        )
    })
}

/// What detection found.
#[derive(Debug, Clone)]
pub struct Detection {
    pub profile: Profile,
    /// The marker that matched (None when --distro was given).
    pub marker: Option<String>,
    /// Other distributions whose markers also exist.
    pub also_found: Vec<String>,
}

/// Pick the distribution: `--distro` if given, else the first profile (in
/// detection order) with a marker present under the root.
pub fn detect(root: &Sysroot, forced: Option<&str>) -> Result<Detection> {
    if let Some(name) = forced {
        return Ok(Detection {
            profile: by_name(name)?,
            marker: None,
            also_found: Vec::new(),
        });
    }
    let mut found: Vec<(Profile, String)> = Vec::new();
    for p in all() {
        if let Some(m) = p.detect.markers.iter().find(|m| root.exists(m)) {
            let m = m.clone();
            found.push((p, m));
        }
    }
    let mut it = found.into_iter();
    let Some((profile, marker)) = it.next() else {
        let looked: Vec<String> = all()
            .iter()
            .map(|p| format!("{}: {}", p.name, p.detect.markers.join(", ")))
            .collect();
        return Err(anyhow!(
            "no Kubernetes distribution detected under {}; looked for {}. Pass --distro NAME to choose one",
            root.display_root(),
            looked.join("; ")
        ));
    };
    // minikube is kubeadm inside; k3s/RKE2 leave /etc/rancher behind: only
    // name the ones that are not the expected companions.
    let also_found = it
        .map(|(p, _)| p.name)
        .filter(|n| !(profile.name == "minikube" && n == "kubeadm"))
        .collect();
    Ok(Detection {
        profile,
        marker: Some(marker),
        also_found,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_profile_loads_with_its_file_name() {
        let all = all();
        assert_eq!(all.len(), PROFILES.len());
        for (file, _) in PROFILES {
            let p = by_name(file).unwrap();
            assert_eq!(p.name, file);
            assert!(p.config.starts_with('/') && p.key_dir.starts_with('/'));
            if p.restart.method == RestartMethod::Systemd {
                assert!(
                    p.restart.unit.is_some(),
                    "{file}: systemd restart needs a unit"
                );
            }
            if p.format == Format::K3s {
                let d = p
                    .dropin
                    .as_deref()
                    .expect("k3s-style profiles name their drop-in");
                assert!(d.starts_with(&format!("{}.d/", p.config)));
            }
        }
        let order: Vec<_> = all.iter().map(|p| p.name.as_str()).collect();
        let pos = |n| order.iter().position(|x| *x == n).unwrap();
        assert!(
            pos("minikube") < pos("kubeadm"),
            "minikube is checked before kubeadm"
        );
        assert!(
            pos("rke2") < pos("kubeadm"),
            "RKE2 is checked before kubeadm"
        );
    }

    #[test]
    fn unknown_name_lists_known_ones() {
        let err = by_name("openshift").unwrap_err().to_string();
        assert!(
            err.contains("--distro \"openshift\"") && err.contains("microk8s, minikube"),
            "{err}"
        );
    }
}
