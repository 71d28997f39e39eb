//! Side effects only: the node's filesystem under a root, atomic writes,
//! backups, the run lock, systemd over D-Bus, processes, the apiserver's API.

pub mod apiserver;
pub mod backup;
pub mod fs;
pub mod https;
pub mod kubeconfig;
pub mod lock;
pub mod process;
pub mod systemd;

pub use fs::Sysroot;

/// An error and its sources on one line, skipping a source whose text the
/// line already holds (hyper and kube-rs hide the useful part in sources).
pub fn error_line(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
}
