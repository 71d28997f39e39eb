//! Checks on the key files a configuration names: do they exist, can the
//! apiserver read them, does the signing key's public half verify.

use std::path::Path;

use anyhow::Result;

use crate::distro::{Profile, RestartMethod};
use crate::flags::SaState;
use crate::keys::{self, PublicKey};
use crate::system::fs::default_owner;
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
    report
        .warnings
        .extend(access_warnings(root, profile, state, default_owner().0));
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

/// Who else can read the signing key, or change what the apiserver trusts:
/// warnings naming the file, its mode or owner. irsa-agent only warns and
/// never changes the mode or owner of a file it did not create (an apiserver
/// running as another user may need them as they are); the files it creates
/// are 0600 (private keys) or 0644, owned by the user it runs as (`me`).
pub fn access_warnings(root: &Sysroot, profile: &Profile, state: &SaState, me: u32) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |path: &str, what: &str, loose: u32, risk: &str| {
        let Ok(Some(p)) = root.perms(path) else {
            return;
        };
        if p.mode & loose != 0 {
            out.push(format!(
                "{what} {path} has mode {:04o}: {risk}; irsa-agent leaves it as it is (chmod {} {path})",
                p.mode,
                if loose == 0o077 { "600" } else { "go-w" },
            ));
        }
        if p.uid != me {
            out.push(format!(
                "{what} {path} is owned by uid {}, not by uid {me} that irsa-agent runs as: that user {risk_owner}",
                p.uid,
                risk_owner = if loose == 0o077 {
                    "can read the private key"
                } else {
                    "can change it"
                }
            ));
        }
    };
    if let Some(sk) = &state.signing_key_file {
        check(
            sk,
            "signing key",
            0o077,
            "group or others can read the private key and sign tokens the cluster (and AWS) accept",
        );
    }
    for f in &state.key_files {
        check(
            f,
            "key file",
            0o022,
            "group or others can write it and add a key the apiserver accepts",
        );
    }
    check(
        &profile.config,
        "configuration file",
        0o022,
        "group or others can write it and change the apiserver's flags",
    );
    if let Some((dir, _)) = profile
        .config
        .rsplit_once('/')
        .filter(|(d, _)| !d.is_empty())
    {
        check(
            dir,
            "configuration directory",
            0o022,
            "group or others can replace the configuration file in it",
        );
    }
    check(
        &profile.key_dir,
        "key directory",
        0o022,
        "group or others can add or replace key files in it",
    );
    out
}
