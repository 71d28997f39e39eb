//! `cargo run --example loop`: the whole loop (write, restart, wait, verify,
//! roll back) on a copy of the README's example node, against the SIMULATED
//! apiserver of the test suite. No cluster, no root, nothing outside temp
//! dirs; the simulator listens on 127.0.0.1 only. What it runs and checks:
//! `tests/support/demo.rs`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::atomic::Ordering;

use anyhow::{bail, Context, Result};
use nix::sys::signal::{SigSet, Signal};
use support::demo::{self, INTERRUPTED, MARK};

fn main() -> ExitCode {
    // Ctrl-C or a TERM must not leave the simulator's processes behind: the
    // signals are taken by a thread that asks the demo to stop and clean up
    // (a second one ends at once). Every thread started from here on has them
    // blocked; child processes start with an empty signal mask.
    let mut signals = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(s);
    }
    if signals.thread_block().is_ok() {
        std::thread::spawn(move || {
            while signals.wait().is_ok() {
                if INTERRUPTED.swap(true, Ordering::SeqCst) {
                    std::process::exit(130);
                }
            }
        });
    }

    let bin = match irsa_agent_binary() {
        Ok(bin) => bin,
        Err(e) => {
            println!("{MARK} demo FAILED: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let opts = demo::Opts {
        bin,
        env: Vec::new(),
    };
    match demo::run(&opts, &mut std::io::stdout()) {
        Ok(_) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

/// The irsa-agent binary next to this example (`target/<profile>/`), built
/// first with the same profile so it is the current source.
fn irsa_agent_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding this example's path")?;
    let Some(profile_dir) = exe.parent().and_then(|examples| examples.parent()) else {
        bail!("{} is not in target/<profile>/examples", exe.display());
    };
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_string(),
        Some(name) => name.to_string(),
    };
    println!(
        "{MARK} building the irsa-agent binary (cargo build --bin irsa-agent --profile {profile})"
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--bin",
            "irsa-agent",
            "--profile",
            &profile,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .context("running cargo build --bin irsa-agent")?;
    if !status.success() {
        bail!("cargo build --bin irsa-agent failed ({status})");
    }
    let bin = profile_dir.join("irsa-agent");
    if !bin.is_file() {
        bail!(
            "cargo build put no irsa-agent at {}; run `cargo build` and try again",
            bin.display()
        );
    }
    Ok(bin)
}
