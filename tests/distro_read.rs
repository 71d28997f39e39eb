//! Everything the distribution reads, on trees built from what the real
//! installers write: the k3s install script's unit (arguments in both of its
//! forms, an environment file naming the config file) and an RKE2 unit with a
//! `systemctl edit` drop-in. `detect` must agree with the independent reader
//! in tests/support; `apply` converges or refuses, and writes nothing when it
//! refuses.

mod support;

use std::path::Path;

use serde_json::Value;
use support::{apiserver_args, copy_fixture, sa_settings, snapshot};

fn run(root: &Path, args: &[&str]) -> (Value, i32) {
    support::json_run(root, args)
}

fn values(v: &Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} in {v}"))
        .iter()
        .map(|x| x["value"].as_str().unwrap().to_string())
        .collect()
}

/// `detect` shows what the independent reader reads from the same tree.
fn detect_agrees(root: &Path, distro: &str) -> Value {
    let (v, code) = run(root, &["detect"]);
    assert_eq!(code, 0, "{v}");
    let s = sa_settings(&apiserver_args(root, distro).unwrap()).unwrap();
    assert_eq!(values(&v, "issuers"), s.issuers, "{v}");
    assert_eq!(values(&v, "key_files"), s.key_files, "{v}");
    assert_eq!(
        v["signing_key_file"]["value"].as_str(),
        s.signing_key_file.as_deref(),
        "{v}"
    );
    assert_eq!(values(&v, "api_audiences"), s.audiences, "{v}");
    v
}

const PINNED: &str = "https://pinned.example.com";
const UNIT: &str = "/etc/systemd/system/k3s.service";

#[test]
fn k3s_install_script_unit_is_read() {
    let root = support::fixture_path("k3s-unit-pinned");
    let v = detect_agrees(&root, "k3s");
    // The unit's `-=` item signs, ahead of k3s' default; its source is the
    // unit's ExecStart line.
    assert_eq!(values(&v, "issuers")[0], PINNED);
    assert_eq!(v["issuers"][0]["source"]["file"], UNIT, "{v}");
    assert_eq!(v["issuers"][0]["source"]["line"], 30, "{v}");
    // The unit's signing key wins over k3s' default service.current.key.
    assert!(v["signing_key_file"]["value"]
        .as_str()
        .unwrap()
        .ends_with("/service.key"));
    assert_eq!(v["signing_key_file"]["source"]["file"], UNIT);
    // K3S_CONFIG_FILE from the unit's environment file names the config.
    assert_eq!(v["config_files"][0], "/etc/rancher/k3s/site.yaml", "{v}");
}

#[test]
fn k3s_unit_item_that_defeats_the_plan_is_refused_and_nothing_written() {
    let dir = copy_fixture("k3s-unit-pinned");
    let root = dir.path();
    let before = snapshot(root);
    let (v, code) = run(
        root,
        &[
            "apply",
            "--issuer",
            "https://oidc.example.com",
            "--no-restart",
        ],
    );
    assert_ne!(code, 0, "{v}");
    let err = v["error"].as_str().unwrap();
    assert!(err.starts_with(&format!("{UNIT}:30: k3s.service runs with --kube-apiserver-arg=service-account-issuer-={PINNED}")), "{err}");
    assert!(
        err.contains("remove it from the unit") && err.contains(&format!("--issuer {PINNED}")),
        "{err}"
    );
    assert!(!err.contains('\n'), "{err}");
    assert_eq!(snapshot(root), before, "nothing written on refusal");

    // A new signing key would never sign: refused too.
    let (v, code) = run(
        root,
        &[
            "apply",
            "--issuer",
            PINNED,
            "--generate-key",
            "--no-restart",
        ],
    );
    assert_ne!(code, 0, "{v}");
    let err = v["error"].as_str().unwrap();
    assert!(err.contains("service-account-signing-key-file="), "{err}");
    assert!(
        err.contains("--signing-key /var/lib/rancher/k3s/server/tls/service.key"),
        "{err}"
    );
    assert_eq!(snapshot(root), before, "nothing written on refusal");

    // The way out the refusal names: keep the pinned issuer signing. The
    // plan then converges (the audience is added) and reads back the same
    // through the independent reader, unit included.
    let (v, code) = run(root, &["apply", "--issuer", PINNED, "--no-restart"]);
    assert_eq!(code, 0, "{v}");
    let s = sa_settings(&apiserver_args(root, "k3s").unwrap()).unwrap();
    assert_eq!(s.issuers[0], PINNED);
    assert!(
        s.audiences.contains(&"sts.amazonaws.com".to_string()),
        "{s:?}"
    );
    assert!(root
        .join("etc/rancher/k3s/site.yaml.d/99-irsa-agent.yaml")
        .is_file());
    let unit_before = &before[Path::new("etc/systemd/system/k3s.service")];
    assert_eq!(
        &snapshot(root)[Path::new("etc/systemd/system/k3s.service")],
        unit_before,
        "the unit is never edited"
    );
}

#[test]
fn rke2_unit_with_a_dropin_is_read_and_apply_converges() {
    let root = support::fixture_path("rke2-unit-dropin");
    let v = detect_agrees(&root, "rke2");
    // --cluster-domain from the drop-in's ExecStart moves the default issuer.
    assert_eq!(
        values(&v, "issuers"),
        ["https://kubernetes.default.svc.corp.internal"]
    );

    let dir = copy_fixture("rke2-unit-dropin");
    let root = dir.path();
    let (v, code) = run(
        root,
        &[
            "apply",
            "--issuer",
            "https://oidc.example.com",
            "--no-restart",
        ],
    );
    assert_eq!(code, 0, "{v}");
    let s = sa_settings(&apiserver_args(root, "rke2").unwrap()).unwrap();
    assert_eq!(
        s.issuers,
        [
            "https://oidc.example.com",
            "https://kubernetes.default.svc.corp.internal"
        ]
    );
    for a in [
        "https://kubernetes.default.svc.corp.internal",
        "rke2",
        "sts.amazonaws.com",
    ] {
        assert!(s.audiences.contains(&a.to_string()), "{a} in {s:?}");
    }
    let (v, code) = run(
        root,
        &[
            "apply",
            "--issuer",
            "https://oidc.example.com",
            "--no-restart",
        ],
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["changed"], false, "a second run changes nothing: {v}");
}

#[test]
fn rke2_dropin_audience_item_is_refused_naming_its_line() {
    let dir = copy_fixture("rke2-unit-dropin");
    let root = dir.path();
    let conf = root.join("etc/systemd/system/rke2-server.service.d/10-args.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(
        &conf,
        text.replace("audit-log-maxage=${MAXAGE}", "api-audiences+=vault"),
    )
    .unwrap();
    let v = detect_agrees(root, "rke2");
    assert!(
        values(&v, "api_audiences").contains(&"vault".to_string()),
        "{v}"
    );
    let before = snapshot(root);
    let (v, code) = run(
        root,
        &[
            "apply",
            "--issuer",
            "https://oidc.example.com",
            "--no-restart",
        ],
    );
    assert_ne!(code, 0, "{v}");
    let err = v["error"].as_str().unwrap();
    assert!(
        err.starts_with("/etc/systemd/system/rke2-server.service.d/10-args.conf:5: rke2-server.service runs with --kube-apiserver-arg=api-audiences+=vault"),
        "{err}"
    );
    assert_eq!(snapshot(root), before, "nothing written on refusal");
}

#[test]
fn a_missing_environment_file_is_a_one_line_error() {
    let dir = copy_fixture("k3s-unit-pinned");
    let root = dir.path();
    let unit = root.join("etc/systemd/system/k3s.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    std::fs::write(
        &unit,
        text.replace(
            "EnvironmentFile=-/etc/sysconfig/%N",
            "EnvironmentFile=/etc/sysconfig/%N",
        ),
    )
    .unwrap();
    let before = snapshot(root);
    let (v, code) = run(root, &["apply", "--issuer", PINNED, "--no-restart"]);
    assert_ne!(code, 0, "{v}");
    let err = v["error"].as_str().unwrap();
    assert!(
        err.contains(&format!("{UNIT}:13")) && err.contains("/etc/sysconfig/k3s does not exist"),
        "{err}"
    );
    assert!(!err.contains('\n'), "{err}");
    assert_eq!(snapshot(root), before);
}

/// k0s single-node: `system:konnectivity-server` is no default audience, so it
/// is neither shown nor written as a newly accepted audience.
#[test]
fn k0s_single_has_no_konnectivity_audience() {
    let root = support::fixture_path("k0s-single");
    let v = detect_agrees(&root, "k0s");
    assert_eq!(
        values(&v, "api_audiences"),
        ["https://kubernetes.default.svc"]
    );
    let v = detect_agrees(&support::fixture_path("k0s-default"), "k0s");
    assert!(values(&v, "api_audiences").contains(&"system:konnectivity-server".to_string()));

    let dir = copy_fixture("k0s-single");
    let root = dir.path();
    let (v, code) = run(
        root,
        &[
            "apply",
            "--issuer",
            "https://oidc.example.com",
            "--no-restart",
        ],
    );
    assert_eq!(code, 0, "{v}");
    let s = sa_settings(&apiserver_args(root, "k0s").unwrap()).unwrap();
    assert!(
        !s.audiences
            .contains(&"system:konnectivity-server".to_string()),
        "{s:?}"
    );
    let k0s_yaml = std::fs::read_to_string(root.join("etc/k0s/k0s.yaml")).unwrap();
    assert!(
        !k0s_yaml.contains("system:konnectivity-server"),
        "{k0s_yaml}"
    );
}
