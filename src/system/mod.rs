//! Side effects only: the node's filesystem under a root, atomic writes,
//! backups, the run lock.

pub mod backup;
pub mod fs;
pub mod lock;

pub use fs::Sysroot;
