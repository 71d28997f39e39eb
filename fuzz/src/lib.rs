//! What every editor fuzz target checks, shared by `fuzz_targets/*.rs`.
//!
//! Input layout for the editor targets: the configuration text(s), then an
//! optional NUL byte and a "spec" that picks the target state (see
//! [`pick_target`]). The committed seeds are fixture files with no spec.

#![allow(clippy::missing_panics_doc)]

use std::sync::OnceLock;

use irsa_agent::distro::{self, Profile};
use irsa_agent::flags::{converge, dedup_keep_first, Desired, Effective, SaState};
use irsa_agent::formats::{self, ConfigSet};
use libfuzzer_sys::arbitrary::{Arbitrary, Unstructured};

/// The independent reader of the integration tests (written from upstream
/// sources, not from the crate): used as a second opinion on edited files.
#[path = "../../tests/support/effective.rs"]
#[allow(dead_code)]
pub mod effective;

/// An embedded distribution profile.
pub fn profile(name: &str) -> &'static Profile {
    static ALL: OnceLock<Vec<Profile>> = OnceLock::new();
    ALL.get_or_init(distro::all)
        .iter()
        .find(|p| p.name == name)
        .expect("an embedded profile")
}

/// Split `data` at NUL bytes into at most `n` parts (the last keeps its NULs).
pub fn parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    data.splitn(n, |b| *b == 0).collect()
}

/// Files reach the editors as UTF-8 text (the sysroot refuses anything else).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One fuzz case for a distribution edited in a single file (`profile.config`):
/// the file's text, the file set holding it, and the target state picked by
/// the spec. None when the crate cannot read the file (nothing to edit).
pub struct SingleFile {
    pub profile: &'static Profile,
    pub old: String,
    pub files: ConfigSet,
    pub target: SaState,
}

impl SingleFile {
    pub fn new(distro: &str, data: &[u8]) -> Option<Self> {
        let profile = profile(distro);
        let parts = parts(data, 2);
        let old = text(parts[0]);
        let files: ConfigSet = [(profile.config.clone(), old.clone())]
            .into_iter()
            .collect();
        let current = state(profile, &files).ok()?;
        let target = pick_target(parts.get(1).copied(), &current);
        Some(SingleFile {
            profile,
            old,
            files,
            target,
        })
    }
}

const POOL: &[&str] = &[
    "https://oidc.example.com",
    "https://oidc.example.com/cluster-1",
    "https://kubernetes.default.svc.cluster.local",
    "https://kubernetes.default.svc",
    "sts.amazonaws.com",
    "/etc/kubernetes/pki/sa.pub",
    "/etc/kubernetes/pki/irsa-agent-abc.pub",
    "/etc/kubernetes/pki/irsa-agent-abc.key",
    "/var/snap/microk8s/current/certs/irsa.key",
    "/var/lib/rancher/k3s/server/tls/service.key",
    "k3s",
];

fn value(u: &mut Unstructured, current: &SaState) -> String {
    let from_file: Vec<&String> = current
        .issuers
        .iter()
        .chain(&current.key_files)
        .chain(&current.signing_key_file)
        .chain(&current.api_audiences)
        .collect();
    match u8::arbitrary(u).unwrap_or(0) % 4 {
        0 | 1 => POOL[usize::arbitrary(u).unwrap_or(0) % POOL.len()].to_string(),
        2 if !from_file.is_empty() => {
            from_file[usize::arbitrary(u).unwrap_or(0) % from_file.len()].clone()
        }
        _ => {
            let s = <&str>::arbitrary(u).unwrap_or("");
            s.chars().take(40).collect()
        }
    }
}

fn values(u: &mut Unstructured, current: &SaState, max: usize) -> Vec<String> {
    let n = usize::arbitrary(u).unwrap_or(0) % (max + 1);
    (0..n).map(|_| value(u, current)).collect()
}

/// The target state for `current` chosen by `spec`:
/// - no spec, or mode 0: what `apply` would ask for (converge to a new issuer);
/// - mode 1: the current state itself (a no-op);
/// - mode 2: any state (values from a pool, from the file, or arbitrary).
pub fn pick_target(spec: Option<&[u8]>, current: &SaState) -> SaState {
    let Some(spec) = spec else {
        return converge(
            current,
            &Desired {
                issuer: "https://oidc.example.com/cluster-1".into(),
                audiences: vec!["sts.amazonaws.com".into()],
                signing_key_file: Some("/etc/kubernetes/pki/irsa-agent-abc.key".into()),
                extra_key_files: vec!["/etc/kubernetes/pki/irsa-agent-abc.pub".into()],
            },
        );
    };
    let u = &mut Unstructured::new(spec);
    match u8::arbitrary(u).unwrap_or(0) % 3 {
        0 => {
            let desired = Desired {
                issuer: value(u, current),
                audiences: values(u, current, 3),
                signing_key_file: bool::arbitrary(u)
                    .unwrap_or(false)
                    .then(|| value(u, current)),
                extra_key_files: values(u, current, 2),
            };
            converge(current, &desired)
        }
        1 => current.clone(),
        _ => SaState {
            issuers: dedup_keep_first(values(u, current, 4)),
            key_files: dedup_keep_first(values(u, current, 4)),
            signing_key_file: bool::arbitrary(u)
                .unwrap_or(false)
                .then(|| value(u, current)),
            api_audiences: dedup_keep_first(values(u, current, 4)),
        },
    }
}

/// The managed flags as the crate reads `files`.
pub fn state(profile: &Profile, files: &ConfigSet) -> anyhow::Result<SaState> {
    Ok(Effective::from_args(&formats::read_args(profile, files)?).state())
}

/// Line contents without their line endings.
pub fn contents(text: &str) -> Vec<&str> {
    text.split_inclusive('\n')
        .map(|l| {
            l.strip_suffix("\r\n")
                .or_else(|| l.strip_suffix('\n'))
                .unwrap_or(l)
        })
        .collect()
}

/// Does this line (or the flag name on it) belong to a managed flag? Names
/// are compared after kube-apiserver's `_` -> `-` normalisation.
pub fn mentions_managed_flag(line: &str) -> bool {
    let l = line.replace('_', "-");
    irsa_agent::flags::MANAGED.iter().any(|f| l.contains(f))
}

/// Every line of `old` whose index `keep(i)` is true appears in `new`, in
/// order, byte for byte with its line ending (an unterminated last line may
/// gain one, when lines are added after it).
pub fn assert_lines_kept(old: &str, new: &str, keep: impl Fn(usize) -> bool) {
    let mut rest = new.split_inclusive('\n');
    for (i, l) in old.split_inclusive('\n').enumerate() {
        if !keep(i) {
            continue;
        }
        let same = |n: &str| {
            n == l
                || (!l.ends_with('\n')
                    && n.strip_prefix(l).is_some_and(|e| e == "\n" || e == "\r\n"))
        };
        assert!(
            rest.any(same),
            "line {} {l:?} was lost or moved:\n--- old\n{old}\n--- new\n{new}",
            i + 1
        );
    }
}

/// When every line of `old` ends in CRLF, so does every line of `new`.
pub fn assert_line_endings(old: &str, new: &str) {
    let crlf = |t: &str| {
        !t.is_empty()
            && t.split_inclusive('\n')
                .all(|l| l.ends_with("\r\n") || !l.ends_with('\n'))
            && t.contains("\r\n")
    };
    if crlf(old) && old.ends_with('\n') {
        assert!(
            !new.replace("\r\n", "").contains('\n'),
            "an LF line in a CRLF file:\n{new:?}"
        );
    }
}

/// The properties every editor must have: for a file set the crate can read
/// and a target, `write` either refuses or gives files that
/// - read back as exactly the target,
/// - are left as they are by a second `write` with the same target,
/// - are byte-identical where a file needed no change (a no-op target changes nothing).
///
/// Returns the written files, for format-specific checks.
pub fn check_edit(profile: &Profile, files: &ConfigSet, target: &SaState) -> Option<ConfigSet> {
    check_edit_with(profile, files, target, &has_empty_audience)
}

/// [`check_edit`] where `empty_audience(text)` tells whether the distribution
/// reads an empty audience from a file (which the editor may rewrite even for
/// a no-op target).
pub fn check_edit_with(
    profile: &Profile,
    files: &ConfigSet,
    target: &SaState,
    empty_audience: &dyn Fn(&str) -> bool,
) -> Option<ConfigSet> {
    let current = state(profile, files).ok()?;
    let out = match formats::write(profile, files, target) {
        Ok(out) => out,
        Err(e) => {
            // A refusal is an error message, never an empty one.
            assert!(!format!("{e:#}").trim().is_empty());
            return None;
        }
    };
    let got = state(profile, &out).unwrap_or_else(|e| {
        panic!("the edited files do not read back: {e:#}\n{out:#?}\ntarget {target:?}")
    });
    assert_eq!(&got, target, "edited files read back wrong:\n{out:#?}");
    let again = formats::write(profile, &out, target)
        .unwrap_or_else(|e| panic!("a second edit failed: {e:#}\n{out:#?}"));
    assert_eq!(again, out, "a second edit changed the files");
    if *target == current {
        // `apply` on a converged node writes nothing: the editor must not
        // rewrite a file whose flags are already right, except to drop
        // repeated signing-key lines (where only the last counts).
        for (path, text) in files {
            let new = out.get(path).expect("no file disappears");
            if new != text {
                let signing_lines = contents(text)
                    .iter()
                    .filter(|l| loose(l).contains("signing-key-file"))
                    .count();
                assert!(
                    signing_lines > 1 || empty_audience(text),
                    "{path} rewritten for a no-op target:\n--- old\n{text}\n--- new\n{new}"
                );
            }
        }
    }
    Some(out)
}

/// A line with what can hide a flag name from a plain search taken out:
/// quotes (kubelite deletes them), `$` (`$$` expands to nothing), `_` read as `-`.
fn loose(line: &str) -> String {
    line.replace(['"', '\'', '$'], "").replace('_', "-")
}

/// Does an `--api-audiences` value (on its line or as the next argument) hold an empty
/// comma-separated field, which pflag reads as an audience ""?
pub fn has_empty_audience(text: &str) -> bool {
    let lines: Vec<String> = contents(text)
        .iter()
        .map(|l| loose(l).replace(' ', ""))
        .collect();
    // The value of a bare flag is the next argument, after blank and comment lines.
    let next_value = |i: usize| {
        lines[i + 1..]
            .iter()
            .find(|l| !(l.is_empty() || l.starts_with('#')))
    };
    lines.iter().enumerate().any(|(i, l)| {
        l.contains("api-audiences")
            && [Some(l), next_value(i)].into_iter().flatten().any(|v| {
                v.contains(",,") || v.contains("=,") || v.ends_with(',') || v.contains("-,")
            })
    })
}

/// Does kube-apiserver get an `--api-audiences` value with an empty field
/// (read as pflag does, one CSV record) or one that is not CSV at all?
pub fn argv_has_empty_audience(argv: &[String]) -> bool {
    argv.iter().enumerate().any(|(i, a)| {
        let a = a.replace('_', "-");
        let value = match a.strip_prefix("--api-audiences") {
            Some("") => argv.get(i + 1).map(String::as_str),
            Some(v) => v.strip_prefix('='),
            None => None,
        };
        value.is_some_and(|v| {
            effective::pflag_read_csv(v).map_or(true, |items| items.iter().any(String::is_empty))
        })
    })
}

/// The independent reader's settings must agree with `target` when it can
/// read the argv at all (it refuses what kube-apiserver would refuse).
pub fn assert_independent(argv: &[String], target: &SaState) {
    let Ok(s) = effective::sa_settings(argv) else {
        return;
    };
    assert_eq!(
        s.issuers, target.issuers,
        "issuers per the independent reader: {argv:?}"
    );
    assert_eq!(
        s.key_files, target.key_files,
        "key files per the independent reader: {argv:?}"
    );
    assert_eq!(
        s.signing_key_file, target.signing_key_file,
        "signing key per the independent reader: {argv:?}"
    );
    assert_eq!(
        s.audiences_explicit,
        !target.api_audiences.is_empty(),
        "explicit audiences per the independent reader: {argv:?}"
    );
    if s.audiences_explicit {
        assert_eq!(
            s.audiences, target.api_audiences,
            "audiences per the independent reader: {argv:?}"
        );
    }
}
