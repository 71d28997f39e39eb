//! Side effects only: the node's filesystem under a root, atomic writes,
//! backups, the run lock, systemd over D-Bus, processes, the apiserver's API.

pub mod apiserver;
pub mod backup;
pub mod fs;
pub mod https;
pub mod lock;
pub mod process;
pub mod systemd;

pub use fs::Sysroot;
