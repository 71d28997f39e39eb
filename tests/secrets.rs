//! No secret ever reaches stdout or stderr: every command (keygen, discovery,
//! aws, detect, apply, verify, rollback) in human and JSON form, quiet and
//! verbose (-v, -vv, -vvv), on success and on failure (including an apply
//! that fails after writing and rolls back), run against the apiserver
//! SIMULATOR in tests/support/sim.
//!
//! A secret is: any private key on the node or given on the command line (its
//! PEM body lines, the base64 of its DER in either alphabet, the
//! `PRIVATE KEY-----` marker), the admin kubeconfig's client key and token,
//! and any JWT (`eyJ...` `.` `...`): tokens are shown only as decoded claims.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use assert_cmd::prelude::*;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use support::copy_fixture;
use support::sim::{Cluster, Fault, Options};

/// Strings that must never be printed, with what they are.
#[derive(Default)]
struct Secrets {
    needles: BTreeSet<(String, String)>,
}

impl Secrets {
    /// Every private key and kubeconfig credential in the files under `dir`.
    fn collect(&mut self, dir: &Path) {
        for (path, (bytes, mode)) in support::snapshot(dir) {
            if mode & 0o170000 != 0o100000 {
                continue;
            }
            let text = String::from_utf8_lossy(&bytes);
            let what = path.display().to_string();
            self.add_pem_text(&text, &what);
            for line in text.lines() {
                let line = line.trim();
                for key in ["client-key-data:", "token:"] {
                    if let Some(v) = line.strip_prefix(key) {
                        let v = v.trim().trim_matches('"');
                        self.add_chunks(v, &format!("{what} {key}"));
                        if let Ok(pem) = STANDARD.decode(v) {
                            self.add_pem_text(&String::from_utf8_lossy(&pem), &what);
                        }
                    }
                }
            }
        }
    }

    fn add_file(&mut self, path: &Path) {
        let text = std::fs::read_to_string(path).unwrap();
        self.add_pem_text(&text, &path.display().to_string());
    }

    /// The PEM blocks whose label names a private key.
    fn add_pem_text(&mut self, text: &str, what: &str) {
        let mut body: Option<(String, String)> = None;
        for line in text.lines() {
            if let Some(label) = line
                .strip_prefix("-----BEGIN ")
                .and_then(|l| l.strip_suffix("-----"))
            {
                body = label
                    .contains("PRIVATE KEY")
                    .then(|| (label.to_string(), String::new()));
            } else if line.starts_with("-----END ") {
                if let Some((label, b64)) = body.take() {
                    let what = format!("{what} ({label})");
                    self.add_chunks(&b64, &what);
                    if let Ok(der) = STANDARD.decode(&b64) {
                        self.add_chunks(&URL_SAFE_NO_PAD.encode(&der), &what);
                    }
                }
            } else if let Some((label, b64)) = body.as_mut() {
                let line = line.trim();
                if line.contains(':') {
                    continue; // Proc-Type / DEK-Info headers
                }
                if line.len() >= 16 {
                    self.needles
                        .insert((line.to_string(), format!("{what} ({label}) PEM line")));
                }
                b64.push_str(line);
            }
        }
    }

    /// 32-character pieces of `b64` at every 4-character boundary: the same
    /// bytes encoded again, with any line length, hold one of them.
    fn add_chunks(&mut self, b64: &str, what: &str) {
        if b64.len() < 16 {
            return;
        }
        if b64.len() <= 32 {
            self.needles.insert((b64.to_string(), what.to_string()));
            return;
        }
        for start in (0..=b64.len() - 32).step_by(4) {
            self.needles
                .insert((b64[start..start + 32].to_string(), what.to_string()));
        }
    }

    /// Every secret found in `text`.
    fn found_in(&self, text: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .needles
            .iter()
            .filter(|(n, _)| text.contains(n.as_str()))
            .map(|(_, what)| format!("a piece of {what}"))
            .collect();
        if text.contains("PRIVATE KEY-----") {
            out.push("a PEM private key marker".into());
        }
        out.extend(jwts(text).into_iter().map(|t| format!("a JWT {t}")));
        if text.contains("\"d\":\"") {
            out.push("a private JWK member \"d\"".into());
        }
        out.sort();
        out.dedup();
        out
    }
}

/// Anything shaped like a JWS compact serialization: `eyJ...` (base64url
/// of `{"`), a dot, a second base64url segment (also JSON: `eyJ...`).
fn jwts(text: &str) -> Vec<String> {
    let is_b64url = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let mut found = Vec::new();
    for (i, _) in text.match_indices("eyJ") {
        let rest = &text[i..];
        let first = rest.find(|c| !is_b64url(c)).unwrap_or(rest.len());
        let after = &rest[first..];
        if let Some(second) = after.strip_prefix('.') {
            let n = second.find(|c| !is_b64url(c)).unwrap_or(second.len());
            if n >= 8 {
                found.push(format!("{}...", &rest[..first.min(20)]));
            }
        }
    }
    if text.contains(".eyJ") {
        found.push("(a segment starting .eyJ)".into());
    }
    found
}

/// Every command run, with what it printed.
struct Runs {
    root: PathBuf,
    env: Vec<(String, String)>,
    outputs: Vec<(String, String)>,
}

impl Runs {
    /// Run `irsa-agent args` (with --root when `node`); record stdout and stderr.
    fn run(&mut self, node: bool, args: &[&str]) -> (i32, String) {
        let mut c = Command::cargo_bin("irsa-agent").unwrap();
        c.env_remove("IRSA_AGENT_LOG")
            .env_remove("DBUS_SYSTEM_BUS_ADDRESS");
        if node {
            c.arg("--root").arg(&self.root);
            for (k, v) in &self.env {
                c.env(k, v);
            }
        }
        let out = c.args(args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let code = out.status.code().expect("exited");
        let label = format!("irsa-agent {} (exit {code})", args.join(" "));
        self.outputs
            .push((format!("{label} stdout"), stdout.clone()));
        self.outputs
            .push((format!("{label} stderr"), stderr.clone()));
        (code, format!("{stdout}{stderr}"))
    }

    /// The same command in every output form and verbosity.
    fn every_form(&mut self, node: bool, args: &[&str]) -> Vec<i32> {
        self.forms(
            node,
            args,
            &[
                &[][..],
                &["--output", "json"],
                &["-v"],
                &["-vv"],
                &["-vvv"],
                &["-vv", "--output", "json"],
            ],
        )
    }

    /// Text and JSON, quiet and with -v / -vvv (the logs of every level).
    fn main_forms(&mut self, node: bool, args: &[&str]) -> Vec<i32> {
        self.forms(
            node,
            args,
            &[
                &[][..],
                &["--output", "json"],
                &["-v"],
                &["-vvv", "--output", "json"],
            ],
        )
    }

    fn forms(&mut self, node: bool, args: &[&str], forms: &[&[&str]]) -> Vec<i32> {
        let mut codes = Vec::new();
        for extra in forms {
            let mut a: Vec<&str> = extra.to_vec();
            a.extend_from_slice(args);
            codes.push(self.run(node, &a).0);
        }
        codes
    }
}

#[test]
fn the_checker_finds_keys_and_tokens() {
    // The detector itself can fail: it finds a private key in any layout and
    // a real token from the simulator, and passes what must be allowed.
    let dir = copy_fixture("k3s-default");
    let cluster = Cluster::start_with(
        "k3s",
        dir.path(),
        Options {
            startup_delay: Duration::from_millis(100),
        },
    )
    .unwrap();
    let mut s = Secrets::default();
    s.collect(dir.path());
    let key_path = dir
        .path()
        .join("var/lib/rancher/k3s/server/tls/service.key");
    let pem = std::fs::read_to_string(&key_path).unwrap();
    assert!(!s.found_in(&pem).is_empty());
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!s.found_in(&body).is_empty(), "the key on one line");
    let rewrapped: String = body
        .as_bytes()
        .chunks(76)
        .map(|c| format!("{}\n", String::from_utf8_lossy(c)))
        .collect();
    assert!(!s.found_in(&rewrapped).is_empty(), "the key wrapped at 76");
    let der = STANDARD.decode(&body).unwrap();
    assert!(
        !s.found_in(&URL_SAFE_NO_PAD.encode(&der)).is_empty(),
        "base64url"
    );
    let token = cluster.token("default", "default", &[]).unwrap();
    assert!(!s.found_in(&format!("token: {token}\n")).is_empty());
    assert!(!s.found_in(&format!("{{\"t\":\"{token}\"}}")).is_empty());
    // The admin kubeconfig's client key is a secret too.
    let kc = std::fs::read_to_string(cluster.kubeconfig_path()).unwrap();
    if let Some(line) = kc.lines().find(|l| l.contains("client-key-data:")) {
        let v = line.split(':').nth(1).unwrap().trim();
        assert!(!s.found_in(v).is_empty(), "client-key-data");
    }
    // Public material and decoded claims are fine.
    assert_eq!(
        s.found_in("token iss:   https://oidc.example.com\n-----BEGIN PUBLIC KEY-----\nMFkw\n"),
        Vec::<String>::new()
    );
}

#[test]
fn no_command_prints_a_private_key_or_a_token() {
    // k3s: the admin kubeconfig holds a client key; MicroK8s: a bearer token.
    every_command_on("k3s-default", "k3s");
    every_command_on("microk8s-default", "microk8s");
}

fn every_command_on(fixture: &str, distro: &str) {
    let dir = copy_fixture(fixture);
    let root = dir.path().to_path_buf();
    let cluster = Cluster::start_with(
        distro,
        &root,
        Options {
            startup_delay: Duration::from_millis(100),
        },
    )
    .unwrap();
    let mut secrets = Secrets::default();
    secrets.collect(&root);
    let mut r = Runs {
        root: root.clone(),
        env: cluster.env(),
        outputs: Vec::new(),
    };
    let work = tempfile::tempdir().unwrap();
    let w = |name: &str| work.path().join(name).to_str().unwrap().to_string();
    let issuer = "https://oidc.example.com/secrets";

    // keygen: success, refusal to overwrite, --force.
    for kind in ["rsa-2048", "ec-p256"] {
        let (k, p) = (w(&format!("{kind}.key")), w(&format!("{kind}.pub")));
        let (code, _) = r.run(
            false,
            &[
                "-vv",
                "keygen",
                "--type",
                kind,
                "--private-key",
                &k,
                "--public-key",
                &p,
            ],
        );
        assert_eq!(code, 0);
        secrets.add_file(Path::new(&k));
        let codes = r.every_form(
            false,
            &[
                "keygen",
                "--type",
                kind,
                "--private-key",
                &k,
                "--public-key",
                &p,
            ],
        );
        assert!(
            codes.iter().all(|c| *c == 1),
            "refuses to overwrite: {codes:?}"
        );
        let (code, _) = r.run(
            false,
            &[
                "-vv",
                "--output",
                "json",
                "keygen",
                "--force",
                "--type",
                kind,
                "--private-key",
                &k,
                "--public-key",
                &p,
            ],
        );
        assert_eq!(code, 0);
        secrets.add_file(Path::new(&k));
    }
    let (key, public) = (w("rsa-2048.key"), w("rsa-2048.pub"));

    // A private key given where a public one is expected, and a damaged one.
    let damaged = w("damaged.key");
    let text = std::fs::read_to_string(&key).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.remove(3);
    std::fs::write(&damaged, lines.join("\n")).unwrap();
    let codes = r.every_form(
        false,
        &[
            "discovery",
            "--issuer",
            issuer,
            "--public-key",
            &key,
            "--out",
            &w("pub1"),
        ],
    );
    assert!(
        codes.iter().all(|c| *c == 0),
        "a private key file gives its public half: {codes:?}"
    );
    r.every_form(
        false,
        &[
            "discovery",
            "--issuer",
            issuer,
            "--jwks-only",
            "--public-key",
            &key,
        ],
    );
    let codes = r.every_form(
        false,
        &[
            "discovery",
            "--issuer",
            issuer,
            "--public-key",
            &damaged,
            "--out",
            &w("pub2"),
        ],
    );
    assert!(codes.iter().all(|c| *c == 1), "{codes:?}");
    let codes = r.every_form(
        false,
        &[
            "aws",
            "--issuer",
            issuer,
            "--namespace",
            "ns",
            "--service-account",
            "sa",
            "--out",
            &w("aws"),
        ],
    );
    assert!(codes.iter().all(|c| *c == 0), "{codes:?}");

    // The node: detect, apply (check, then for real), verify, a failing
    // apply that rolls back, bad keys, rollback.
    assert!(r.every_form(true, &["detect"]).iter().all(|c| *c == 0));
    let codes = r.every_form(
        true,
        &[
            "apply",
            "--issuer",
            issuer,
            "--signing-key",
            &key,
            "--check",
            "--diff",
        ],
    );
    assert!(codes.iter().all(|c| *c == 0), "{codes:?}");
    let (code, out) = r.run(
        true,
        &[
            "-vvv",
            "apply",
            "--issuer",
            issuer,
            "--signing-key",
            &key,
            "--diff",
            "--timeout",
            "30",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("(private key, content not shown)"), "{out}");
    secrets.collect(&root);
    assert!(r
        .every_form(true, &["verify", "--timeout", "10"])
        .iter()
        .all(|c| *c == 0));
    r.every_form(true, &["verify", "--audience", "vault"]);
    let codes = r.every_form(true, &["verify", "--service-account", "default/nobody"]);
    assert!(codes.iter().all(|c| *c == 1), "{codes:?}");
    // Converged: the no-op apply verifies too.
    let (code, out) = r.run(
        true,
        &["-vv", "apply", "--issuer", issuer, "--signing-key", &key],
    );
    assert_eq!(code, 0, "{out}");

    cluster.inject(Fault::WrongIssuerOnNextStart(
        "https://wrong.example.com".into(),
    ));
    let (code, out) = r.run(
        true,
        &[
            "-vvv",
            "--output",
            "json",
            "apply",
            "--issuer",
            "https://oidc.example.com/second",
            "--generate-key",
            "--diff",
            "--timeout",
            "20",
        ],
    );
    assert_eq!(code, 3, "rolled back: {out}");
    cluster.wait_ready(Duration::from_secs(10)).unwrap();
    cluster.inject(Fault::WrongIssuerOnNextStart(
        "https://wrong.example.com".into(),
    ));
    let (code, out) = r.run(
        true,
        &[
            "-vv",
            "apply",
            "--issuer",
            "https://oidc.example.com/third",
            "--generate-key",
            "--diff",
            "--timeout",
            "20",
        ],
    );
    assert_eq!(code, 3, "rolled back: {out}");
    cluster.wait_ready(Duration::from_secs(10)).unwrap();
    secrets.collect(&root); // (the backups of the failed runs)
    for bad in [&public, &damaged] {
        let codes = r.every_form(true, &["apply", "--issuer", issuer, "--signing-key", bad]);
        assert!(codes.iter().all(|c| *c == 1), "{bad}: {codes:?}");
    }
    let codes = r.every_form(true, &["rollback", "--check"]);
    assert!(codes.iter().all(|c| *c == 0), "{codes:?}");
    let (code, out) = r.run(
        true,
        &["-vvv", "--output", "json", "rollback", "--timeout", "30"],
    );
    assert_eq!(code, 0, "{out}");
    secrets.collect(&root);

    assert!(
        secrets.needles.len() > 100,
        "the secrets were found: {}",
        secrets.needles.len()
    );
    let mut leaks = Vec::new();
    for (label, text) in &r.outputs {
        for found in secrets.found_in(text) {
            leaks.push(format!("{label}: {found}"));
        }
    }
    if std::env::var_os("SECRETS_DUMP").is_some() {
        for (label, text) in &r.outputs {
            println!("==== {label} ({} bytes)", text.len());
            println!("{text}");
        }
    }
    assert!(
        leaks.is_empty(),
        "{distro}: secrets in the output:\n{}",
        leaks.join("\n")
    );
    // Not vacuous: the runs printed plenty, claims included.
    let all: String = r.outputs.iter().map(|(_, t)| t.as_str()).collect();
    assert!(
        all.contains("token iss:") && all.contains(issuer),
        "claims were shown"
    );
}

// ---------------------------------------------------------------------------
// Secrets in the user's own files (issue: diffs with context in the JSON)
// ---------------------------------------------------------------------------

/// Replace `anchor` in the node file `rel` (it must be there once).
fn edit(root: &Path, rel: &str, anchor: &str, with: &str) {
    let path = root.join(rel);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.matches(anchor).count(), 1, "{rel}: {anchor:?}");
    std::fs::write(&path, text.replace(anchor, with)).unwrap();
}

/// Add a credential next to the kubeconfig's client key (same indentation).
fn plant_kubeconfig(root: &Path, rel: &str, key: &str, value: &str) {
    let path = root.join(rel);
    let text = std::fs::read_to_string(&path).unwrap();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("client-key"))
        .unwrap_or_else(|| panic!("{rel}: no client key line"))
        .to_string();
    let indent = &line[..line.len() - line.trim_start().len()];
    edit(root, rel, &line, &format!("{line}\n{indent}{key}: {value}"));
}

/// Secret values written into the node's files, every one right next to a
/// line `apply` changes (so a diff with context would show it), with what
/// each is. Kubeconfigs get a `password`/`token` beside their client key.
fn plant(root: &Path, fixture: &str) -> Vec<(String, String)> {
    let mut planted = Vec::new();
    let mut put = |value: String, what: &str| {
        planted.push((value.clone(), format!("{fixture} {what}")));
        value
    };
    let k3s_config = |root: &Path,
                      dir: &str,
                      tls: &str,
                      last_item: &str,
                      put: &mut dyn FnMut(String, &str) -> String| {
        let token = put(
            format!("K10{}::server:{dir}-token-secret-value", "ab".repeat(16)),
            "token",
        );
        let agent = put(format!("{dir}-agent-token-secret-value"), "agent-token");
        let etcd = put(
            format!("{dir}-etcd-url-password"),
            "kube-apiserver-arg etcd-servers password",
        );
        let arg_token = put(
            format!("{dir}-arg-token-secret-value"),
            "kube-apiserver-arg token=",
        );
        let pg = put(
            format!("{dir}-datastore-pg-password"),
            "datastore-endpoint password",
        );
        edit(
            root,
            &format!("etc/rancher/{dir}/config.yaml"),
            last_item,
            &format!(
                "{last_item}\n  - \"etcd-servers=https://root:{etcd}@10.0.0.1:2379\"\n  - \"token={arg_token}\"\n  \
                 - \"service-account-signing-key-file=/var/lib/rancher/{dir}/server/tls/{tls}\"\n\
                 token: \"{token}\"\nagent-token: {agent}\n\
                 datastore-endpoint: \"postgres://{dir}:{pg}@db.example.com:5432/{dir}\""
            ),
        );
    };
    match fixture {
        "k3s-default" => {
            k3s_config(
                root,
                "k3s",
                "service.current.key",
                "  - \"feature-gates=ServiceAccountTokenNodeBinding=true\"",
                &mut put,
            );
            let mysql = put(
                "k3s-mysql-dsn-password".into(),
                "datastore-endpoint (MySQL DSN) password",
            );
            let drop = root.join("etc/rancher/k3s/config.yaml.d");
            std::fs::create_dir_all(&drop).unwrap();
            std::fs::write(
                drop.join("20-datastore.yaml"),
                format!(
                    "datastore-endpoint: \"mysql://k3s:{mysql}@tcp(db.example.com:3306)/k3s\"\n"
                ),
            )
            .unwrap();
            let p = put("k3s-kubeconfig-password".into(), "k3s.yaml password");
            plant_kubeconfig(root, "etc/rancher/k3s/k3s.yaml", "password", &p);
        }
        "k3s-dropins" => {
            let token = put("k3s-dropin-token-secret-value".into(), "drop-in token");
            let agent = put(
                "k3s-dropin-agent-token-secret".into(),
                "drop-in agent-token",
            );
            edit(
                root,
                "etc/rancher/k3s/config.yaml.d/10-audit.yaml",
                "  - \"audit-policy-file=/etc/rancher/k3s/audit-policy.yaml\"",
                &format!(
                    "  - \"audit-policy-file=/etc/rancher/k3s/audit-policy.yaml\"\n  \
                     - \"service-account-signing-key-file=/var/lib/rancher/k3s/server/tls/service.current.key\"\n\
                     token: {token}\nagent-token: '{agent}'"
                ),
            );
            let t = put("k3s-dropins-kubeconfig-token".into(), "k3s.yaml token");
            plant_kubeconfig(root, "etc/rancher/k3s/k3s.yaml", "token", &t);
        }
        "rke2-default" => {
            k3s_config(
                root,
                "rke2",
                "service.current.key",
                "  - \"audit-log-maxage=30\"",
                &mut put,
            );
            let p = put("rke2-kubeconfig-password".into(), "rke2.yaml password");
            plant_kubeconfig(root, "etc/rancher/rke2/rke2.yaml", "password", &p);
        }
        "kubeadm-default" | "minikube-default" => {
            let etcd = put(
                format!("{fixture}-etcd-password"),
                "manifest etcd-servers password",
            );
            let secret = put(
                format!("{fixture}-oidc-client-secret"),
                "manifest --oidc-client-secret",
            );
            let manifest = "etc/kubernetes/manifests/kube-apiserver.yaml";
            edit(
                root,
                manifest,
                "    - --etcd-servers=https://127.0.0.1:2379",
                &format!("    - --etcd-servers=https://root:{etcd}@127.0.0.1:2379"),
            );
            let port = if fixture == "kubeadm-default" {
                "6443"
            } else {
                "8443"
            };
            edit(
                root,
                manifest,
                &format!("    - --secure-port={port}"),
                &format!("    - --oidc-client-secret={secret}\n    - --secure-port={port}"),
            );
            let (kc, key) = if fixture == "kubeadm-default" {
                ("etc/kubernetes/admin.conf", "password")
            } else {
                ("var/lib/minikube/kubeconfig", "token")
            };
            let v = put(
                format!("{fixture}-kubeconfig-{key}"),
                "kubeconfig credential",
            );
            plant_kubeconfig(root, kc, key, &v);
        }
        "microk8s-default" => {
            let token = put("microk8s-args-token-secret".into(), "args --token=");
            let agent = put(
                "microk8s-args-agent-token-secret".into(),
                "args --agent-token",
            );
            edit(
                root,
                "var/snap/microk8s/current/args/kube-apiserver",
                "--service-account-issuer='https://kubernetes.default.svc'",
                &format!(
                    "--token={token}\n--service-account-issuer='https://kubernetes.default.svc'\n--agent-token {agent}"
                ),
            );
            let p = put(
                "microk8s-kubeconfig-password".into(),
                "client.config password",
            );
            plant_kubeconfig(
                root,
                "var/snap/microk8s/current/credentials/client.config",
                "password",
                &p,
            );
        }
        "k0s-default" => {
            let kine = put(
                "k0s-kine-mysql-password".into(),
                "storage.kine.dataSource password",
            );
            let etcd = put(
                "k0s-extraargs-etcd-password".into(),
                "api.extraArgs etcd-servers password",
            );
            let k0s = "etc/k0s/k0s.yaml";
            edit(
                root,
                k0s,
                "    k0sApiPort: 9443",
                &format!(
                    "    extraArgs:\n      etcd-servers: \"https://root:{etcd}@10.0.0.1:2379\"\n    k0sApiPort: 9443"
                ),
            );
            edit(
                root,
                k0s,
                "    etcd:\n      peerAddress: 192.168.56.30\n    type: etcd",
                &format!(
                    "    kine:\n      dataSource: \"mysql://k0s:{kine}@tcp(db.example.com:3306)/k0s\"\n    type: kine"
                ),
            );
            let p = put("k0s-kubeconfig-password".into(), "admin.conf password");
            plant_kubeconfig(root, "var/lib/k0s/pki/admin.conf", "password", &p);
        }
        other => panic!("no secrets planted for {other}"),
    }
    planted
}

#[test]
fn secrets_in_the_users_files_never_reach_the_output() {
    // Every fixture distribution; the file each one edits holds secrets next
    // to the lines that change.
    for (fixture, edited) in [
        ("k3s-default", "/etc/rancher/k3s/config.yaml"),
        (
            "k3s-dropins",
            "/etc/rancher/k3s/config.yaml.d/10-audit.yaml",
        ),
        ("rke2-default", "/etc/rancher/rke2/config.yaml"),
        (
            "kubeadm-default",
            "/etc/kubernetes/manifests/kube-apiserver.yaml",
        ),
        (
            "minikube-default",
            "/etc/kubernetes/manifests/kube-apiserver.yaml",
        ),
        (
            "microk8s-default",
            "/var/snap/microk8s/current/args/kube-apiserver",
        ),
        ("k0s-default", "/etc/k0s/k0s.yaml"),
    ] {
        users_secrets_on(fixture, edited);
    }
}

fn users_secrets_on(fixture: &str, edited: &str) {
    let dir = copy_fixture(fixture);
    let root = dir.path().to_path_buf();
    let planted = plant(&root, fixture);
    let mut secrets = Secrets::default();
    secrets.collect(&root);
    for (value, what) in &planted {
        secrets.needles.insert((value.clone(), what.clone()));
    }
    let mut r = Runs {
        root: root.clone(),
        env: Vec::new(),
        outputs: Vec::new(),
    };
    let issuer = "https://oidc.example.com/users-secrets";
    assert!(
        r.main_forms(true, &["detect"]).iter().all(|c| *c == 0),
        "{fixture}: detect"
    );
    // Dry runs: without and with --diff (the JSON has the diff either way),
    // keeping the signing key and with a new one (k3s/RKE2 then edit the
    // user's signing-key item in place, among the secrets).
    for diff in [&[][..], &["--diff"]] {
        for key in [&[][..], &["--generate-key"]] {
            let mut args = vec!["apply", "--issuer", issuer, "--check"];
            args.extend_from_slice(diff);
            args.extend_from_slice(key);
            let codes = r.main_forms(true, &args);
            assert!(
                codes.iter().all(|c| *c == 0),
                "{fixture} {args:?}: {codes:?}"
            );
        }
    }
    // A real write, then the backup listing and a rollback.
    let (code, out) = r.run(
        true,
        &[
            "-v",
            "apply",
            "--issuer",
            issuer,
            "--generate-key",
            "--no-restart",
            "--diff",
        ],
    );
    assert_eq!(code, 0, "{fixture}: {out}");
    secrets.collect(&root);
    let codes = r.main_forms(true, &["rollback", "--check"]);
    assert!(codes.iter().all(|c| *c == 0), "{fixture}: {codes:?}");
    let (code, out) = r.run(
        true,
        &["-vvv", "--output", "json", "rollback", "--no-restart"],
    );
    assert_eq!(code, 0, "{fixture}: {out}");

    let mut leaks = Vec::new();
    for (label, text) in &r.outputs {
        for found in secrets.found_in(text) {
            leaks.push(format!("{label}: {found}"));
        }
    }
    assert!(
        leaks.is_empty(),
        "{fixture}: secrets in the output:\n{}",
        leaks.join("\n")
    );
    // Not vacuous: the file holding the secrets was diffed, in JSON and text.
    let all: String = r.outputs.iter().map(|(_, t)| t.as_str()).collect();
    assert!(
        all.contains(&format!("\"path\":\"{edited}\"")),
        "{fixture}: {edited} changed"
    );
    assert!(
        all.contains(&format!("+++ b{edited}")),
        "{fixture}: {edited} diffed"
    );
    for (value, _) in &planted {
        let on_disk: String = support::snapshot(&root)
            .into_values()
            .map(|(bytes, _)| String::from_utf8_lossy(&bytes).into_owned())
            .collect();
        assert!(
            on_disk.contains(value.as_str()),
            "{fixture}: {value} still in the files"
        );
    }
}
