//! A fake systemd on the simulator's private bus: owns
//! `org.freedesktop.systemd1` and serves `/org/freedesktop/systemd1` with the
//! part of `org.freedesktop.systemd1.Manager` the tool uses (signatures as
//! org.freedesktop.systemd1(5)):
//!
//! - `Subscribe()`, `Unsubscribe()`;
//! - `GetUnit(s name) -> o unit`;
//! - `RestartUnit(s name, s mode) -> o job`: for the distribution's unit, the
//!   job path `/org/freedesktop/systemd1/job/<n>` is returned at once (after
//!   the signal `JobNew(u id, o job, s unit)`); then, after the reply, the
//!   simulated apiserver is stopped and started again from the current files
//!   and `JobRemoved(u id, o job, s unit, s result)` is broadcast with result
//!   `done` (start accepted) or `failed` (refused). Any other unit:
//!   `org.freedesktop.systemd1.NoSuchUnit`; an unknown job mode:
//!   `org.freedesktop.DBus.Error.InvalidArgs`.
//!
//! The unit object (`/org/freedesktop/systemd1/unit/<escaped name>`) has
//! `org.freedesktop.systemd1.Unit` properties `Id`, `ActiveState` (`active`,
//! `activating` while restarting, `failed` after a refused start) and
//! `SubState` (`running`, `start`, `failed`).
//!
//! Every RestartUnit call is recorded, whatever the unit or mode. With
//! `Fault::RestartUnitNeverAnswers` armed, the next call is recorded and
//! never answered (method calls are served each in its own task, so the
//! calls after it are answered).
//! Simplification: JobRemoved is sent whether or not anyone subscribed (real
//! systemd sends it to subscribers and to the client that queued the job).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use zbus::object_server::SignalEmitter;
use zbus::zvariant::{ObjectPath, OwnedObjectPath};

use super::Shared;

pub const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
pub const BUS_NAME: &str = "org.freedesktop.systemd1";

/// systemd's `bus_label_escape`: `[A-Za-z0-9]` kept, every other byte `_xx`.
pub fn unit_path(unit: &str) -> String {
    let mut s = String::from("/org/freedesktop/systemd1/unit/");
    if unit.is_empty() {
        s.push('_');
    }
    for b in unit.bytes() {
        if b.is_ascii_alphanumeric() {
            s.push(b as char);
        } else {
            s.push_str(&format!("_{b:02x}"));
        }
    }
    s
}

const JOB_MODES: &[&str] = &[
    "replace",
    "fail",
    "isolate",
    "ignore-dependencies",
    "ignore-requirements",
    "flush",
    "triggering",
    "restart-dependencies",
    "replace-irreversibly",
];

#[derive(zbus::DBusError, Debug)]
#[zbus(prefix = "org.freedesktop.systemd1")]
pub enum SystemdError {
    #[zbus(error)]
    ZBus(zbus::Error),
    NoSuchUnit(String),
}

pub struct Manager {
    pub shared: Arc<Shared>,
    pub unit: String,
    pub next_job: AtomicU32,
}

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl Manager {
    async fn subscribe(&self) {
        self.shared.state.lock().unwrap().subscribe_calls += 1;
    }

    async fn unsubscribe(&self) {}

    async fn get_unit(&self, name: &str) -> Result<OwnedObjectPath, SystemdError> {
        if name != self.unit {
            return Err(SystemdError::NoSuchUnit(format!("Unit {name} not loaded.")));
        }
        Ok(OwnedObjectPath::try_from(unit_path(name)).map_err(zbus::Error::from)?)
    }

    async fn restart_unit(
        &self,
        name: &str,
        mode: &str,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<OwnedObjectPath, SystemdError> {
        self.shared
            .state
            .lock()
            .unwrap()
            .restarts
            .push((name.to_string(), mode.to_string()));
        let hang = std::mem::take(&mut self.shared.state.lock().unwrap().restart_unit_hangs);
        if hang {
            std::future::pending::<()>().await;
        }
        if name != self.unit {
            return Err(SystemdError::NoSuchUnit(format!("Unit {name} not found.")));
        }
        if !JOB_MODES.contains(&mode) {
            return Err(SystemdError::ZBus(zbus::Error::FDO(Box::new(
                zbus::fdo::Error::InvalidArgs(format!("Job mode {mode} invalid")),
            ))));
        }
        let id = self.next_job.fetch_add(1, Ordering::SeqCst);
        let job = OwnedObjectPath::try_from(format!("{MANAGER_PATH}/job/{id}"))
            .map_err(zbus::Error::from)?;
        Manager::job_new(&emitter, id, job.as_ref(), name).await?;
        self.shared.state.lock().unwrap().unit_state = UnitState::Activating;

        let shared = self.shared.clone();
        let conn = conn.clone();
        let unit = name.to_string();
        let job_path = job.clone();
        tokio::spawn(async move {
            // Let the method reply go out first.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let result = match super::apiserver::restart(&shared).await {
                Ok(()) => "done",
                Err(_) => "failed",
            };
            if let Ok(emitter) = SignalEmitter::new(&conn, MANAGER_PATH) {
                let _ = Manager::job_removed(&emitter, id, job_path.as_ref(), &unit, result).await;
            }
        });
        Ok(job)
    }

    #[zbus(signal)]
    async fn job_new(
        emitter: &SignalEmitter<'_>,
        id: u32,
        job: ObjectPath<'_>,
        unit: &str,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn job_removed(
        emitter: &SignalEmitter<'_>,
        id: u32,
        job: ObjectPath<'_>,
        unit: &str,
        result: &str,
    ) -> zbus::Result<()>;
}

/// The unit's state as systemd would show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitState {
    Active,
    Activating,
    Failed,
    Inactive,
}

pub struct Unit {
    pub shared: Arc<Shared>,
    pub unit: String,
}

#[zbus::interface(name = "org.freedesktop.systemd1.Unit")]
impl Unit {
    #[zbus(property)]
    fn id(&self) -> String {
        self.unit.clone()
    }

    #[zbus(property)]
    fn active_state(&self) -> String {
        match self.shared.state.lock().unwrap().unit_state {
            UnitState::Active => "active",
            UnitState::Activating => "activating",
            UnitState::Failed => "failed",
            UnitState::Inactive => "inactive",
        }
        .into()
    }

    #[zbus(property)]
    fn sub_state(&self) -> String {
        match self.shared.state.lock().unwrap().unit_state {
            UnitState::Active => "running",
            UnitState::Activating => "start",
            UnitState::Failed => "failed",
            UnitState::Inactive => "dead",
        }
        .into()
    }
}

/// Connect to the bus, serve the Manager and the unit, own the name.
pub async fn serve(
    shared: Arc<Shared>,
    address: &str,
    unit: &str,
) -> anyhow::Result<zbus::Connection> {
    let manager = Manager {
        shared: shared.clone(),
        unit: unit.to_string(),
        next_job: AtomicU32::new(1),
    };
    let unit_obj = Unit {
        shared,
        unit: unit.to_string(),
    };
    let conn = zbus::connection::Builder::address(address)?
        .serve_at(MANAGER_PATH, manager)?
        .serve_at(unit_path(unit), unit_obj)?
        .name(BUS_NAME)?
        .build()
        .await?;
    Ok(conn)
}
