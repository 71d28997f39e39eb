//! `keygen`, `discovery` and `aws`: read and validate every input first, build
//! every document in memory, write every file in full next to its place
//! (a temporary file: a full disk fails here), then rename them into place.
//! An error leaves no file behind.
//!
//! With `--root`, every absolute path of their flags is a path on that node
//! (see [`crate::global_flags`]); `--distro` means nothing to them and is refused.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{json, Value};

use super::aws::{self, Subject};
use super::discovery::published_files;
use super::jwk::{jwks, to_pretty_json};
use super::thumbprint::{self, Thumbprint};
use super::{read_key_file, PrivateKey, PublicKey};
use crate::cli::{AwsOpts, DiscoveryOpts, GlobalOpts, JwksLayout, KeyType, KeygenOpts};
use crate::global_flags::{refuse_distro, FlagPaths};
use crate::issuer::Issuer;
use crate::output::Outcome;
use crate::system::fs::{default_owner, stage, Perms, Staged};

fn key_type_name(k: KeyType) -> &'static str {
    match k {
        KeyType::Rsa2048 => "rsa-2048",
        KeyType::Rsa4096 => "rsa-4096",
        KeyType::EcP256 => "ec-p256",
    }
}

/// Log warnings (stderr) and put them in the JSON.
fn finish_warnings(out: &mut Outcome, warnings: &[String]) {
    for w in warnings {
        tracing::warn!("{w}");
    }
    out.set("warnings", warnings.to_vec());
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

pub fn keygen(global: &GlobalOpts, opts: &KeygenOpts) -> anyhow::Result<Outcome> {
    refuse_distro(
        global,
        "keygen",
        "it writes only the files --private-key and --public-key name",
    )?;
    let paths = FlagPaths::new(global)?;
    let under = paths.suffix();
    let priv_path = &paths.write("--private-key", &opts.private_key)?;
    let pub_path = &paths.write("--public-key", &opts.public_key)?;
    anyhow::ensure!(
        priv_path != pub_path,
        "--private-key and --public-key are the same file {}{under}",
        opts.private_key.display()
    );
    for (flag, p, given) in [
        ("--private-key", priv_path, &opts.private_key),
        ("--public-key", pub_path, &opts.public_key),
    ] {
        if !opts.force && p.symlink_metadata().is_ok() {
            anyhow::bail!(
                "{flag} {}{under}: already exists (pass --force to overwrite)",
                given.display()
            );
        }
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            anyhow::ensure!(
                dir.is_dir(),
                "{flag} {}{under}: directory {} does not exist",
                given.display(),
                given.parent().unwrap_or(dir).display()
            );
        }
    }
    let key = PrivateKey::generate(opts.key_type)?;
    let public = key.public_key();
    // Both files are written in full before either is put in place: a full
    // disk leaves neither (and with --force, never a new private key next to
    // the old public one). The private key's file is 0600 from its creation.
    let (uid, gid) = default_owner();
    let perms = |mode| Perms { mode, uid, gid };
    let private_ctx = || format!("--private-key {}{under}", opts.private_key.display());
    let public_ctx = || format!("--public-key {}{under}", opts.public_key.display());
    let pem = key.to_pkcs8_pem();
    let staged_private = stage(
        priv_path,
        &display(&opts.private_key),
        pem.as_bytes(),
        perms(0o600),
    )
    .with_context(private_ctx)?;
    let staged_public = stage(
        pub_path,
        &display(&opts.public_key),
        public.to_pem().as_bytes(),
        perms(0o644),
    )
    .with_context(public_ctx)?;
    let private_existed = priv_path.symlink_metadata().is_ok();
    staged_private
        .commit(opts.force)
        .with_context(private_ctx)?;
    if let Err(e) = staged_public.commit(opts.force) {
        if !private_existed {
            let _ = std::fs::remove_file(priv_path);
        }
        return Err(e.context(public_ctx()));
    }
    let mut out = Outcome::new();
    out.set("kid", public.kid())
        .set("alg", public.alg())
        .set("type", key_type_name(opts.key_type))
        .set("private_key", display(&opts.private_key))
        .set("public_key", display(&opts.public_key))
        .set("root", paths.root_json())
        .set("warnings", Vec::<String>::new());
    out.line(format!("kid: {}", public.kid())).line(format!(
        "wrote {} (private, PKCS#8, mode 0600) and {} (public, PKIX, mode 0644){under}, {} {}",
        opts.private_key.display(),
        opts.public_key.display(),
        key_type_name(opts.key_type),
        public.alg()
    ));
    Ok(out)
}

/// Keys with the file each was first found in.
pub type SourcedKeys = Vec<(PublicKey, PathBuf)>;

/// The keys of every `--public-key` file, in order, duplicates across files
/// dropped (with a note), plus notes for the blocks the apiserver skips. Each
/// file is opened where `where_` puts it and named as given.
pub fn load_public_keys(
    paths: &[PathBuf],
    where_: &FlagPaths,
) -> anyhow::Result<(SourcedKeys, Vec<String>)> {
    let mut keys: Vec<(PublicKey, PathBuf)> = Vec::new();
    let mut notes = Vec::new();
    for path in paths {
        let data = std::fs::read(where_.read("--public-key", path)?).map_err(|e| {
            anyhow::anyhow!(
                "--public-key {}{}: cannot read: {e}",
                path.display(),
                where_.suffix()
            )
        })?;
        let file = read_key_file(&data, path)?;
        notes.extend(file.skipped);
        for key in file.keys {
            if let Some((_, first)) = keys.iter().find(|(k, _)| *k == key) {
                notes.push(format!(
                    "{}: key {} is already in {}, dropped",
                    path.display(),
                    key.kid(),
                    first.display()
                ));
            } else {
                keys.push((key, path.clone()));
            }
        }
    }
    Ok((keys, notes))
}

pub fn discovery(global: &GlobalOpts, opts: &DiscoveryOpts) -> anyhow::Result<Outcome> {
    refuse_distro(
        global,
        "discovery",
        "it reads only the key files --public-key names",
    )?;
    let paths = FlagPaths::new(global)?;
    let under = paths.suffix();
    let issuer = Issuer::from_flag(&opts.issuer, opts.allow_port)?;
    let (loaded, notes) = load_public_keys(&opts.public_keys, &paths)?;
    let keys: Vec<PublicKey> = loaded.iter().map(|(k, _)| k.clone()).collect();
    let mut warnings = issuer.warnings.clone();
    warnings.extend(notes);
    let files = published_files(&issuer, opts.layout, &keys);

    if let Some(given) = &opts.out {
        let dir = &paths.write("--out", given)?;
        let out_ctx = || format!("--out {}{under}", given.display());
        anyhow::ensure!(
            !dir.exists() || dir.is_dir(),
            "--out {}{under}: not a directory",
            given.display()
        );
        let mut staged = Vec::new();
        for f in &files {
            let path = dir.join(f.rel_path);
            ensure_dir(path.parent().expect("joined path has a parent")).with_context(out_ctx)?;
            staged.push(stage_public(&path, f.contents.as_bytes()).with_context(out_ctx)?);
        }
        commit_all(staged).with_context(out_ctx)?;
    }

    let mut out = Outcome::new();
    out.set("issuer", issuer.as_str())
        .set("root", paths.root_json())
        .set(
            "layout",
            match opts.layout {
                JwksLayout::Kube => "kube",
                JwksLayout::KeysJson => "keys-json",
            },
        )
        .set(
            "keys",
            loaded
                .iter()
                .map(|(k, p)| json!({"kid": k.kid(), "alg": k.alg(), "kty": k.kty(), "source": display(p)}))
                .collect::<Vec<Value>>(),
        );
    out.line(format!("issuer: {issuer}"));
    for (k, p) in &loaded {
        out.line(format!(
            "key {} {} (from {})",
            k.kid(),
            k.alg(),
            p.display()
        ));
    }
    if let Some(dir) = &opts.out {
        out.set(
            "files",
            files
                .iter()
                .map(|f| json!({"path": display(&dir.join(f.rel_path)), "url": f.url, "content_type": f.content_type}))
                .collect::<Vec<Value>>(),
        );
        out.line(format!(
            "publish these files{under} over HTTPS, publicly readable, at exactly these URLs:"
        ));
        for f in &files {
            out.line(format!(
                "  {} -> {} (Content-Type: {})",
                dir.join(f.rel_path).display(),
                f.url,
                f.content_type
            ));
        }
    } else {
        out.set("files", Vec::<Value>::new());
    }
    if opts.jwks_only {
        out.raw_stdout = Some(to_pretty_json(&jwks(&keys)));
    }
    finish_warnings(&mut out, &warnings);
    Ok(out)
}

pub fn aws(global: &GlobalOpts, opts: &AwsOpts) -> anyhow::Result<Outcome> {
    refuse_distro(
        global,
        "aws",
        "it reads only the issuer and --ca-file and writes only into --out",
    )?;
    let paths = FlagPaths::new(global)?;
    let under = paths.suffix();
    let out_dir = &paths.write("--out", &opts.out)?;
    let issuer = Issuer::from_flag(&opts.issuer, opts.allow_port)?;
    let audiences = aws::normalize_audiences(&opts.audiences)?;
    let subject = match (&opts.namespace, &opts.service_account) {
        (Some(ns), Some(sa)) => {
            aws::validate_namespace(ns)?;
            aws::validate_service_account(sa)?;
            Some(Subject::ServiceAccount {
                namespace: ns.clone(),
                name: sa.clone(),
            })
        }
        (Some(ns), None) => {
            aws::validate_namespace(ns)?;
            Some(Subject::Namespace(ns.clone()))
        }
        (None, _) => None,
    };
    if let Some(name) = &opts.role_name {
        aws::validate_role_name(name)?;
        anyhow::ensure!(
            subject.is_some(),
            "--role-name needs --namespace: the trust policy is written only for a namespace or a service account"
        );
    }
    anyhow::ensure!(
        !out_dir.exists() || out_dir.is_dir(),
        "--out {}{under}: not a directory",
        opts.out.display()
    );

    let mut warnings = issuer.warnings.clone();
    let mut notes = Vec::new();
    let thumb: Thumbprint = if let Some(ca) = &opts.ca_file {
        let data = std::fs::read(paths.read("--ca-file", ca)?)
            .map_err(|e| anyhow::anyhow!("--ca-file {}{under}: cannot read: {e}", ca.display()))?;
        thumbprint::from_ca_file(&data, ca)?
    } else if opts.fetch_thumbprint {
        thumbprint::fetch(&issuer, opts.insecure_skip_tls_verify)?
    } else {
        notes.push(format!(
            "ThumbprintList holds the placeholder {}: AWS ignores the thumbprint when the issuer's \
             certificate chains to a well-known CA (S3, CloudFront, public CAs). For a private CA pin the \
             real one with --ca-file or --fetch-thumbprint.",
            aws::PLACEHOLDER_THUMBPRINT
        ));
        Thumbprint {
            value: aws::PLACEHOLDER_THUMBPRINT.to_string(),
            source: "placeholder".to_string(),
            warnings: Vec::new(),
        }
    };
    warnings.extend(thumb.warnings.iter().cloned());

    let provider = aws::oidc_provider(&issuer, &audiences, &thumb.value);
    let policy = subject
        .as_ref()
        .map(|s| aws::trust_policy(&issuer, &audiences, s));
    if policy.is_none() {
        notes.push(
            "no --namespace: trust-policy.json not written (a policy without a `sub` condition would let \
             every service account of the cluster assume the role)"
                .to_string(),
        );
    }

    // Everything is validated: write.
    // The files' real places (under the root with --root): the printed
    // `aws iam` commands read them from there.
    let provider_path = out_dir.join("oidc-provider.json");
    let policy_path = out_dir.join("trust-policy.json");
    let out_ctx = || format!("--out {}{under}", opts.out.display());
    ensure_dir(out_dir).with_context(out_ctx)?;
    let mut staged = vec![
        stage_public(&provider_path, to_pretty_json(&provider).as_bytes()).with_context(out_ctx)?,
    ];
    if let Some(p) = &policy {
        staged
            .push(stage_public(&policy_path, to_pretty_json(p).as_bytes()).with_context(out_ctx)?);
    }
    commit_all(staged).with_context(out_ctx)?;

    let role_name = opts
        .role_name
        .clone()
        .unwrap_or_else(|| "ROLE_NAME".to_string());
    let role_arn = aws::role_arn(&role_name);
    let mut commands = vec![format!(
        "aws iam create-open-id-connect-provider --cli-input-json file://{}",
        provider_path.display()
    )];
    if policy.is_some() {
        commands.push(format!(
            "aws iam create-role --role-name {role_name} --assume-role-policy-document file://{}",
            policy_path.display()
        ));
    }
    notes.push(if policy.is_some() {
        format!(
            "{acct} is a placeholder for your AWS account id, in trust-policy.json and the ARNs above: \
             sed -i \"s/{acct}/$(aws sts get-caller-identity --query Account --output text)/\" {}",
            policy_path.display(),
            acct = aws::ACCOUNT_ID
        )
    } else {
        format!(
            "{} in the provider ARN above is a placeholder for your AWS account id",
            aws::ACCOUNT_ID
        )
    });

    let mut out = Outcome::new();
    let mut files = vec![json!({"path": display(&provider_path), "kind": "oidc-provider"})];
    if policy.is_some() {
        files.push(json!({"path": display(&policy_path), "kind": "trust-policy"}));
    }
    out.set("issuer", issuer.as_str())
        .set("root", paths.root_json())
        .set("files", files)
        .set("provider_arn", aws::provider_arn(&issuer))
        .set("account_id_placeholder", aws::ACCOUNT_ID)
        .set(
            "thumbprint",
            json!({"value": thumb.value, "source": thumb.source}),
        )
        .set("commands", commands.clone());
    out.line(format!("wrote {}", provider_path.display()));
    if policy.is_some() {
        out.line(format!("wrote {}", policy_path.display()));
    }
    out.line(format!("OIDC provider: {}", aws::provider_arn(&issuer)));
    out.line(format!("thumbprint {} ({})", thumb.value, thumb.source));
    out.line("create them with:");
    for c in &commands {
        out.line(format!("  {c}"));
    }
    if let Some(s) = &subject {
        let env = json!({
            "AWS_ROLE_ARN": role_arn,
            "AWS_WEB_IDENTITY_TOKEN_FILE": aws::TOKEN_FILE,
        });
        out.set("role_arn", role_arn.clone())
            .set(
                "service_account_annotation",
                json!({aws::ROLE_ARN_ANNOTATION: role_arn}),
            )
            .set("env", env);
        let who = match s {
            Subject::ServiceAccount { namespace, name } => {
                format!("-n {namespace} serviceaccount/{name}")
            }
            Subject::Namespace(ns) => format!("-n {ns} serviceaccount/NAME"),
        };
        out.line("with amazon-eks-pod-identity-webhook, annotate the service account:")
            .line(format!("  kubectl annotate {who} {}={role_arn}", aws::ROLE_ARN_ANNOTATION))
            .line(format!(
                "without it, give the pod a projected service-account token (audience {}) at {} and set:",
                audiences[0],
                aws::TOKEN_FILE
            ))
            .line(format!("  AWS_ROLE_ARN={role_arn}"))
            .line(format!("  AWS_WEB_IDENTITY_TOKEN_FILE={}", aws::TOKEN_FILE));
    }
    for n in &notes {
        out.line(format!("note: {n}"));
    }
    out.set("notes", notes);
    finish_warnings(&mut out, &warnings);
    Ok(out)
}

/// A public file of the user's (not a node path), mode 0644, owned by the
/// caller, written in full next to its place.
fn stage_public(path: &Path, contents: &[u8]) -> anyhow::Result<Staged> {
    let (uid, gid) = default_owner();
    stage(
        path,
        &display(path),
        contents,
        Perms {
            mode: 0o644,
            uid,
            gid,
        },
    )
}

/// Put every staged file in place, replacing what is there: once every file
/// is written, only a rename can fail.
fn commit_all(staged: Vec<Staged>) -> anyhow::Result<()> {
    staged.into_iter().try_for_each(|s| s.commit(true))
}

/// Create `dir` and its parents if missing.
fn ensure_dir(dir: &Path) -> anyhow::Result<()> {
    fs_err::create_dir_all(dir).map_err(Into::into)
}
