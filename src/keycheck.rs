//! Checks on the key files a configuration names: do they exist, can the
//! apiserver read them, does the signing key's public half verify.

use std::path::Path;

use anyhow::Result;

use crate::distro::{Profile, RestartMethod};
use crate::flags::SaState;
use crate::keys::{self, PublicKey};
use crate::system::Sysroot;

/// Problems found, as sentences.
#[derive(Debug, Default)]
pub struct KeyReport {
    pub warnings: Vec<String>,
    /// The signing key's public half is in no key file (the apiserver could
    /// not verify its own tokens).
    pub signing_key_unverifiable: Option<String>,
    /// Every public key the key files hold: the tokens the apiserver accepts.
    pub accepted: Vec<PublicKey>,
}

/// Every public key in the key files, skipping unreadable files (reported).
fn load_key_files(root: &Sysroot, files: &[String], report: &mut KeyReport) -> Vec<PublicKey> {
    let mut keys = Vec::new();
    for f in files {
        match root.read_bytes_optional(f) {
            Ok(Some(bytes)) => match keys::parse_public_keys(&bytes, Path::new(f)) {
                Ok(k) => keys.extend(k),
                Err(e) => report
                    .warnings
                    .push(format!("key file {f} cannot be read as keys: {e:#}")),
            },
            Ok(None) => report.warnings.push(format!(
                "key file {f} does not exist: the apiserver will not start"
            )),
            Err(e) => report.warnings.push(format!("{e:#}")),
        }
    }
    keys
}

/// Check `state`'s key files and signing key on the node.
pub fn check(root: &Sysroot, profile: &Profile, state: &SaState) -> Result<KeyReport> {
    let mut report = KeyReport::default();
    report.accepted = load_key_files(root, &state.key_files, &mut report);
    if let Some(sk) = &state.signing_key_file {
        match root.read_bytes_optional(sk)? {
            None => report.warnings.push(format!(
                "signing key file {sk} does not exist: the apiserver will not start"
            )),
            Some(bytes) => match keys::PrivateKey::parse(&bytes, Path::new(sk)) {
                Err(e) => report.warnings.push(format!("{e:#}")),
                Ok(private) => {
                    let pubkey = private.public_key();
                    if !report.accepted.contains(&pubkey) {
                        report.signing_key_unverifiable = Some(format!(
                            "the public half of signing key {sk} (kid {}) is in none of the key files [{}]: \
                             the apiserver could not verify the tokens it signs",
                            pubkey.kid(),
                            state.key_files.join(", ")
                        ));
                    }
                }
            },
        }
    }
    let files: Vec<String> = state
        .key_files
        .iter()
        .chain(state.signing_key_file.iter())
        .cloned()
        .collect();
    report.warnings.extend(outside_pod_mounts(profile, &files));
    Ok(report)
}

/// Static pods see only the host directories mounted into them: a warning for
/// each of `files` outside them.
pub fn outside_pod_mounts(profile: &Profile, files: &[String]) -> Vec<String> {
    if profile.restart.method != RestartMethod::StaticPod || profile.readable_dirs.is_empty() {
        return Vec::new();
    }
    files
        .iter()
        .filter(|f| {
            !profile
                .readable_dirs
                .iter()
                .any(|d| f.starts_with(&format!("{}/", d.trim_end_matches('/'))))
        })
        .map(|f| {
            format!(
                "{f} is outside the directories mounted into the apiserver pod ({}): the apiserver cannot read it",
                profile.readable_dirs.join(", ")
            )
        })
        .collect()
}
