//! The apiserver's processes as the kernel shows them (sysinfo reads /proc):
//! how a static-pod restart is observed, since no unit runs it.

use std::time::{SystemTime, UNIX_EPOCH};

/// One running process whose name is one of the apiserver's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    /// Start time, seconds since the epoch (the kernel's resolution is a clock tick;
    /// sysinfo rounds to seconds).
    pub started: u64,
    /// The command line, program first.
    pub cmd: Vec<String>,
}

/// The processes of this host, read with `refresh` (sysinfo reads only what
/// it asks for: `detect` must stay fast on a node with hundreds of processes).
fn scan(refresh: sysinfo::ProcessRefreshKind) -> sysinfo::System {
    let mut sys = sysinfo::System::new();
    sys.refresh_processes_specifics(sysinfo::ProcessesToUpdate::All, true, refresh);
    sys
}

fn named(p: &sysinfo::Process, names: &[String]) -> bool {
    names
        .iter()
        .any(|n| p.name().to_string_lossy() == n.as_str())
}

/// Whether a process named one of `names` (the kernel's `comm`) runs.
pub fn any_named(names: &[String]) -> bool {
    scan(sysinfo::ProcessRefreshKind::nothing())
        .processes()
        .values()
        .any(|p| named(p, names))
}

/// Every process named one of `names` (the kernel's `comm`).
pub fn find(names: &[String]) -> Vec<Process> {
    let sys = scan(sysinfo::ProcessRefreshKind::nothing().with_cmd(sysinfo::UpdateKind::Always));
    sys.processes()
        .values()
        .filter(|p| named(p, names))
        .map(|p| Process {
            pid: p.pid().as_u32(),
            started: p.start_time(),
            cmd: p
                .cmd()
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
        })
        .collect()
}

/// Seconds since the epoch, rounded down (to compare with [`Process::started`]).
pub fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
