//! Termination signals and hangs during `apply` (src/signals.rs, the
//! deadlines of src/live.rs and src/system/systemd.rs):
//! - SIGTERM, SIGINT or SIGHUP at each step boundary after the write (the run
//!   paused at a failpoint with `:pause`) ends rolled back, against the
//!   apiserver SIMULATOR and with `--no-restart`; before the first write it
//!   ends with nothing changed;
//! - a second signal stops at once, leaving the backup pending, and the next
//!   apply undoes it first and converges;
//! - a signal during a wait (a restart systemd never answers) is noticed at
//!   once and rolls back;
//! - a RestartUnit systemd never answers ends at the run's deadline
//!   (`--timeout`) with a rollback.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use support::sim::Fault;
use support::sim_node::{irsa, SimNode};
use support::{copy_fixture, json_of, node_files, Tree};

const ISSUER: &str = "https://oidc.example.com/signals";
const BACKUPS: &str = "var/lib/irsa-agent/backups";

/// A run in progress whose stderr is read line by line.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Vec<String>,
}

impl Running {
    fn spawn(mut c: Command) -> Running {
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            stderr: Vec::new(),
        }
    }

    /// Wait (at most 60 s) for a stderr line containing `needle`.
    fn wait_for(&mut self, needle: &str) {
        let end = Instant::now() + Duration::from_secs(60);
        while Instant::now() < end {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(l) => {
                    let hit = l.contains(needle);
                    self.stderr.push(l);
                    if hit {
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let _ = self.child.kill();
        panic!(
            "no stderr line with {needle:?}; stderr:\n{}",
            self.stderr.join("\n")
        );
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    /// Wait (at most `limit`) for the end: (JSON on stdout or Null, exit code, stderr).
    fn finish(mut self, limit: Duration) -> (Value, i32, String) {
        let end = Instant::now() + limit;
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!(
                    "the run did not end within {limit:?}; stderr:\n{}",
                    self.stderr.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = self.child.wait_with_output().unwrap();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.stderr.push(l);
        }
        let code = out.status.code().expect("exited, not killed");
        let v = if out.stdout.is_empty() {
            Value::Null
        } else {
            json_of(&out)
        };
        (v, code, self.stderr.join("\n"))
    }
}

fn backups(root: &Path) -> Vec<Value> {
    let Ok(rd) = std::fs::read_dir(root.join(BACKUPS)) else {
        return vec![];
    };
    rd.map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .filter(|p| p.join("index.json").is_file())
        .map(|p| serde_json::from_slice(&std::fs::read(p.join("index.json")).unwrap()).unwrap())
        .collect()
}

fn pending(root: &Path) -> Vec<String> {
    backups(root)
        .into_iter()
        .filter(|b| b["pending"] == true)
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect()
}

fn assert_same(a: &Tree, b: &Tree, what: &str) {
    let differ: Vec<_> = a
        .keys()
        .chain(b.keys())
        .filter(|p| a.get(*p) != b.get(*p))
        .collect();
    assert!(differ.is_empty(), "{what}: these differ: {differ:?}");
}

#[test]
fn a_signal_at_each_step_after_the_write_rolls_back() {
    for (point, sig) in [
        ("after-write", Signal::SIGTERM),
        ("after-restart", Signal::SIGINT),
        ("during-verify", Signal::SIGHUP),
        ("before-finish", Signal::SIGTERM),
    ] {
        let what = format!("{sig} at {point}");
        let node = SimNode::start("k3s-default", "k3s");
        let old = node.running_issuers();
        let before = node_files(node.root());
        let mut c = node.irsa();
        c.args(["apply", "--issuer", ISSUER, "--timeout", "20"])
            .env("IRSA_AGENT_FAILPOINT", format!("{point}:pause"));
        let mut run = Running::spawn(c);
        run.wait_for(&format!("failpoint {point}: paused"));
        run.signal(sig);
        let (v, code, stderr) = run.finish(Duration::from_secs(60));
        assert_eq!(code, 3, "{what}: {v}\n{stderr}");
        assert_eq!(v["rolled_back"], true, "{what}: {v}");
        assert_eq!(v["healthy"], true, "{what}: {v}");
        assert!(
            v["error_chain"]
                .to_string()
                .contains(&format!("interrupted by {sig}")),
            "{what}: {v}"
        );
        assert_same(&node_files(node.root()), &before, &what);
        assert_eq!(node.running_issuers(), old, "{what}");
        assert!(pending(node.root()).is_empty(), "{what}: nothing pending");
    }
}

#[test]
fn a_signal_after_the_write_without_restart_puts_the_files_back() {
    for point in ["after-write", "before-finish"] {
        let dir = copy_fixture("kubeadm-default");
        let before = node_files(dir.path());
        let mut c = irsa(dir.path());
        c.args(["apply", "--issuer", ISSUER, "--no-restart"])
            .env("IRSA_AGENT_FAILPOINT", format!("{point}:pause"));
        let mut run = Running::spawn(c);
        run.wait_for(&format!("failpoint {point}: paused"));
        run.signal(Signal::SIGTERM);
        let (v, code, stderr) = run.finish(Duration::from_secs(30));
        assert_eq!(code, 1, "{point}: {v}\n{stderr}");
        let chain = v["error_chain"].to_string();
        assert!(chain.contains("interrupted by SIGTERM"), "{point}: {v}");
        assert!(
            v["error"].to_string().contains("every file was restored"),
            "{point}: {v}"
        );
        assert_same(&node_files(dir.path()), &before, point);
        assert!(pending(dir.path()).is_empty(), "{point}");
    }
}

#[test]
fn a_signal_before_the_first_write_changes_nothing() {
    let dir = copy_fixture("kubeadm-default");
    let before = node_files(dir.path());
    let mut c = irsa(dir.path());
    c.args(["apply", "--issuer", ISSUER, "--no-restart"])
        .env("IRSA_AGENT_FAILPOINT", "after-lock:pause");
    let mut run = Running::spawn(c);
    run.wait_for("failpoint after-lock: paused");
    run.signal(Signal::SIGINT);
    let (v, code, stderr) = run.finish(Duration::from_secs(30));
    assert_eq!(code, 1, "{v}\n{stderr}");
    assert_eq!(v["changed"], false, "{v}");
    let msg = v["error"].as_str().unwrap();
    assert!(msg.contains("nothing was changed"), "{msg}");
    assert!(
        v["error_chain"]
            .to_string()
            .contains("interrupted by SIGINT"),
        "{v}"
    );
    assert_same(&node_files(dir.path()), &before, "after-lock");
    assert!(backups(dir.path()).is_empty(), "no backup was made");
}

#[test]
fn a_second_signal_stops_at_once_and_the_next_apply_recovers() {
    let node = SimNode::start("k3s-default", "k3s");
    let old = node.running_issuers();
    let before = node_files(node.root());
    let mut c = node.irsa();
    c.args(["apply", "--issuer", ISSUER, "--timeout", "20"])
        .env(
            "IRSA_AGENT_FAILPOINT",
            "after-restart:pause,mid-restore#1:pause",
        );
    let mut run = Running::spawn(c);
    run.wait_for("failpoint after-restart: paused");
    run.signal(Signal::SIGTERM);
    // The rollback starts; stopped inside it by the second signal.
    run.wait_for("failpoint mid-restore: paused");
    run.signal(Signal::SIGTERM);
    let (_, code, stderr) = run.finish(Duration::from_secs(10));
    assert_eq!(code, 128 + 15, "{stderr}");
    assert!(
        stderr.contains("second termination signal (SIGTERM): stopping at once"),
        "{stderr}"
    );
    let left = pending(node.root());
    assert_eq!(left.len(), 1, "the run's backup stays pending: {left:?}");
    assert_ne!(
        node_files(node.root()),
        before,
        "stopped part way through putting the files back"
    );

    // The next apply undoes the interrupted one first, then converges.
    let out = node
        .irsa()
        .args(["apply", "--issuer", ISSUER, "--timeout", "20"])
        .output()
        .unwrap();
    let v = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert_eq!(v["recovered"], serde_json::json!(left), "{v}");
    assert_eq!(v["verified"]["iss"], ISSUER, "{v}");
    assert_eq!(node.running_issuers()[0], ISSUER);
    assert!(pending(node.root()).is_empty());
    // And rollback gets the original bytes back.
    let out = node
        .irsa()
        .args(["rollback", "--timeout", "20"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", json_of(&out));
    assert_same(&node_files(node.root()), &before, "rolled back");
    assert_eq!(node.running_issuers(), old);
}

#[test]
fn a_restart_systemd_never_answers_ends_at_the_deadline_and_rolls_back() {
    let node = SimNode::start("k3s-default", "k3s");
    let old = node.running_issuers();
    let before = node_files(node.root());
    node.cluster.inject(Fault::RestartUnitNeverAnswers);
    let start = Instant::now();
    let mut c = node.irsa();
    c.args(["apply", "--issuer", ISSUER, "--timeout", "4"]);
    let (v, code, stderr) = Running::spawn(c).finish(Duration::from_secs(60));
    let took = start.elapsed();
    assert_eq!(code, 3, "{v}\n{stderr}");
    assert_eq!(v["rolled_back"], true, "{v}");
    assert_eq!(v["healthy"], true, "{v}");
    assert!(
        v["error_chain"]
            .to_string()
            .contains("systemd did not answer RestartUnit k3s.service"),
        "{v}"
    );
    // The forward part ends at --timeout; the rollback has its own budget.
    assert!(took < Duration::from_secs(4 + 4 + 3), "took {took:?}");
    assert_eq!(
        node.cluster.restarts().len(),
        2,
        "the hung restart and the rollback's"
    );
    assert_same(&node_files(node.root()), &before, "rolled back");
    assert_eq!(node.running_issuers(), old);
    assert!(pending(node.root()).is_empty());
}

#[test]
fn a_signal_during_a_wait_is_noticed_at_once() {
    let node = SimNode::start("k3s-default", "k3s");
    let before = node_files(node.root());
    node.cluster.inject(Fault::RestartUnitNeverAnswers);
    let mut c = node.irsa();
    c.args(["apply", "--issuer", ISSUER, "--timeout", "300"]);
    let run = Running::spawn(c);
    // Wait until the run sits in the restart systemd does not answer.
    let end = Instant::now() + Duration::from_secs(60);
    while node.cluster.restarts().is_empty() {
        assert!(Instant::now() < end, "the run never asked for a restart");
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent = Instant::now();
    run.signal(Signal::SIGTERM);
    let (v, code, stderr) = run.finish(Duration::from_secs(60));
    assert_eq!(code, 3, "{v}\n{stderr}");
    assert!(
        v["error_chain"]
            .to_string()
            .contains("interrupted by SIGTERM"),
        "{v}"
    );
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "rolled back {:?} after the signal",
        sent.elapsed()
    );
    assert_same(&node_files(node.root()), &before, "rolled back");
}
