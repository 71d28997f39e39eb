//! `apply` end to end on fixture sysroots: golden files, byte preservation,
//! the effective apiserver settings read back by the independent reader in
//! tests/support (not by the code under test), idempotence, `--check`,
//! backups, key installation, the JSON contract and every bad input.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use assert_cmd::prelude::*;
use serde_json::Value;
use support::{
    apiserver_args, copy_fixture, json_of, node_files, sa_settings, snapshot, SaSettings,
};

const ISSUER: &str = "https://oidc.example.com/cluster-1";

/// (fixture, distro name)
const CASES: [(&str, &str); 11] = [
    ("microk8s-default", "microk8s"),
    ("microk8s-audiences", "microk8s"),
    ("kubeadm-default", "kubeadm"),
    ("kubeadm-audiences", "kubeadm"),
    ("kubeadm-rotated", "kubeadm"),
    ("kubeadm-custom-key", "kubeadm"),
    ("minikube-default", "minikube"),
    ("k3s-default", "k3s"),
    ("k3s-dropins", "k3s"),
    ("rke2-default", "rke2"),
    ("k0s-default", "k0s"),
];

fn irsa(root: &Path) -> Command {
    let mut c = Command::cargo_bin("irsa-agent").unwrap();
    c.arg("--root").arg(root);
    c
}

/// Run and parse stdout as exactly one JSON object.
fn json_run(root: &Path, args: &[&str]) -> (Value, i32) {
    let out = irsa(root)
        .args(["--output", "json"])
        .args(args)
        .output()
        .unwrap();
    (json_of(&out), out.status.code().unwrap())
}

fn apply(root: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["apply", "--issuer", ISSUER, "--no-restart"];
    args.extend_from_slice(extra);
    let (v, code) = json_run(root, &args);
    assert_eq!(code, 0, "apply failed: {v}");
    v
}

fn changed_files(
    before: &BTreeMap<PathBuf, (Vec<u8>, u32)>,
    after: &BTreeMap<PathBuf, (Vec<u8>, u32)>,
) -> Vec<PathBuf> {
    after
        .iter()
        .filter(|(p, v)| v.1 & 0o170000 == 0o100000 && before.get(*p) != Some(v))
        .map(|(p, _)| p.clone())
        .collect()
}

fn settings(root: &Path, distro: &str) -> SaSettings {
    sa_settings(&apiserver_args(root, distro).unwrap()).unwrap()
}

fn is_managed_flag_line(line: &str) -> bool {
    [
        "service-account-issuer",
        "service-account-key-file",
        "service-account-signing-key-file",
        "api-audiences",
    ]
    .iter()
    .any(|f| line.contains(f))
}

/// Every line that is not a managed flag line survives, in order, byte for byte.
fn assert_other_lines_kept(path: &Path, old: &[u8], new: &[u8]) {
    let old = String::from_utf8_lossy(old);
    let new = String::from_utf8_lossy(new);
    let mut new_lines = new.split_inclusive('\n');
    for line in old
        .split_inclusive('\n')
        .filter(|l| !is_managed_flag_line(l))
    {
        assert!(
            new_lines.any(|n| n == line),
            "{}: line {line:?} was changed or moved",
            path.display()
        );
    }
}

/// The public half of a PEM file (private or public), via openssl: an
/// independent check that the signing key verifies.
fn public_pem(path: &Path) -> Option<String> {
    for args in [
        vec!["pkey", "-pubout", "-in"],
        vec!["pkey", "-pubin", "-pubout", "-in"],
    ] {
        let out = Command::new("openssl")
            .args(&args)
            .arg(path)
            .output()
            .ok()?;
        if out.status.success() {
            return Some(String::from_utf8(out.stdout).unwrap());
        }
    }
    None
}

/// The semantics the change must have, checked on the argv the distro builds.
fn assert_semantics(root: &Path, before: &SaSettings, after: &SaSettings, issuer: &str) {
    assert_eq!(
        after.issuers.first().map(String::as_str),
        Some(issuer),
        "the new issuer signs"
    );
    for i in &before.issuers {
        assert!(
            after.issuers.contains(i),
            "old issuer {i} still accepted: {after:?}"
        );
    }
    for a in &before.audiences {
        assert!(
            after.audiences.contains(a),
            "old audience {a} still accepted: {after:?}"
        );
    }
    assert!(after.audiences.contains(&"sts.amazonaws.com".to_string()));
    assert!(after.audiences_explicit, "audiences are written explicitly");
    for k in &before.key_files {
        assert!(after.key_files.contains(k), "old key file {k} kept");
    }
    let mut seen = Vec::new();
    for v in after.issuers.iter().chain(&after.key_files) {
        assert!(!seen.contains(&v), "duplicate {v}");
        seen.push(v);
    }
    let signing = after.signing_key_file.as_ref().expect("a signing key");
    let sign_pub = public_pem(&root.join(signing.trim_start_matches('/')))
        .expect("signing key readable by openssl");
    assert!(
        after
            .key_files
            .iter()
            .any(
                |k| public_pem(&root.join(k.trim_start_matches('/'))).as_deref()
                    == Some(sign_pub.as_str())
            ),
        "the signing key's public half is in a key file"
    );
}

fn golden_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/apply")
        .join(case)
}

fn check_golden(case: &str, root: &Path, files: &[PathBuf]) {
    let dir = golden_dir(case);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let _ = std::fs::remove_dir_all(&dir);
        for f in files {
            let dest = dir.join(f);
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(root.join(f), &dest).unwrap();
        }
    }
    let mut golden: Vec<PathBuf> = snapshot(&dir)
        .into_iter()
        .filter(|(_, (_, mode))| mode & 0o170000 == 0o100000)
        .map(|(p, _)| p)
        .collect();
    golden.sort();
    let mut got = files.to_vec();
    got.sort();
    assert_eq!(
        got, golden,
        "{case}: the set of changed files (UPDATE_GOLDEN=1 rewrites the golden files)"
    );
    for f in files {
        let want = std::fs::read(dir.join(f)).unwrap();
        let have = std::fs::read(root.join(f)).unwrap();
        assert!(
            want == have,
            "{case}: {} differs from its golden file:\n--- golden\n{}\n--- got\n{}",
            f.display(),
            String::from_utf8_lossy(&want),
            String::from_utf8_lossy(&have)
        );
    }
}

#[test]
fn every_fixture_converges_exactly_once() {
    for (case, distro) in CASES {
        let dir = copy_fixture(case);
        let root = dir.path();
        let before_files = node_files(root);
        let before = settings(root, distro);

        // --check changes nothing at all (no lock, no backup dir).
        let (v, code) = json_run(root, &["apply", "--issuer", ISSUER, "--check", "--diff"]);
        assert_eq!(code, 0, "{case}: {v}");
        assert_eq!(v["changed"], true, "{case}");
        assert_eq!(
            snapshot(root),
            support::snapshot(&support::fixture_path(case)),
            "{case}: --check wrote something"
        );

        let v = apply(root, &[]);
        assert_eq!(v["changed"], true, "{case}");
        assert_eq!(v["distro"], distro);
        let files = v["files"].as_array().unwrap();
        assert!(
            !files.is_empty()
                && files
                    .iter()
                    .all(|f| f["path"].is_string() && f["diff"].as_str().unwrap().contains("+++ "))
        );
        let after_files = node_files(root);
        let changed = changed_files(&before_files, &after_files);
        assert_eq!(
            changed.len(),
            files.len(),
            "{case}: JSON lists every changed file: {changed:?}"
        );
        for f in &changed {
            if let Some((old, _)) = before_files.get(f) {
                assert_other_lines_kept(f, old, &after_files[f].0);
                assert_eq!(
                    before_files[f].1,
                    after_files[f].1,
                    "{case}: {} keeps its mode",
                    f.display()
                );
            }
        }
        check_golden(case, root, &changed);
        let after = settings(root, distro);
        assert_semantics(root, &before, &after, ISSUER);

        // The manifests directory gains nothing (the kubelet would run it).
        let manifests = root.join("etc/kubernetes/manifests");
        if manifests.is_dir() {
            let names: Vec<_> = std::fs::read_dir(&manifests)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            let before_names: Vec<_> =
                std::fs::read_dir(support::fixture_path(case).join("etc/kubernetes/manifests"))
                    .unwrap()
                    .map(|e| e.unwrap().file_name())
                    .collect();
            assert_eq!(
                names.len(),
                before_names.len(),
                "{case}: a file appeared in the manifests dir"
            );
        }

        // The backup holds the original bytes of every modified file.
        let backups: Vec<_> = std::fs::read_dir(root.join("var/lib/irsa-agent/backups"))
            .unwrap()
            .collect();
        assert_eq!(backups.len(), 1, "{case}: one backup");
        let bdir = backups[0].as_ref().unwrap().path();
        for f in &changed {
            if let Some((old, _)) = before_files.get(f) {
                assert_eq!(
                    &std::fs::read(bdir.join("files").join(f)).unwrap(),
                    old,
                    "{case}: backup of {}",
                    f.display()
                );
            }
        }

        // A second identical run changes nothing and writes nothing.
        let full = snapshot(root);
        let v = apply(root, &[]);
        assert_eq!(v["changed"], false, "{case}: second run: {v}");
        assert_eq!(v["files"], Value::Array(vec![]));
        assert_eq!(snapshot(root), full, "{case}: second run wrote something");
    }
}

#[test]
fn issuer_changes_twice_keep_every_issuer() {
    for (case, distro) in [
        ("kubeadm-default", "kubeadm"),
        ("microk8s-default", "microk8s"),
        ("k3s-default", "k3s"),
        ("k0s-default", "k0s"),
    ] {
        let dir = copy_fixture(case);
        let root = dir.path();
        let original = settings(root, distro);
        for issuer in ["https://b.example.com", "https://c.example.com"] {
            let before = settings(root, distro);
            let (v, code) = json_run(root, &["apply", "--issuer", issuer, "--no-restart"]);
            assert_eq!(code, 0, "{case}: {v}");
            assert_semantics(root, &before, &settings(root, distro), issuer);
        }
        let after = settings(root, distro);
        let mut want = vec![
            "https://c.example.com".to_string(),
            "https://b.example.com".to_string(),
        ];
        want.extend(original.issuers.clone());
        assert_eq!(after.issuers, want, "{case}");
        // Going back to B moves it first, keeps C accepted, adds nothing twice.
        let before = settings(root, distro);
        let (v, code) = json_run(
            root,
            &["apply", "--issuer", "https://b.example.com", "--no-restart"],
        );
        assert_eq!(code, 0, "{case}: {v}");
        let back = settings(root, distro);
        assert_semantics(root, &before, &back, "https://b.example.com");
        assert_eq!(back.issuers.len(), want.len(), "{case}: {back:?}");
    }
}

fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn signing_key_is_installed_in_the_key_dir_and_used() {
    let key = support::fixture_path("kubeadm-custom-key").join("etc/kubernetes/pki/irsa.key");
    for (case, distro, key_dir) in [
        ("kubeadm-default", "kubeadm", "etc/kubernetes/pki"),
        ("minikube-default", "minikube", "var/lib/minikube/certs"),
        (
            "microk8s-default",
            "microk8s",
            "var/snap/microk8s/current/certs",
        ),
        ("k3s-default", "k3s", "var/lib/rancher/k3s/server/tls"),
        ("k0s-default", "k0s", "var/lib/k0s/pki"),
    ] {
        let dir = copy_fixture(case);
        let root = dir.path();
        let before = settings(root, distro);
        let v = apply(root, &["--signing-key", key.to_str().unwrap()]);
        let after = settings(root, distro);
        assert_semantics(root, &before, &after, ISSUER);
        let signing = after.signing_key_file.clone().unwrap();
        assert!(
            signing.starts_with(&format!("/{key_dir}/irsa-agent-")),
            "{case}: {signing}"
        );
        let installed = root.join(signing.trim_start_matches('/'));
        assert_eq!(mode_of(&installed), 0o600, "{case}: private key mode");
        let pubfile = installed.with_extension("pub");
        assert_eq!(mode_of(&pubfile), 0o644, "{case}: public key mode");
        assert_eq!(
            public_pem(&installed),
            public_pem(&key),
            "{case}: the given key was installed"
        );
        assert!(v["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["diff"].as_str().unwrap().contains("content not shown")));
        assert!(
            !v.to_string().contains("PRIVATE KEY"),
            "{case}: private key material in output"
        );
        // Idempotent with the same key.
        let v = apply(root, &["--signing-key", key.to_str().unwrap()]);
        assert_eq!(v["changed"], false, "{case}: {v}");
    }
}

#[test]
fn generate_key_creates_a_pair_once() {
    let dir = copy_fixture("kubeadm-default");
    let root = dir.path();
    let before = settings(root, "kubeadm");
    apply(root, &["--generate-key", "--key-type", "ec-p256"]);
    let after = settings(root, "kubeadm");
    assert_semantics(root, &before, &after, ISSUER);
    let signing = root.join(
        after
            .signing_key_file
            .clone()
            .unwrap()
            .trim_start_matches('/'),
    );
    assert_eq!(mode_of(&signing), 0o600);
    let text = std::fs::read_to_string(&signing).unwrap();
    assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8");
    let v = apply(root, &["--generate-key", "--key-type", "ec-p256"]);
    assert_eq!(
        v["changed"], false,
        "a second --generate-key keeps the generated key: {v}"
    );
}

#[test]
fn extra_public_keys_are_accepted() {
    let dir = copy_fixture("kubeadm-default");
    let root = dir.path();
    let extra = support::fixture_path("kubeadm-custom-key").join("etc/kubernetes/pki/irsa.pub");
    apply(root, &["--public-key", extra.to_str().unwrap()]);
    let after = settings(root, "kubeadm");
    assert_eq!(after.key_files.len(), 2);
    let installed = root.join(after.key_files[1].trim_start_matches('/'));
    assert!(installed.starts_with(root.join("etc/kubernetes/pki")));
    assert_eq!(public_pem(&installed), public_pem(&extra));
    // Keys the apiserver accepts already are not installed again.
    let own = root.join("etc/kubernetes/pki/sa.pub");
    let v = apply(
        root,
        &[
            "--public-key",
            own.to_str().unwrap(),
            "--public-key",
            extra.to_str().unwrap(),
        ],
    );
    assert_eq!(v["changed"], false, "{v}");
}

/// Bad input: exit 1, the message, and not one byte changed.
fn assert_refused(root: &Path, args: &[&str], want: &[&str]) {
    let before = snapshot(root);
    let (v, code) = json_run(root, args);
    assert_eq!(code, 1, "{args:?}: {v}");
    let err = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error field: {v}"));
    for w in want {
        assert!(
            err.contains(w),
            "{args:?}: error {err:?} should mention {w:?}"
        );
    }
    assert!(!err.contains('\n'), "one-line cause: {err:?}");
    assert!(v["error_chain"].is_array());
    assert_eq!(snapshot(root), before, "{args:?} changed the tree");
    // The human form puts the same cause on stderr and nothing on stdout.
    let out = irsa(root).args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let first = v["error_chain"][0].as_str().unwrap();
    assert!(
        err.starts_with(first),
        "error starts with the chain's first line"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("error: {first}")));
}

#[test]
fn bad_issuers_are_refused() {
    let dir = copy_fixture("kubeadm-rotated");
    let root = dir.path();
    for (issuer, want) in [
        ("http://oidc.example.com", "https://"),
        ("https://oidc.example.com/?x=1", "query"),
        ("https://oidc.example.com/#f", "fragment"),
        (" https://oidc.example.com", "whitespace"),
        ("https://oidc.example.com:8443", "port"),
        ("https://oidc-b.example.com/", "trailing slash"),
    ] {
        assert_refused(root, &["apply", "--issuer", issuer], &["--issuer", want]);
    }
    assert_refused(
        root,
        &["apply", "--issuer", ISSUER, "--audience", "a,b"],
        &["--audience", "comma"],
    );
}

#[test]
fn bad_keys_are_refused() {
    let dir = copy_fixture("kubeadm-default");
    let root = dir.path();
    let not_a_key = support::fixture_path("kubeadm-default").join("etc/kubernetes/admin.conf");
    let missing = root.join("no/such/key.pem");
    assert_refused(
        root,
        &[
            "apply",
            "--issuer",
            ISSUER,
            "--signing-key",
            not_a_key.to_str().unwrap(),
        ],
        &["--signing-key", "admin.conf"],
    );
    assert_refused(
        root,
        &[
            "apply",
            "--issuer",
            ISSUER,
            "--signing-key",
            missing.to_str().unwrap(),
        ],
        &["--signing-key", "key.pem"],
    );
    assert_refused(
        root,
        &[
            "apply",
            "--issuer",
            ISSUER,
            "--public-key",
            not_a_key.to_str().unwrap(),
        ],
        &["--public-key", "admin.conf"],
    );

    // The current signing key does not match any key file.
    let other = support::fixture_path("kubeadm-custom-key").join("etc/kubernetes/pki/irsa.pub");
    std::fs::copy(other, root.join("etc/kubernetes/pki/sa.pub")).unwrap();
    assert_refused(
        root,
        &["apply", "--issuer", ISSUER],
        &["sa.key", "none of the key files"],
    );
}

#[test]
fn broken_config_and_bad_roots_are_refused() {
    let dir = copy_fixture("kubeadm-default");
    let root = dir.path();
    let manifest = root.join("etc/kubernetes/manifests/kube-apiserver.yaml");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str("  broken: [unclosed\n");
    std::fs::write(&manifest, text).unwrap();
    assert_refused(
        root,
        &["apply", "--issuer", ISSUER],
        &["/etc/kubernetes/manifests/kube-apiserver.yaml"],
    );
    let (v, _) = json_run(root, &["apply", "--issuer", ISSUER]);
    assert!(
        v["error_chain"].to_string().contains("line"),
        "the YAML error names the line: {v}"
    );

    let dir = copy_fixture("k3s-default");
    std::fs::write(
        dir.path().join("etc/rancher/k3s/config.yaml"),
        "kube-apiserver-arg:\n  - a\n kube: [\n",
    )
    .unwrap();
    assert_refused(
        dir.path(),
        &["apply", "--issuer", ISSUER],
        &["/etc/rancher/k3s/config.yaml"],
    );

    let empty = tempfile::tempdir().unwrap();
    assert_refused(
        empty.path(),
        &["apply", "--issuer", ISSUER],
        &[
            "no Kubernetes distribution detected",
            "kubeadm: /etc/kubernetes/manifests/kube-apiserver.yaml",
        ],
    );
    // An unknown --distro is a command-line error, exit 2: tests/cli.rs.
    let gone = empty.path().join("missing");
    let out = Command::cargo_bin("irsa-agent")
        .unwrap()
        .args(["--output", "json", "--root"])
        .arg(&gone)
        .arg("detect")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["error"].as_str().unwrap().starts_with("--root "), "{v}");
}

#[test]
fn a_held_lock_makes_apply_fail_fast_without_writing() {
    use nix::fcntl::{Flock, FlockArg};
    let dir = copy_fixture("kubeadm-default");
    let root = dir.path();
    std::fs::create_dir_all(root.join("run/irsa-agent")).unwrap();
    let f = std::fs::File::create(root.join("run/irsa-agent/apply.lock")).unwrap();
    let held = Flock::lock(f, FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)
        .unwrap();
    let before = node_files(root);
    let (v, code) = json_run(root, &["apply", "--issuer", ISSUER, "--no-restart"]);
    assert_eq!(code, 1);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("another irsa-agent run"),
        "{v}"
    );
    assert_eq!(node_files(root), before);
    drop(held);
    assert_eq!(apply(root, &[])["changed"], true);
}

#[test]
fn detect_reports_effective_settings_with_sources() {
    let (v, code) = json_run(&support::fixture_path("kubeadm-rotated"), &["detect"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["distro"], "kubeadm");
    assert_eq!(
        v["config_files"][0],
        "/etc/kubernetes/manifests/kube-apiserver.yaml"
    );
    assert_eq!(v["issuers"][0]["value"], "https://oidc-b.example.com");
    assert_eq!(v["issuers"][0]["signs"], true);
    assert_eq!(v["issuers"][1]["signs"], false);
    assert_eq!(
        v["issuers"][0]["source"]["file"],
        "/etc/kubernetes/manifests/kube-apiserver.yaml"
    );
    assert!(v["issuers"][0]["source"]["line"].as_u64().unwrap() > 1);
    assert!(v["signing_key_file"]["value"]
        .as_str()
        .unwrap()
        .ends_with("oidc-b.key"));
    assert_eq!(v["key_files"].as_array().unwrap().len(), 2);
    assert_eq!(v["api_audiences_explicit"], true);

    let (v, _) = json_run(&support::fixture_path("k3s-default"), &["detect"]);
    assert_eq!(v["api_audiences"][1]["value"], "k3s");
    assert_eq!(v["api_audiences"][1]["source"]["default"], "k3s");
    let (v, _) = json_run(&support::fixture_path("kubeadm-default"), &["detect"]);
    assert_eq!(
        v["api_audiences_explicit"], false,
        "defaulted from the issuers"
    );
    assert_eq!(v["api_audiences"][0]["value"], v["issuers"][0]["value"]);

    // The global options work after the command too.
    let out = Command::cargo_bin("irsa-agent")
        .unwrap()
        .args(["detect", "--output", "json", "--root"])
        .arg(support::fixture_path("minikube-default"))
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["distro"], "minikube",
        "minikube is told apart from kubeadm"
    );
}
