//! The bad-input corpus (`tests/bad-input/<format>/<case>`, see its
//! README): each file replaces the configuration file of a fixture sysroot
//! and the real binary runs `apply` on it. Every case either converges
//! correctly, checked with the independent reader in tests/support (not the
//! crate), or fails with exit 1, an error naming the file (and the line where
//! the format has one), and the tree byte-identical.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use assert_cmd::prelude::*;
use serde_json::Value;
use support::{
    apiserver_args, copy_fixture, json_of, node_files, sa_settings, snapshot, SaSettings,
};

const ISSUER: &str = "https://oidc.example.com/cluster-1";
const BOM: &[u8] = b"\xef\xbb\xbf";

/// Where a format's case files go.
struct Format {
    dir: &'static str,
    fixture: &'static str,
    distro: &'static str,
    /// The file a case replaces, relative to the root.
    config: &'static str,
}

const ARGS: Format = Format {
    dir: "args",
    fixture: "microk8s-default",
    distro: "microk8s",
    config: "var/snap/microk8s/current/args/kube-apiserver",
};
const MANIFEST: Format = Format {
    dir: "manifest",
    fixture: "kubeadm-default",
    distro: "kubeadm",
    config: "etc/kubernetes/manifests/kube-apiserver.yaml",
};
const K3S: Format = Format {
    dir: "k3s",
    fixture: "k3s-default",
    distro: "k3s",
    config: "etc/rancher/k3s/config.yaml",
};
const K3S_DROPIN: Format = Format {
    config: "etc/rancher/k3s/config.yaml.d/10-user.yaml",
    ..K3S
};
const K0S: Format = Format {
    dir: "k0s",
    fixture: "k0s-default",
    distro: "k0s",
    config: "etc/k0s/k0s.yaml",
};

/// What a case must do.
enum Want {
    /// Converge; the edited file keeps CRLF line endings / its BOM when it had them.
    Works,
    /// Exit 1 with an error holding each of these strings (the file's node
    /// path is always required too), nothing changed.
    Refused(&'static [&'static str]),
}
use Want::*;

fn irsa(root: &Path) -> Command {
    let mut c = Command::cargo_bin("irsa-agent").unwrap();
    c.arg("--root").arg(root).args(["--output", "json"]);
    c
}

fn run(root: &Path, args: &[&str]) -> (Value, i32) {
    let out = irsa(root).args(args).output().unwrap();
    (json_of(&out), out.status.code().unwrap())
}

fn case_bytes(f: &Format, case: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/bad-input")
        .join(f.dir)
        .join(case);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A copy of the format's fixture with `bytes` as its configuration file.
fn tree(f: &Format, bytes: &[u8]) -> tempfile::TempDir {
    let dir = copy_fixture(f.fixture);
    let path = dir.path().join(f.config);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
    dir
}

/// The independent reader's settings. go-yaml (the kubelet's, k3s' and k0s'
/// YAML reader) skips a byte-order mark at the start of a stream
/// (`yaml_parser_determine_encoding`); serde_norway in the reader does not, so
/// it is shown `config` without one (restored before returning).
fn settings_of(root: &Path, f: &Format) -> anyhow::Result<SaSettings> {
    let path = root.join(f.config);
    let bytes = std::fs::read(&path).ok();
    let bom = f.dir != "args" && bytes.as_ref().is_some_and(|b| b.starts_with(BOM));
    if bom {
        std::fs::write(&path, &bytes.as_ref().unwrap()[BOM.len()..]).unwrap();
    }
    let got = apiserver_args(root, f.distro).and_then(|a| sa_settings(&a));
    if bom {
        std::fs::write(&path, bytes.unwrap()).unwrap();
    }
    got
}

fn mentions_managed_flag(line: &str) -> bool {
    let l = line.replace('_', "-");
    [
        "service-account-issuer",
        "service-account-key-file",
        "service-account-signing-key-file",
        "api-audiences",
    ]
    .iter()
    .any(|f| l.contains(f))
}

/// Every line that is not a managed flag (or the value line after a bare
/// managed flag) is still there, byte for byte and in order.
fn assert_other_lines_kept(label: &str, old: &[u8], new: &[u8]) {
    let old = String::from_utf8_lossy(old);
    let new = String::from_utf8_lossy(new);
    let old: Vec<&str> = old.split_inclusive('\n').collect();
    let mut rest = new.split_inclusive('\n');
    for (i, l) in old.iter().enumerate() {
        let value_line = i > 0 && {
            let prev = old[i - 1].trim_end();
            mentions_managed_flag(prev) && !prev.contains('=') && !prev.contains(':')
        };
        if mentions_managed_flag(l) || value_line {
            continue;
        }
        assert!(
            rest.any(|n| n == *l),
            "{label}: line {} {l:?} was changed or moved",
            i + 1
        );
    }
}

fn check(f: &Format, case: &str, bytes: &[u8], want: Want) {
    let label = format!("{}/{case}", f.dir);
    let dir = tree(f, bytes);
    let root = dir.path();
    match want {
        Refused(parts) => {
            let before = snapshot(root);
            let (v, code) = run(root, &["apply", "--issuer", ISSUER, "--no-restart"]);
            assert_eq!(code, 1, "{label}: {v}");
            let err = v["error"].as_str().unwrap_or_default();
            let node_path = format!("/{}", f.config);
            assert!(
                err.contains(&node_path),
                "{label}: {err:?} names {node_path}"
            );
            for p in parts {
                assert!(err.contains(p), "{label}: {err:?} should say {p:?}");
            }
            assert!(!err.contains('\n'), "{label}: one line: {err:?}");
            assert_eq!(snapshot(root), before, "{label}: the tree changed");
        }
        Works => {
            let before = settings_of(root, f)
                .or_else(|_| settings_of(&support::fixture_path(f.fixture), f))
                .unwrap();
            let before_files = node_files(root);
            let (v, code) = run(root, &["apply", "--issuer", ISSUER, "--no-restart"]);
            assert_eq!(code, 0, "{label}: {v}");
            assert_eq!(v["changed"], true, "{label}");
            let after = settings_of(root, f)
                .unwrap_or_else(|e| panic!("{label}: the result does not start: {e:#}"));
            assert_eq!(after.issuers[0], ISSUER, "{label}: the new issuer signs");
            for i in &before.issuers {
                assert!(after.issuers.contains(i), "{label}: issuer {i} kept");
            }
            for a in before
                .audiences
                .iter()
                .chain([&"sts.amazonaws.com".to_string()])
            {
                assert!(after.audiences.contains(a), "{label}: audience {a} kept");
            }
            for k in &before.key_files {
                assert!(after.key_files.contains(k), "{label}: key file {k} kept");
            }
            let after_files = node_files(root);
            let config = PathBuf::from(f.config);
            let new = &after_files[&config].0;
            if new != bytes {
                assert_other_lines_kept(&label, bytes, new);
            }
            if bytes.starts_with(BOM) {
                assert!(new.starts_with(BOM), "{label}: the BOM is kept");
            }
            if bytes.windows(2).any(|w| w == b"\r\n") {
                let lf = new
                    .iter()
                    .enumerate()
                    .filter(|(i, b)| **b == b'\n' && (*i == 0 || new[i - 1] != b'\r'));
                assert_eq!(lf.count(), 0, "{label}: CRLF kept on every line");
            }
            for (p, (content, _)) in &after_files {
                if before_files.get(p).map(|b| &b.0) != Some(content) {
                    assert!(
                        std::str::from_utf8(content).is_ok() || p.starts_with("var"),
                        "{label}: {} is not text",
                        p.display()
                    );
                }
            }
            // A second run changes nothing.
            let full = snapshot(root);
            let (v, code) = run(root, &["apply", "--issuer", ISSUER, "--no-restart"]);
            assert_eq!(
                (code, &v["changed"]),
                (0, &Value::Bool(false)),
                "{label}: {v}"
            );
            assert_eq!(snapshot(root), full, "{label}: the second run wrote");
        }
    }
}

fn not_utf8(f: &Format, case: &str) {
    check(
        f,
        case,
        &case_bytes(f, case),
        Refused(&["is not UTF-8 text"]),
    );
}

/// A line of 1 MiB (a long unrelated flag or annotation) survives the edit.
fn long_line(f: &Format, line: &str, after: &str) {
    let base = std::fs::read(support::fixture_path(f.fixture).join(f.config)).unwrap();
    let base = String::from_utf8(base).unwrap();
    assert!(base.contains(after), "{after:?} in {}", f.config);
    let text = base.replacen(after, &format!("{after}{line}\n"), 1);
    check(f, "long-line", text.as_bytes(), Works);
}

fn long_value() -> String {
    "x".repeat(1 << 20)
}

#[test]
fn args_file() {
    let f = &ARGS;
    for (case, want) in [
        ("crlf", Works),
        // kubelite does not strip a BOM: the apiserver would get it in its first argument.
        (
            "bom",
            Refused(&["line 1 starts with a UTF-8 byte-order mark"]),
        ),
        // TrimSpace removes tabs around a line; they are not separators inside it.
        ("tabs", Works),
        // kubelite deletes every quote, balanced or not.
        ("quoted", Works),
        // `--flag value` on one line, and the value on the next line.
        ("separate-lines", Works),
        // The same issuer twice: the apiserver refuses it; the edit leaves one.
        ("duplicate-flags", Works),
        (
            "missing-value",
            Refused(&["line 31: --service-account-key-file has no value"]),
        ),
        (
            "one-dash",
            Refused(&["line 4: -service-account-key-file has a single dash"]),
        ),
        // A line holding more than one argument is edited only when it must change.
        (
            "shared-line",
            Refused(&["line 15 holds --api-audiences together with other arguments"]),
        ),
        ("shared-line-untouched", Works),
    ] {
        check(f, case, &case_bytes(f, case), want);
    }
    not_utf8(f, "non-utf8");
    long_line(
        f,
        &format!("--tls-cipher-suites={}", long_value()),
        "--event-ttl=5m\n",
    );
}

#[test]
fn static_pod_manifest() {
    let f = &MANIFEST;
    for (case, want) in [
        ("crlf", Works),
        // YAML readers (the kubelet's included) skip a BOM: kept, and edited after.
        ("bom", Works),
        ("tab-indent", Refused(&["is not valid YAML", "line 44"])),
        ("tab-after-dash", Refused(&["is not valid YAML", "line 39"])),
        ("malformed", Refused(&["is not valid YAML", "line 44"])),
        (
            "duplicate-key",
            Refused(&[
                "is not valid YAML",
                "`imagePullPolicy:` is written 2 times in one mapping, on lines 44, 45",
            ]),
        ),
        // Another container's flags are not the apiserver's, and stay as they are.
        ("two-containers", Works),
        (
            "two-apiserver-containers",
            Refused(&["2 containers are named kube-apiserver"]),
        ),
        // `- --flag` `- value`: pflag takes the next item as the value.
        ("separate-items", Works),
        ("quoted", Works),
        // pflag reads --api-audiences as CSV: the quoted value is ONE audience
        // (comma included), kept and written back quoted.
        ("quoted-audiences-csv", Works),
        // A lone quote is not CSV: kube-apiserver would not start.
        (
            "unbalanced-audiences-quote",
            Refused(&[
                "kube-apiserver.yaml:38: --api-audiences=",
                "missing \" in quoted-field",
            ]),
        ),
        (
            "missing-value",
            Refused(&["line 43: --service-account-key-file has no value after it"]),
        ),
        ("flow-command", Refused(&["as a block sequence"])),
    ] {
        check(f, case, &case_bytes(f, case), want);
    }
    not_utf8(f, "non-utf8");
    long_line(
        f,
        &format!("    - --cors-allowed-origins={}", long_value()),
        "    - --client-ca-file=/etc/kubernetes/pki/ca.crt\n",
    );

    // The other container's flags are untouched.
    let dir = tree(f, &case_bytes(f, "two-containers"));
    let (v, code) = run(dir.path(), &["apply", "--issuer", ISSUER, "--no-restart"]);
    assert_eq!(code, 0, "{v}");
    let text = std::fs::read_to_string(dir.path().join(f.config)).unwrap();
    assert_eq!(text.matches("--service-account-issuer=https://not-the-apiserver.example.com\n    - --service-account-key-file=/etc/shipper/key.pub\n").count(), 1);
}

#[test]
fn k3s_config_and_dropins() {
    let f = &K3S;
    for (case, want) in [
        ("crlf", Works),
        ("bom", Works),
        ("tab-indent", Refused(&["is not valid YAML", "line 17"])),
        ("malformed", Refused(&["is not valid YAML", "line 3"])),
        // k3s takes the later key; two keys in one file are refused.
        (
            "duplicate-key",
            Refused(&[
                "is not valid YAML",
                "`kube-apiserver-arg:` is written 2 times in one mapping, on lines 13, 20",
            ]),
        ),
        ("quoted", Works),
        ("scalar-value", Works),
    ] {
        check(f, case, &case_bytes(f, case), want);
    }
    not_utf8(f, "non-utf8");
    long_line(
        f,
        &format!("  - \"audit-log-path={}\"", long_value()),
        "kube-apiserver-arg:\n",
    );
    let d = &K3S_DROPIN;
    for (case, want) in [
        (
            "dropin-malformed.yaml",
            Refused(&["is not valid YAML", "line 2"]),
        ),
        (
            "dropin-duplicate-key.yaml",
            Refused(&[
                "is not valid YAML",
                "`kube-apiserver-arg+:` is written 2 times in one mapping, on lines 1, 3",
            ]),
        ),
    ] {
        check(d, case, &case_bytes(f, case), want);
    }
    check(
        d,
        "dropin-non-utf8.yaml",
        &case_bytes(f, "dropin-non-utf8.yaml"),
        Refused(&["is not UTF-8 text"]),
    );
}

#[test]
fn k0s_config() {
    let f = &K0S;
    for (case, want) in [
        ("crlf", Works),
        ("bom", Works),
        ("tab-indent", Refused(&["is not valid YAML", "line 8"])),
        ("malformed", Refused(&["is not valid YAML", "line 8"])),
        (
            "duplicate-key",
            Refused(&[
                "is not valid YAML",
                "`port:` is written 2 times in one mapping, on lines 9, 10",
            ]),
        ),
        ("separate-items", Works),
    ] {
        check(f, case, &case_bytes(f, case), want);
    }
    not_utf8(f, "non-utf8");
    long_line(
        f,
        &format!("  # {}", long_value()),
        "  controllerManager: {}\n",
    );
}
