//! The pure half of `apply`: from the node as read and the desired state, every
//! file to write and why. Reads key files named on the command line; writes
//! nothing.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use crate::cli::ApplyOpts;
use crate::flags::{converge, Desired, Effective, SaState};
use crate::issuer::{differ_only_by_trailing_slash, Issuer};
use crate::keys::{self, PrivateKey, PublicKey};
use crate::node::Node;
use crate::{formats, keycheck};

/// Prefix of every key file irsa-agent installs.
pub const KEY_PREFIX: &str = "irsa-agent-";

/// One file the run writes.
#[derive(Debug, Clone)]
pub struct FileChange {
    /// Node path.
    pub path: String,
    pub old: Option<String>,
    pub new: Vec<u8>,
    /// Mode for a new file (an existing one keeps its own).
    pub mode: u32,
    /// Private key material: never shown.
    pub secret: bool,
}

impl FileChange {
    pub(crate) fn action(&self) -> &'static str {
        if self.old.is_some() {
            "modified"
        } else {
            "created"
        }
    }

    /// A unified diff of only the lines that change (no context: the lines
    /// around them are the user's and may hold secrets), with the values of
    /// secret keys masked on both sides ([`crate::redact`]); a note for
    /// private key files.
    pub fn diff(&self) -> String {
        if self.secret {
            return format!(
                "--- /dev/null\n+++ b{}\n(private key, content not shown)\n",
                self.path
            );
        }
        let new = crate::redact::file_text(&String::from_utf8_lossy(&self.new));
        let old = crate::redact::file_text(self.old.as_deref().unwrap_or(""));
        let old_name = if self.old.is_some() {
            format!("a{}", self.path)
        } else {
            "/dev/null".to_string()
        };
        similar::TextDiff::from_lines(&old, &new)
            .unified_diff()
            .context_radius(0)
            .header(&old_name, &format!("b{}", self.path))
            .to_string()
    }
}

/// Everything `apply` decided, before touching the node.
pub struct Plan {
    pub target: SaState,
    pub changes: Vec<FileChange>,
    pub warnings: Vec<String>,
    /// Advice that is not a problem (kubeadm ClusterConfiguration snippets).
    pub notes: Vec<String>,
}

/// Decide every change. Reads the node and the key files given on the command
/// line; writes nothing.
pub fn plan(node: &Node, issuer: &Issuer, opts: &ApplyOpts) -> Result<Plan> {
    let profile = node.profile();
    let current = node.effective.state();
    let mut warnings: Vec<String> = issuer.warnings.clone();
    for s in &node.effective.issuers {
        if differ_only_by_trailing_slash(&s.value, issuer.as_str()) {
            bail!(
                "--issuer {} differs from the configured issuer {} ({}) only by a trailing slash; the apiserver \
                 compares issuers as exact strings and would treat them as two. Use exactly the spelling you publish",
                issuer,
                s.value,
                s.source
            );
        }
    }
    if current.issuers.is_empty() {
        warnings.push(format!(
            "no --service-account-issuer was set in {}; the apiserver cannot have been running with this configuration",
            profile.config
        ));
    }

    let mut changes: Vec<FileChange> = Vec::new();
    let mut extra_key_files: Vec<String> = Vec::new();
    let mut signing_key_file = None;
    let mut signing_public: Option<PublicKey> = None;

    // The signing key: installed, generated, or the current one kept.
    let new_private = if let Some(path) = &opts.signing_key {
        let bytes =
            fs_err::read(path).map_err(|e| anyhow!("--signing-key {}: {e}", path.display()))?;
        Some(
            PrivateKey::parse(&bytes, path)
                .with_context(|| format!("--signing-key {}", path.display()))?,
        )
    } else if opts.generate_key {
        if generated_key_in_use(node, &current) {
            None
        } else {
            Some(PrivateKey::generate(opts.key_type).context("generating a signing key")?)
        }
    } else {
        None
    };
    if let Some(private) = &new_private {
        let public = private.public_key();
        let stem = format!("{}/{KEY_PREFIX}{}", profile.key_dir, short_kid(&public));
        let key_path = format!("{stem}.key");
        let pub_path = format!("{stem}.pub");
        install_key(
            node,
            &key_path,
            private.to_pkcs8_pem().as_bytes(),
            0o600,
            true,
            &mut changes,
        )?;
        install_key(
            node,
            &pub_path,
            public.to_pem().as_bytes(),
            0o644,
            false,
            &mut changes,
        )?;
        signing_key_file = Some(key_path);
        extra_key_files.push(pub_path);
        signing_public = Some(public);
    }
    // The files the configuration names today: a missing one keeps the
    // apiserver from starting. Keeping the current key, it must verify, or the
    // apiserver could not validate its own tokens.
    let report = keycheck::check(&node.root, profile, &current)?;
    if let (None, Some(problem)) = (&new_private, report.signing_key_unverifiable) {
        bail!("{problem}; fix the key files or pass --signing-key / --generate-key");
    }
    warnings.extend(report.warnings);
    let accepted = report.accepted;

    // Extra public keys to accept (those not accepted already).
    for path in &opts.public_keys {
        let bytes =
            fs_err::read(path).map_err(|e| anyhow!("--public-key {}: {e}", path.display()))?;
        let keys: Vec<PublicKey> = keys::parse_public_keys(&bytes, path)
            .with_context(|| format!("--public-key {}", path.display()))?
            .into_iter()
            .collect();
        if keys.is_empty() {
            bail!(
                "--public-key {}: the file holds no public key the apiserver would read",
                path.display()
            );
        }
        let keys: Vec<PublicKey> = keys
            .into_iter()
            .filter(|k| Some(k) != signing_public.as_ref() && !accepted.contains(k))
            .collect();
        let Some(first) = keys.first() else {
            continue; // every key in it is accepted already
        };
        let dest = format!(
            "{}/{KEY_PREFIX}extra-{}.pub",
            profile.key_dir,
            short_kid(first)
        );
        let pem: String = keys.iter().map(PublicKey::to_pem).collect();
        install_key(node, &dest, pem.as_bytes(), 0o644, false, &mut changes)?;
        extra_key_files.push(dest);
    }

    let desired = Desired {
        issuer: issuer.as_str().to_string(),
        audiences: opts.audiences.clone(),
        signing_key_file,
        extra_key_files,
    };
    let target = converge(&current, &desired);
    if let Some(unit) = &profile.unit {
        crate::distro::unit::check_plan(&unit.name, &profile.command_line, &current, &target)?;
    }
    let new_files = formats::write(profile, &node.files, &target)?;
    // Read the result back the way the distribution will, before writing anything.
    let after = Effective::from_args(&formats::read_args(profile, &new_files)?).state();
    if after != target {
        bail!(
            "internal error: the edited configuration would give {after:?} instead of {target:?}; nothing was written"
        );
    }
    for (path, new) in &new_files {
        let old = node.files.get(path);
        if old != Some(new) {
            let mode = node.root.perms(path)?.map(|p| p.mode).unwrap_or(0o600);
            changes.push(FileChange {
                path: path.clone(),
                old: old.cloned(),
                new: new.clone().into_bytes(),
                mode,
                secret: false,
            });
        }
    }
    // A file that cannot be written stops the run before anything is.
    for c in &changes {
        node.root.check_writable(&c.path)?;
    }
    // The current files were checked above; the ones this run adds must be
    // visible to the apiserver too.
    let added: Vec<String> = target
        .key_files
        .iter()
        .filter(|k| !current.key_files.contains(k))
        .cloned()
        .collect();
    warnings.extend(keycheck::outside_pod_mounts(profile, &added));
    let mut notes = Vec::new();
    if !changes.is_empty() {
        warnings.extend(profile.warnings.apply.iter().cloned());
        if profile.format == crate::distro::Format::Manifest && profile.name == "kubeadm" {
            notes.extend(crate::kubeadm::notes(&target));
        }
    }
    if !node.detection.also_found.is_empty() {
        warnings.push(format!(
            "markers of {} were found too; pass --distro if {} is not the one running",
            node.detection.also_found.join(", "),
            profile.name
        ));
    }
    Ok(Plan {
        target,
        changes,
        warnings,
        notes,
    })
}

/// With --generate-key: the current signing key if irsa-agent generated it
/// (a second run must not rotate the key again).
fn generated_key_in_use(node: &Node, current: &SaState) -> bool {
    let profile = node.profile();
    let Some(sk) = &current.signing_key_file else {
        return false;
    };
    let in_dir = Path::new(sk).parent() == Some(Path::new(&profile.key_dir));
    let ours = Path::new(sk)
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| {
            n.starts_with(KEY_PREFIX) && !n.starts_with(&format!("{KEY_PREFIX}extra-"))
        });
    in_dir && ours && node.root.exists(sk)
}

/// The first 16 characters of the kid: enough to tell keys apart in a file name.
fn short_kid(k: &PublicKey) -> String {
    k.kid().chars().take(16).collect()
}

/// Plan to install a key file unless the same key is already there.
fn install_key(
    node: &Node,
    path: &str,
    pem: &[u8],
    mode: u32,
    secret: bool,
    changes: &mut Vec<FileChange>,
) -> Result<()> {
    if let Some(existing) = node.root.read_bytes_optional(path)? {
        let same = if secret {
            PrivateKey::parse(&existing, Path::new(path))
                .ok()
                .zip(PrivateKey::parse(pem, Path::new(path)).ok())
                .is_some_and(|(a, b)| a.public_key() == b.public_key())
        } else {
            keys::parse_public_keys(&existing, Path::new(path)).ok()
                == keys::parse_public_keys(pem, Path::new(path)).ok()
        };
        if same {
            return Ok(());
        }
        bail!(
            "{path} already exists and holds a different key; move it away or choose another key"
        );
    }
    changes.push(FileChange {
        path: path.to_string(),
        old: None,
        new: pem.to_vec(),
        mode,
        secret,
    });
    Ok(())
}
