//! `keygen`, `discovery` and `aws` end to end through the binary. Golden files
//! live in tests/golden/keys/; regenerate them with `UPDATE_GOLDEN=1 cargo test
//! --test keys_cli` and review the diff.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;

use assert_cmd::Command;
use base64::Engine;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn bin() -> Command {
    let mut c = Command::cargo_bin("irsa-agent").unwrap();
    c.env_remove("IRSA_AGENT_LOG");
    c
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keys")
        .join(name)
}

fn golden(name: &str, actual: &[u8]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/keys")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, actual).unwrap();
        return;
    }
    let want = fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert!(
        want == actual,
        "{} differs:\n--- want\n{}\n--- got\n{}",
        path.display(),
        String::from_utf8_lossy(&want),
        String::from_utf8_lossy(actual)
    );
}

fn json_out(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

fn openssl(args: &[&str]) -> std::process::Output {
    let out = StdCommand::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// kid computed from openssl's own PKIX DER, independently of irsa-agent.
fn openssl_kid(public_pem: &Path) -> String {
    let der = openssl(&[
        "pkey",
        "-pubin",
        "-in",
        public_pem.to_str().unwrap(),
        "-outform",
        "DER",
    ])
    .stdout;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(der))
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn keygen_writes_keys_openssl_loads_with_the_right_modes() {
    let tmp = tempfile::tempdir().unwrap();
    for kind in ["rsa-2048", "ec-p256", "rsa-4096"] {
        let (priv_, pub_) = (
            tmp.path().join(format!("{kind}.key")),
            tmp.path().join(format!("{kind}.pub")),
        );
        let out = bin()
            .args([
                "keygen",
                "--output",
                "json",
                "--type",
                kind,
                "--private-key",
            ])
            .arg(&priv_)
            .arg("--public-key")
            .arg(&pub_)
            .output()
            .unwrap();
        let v = json_out(&out);
        openssl(&["pkey", "-in", priv_.to_str().unwrap(), "-noout"]);
        openssl(&["pkey", "-pubin", "-in", pub_.to_str().unwrap(), "-noout"]);
        assert_eq!(mode(&priv_), 0o600, "{kind}");
        assert_eq!(mode(&pub_), 0o644, "{kind}");
        assert!(fs::read_to_string(&priv_)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(fs::read_to_string(&pub_)
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert_eq!(v["kid"], openssl_kid(&pub_), "{kind}");
        assert_eq!(v["alg"], if kind == "ec-p256" { "ES256" } else { "RS256" });
    }
    // Human mode prints the kid.
    let (priv_, pub_) = (tmp.path().join("h.key"), tmp.path().join("h.pub"));
    let out = bin()
        .args(["keygen", "--type", "ec-p256", "--private-key"])
        .arg(&priv_)
        .arg("--public-key")
        .arg(&pub_)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(&format!("kid: {}\n", openssl_kid(&pub_))),
        "{text}"
    );
}

#[test]
fn keygen_refuses_to_overwrite_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let (priv_, pub_) = (tmp.path().join("sa.key"), tmp.path().join("sa.pub"));
    let run = |force: bool| {
        let mut c = bin();
        c.args(["keygen", "--type", "ec-p256", "--private-key"])
            .arg(&priv_)
            .arg("--public-key")
            .arg(&pub_);
        if force {
            c.arg("--force");
        }
        c.output().unwrap()
    };
    assert!(run(false).status.success());
    let before = fs::read(&priv_).unwrap();
    // Only the public key exists: still refused, nothing written.
    fs::remove_file(&priv_).unwrap();
    let out = run(false);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "--public-key {}: already exists (pass --force to overwrite)",
            pub_.display()
        )),
        "{err}"
    );
    assert!(!priv_.exists());
    fs::write(&priv_, &before).unwrap();
    fs::set_permissions(&priv_, fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(false);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--private-key"));
    assert_eq!(fs::read(&priv_).unwrap(), before);
    // --force replaces both, and the private key is 0600 again.
    assert!(run(true).status.success());
    assert_ne!(fs::read(&priv_).unwrap(), before);
    assert_eq!(mode(&priv_), 0o600);
    // No temporary file left behind.
    assert_eq!(files_under(tmp.path()).len(), 2);
}

fn discovery(dir: &Path, layout: &str, extra: &[&str]) -> std::process::Output {
    bin()
        .current_dir(dir)
        .args([
            "discovery",
            "--issuer",
            "https://oidc.example.com/cluster-a",
            "--layout",
            layout,
        ])
        .arg("--public-key")
        .arg(fixture("multi.pem"))
        .arg("--public-key")
        .arg(fixture("ec256-sec1.pem"))
        .arg("--public-key")
        .arg(fixture("rsa-cert.pem"))
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn discovery_kube_layout_matches_golden_files() {
    let tmp = tempfile::tempdir().unwrap();
    let v = json_out(&discovery(
        tmp.path(),
        "kube",
        &["--out", "out", "--output", "json"],
    ));
    golden(
        "kube/.well-known/openid-configuration",
        &fs::read(tmp.path().join("out/.well-known/openid-configuration")).unwrap(),
    );
    golden(
        "kube/openid/v1/jwks",
        &fs::read(tmp.path().join("out/openid/v1/jwks")).unwrap(),
    );
    assert_eq!(files_under(&tmp.path().join("out")).len(), 2);
    assert_eq!(
        v["files"],
        serde_json::json!([
            {"path": "out/.well-known/openid-configuration",
             "url": "https://oidc.example.com/cluster-a/.well-known/openid-configuration",
             "content_type": "application/json"},
            {"path": "out/openid/v1/jwks",
             "url": "https://oidc.example.com/cluster-a/openid/v1/jwks",
             "content_type": "application/jwk-set+json"},
        ])
    );
    // rsa-cert.pem holds the same key as multi.pem: published once, noted.
    assert_eq!(v["keys"].as_array().unwrap().len(), 3);
    let warnings = v["warnings"].as_array().unwrap();
    assert!(
        warnings.iter().any(|w| w.as_str().unwrap().contains(
            "rsa-cert.pem: key nY_WL9sGOgReG0lpBM3owkscZt1oBHzWl-BG15fAvFo is already in"
        )),
        "{warnings:?}"
    );
}

#[test]
fn discovery_keys_json_layout_and_jwks_only_match_golden_files() {
    let tmp = tempfile::tempdir().unwrap();
    let out = discovery(tmp.path(), "keys-json", &["--out", "out"]);
    assert!(out.status.success());
    golden(
        "keys-json/.well-known/openid-configuration",
        &fs::read(tmp.path().join("out/.well-known/openid-configuration")).unwrap(),
    );
    golden(
        "keys-json/keys.json",
        &fs::read(tmp.path().join("out/keys.json")).unwrap(),
    );
    let human = String::from_utf8(out.stdout).unwrap();
    assert!(human.contains("out/keys.json -> https://oidc.example.com/cluster-a/keys.json (Content-Type: application/jwk-set+json)"), "{human}");

    // --jwks-only: stdout is the bare JWKS, in json mode too, nothing written.
    for mode in ["human", "json"] {
        let tmp = tempfile::tempdir().unwrap();
        let out = discovery(tmp.path(), "kube", &["--jwks-only", "--output", mode]);
        assert!(out.status.success());
        golden("kube/openid/v1/jwks", &out.stdout);
        assert!(files_under(tmp.path()).is_empty());
    }
}

#[test]
fn discovery_is_byte_stable_and_publishes_every_rotated_key() {
    let tmp = tempfile::tempdir().unwrap();
    let mut pubs = Vec::new();
    for (n, kind) in [("old", "rsa-2048"), ("new", "ec-p256")] {
        let p = tmp.path().join(format!("{n}.pub"));
        bin()
            .args(["keygen", "--type", kind, "--private-key"])
            .arg(tmp.path().join(format!("{n}.key")))
            .arg("--public-key")
            .arg(&p)
            .assert()
            .success();
        pubs.push(p);
    }
    let run = |out: &str| {
        bin()
            .args(["discovery", "--issuer", "https://oidc.example.com", "--out"])
            .arg(tmp.path().join(out))
            .arg("--public-key")
            .arg(&pubs[0])
            .arg("--public-key")
            .arg(&pubs[1])
            .assert()
            .success();
    };
    run("a");
    run("b");
    for rel in [".well-known/openid-configuration", "openid/v1/jwks"] {
        assert_eq!(
            fs::read(tmp.path().join("a").join(rel)).unwrap(),
            fs::read(tmp.path().join("b").join(rel)).unwrap(),
            "{rel}"
        );
    }
    let jwks: Value =
        serde_json::from_slice(&fs::read(tmp.path().join("a/openid/v1/jwks")).unwrap()).unwrap();
    let kids: Vec<_> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kids, [openssl_kid(&pubs[0]), openssl_kid(&pubs[1])]);
    let doc: Value = serde_json::from_slice(
        &fs::read(tmp.path().join("a/.well-known/openid-configuration")).unwrap(),
    )
    .unwrap();
    assert_eq!(doc["issuer"], "https://oidc.example.com");
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        serde_json::json!(["ES256", "RS256"])
    );
}

fn aws(dir: &Path, extra: &[&str]) -> std::process::Output {
    bin()
        .current_dir(dir)
        .args([
            "aws",
            "--output",
            "json",
            "--issuer",
            "https://oidc.example.com/cluster-a",
            "--out",
            "out",
        ])
        .args(extra)
        .output()
        .unwrap()
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
}

#[test]
fn aws_service_account_trust_policy_and_provider_with_ca_thumbprint() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = fixture("ca.pem");
    let v = json_out(&aws(
        tmp.path(),
        &[
            "--namespace",
            "apps",
            "--service-account",
            "uploader",
            "--role-name",
            "uploader",
            "--audience",
            "sts.amazonaws.com",
            "--ca-file",
            ca.to_str().unwrap(),
        ],
    ));
    let fp = String::from_utf8(
        openssl(&[
            "x509",
            "-in",
            ca.to_str().unwrap(),
            "-fingerprint",
            "-sha1",
            "-noout",
        ])
        .stdout,
    )
    .unwrap();
    let want = fp
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_lowercase();
    assert_eq!(want.len(), 40);

    let provider = read_json(&tmp.path().join("out/oidc-provider.json"));
    assert_eq!(provider["Url"], "https://oidc.example.com/cluster-a");
    assert_eq!(
        provider["ClientIDList"],
        serde_json::json!(["sts.amazonaws.com"])
    );
    assert_eq!(provider["ThumbprintList"], serde_json::json!([want]));
    assert_eq!(v["thumbprint"]["value"], want);

    let policy = read_json(&tmp.path().join("out/trust-policy.json"));
    assert_eq!(policy["Version"], "2012-10-17");
    let st = &policy["Statement"][0];
    assert_eq!(st["Effect"], "Allow");
    assert_eq!(st["Action"], "sts:AssumeRoleWithWebIdentity");
    assert_eq!(
        st["Principal"]["Federated"],
        "arn:aws:iam::ACCOUNT_ID:oidc-provider/oidc.example.com/cluster-a"
    );
    assert_eq!(
        st["Condition"],
        serde_json::json!({"StringEquals": {
            "oidc.example.com/cluster-a:sub": "system:serviceaccount:apps:uploader",
            "oidc.example.com/cluster-a:aud": "sts.amazonaws.com"}})
    );
    golden(
        "aws/oidc-provider.json",
        &fs::read(tmp.path().join("out/oidc-provider.json")).unwrap(),
    );
    golden(
        "aws/trust-policy.json",
        &fs::read(tmp.path().join("out/trust-policy.json")).unwrap(),
    );

    assert_eq!(v["role_arn"], "arn:aws:iam::ACCOUNT_ID:role/uploader");
    assert_eq!(
        v["service_account_annotation"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::ACCOUNT_ID:role/uploader"
    );
    assert_eq!(
        v["env"]["AWS_WEB_IDENTITY_TOKEN_FILE"],
        "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"
    );
    assert_eq!(
        v["commands"],
        serde_json::json!([
            "aws iam create-open-id-connect-provider --cli-input-json file://out/oidc-provider.json",
            "aws iam create-role --role-name uploader --assume-role-policy-document file://out/trust-policy.json"
        ])
    );
    assert_eq!(v["account_id_placeholder"], "ACCOUNT_ID");
}

#[test]
fn aws_namespace_policy_uses_string_like_and_a_placeholder_thumbprint_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    let v = json_out(&aws(
        tmp.path(),
        &[
            "--namespace",
            "apps",
            "--audience",
            "a1",
            "--audience",
            "a2",
        ],
    ));
    let provider = read_json(&tmp.path().join("out/oidc-provider.json"));
    assert_eq!(
        provider["ThumbprintList"],
        serde_json::json!(["0000000000000000000000000000000000000000"]),
        "a placeholder AWS accepts: 40 hex digits"
    );
    assert_eq!(v["thumbprint"]["source"], "placeholder");
    assert_eq!(provider["ClientIDList"], serde_json::json!(["a1", "a2"]));
    assert!(v["notes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n.as_str().unwrap().contains("AWS ignores the thumbprint")));
    let c = &read_json(&tmp.path().join("out/trust-policy.json"))["Statement"][0]["Condition"];
    assert_eq!(
        c["StringLike"],
        serde_json::json!({"oidc.example.com/cluster-a:sub": "system:serviceaccount:apps:*"})
    );
    assert_eq!(
        c["StringEquals"],
        serde_json::json!({"oidc.example.com/cluster-a:aud": ["a1", "a2"]})
    );
}

#[test]
fn aws_without_namespace_writes_only_the_provider() {
    let tmp = tempfile::tempdir().unwrap();
    let v = json_out(&aws(tmp.path(), &[]));
    assert!(tmp.path().join("out/oidc-provider.json").exists());
    assert!(!tmp.path().join("out/trust-policy.json").exists());
    assert!(v["notes"].as_array().unwrap().iter().any(|n| n
        .as_str()
        .unwrap()
        .contains("trust-policy.json not written")));
    assert!(v.get("role_arn").is_none());
}

#[test]
fn bad_inputs_fail_with_one_clear_line_and_write_nothing() {
    let issuer = "https://oidc.example.com/c";
    let f = |n: &str| fixture(n).to_str().unwrap().to_string();
    let cases: Vec<(Vec<String>, String)> = vec![
        (vec!["discovery".into(), "--issuer".into(), issuer.into(), "--public-key".into(), f("not-a-key.txt")],
         format!("{}: not a PEM key file", f("not-a-key.txt"))),
        (vec!["discovery".into(), "--issuer".into(), issuer.into(), "--public-key".into(), f("rsa-pub.pem"), "--public-key".into(), f("rsa-encrypted.pem")],
         format!("{}: no key kube-apiserver can read: block 1 (ENCRYPTED PRIVATE KEY): encrypted private key: kube-apiserver cannot read encrypted keys", f("rsa-encrypted.pem"))),
        (vec!["discovery".into(), "--issuer".into(), issuer.into(), "--public-key".into(), f("secp256k1-pub.pem")],
         format!("{}: no key kube-apiserver can read: block 1 (PUBLIC KEY): unsupported elliptic curve secp256k1", f("secp256k1-pub.pem"))),
        (vec!["discovery".into(), "--issuer".into(), format!("{issuer}?x=1"), "--public-key".into(), f("rsa-pub.pem")],
         "--issuer: issuer \"https://oidc.example.com/c?x=1\" has a query string".into()),
        (vec!["discovery".into(), "--issuer".into(), "https://oidc.example.com:8443".into(), "--public-key".into(), f("rsa-pub.pem")],
         "--issuer: issuer \"https://oidc.example.com:8443\" has a port".into()),
        (vec!["discovery".into(), "--issuer".into(), issuer.into(), "--public-key".into(), f("rsa-pub.pem"), "--public-key".into(), "missing.pem".into()],
         "--public-key missing.pem: cannot read: No such file or directory".into()),
        (vec!["aws".into(), "--issuer".into(), format!("{issuer}#frag")],
         "--issuer: issuer \"https://oidc.example.com/c#frag\" has a fragment".into()),
        (vec!["aws".into(), "--issuer".into(), issuer.into(), "--namespace".into(), "Bad_NS".into()],
         "--namespace \"Bad_NS\": not a valid Kubernetes namespace name".into()),
        (vec!["aws".into(), "--issuer".into(), issuer.into(), "--ca-file".into(), f("rsa-pub.pem")],
         format!("--ca-file {}: no CERTIFICATE PEM block found", f("rsa-pub.pem"))),
        (vec!["aws".into(), "--issuer".into(), issuer.into(), "--role-name".into(), "r".into()],
         "--role-name needs --namespace".into()),
    ];
    for (args, want) in cases {
        for mode in ["human", "json"] {
            let tmp = tempfile::tempdir().unwrap();
            let out = bin()
                .current_dir(tmp.path())
                .args(&args)
                .args(["--out", "out", "--output", mode])
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(1), "{args:?}");
            let first = if mode == "human" {
                let err = String::from_utf8(out.stderr).unwrap();
                let line = err.lines().next().unwrap_or_default().to_string();
                line.strip_prefix("error: ").unwrap_or(&line).to_string()
            } else {
                let v: Value = serde_json::from_slice(&out.stdout).unwrap();
                v["error"].as_str().unwrap().to_string()
            };
            assert!(
                first.starts_with(&want),
                "{args:?}\n got: {first}\nwant: {want}"
            );
            assert!(
                files_under(tmp.path()).is_empty(),
                "{args:?} wrote {:?}",
                files_under(tmp.path())
            );
        }
    }
}

// ---- the global flags: --root honoured, --distro refused -------------------

/// A node tree with the kubeadm fixture's service-account key pair.
fn node_with_keys() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let pki = root.path().join("etc/kubernetes/pki");
    fs::create_dir_all(&pki).unwrap();
    fs::copy(fixture("rsa-pub.pem"), pki.join("sa.pub")).unwrap();
    fs::create_dir_all(root.path().join("srv")).unwrap();
    root
}

#[test]
fn keygen_writes_absolute_paths_under_root_never_on_the_host() {
    let root = node_with_keys();
    let name = format!("irsa-agent-test-{}", std::process::id());
    let (priv_, pub_) = (
        format!("/etc/kubernetes/pki/{name}.key"),
        format!("/etc/kubernetes/pki/{name}.pub"),
    );
    let out = bin()
        .arg("--root")
        .arg(root.path())
        .args(["--output", "json", "keygen", "--type", "ec-p256"])
        .args(["--private-key", &priv_, "--public-key", &pub_])
        .output()
        .unwrap();
    let v = json_out(&out);
    let under = |p: &str| root.path().join(p.trim_start_matches('/'));
    assert_eq!(mode(&under(&priv_)), 0o600);
    assert_eq!(mode(&under(&pub_)), 0o644);
    assert!(!Path::new(&priv_).exists() && !Path::new(&pub_).exists());
    assert_eq!(v["private_key"], priv_.as_str());
    assert_eq!(v["root"], root.path().to_str().unwrap());
    assert_eq!(v["kid"], openssl_kid(&under(&pub_)));

    // A directory missing under the root is named as under the root, even
    // when the host has it.
    let out = bin()
        .arg("--root")
        .arg(root.path())
        .args([
            "keygen",
            "--private-key",
            "/etc/x.key",
            "--public-key",
            "/tmp/y.pub",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim_end(),
        format!(
            "error: --public-key /tmp/y.pub (under --root {}): directory /tmp does not exist",
            root.path().display()
        )
    );
    assert!(!root.path().join("etc/x.key").exists());
}

#[test]
fn discovery_and_aws_read_and_write_under_root() {
    let root = node_with_keys();
    let out = bin()
        .arg("--root")
        .arg(root.path())
        .args(["--output", "json", "discovery"])
        .args(["--issuer", "https://oidc.example.com/cluster-a"])
        .args([
            "--public-key",
            "/etc/kubernetes/pki/sa.pub",
            "--out",
            "/srv/oidc",
        ])
        .output()
        .unwrap();
    let v = json_out(&out);
    assert_eq!(v["keys"][0]["source"], "/etc/kubernetes/pki/sa.pub");
    let written = root
        .path()
        .join("srv/oidc/.well-known/openid-configuration");
    assert!(written.is_file(), "{v}");
    assert!(!Path::new("/srv/oidc/.well-known/openid-configuration").exists());

    fs::copy(fixture("ca.pem"), root.path().join("srv/ca.pem")).unwrap();
    let out = bin()
        .arg("--root")
        .arg(root.path())
        .args(["--output", "json", "aws"])
        .args(["--issuer", "https://oidc.example.com/cluster-a"])
        .args(["--ca-file", "/srv/ca.pem", "--out", "/srv/aws"])
        .output()
        .unwrap();
    let v = json_out(&out);
    let provider = root.path().join("srv/aws/oidc-provider.json");
    assert_eq!(v["files"][0]["path"], provider.to_str().unwrap());
    assert_ne!(
        read_json(&provider)["ThumbprintList"][0],
        "0000000000000000000000000000000000000000",
        "the thumbprint comes from the root's CA file, not the placeholder"
    );

    // A key that exists only on the host is not found under the root.
    let host_key = fixture("rsa-pub.pem");
    let out = bin()
        .arg("--root")
        .arg(root.path())
        .args(["discovery", "--jwks-only"])
        .args(["--issuer", "https://oidc.example.com/cluster-a"])
        .arg("--public-key")
        .arg(&host_key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with(&format!(
            "error: --public-key {} (under --root {}): cannot read",
            host_key.display(),
            root.path().display()
        )),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn keygen_discovery_and_aws_refuse_distro_with_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("a.key");
    let pubk = tmp.path().join("a.pub");
    let out_dir = tmp.path().join("out");
    let (k, p, o) = (
        key.to_str().unwrap(),
        pubk.to_str().unwrap(),
        out_dir.to_str().unwrap(),
    );
    let issuer = "https://oidc.example.com/cluster-a";
    let sa = fixture("rsa-pub.pem");
    for (cmd, args) in [
        ("keygen", vec!["--private-key", k, "--public-key", p]),
        (
            "discovery",
            vec![
                "--issuer",
                issuer,
                "--public-key",
                sa.to_str().unwrap(),
                "--out",
                o,
            ],
        ),
        ("aws", vec!["--issuer", issuer, "--out", o]),
    ] {
        let out = bin()
            .args(["--distro", "kubeadm", cmd])
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with(&format!(
                "error: {cmd} does not take --distro (given: kubeadm)"
            )),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(files_under(tmp.path()).is_empty(), "{cmd} wrote something");
    }
}
