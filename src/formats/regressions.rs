//! Regression tests for what fuzzing (`fuzz/`) and the bad-input corpus
//! (`tests/bad_input.rs`) found, each with the minimized input, through the
//! same entry points `apply` uses (`read_args`, `write`) and the real profiles.

use super::{read_args, write, ConfigSet};
use crate::distro::{by_name, Profile};
use crate::flags::{converge, Desired, Effective, SaState};

fn files(profile: &Profile, text: &str) -> ConfigSet {
    [(profile.config.clone(), text.to_string())].into()
}

fn state(profile: &Profile, files: &ConfigSet) -> SaState {
    Effective::from_args(&read_args(profile, files).unwrap()).state()
}

fn new_issuer(current: &SaState) -> SaState {
    converge(
        current,
        &Desired {
            issuer: "https://oidc.example.com".into(),
            audiences: vec!["sts.amazonaws.com".into()],
            signing_key_file: None,
            extra_key_files: vec![],
        },
    )
}

fn err_of(r: anyhow::Result<impl std::fmt::Debug>) -> String {
    format!("{:#}", r.unwrap_err())
}

/// fuzz args_file crash-485c9d4f: `-service-account-key-file=...` was skipped
/// by the editor; pflag reads one dash as short flags and kube-apiserver
/// refuses to start. Refused with the line.
#[test]
fn a_managed_flag_with_one_dash_is_refused() {
    let p = by_name("microk8s").unwrap();
    let f = files(
        &p,
        "--service-account-issuer=https://a\n-service-account-key-file=/k.pub\n",
    );
    let err = err_of(read_args(&p, &f));
    assert!(
        err.contains("line 2: -service-account-key-file has a single dash"),
        "{err}"
    );
    let p = by_name("kubeadm").unwrap();
    let f = files(&p, "spec:\n  containers:\n  - name: kube-apiserver\n    command:\n    - kube-apiserver\n    - -service_account_issuer=https://a\n");
    let err = err_of(read_args(&p, &f));
    assert!(err.contains("line 6: -service-account-issuer"), "{err}");
}

/// fuzz args_file crash-6925770a: a bare flag of unknown type as the last
/// line; a new issuer inserted after it would become that flag's value for
/// pflag. The edit is refused (nothing is returned to write) with the line.
#[test]
fn an_edit_that_would_not_read_back_is_refused() {
    let p = by_name("microk8s").unwrap();
    let f = files(&p, "--secure-port=16443\n--audit-policy-file\n");
    let current = state(&p, &f);
    let err = err_of(write(&p, &f, &new_issuer(&current)));
    assert!(err.contains("would not read back"), "{err}");
    assert!(
        err.contains("line 2: --audit-policy-file has no value"),
        "{err}"
    );
    // Known boolean flags never take the next argument: no ambiguity.
    let f = files(&p, "--secure-port=16443\n--allow-privileged\n");
    let target = new_issuer(&state(&p, &f));
    let out = write(&p, &f, &target).unwrap();
    assert_eq!(state(&p, &out), target);
}

/// fuzz args_file crash-0e1320f0: `--api-audiences=,,a` is read by pflag as
/// the audiences "", "", "a". Converging drops the empty fields and the
/// value is rewritten without them.
#[test]
fn empty_audience_fields_are_dropped() {
    let p = by_name("microk8s").unwrap();
    let f = files(&p, "--servic0-beu-x=1\n--api-audiences=,,a,\n");
    let read = state(&p, &f);
    assert_eq!(
        read.api_audiences,
        ["", "", "a", ""],
        "pflag keeps empty fields"
    );
    let current = SaState {
        api_audiences: vec!["a".into()],
        ..read
    };
    let out = write(&p, &f, &current).unwrap();
    assert_eq!(out[&p.config], "--servic0-beu-x=1\n--api-audiences=a\n");
    assert_eq!(write(&p, &out, &current).unwrap(), out);
    // fuzz args_file crash-0f041fc7: an empty value is no audience at all
    // (pflag: readAsCSV("") is empty); a converged file is left alone.
    let f = files(&p, "--x=1\n--api-audiences=\n\n");
    let current = state(&p, &f);
    assert!(current.api_audiences.is_empty());
    assert_eq!(write(&p, &f, &current).unwrap(), f);
}

/// Found by the differential check against tests/support: kubelite splits a
/// line on single spaces (a tab is part of the argument) and expands `$` the
/// way Go's `os.ExpandEnv` does (`$1`, `$$`, `${}`).
#[test]
fn args_are_split_and_expanded_like_kubelite() {
    let p = by_name("microk8s").unwrap();
    let f = files(
        &p,
        "--service-account-issuer=https://a\t--x=1\n--service-account-key-file=$1${}/k$$.pub\n",
    );
    let s = state(&p, &f);
    assert_eq!(s.issuers, ["https://a\t--x=1"]);
    assert_eq!(s.key_files, ["/k.pub"]);
    // Two spaces make an empty argument, which pflag takes as the value.
    let f = files(&p, "--service-account-issuer  https://a\n");
    assert_eq!(state(&p, &f).issuers, [""]);
}

/// fuzz k3s_config crash-7e9d2ae7: irsa-agent's own drop-in, edited by hand
/// into something that adds nothing, was rewritten although the node already
/// had the target state. A converged node is left alone.
#[test]
fn k3s_converged_node_is_not_rewritten() {
    let p = by_name("rke2").unwrap();
    let mut f = files(&p, "# d\n");
    let dropin = p.dropin.clone().unwrap();
    f.insert(dropin, "ver-arg:\n  -  - issuer-=https://x\n".into());
    let current = state(&p, &f);
    assert_eq!(write(&p, &f, &current).unwrap(), f);
}

/// fuzz k0s_config crash-8a0b7a6d: `api:` holding only a tagged empty node
/// (`!address:` is a tag, not a key). Keys inserted under it changed the
/// document; the edit is now checked on the parsed documents and refused.
#[test]
fn k0s_yaml_the_line_editor_cannot_follow_is_refused() {
    let p = by_name("k0s").unwrap();
    let f = files(
        &p,
        "apiVersion: k0s.k0sproject.io/v1beta1\nspec:\n  api:\n   !address: \n",
    );
    let target = new_issuer(&state(&p, &f));
    let err = err_of(write(&p, &f, &target));
    assert!(
        err.contains("/etc/k0s/k0s.yaml: cannot add spec.api.extraArgs/rawArgs"),
        "{err}"
    );
}

/// A UTF-8 byte-order mark: YAML readers skip it, so the YAML editors work
/// after it and keep it; kubelite does not, so the args file is refused.
#[test]
fn byte_order_marks() {
    let p = by_name("kubeadm").unwrap();
    let text = "\u{feff}apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: kube-apiserver\n    command:\n    - kube-apiserver\n    - --service-account-issuer=https://a\n";
    let f = files(&p, text);
    let target = new_issuer(&state(&p, &f));
    let out = write(&p, &f, &target).unwrap();
    assert!(out[&p.config].starts_with("\u{feff}apiVersion: v1\n"));
    assert_eq!(state(&p, &out), target);
    assert_eq!(write(&p, &out, &target).unwrap(), out);

    let p = by_name("microk8s").unwrap();
    let f = files(&p, "\u{feff}--service-account-issuer=https://a\n");
    let err = err_of(read_args(&p, &f));
    assert!(err.starts_with("/var/snap/microk8s/current/args/kube-apiserver: line 1 starts with a UTF-8 byte-order mark"), "{err}");
}

/// Flags as separate list items: the managed flags always take the next item
/// (pflag), so `- --flag` `- value` is read and edited as one flag; a managed
/// flag with nothing after it, or after a lone `--`, is refused.
#[test]
fn separate_items() {
    let p = by_name("kubeadm").unwrap();
    let head =
        "spec:\n  containers:\n  - name: kube-apiserver\n    command:\n    - kube-apiserver\n";
    let f = files(
        &p,
        &format!("{head}    - --service-account-issuer\n    - --not-a-flag\n"),
    );
    assert_eq!(
        state(&p, &f).issuers,
        ["--not-a-flag"],
        "pflag takes the next item"
    );
    let f = files(
        &p,
        &format!(
            "{head}    - --service-account-issuer=https://a\n    - --service-account-key-file\n"
        ),
    );
    let err = err_of(read_args(&p, &f));
    assert!(
        err.contains("line 7: --service-account-key-file has no value after it"),
        "{err}"
    );
    let f = files(
        &p,
        &format!("{head}    - --\n    - --service-account-issuer=https://a\n"),
    );
    let err = err_of(read_args(&p, &f));
    assert!(
        err.contains("line 6: a lone `--` ends kube-apiserver's flags"),
        "{err}"
    );
}

/// Two containers named kube-apiserver: the kubelet refuses such a pod, and
/// which one to edit is a guess. Refused.
#[test]
fn two_apiserver_containers_are_refused() {
    let p = by_name("kubeadm").unwrap();
    let c = "  - name: kube-apiserver\n    command:\n    - kube-apiserver\n    - --service-account-issuer=https://a\n";
    let f = files(&p, &format!("spec:\n  containers:\n{c}{c}"));
    let err = err_of(read_args(&p, &f));
    assert!(
        err.contains("2 containers are named kube-apiserver"),
        "{err}"
    );
}

/// Targets no format can carry are refused before any editing.
#[test]
fn unwritable_targets_are_refused() {
    let p = by_name("kubeadm").unwrap();
    let f = files(&p, "spec:\n  containers:\n  - name: kube-apiserver\n    command:\n    - kube-apiserver\n    - --service-account-issuer=https://a\n");
    let base = new_issuer(&state(&p, &f));
    // Audiences holding a comma or a quote are written CSV-quoted and read back.
    let mut t = base.clone();
    t.api_audiences.push("a,b".into());
    t.api_audiences.push("\"a".into());
    let out = write(&p, &f, &t).unwrap();
    assert_eq!(state(&p, &out), t);
    for (change, want) in [
        (
            (|t: &mut SaState| t.issuers.push("https://oidc.example.com".into()))
                as fn(&mut SaState),
            "twice",
        ),
        (|t| t.key_files.push(String::new()), "empty value"),
        (
            |t| t.signing_key_file = Some("/k\n.key".into()),
            "control character",
        ),
    ] {
        let mut t = base.clone();
        change(&mut t);
        let err = err_of(write(&p, &f, &t));
        assert!(err.contains(want), "{err}");
    }
}

/// bad-input args/separate-lines: a flag and its value on two lines of an
/// args file is one flag; replacing or removing it takes both lines.
#[test]
fn args_flag_with_its_value_on_the_next_line_is_edited_whole() {
    let p = by_name("microk8s").unwrap();
    let f = files(
        &p,
        "--service-account-issuer\nhttps://a\n--service-account-signing-key-file\n/old.key\n--x=1\n",
    );
    let mut target = state(&p, &f);
    assert_eq!(target.issuers, ["https://a"]);
    target.issuers = vec!["https://b".into()];
    target.signing_key_file = Some("/new.key".into());
    let out = write(&p, &f, &target).unwrap();
    // Both two-line flags are gone; the new issuer goes after the last managed flag.
    assert_eq!(
        out[&p.config],
        "--service-account-signing-key-file=/new.key\n--service-account-issuer=https://b\n--x=1\n"
    );
}
