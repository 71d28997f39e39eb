//! The fake kubelet of static-pod distributions (kubeadm, minikube), and the
//! stand-in processes it runs.
//!
//! Model:
//! - A thread polls `/etc/kubernetes/manifests/kube-apiserver.yaml` every
//!   50 ms. When its bytes change (or it appears), the running apiserver is
//!   stopped and a new one started from the manifest's container command, as
//!   the kubelet recreates a static pod whose manifest changed. A removed
//!   manifest stops the apiserver. (Other files in the manifests directory
//!   are not looked at.)
//! - Every start runs a **stand-in process** so that the apiserver shows up
//!   in `/proc` like a real one: an executable shell script named exactly
//!   `kube-apiserver` in the cluster's temp dir, run with the apiserver's
//!   arguments. The kernel then reports `comm` = `kube-apiserver` and
//!   `cmdline` = `/bin/sh <tmp>/kube-apiserver --flag=value ...`. The script
//!   never `exec`s (its `sleep` runs as a child), so `comm` stays
//!   `kube-apiserver` for its whole life.
//! - An accepted start's stand-in runs until the next stop (SIGTERM to its
//!   process group, SIGKILL after 2 s). A refused start's stand-in exits with
//!   status 1 after 0.5 s, like a crash-looping container (the kubelet's
//!   back-off restarts are not modelled: the next start happens when the
//!   manifest changes again).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::Shared;

pub const STAND_IN_NAME: &str = "kube-apiserver";
const POLL: Duration = Duration::from_millis(50);

const SCRIPT: &str = r#"#!/bin/sh
# irsa-agent test simulator: stand-in for a kube-apiserver process.
# The simulator serves the API itself; this only makes the process visible.
child=
trap 'if [ -n "$child" ]; then kill "$child" 2>/dev/null; fi; exit 0' TERM INT
if [ -n "$IRSA_SIM_CRASH" ]; then
  sleep 0.5 & child=$!
  wait "$child"
  exit 1
fi
while :; do
  sleep 3600 & child=$!
  wait "$child"
done
"#;

/// Write the stand-in script into `dir` (once per cluster).
pub fn write_stand_in(dir: &Path) -> Result<PathBuf> {
    let path = dir.join(STAND_IN_NAME);
    std::fs::write(&path, SCRIPT).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// Start a stand-in with the apiserver's arguments, in its own process group.
pub fn spawn_stand_in(
    script: &Path,
    args: &[String],
    crash: bool,
) -> Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::new(script);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    if crash {
        cmd.env("IRSA_SIM_CRASH", "1");
    }
    // ETXTBSY: another thread of the test process may have forked while the
    // script was still open for writing (the write descriptor lives in the
    // child until its exec). It goes away within moments: retry.
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc_etxtbsy()) && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            r => return r.with_context(|| format!("starting the stand-in {}", script.display())),
        }
    }
}

/// `ETXTBSY` ("Text file busy").
fn libc_etxtbsy() -> i32 {
    nix::errno::Errno::ETXTBSY as i32
}

/// Stop a stand-in and everything in its process group: SIGTERM, wait up to
/// 2 s, then SIGKILL.
pub async fn stop_stand_in(mut child: tokio::process::Child) {
    let Some(pid) = child.id() else {
        let _ = child.wait().await;
        return;
    };
    let group = Pid::from_raw(pid as i32);
    let _ = killpg(group, Signal::SIGTERM);
    if tokio::time::timeout(Duration::from_secs(2), child.wait())
        .await
        .is_err()
    {
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait().await;
    }
    // The group may still hold the `sleep` child if the shell died first.
    let _ = killpg(group, Signal::SIGKILL);
}

/// The polling thread.
pub struct Kubelet {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Kubelet {
    /// Watch `manifest` (a full path), starting from `seen` (the bytes the
    /// current apiserver was started from).
    pub fn spawn(
        shared: Arc<Shared>,
        rt: tokio::runtime::Handle,
        manifest: PathBuf,
        seen: Option<Vec<u8>>,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("sim-kubelet".into())
            .spawn(move || {
                let mut seen = seen;
                while !flag.load(Ordering::SeqCst) {
                    std::thread::sleep(POLL);
                    let now = std::fs::read(&manifest).ok();
                    if now == seen {
                        continue;
                    }
                    seen = now;
                    let shared = shared.clone();
                    if seen.is_some() {
                        let _ = rt.block_on(super::apiserver::restart(&shared));
                    } else {
                        rt.block_on(super::apiserver::stop_for_good(
                            &shared,
                            "the static pod manifest was removed",
                        ));
                    }
                }
            })
            .expect("spawning the simulated kubelet thread");
        Kubelet {
            stop,
            thread: Some(thread),
        }
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.stop();
    }
}
