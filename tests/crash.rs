//! Crash safety and concurrency of `apply`, with the failpoints of
//! `src/failpoint.rs` (debug builds) and real SIGKILLs:
//! - a run stopped at each failpoint (`:kill`, the process SIGKILLs itself)
//!   leaves every config and key file entirely old or entirely new, never
//!   partial or empty; the next `apply` converges to exactly what a clean run
//!   writes; `rollback` then restores the original bytes (so does `rollback`
//!   straight after the crash, and `rollback --backup` of the crashed run);
//! - the same after a SIGKILL at a random moment, 200+ times (seed printed,
//!   `CRASH_SEED=N` replays it), plus a few runs against the apiserver
//!   SIMULATOR of tests/support/sim;
//! - two runs at once: the second fails fast naming the first's pid and the
//!   lock file, and the files are one run's result, never a mix; a lock left
//!   by a killed run blocks nothing.
//!
//! "New" is what a clean `apply` with the same arguments writes on a copy of
//! the same fixture, compared byte for byte (and mode).

mod support;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use assert_cmd::prelude::*;
use serde_json::Value;
use support::sim::{Cluster, Options};
use support::{copy_fixture_in, fixture_path, snapshot};

type Tree = BTreeMap<PathBuf, (Vec<u8>, u32)>;

const ISSUER: &str = "https://oidc.example.com/crash";
const BACKUPS: &str = "var/lib/irsa-agent/backups";

/// Every distribution, `--no-restart`: (fixture, distro).
const CASES: [(&str, &str); 7] = [
    ("kubeadm-default", "kubeadm"),
    ("k3s-default", "k3s"),
    ("microk8s-default", "microk8s"),
    ("minikube-default", "minikube"),
    ("k3s-dropins", "k3s"),
    ("rke2-default", "rke2"),
    ("k0s-default", "k0s"),
];

/// Static-pod restarts are observed through the host's process table: the
/// simulator tests on kubeadm take turns.
static PROCESS_TABLE: Mutex<()> = Mutex::new(());

/// Fixture copies live in memory (`/dev/shm`) when it is there: these tests
/// run hundreds of applies, each fsyncing every file it writes, and a
/// process crash (what they test) does not depend on fsync, which matters
/// only for power loss.
fn copy_fixture(case: &str) -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let parent = if tempfile::tempdir_in(shm).is_ok() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    copy_fixture_in(case, &parent)
}

fn signing_key() -> PathBuf {
    fixture_path("kubeadm-custom-key").join("etc/kubernetes/pki/irsa.key")
}

/// `apply` with a given signing key: a key pair and the configuration are
/// written, and "new" is the same bytes on every run.
fn apply_args(issuer: &str) -> Vec<String> {
    vec![
        "apply".into(),
        "--issuer".into(),
        issuer.into(),
        "--signing-key".into(),
        signing_key().to_str().unwrap().into(),
    ]
}

fn irsa(root: &Path) -> Command {
    let mut c = Command::cargo_bin("irsa-agent").unwrap();
    c.args(["--output", "json", "--root"]).arg(root);
    c.env_remove("IRSA_AGENT_FAILPOINT");
    c.env_remove("DBUS_SYSTEM_BUS_ADDRESS");
    c
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Run to the end; (JSON, exit code).
fn run(mut c: Command) -> (Value, i32) {
    let out = c.output().unwrap();
    let code = out.status.code().unwrap_or_else(|| {
        panic!(
            "killed by a signal: {:?}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (json_of(&out), code)
}

/// The node's files, without irsa-agent's own state (backups, lock).
fn node_files(root: &Path) -> Tree {
    snapshot(root)
        .into_iter()
        .filter(|(p, _)| {
            !p.starts_with("var/lib/irsa-agent")
                && !Path::new("var/lib/irsa-agent").starts_with(p)
                && !p.starts_with("run")
        })
        .collect()
}

fn is_temp(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(".irsa-agent-"))
}

/// What a clean apply does to a fixture.
struct Expect {
    old: Tree,
    new: Tree,
    /// The files a clean apply changes (created or modified).
    changed: Vec<PathBuf>,
}

impl Expect {
    fn of(case: &str, args: &[String]) -> Expect {
        let dir = copy_fixture(case);
        let old = node_files(dir.path());
        let mut c = irsa(dir.path());
        c.args(args).arg("--no-restart");
        let (v, code) = run(c);
        assert_eq!(code, 0, "{case}: clean apply: {v}");
        let new = node_files(dir.path());
        let changed: Vec<PathBuf> = old
            .keys()
            .chain(new.keys())
            .filter(|p| old.get(*p) != new.get(*p))
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert!(
            changed.len() >= 3,
            "{case}: a key pair and a config file: {changed:?}"
        );
        for p in &changed {
            // A directory may be created for a new file (k3s config.yaml.d).
            let created_dir = !old.contains_key(p) && new[p].1 & 0o170000 == 0o040000;
            assert!(
                created_dir || new.get(p).is_some_and(|(b, m)| !b.is_empty() && m & 0o170000 == 0o100000),
                "{case}: {} is a non-empty regular file after a clean run",
                p.display()
            );
        }
        Expect { old, new, changed }
    }

    /// How many files a clean run writes.
    fn files(&self) -> usize {
        self.changed
            .iter()
            .filter(|p| self.new.get(*p).is_some_and(|v| v.1 & 0o170000 == 0o100000))
            .count()
    }

    /// `before` with the changed files as a clean run leaves them.
    fn after(&self, before: &Tree) -> Tree {
        let mut t = before.clone();
        for p in &self.changed {
            match self.new.get(p) {
                Some(v) => t.insert(p.clone(), v.clone()),
                None => t.remove(p),
            };
        }
        t
    }
}

/// Where a crash left the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No node file touched yet.
    Before,
    /// Some changed files new, some old, or a temp file of a write.
    During,
    /// Every changed file new.
    After,
}

/// After a crash: every changed file is byte-identical (content and mode)
/// to its old or its new version, nothing else differs from `before` but
/// hidden temp files of an atomic write.
fn assert_old_or_new(root: &Path, before: &Tree, e: &Expect, what: &str) -> Phase {
    let now = node_files(root);
    let (mut new, mut files) = (0, 0);
    for p in &e.changed {
        let is_file = e.new.get(p).is_some_and(|v| v.1 & 0o170000 == 0o100000);
        files += usize::from(is_file);
        assert_eq!(
            before.get(p),
            e.old.get(p),
            "{what}: {} was not as in the fixture before the run",
            p.display()
        );
        let cur = now.get(p);
        if cur == e.new.get(p) {
            new += usize::from(is_file);
        } else if cur != e.old.get(p) {
            panic!(
                "{what}: {} is neither the old nor the new file: {:?}",
                p.display(),
                cur.map(|(b, m)| (String::from_utf8_lossy(b).into_owned(), format!("{m:o}")))
            );
        }
    }
    let mut temps = 0;
    for (p, v) in &now {
        if e.changed.contains(p) || before.get(p) == Some(v) {
            continue;
        }
        assert!(
            is_temp(p) && v.1 & 0o170000 == 0o100000,
            "{what}: {} changed and is no file of the run",
            p.display()
        );
        temps += 1;
    }
    for p in before.keys() {
        assert!(
            now.contains_key(p) || e.changed.contains(p),
            "{what}: {} disappeared",
            p.display()
        );
    }
    match (new, temps) {
        (0, 0) => Phase::Before,
        (n, 0) if n == files => Phase::After,
        _ => Phase::During,
    }
}

/// Exactly `want`, or the paths that differ.
fn assert_tree(root: &Path, want: &Tree, what: &str) {
    let now = node_files(root);
    let differ: Vec<_> = now
        .keys()
        .chain(want.keys())
        .filter(|p| now.get(*p) != want.get(*p))
        .collect();
    assert!(differ.is_empty(), "{what}: these differ: {differ:?}");
    let staging: Vec<_> = std::fs::read_dir(root.join(BACKUPS))
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        staging.is_empty(),
        "{what}: an incomplete backup is left: {staging:?}"
    );
}

/// The id of the backup the crashed run completed, if any, with its state.
fn backups(root: &Path) -> Vec<Value> {
    let Ok(rd) = std::fs::read_dir(root.join(BACKUPS)) else {
        return vec![];
    };
    let mut out: Vec<Value> = rd
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("index.json").is_file())
        .map(|p| serde_json::from_slice(&std::fs::read(p.join("index.json")).unwrap()).unwrap())
        .collect();
    out.sort_by_key(|v| v["id"].as_str().unwrap().to_string());
    out
}

fn pending_backup(root: &Path) -> Option<String> {
    let pending: Vec<String> = backups(root)
        .into_iter()
        .filter(|b| b["pending"] == true)
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect();
    assert!(pending.len() <= 1, "{pending:?}");
    pending.into_iter().next()
}

/// After a crash on a `--no-restart` node: apply converges (undoing the
/// crashed run first when it had a complete backup), rollback restores the
/// original bytes, and so does `rollback --backup` of the crashed run.
fn converge_and_roll_back(root: &Path, before: &Tree, e: &Expect, what: &str) {
    let crashed = pending_backup(root);
    let mut c = irsa(root);
    c.args(apply_args(ISSUER)).arg("--no-restart");
    let (v, code) = run(c);
    assert_eq!(code, 0, "{what}: apply after the crash: {v}");
    match &crashed {
        Some(id) => assert_eq!(v["recovered"], serde_json::json!([id]), "{what}: {v}"),
        None => assert_eq!(v["recovered"], serde_json::json!([]), "{what}: {v}"),
    }
    assert_tree(root, &e.after(before), &format!("{what}: converged"));

    let mut c = irsa(root);
    c.args(["rollback", "--no-restart"]);
    let (v, code) = run(c);
    assert_eq!(code, 0, "{what}: rollback: {v}");
    assert_tree(root, before, &format!("{what}: rolled back"));

    if let Some(id) = crashed {
        let mut c = irsa(root);
        c.args(apply_args(ISSUER)).arg("--no-restart");
        assert_eq!(run(c).1, 0, "{what}");
        let mut c = irsa(root);
        c.args(["rollback", "--no-restart", "--backup", &id]);
        let (v, code) = run(c);
        assert_eq!(code, 0, "{what}: rollback --backup {id}: {v}");
        assert_tree(root, before, &format!("{what}: rollback --backup {id}"));
    }
}

/// `rollback` straight after the crash: the original bytes, or, when the
/// crashed run had changed nothing, "nothing to roll back" and nothing
/// changed (its temp files gone).
fn roll_back_after_crash(root: &Path, before: &Tree, e: &Expect, what: &str) {
    let now = node_files(root);
    let touched = e.changed.iter().any(|p| now.get(p) != e.old.get(p));
    let mut c = irsa(root);
    c.args(["rollback", "--no-restart"]);
    let (v, code) = run(c);
    if !touched && code == 1 {
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("nothing to roll back"),
            "{what}: {v}"
        );
    } else {
        assert_eq!(code, 0, "{what}: rollback after the crash: {v}");
    }
    assert_tree(root, before, &format!("{what}: rolled back after the crash"));
    // And the node is usable: a clean apply on it runs as on a fresh node.
    let mut c = irsa(root);
    c.args(apply_args(ISSUER)).arg("--no-restart");
    let (v, code) = run(c);
    assert_eq!(code, 0, "{what}: {v}");
    assert_eq!(v["recovered"], serde_json::json!([]), "{what}: {v}");
}

/// The failpoints of a `--no-restart` apply writing `files` files.
fn no_restart_failpoints(files: usize) -> Vec<String> {
    let mut fps: Vec<String> = ["after-lock", "mid-backup", "after-backup"]
        .map(String::from)
        .to_vec();
    for n in 1..=files {
        fps.push(format!("mid-write#{n}"));
        fps.push(format!("after-rename#{n}"));
    }
    fps.extend(["after-write", "before-finish"].map(String::from));
    fps
}

fn crash_at(root: &Path, args: &[String], failpoint: &str, what: &str) {
    let mut c = irsa(root);
    c.args(args)
        .env("IRSA_AGENT_FAILPOINT", format!("{failpoint}:kill"));
    let out = c.output().unwrap();
    assert_eq!(
        out.status.signal(),
        Some(9),
        "{what}: the run must die by SIGKILL: {:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("failpoint {}", failpoint.split('#').next().unwrap())),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn killed_at_every_failpoint(case: &str, distro: &str) {
    let e = Expect::of(case, &apply_args(ISSUER));
    let mut phases = Vec::new();
    let n = e.files();
    for fp in no_restart_failpoints(n) {
        let what = format!("{case} ({distro}) killed at {fp}");
        let mut args = apply_args(ISSUER);
        args.push("--no-restart".into());
        // Apply again after the crash, then roll back.
        let dir = copy_fixture(case);
        let before = node_files(dir.path());
        crash_at(dir.path(), &args, &fp, &what);
        let phase = assert_old_or_new(dir.path(), &before, &e, &what);
        phases.push((fp.clone(), phase));
        converge_and_roll_back(dir.path(), &before, &e, &what);
        // Roll back straight after the crash.
        let dir = copy_fixture(case);
        crash_at(dir.path(), &args, &fp, &what);
        assert_eq!(assert_old_or_new(dir.path(), &before, &e, &what), phase);
        roll_back_after_crash(dir.path(), &before, &e, &what);
    }
    // The failpoints are where they say they are.
    for (fp, phase) in &phases {
        let want = match fp.as_str() {
            "after-lock" | "mid-backup" | "after-backup" => Phase::Before,
            "after-write" | "before-finish" => Phase::After,
            f if f == format!("after-rename#{n}") => Phase::After,
            _ => Phase::During,
        };
        assert_eq!(*phase, want, "{case}: killed at {fp}");
    }
}

#[test]
fn killed_at_every_failpoint_kubeadm() {
    killed_at_every_failpoint("kubeadm-default", "kubeadm");
}

#[test]
fn killed_at_every_failpoint_k3s() {
    killed_at_every_failpoint("k3s-default", "k3s");
}

#[test]
fn killed_at_every_failpoint_other_distros() {
    for (case, distro) in &CASES[2..] {
        killed_at_every_failpoint(case, distro);
    }
}
