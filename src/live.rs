//! The running apiserver: restart it the way its distribution does, wait until
//! it is ready, and reach its API.
//!
//! Deadlines: `--timeout` is the budget of the whole run (recovery of an
//! interrupted apply, the health check before the change, the restart, the
//! waits, the verification); every call to systemd or the apiserver and every
//! wait takes only what is left of it ([`Live::left`]). A rollback gets a
//! fresh budget of the same length, at least [`ROLLBACK_MIN`]
//! ([`Live::begin_rollback`]), so the worst case of one `apply` is about
//! `--timeout` + max(`--timeout`, 30 s) (see docs/operators.md for
//! how that fits the unit's `TimeoutStartSec`). Every wait also ends within
//! [`POLL`] of a termination signal (see [`crate::signals`]).

use std::future::Future;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};

use crate::cli::{GlobalOpts, OutputMode};
use crate::distro::{Profile, RestartMethod};
use crate::flags::{Effective, SaState};
use crate::formats;
use crate::node::Node;
use crate::signals;
use crate::system::apiserver::ApiServer;
use crate::system::process;
use crate::system::systemd::{ServiceManager, Systemd};

/// How often readiness and processes are polled. The time from "apiserver
/// ready" to "irsa-agent noticed" is at most this plus one request
/// (benches/restart_latency.rs measures it).
pub const POLL: Duration = Duration::from_millis(50);

/// The least time a rollback gets, whatever `--timeout`: putting the old
/// configuration back is what keeps the node usable.
pub const ROLLBACK_MIN: Duration = Duration::from_secs(30);

/// The longest one `/readyz` request may take before it counts as "not ready".
const READY_CALL: Duration = Duration::from_secs(5);

/// A connection to the node's apiserver and what is needed to restart it.
pub struct Live {
    rt: tokio::runtime::Runtime,
    pub api: ApiServer,
    profile: Profile,
    /// The budget of the run (and again of a rollback).
    pub timeout: Duration,
    /// When the budget running now is spent.
    deadline: Mutex<Instant>,
    spinner: bool,
}

/// Show a spinner only to a person watching a terminal.
pub fn spinner_wanted(global: &GlobalOpts) -> bool {
    global.output == OutputMode::Human && !global.quiet && std::io::stderr().is_terminal()
}

impl Live {
    /// Read the admin kubeconfig and build a client. Does not contact the apiserver.
    pub fn connect(node: &Node, timeout: Duration, spinner: bool) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let profile = node.profile().clone();
        let deadline = Instant::now() + timeout;
        let api = rt.block_on(async {
            tokio::time::timeout_at(
                deadline.into(),
                ApiServer::connect(&node.root, &profile.admin_kubeconfig),
            )
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "reading the admin kubeconfig {} took longer than --timeout ({}s)",
                    profile.admin_kubeconfig,
                    timeout.as_secs()
                )
            })?
        })?;
        Ok(Self {
            rt,
            api,
            profile,
            timeout,
            deadline: Mutex::new(deadline),
            spinner,
        })
    }

    /// The deadline of the budget running now.
    pub fn deadline(&self) -> Instant {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What is left of the budget.
    pub fn left(&self) -> Duration {
        self.deadline().saturating_duration_since(Instant::now())
    }

    /// A rollback starts: it gets a fresh budget of `--timeout` (at least
    /// [`ROLLBACK_MIN`]), and the termination signal that may have caused it
    /// interrupts nothing more.
    pub fn begin_rollback(&self) {
        signals::rolling_back();
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) =
            Instant::now() + self.timeout.max(ROLLBACK_MIN);
    }

    /// Run `f` to its end, unless the budget runs out or a termination
    /// signal asks the run to stop first.
    pub fn block_on<T>(&self, f: impl Future<Output = Result<T>>) -> Result<T> {
        let deadline = self.deadline();
        let budget = self.timeout.as_secs();
        self.rt.block_on(async {
            tokio::select! {
                r = tokio::time::timeout_at(deadline.into(), f) => r.map_err(|_| {
                    anyhow::anyhow!("no answer within the time left of --timeout ({budget}s for the whole run)")
                })?,
                sig = signals::wait_interrupted() => Err(sig.into()),
            }
        })
    }

    fn progress(&self, msg: String) -> indicatif::ProgressBar {
        if !self.spinner {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        bar.set_message(msg);
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    }

    /// Poll `/readyz` until it answers ok. `when` names the moment for messages
    /// ("before the change", "after the restart").
    pub fn wait_ready(&self, when: &str) -> Result<Duration> {
        let bar = self.progress(format!(
            "waiting for the apiserver at {} to be ready ({when})",
            self.api.url
        ));
        let start = Instant::now();
        let deadline = self.deadline();
        let result = self.block_on(async {
            loop {
                // One /readyz may not take what the run no longer has.
                let left = deadline.saturating_duration_since(Instant::now());
                let last = match tokio::time::timeout(left.min(READY_CALL), self.api.ready()).await {
                    Ok(Ok(())) => return Ok(start.elapsed()),
                    Ok(Err(why)) => why,
                    Err(_) => format!("/readyz did not answer within {}s", left.min(READY_CALL).as_secs()),
                };
                if Instant::now() + POLL >= deadline {
                    bail!(
                        "the apiserver at {} was not ready within {}s {when} (--timeout, the whole run's \
                         budget); last answer: {last}",
                        self.api.url,
                        self.timeout.as_secs()
                    );
                }
                tokio::time::sleep(POLL).await;
            }
        });
        bar.finish_and_clear();
        if let Ok(d) = &result {
            tracing::info!("apiserver ready {when} after {} ms", d.as_millis());
        }
        result
    }

    /// Take a [`Mark`] now, before writing a configuration.
    pub fn mark(&self) -> Mark {
        let running = match self.profile.restart.method {
            RestartMethod::StaticPod => process::find(&self.profile.detect.processes)
                .iter()
                .map(|p| p.pid)
                .collect(),
            RestartMethod::Systemd => Vec::new(),
        };
        Mark {
            at: SystemTime::now(),
            running,
        }
    }

    /// Restart the apiserver the way its distribution runs it and wait until
    /// the new one runs `expect` (static pods) or systemd's job is done.
    /// `since`: taken before the configuration was written.
    pub fn restart(&self, expect: &SaState, since: &Mark) -> Result<()> {
        match (self.profile.restart.method, &self.profile.restart.unit) {
            (RestartMethod::Systemd, Some(unit)) => {
                let bar = self.progress(format!("restarting {unit} through systemd"));
                let deadline = self.deadline();
                let r = self.block_on(async {
                    Systemd::connect(deadline)
                        .await?
                        .restart(unit, deadline)
                        .await
                });
                bar.finish_and_clear();
                r
            }
            (RestartMethod::Systemd, None) => {
                bail!("the {} profile names no systemd unit", self.profile.name)
            }
            (RestartMethod::StaticPod, _) => {
                let bar = self.progress(
                    "waiting for the kubelet to restart the kube-apiserver static pod".into(),
                );
                let r = self.block_on(wait_for_process(
                    &self.profile.detect.processes,
                    expect,
                    since,
                    self.deadline(),
                    self.timeout,
                ));
                bar.finish_and_clear();
                r.map(|pid| tracing::info!("kube-apiserver restarted by the kubelet: pid {pid}"))
            }
        }
    }

    /// [`Live::restart`] waiting for any apiserver on `expect`, then
    /// [`Live::wait_ready`]: how a restored configuration is brought back.
    pub fn restart_and_wait(&self, expect: &SaState, when: &str) -> Result<()> {
        // Any apiserver running the restored flags will do: the kubelet may
        // never have noticed the change that is now undone, and then the pod
        // from before it still runs.
        self.restart(expect, &Mark::any())?;
        self.wait_ready(when).map(|_| ())
    }
}

/// When a configuration is about to be written: the time, and (static pods)
/// the apiserver processes running then, none of which can be the pod the
/// kubelet starts from the new manifest (a process started just before the
/// write could otherwise pass for it, start times having one-second
/// resolution).
#[derive(Debug, Clone)]
pub struct Mark {
    at: SystemTime,
    running: Vec<u32>,
}

impl Mark {
    /// Any process running `expect` will do, however old: a manifest that did
    /// not change, or was changed and put back before the kubelet looked, is
    /// not restarted by the kubelet.
    pub fn any() -> Mark {
        Mark {
            at: std::time::UNIX_EPOCH,
            running: Vec::new(),
        }
    }
}

/// The service-account settings a process command line carries.
pub fn state_of_command_line(cmd: &[String]) -> SaState {
    Effective::from_args(&formats::args_from_command_line(cmd)).state()
}

/// Wait for a process named one of `names`, not running at `since` and
/// started after it, whose command line carries exactly `expect`: the
/// kubelet has replaced the pod.
async fn wait_for_process(
    names: &[String],
    expect: &SaState,
    since: &Mark,
    deadline: Instant,
    timeout: Duration,
) -> Result<u32> {
    let at = process::epoch_secs(since.at);
    loop {
        let found = process::find(names);
        // /proc start times are relative to a boot time rounded to the second:
        // allow one second; the pids running before and the command line are
        // what tell the pods apart.
        if let Some(p) = found.iter().find(|p| {
            !since.running.contains(&p.pid)
                && p.started + 1 >= at
                && state_of_command_line(&p.cmd) == *expect
        }) {
            return Ok(p.pid);
        }
        if Instant::now() + Duration::from_millis(100) >= deadline {
            let seen = if found.is_empty() {
                format!("no process named {} runs", names.join(" or "))
            } else {
                format!(
                    "running: {}",
                    found
                        .iter()
                        .map(|p| format!(
                            "pid {} issuing as {}",
                            p.pid,
                            state_of_command_line(&p.cmd)
                                .issuers
                                .first()
                                .map(String::as_str)
                                .unwrap_or("(no issuer)")
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            bail!(
                "the kubelet did not start a kube-apiserver with the new flags within {}s (--timeout, the \
                 whole run's budget) ({seen}); \
                 check the kubelet's log (journalctl -u kubelet) and `crictl ps -a`",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_command_line_gives_the_settings_the_process_runs_with() {
        // As containerd starts it, with a two-token flag and an unrelated bool.
        let s = state_of_command_line(&argv(&[
            "kube-apiserver",
            "--allow-privileged=true",
            "--service-account-issuer=https://new.example.com",
            "--service-account-issuer",
            "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file=/etc/kubernetes/pki/sa.pub",
            "--service-account-signing-key-file=/etc/kubernetes/pki/sa.key",
            "--api-audiences=https://kubernetes.default.svc.cluster.local,sts.amazonaws.com",
        ]));
        assert_eq!(
            s.issuers,
            [
                "https://new.example.com",
                "https://kubernetes.default.svc.cluster.local"
            ]
        );
        assert_eq!(s.key_files, ["/etc/kubernetes/pki/sa.pub"]);
        assert_eq!(
            s.signing_key_file.as_deref(),
            Some("/etc/kubernetes/pki/sa.key")
        );
        assert_eq!(
            s.api_audiences,
            [
                "https://kubernetes.default.svc.cluster.local",
                "sts.amazonaws.com"
            ]
        );
        // Run through an interpreter (a script named kube-apiserver): the
        // script path is not a flag and changes nothing.
        let mut scripted = argv(&["/bin/sh", "/opt/kube-apiserver"]);
        scripted.extend(argv(&[
            "--service-account-issuer=https://new.example.com",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file=/etc/kubernetes/pki/sa.pub",
            "--service-account-signing-key-file=/etc/kubernetes/pki/sa.key",
            "--api-audiences=https://kubernetes.default.svc.cluster.local,sts.amazonaws.com",
        ]));
        assert_eq!(state_of_command_line(&scripted), s);
    }
}
