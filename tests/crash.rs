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

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::sim_node::{irsa, SimNode};
use support::{
    apiserver_args, copy_fixture_in, fixture_path, json_of, node_files, sa_settings, snapshot, Tree,
};

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

fn is_temp(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(".irsa-agent-"))
}

/// What a clean apply does to a fixture.
struct Expect {
    distro: &'static str,
    old: Tree,
    new: Tree,
    /// The files a clean apply changes (created or modified).
    changed: Vec<PathBuf>,
}

impl Expect {
    fn of(case: &str, args: &[String]) -> Expect {
        let distro = CASES.iter().find(|(c, _)| *c == case).unwrap().1;
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
                created_dir
                    || new
                        .get(p)
                        .is_some_and(|(b, m)| !b.is_empty() && m & 0o170000 == 0o100000),
                "{case}: {} is a non-empty regular file after a clean run",
                p.display()
            );
        }
        Expect {
            distro,
            old,
            new,
            changed,
        }
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
    assert_keys_exist(root, e.distro, what);
    match (new, temps) {
        (0, 0) => Phase::Before,
        (n, 0) if n == files => Phase::After,
        _ => Phase::During,
    }
}

/// Every key file the configuration names exists (read by the independent
/// reader in tests/support): the apiserver could start on it.
fn assert_keys_exist(root: &Path, distro: &str, what: &str) {
    let args = apiserver_args(root, distro).unwrap_or_else(|e| panic!("{what}: {e:#}"));
    let s = sa_settings(&args).unwrap_or_else(|e| panic!("{what}: {e:#}"));
    for k in s.key_files.iter().chain(&s.signing_key_file) {
        assert!(
            root.join(k.trim_start_matches('/')).is_file(),
            "{what}: the configuration names {k}, which does not exist"
        );
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
    let incomplete: Vec<_> = std::fs::read_dir(root.join(BACKUPS))
        .map(|rd| {
            rd.map(|e| e.unwrap().path())
                .filter(|p| !p.join("index.json").is_file())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        incomplete.is_empty(),
        "{what}: an incomplete backup is left: {incomplete:?}"
    );
}

/// The indexes of the complete backups, oldest first.
fn backups(root: &Path) -> Vec<Value> {
    let Ok(rd) = std::fs::read_dir(root.join(BACKUPS)) else {
        return vec![];
    };
    let mut out: Vec<Value> = rd
        .map(|e| e.unwrap().path())
        // A staging directory (".partial-ID") is no backup, even with an index.
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
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
    if crashed.is_some() {
        // --check says so, and changes nothing.
        let crash_state = snapshot(root);
        let mut c = irsa(root);
        c.args(apply_args(ISSUER)).arg("--check");
        let (v, code) = run(c);
        assert_eq!(code, 0, "{what}: --check: {v}");
        assert!(
            v["warnings"]
                .to_string()
                .contains("an earlier apply was interrupted"),
            "{what}: {v}"
        );
        assert_eq!(
            snapshot(root),
            crash_state,
            "{what}: --check wrote something"
        );
    }
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
    assert_tree(
        root,
        before,
        &format!("{what}: rolled back after the crash"),
    );
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
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "failpoint {}",
            failpoint.split('#').next().unwrap()
        )),
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

// ---------------------------------------------------------------------------
// Around the restart: against the apiserver SIMULATOR (tests/support/sim)
// ---------------------------------------------------------------------------

impl SimNode {
    /// After a crash: apply converges, restarts and verifies; rollback
    /// restores the original bytes and the apiserver runs them again.
    fn converge_and_roll_back(
        &self,
        before: &Tree,
        old_issuers: &[String],
        e: &Expect,
        what: &str,
    ) {
        let crashed = pending_backup(self.root());
        let mut c = self.irsa();
        c.args(apply_args(ISSUER)).args(["--timeout", "20"]);
        let (v, code) = run(c);
        assert_eq!(code, 0, "{what}: apply after the crash: {v}");
        let crashed: Vec<String> = crashed.into_iter().collect();
        assert_eq!(v["recovered"], serde_json::json!(crashed), "{what}: {v}");
        assert_eq!(v["restarted"], true, "{what}: {v}");
        assert_eq!(v["verified"]["iss"], ISSUER, "{what}: {v}");
        assert_eq!(v["old_token_authenticated"], true, "{what}: {v}");
        assert_tree(self.root(), &e.after(before), &format!("{what}: converged"));
        assert_eq!(self.running_issuers()[0], ISSUER, "{what}");

        let (v, code) = run({
            let mut c = self.irsa();
            c.args(["rollback", "--timeout", "20"]);
            c
        });
        assert_eq!(code, 0, "{what}: rollback: {v}");
        assert_tree(self.root(), before, &format!("{what}: rolled back"));
        assert_eq!(self.running_issuers(), old_issuers, "{what}: rolled back");
    }
}

fn killed_around_the_restart(case: &str, distro: &str) {
    let e = Expect::of(case, &apply_args(ISSUER));
    for fp in [
        "after-write",
        "after-restart",
        "during-verify",
        "before-finish",
    ] {
        let what = format!("{case} ({distro}, simulator) killed at {fp}");
        let node = SimNode::start(case, distro);
        let old_issuers = node.running_issuers();
        let before = node_files(node.root());
        let mut args = apply_args(ISSUER);
        args.extend(["--timeout".into(), "20".into()]);
        let mut c = node.irsa();
        c.args(&args)
            .env("IRSA_AGENT_FAILPOINT", format!("{fp}:kill"));
        let out = c.output().unwrap();
        assert_eq!(out.status.signal(), Some(9), "{what}: {out:?}");
        assert_eq!(
            assert_old_or_new(node.root(), &before, &e, &what),
            Phase::After,
            "{what}"
        );
        node.converge_and_roll_back(&before, &old_issuers, &e, &what);
    }
}

#[test]
fn killed_around_the_restart_kubeadm_simulator() {
    killed_around_the_restart("kubeadm-default", "kubeadm");
}

#[test]
fn killed_around_the_restart_k3s_simulator() {
    killed_around_the_restart("k3s-default", "k3s");
}

// ---------------------------------------------------------------------------
// SIGKILL at random moments
// ---------------------------------------------------------------------------

/// SplitMix64: a small deterministic generator, enough to replay a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// `CRASH_SEED=N` replays a run (the same cases, delays and failpoint
/// settings; the moments the kernel schedules are not replayable).
fn seed() -> u64 {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("CRASH_SEED={seed}");
    seed
}

/// Widens the write window in half of the runs: each step of the write
/// sleeps a little, so a random kill lands inside it more often.
const SLOW_WRITES: &str = "after-backup:delay=10,mid-write:delay=10,after-rename:delay=15";

/// How long a clean run takes, with or without slow writes (the fastest of three).
fn time_clean_run(case: &str, env: Option<&str>, extra: &[&str]) -> Duration {
    (0..3)
        .map(|_| {
            let dir = copy_fixture(case);
            let mut c = irsa(dir.path());
            c.args(apply_args(ISSUER)).args(extra);
            if let Some(v) = env {
                c.env("IRSA_AGENT_FAILPOINT", v);
            }
            let start = Instant::now();
            assert!(c.output().unwrap().status.success(), "{case}");
            start.elapsed()
        })
        .min()
        .unwrap()
}

#[derive(Default, Debug)]
struct Tally {
    before: usize,
    during: usize,
    after: usize,
    finished: usize,
    recovered: usize,
}

/// Spawn `c`, SIGKILL it after `delay` unless it finished; Some(()) when
/// the kill landed, None when the run had finished (successfully).
fn kill_after(mut c: Command, delay: Duration, what: &str) -> Option<()> {
    let mut child = c
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let _ = child.kill();
    let status = child.wait().unwrap();
    match status.signal() {
        Some(9) => Some(()),
        _ => {
            assert!(
                status.success(),
                "{what}: the run failed by itself: {status:?}"
            );
            None
        }
    }
}

#[test]
fn sigkill_at_random_moments_no_restart() {
    const RUNS: usize = 210;
    let seed = seed();
    let cases: Vec<(&str, Expect, Duration, Duration)> = CASES
        .iter()
        .map(|(case, _)| {
            let e = Expect::of(case, &apply_args(ISSUER));
            let plain = time_clean_run(case, None, &["--no-restart"]);
            let slow = time_clean_run(case, Some(SLOW_WRITES), &["--no-restart"]);
            (*case, e, plain, slow)
        })
        .collect();
    let next = AtomicUsize::new(0);
    let tally = Mutex::new(Tally::default());
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= RUNS {
                    break;
                }
                let mut rng = Rng(seed ^ (i as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93));
                let (case, e, plain, slow) = &cases[rng.below(cases.len() as u64) as usize];
                let slow_writes = rng.below(2) == 1;
                let span = if slow_writes { *slow } else { *plain };
                // Up to the end of a clean run (runs under load take longer).
                let delay = Duration::from_micros(rng.below(span.as_micros() as u64));
                let what = format!(
                    "run {i} of CRASH_SEED={seed}: {case} killed after {delay:?}{}",
                    if slow_writes { " with slow writes" } else { "" }
                );
                let dir = copy_fixture(case);
                let before = node_files(dir.path());
                let mut c = irsa(dir.path());
                c.args(apply_args(ISSUER)).arg("--no-restart");
                if slow_writes {
                    c.env("IRSA_AGENT_FAILPOINT", SLOW_WRITES);
                }
                let killed = kill_after(c, delay, &what);
                let phase = killed.map(|()| assert_old_or_new(dir.path(), &before, e, &what));
                if killed.is_none() {
                    assert_tree(dir.path(), &e.after(&before), &format!("{what}: finished"));
                }
                let pending = pending_backup(dir.path()).is_some();
                converge_and_roll_back(dir.path(), &before, e, &what);
                let mut t = tally.lock().unwrap();
                t.recovered += usize::from(pending);
                match phase {
                    None => t.finished += 1,
                    Some(Phase::Before) => t.before += 1,
                    Some(Phase::During) => t.during += 1,
                    Some(Phase::After) => t.after += 1,
                }
            });
        }
    });
    let t = tally.into_inner().unwrap();
    eprintln!(
        "{RUNS} runs in {:?} (CRASH_SEED={seed}): killed before the writes {}, during {}, after {} \
         (interrupted applies undone by the next: {}); finished before the kill {}",
        started.elapsed(),
        t.before,
        t.during,
        t.after,
        t.recovered,
        t.finished
    );
    assert_eq!(t.before + t.during + t.after + t.finished, RUNS);
    // The loop must hit the interesting window, not only the edges.
    assert!(t.during >= 10, "too few kills during the writes: {t:?}");
    assert!(t.before >= 10 && t.after + t.finished >= 10, "{t:?}");
}

#[test]
fn sigkill_at_random_moments_with_the_simulator() {
    const RUNS: usize = 8;
    let seed = seed();
    let (case, distro) = ("k3s-default", "k3s");
    let e = Expect::of(case, &apply_args(ISSUER));
    let span = {
        let node = SimNode::start(case, distro);
        let mut c = node.irsa();
        c.args(apply_args(ISSUER)).args(["--timeout", "20"]);
        let start = Instant::now();
        let (v, code) = run(c);
        assert_eq!(code, 0, "{v}");
        start.elapsed()
    };
    let mut phases = Vec::new();
    for i in 0..RUNS {
        let mut rng = Rng(seed ^ (i as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93));
        // Every other run aims at the first quarter, where the writes are,
        // and makes them slow.
        let window = span.as_micros() as u64 / if i % 2 == 0 { 1 } else { 4 };
        let delay = Duration::from_micros(rng.below(window));
        let what = format!("simulator run {i} of CRASH_SEED={seed}: {case} killed after {delay:?}");
        let node = SimNode::start(case, distro);
        let old_issuers = node.running_issuers();
        let before = node_files(node.root());
        let mut c = node.irsa();
        c.args(apply_args(ISSUER)).args(["--timeout", "20"]);
        if i % 2 == 1 {
            c.env("IRSA_AGENT_FAILPOINT", SLOW_WRITES);
        }
        let phase = kill_after(c, delay, &what)
            .map(|()| assert_old_or_new(node.root(), &before, &e, &what));
        phases.push(phase);
        if phase.is_none() {
            assert_tree(node.root(), &e.after(&before), &format!("{what}: finished"));
            continue; // converged and verified already
        }
        node.converge_and_roll_back(&before, &old_issuers, &e, &what);
    }
    eprintln!("simulator runs (CRASH_SEED={seed}): {phases:?} (None: finished before the kill)");
}

// ---------------------------------------------------------------------------
// Two runs at once
// ---------------------------------------------------------------------------

const ISSUER_B: &str = "https://oidc.example.com/other";

fn lock_holder(root: &Path) -> Option<u32> {
    std::fs::read_to_string(root.join("run/irsa-agent/apply.lock"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Wait until `f` holds (at most 20 s).
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The files after `apply A` then `apply B` on a fresh copy of `case`.
fn sequence(case: &str, issuers: &[&str]) -> Tree {
    let dir = copy_fixture(case);
    for i in issuers {
        let mut c = irsa(dir.path());
        c.args(apply_args(i)).arg("--no-restart");
        assert_eq!(run(c).1, 0);
    }
    node_files(dir.path())
}

#[test]
fn a_second_run_fails_fast_naming_the_first_and_changes_nothing() {
    let case = "kubeadm-default";
    let e = Expect::of(case, &apply_args(ISSUER));
    let dir = copy_fixture(case);
    let root = dir.path();
    let before = node_files(root);
    // A holds the lock with its first file written and the config not yet.
    let mut a = irsa(root)
        .args(apply_args(ISSUER))
        .arg("--no-restart")
        .env("IRSA_AGENT_FAILPOINT", "after-rename#1:delay=3000")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Keys are written first, the private key first of all.
    let first = e
        .changed
        .iter()
        .find(|p| p.extension().is_some_and(|x| x == "key"))
        .unwrap()
        .clone();
    wait_until("A wrote its first file", || {
        node_files(root).get(&first) == e.new.get(&first)
    });
    assert_eq!(lock_holder(root), Some(a.id()), "A's pid in the lock file");
    let midway = node_files(root);

    for args in [
        apply_args(ISSUER_B),
        apply_args(ISSUER),
        vec!["rollback".into()],
    ] {
        let mut b = irsa(root);
        b.args(&args).arg("--no-restart");
        let (v, code) = run(b);
        assert_eq!(code, 1, "{args:?}: {v}");
        assert!(
            a.try_wait().unwrap().is_none(),
            "{args:?} failed fast, it did not wait for A"
        );
        let msg = v["error"].as_str().unwrap();
        assert!(
            msg.contains(&format!("another irsa-agent run (pid {})", a.id()))
                && msg.contains("/run/irsa-agent/apply.lock")
                && msg.contains("nothing was changed"),
            "{args:?}: {msg}"
        );
        assert_tree(root, &midway, &format!("{args:?} changed nothing"));
    }
    let out = a.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(json_of(&out)["recovered"], serde_json::json!([]));
    assert_tree(root, &e.after(&before), "exactly A's result");

    // B after A: B's change on top of A's, as if run one after the other.
    let mut b = irsa(root);
    b.args(apply_args(ISSUER_B)).arg("--no-restart");
    assert_eq!(run(b).1, 0);
    assert_tree(root, &sequence(case, &[ISSUER, ISSUER_B]), "A then B");
}

#[test]
fn runs_started_together_leave_one_runs_result() {
    let mut conflicts = 0;
    for (case, _) in &CASES[..2] {
        let results = [
            sequence(case, &[ISSUER]),
            sequence(case, &[ISSUER_B]),
            sequence(case, &[ISSUER, ISSUER_B]),
            sequence(case, &[ISSUER_B, ISSUER]),
        ];
        for round in 0..5 {
            let what = format!("{case} round {round}");
            let dir = copy_fixture(case);
            let root = dir.path();
            let spawn = |issuer: &str| {
                irsa(root)
                    .args(apply_args(issuer))
                    .arg("--no-restart")
                    .env("IRSA_AGENT_FAILPOINT", SLOW_WRITES)
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap()
            };
            let (a, b) = (spawn(ISSUER), spawn(ISSUER_B));
            let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
            let mut ok = 0;
            for out in &outs {
                let v = json_of(out);
                match out.status.code() {
                    Some(0) => ok += 1,
                    Some(1) => {
                        let msg = v["error"].as_str().unwrap();
                        assert!(
                            msg.contains("another irsa-agent run (pid ")
                                || msg.contains("changed while irsa-agent was planning"),
                            "{what}: {msg}"
                        );
                        conflicts += 1;
                    }
                    _ => panic!("{what}: {out:?}"),
                }
            }
            assert!(ok >= 1, "{what}: one of them succeeds");
            let now = node_files(root);
            assert!(
                results.contains(&now),
                "{what}: the files are not the result of A, B, A then B or B then A"
            );
            if ok == 1 {
                assert!(
                    results[..2].contains(&now),
                    "{what}: one failed, so the files are the other's result"
                );
            }
        }
    }
    eprintln!("runs started together: {conflicts} of 20 lost the race");
    assert!(conflicts >= 1, "the runs never overlapped");
}

#[test]
fn a_lock_left_by_a_killed_run_blocks_nothing() {
    let case = "k3s-default";
    let e = Expect::of(case, &apply_args(ISSUER));
    // Killed by itself while holding the lock, before writing anything.
    let dir = copy_fixture(case);
    let root = dir.path();
    let before = node_files(root);
    let mut args = apply_args(ISSUER);
    args.push("--no-restart".into());
    crash_at(root, &args, "after-lock", "after-lock");
    assert!(
        lock_holder(root).is_some(),
        "the dead run's pid is still in the file"
    );
    let start = Instant::now();
    let mut c = irsa(root);
    c.args(apply_args(ISSUER)).arg("--no-restart");
    let (v, code) = run(c);
    assert_eq!(code, 0, "{v}");
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_tree(root, &e.after(&before), "converged");

    // Killed from outside while it sleeps holding the lock mid-write.
    let dir = copy_fixture(case);
    let root = dir.path();
    let mut a = irsa(root)
        .args(apply_args(ISSUER))
        .arg("--no-restart")
        .env("IRSA_AGENT_FAILPOINT", "after-rename#1:delay=20000")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = a.id();
    wait_until("A holds the lock", || {
        lock_holder(root) == Some(pid) && pending_backup(root).is_some()
    });
    a.kill().unwrap();
    assert_eq!(a.wait().unwrap().signal(), Some(9));
    let mut c = irsa(root);
    c.args(apply_args(ISSUER)).arg("--no-restart");
    let (v, code) = run(c);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["recovered"].as_array().unwrap().len(), 1, "{v}");
    assert_tree(root, &e.after(&before), "converged after the killed run");
    let mut c = irsa(root);
    c.args(["rollback", "--no-restart"]);
    assert_eq!(run(c).1, 0);
    assert_tree(root, &before, "rolled back");
}

// ---------------------------------------------------------------------------
// Killed while putting files back
// ---------------------------------------------------------------------------

#[test]
fn killed_while_apply_rolls_itself_back_k3s_simulator() {
    let (case, distro) = ("k3s-default", "k3s");
    let e = Expect::of(case, &apply_args(ISSUER));
    // The apply writes 3 files; its rollback removes the drop-in first,
    // then the public key, then the private key: killed after the last, the
    // files are all old but the apiserver still runs the new ones.
    for n in 1..=3 {
        let what = format!("{case} killed at mid-restore#{n} of apply's own rollback");
        let node = SimNode::start(case, distro);
        let old_issuers = node.running_issuers();
        let before = node_files(node.root());
        node.cluster
            .inject(support::sim::Fault::WrongIssuerOnNextStart(
                "https://wrong.example.com".into(),
            ));
        let mut c = node.irsa();
        c.args(apply_args(ISSUER))
            .args(["--timeout", "20"])
            .env("IRSA_AGENT_FAILPOINT", format!("mid-restore#{n}:kill"));
        let out = c.output().unwrap();
        assert_eq!(out.status.signal(), Some(9), "{what}: {out:?}");
        let want = if n == 3 { Phase::Before } else { Phase::During };
        assert_eq!(
            assert_old_or_new(node.root(), &before, &e, &what),
            want,
            "{what}"
        );
        assert!(
            pending_backup(node.root()).is_some(),
            "{what}: still pending"
        );
        node.converge_and_roll_back(&before, &old_issuers, &e, &what);
    }
}

#[test]
fn killed_while_rolling_back_then_rolled_back_again() {
    for (case, _) in &CASES[..2] {
        let e = Expect::of(case, &apply_args(ISSUER));
        for n in 1..=2 {
            let what = format!("{case}: rollback killed at mid-restore#{n}");
            let dir = copy_fixture(case);
            let root = dir.path();
            let before = node_files(root);
            let mut c = irsa(root);
            c.args(apply_args(ISSUER)).arg("--no-restart");
            assert_eq!(run(c).1, 0, "{what}");
            let mut c = irsa(root);
            c.args(["rollback", "--no-restart"])
                .env("IRSA_AGENT_FAILPOINT", format!("mid-restore#{n}:kill"));
            let out = c.output().unwrap();
            assert_eq!(out.status.signal(), Some(9), "{what}: {out:?}");
            assert_eq!(
                assert_old_or_new(root, &before, &e, &what),
                Phase::During,
                "{what}"
            );
            // Run it again: the original bytes.
            let mut c = irsa(root);
            c.args(["rollback", "--no-restart"]);
            let (v, code) = run(c);
            assert_eq!(code, 0, "{what}: {v}");
            assert_tree(root, &before, &what);
            // And apply works as on a fresh node.
            let mut c = irsa(root);
            c.args(apply_args(ISSUER)).arg("--no-restart");
            let (v, code) = run(c);
            assert_eq!(
                (code, &v["recovered"]),
                (0, &serde_json::json!([])),
                "{what}: {v}"
            );
            assert_tree(root, &e.after(&before), &what);
        }
    }
}

#[test]
fn a_bad_failpoint_setting_is_refused_and_changes_nothing() {
    let dir = copy_fixture("kubeadm-default");
    let root = dir.path();
    let before = node_files(root);
    let mut c = irsa(root);
    c.args(apply_args(ISSUER))
        .arg("--no-restart")
        .env("IRSA_AGENT_FAILPOINT", "after-wirte:kill");
    let (v, code) = run(c);
    assert_eq!(code, 1, "{v}");
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains("IRSA_AGENT_FAILPOINT: unknown failpoint \"after-wirte\""),
        "{msg}"
    );
    assert_tree(root, &before, "nothing written");
}
