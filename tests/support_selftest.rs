//! Tests of the independent reader in `tests/support` against the fixture
//! sysroots (expected values written out by hand from the upstream defaults),
//! plus unit checks of the distro rules it implements.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use support::effective::{
    self, go_expand_env, k3s_config_apiserver_args, k3s_get_args, microk8s_parse_args,
    pflag_read_csv,
};
use support::{apiserver_args, copy_fixture, fixture_path, sa_settings, snapshot, SaSettings};

fn v(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn sa(
    issuers: &[&str],
    key_files: &[&str],
    signing: &str,
    audiences: &[&str],
    explicit: bool,
) -> SaSettings {
    SaSettings {
        issuers: v(issuers),
        key_files: v(key_files),
        signing_key_file: Some(signing.to_string()),
        audiences: v(audiences),
        audiences_explicit: explicit,
    }
}

fn settings_of(case: &str, distro: &str) -> SaSettings {
    let root = fixture_path(case);
    let args = apiserver_args(&root, distro).unwrap_or_else(|e| panic!("{case}: {e:#}"));
    let s = sa_settings(&args).unwrap_or_else(|e| panic!("{case}: {e:#}"));
    // Every key file the apiserver would read is in the fixture, as PEM.
    for f in s.key_files.iter().chain(s.signing_key_file.iter()) {
        let on_disk = root.join(f.trim_start_matches('/'));
        let pem = fs::read_to_string(&on_disk)
            .unwrap_or_else(|e| panic!("{case}: {f} missing in fixture: {e}"));
        assert!(
            pem.starts_with("-----BEGIN ") && pem.contains("KEY-----"),
            "{case}: {f} is not a PEM key"
        );
    }
    s
}

const KUBEADM_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

// --- every fixture case ------------------------------------------------------

#[test]
fn microk8s_default() {
    let k = "/var/snap/microk8s/current/certs/serviceaccount.key";
    assert_eq!(
        settings_of("microk8s-default", "microk8s"),
        sa(
            &["https://kubernetes.default.svc"],
            &[k],
            k,
            &["https://kubernetes.default.svc"],
            false
        )
    );
    let args = apiserver_args(&fixture_path("microk8s-default"), "microk8s").unwrap();
    // quotes deleted and ${SNAP_DATA} expanded
    assert!(args.contains(
        &"--etcd-servers=unix:///var/snap/microk8s/current/var/kubernetes/backend/kine.sock:12379"
            .to_string()
    ));
    assert!(args.contains(&"--secure-port=16443".to_string()));
    assert!(!args.iter().any(|a| a.contains('$') || a.contains('\'')));
}

#[test]
fn microk8s_audiences() {
    let certs = "/var/snap/microk8s/current/certs";
    assert_eq!(
        settings_of("microk8s-audiences", "microk8s"),
        sa(
            // the commented-out old issuer line is skipped
            &["https://kubernetes.default.svc"],
            &[
                &format!("{certs}/serviceaccount.key"),
                &format!("{certs}/irsa.key")
            ],
            // two signing-key lines: the last one wins
            &format!("{certs}/irsa.key"),
            &["https://kubernetes.default.svc", "sts.amazonaws.com"],
            true
        )
    );
}

#[test]
fn kubeadm_default() {
    assert_eq!(
        settings_of("kubeadm-default", "kubeadm"),
        sa(
            &[KUBEADM_ISSUER],
            &["/etc/kubernetes/pki/sa.pub"],
            "/etc/kubernetes/pki/sa.key",
            &[KUBEADM_ISSUER],
            false
        )
    );
    let args = apiserver_args(&fixture_path("kubeadm-default"), "kubeadm").unwrap();
    assert_eq!(args.len(), 27, "{args:#?}");
    assert_eq!(args[0], "--advertise-address=192.168.56.10");
    // kubeadm writes flags sorted by name
    let mut sorted = args.clone();
    sorted.sort();
    assert_eq!(args, sorted);
}

#[test]
fn kubeadm_audiences() {
    assert_eq!(
        settings_of("kubeadm-audiences", "kubeadm"),
        sa(
            &[KUBEADM_ISSUER],
            &["/etc/kubernetes/pki/sa.pub"],
            "/etc/kubernetes/pki/sa.key",
            &[KUBEADM_ISSUER, "vault"],
            true
        )
    );
}

#[test]
fn kubeadm_rotated() {
    assert_eq!(
        settings_of("kubeadm-rotated", "kubeadm"),
        sa(
            &["https://oidc-b.example.com", KUBEADM_ISSUER],
            &[
                "/etc/kubernetes/pki/sa.pub",
                "/etc/kubernetes/pki/oidc-b.pub"
            ],
            "/etc/kubernetes/pki/oidc-b.key",
            &[KUBEADM_ISSUER, "sts.amazonaws.com"],
            true
        )
    );
}

#[test]
fn kubeadm_custom_key() {
    assert_eq!(
        settings_of("kubeadm-custom-key", "kubeadm"),
        sa(
            &[KUBEADM_ISSUER],
            &["/etc/kubernetes/pki/sa.pub", "/etc/kubernetes/pki/irsa.pub"],
            "/etc/kubernetes/pki/irsa.key",
            &[KUBEADM_ISSUER],
            false
        )
    );
    let key =
        fs::read_to_string(fixture_path("kubeadm-custom-key").join("etc/kubernetes/pki/irsa.key"))
            .unwrap();
    assert!(
        key.starts_with("-----BEGIN PRIVATE KEY-----"),
        "irsa.key is PKCS#8"
    );
}

#[test]
fn minikube_default() {
    assert_eq!(
        settings_of("minikube-default", "minikube"),
        sa(
            &[KUBEADM_ISSUER],
            &["/var/lib/minikube/certs/sa.pub"],
            "/var/lib/minikube/certs/sa.key",
            &[KUBEADM_ISSUER],
            false
        )
    );
    let args = apiserver_args(&fixture_path("minikube-default"), "minikube").unwrap();
    assert!(args.contains(&"--secure-port=8443".to_string()));
}

#[test]
fn k3s_default() {
    let tls = "/var/lib/rancher/k3s/server/tls";
    assert_eq!(
        settings_of("k3s-default", "k3s"),
        sa(
            &[KUBEADM_ISSUER],
            &[&format!("{tls}/service.key")],
            &format!("{tls}/service.current.key"),
            &[KUBEADM_ISSUER, "k3s"],
            true
        )
    );
    let args = apiserver_args(&fixture_path("k3s-default"), "k3s").unwrap();
    // user args merged into the defaults, output sorted by flag name
    let audit: Vec<&String> = args.iter().filter(|a| a.starts_with("--audit")).collect();
    assert_eq!(
        audit,
        [
            "--audit-log-maxage=30",
            "--audit-log-maxbackup=10",
            "--audit-log-path=/var/lib/rancher/k3s/server/logs/audit.log",
            "--audit-policy-file=/etc/rancher/k3s/audit-policy.yaml",
        ]
    );
    assert!(args.contains(&"--feature-gates=ServiceAccountTokenNodeBinding=true".to_string()));
    let mut sorted = args.clone();
    sorted.sort();
    assert_eq!(args, sorted);
}

#[test]
fn k3s_dropins() {
    let tls = "/var/lib/rancher/k3s/server/tls";
    assert_eq!(
        settings_of("k3s-dropins", "k3s"),
        sa(
            &[KUBEADM_ISSUER],
            &[&format!("{tls}/service.key")],
            &format!("{tls}/service.current.key"),
            // api-audiences+=vault: after the k3s default list
            &[KUBEADM_ISSUER, "k3s", "vault"],
            true
        )
    );
    let root = fixture_path("k3s-dropins");
    // config.yaml's list, then 10-audit.yaml's `kube-apiserver-arg+:` appended;
    // the *.yaml.disabled file is not read.
    assert_eq!(
        k3s_config_apiserver_args(&root.join("etc/rancher/k3s/config.yaml")).unwrap(),
        v(&[
            "default-not-ready-toleration-seconds=30",
            "default-unreachable-toleration-seconds=30",
            "api-audiences+=vault",
            "audit-log-path=/var/log/kubernetes/audit.log",
            "audit-log-maxage=14",
            "audit-policy-file=/etc/rancher/k3s/audit-policy.yaml",
        ])
    );
    let args = apiserver_args(&root, "k3s").unwrap();
    let aud: Vec<&String> = args
        .iter()
        .filter(|a| a.starts_with("--api-audiences"))
        .collect();
    assert_eq!(
        aud,
        [
            "--api-audiences=https://kubernetes.default.svc.cluster.local,k3s",
            "--api-audiences=vault"
        ]
    );
}

#[test]
fn rke2_default() {
    let tls = "/var/lib/rancher/rke2/server/tls";
    assert_eq!(
        settings_of("rke2-default", "rke2"),
        sa(
            &[KUBEADM_ISSUER],
            &[&format!("{tls}/service.key")],
            &format!("{tls}/service.current.key"),
            &[KUBEADM_ISSUER, "rke2"],
            true
        )
    );
    let args = apiserver_args(&fixture_path("rke2-default"), "rke2").unwrap();
    assert!(args.contains(&"--request-timeout=300s".to_string()));
    assert!(args.contains(&"--secure-port=6443".to_string()));
}

/// The install script's unit: `-=` pins an issuer in front and a signing key
/// that wins, both read from the unit; `K3S_CONFIG_FILE` in the unit's
/// environment file names the config file.
#[test]
fn k3s_unit_pinned() {
    let tls = "/var/lib/rancher/k3s/server/tls";
    assert_eq!(
        settings_of("k3s-unit-pinned", "k3s"),
        sa(
            &["https://pinned.example.com", KUBEADM_ISSUER],
            &[&format!("{tls}/service.key")],
            &format!("{tls}/service.key"),
            &[KUBEADM_ISSUER, "k3s"],
            true
        )
    );
    let args = apiserver_args(&fixture_path("k3s-unit-pinned"), "k3s").unwrap();
    assert!(
        args.contains(&"--audit-log-maxage=30".to_string()),
        "site.yaml is read: {args:?}"
    );
}

/// A `systemctl edit` drop-in resets ExecStart: the cluster domain moves the
/// defaults, `${MAXAGE}` comes from `Environment=`.
#[test]
fn rke2_unit_dropin() {
    let tls = "/var/lib/rancher/rke2/server/tls";
    let issuer = "https://kubernetes.default.svc.corp.internal";
    assert_eq!(
        settings_of("rke2-unit-dropin", "rke2"),
        sa(
            &[issuer],
            &[&format!("{tls}/service.key")],
            &format!("{tls}/service.current.key"),
            &[issuer, "rke2"],
            true
        )
    );
    let args = apiserver_args(&fixture_path("rke2-unit-dropin"), "rke2").unwrap();
    assert!(
        args.contains(&"--audit-log-maxage=30".to_string()),
        "{args:?}"
    );
}

#[test]
fn audiences_are_one_csv_record() {
    use support::effective::pflag_read_csv;
    assert_eq!(pflag_read_csv("\"a,b\",c").unwrap(), ["a,b", "c"]);
    assert_eq!(pflag_read_csv("a,,b").unwrap(), ["a", "", "b"]);
    assert!(pflag_read_csv("\"").is_err());
}

/// `k0s install controller --single`: no konnectivity, so no
/// `system:konnectivity-server` audience.
#[test]
fn k0s_single() {
    let s = settings_of("k0s-single", "k0s");
    assert_eq!(s.audiences, ["https://kubernetes.default.svc"]);
    assert_eq!(s.issuers, ["https://kubernetes.default.svc"]);
}

#[test]
fn k0s_default() {
    assert_eq!(
        settings_of("k0s-default", "k0s"),
        sa(
            &["https://kubernetes.default.svc"],
            &["/var/lib/k0s/pki/sa.pub"],
            "/var/lib/k0s/pki/sa.key",
            &[
                "https://kubernetes.default.svc",
                "system:konnectivity-server"
            ],
            true
        )
    );
    let args = apiserver_args(&fixture_path("k0s-default"), "k0s").unwrap();
    assert!(args.contains(&"--advertise-address=192.168.56.30".to_string()));
    assert!(args.contains(&"--secure-port=6443".to_string()));
    assert!(args.contains(
        &"--service-account-jwks-uri=https://kubernetes.default.svc/openid/v1/jwks".to_string()
    ));
    assert!(fixture_path("k0s-default")
        .join("var/lib/k0s/bin/kube-apiserver")
        .is_file());
}

#[test]
fn k0s_extra_args_override_and_raw_args_append() {
    let dir = copy_fixture("k0s-default");
    let cfg = dir.path().join("etc/k0s/k0s.yaml");
    let text = fs::read_to_string(&cfg).unwrap().replace(
        "    k0sApiPort: 9443\n",
        "    extraArgs:\n      service-account-issuer: https://oidc.example.com\n      api-audiences: sts.amazonaws.com\n    rawArgs:\n    - --service-account-issuer=https://kubernetes.default.svc\n    - --service-account-key-file=/var/lib/k0s/pki/irsa.pub\n    k0sApiPort: 9443\n",
    );
    fs::write(&cfg, text).unwrap();
    let args = apiserver_args(dir.path(), "k0s").unwrap();
    // rawArgs come after every generated flag
    assert_eq!(
        &args[args.len() - 2..],
        v(&[
            "--service-account-issuer=https://kubernetes.default.svc",
            "--service-account-key-file=/var/lib/k0s/pki/irsa.pub"
        ])
    );
    let s = sa_settings(&args).unwrap();
    assert_eq!(
        s.issuers,
        v(&["https://oidc.example.com", "https://kubernetes.default.svc"])
    );
    assert_eq!(
        s.key_files,
        v(&["/var/lib/k0s/pki/sa.pub", "/var/lib/k0s/pki/irsa.pub"])
    );
    assert_eq!(s.audiences, v(&["sts.amazonaws.com"]));

    // `k0s controller --single` runs without konnectivity: one default audience
    let unit = dir.path().join("etc/systemd/system/k0scontroller.service");
    let u = fs::read_to_string(&unit)
        .unwrap()
        .replace("k0s controller ", "k0s controller --single ");
    fs::write(&unit, u).unwrap();
    fs::write(
        &cfg,
        "apiVersion: k0s.k0sproject.io/v1beta1\nkind: ClusterConfig\n",
    )
    .unwrap();
    let s = sa_settings(&apiserver_args(dir.path(), "k0s").unwrap()).unwrap();
    assert_eq!(s.audiences, v(&["https://kubernetes.default.svc"]));

    // extraArgs is map[string]string: a YAML bool is refused, like k0s does
    fs::write(
        &cfg,
        "spec:\n  api:\n    extraArgs:\n      profiling: true\n",
    )
    .unwrap();
    assert!(apiserver_args(dir.path(), "k0s").is_err());
}

#[test]
fn every_fixture_case_is_tested() {
    let mut cases: Vec<String> =
        fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().unwrap().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            // Key material for the keys tests, not a node tree.
            .filter(|n| n != "keys")
            .collect();
    cases.sort();
    assert_eq!(
        cases,
        [
            "k0s-default",
            "k0s-single",
            "k3s-default",
            "k3s-dropins",
            "k3s-unit-pinned",
            "kubeadm-audiences",
            "kubeadm-custom-key",
            "kubeadm-default",
            "kubeadm-rotated",
            "microk8s-audiences",
            "microk8s-default",
            "minikube-default",
            "rke2-default",
            "rke2-unit-dropin",
        ]
    );
}

// --- tree helpers --------------------------------------------------------------

#[test]
fn copy_and_snapshot() {
    let dir = copy_fixture("kubeadm-default");
    let before = snapshot(dir.path());
    assert_eq!(before, snapshot(&fixture_path("kubeadm-default")));
    assert!(before.contains_key(Path::new("etc/kubernetes/manifests/kube-apiserver.yaml")));
    assert!(before.contains_key(Path::new("etc/kubernetes/pki")));

    fs::write(dir.path().join("etc/kubernetes/pki/sa.pub"), b"changed").unwrap();
    let after = snapshot(dir.path());
    let changed: Vec<_> = before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(
        changed,
        [Path::new("etc/kubernetes/pki/sa.pub").to_path_buf()]
    );

    use std::os::unix::fs::PermissionsExt;
    let p = dir.path().join("etc/kubernetes/admin.conf");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    let m = snapshot(dir.path())[Path::new("etc/kubernetes/admin.conf")].1;
    assert_eq!(m & 0o7777, 0o600);
    assert_eq!(m & 0o170000, 0o100000, "file-type bits are kept");
}

// --- k3s GetArgs / config merge --------------------------------------------------

fn defaults(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn k3s_get_args_forms() {
    let d = defaults(&[
        ("api-audiences", "A,k3s"),
        ("service-account-issuer", "A"),
        ("z", "1"),
    ]);
    // no extra args: defaults, sorted
    assert_eq!(
        k3s_get_args(&d, &[]),
        v(&[
            "--api-audiences=A,k3s",
            "--service-account-issuer=A",
            "--z=1"
        ])
    );
    // plain replaces the default
    assert_eq!(
        k3s_get_args(&d, &v(&["service-account-issuer=B"]))[1],
        "--service-account-issuer=B"
    );
    // -= prepends (new one signs), += appends; a leading "--" is accepted
    assert_eq!(
        k3s_get_args(
            &d,
            &v(&[
                "service-account-issuer-=B",
                "--api-audiences+=sts.amazonaws.com"
            ])
        ),
        v(&[
            "--api-audiences=A,k3s",
            "--api-audiences=sts.amazonaws.com",
            "--service-account-issuer=B",
            "--service-account-issuer=A",
            "--z=1"
        ])
    );
    // -= twice: each new value goes before everything so far
    assert_eq!(
        k3s_get_args(
            &d,
            &v(&["service-account-issuer-=B", "service-account-issuer-=C"])
        )[1..4],
        v(&[
            "--service-account-issuer=C",
            "--service-account-issuer=B",
            "--service-account-issuer=A"
        ])
    );
    // repeated plain args accumulate (and drop the default)
    assert_eq!(
        k3s_get_args(
            &d,
            &v(&["service-account-issuer=B", "service-account-issuer=C"])
        )[1..3],
        v(&["--service-account-issuer=B", "--service-account-issuer=C"])
    );
    // += after a plain one keeps the plain values (the default is gone)
    assert_eq!(
        k3s_get_args(&d, &v(&["z=2", "z+=3"]))[2..],
        v(&["--z=2", "--z=3"])
    );
    // no value means "true"; a new flag sorts in
    assert_eq!(k3s_get_args(&d, &v(&["b-flag"]))[1], "--b-flag=true");
}

#[test]
fn k3s_config_merge_rules() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    let d = dir.path().join("config.yaml.d");
    fs::create_dir(&d).unwrap();
    // drop-ins only (no config.yaml) are read
    fs::write(d.join("10-a.yaml"), "kube-apiserver-arg: [\"a=1\"]\n").unwrap();
    assert_eq!(k3s_config_apiserver_args(&cfg).unwrap(), v(&["a=1"]));

    fs::write(&cfg, "kube-apiserver-arg:\n- base=1\nother: x\n").unwrap();
    fs::write(d.join("20-b.YML"), "kube-apiserver-arg+: b=2\n").unwrap(); // scalar, upper-case ext
    fs::write(d.join("30-c.txt"), "kube-apiserver-arg: [\"ignored=1\"]\n").unwrap();
    fs::create_dir(d.join("40-dir.yaml")).unwrap(); // a directory is skipped
    assert_eq!(
        k3s_config_apiserver_args(&cfg).unwrap(),
        // 10-a.yaml's plain key replaced config.yaml's list; 20-b appended
        v(&["a=1", "b=2"])
    );
    // a later plain key replaces everything before it
    fs::write(d.join("50-d.yaml"), "kube-apiserver-arg:\n- d=4\n").unwrap();
    fs::write(d.join("60-e.yaml"), "kube-apiserver-arg+:\n- e=5\n").unwrap();
    assert_eq!(k3s_config_apiserver_args(&cfg).unwrap(), v(&["d=4", "e=5"]));
    // a scalar plain value is one arg
    fs::write(d.join("70-f.yaml"), "kube-apiserver-arg: f=6\n").unwrap();
    assert_eq!(k3s_config_apiserver_args(&cfg).unwrap(), v(&["f=6"]));
}

// --- MicroK8s args file -------------------------------------------------------------

#[test]
fn microk8s_quote_stripping_and_expansion() {
    let env = effective::microk8s_env;
    let text = "\
--service-account-issuer='https://kubernetes.default.svc'
--etcd-servers=\"unix://${SNAP_DATA}/var/kine.sock:12379\"
   --indented=$SNAP/bin  \r
# a comment line
--not-a-comment=1 # trailing text is NOT a comment
--quoted-space='a b'
--two  spaces
--unset=${NOPE}x$HOME
--dollar=cost$
--bad=${}y
--it's=\"mixed'
";
    assert_eq!(
        microk8s_parse_args(text, &env),
        v(&[
            "--service-account-issuer=https://kubernetes.default.svc",
            "--etcd-servers=unix:///var/snap/microk8s/current/var/kine.sock:12379",
            "--indented=/snap/microk8s/current/bin",
            "--not-a-comment=1",
            "#",
            "trailing",
            "text",
            "is",
            "NOT",
            "a",
            "comment",
            // quotes are deleted before splitting: they do not protect spaces
            "--quoted-space=a",
            "b",
            "--two",
            "",
            "spaces",
            "--unset=x",
            "--dollar=cost$",
            "--bad=y",
            "--its=mixed",
        ])
    );
}

#[test]
fn go_expand_env_matches_os_expand() {
    let env = |n: &str| match n {
        "A" => Some("x".to_string()),
        "1" => Some("one".to_string()),
        _ => None,
    };
    assert_eq!(go_expand_env("plain", &env), "plain");
    assert_eq!(go_expand_env("$A/${A}", &env), "x/x");
    assert_eq!(go_expand_env("${A", &env), "A"); // "${" eaten
    assert_eq!(go_expand_env("$1x", &env), "onex"); // one-char special name
    assert_eq!(go_expand_env("${1}", &env), "one");
    assert_eq!(go_expand_env("a$", &env), "a$");
    assert_eq!(go_expand_env("$/", &env), "$/");
    assert_eq!(go_expand_env("$A_B", &env), ""); // name is A_B, unset
}

// --- pflag rules ------------------------------------------------------------------

#[test]
fn pflag_audiences_default_to_all_issuers() {
    let s = sa_settings(&v(&[
        "--service-account-issuer=https://b",
        "--service-account-issuer=https://a",
    ]))
    .unwrap();
    assert_eq!(s.audiences, v(&["https://b", "https://a"]));
    assert!(!s.audiences_explicit);
    // an explicitly empty list also falls back to the issuers
    let s = sa_settings(&v(&[
        "--service-account-issuer=https://a",
        "--api-audiences=",
    ]))
    .unwrap();
    assert_eq!(s.audiences, v(&["https://a"]));
    assert!(!s.audiences_explicit);
}

#[test]
fn pflag_duplicate_issuer_is_an_error() {
    let e = sa_settings(&v(&[
        "--service-account-issuer=https://a",
        "--service-account-issuer=https://b",
        "--service-account-issuer=https://a",
    ]))
    .unwrap_err();
    assert!(e.to_string().contains("already specified"), "{e}");
    // exact string match: a trailing slash is a different issuer
    assert!(sa_settings(&v(&[
        "--service-account-issuer=https://a",
        "--service-account-issuer=https://a/",
    ]))
    .is_ok());
    assert!(sa_settings(&v(&["--service-account-issuer="])).is_err());
    assert!(
        sa_settings(&v(&["--secure-port=6443"])).is_err(),
        "issuer is required"
    );
}

#[test]
fn pflag_types() {
    let s = sa_settings(&v(&[
        // two-token form
        "--service-account-issuer",
        "https://a,https://b", // StringArray: not split on commas
        "--service-account-key-file=/k1",
        "--service-account-key-file",
        "/k2",
        "--service-account-signing-key-file=/s1",
        "--service-account-signing-key-file",
        "/s2", // string: last wins
        "--api-audiences=x,y",
        "--api-audiences",
        "z",                                  // StringSlice: split and appended
        "--service_account_issuer=https://c", // '_' normalized to '-'
        "",                                   // empty args are ignored
        "--profiling",                        // bool: takes no value
        "--v",
        "2", // unknown non-bool: takes the next argument
    ]))
    .unwrap();
    assert_eq!(s.issuers, v(&["https://a,https://b", "https://c"]));
    assert_eq!(s.key_files, v(&["/k1", "/k2"]));
    assert_eq!(s.signing_key_file.as_deref(), Some("/s2"));
    assert_eq!(s.audiences, v(&["x", "y", "z"]));
    assert!(s.audiences_explicit);

    // missing value, positional argument
    assert!(sa_settings(&v(&["--service-account-issuer"])).is_err());
    assert!(sa_settings(&v(&["--service-account-issuer=https://a", "stray"])).is_err());
    assert!(sa_settings(&v(&[
        "--service-account-issuer=https://a",
        "--profiling",
        "false"
    ]))
    .is_err());
    // after "--" flags are not parsed
    assert!(sa_settings(&v(&["--", "--service-account-issuer=https://a"])).is_err());
}

#[test]
fn pflag_csv() {
    assert_eq!(pflag_read_csv("").unwrap(), Vec::<String>::new());
    assert_eq!(pflag_read_csv("a,b").unwrap(), v(&["a", "b"]));
    assert_eq!(pflag_read_csv("a,,b").unwrap(), v(&["a", "", "b"]));
    assert_eq!(pflag_read_csv("\"a,b\",c").unwrap(), v(&["a,b", "c"]));
    assert_eq!(pflag_read_csv("\"a\"\"b\"").unwrap(), v(&["a\"b"]));
    assert!(pflag_read_csv("a\"b").is_err());
    assert!(pflag_read_csv("\"ab").is_err());
}
