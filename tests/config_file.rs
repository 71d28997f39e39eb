//! `apply --config`: the desired state from a YAML file, flags overriding it,
//! strict errors that name the line and change nothing. The settings written
//! are read back by the independent reader in tests/support.

mod support;

use std::path::Path;

use serde_json::Value;
use support::{apiserver_args, copy_fixture, json_run, sa_settings, snapshot};

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("config.yaml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn the_file_sets_the_desired_state_and_a_second_run_changes_nothing() {
    let root = copy_fixture("kubeadm-default");
    let etc = tempfile::tempdir().unwrap();
    let config = write_config(
        etc.path(),
        "issuer: https://oidc.example.com/from-file\n\
         audiences: [sts.amazonaws.com, api://AzureADTokenExchange]\n\
         no_restart: true\n",
    );
    let (v, code) = json_run(root.path(), &["apply", "--config", &config]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["changed"], true);
    assert_eq!(v["restart_pending"], true, "no_restart came from the file");
    let s = sa_settings(&apiserver_args(root.path(), "kubeadm").unwrap()).unwrap();
    assert_eq!(s.issuers[0], "https://oidc.example.com/from-file");
    assert!(s.audiences.contains(&"sts.amazonaws.com".to_string()));
    assert!(s
        .audiences
        .contains(&"api://AzureADTokenExchange".to_string()));

    let (v, code) = json_run(root.path(), &["apply", "--config", &config]);
    assert_eq!((code, &v["changed"]), (0, &Value::Bool(false)), "{v}");
}

#[test]
fn flags_given_override_the_file() {
    let root = copy_fixture("kubeadm-default");
    let etc = tempfile::tempdir().unwrap();
    let config = write_config(
        etc.path(),
        "issuer: https://oidc.example.com/from-file\naudiences: [from-file]\nno_restart: true\n",
    );
    let (v, code) = json_run(
        root.path(),
        &[
            "apply",
            "--config",
            &config,
            "--issuer",
            "https://oidc.example.com/from-flag",
            "--audience",
            "from-flag",
        ],
    );
    assert_eq!(code, 0, "{v}");
    let s = sa_settings(&apiserver_args(root.path(), "kubeadm").unwrap()).unwrap();
    assert_eq!(s.issuers[0], "https://oidc.example.com/from-flag");
    assert!(s.audiences.contains(&"from-flag".to_string()));
    assert!(!s.audiences.contains(&"from-file".to_string()));
}

#[test]
fn relative_key_paths_in_the_file_are_relative_to_the_file() {
    let root = copy_fixture("kubeadm-default");
    let etc = tempfile::tempdir().unwrap();
    let key = support::fixture_path("keys").join("rsa-pkcs8.pem");
    std::fs::copy(key, etc.path().join("signing.key")).unwrap();
    let config = write_config(
        etc.path(),
        "issuer: https://oidc.example.com/c\nsigning_key: signing.key\nno_restart: true\n",
    );
    let (v, code) = json_run(root.path(), &["apply", "--config", &config, "--check"]);
    assert_eq!(code, 0, "{v}");
    let created: Vec<&str> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["action"] == "created")
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(
        created.iter().any(|p| p.ends_with(".key")),
        "the key named in the file is installed: {v}"
    );
}

#[test]
fn bad_files_fail_naming_the_line_and_change_nothing() {
    let root = copy_fixture("kubeadm-default");
    let before = snapshot(root.path());
    let etc = tempfile::tempdir().unwrap();
    for (text, want) in [
        (
            "issuer: https://oidc.example.com/x\naudience: [a]\n",
            "config.yaml, line 2: unknown field `audience`",
        ),
        (
            "issuer: https://oidc.example.com/x\n\ntimeout: 0\n",
            "config.yaml, line 3: timeout 0 is not in 1..=3600",
        ),
        ("audiences: [a]\n", "no issuer: pass --issuer URL"),
        // A syntax error: its position once, not "line 2: ... at line 2 column 1".
        (
            "issuer: [unclosed\n",
            "config.yaml, line 2: did not find expected ',' or ']', while parsing",
        ),
    ] {
        let config = write_config(etc.path(), text);
        let (v, code) = json_run(root.path(), &["apply", "--config", &config]);
        assert_eq!(code, 1, "{v}");
        let e = v["error"].as_str().unwrap();
        assert!(e.contains(want), "{text:?}: {e}");
        assert!(!e.contains(" at line 2 column 1"), "position twice: {e}");
        assert_eq!(v["changed"], false);
    }
    let missing = etc.path().join("absent.yaml");
    let (v, code) = json_run(
        root.path(),
        &["apply", "--config", missing.to_str().unwrap()],
    );
    assert_eq!(code, 1);
    assert!(v["error"].as_str().unwrap().contains("absent.yaml"), "{v}");
    assert_eq!(
        snapshot(root.path()),
        before,
        "a failed apply wrote something"
    );
}
