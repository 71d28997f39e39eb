//! The README's third command, `cargo run --example loop`
//! (`tests/support/demo.rs`): the whole loop on a copy of the example node
//! against the SIMULATED apiserver. Runs its core with the built binary and
//! checks what it shows, that it fails when a step of the loop fails, and
//! that it leaves nothing behind.

mod support;

use std::path::Path;
use std::sync::Mutex;

use support::demo::{self, Report, FAILING_ISSUER, ISSUER, MARK, TOOL_INDENT};

/// Both tests run a static-pod simulator, whose stand-in processes every
/// process on the host sees: they take turns.
static PROCESS_TABLE: Mutex<()> = Mutex::new(());

fn opts(env: &[(&str, &str)]) -> demo::Opts {
    demo::Opts {
        bin: env!("CARGO_BIN_EXE_irsa-agent").into(),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// Nothing the demo made is left: the node copy, the simulator's temp dir,
/// and no stand-in `kube-apiserver` process runs from it.
fn assert_cleaned_up(report: &Report) {
    let root = report.root.as_deref().expect("the demo made a node copy");
    let sim = report
        .sim_dir
        .as_deref()
        .expect("the demo started the simulator");
    assert!(!root.exists(), "{} is left behind", root.display());
    assert!(!sim.exists(), "{} is left behind", sim.display());
    let sim = sim.to_string_lossy();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains(sim.as_ref()),
            "process {:?} of the simulator still runs",
            entry.file_name()
        );
    }
}

fn transcript(report: &Report) -> String {
    report.transcript.join("\n")
}

#[test]
fn the_demo_shows_write_restart_verify_a_failing_change_rolled_back_and_rollback() {
    let _turn = PROCESS_TABLE.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = Vec::new();
    let (report, result) = demo::run_report(&opts(&[]), &mut out);
    let text = transcript(&report);
    assert!(result.is_ok(), "the demo failed: {result:?}\n{text}");
    // What it printed is what it recorded.
    assert_eq!(String::from_utf8(out).unwrap(), format!("{text}\n"));

    // The three irsa-agent runs and their exit codes: success, rolled back, success.
    let runs: Vec<_> = report
        .steps
        .iter()
        .map(|s| (s.args[0].as_str(), s.code))
        .collect();
    assert_eq!(
        runs,
        [("apply", 0), ("apply", 3), ("rollback", 0)],
        "{text}"
    );
    assert!(report.steps[0].args.contains(&ISSUER.to_string()));
    assert!(report.steps[1].args.contains(&FAILING_ISSUER.to_string()));
    assert!(
        !report.steps[1].refusals.is_empty(),
        "the failing change must make the simulated apiserver refuse to start"
    );

    // Every line is the demo's own (marked simulated) or irsa-agent's (indented).
    for line in &report.transcript {
        assert!(
            line.starts_with(MARK) || line.starts_with(TOOL_INDENT) || line.is_empty(),
            "unmarked line {line:?}"
        );
    }
    let own: Vec<_> = report
        .transcript
        .iter()
        .filter(|l| l.starts_with(MARK))
        .collect();
    assert!(own.len() > 15, "{text}");

    // irsa-agent's own output is shown, each run's in full.
    for step in &report.steps {
        assert!(!step.output.is_empty(), "{:?} printed nothing", step.args);
        for line in &step.output {
            assert!(
                report.transcript.contains(&format!("{TOOL_INDENT}{line}")),
                "{line:?} of {:?} is not shown",
                step.args
            );
        }
    }

    // The facts it checked, said in the demo's own lines, in order.
    let wants = [
        "STEP 1:",
        "$ irsa-agent --root ",
        "irsa-agent exited 0 (success)",
        &format!("it runs issuers: {ISSUER}, https://kubernetes.default.svc.cluster.local"),
        &format!(
            "a fresh token has iss {ISSUER}; the token taken before the change still authenticates"
        ),
        "STEP 2:",
        "irsa-agent exited 3 (failed after writing and rolled back",
        "the simulated apiserver refused to start:",
        "the files are byte for byte as after STEP 1",
        "STEP 3:",
        "rollback --timeout 30",
        "irsa-agent exited 0 (success)",
        "the node's files are the original ones again",
        "the token taken before any change still authenticates",
        "cleaned up",
    ];
    let mut at = 0;
    for want in wants {
        let found = report.transcript[at..]
            .iter()
            .position(|l| l.starts_with(MARK) && l.contains(want))
            .unwrap_or_else(|| panic!("no line {want:?} after line {at}:\n{text}"));
        at += found + 1;
    }
    assert!(!text.contains("FAILED"), "{text}");
    assert_cleaned_up(&report);
}

#[test]
#[cfg(feature = "failpoints")] // the failing step is a failpoint: test builds only
fn the_demo_fails_and_cleans_up_when_a_step_of_the_loop_fails() {
    let _turn = PROCESS_TABLE.lock().unwrap_or_else(|e| e.into_inner());
    // The first apply fails after the restart (a failpoint of the debug
    // build): it rolls back and exits 3 instead of 0.
    let mut out = Vec::new();
    let (report, result) = demo::run_report(
        &opts(&[("IRSA_AGENT_FAILPOINT", "after-restart")]),
        &mut out,
    );
    let text = transcript(&report);
    let err = format!("{:#}", result.expect_err(&text));
    assert_eq!(err, "STEP 1 (apply) exited 3, not 0 (success)", "{text}");
    assert_eq!(report.steps.len(), 1, "{text}");
    let last: Vec<_> = report.transcript.iter().rev().take(2).collect();
    assert_eq!(
        last[1],
        &format!("{MARK} demo FAILED: STEP 1 (apply) exited 3, not 0 (success)")
    );
    assert!(last[0].starts_with(&format!("{MARK} cleaned up")), "{text}");
    assert_cleaned_up(&report);

    // A missing binary is refused before anything is made.
    let mut bad = opts(&[]);
    bad.bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("no-such-irsa-agent");
    let (report, result) = demo::run_report(&bad, &mut Vec::new());
    assert!(format!("{:#}", result.unwrap_err()).starts_with("no irsa-agent binary at "));
    assert!(report.root.is_none() && report.steps.is_empty());
}

#[test]
fn the_readme_shows_the_demo_as_the_optional_next_command() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme
        .split("### Optional next command: the whole loop")
        .nth(1)
        .expect("README: the optional next command's section");
    let section = section.split("\n## ").next().unwrap();
    assert!(section.contains("```sh\ncargo run --example loop\n```"));
    assert!(Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/loop.rs")
        .is_file());
    // Its sample output: the demo's own lines carry the mark, the tool's are indented.
    let sample = section
        .split("```text\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("README: a sample of what the demo prints");
    for line in sample.lines() {
        assert!(
            line.starts_with(MARK) || line.starts_with(TOOL_INDENT),
            "README sample line {line:?}"
        );
    }
}
