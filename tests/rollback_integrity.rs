//! Rollback and recovery put back only what irsa-agent wrote, backups are
//! ordered by sequence and survive a damaged index, old ones are pruned, and
//! a rollback that changed files says so in every outcome.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;

use support::{copy_fixture, fixture_path, json_of, node_files};

const MANIFEST: &str = "etc/kubernetes/manifests/kube-apiserver.yaml";
const BACKUPS: &str = "var/lib/irsa-agent/backups";
const OLD_IMAGE: &str = "registry.k8s.io/kube-apiserver:v1.30.4";
const NEW_IMAGE: &str = "registry.k8s.io/kube-apiserver:v1.31.1";

fn irsa(root: &Path) -> Command {
    let mut c = Command::cargo_bin("irsa-agent").unwrap();
    c.args(["--output", "json", "--root"]).arg(root);
    c.env_remove("IRSA_AGENT_FAILPOINT");
    c.env_remove("DBUS_SYSTEM_BUS_ADDRESS");
    c.env_remove("IRSA_AGENT_LOG");
    c
}

/// (JSON, exit code, stderr)
fn run(root: &Path, args: &[&str]) -> (Value, i32, String) {
    let out = irsa(root).args(args).output().unwrap();
    let code = out.status.code().expect("not killed");
    (
        json_of(&out),
        code,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn signing_key() -> PathBuf {
    fixture_path("kubeadm-custom-key").join("etc/kubernetes/pki/irsa.key")
}

/// `apply --no-restart` with a given key (a key pair and the manifest are written).
fn apply(root: &Path, issuer: &str) -> (Value, i32, String) {
    let key = signing_key();
    run(
        root,
        &[
            "apply",
            "--no-restart",
            "--issuer",
            issuer,
            "--signing-key",
            key.to_str().unwrap(),
        ],
    )
}

/// What `kubeadm upgrade apply` does to the manifest: a new version, the
/// rest regenerated (here: kept as it was, with irsa-agent's flags).
fn kubeadm_upgrade(root: &Path) {
    let path = root.join(MANIFEST);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(OLD_IMAGE), "{text}");
    std::fs::write(&path, text.replace(OLD_IMAGE, NEW_IMAGE)).unwrap();
}

fn manifest(root: &Path) -> String {
    std::fs::read_to_string(root.join(MANIFEST)).unwrap()
}

/// Backup directories with their index, by name.
fn backup_dirs(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(root.join(BACKUPS))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    out.sort();
    out
}

fn index(root: &Path, id: &str) -> Value {
    serde_json::from_slice(&std::fs::read(root.join(BACKUPS).join(id).join("index.json")).unwrap())
        .unwrap()
}

#[test]
fn after_a_kubeadm_upgrade_rollback_keeps_the_new_version_and_reverses_only_the_flags() {
    let dir = copy_fixture("kubeadm-default");
    let root = dir.path();
    let original = manifest(root);
    let (v, code, _) = apply(root, "https://oidc.example.com/one");
    assert_eq!(code, 0, "{v}");
    kubeadm_upgrade(root);
    let upgraded = node_files(root);

    let (v, code, _) = run(root, &["rollback", "--check"]);
    assert_eq!(code, 0, "{v}");
    let m = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == format!("/{MANIFEST}").as_str())
        .unwrap()
        .clone();
    assert_eq!(m["action"], "reverse-flags", "{v}");
    assert!(
        m["changed_since"]
            .as_str()
            .unwrap()
            .contains("irsa-agent wrote sha256"),
        "{v}"
    );
    assert!(node_files(root) == upgraded, "--check changed a file");

    let (v, code, _) = run(root, &["rollback", "--no-restart"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        (&v["changed"], &v["rolled_back"]),
        (&true.into(), &true.into())
    );
    // The upgrade stays; irsa-agent's flags are gone: the manifest is the
    // upgraded original, byte for byte, and the installed key pair is removed.
    assert_eq!(manifest(root), original.replace(OLD_IMAGE, NEW_IMAGE));
    let pki: Vec<String> = std::fs::read_dir(root.join("etc/kubernetes/pki"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("irsa-agent"))
        .collect();
    assert!(pki.is_empty(), "{pki:?}");
    // What it overwrote is saved: rolling that back gives the upgraded
    // manifest with irsa-agent's flags again.
    let saved = v["saved"].as_str().unwrap().to_string();
    let (v, code, _) = run(root, &["rollback", "--no-restart", "--backup", &saved]);
    assert_eq!(code, 0, "{v}");
    assert!(node_files(root) == upgraded, "rollback --backup {saved}");
}

#[test]
fn a_key_file_changed_since_makes_rollback_refuse_and_change_nothing() {
    let dir = copy_fixture("kubeadm-default");
    let root = dir.path();
    let (v, code, _) = apply(root, "https://oidc.example.com/one");
    assert_eq!(code, 0, "{v}");
    let id = v["backup"].as_str().unwrap().to_string();
    kubeadm_upgrade(root);
    // Someone put another key where irsa-agent installed its own.
    let key = std::fs::read_dir(root.join("etc/kubernetes/pki"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("irsa-agent") && n.ends_with(".key")
        })
        .unwrap();
    std::fs::write(&key, "not the key irsa-agent wrote\n").unwrap();
    let key_node = format!("/{}", key.strip_prefix(root).unwrap().display());
    let changed = node_files(root);
    let backups = backup_dirs(root);

    for args in [
        &["rollback", "--no-restart"][..],
        &["rollback", "--check"],
        &["rollback", "--no-restart", "--backup", &id],
        // Without --no-restart too: refused before any restart is tried.
        &["rollback"],
    ] {
        let (v, code, _) = run(root, args);
        assert_eq!(code, 1, "{args:?}: {v}");
        let err = v["error"].as_str().unwrap();
        assert!(
            err.contains(&key_node)
                && err.contains(&format!("/{MANIFEST}"))
                && err.contains("changed since by something else")
                && err.contains("nothing was changed")
                && err.contains("modified ")
                && err.contains("not a configuration file"),
            "{args:?}: {err}"
        );
        assert_eq!(
            (&v["changed"], &v["rolled_back"]),
            (&false.into(), &false.into()),
            "{v}"
        );
        let files = v["files"].as_array().unwrap();
        let action = |p: &str| {
            files
                .iter()
                .find(|f| f["path"] == p)
                .map(|f| f["action"].clone())
                .unwrap()
        };
        assert_eq!(action(&key_node), "changed-since", "{v}");
        assert_eq!(action(&format!("/{MANIFEST}")), "changed-since", "{v}");
        assert!(node_files(root) == changed, "{args:?}: a node file changed");
        assert_eq!(backup_dirs(root), backups, "{args:?}: a backup was made");
        assert!(manifest(root).contains(NEW_IMAGE));
    }
}

#[test]
fn an_interrupted_apply_whose_file_was_changed_since_is_not_overwritten_at_recovery() {
    let dir = copy_fixture("kubeadm-default");
    let root = dir.path();
    let key = signing_key();
    let out = irsa(root)
        .args([
            "apply",
            "--no-restart",
            "--issuer",
            "https://oidc.example.com/one",
            "--signing-key",
            key.to_str().unwrap(),
        ])
        .env("IRSA_AGENT_FAILPOINT", "after-write:kill")
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(9), "{out:?}");
    let ids = backup_dirs(root);
    assert_eq!(ids.len(), 1);
    let crashed = ids[0].clone();
    assert_eq!(index(root, &crashed)["pending"], true);
    // Later, before any apply: the node was upgraded.
    kubeadm_upgrade(root);

    let (v, code, stderr) = apply(root, "https://oidc.example.com/one");
    assert_eq!(code, 0, "{v}\n{stderr}");
    let text = manifest(root);
    assert!(text.contains(NEW_IMAGE), "the upgrade was undone:\n{text}");
    assert!(text.contains("https://oidc.example.com/one"), "{text}");
    assert!(
        stderr.contains("interrupted")
            && stderr.contains(&format!("/{MANIFEST}"))
            && stderr.contains("changed since by something else"),
        "{stderr}"
    );
    assert_eq!(
        v["recovered"],
        serde_json::json!([]),
        "nothing was undone: {v}"
    );
    let old = index(root, &crashed);
    assert_eq!(old["pending"], false, "{old}");
    assert!(
        old["superseded"]
            .as_str()
            .is_some_and(|s| s.contains(MANIFEST)),
        "{old}"
    );
    // The next run is an ordinary one.
    let (v, code, stderr) = apply(root, "https://oidc.example.com/one");
    assert_eq!((code, v["changed"].clone()), (0, false.into()), "{v}");
    assert!(!stderr.contains("interrupted"), "{stderr}");
}

#[test]
fn a_corrupt_index_is_reported_and_does_not_block_apply_or_rollback() {
    let dir = copy_fixture("kubeadm-default");
    let root = dir.path();
    let (v, code, _) = apply(root, "https://oidc.example.com/one");
    assert_eq!(code, 0, "{v}");
    let first = v["backup"].as_str().unwrap().to_string();
    let bad = root.join(BACKUPS).join(&first).join("index.json");
    std::fs::write(&bad, b"{\"id\": \"trunc").unwrap();
    let after_one = node_files(root);

    let (v, code, stderr) = apply(root, "https://oidc.example.com/two");
    assert_eq!(code, 0, "{v}\n{stderr}");
    assert!(
        stderr.contains(&format!("/{BACKUPS}/{first}/index.json"))
            && stderr.contains("cannot be read"),
        "{stderr}"
    );
    let second = v["backup"].as_str().unwrap().to_string();
    assert_ne!(first, second);
    // rollback uses the readable one, and the damaged one is left as it is.
    let (v, code, _) = run(root, &["rollback", "--no-restart"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["backup"], second.as_str());
    assert!(node_files(root) == after_one, "the node files differ");
    assert_eq!(std::fs::read(&bad).unwrap(), b"{\"id\": \"trunc");
    // An explicit --backup of the damaged one names it.
    let (v, code, _) = run(root, &["rollback", "--no-restart", "--backup", &first]);
    assert_eq!(code, 1, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains(&format!("{first}/index.json")),
        "{v}"
    );
}

#[test]
fn backups_are_ordered_by_sequence_not_by_the_clock() {
    let dir = copy_fixture("kubeadm-default");
    let root = dir.path();
    let (v, code, _) = apply(root, "https://oidc.example.com/one");
    assert_eq!(code, 0, "{v}");
    let after_one = node_files(root);
    // The first backup was made while the clock was far ahead (before time
    // sync): its name sorts after every later one.
    let first = v["backup"].as_str().unwrap().to_string();
    let skewed = "20991231T235959.000000Z";
    let mut idx = index(root, &first);
    idx["id"] = skewed.into();
    let b = root.join(BACKUPS);
    std::fs::rename(b.join(&first), b.join(skewed)).unwrap();
    std::fs::write(
        b.join(skewed).join("index.json"),
        serde_json::to_vec(&idx).unwrap(),
    )
    .unwrap();

    let (v, code, _) = apply(root, "https://oidc.example.com/two");
    assert_eq!(code, 0, "{v}");
    let second = v["backup"].as_str().unwrap().to_string();
    assert!(second.as_str() < skewed, "{second}");
    assert!(index(root, &second)["seq"].as_u64() > idx["seq"].as_u64());
    // `rollback` undoes the last apply (the second), not the one whose
    // name sorts last.
    let (v, code, _) = run(root, &["rollback", "--no-restart"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["backup"], second.as_str(), "{v}");
    assert!(node_files(root) == after_one, "the node files differ");
}

#[test]
fn pruning_keeps_the_newest_n_finished_backups_and_the_last_apply() {
    let dir = copy_fixture("kubeadm-default");
    let root = dir.path();
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cfg.path(), "backups_keep: 2\n").unwrap();
    let key = signing_key();
    let mut made = Vec::new();
    for i in 0..5 {
        let issuer = format!("https://oidc.example.com/n{i}");
        let (v, code, _) = run(
            root,
            &[
                "apply",
                "--no-restart",
                "--config",
                cfg.path().to_str().unwrap(),
                "--issuer",
                &issuer,
                "--signing-key",
                key.to_str().unwrap(),
            ],
        );
        assert_eq!(code, 0, "{v}");
        made.push(v["backup"].as_str().unwrap().to_string());
    }
    // The one each run made, plus the newest 2 before it.
    assert_eq!(backup_dirs(root), made[2..].to_vec());
    // The flag wins over the file.
    let (v, code, _) = run(
        root,
        &[
            "apply",
            "--no-restart",
            "--config",
            cfg.path().to_str().unwrap(),
            "--keep-backups",
            "1",
            "--issuer",
            "https://oidc.example.com/last",
            "--signing-key",
            key.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{v}");
    let last = v["backup"].as_str().unwrap().to_string();
    assert_eq!(backup_dirs(root), [made[4].clone(), last]);
}

#[test]
fn rollback_reports_the_restored_files_and_exits_5_when_the_restart_cannot_run() {
    let dir = copy_fixture("kubeadm-default");
    let root = dir.path();
    let before = node_files(root);
    let (v, code, _) = apply(root, "https://oidc.example.com/one");
    assert_eq!(code, 0, "{v}");
    let id = v["backup"].as_str().unwrap().to_string();
    // The fixture's kubeconfig holds a client certificate no TLS stack
    // accepts: the apiserver client cannot be built after the restore.
    let (v, code, _) = run(root, &["rollback", "--timeout", "5"]);
    assert_eq!(code, 5, "changed but not finished: {v}");
    assert_eq!(v["backup"], id.as_str(), "{v}");
    assert_eq!(v["changed"], true, "{v}");
    assert_eq!(v["rolled_back"], true, "{v}");
    assert_eq!(v["restarted"], false, "{v}");
    let saved = v["saved"].as_str().unwrap();
    assert!(root.join(BACKUPS).join(saved).join("index.json").is_file());
    let files = v["files"].as_array().unwrap();
    assert!(
        files
            .iter()
            .any(|f| f["path"] == format!("/{MANIFEST}").as_str() && f["action"] == "restore"),
        "{v}"
    );
    assert!(files.iter().any(|f| f["action"] == "remove"), "{v}");
    let err = v["error"].as_str().unwrap();
    assert!(
        err.contains("WERE rolled back") && err.contains(&format!("/{MANIFEST}")),
        "{err}"
    );
    assert!(node_files(root) == before, "the files are restored");

    // The same for a human: the first line says what was changed.
    let (v, code, _) = apply(root, "https://oidc.example.com/one");
    assert_eq!(code, 0, "{v}");
    let out = Command::cargo_bin("irsa-agent")
        .unwrap()
        .arg("--root")
        .arg(root)
        .args(["rollback", "--timeout", "5"])
        .env_remove("IRSA_AGENT_FAILPOINT")
        .env_remove("DBUS_SYSTEM_BUS_ADDRESS")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_default();
    assert!(
        first.contains("WERE rolled back") && first.contains(&format!("/{MANIFEST}")),
        "{stderr}"
    );
    assert!(node_files(root) == before, "the node files differ");
}
