//! The README's first command on the bundled example node: its output is a
//! golden file (`tests/golden/first-command/stdout`, rewritten with
//! `UPDATE_GOLDEN=1`), short, with the answer in it, nothing on stderr, and
//! the README shows exactly that output.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use assert_cmd::prelude::*;
use support::copy_fixture;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The README's first ```sh block: its lines.
fn readme_first_block() -> Vec<String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let start = readme.find("```sh\n").expect("a sh block") + 6;
    let end = readme[start..].find("```").unwrap() + start;
    readme[start..end].lines().map(str::to_string).collect()
}

/// The README's block showing the first command's output.
fn readme_output_block() -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let start = readme.find("```text\n").expect("a text block") + 8;
    let end = readme[start..].find("```").unwrap() + start;
    readme[start..end].to_string()
}

/// The arguments of the README's `cargo run -- ...` line, with `--root` on
/// `root` instead of the fixture itself (the test must not chmod the
/// checkout).
fn first_command_args(root: &Path, extra: &[&str]) -> Vec<String> {
    let block = readme_first_block();
    let run = block
        .iter()
        .find_map(|l| l.split_once("cargo run -- ").map(|(_, run)| run))
        .expect("the first block runs `cargo run -- ...`");
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    for a in run.split_whitespace() {
        if a == "tests/fixtures/kubeadm-default" {
            args.push(root.to_str().unwrap().to_string());
        } else {
            args.push(a.to_string());
        }
    }
    assert!(
        args.iter().any(|a| a == root.to_str().unwrap()),
        "the first command runs on the example node: {run}"
    );
    args
}

fn run(root: &Path, extra: &[&str]) -> Output {
    Command::cargo_bin("irsa-agent")
        .unwrap()
        .env_remove("IRSA_AGENT_LOG")
        .env("COLUMNS", "80")
        .args(first_command_args(root, extra))
        .output()
        .unwrap()
}

/// A copy of the example node with the key mode the README's chmod gives.
fn example_node() -> tempfile::TempDir {
    let block = readme_first_block();
    assert_eq!(block.len(), 1, "the first command is one line to paste");
    assert!(
        block[0]
            .starts_with("chmod 600 tests/fixtures/kubeadm-default/etc/kubernetes/pki/sa.key && "),
        "the README gives the example's key a node's mode first"
    );
    let dir = copy_fixture("kubeadm-default");
    let key = dir.path().join("etc/kubernetes/pki/sa.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    dir
}

fn golden_path() -> PathBuf {
    repo().join("tests/golden/first-command/stdout")
}

#[test]
fn the_first_command_prints_the_answer_and_little_else() {
    let dir = example_node();
    let out = run(dir.path(), &[]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr, "",
        "no warning greets a newcomer on the example node"
    );

    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(golden_path().parent().unwrap()).unwrap();
        std::fs::write(golden_path(), &stdout).unwrap();
    }
    let golden = std::fs::read_to_string(golden_path()).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1)",
            golden_path().display()
        )
    });
    assert_eq!(
        stdout,
        golden,
        "the output differs from {} (UPDATE_GOLDEN=1 rewrites it)",
        golden_path().display()
    );
    assert_eq!(
        readme_output_block(),
        golden,
        "README.md shows the first command's output as it is"
    );

    // Its content: found, the two-line diff, why, the one advice; short.
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines.len() <= 25,
        "about half of the 45 lines it was: {} lines:\n{stdout}",
        lines.len()
    );
    assert!(
        lines
            .iter()
            .all(|l| l.chars().count() <= 80 || l.starts_with('+')),
        "wrapped to 80:\n{stdout}"
    );
    assert_eq!(lines[0], "kubeadm: would change (--check: nothing written)");
    assert!(
        lines[1].starts_with("found:       issuer https://kubernetes.default.svc.cluster.local")
    );
    let added: Vec<&&str> = lines.iter().filter(|l| l.starts_with("+ ")).collect();
    assert_eq!(
        added,
        [
            &"+    - --service-account-issuer=https://oidc.example.com/my-cluster",
            &"+    - --api-audiences=https://kubernetes.default.svc.cluster.local,sts.amazonaws.com"
        ],
        "the diff is the two added lines, without context"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with(' ') && l.contains("    - --")),
        "no context lines"
    );
    let why = lines.iter().position(|l| *l == "why:").expect("why:");
    let reasons: Vec<&&str> = lines[why + 1..]
        .iter()
        .take_while(|l| l.starts_with("  "))
        .filter(|l| !l.starts_with("    "))
        .collect();
    assert_eq!(
        reasons.len(),
        3,
        "one reason per changed setting: {reasons:?}"
    );
    let text = stdout.replace("\n    ", " ").replace("\n      ", " ");
    assert!(
        text.contains("https://oidc.example.com/my-cluster: added first, so it signs new tokens"),
        "{text}"
    );
    assert!(
        text.contains("kept after it, so the tokens it issued keep verifying"),
        "{text}"
    );
    assert!(
        text.contains(
            "written out, because unset they follow the issuers and would change with the new one"
        ),
        "{text}"
    );
    assert_eq!(lines.iter().filter(|l| l.starts_with("next: ")).count(), 1);
    assert!(
        text.contains("next: run irsa-agent apply again after every `kubeadm upgrade`"),
        "{text}"
    );
    assert!(
        !stdout.contains("extraArgs"),
        "the ConfigMap snippets only with -v"
    );
}

#[test]
fn verbose_adds_the_details() {
    let dir = example_node();
    let out = run(dir.path(), &["-v"]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.matches("extraArgs:").count(), 2, "{stdout}");
    assert!(
        stdout.contains("issuers:     https://oidc.example.com/my-cluster (signs)"),
        "{stdout}"
    );
    assert!(stdout.starts_with(
        &std::fs::read_to_string(golden_path())
            .unwrap()
            .lines()
            .take(12)
            .collect::<Vec<_>>()
            .join("\n")
    ));
}

#[test]
fn a_readable_key_is_still_warned_about() {
    // Without the README's chmod the example's key is 0644 and the warning
    // is true: it stays for real nodes, once, on stderr.
    let dir = copy_fixture("kubeadm-default");
    let key = dir.path().join("etc/kubernetes/pki/sa.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(dir.path(), &[]);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("signing key /etc/kubernetes/pki/sa.key has mode 0644"),
        "{stderr}"
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        std::fs::read_to_string(golden_path()).unwrap()
    );
}
