//! Test-side helpers shared by the integration tests (`mod support;`).
//!
//! - [`effective`]: an independent reading of "how would this distro start
//!   kube-apiserver", written from the upstream sources and deliberately not
//!   using the crate under test.
//! - [`tree`]: copy a fixture sysroot into a temp dir and snapshot a tree, for
//!   "nothing else changed" assertions.
//! - [`sim`]: a SIMULATED control plane (kube-apiserver, systemd on a private
//!   D-Bus, the kubelet) for the restart/verify/rollback loop.
//! - [`issuer_host`]: a local HTTPS server standing in for where discovery
//!   documents are published, for `verify --public`.

// Each integration test is its own crate and uses only part of this module.
#![allow(dead_code, unused_imports)]

pub mod effective;
pub mod issuer_host;
pub mod sim;
pub mod tree;

pub use effective::{apiserver_args, sa_settings, SaSettings};
pub use tree::{copy_fixture, copy_fixture_in, fixture_path, snapshot};
