//! The command line through the binary: exit codes and `--output json` for
//! command-line mistakes, and error messages that name the real cause once.

mod support;

use std::process::Output;

use assert_cmd::Command;
use support::{fixture_path, json_of};

fn run(args: &[&str]) -> Output {
    Command::cargo_bin("irsa-agent")
        .unwrap()
        .env_remove("IRSA_AGENT_LOG")
        .args(args)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every line once: no cause repeated down the chain.
fn assert_no_line_twice(text: &str) {
    let lines: Vec<&str> = text.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        let body = l
            .trim_start_matches("error: ")
            .trim_start_matches("  caused by: ");
        for other in &lines[i + 1..] {
            assert!(!other.contains(body), "{body:?} repeated in:\n{text}");
        }
    }
}

#[test]
fn an_unknown_distro_is_a_command_line_error_exit_2() {
    let out = run(&["--distro", "kubedm", "detect"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("'kubedm'") && err.contains("kubeadm"), "{err}");
}

#[test]
fn command_line_errors_are_json_with_output_json() {
    for args in [
        &["--output", "json", "apply", "--bogus"][..],
        &["apply", "--bogus", "--output=json"],
        &["--output", "json", "--distro", "kubedm", "detect"],
        &[
            "--output",
            "json",
            "discovery",
            "--issuer",
            "https://a.example.com",
        ],
        &["--output", "json"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let v = json_of(&out);
        let e = v["error"].as_str().unwrap();
        assert!(!e.is_empty() && !e.starts_with("error:"), "{args:?}: {v}");
        assert_eq!(v["error_chain"][0], e, "{args:?}");
        assert!(out.stderr.is_empty(), "{args:?}: {}", stderr(&out));
    }
    let v = json_of(&run(&["--output", "json", "--distro", "kubedm", "detect"]));
    let e = v["error"].as_str().unwrap();
    assert!(e.contains("--distro") && e.contains("k3s"), "{e}");
    let v = json_of(&run(&["--output", "json", "apply", "--bogus"]));
    assert!(v["error"].as_str().unwrap().contains("'--bogus'"), "{v}");

    // Without json: clap's text on stderr, nothing on stdout.
    let out = run(&["apply", "--bogus"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(stderr(&out).starts_with("error: unexpected argument '--bogus'"));
    // --help and --version still print as usual.
    let out = run(&["--output", "json", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage:"));
}

#[test]
fn a_missing_root_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nodes/missing");
    let out = run(&["--root", missing.to_str().unwrap(), "detect"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(
        err.trim_end(),
        format!("error: --root {}: no such directory", missing.display()),
    );
}

#[test]
fn a_v1_client_certificate_is_the_cause_named_once() {
    // The bundled fixtures' admin kubeconfigs hold v1 client certificates.
    for fixture in ["kubeadm-default", "k3s-default", "microk8s-default"] {
        let root = fixture_path(fixture);
        let out = run(&["--root", root.to_str().unwrap(), "verify"]);
        assert_eq!(out.status.code(), Some(1), "{fixture}");
        let err = stderr(&out);
        let first = err.lines().next().unwrap();
        assert!(
            first.starts_with("error: the admin kubeconfig /") && first.contains("is X.509 v1"),
            "{fixture}: {err}"
        );
        assert!(!err.contains("UnsupportedCertVersion"), "{fixture}: {err}");
        assert_no_line_twice(&err);

        let out = run(&[
            "--root",
            root.to_str().unwrap(),
            "--output",
            "json",
            "verify",
        ]);
        let v = json_of(&out);
        let chain: Vec<&str> = v["error_chain"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(chain.len(), 1, "{fixture}: {v}");
    }
}

#[test]
fn a_missing_ca_file_is_named_with_its_setting_and_path_quoted_once() {
    let root = fixture_path("minikube-default");
    let out = run(&["--root", root.to_str().unwrap(), "verify"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with(
            "error: the admin kubeconfig /var/lib/minikube/kubeconfig (under --root "
        ) && err.contains(
            "cluster mk sets certificate-authority: /var/lib/minikube/certs/ca.crt, which does not exist"
        ),
        "{err}"
    );
    assert!(!err.contains("'\""), "doubly quoted path: {err}");
    assert_no_line_twice(&err);
}

#[test]
fn generate_refuses_the_global_flags_it_cannot_honour() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("assets");
    for (flag, value) in [
        ("--root", dir.path().to_str().unwrap()),
        ("--distro", "k3s"),
    ] {
        let out = run(&[flag, value, "generate", out_dir.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{flag}");
        assert!(
            stderr(&out).starts_with(&format!("error: generate does not take {flag}")),
            "{}",
            stderr(&out)
        );
        assert!(!out_dir.exists(), "{flag}: nothing written");
    }
}
