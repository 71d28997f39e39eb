//! The whole loop on the README's example node, against the SIMULATED control
//! plane ([`super::sim`]), as a newcomer sees it: `cargo run --example loop`
//! (`examples/loop.rs`) prints it, `tests/demo.rs` checks it.
//!
//! On a copy of `tests/fixtures/kubeadm-default` it runs the real irsa-agent
//! binary three times:
//! 1. `apply --issuer <new>`: write, restart (the simulated kubelet replaces
//!    the static pod), wait, verify a fresh token, old token still accepted;
//! 2. a change that fails on purpose (`apply --generate-key` while the
//!    simulated apiserver cannot read the new key file): it rolls back, exit 3;
//! 3. `rollback`: the node's files are the original ones again.
//!
//! After each run it checks, through the simulator and the files (never
//! through irsa-agent's own word), that the step did what it says, and stops
//! with an error naming the step otherwise. Every line it prints itself starts
//! with [`MARK`]; irsa-agent's own output is indented by four spaces.
//! Everything it starts lives in temp dirs and is stopped and removed when
//! [`run`] returns, also on failure or interruption ([`INTERRUPTED`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

use super::sim::{Cluster, Fault, Options};
use super::tree::{copy_fixture, node_files, Tree};

/// The start of every line the demo prints itself.
pub const MARK: &str = "[simulated apiserver]";
/// Indent of irsa-agent's own output lines.
pub const TOOL_INDENT: &str = "    ";
/// The README's example node.
pub const FIXTURE: &str = "kubeadm-default";
/// The README's issuer (the change that works).
pub const ISSUER: &str = "https://oidc.example.com/my-cluster";
/// The issuer of the change that fails on purpose.
pub const FAILING_ISSUER: &str = "https://oidc.example.com/my-cluster-v2";
/// Where apply installs generated keys on kubeadm (node path prefix).
const NEW_KEYS: &str = "/etc/kubernetes/pki/irsa-agent-";

/// Set (by a signal handler) to stop the demo: the running irsa-agent is
/// killed, and everything is cleaned up.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// How to run the demo.
pub struct Opts {
    /// The irsa-agent binary.
    pub bin: PathBuf,
    /// Extra environment for irsa-agent (tests: failpoints).
    pub env: Vec<(String, String)>,
}

/// One irsa-agent run.
#[derive(Debug, Clone)]
pub struct Step {
    /// The irsa-agent arguments after `--root DIR`.
    pub args: Vec<String>,
    pub code: i32,
    /// Its stdout and stderr lines, in the order they arrived.
    pub output: Vec<String>,
    /// Why the simulated apiserver refused to start, each time it did while
    /// irsa-agent ran (sampled every 100 ms).
    pub refusals: Vec<String>,
}

/// What a demo run did.
#[derive(Debug, Default)]
pub struct Report {
    pub steps: Vec<Step>,
    /// Every line printed, as printed.
    pub transcript: Vec<String>,
    /// The node copy (removed when `run` returns).
    pub root: Option<PathBuf>,
    /// The simulator's own temp dir (removed when `run` returns).
    pub sim_dir: Option<PathBuf>,
}

/// Prints to `out` and keeps the transcript.
struct Printer<'a> {
    out: &'a mut dyn Write,
    report: Report,
}

impl Printer<'_> {
    fn line(&mut self, line: String) {
        let _ = writeln!(self.out, "{line}");
        let _ = self.out.flush();
        self.report.transcript.push(line);
    }

    /// A line of the demo's own.
    fn say(&mut self, text: impl AsRef<str>) {
        self.line(format!("{MARK} {}", text.as_ref()).trim_end().to_string());
    }

    /// A line of irsa-agent's output.
    fn tool(&mut self, text: &str) {
        self.line(format!("{TOOL_INDENT}{text}"));
    }
}

/// Run the demo, printing to `out`. `Err` (after cleaning up) names the step
/// that did not do what it should; [`run_report`] also returns the report
/// of a failed run.
pub fn run(opts: &Opts, out: &mut dyn Write) -> Result<Report> {
    let (report, result) = run_report(opts, out);
    result.map(|()| report)
}

/// [`run`], returning the report in every outcome.
pub fn run_report(opts: &Opts, out: &mut dyn Write) -> (Report, Result<()>) {
    let mut p = Printer {
        out,
        report: Report::default(),
    };
    let result = the_loop(opts, &mut p);
    if let Err(e) = &result {
        p.say(format!("demo FAILED: {e:#}"));
    }
    p.say("cleaned up: the simulated apiserver and kubelet are stopped, the node copy is removed");
    (p.report, result)
}

fn the_loop(opts: &Opts, p: &mut Printer) -> Result<()> {
    check_interrupted()?;
    ensure!(
        opts.bin.is_file(),
        "no irsa-agent binary at {}",
        opts.bin.display()
    );
    // Dropped in reverse order on every return: the simulator first, then the copy.
    let dir = copy_fixture(FIXTURE);
    let root = dir.path().to_path_buf();
    p.report.root = Some(root.clone());
    // git cannot store 0600: make the copy's signing key private, as on a real node.
    std::fs::set_permissions(
        root.join("etc/kubernetes/pki/sa.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .context("making the copy's etc/kubernetes/pki/sa.key 0600")?;
    p.say(format!(
        "copied the example node tests/fixtures/{FIXTURE} (kubeadm) to {}",
        root.display()
    ));

    let cluster = Cluster::start_with(
        "kubeadm",
        &root,
        Options {
            startup_delay: Duration::from_millis(300),
        },
    )
    .context("starting the simulated apiserver on the node copy")?;
    p.report.sim_dir = Some(cluster.work_dir().to_path_buf());
    p.say(format!(
        "started a simulated kube-apiserver at {} from the copy's etc/kubernetes/manifests/kube-apiserver.yaml,",
        cluster.url()
    ));
    p.say("  and a simulated kubelet that replaces it when that manifest changes; the copy's");
    p.say("  etc/kubernetes/admin.conf now points at it (loopback only, nothing else is touched)");
    let original_issuers = running_issuers(&cluster)?;
    p.say(format!(
        "running with issuer(s): {}",
        original_issuers.join(", ")
    ));
    let original = node_files(&root);
    let old_token = cluster
        .token("default", "default", &[])
        .context("taking a token before any change")?;
    p.say(format!(
        "took a token for default/default before any change (iss {})",
        claim(&old_token, "iss")?
    ));

    // 1. The change that works.
    p.say("");
    p.say("STEP 1: a new issuer: write, restart, wait, verify a fresh token, check the old one");
    let generation = cluster.status().generation;
    let step = irsa(
        opts,
        p,
        &cluster,
        &root,
        &["apply", "--issuer", ISSUER, "--timeout", "30"],
    )?;
    expect_code(&step, 0, "STEP 1 (apply)")?;
    let after_apply = running_issuers(&cluster)?;
    let mut want = vec![ISSUER.to_string()];
    want.extend(original_issuers.iter().cloned());
    ensure!(
        cluster.status().generation > generation,
        "STEP 1: the simulated apiserver was not restarted"
    );
    ensure!(
        after_apply == want,
        "STEP 1: the simulated apiserver runs issuers {after_apply:?}, not {want:?}"
    );
    p.say(format!(
        "the simulated kubelet restarted the apiserver (start #{}); it runs issuers: {}",
        cluster.status().generation,
        after_apply.join(", ")
    ));
    let fresh = cluster
        .token("default", "default", &["sts.amazonaws.com"])
        .context("STEP 1: taking a fresh token")?;
    ensure!(
        claim(&fresh, "iss")? == ISSUER,
        "STEP 1: a fresh token has iss {}, not {ISSUER}",
        claim(&fresh, "iss")?
    );
    ensure!(
        cluster.review(&old_token)?,
        "STEP 1: the token taken before the change no longer authenticates"
    );
    p.say(format!(
        "checked: a fresh token has iss {ISSUER}; the token taken before the change still authenticates"
    ));
    let changed = node_files(&root);

    // 2. A change that fails on purpose and rolls back.
    p.say("");
    p.say("STEP 2: a change that fails on purpose, and rolls back by itself");
    cluster.inject(Fault::UnreadablePrefix(NEW_KEYS.into()));
    p.say(format!(
        "from now on the simulated apiserver cannot read {NEW_KEYS}* (as when a security policy"
    ));
    p.say("  denies it): it will refuse to start with the key apply --generate-key installs there");
    let generation = cluster.status().generation;
    let step = irsa(
        opts,
        p,
        &cluster,
        &root,
        &[
            "apply",
            "--issuer",
            FAILING_ISSUER,
            "--generate-key",
            "--key-type",
            "ec-p256",
            "--timeout",
            "5",
        ],
    )?;
    expect_code(&step, 3, "STEP 2 (the failing apply)")?;
    ensure!(
        !step.refusals.is_empty(),
        "STEP 2: the simulated apiserver never refused to start"
    );
    for why in &step.refusals {
        p.say(format!(
            "while it ran, the simulated apiserver refused to start: {why}"
        ));
    }
    cluster
        .wait_ready(Duration::from_secs(30))
        .context("STEP 2: the simulated apiserver is not running again after the rollback")?;
    cluster.clear_faults();
    let tried = cluster.status().generation - generation;
    ensure!(
        tried >= 2,
        "STEP 2: the simulated apiserver was started {tried} time(s), not at least twice (the new files, then the old ones)"
    );
    let now = running_issuers(&cluster)?;
    ensure!(
        now == after_apply,
        "STEP 2: the simulated apiserver runs issuers {now:?} after the rollback, not {after_apply:?}"
    );
    same_files(&changed, &node_files(&root), "STEP 2: after the rollback")?;
    p.say(format!(
        "checked: after the rollback the simulated apiserver started again on the old files ({tried} starts);"
    ));
    p.say(format!(
        "  the files are byte for byte as after STEP 1, the generated key is gone, and it runs issuers: {}",
        now.join(", ")
    ));

    // 3. Undo the first change.
    p.say("");
    p.say(
        "STEP 3: rollback: put back the files of the last apply that stayed (STEP 1's) and restart",
    );
    let step = irsa(opts, p, &cluster, &root, &["rollback", "--timeout", "30"])?;
    expect_code(&step, 0, "STEP 3 (rollback)")?;
    let now = running_issuers(&cluster)?;
    ensure!(
        now == original_issuers,
        "STEP 3: the simulated apiserver runs issuers {now:?}, not the original {original_issuers:?}"
    );
    same_files(&original, &node_files(&root), "STEP 3: after rollback")?;
    ensure!(
        cluster.review(&old_token)?,
        "STEP 3: the token taken before any change no longer authenticates"
    );
    p.say(format!(
        "checked: the node's files are the original ones again, the simulated apiserver runs issuer(s) {},",
        now.join(", ")
    ));
    p.say("  and the token taken before any change still authenticates");
    p.say("");
    p.say("the loop is done: on a real control plane, drop --root and run the same commands with sudo");
    drop(cluster);
    drop(dir);
    Ok(())
}

/// Run irsa-agent on the node copy, streaming its output; the exit code.
fn irsa(
    opts: &Opts,
    p: &mut Printer,
    cluster: &Cluster,
    root: &Path,
    args: &[&str],
) -> Result<Step> {
    check_interrupted()?;
    p.say(format!(
        "$ irsa-agent --root {} {}",
        root.display(),
        args.join(" ")
    ));
    let mut cmd = Command::new(&opts.bin);
    cmd.arg("--root")
        .arg(root)
        .args(args)
        .env_remove("DBUS_SYSTEM_BUS_ADDRESS")
        .env_remove("IRSA_AGENT_FAILPOINT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in cluster.env().into_iter().chain(opts.env.iter().cloned()) {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("running {}", opts.bin.display()))?;
    let (tx, rx) = mpsc::channel::<String>();
    let readers: Vec<_> = [
        Box::new(child.stdout.take().expect("piped")) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().expect("piped")),
    ]
    .into_iter()
    .map(|pipe| {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        })
    })
    .collect();
    drop(tx);
    let mut output = Vec::new();
    let mut refusals: Vec<String> = Vec::new();
    loop {
        if let Some(why) = cluster.status().last_start_error {
            if !refusals.contains(&why) {
                refusals.push(why);
            }
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                p.tool(&line);
                output.push(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if INTERRUPTED.load(Ordering::SeqCst) {
                    let _ = child.kill();
                }
            }
        }
    }
    for r in readers {
        let _ = r.join();
    }
    let status = child.wait().context("waiting for irsa-agent")?;
    check_interrupted()?;
    let code = status
        .code()
        .ok_or_else(|| anyhow!("irsa-agent was killed by a signal ({status})"))?;
    p.say(format!("irsa-agent exited {code} ({})", meaning(code)));
    let step = Step {
        args: args.iter().map(|s| s.to_string()).collect(),
        code,
        output,
        refusals,
    };
    p.report.steps.push(step.clone());
    Ok(step)
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted: stopping");
    }
    Ok(())
}

/// The README's exit code table, in short.
fn meaning(code: i32) -> &'static str {
    match code {
        0 => "success",
        1 => "failed, nothing changed",
        2 => "invalid command line",
        3 => "failed after writing and rolled back: the old configuration runs again",
        4 => "failed and the apiserver is not healthy",
        _ => "unexpected",
    }
}

fn expect_code(step: &Step, want: i32, what: &str) -> Result<()> {
    ensure!(
        step.code == want,
        "{what} exited {}, not {want} ({})",
        step.code,
        meaning(want)
    );
    Ok(())
}

/// The issuers the simulated apiserver runs with now.
fn running_issuers(cluster: &Cluster) -> Result<Vec<String>> {
    let s = cluster.status();
    if !s.running {
        bail!(
            "the simulated apiserver is not running (last start error: {})",
            s.last_start_error.as_deref().unwrap_or("none")
        );
    }
    Ok(s.settings
        .ok_or_else(|| anyhow!("the simulated apiserver runs without settings"))?
        .issuers)
}

/// A string claim of a JWT, decoded here.
fn claim(token: &str, name: &str) -> Result<String> {
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| anyhow!("a token without a payload"))?;
    let v: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload)?)?;
    v[name]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("a token without a string {name:?} claim"))
}

/// `Err` naming the node paths that differ.
fn same_files(want: &Tree, got: &Tree, what: &str) -> Result<()> {
    let differ: Vec<_> = want
        .keys()
        .chain(got.keys())
        .filter(|k| want.get(*k) != got.get(*k))
        .map(|k| k.display().to_string())
        .collect();
    ensure!(differ.is_empty(), "{what}, these files differ: {differ:?}");
    Ok(())
}
