//! irsa-agent: converge a Kubernetes control-plane node to a public
//! service-account issuer usable with AWS IRSA and GCP/Azure workload identity.
//!
//! Everything that decides is pure (`flags`, `formats`, `keys`, `distro`
//! profiles); everything that touches the node goes through `system`.

pub mod apply;
pub mod cli;
pub mod config;
pub mod detect;
pub mod distro;
pub mod failpoint;
pub mod flags;
pub mod formats;
pub mod generate;
pub mod global_flags;
pub mod issuer;
pub mod keycheck;
pub mod keys;
pub mod kubeadm;
pub mod live;
pub mod node;
pub mod output;
pub mod paths;
pub mod recovery;
pub mod redact;
pub mod restart_pending;
pub mod rollback;
pub mod signals;
pub mod system;
pub mod verify;
