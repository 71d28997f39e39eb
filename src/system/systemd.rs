//! Restarting a unit through systemd's D-Bus API (never a `systemctl`
//! subprocess): `org.freedesktop.systemd1.Manager.RestartUnit`, then wait for
//! the job's `JobRemoved` signal and read its result.
//!
//! The bus is the system bus, or `DBUS_SYSTEM_BUS_ADDRESS` when set (how the
//! tests point the tool at a private `dbus-daemon`).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use zbus::zvariant::{ObjectPath, OwnedObjectPath};

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1",
    gen_blocking = false
)]
trait Manager {
    /// Ask systemd to send the job signals to this client.
    fn subscribe(&self) -> zbus::Result<()>;

    /// Queue a restart job; returns the job's object path.
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;

    /// A job finished: result is done, canceled, timeout, failed, dependency or skipped.
    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: ObjectPath<'_>,
        unit: &str,
        result: &str,
    ) -> zbus::Result<()>;
}

/// What restarts the apiserver's unit. Tests run the real implementation
/// against a private bus; the trait keeps the orchestration independent of it.
pub trait ServiceManager {
    /// Restart `unit` and wait until systemd reports the job finished.
    fn restart(
        &self,
        unit: &str,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<()>>;
}

/// systemd on the system bus.
pub struct Systemd {
    conn: zbus::Connection,
}

impl Systemd {
    pub async fn connect() -> Result<Self> {
        let conn = zbus::Connection::system().await.context(
            "connecting to the system D-Bus to talk to systemd (is systemd running? \
             DBUS_SYSTEM_BUS_ADDRESS overrides the bus address)",
        )?;
        Ok(Self { conn })
    }
}

impl ServiceManager for Systemd {
    async fn restart(&self, unit: &str, timeout: Duration) -> Result<()> {
        let manager = ManagerProxy::new(&self.conn)
            .await
            .context("creating the systemd Manager proxy")?;
        manager
            .subscribe()
            .await
            .context("subscribing to systemd job signals")?;
        // Listen before asking, so the job cannot finish unseen.
        let mut removed = manager
            .receive_job_removed()
            .await
            .context("listening for systemd JobRemoved")?;
        let job = manager
            .restart_unit(unit, "replace")
            .await
            .with_context(|| format!("systemd RestartUnit {unit}"))?;
        tracing::info!("systemd queued restart job {} for {unit}", job.as_str());
        let wait = async {
            while let Some(signal) = removed.next().await {
                let args = signal.args().context("reading a JobRemoved signal")?;
                if args.job().as_str() == job.as_str() {
                    return Ok(args.result().to_string());
                }
            }
            bail!("the D-Bus connection closed before systemd finished restarting {unit}")
        };
        let result = tokio::time::timeout(timeout, wait)
            .await
            .with_context(|| {
                format!(
                    "systemd did not finish restarting {unit} within {}s",
                    timeout.as_secs()
                )
            })??;
        if result != "done" {
            bail!("systemd could not restart {unit}: the job ended with result {result:?} (see journalctl -u {unit})");
        }
        Ok(())
    }
}
