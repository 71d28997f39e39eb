//! Restarting a unit through systemd's D-Bus API (never a `systemctl`
//! subprocess): `org.freedesktop.systemd1.Manager.RestartUnit`, then wait for
//! the job's `JobRemoved` signal and read its result.
//!
//! The bus is the system bus, or `DBUS_SYSTEM_BUS_ADDRESS` when set (how the
//! tests point the tool at a private `dbus-daemon`).
//!
//! Every call has a deadline: a wedged PID 1 (or bus) ends the wait with an
//! error naming the call instead of hanging the run with the lock held.

use std::future::Future;
use std::time::Instant;

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
    /// Restart `unit` and wait until systemd reports the job finished, by `deadline`.
    fn restart(&self, unit: &str, deadline: Instant) -> impl Future<Output = Result<()>>;
}

/// `call`, unless `deadline` comes first: then an error saying what did not answer.
async fn by<T>(
    deadline: Instant,
    what: impl FnOnce() -> String,
    call: impl Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout_at(deadline.into(), call).await {
        Ok(r) => r,
        Err(_) => bail!(
            "{} (no answer before the run's deadline, --timeout; is systemd (PID 1) wedged?)",
            what()
        ),
    }
}

/// systemd on the system bus.
pub struct Systemd {
    conn: zbus::Connection,
}

impl Systemd {
    pub async fn connect(deadline: Instant) -> Result<Self> {
        let what = "connecting to the system D-Bus to talk to systemd (is systemd running? \
                    DBUS_SYSTEM_BUS_ADDRESS overrides the bus address)";
        let conn = by(deadline, || what.to_string(), async {
            zbus::Connection::system().await.context(what)
        })
        .await?;
        Ok(Self { conn })
    }
}

impl ServiceManager for Systemd {
    async fn restart(&self, unit: &str, deadline: Instant) -> Result<()> {
        let manager = by(
            deadline,
            || "creating the systemd Manager proxy".into(),
            async {
                ManagerProxy::new(&self.conn)
                    .await
                    .context("creating the systemd Manager proxy")
            },
        )
        .await?;
        by(
            deadline,
            || "systemd did not answer Subscribe".into(),
            async {
                manager
                    .subscribe()
                    .await
                    .context("subscribing to systemd job signals")
            },
        )
        .await?;
        // Listen before asking, so the job cannot finish unseen.
        let mut removed = by(
            deadline,
            || "the bus did not answer AddMatch for systemd's JobRemoved".into(),
            async {
                manager
                    .receive_job_removed()
                    .await
                    .context("listening for systemd JobRemoved")
            },
        )
        .await?;
        let job = by(
            deadline,
            || format!("systemd did not answer RestartUnit {unit}"),
            async {
                manager
                    .restart_unit(unit, "replace")
                    .await
                    .with_context(|| format!("systemd RestartUnit {unit}"))
            },
        )
        .await?;
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
        let result = by(
            deadline,
            || format!("systemd did not finish restarting {unit}"),
            wait,
        )
        .await?;
        if result != "done" {
            bail!("systemd could not restart {unit}: the job ended with result {result:?} (see journalctl -u {unit})");
        }
        Ok(())
    }
}
