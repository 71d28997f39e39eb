//! Test-side helpers shared by the integration tests (`mod support;`).
//!
//! - [`effective`]: an independent reading of "how would this distro start
//!   kube-apiserver", written from the upstream sources and deliberately not
//!   using the crate under test.
//! - [`tree`]: copy a fixture sysroot into a temp dir and snapshot a tree, for
//!   "nothing else changed" assertions.
//! - [`sim`]: a SIMULATED control plane (kube-apiserver, systemd on a private
//!   D-Bus, the kubelet) for the restart/verify/rollback loop.
//! - [`demo`]: the loop on the README's example node against [`sim`], for
//!   `cargo run --example loop` and `tests/demo.rs`.
//! - [`issuer_host`]: a local HTTPS server standing in for where discovery
//!   documents are published, for `verify --public`.

// Each integration test is its own crate and uses only part of this module.
#![allow(dead_code, unused_imports)]

pub mod demo;
pub mod effective;
pub mod issuer_host;
pub mod sim;
pub mod sim_node;
pub mod tree;

pub use effective::{apiserver_args, sa_settings, SaSettings};
pub use tree::{copy_fixture, copy_fixture_in, fixture_path, node_files, snapshot, Tree};

/// stdout of a `--output json` run, which must be exactly one JSON object
/// (the panic shows stdout and stderr).
pub fn json_of(out: &std::process::Output) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}): {:?}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        v.is_object(),
        "stdout is JSON but not an object: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    v
}

/// `irsa-agent --root ROOT --output json ARGS...` (the built binary): its
/// JSON object and exit code.
pub fn json_run(root: &std::path::Path, args: &[&str]) -> (serde_json::Value, i32) {
    let out = assert_cmd::Command::cargo_bin("irsa-agent")
        .unwrap()
        .env_remove("IRSA_AGENT_LOG")
        .arg("--root")
        .arg(root)
        .args(["--output", "json"])
        .args(args)
        .output()
        .unwrap();
    (json_of(&out), out.status.code().unwrap_or(-1))
}
