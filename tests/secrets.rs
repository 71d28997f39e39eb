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
        let mut codes = Vec::new();
        for extra in [
            &[][..],
            &["--output", "json"],
            &["-v"],
            &["-vv"],
            &["-vvv"],
            &["-vv", "--output", "json"],
        ] {
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
