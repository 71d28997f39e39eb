//! A copy of a fixture node with the apiserver SIMULATOR running on it, and
//! the irsa-agent command that runs against both: shared by the tests that
//! stop a run part way (`crash.rs`, `signals.rs`).

use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use assert_cmd::prelude::*;

use super::copy_fixture;
use super::sim::{Cluster, Options};

/// Static-pod restarts are observed through the host's process table: the
/// simulator tests on kubeadm and minikube of one test binary take turns.
pub static PROCESS_TABLE: Mutex<()> = Mutex::new(());

/// `irsa-agent --output json --root ROOT`, with no failpoint and no system
/// bus inherited from the environment.
pub fn irsa(root: &Path) -> Command {
    let mut c = Command::cargo_bin("irsa-agent").unwrap();
    c.args(["--output", "json", "--root"]).arg(root);
    c.env_remove("IRSA_AGENT_FAILPOINT");
    c.env_remove("DBUS_SYSTEM_BUS_ADDRESS");
    c
}

pub struct SimNode {
    pub dir: tempfile::TempDir,
    pub cluster: Cluster,
    _turn: Option<MutexGuard<'static, ()>>,
}

impl SimNode {
    /// The fixture `case` copied and its simulated `distro` started.
    pub fn start(case: &str, distro: &str) -> SimNode {
        let turn = matches!(distro, "kubeadm" | "minikube")
            .then(|| PROCESS_TABLE.lock().unwrap_or_else(|e| e.into_inner()));
        let dir = copy_fixture(case);
        let cluster = Cluster::start_with(
            distro,
            dir.path(),
            Options {
                startup_delay: Duration::from_millis(100),
            },
        )
        .unwrap_or_else(|e| panic!("the simulator must start on {case}: {e:#}"));
        SimNode {
            dir,
            cluster,
            _turn: turn,
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// [`irsa`] with the simulator's environment (its private bus).
    pub fn irsa(&self) -> Command {
        let mut c = irsa(self.root());
        for (k, v) in self.cluster.env() {
            c.env(k, v);
        }
        c
    }

    /// The issuers the simulated apiserver runs with, once it is ready.
    pub fn running_issuers(&self) -> Vec<String> {
        self.cluster
            .wait_ready(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("the simulated apiserver is not ready: {e:#}"));
        self.cluster.status().settings.unwrap().issuers
    }
}
