//! `aws --fetch-thumbprint` takes the thumbprint only from a TLS chain this
//! machine trusts; `--insecure-skip-tls-verify` takes an untrusted one and
//! says what it skipped. Against a local HTTPS host whose certificate comes
//! from a CA of its own (tests/support/issuer_host.rs).

mod support;

use std::path::Path;

use assert_cmd::Command;
use serde_json::Value;
use sha1::{Digest, Sha1};
use support::issuer_host::IssuerHost;
use support::json_of;

fn aws(issuer: &str, out: &Path, ssl_cert_file: Option<&Path>, extra: &[&str]) -> (Value, i32) {
    let mut c = Command::cargo_bin("irsa-agent").unwrap();
    c.env_remove("IRSA_AGENT_LOG")
        .env_remove("SSL_CERT_DIR")
        .env_remove("SSL_CERT_FILE");
    if let Some(f) = ssl_cert_file {
        c.env("SSL_CERT_FILE", f);
    }
    let o = c
        .args([
            "--output",
            "json",
            "aws",
            "--issuer",
            issuer,
            "--allow-port",
        ])
        .args(["--fetch-thumbprint", "--out"])
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    (json_of(&o), o.status.code().unwrap())
}

fn hex_sha1(der: &[u8]) -> String {
    Sha1::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn an_untrusted_chain_is_refused_unless_the_check_is_skipped_by_flag() {
    let host = IssuerHost::start();
    let issuer = format!("{}/c", host.base());
    let tmp = tempfile::tempdir().unwrap();
    let want = hex_sha1(host.leaf_der());

    // Not trusted by this machine: refused, naming the way out, nothing written.
    let refused = tmp.path().join("refused");
    let (v, code) = aws(&issuer, &refused, None, &[]);
    assert_eq!(code, 1, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(
        e.starts_with(&format!(
            "--fetch-thumbprint: the TLS chain of localhost:{} is not trusted by this machine",
            host.base().rsplit(':').next().unwrap()
        )),
        "{e}"
    );
    assert!(e.contains("--insecure-skip-tls-verify"), "{e}");
    assert!(!refused.exists());

    // With the flag: the thumbprint of what answered, and a warning saying so.
    let skipped = tmp.path().join("skipped");
    let (v, code) = aws(&issuer, &skipped, None, &["--insecure-skip-tls-verify"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["thumbprint"]["value"], want.as_str(), "{v}");
    let provider: Value =
        serde_json::from_slice(&std::fs::read(skipped.join("oidc-provider.json")).unwrap())
            .unwrap();
    assert_eq!(provider["ThumbprintList"], serde_json::json!([want]));
    let warned = v["warnings"].as_array().unwrap().iter().any(|w| {
        w.as_str()
            .unwrap()
            .contains("--insecure-skip-tls-verify: the TLS chain of localhost")
    });
    assert!(warned, "{v}");

    // Trusted (the host's CA in SSL_CERT_FILE): no flag needed.
    let ca = tmp.path().join("ca.pem");
    std::fs::write(&ca, host.ca_pem()).unwrap();
    let trusted = tmp.path().join("trusted");
    let (v, code) = aws(&issuer, &trusted, Some(&ca), &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["thumbprint"]["value"], want.as_str(), "{v}");
    assert!(
        v["thumbprint"]["source"]
            .as_str()
            .unwrap()
            .contains("(chain verified)"),
        "{v}"
    );

    // The flag only goes with --fetch-thumbprint.
    let mut c = Command::cargo_bin("irsa-agent").unwrap();
    let o = c
        .args([
            "aws",
            "--issuer",
            "https://oidc.example.com",
            "--insecure-skip-tls-verify",
        ])
        .arg("--out")
        .arg(tmp.path().join("usage"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--fetch-thumbprint"));
}
