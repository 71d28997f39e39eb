//! The whole `apply` loop against the apiserver SIMULATOR in tests/support/sim
//! (no kube-apiserver binary can run here): write, restart (systemd over a
//! private dbus-daemon, or the simulated kubelet replacing the static pod),
//! wait for /readyz, verify a fresh token, check an old one, and roll back on
//! every failure. Also `verify`, `verify --public` against a local HTTPS
//! issuer host, and `rollback`.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use assert_cmd::prelude::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;
use support::issuer_host::IssuerHost;
use support::sim::{Cluster, Fault, Options};
use support::{apiserver_args, copy_fixture, json_of, node_files, sa_settings, Tree};

/// (fixture, distro, key dir)
const DISTROS: [(&str, &str, &str); 6] = [
    (
        "microk8s-default",
        "microk8s",
        "/var/snap/microk8s/current/certs",
    ),
    ("kubeadm-default", "kubeadm", "/etc/kubernetes/pki"),
    ("minikube-default", "minikube", "/var/lib/minikube/certs"),
    ("k3s-default", "k3s", "/var/lib/rancher/k3s/server/tls"),
    ("rke2-default", "rke2", "/var/lib/rancher/rke2/server/tls"),
    ("k0s-default", "k0s", "/var/lib/k0s/pki"),
];

/// Static-pod restarts are observed through the host's process table, which
/// every test shares: those tests take turns.
static PROCESS_TABLE: Mutex<()> = Mutex::new(());

fn static_pod(distro: &str) -> bool {
    matches!(distro, "kubeadm" | "minikube")
}

struct Node {
    dir: tempfile::TempDir,
    cluster: Cluster,
    distro: &'static str,
    _turn: Option<std::sync::MutexGuard<'static, ()>>,
}

impl Node {
    fn start(fixture: &str, distro: &'static str) -> Node {
        let turn =
            static_pod(distro).then(|| PROCESS_TABLE.lock().unwrap_or_else(|e| e.into_inner()));
        let dir = copy_fixture(fixture);
        let cluster = Cluster::start_with(
            distro,
            dir.path(),
            Options {
                startup_delay: Duration::from_millis(200),
            },
        )
        .unwrap_or_else(|e| panic!("the simulator must start on fixture {fixture}: {e:#}"));
        Node {
            dir,
            cluster,
            distro,
            _turn: turn,
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn irsa(&self) -> Command {
        let mut c = self.irsa_human();
        c.args(["--output", "json"]);
        c
    }

    fn irsa_human(&self) -> Command {
        let mut c = Command::cargo_bin("irsa-agent").unwrap();
        c.arg("--root").arg(self.root());
        c.env_remove("DBUS_SYSTEM_BUS_ADDRESS");
        for (k, v) in self.cluster.env() {
            c.env(k, v);
        }
        c
    }

    /// Run; stdout must be exactly one JSON object.
    fn run(&self, args: &[&str]) -> (Value, i32) {
        let out = self.irsa().args(args).output().unwrap();
        (json_of(&out), out.status.code().unwrap())
    }

    /// The settings the simulator runs with now.
    fn running_issuers(&self) -> Vec<String> {
        let s = self.cluster.status();
        assert!(
            s.running,
            "the simulator is not running: {:?}",
            s.last_start_error
        );
        s.settings
            .expect("a running simulator has settings")
            .issuers
    }

    /// The settings the files on disk give, read by the independent reader.
    fn configured_issuers(&self) -> Vec<String> {
        sa_settings(&apiserver_args(self.root(), self.distro).unwrap())
            .unwrap()
            .issuers
    }

    /// The node's files, without irsa-agent's own state.
    fn files(&self) -> Tree {
        node_files(self.root())
    }
}

/// Fail with the paths that differ (not the bytes).
fn assert_same_files(
    a: &BTreeMap<PathBuf, (Vec<u8>, u32)>,
    b: &BTreeMap<PathBuf, (Vec<u8>, u32)>,
    what: &str,
) {
    let differ: Vec<_> = a
        .keys()
        .chain(b.keys())
        .filter(|p| a.get(*p) != b.get(*p))
        .collect();
    assert!(differ.is_empty(), "{what}: these differ: {differ:?}");
}

fn issuer_for(test: &str, distro: &str) -> String {
    format!("https://oidc.example.com/{test}-{distro}")
}

/// The `kid` in a token's header, decoded here without the crate under test.
fn header_kid(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let v: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    v["kid"].as_str().unwrap().to_string()
}

fn audiences(token: &str) -> Vec<String> {
    let claims = token.split('.').nth(1).unwrap();
    let v: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
    match &v["aud"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().map(|x| x.as_str().unwrap().to_string()).collect(),
        _ => vec![],
    }
}

#[test]
fn apply_restarts_verifies_and_keeps_old_tokens_on_every_distro() {
    for (fixture, distro, _) in DISTROS {
        let node = Node::start(fixture, distro);
        let old_issuers = node.running_issuers();
        let old_token = node.cluster.token("default", "default", &[]).unwrap();
        let generation = node.cluster.status().generation;
        let issuer = issuer_for("apply", distro);

        let (v, code) = node.run(&["apply", "--issuer", &issuer, "--timeout", "30"]);
        assert_eq!(code, 0, "{distro}: {v}");
        assert_eq!(v["changed"], true, "{distro}: {v}");
        assert_eq!(v["restarted"], true, "{distro}: {v}");
        assert_eq!(v["rolled_back"], false, "{distro}: {v}");
        assert_eq!(v["restart_pending"], false, "{distro}: {v}");
        assert_eq!(v["old_token_authenticated"], true, "{distro}: {v}");
        assert_eq!(v["verified"]["iss"], issuer.as_str(), "{distro}: {v}");
        assert_eq!(
            v["verified"]["sub"],
            "system:serviceaccount:default:default"
        );
        assert!(
            v["verified"]["aud"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a == "sts.amazonaws.com"),
            "{distro}: {v}"
        );

        // The simulator restarted once and runs the new issuer first, every old one after it.
        let s = node.cluster.status();
        assert!(s.generation > generation, "{distro}: no restart happened");
        let mut want = vec![issuer.clone()];
        want.extend(old_issuers.iter().cloned());
        assert_eq!(node.running_issuers(), want, "{distro}");
        if static_pod(distro) {
            assert!(
                node.cluster.restarts().is_empty(),
                "{distro}: no unit to restart"
            );
        } else {
            let unit = node.cluster.unit().unwrap().to_string();
            assert_eq!(
                node.cluster.restarts(),
                [(unit, "replace".to_string())],
                "{distro}: exactly one RestartUnit of the distribution's unit, mode replace"
            );
        }

        // The kid the tool verified is the one the simulator signs with now.
        let fresh = node
            .cluster
            .token("default", "default", &["sts.amazonaws.com"])
            .unwrap();
        assert_eq!(
            v["verified"]["kid"],
            header_kid(&fresh).as_str(),
            "{distro}"
        );
        // Pods' old tokens still work; new tokens carry the AWS audience.
        assert!(
            node.cluster.review(&old_token).unwrap(),
            "{distro}: old token rejected"
        );
        assert!(audiences(&fresh).contains(&"sts.amazonaws.com".to_string()));

        // A second run changes nothing, restarts nothing, and still verifies.
        let before = node.files();
        let restarts = node.cluster.restarts().len();
        let generation = node.cluster.status().generation;
        let (v2, code) = node.run(&["apply", "--issuer", &issuer, "--timeout", "30"]);
        assert_eq!(code, 0, "{distro}: {v2}");
        assert_eq!(v2["changed"], false, "{distro}: {v2}");
        assert_eq!(v2["restarted"], false, "{distro}: {v2}");
        assert_eq!(v2["verified"]["iss"], issuer.as_str(), "{distro}: {v2}");
        assert_same_files(
            &node.files(),
            &before,
            &format!("{distro}: a no-op run wrote something"),
        );
        assert_eq!(node.cluster.restarts().len(), restarts, "{distro}");
        assert_eq!(node.cluster.status().generation, generation, "{distro}");
    }
}

#[test]
fn a_new_key_the_apiserver_cannot_read_is_rolled_back_on_every_distro() {
    for (fixture, distro, key_dir) in DISTROS {
        let node = Node::start(fixture, distro);
        let old_issuers = node.running_issuers();
        let before = node.files();
        node.cluster
            .inject(Fault::UnreadablePrefix(format!("{key_dir}/irsa-agent-")));
        let issuer = issuer_for("unreadable", distro);

        let (v, code) = node.run(&[
            "apply",
            "--issuer",
            &issuer,
            "--generate-key",
            "--key-type",
            "ec-p256",
            // The whole run's budget: enough for the health check and the
            // restart under load; the static pods then wait all of it for
            // a pod that never gets ready.
            "--timeout",
            "10",
        ]);
        assert_eq!(code, 3, "{distro}: exit code 3 means rolled back: {v}");
        assert_eq!(v["rolled_back"], true, "{distro}: {v}");
        assert_eq!(v["changed"], false, "{distro}: {v}");
        let msg = v["error"].as_str().unwrap();
        assert!(
            msg.contains("back on its old configuration"),
            "{distro}: {msg}"
        );
        assert!(!v["backup"].as_str().unwrap().is_empty(), "{distro}: {v}");

        // Every byte is back, the generated key files are gone, and the
        // simulator runs the old flags again.
        assert_same_files(
            &node.files(),
            &before,
            &format!("{distro}: files differ after rollback"),
        );
        assert_eq!(node.configured_issuers(), old_issuers, "{distro}");
        node.cluster.wait_ready(Duration::from_secs(10)).unwrap();
        assert_eq!(node.running_issuers(), old_issuers, "{distro}");
        if !static_pod(distro) {
            assert_eq!(
                node.cluster.restarts().len(),
                2,
                "{distro}: restart, then restart back"
            );
        }
    }
}

#[test]
fn a_wrong_issuer_served_fails_verification_and_rolls_back() {
    for (fixture, distro, _) in DISTROS {
        let node = Node::start(fixture, distro);
        let old_issuers = node.running_issuers();
        let before = node.files();
        node.cluster.inject(Fault::WrongIssuerOnNextStart(
            "https://wrong.example.com".into(),
        ));
        let issuer = issuer_for("wrong", distro);

        let (v, code) = node.run(&["apply", "--issuer", &issuer, "--timeout", "30"]);
        assert_eq!(code, 3, "{distro}: {v}");
        assert_eq!(v["rolled_back"], true, "{distro}: {v}");
        let chain = v["error_chain"].to_string();
        assert!(
            chain.contains("verifying a fresh token"),
            "{distro}: {chain}"
        );
        assert!(
            chain.contains("iss is \\\"https://wrong.example.com\\\""),
            "{distro}: {chain}"
        );
        assert_same_files(&node.files(), &before, distro);
        node.cluster.wait_ready(Duration::from_secs(10)).unwrap();
        assert_eq!(node.running_issuers(), old_issuers, "{distro}");
    }
}

#[test]
fn apply_refuses_to_touch_an_unhealthy_apiserver() {
    let node = Node::start("k3s-default", "k3s");
    // Take it down: a restart on key files it cannot read.
    node.cluster.inject(Fault::UnreadablePrefix(
        "/var/lib/rancher/k3s/server/tls/".into(),
    ));
    assert!(node.cluster.restart().is_err());
    assert!(!node.cluster.status().running);
    let before = node.files();
    let (v, code) = node.run(&[
        "apply",
        "--issuer",
        "https://oidc.example.com/down",
        "--timeout",
        "1",
    ]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["changed"], false, "{v}");
    let msg = v["error"].as_str().unwrap();
    assert!(msg.contains("must be healthy before"), "{msg}");
    assert!(
        v["error_chain"].to_string().contains("not ready within 1s"),
        "{v}"
    );
    assert_same_files(&node.files(), &before, "nothing changed");
    assert!(node.cluster.restarts().is_empty(), "nothing restarted");
}

#[test]
fn no_restart_leaves_the_apiserver_alone_and_verify_notices() {
    let node = Node::start("microk8s-default", "microk8s");
    let old = node.running_issuers();
    let issuer = issuer_for("norestart", "microk8s");
    let (v, code) = node.run(&["apply", "--issuer", &issuer, "--no-restart"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["restart_pending"], true, "{v}");
    assert_eq!(v["restarted"], false, "{v}");
    assert!(v["verified"].is_null(), "{v}");
    assert!(node.cluster.restarts().is_empty());
    assert_eq!(node.running_issuers(), old);
    assert_eq!(node.configured_issuers()[0], issuer);

    // The running apiserver still signs with the old issuer: verify says so.
    let (v, code) = node.run(&["verify", "--timeout", "5"]);
    assert_eq!(code, 1, "{v}");
    assert!(v["error"].as_str().unwrap().contains("iss is"), "{v}");
    // And apply, with nothing left to write, points at the pending restart.
    let (v, code) = node.run(&["apply", "--issuer", &issuer, "--timeout", "5"]);
    assert_eq!(code, 1, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("restart may be pending"),
        "{v}"
    );
    // A failed request is not blamed on a pending restart.
    let (v, code) = node.run(&[
        "apply",
        "--issuer",
        &issuer,
        "--service-account",
        "default/nobody",
        "--timeout",
        "5",
    ]);
    assert_eq!(code, 1, "{v}");
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains("404") && !msg.contains("restart may be pending"),
        "{msg}"
    );
}

#[test]
fn verify_prints_claims_never_the_token() {
    let node = Node::start("kubeadm-default", "kubeadm");
    let issuer = issuer_for("verify", "kubeadm");
    let (v, code) = node.run(&["apply", "--issuer", &issuer, "--timeout", "30"]);
    assert_eq!(code, 0, "{v}");

    let out = node
        .irsa_human()
        .args(["verify", "--service-account", "kube-system/default"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("token iss:   {issuer}")),
        "{stdout}"
    );
    assert!(
        stdout.contains("system:serviceaccount:kube-system:default"),
        "{stdout}"
    );
    // A JWS starts with base64url of '{"' : no token anywhere in the output.
    assert!(
        !stdout.contains(".eyJ") && !stderr.contains(".eyJ"),
        "{stdout}{stderr}"
    );

    let (v, code) = node.run(&["verify", "--audience", "vault"]);
    assert_eq!(code, 0, "any audience can be requested: {v}");
    assert_eq!(v["verified"]["aud"], serde_json::json!(["vault"]));
    assert!(!v.to_string().contains(".eyJ"), "{v}");

    let (v, code) = node.run(&["verify", "--service-account", "default/nobody"]);
    assert_eq!(code, 1, "{v}");
    assert!(v["error_chain"].to_string().contains("404"), "{v}");
    let (v, code) = node.run(&["verify", "--issuer", "https://other.example.com"]);
    assert_eq!(code, 1, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("expected \"https://other.example.com\""),
        "{v}"
    );
}

#[test]
fn rollback_restores_the_last_backup_and_restarts() {
    let node = Node::start("k0s-default", "k0s");
    let old = node.running_issuers();
    let before = node.files();
    let (v, code) = node.run(&[
        "apply",
        "--issuer",
        &issuer_for("rollback", "k0s"),
        "--generate-key",
    ]);
    assert_eq!(code, 0, "{v}");
    let applied = node.files();
    assert_ne!(applied, before);

    let (v, code) = node.run(&["rollback", "--check"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["rolled_back"], false);
    assert!(
        v["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["action"] == "remove"),
        "{v}"
    );
    assert_same_files(&node.files(), &applied, "--check changes nothing");

    let (v, code) = node.run(&["rollback", "--timeout", "30"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["rolled_back"], true, "{v}");
    assert_eq!(v["restarted"], true, "{v}");
    assert_same_files(
        &node.files(),
        &before,
        "every byte back, generated keys removed",
    );
    assert_eq!(node.running_issuers(), old);
    assert_eq!(node.cluster.restarts().len(), 2);

    // What rollback overwrote is saved, so even the rollback can be undone by hand.
    let saved = v["saved"].as_str().unwrap();
    let saved_dir = node.root().join("var/lib/irsa-agent/backups").join(saved);
    assert!(saved_dir.join("files/etc/k0s/k0s.yaml").is_file());

    // A second rollback finds nothing to change and restarts nothing.
    let (v, code) = node.run(&["rollback"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["changed"], false, "{v}");
    assert_eq!(v["restarted"], false, "{v}");
    assert!(
        v["files"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["action"] == "unchanged"),
        "{v}"
    );
    assert_eq!(node.cluster.restarts().len(), 2);
}

#[test]
fn verify_public_validates_like_sts_and_names_each_problem() {
    let host = IssuerHost::start();
    let issuer = format!("{}/cluster", host.base());
    let node = Node::start("k3s-default", "k3s");
    let (v, code) = node.run(&[
        "apply",
        "--issuer",
        &issuer,
        "--allow-port",
        "--generate-key",
        "--timeout",
        "30",
    ]);
    assert_eq!(code, 0, "{v}");

    // Publish exactly what `discovery` writes for the node's key files.
    let out = tempfile::tempdir().unwrap();
    let mut discovery = Command::cargo_bin("irsa-agent").unwrap();
    discovery
        .args(["discovery", "--issuer", &issuer, "--allow-port", "--out"])
        .arg(out.path());
    for k in v["key_files"].as_array().unwrap() {
        let node_path = k.as_str().unwrap().trim_start_matches('/');
        discovery
            .arg("--public-key")
            .arg(node.root().join(node_path));
    }
    discovery.assert().success();
    let doc = std::fs::read(out.path().join(".well-known/openid-configuration")).unwrap();
    let jwks = std::fs::read(out.path().join("openid/v1/jwks")).unwrap();
    const DOC: &str = "/cluster/.well-known/openid-configuration";
    const JWKS: &str = "/cluster/openid/v1/jwks";
    host.put(DOC, 200, doc.clone());
    host.put(JWKS, 200, jwks.clone());
    let ca = out.path().join("ca.pem");
    std::fs::write(&ca, host.ca_pem()).unwrap();
    let ca = ca.to_str().unwrap();

    let (v, code) = node.run(&["verify", "--public", "--ca-file", ca]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        v["public"]["jwks_uri"],
        format!("{issuer}/openid/v1/jwks").as_str()
    );

    let fails = |want: &str| {
        let (v, code) = node.run(&["verify", "--public", "--ca-file", ca]);
        assert_eq!(code, 1, "{v}");
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains(want), "wanted {want:?} in: {msg}");
    };
    // Not reachable: the host's certificate is not trusted without --ca-file.
    let (v, code) = node.run(&["verify", "--public"]);
    assert_eq!(code, 1, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("is not reachable"),
        "{v}"
    );
    // The world is an hour behind this node's clock (the publishing host's
    // Date header): the fresh token is from the future for STS.
    host.set_date_offset(Some(-3600));
    fails("this node's clock is");
    host.set_date_offset(None);
    // Not public.
    host.put(JWKS, 403, "<Error><Code>AccessDenied</Code></Error>");
    fails("the document is not public");
    // Nothing published.
    host.put(JWKS, 200, jwks.clone());
    host.remove(DOC);
    fails("answered 404");
    // The issuer published with a trailing slash.
    let slashed = String::from_utf8(doc.clone())
        .unwrap()
        .replace(&format!("\"{issuer}\""), &format!("\"{issuer}/\""));
    host.put(DOC, 200, slashed);
    fails("trailing slash");
    // A JWKS without the signing key: only the cluster's original key.
    host.put(DOC, 200, doc);
    let mut only_old = Command::cargo_bin("irsa-agent").unwrap();
    only_old
        .args([
            "discovery",
            "--issuer",
            &issuer,
            "--allow-port",
            "--jwks-only",
            "--public-key",
        ])
        .arg(
            node.root()
                .join("var/lib/rancher/k3s/server/tls/service.key"),
        );
    let old_jwks = only_old.output().unwrap().stdout;
    host.put(JWKS, 200, old_jwks);
    fails("has no key with kid");

    // The IAM side: the provider `irsa-agent aws` describes must match too.
    let aws = out.path().join("aws");
    Command::cargo_bin("irsa-agent")
        .unwrap()
        .args(["aws", "--issuer", &issuer, "--allow-port", "--out"])
        .arg(&aws)
        .assert()
        .success();
    let provider = aws.join("oidc-provider.json");
    let p = provider.to_str().unwrap();
    let (v, code) = node.run(&["verify", "--aws-provider", p]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["aws_provider_ok"], true);
    let (v, code) = node.run(&["verify", "--aws-provider", p, "--audience", "vault"]);
    assert_eq!(code, 1, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("Incorrect token audience"),
        "{v}"
    );
    let text = std::fs::read_to_string(&provider).unwrap();
    std::fs::write(
        &provider,
        text.replace(&format!("\"{issuer}\""), &format!("\"{issuer}/\"")),
    )
    .unwrap();
    let (v, code) = node.run(&["verify", "--aws-provider", p]);
    assert_eq!(code, 1, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("trailing slash"),
        "{v}"
    );
}

#[test]
fn a_failure_at_any_step_after_the_write_rolls_back() {
    for (fixture, distro) in [("k3s-default", "k3s"), ("kubeadm-default", "kubeadm")] {
        for step in ["after-write", "after-restart", "during-verify"] {
            let node = Node::start(fixture, distro);
            let old = node.running_issuers();
            let before = node.files();
            let out = node
                .irsa()
                .env("IRSA_AGENT_FAILPOINT", step)
                .args([
                    "apply",
                    "--issuer",
                    &issuer_for(step, distro),
                    "--timeout",
                    "20",
                ])
                .output()
                .unwrap();
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(out.status.code(), Some(3), "{distro} {step}: {v}");
            assert_eq!(v["rolled_back"], true, "{distro} {step}: {v}");
            assert_eq!(v["healthy"], true, "{distro} {step}: {v}");
            assert!(
                v["error_chain"]
                    .to_string()
                    .contains(&format!("failpoint {step}")),
                "{distro} {step}: {v}"
            );
            assert_same_files(&node.files(), &before, &format!("{distro} {step}"));
            node.cluster.wait_ready(Duration::from_secs(10)).unwrap();
            assert_eq!(node.running_issuers(), old, "{distro} {step}");
        }
    }
}

#[test]
fn a_process_already_running_the_new_flags_is_not_taken_for_the_new_pod() {
    let mut node = Node::start("kubeadm-default", "kubeadm");
    let issuer = "https://oidc.example.com/stray";
    // The flags the apply will write.
    let (plan, code) = node.run(&["apply", "--issuer", issuer, "--check"]);
    assert_eq!(code, 0, "{plan}");
    let strings = |key: &str| -> Vec<String> {
        plan[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let mut args: Vec<String> = strings("issuers")
        .iter()
        .map(|i| format!("--service-account-issuer={i}"))
        .collect();
    args.extend(
        strings("key_files")
            .iter()
            .map(|k| format!("--service-account-key-file={k}")),
    );
    args.push(format!(
        "--service-account-signing-key-file={}",
        plan["signing_key_file"].as_str().unwrap()
    ));
    args.push(format!(
        "--api-audiences={}",
        strings("api_audiences").join(",")
    ));
    // A kubelet that does not react, and a kube-apiserver already running the
    // new flags, started a moment before the write (start times have
    // one-second resolution): it is not the pod the kubelet would start.
    node.cluster.stop_kubelet();
    let mut stray = std::process::Command::new(node.cluster.stand_in_path().unwrap())
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let before = node.files();
    let (v, code) = node.run(&["apply", "--issuer", issuer, "--timeout", "2"]);
    let _ = stray.kill();
    let _ = stray.wait();
    let msg = v["error"].as_str().unwrap_or_default().to_string();
    assert!(
        msg.contains("did not start a kube-apiserver with the new flags"),
        "the stray process was taken for the new pod: {v}"
    );
    // The files are back, and the pod from before (never replaced) runs them.
    assert_eq!(code, 3, "{v}");
    assert_eq!(v["rolled_back"], true, "{v}");
    assert_eq!(v["healthy"], true, "{v}");
    assert_same_files(&node.files(), &before, "old files restored");
}

#[test]
fn a_rollback_that_cannot_bring_the_apiserver_back_exits_4() {
    let node = Node::start("k3s-default", "k3s");
    // Every key file becomes unreadable from the next start on: the new
    // configuration fails, and so does the old one.
    node.cluster.inject(Fault::UnreadablePrefix(
        "/var/lib/rancher/k3s/server/tls/".into(),
    ));
    let before = node.files();
    let (v, code) = node.run(&[
        "apply",
        "--issuer",
        "https://oidc.example.com/x4",
        "--timeout",
        "20",
    ]);
    assert_eq!(code, 4, "{v}");
    assert_eq!(v["rolled_back"], true, "the old files are back: {v}");
    assert_eq!(v["healthy"], false, "{v}");
    assert_eq!(v["changed"], false, "{v}");
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains("did not come back") && msg.contains("needs attention"),
        "{msg}"
    );
    assert_same_files(&node.files(), &before, "old files restored");
    assert_eq!(
        node.cluster.restarts().len(),
        2,
        "restart, then restart back: {v}"
    );
}

#[test]
fn rollback_explains_when_there_is_nothing_to_restore() {
    let node = Node::start("microk8s-default", "microk8s");
    let (v, code) = node.run(&["rollback"]);
    assert_eq!(code, 1, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("nothing to roll back"),
        "{v}"
    );
    let (v, code) = node.run(&["rollback", "--backup", "20990101T000000.000000Z"]);
    assert_eq!(code, 1, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("no complete backup"),
        "{v}"
    );
    let (v, code) = node.run(&["rollback", "--backup", "../../etc"]);
    assert_eq!(code, 1, "{v}");
    assert!(v["error"].as_str().unwrap().contains("--backup"), "{v}");
    assert!(node.cluster.restarts().is_empty());
}

#[test]
fn rollback_skips_an_apply_that_undid_itself() {
    let node = Node::start("rke2-default", "rke2");
    let original = node.files();
    let (v, code) = node.run(&["apply", "--issuer", &issuer_for("first", "rke2")]);
    assert_eq!(code, 0, "{v}");
    node.cluster.inject(Fault::WrongIssuerOnNextStart(
        "https://wrong.example.com".into(),
    ));
    let (v, code) = node.run(&["apply", "--issuer", &issuer_for("second", "rke2")]);
    assert_eq!(code, 3, "{v}");
    // The failed apply changed nothing in the end: rollback undoes the first one.
    let (v, code) = node.run(&["rollback"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["rolled_back"], true, "{v}");
    assert_same_files(&node.files(), &original, "back to before the first apply");
}

#[test]
fn a_pending_restart_is_reported_until_an_apply_verifies_it() {
    // Without an apiserver: two `--no-restart` runs, the second has nothing
    // to write but the apiserver was never restarted.
    let dir = copy_fixture("kubeadm-default");
    let issuer = "https://oidc.example.com/pending";
    let no_restart = |human: bool| {
        let mut c = Command::cargo_bin("irsa-agent").unwrap();
        c.arg("--root").arg(dir.path());
        if !human {
            c.args(["--output", "json"]);
        }
        c.args(["apply", "--issuer", issuer, "--no-restart"]);
        c.output().unwrap()
    };
    let first = no_restart(false);
    let v = json_of(&first);
    assert_eq!(first.status.code(), Some(0), "{v}");
    assert_eq!(
        (&v["changed"], &v["restart_pending"]),
        (&Value::Bool(true), &Value::Bool(true)),
        "{v}"
    );
    for run in 2..=3 {
        let again = no_restart(false);
        let v = json_of(&again);
        assert_eq!(again.status.code(), Some(0), "run {run}: {v}");
        assert_eq!(v["changed"], false, "run {run}: {v}");
        assert_eq!(v["restart_pending"], true, "run {run}: {v}");
    }
    let human = no_restart(true);
    assert_eq!(human.status.code(), Some(0));
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("already converged"), "{text}");
    assert!(text.contains("restart:     pending"), "{text}");
    // --check says so too, and writes nothing.
    let out = Command::cargo_bin("irsa-agent")
        .unwrap()
        .arg("--root")
        .arg(dir.path())
        .args(["--output", "json", "apply", "--issuer", issuer, "--check"])
        .output()
        .unwrap();
    assert_eq!(json_of(&out)["restart_pending"], true);

    // With the simulator: pending until an apply restarts and verifies.
    let node = Node::start("k3s-default", "k3s");
    let issuer = issuer_for("pending", "k3s");
    let run = |args: &[&str]| {
        let mut all = vec!["apply", "--issuer", &issuer];
        all.extend_from_slice(args);
        node.run(&all)
    };
    let (v, code) = run(&["--no-restart"]);
    assert_eq!(
        (code, &v["restart_pending"]),
        (0, &Value::Bool(true)),
        "{v}"
    );
    let (v, code) = run(&["--no-restart"]);
    assert_eq!(
        (code, &v["restart_pending"]),
        (0, &Value::Bool(true)),
        "{v}"
    );
    // The operator restarts the apiserver; an apply verifies it runs the files.
    node.cluster.restart().unwrap();
    let (v, code) = run(&["--timeout", "20"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["restart_pending"], false, "{v}");
    assert_eq!(v["verified"]["iss"], issuer.as_str(), "{v}");
    let (v, code) = run(&["--no-restart"]);
    assert_eq!(
        (code, &v["restart_pending"]),
        (0, &Value::Bool(false)),
        "{v}"
    );

    // A restarting apply clears it too: a change written without restart,
    // then the next change applied with one.
    let (v, _) = node.run(&[
        "apply",
        "--issuer",
        "https://oidc.example.com/pending-2",
        "--no-restart",
    ]);
    assert_eq!(v["restart_pending"], true, "{v}");
    let (v, code) = node.run(&[
        "apply",
        "--issuer",
        "https://oidc.example.com/pending-3",
        "--timeout",
        "20",
    ]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["restart_pending"], false, "{v}");
    let (v, _) = node.run(&[
        "apply",
        "--issuer",
        "https://oidc.example.com/pending-3",
        "--no-restart",
    ]);
    assert_eq!(v["restart_pending"], false, "{v}");

    // `rollback --no-restart` changes the files without a restart: pending
    // again (the files are back on pending-2), until an apply verifies them.
    let (v, code) = node.run(&["rollback", "--no-restart"]);
    assert_eq!(
        (code, &v["rolled_back"], &v["restart_pending"]),
        (0, &Value::Bool(true), &Value::Bool(true)),
        "{v}"
    );
    let check = |issuer: &str| {
        node.run(&["apply", "--issuer", issuer, "--check"]).0["restart_pending"].clone()
    };
    assert_eq!(check("https://oidc.example.com/pending-2"), true);
    node.cluster.restart().unwrap();
    let (v, code) = node.run(&[
        "apply",
        "--issuer",
        "https://oidc.example.com/pending-2",
        "--timeout",
        "20",
    ]);
    assert_eq!((code, &v["changed"]), (0, &Value::Bool(false)), "{v}");
    assert_eq!(v["restart_pending"], false, "{v}");
    assert_eq!(check("https://oidc.example.com/pending-2"), false);
}
