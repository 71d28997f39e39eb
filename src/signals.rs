//! Termination signals (SIGTERM, SIGINT, SIGHUP) during `apply`: Ctrl-C, an
//! SSH session dropping, systemd stopping the unit.
//!
//! [`install`] replaces the default action (die at once) with a note: the
//! first signal is only recorded, and the run notices it at its next step
//! boundary or within one poll of any wait ([`check`], and every
//! [`crate::live::Live`] wait). Before the first write that ends the run
//! with nothing changed; after it, the run rolls back exactly as after a
//! failed step. While it rolls back ([`rolling_back`]) the first signal no
//! longer interrupts anything. A second signal stops the process at once
//! (exit 128 + the signal's number), leaving the backup of a run that had
//! written marked pending: the next `apply` undoes it first (see
//! [`crate::recovery`]).
//!
//! The signals are received by a thread of signal-hook's iterator (no code
//! runs in the signal handler but signal-hook's self-pipe write).

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::sync::Once;

use anyhow::{Context, Result};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// The signals that end a run.
pub const TERMINATING: [i32; 3] = [SIGTERM, SIGINT, SIGHUP];

/// How many termination signals arrived.
static COUNT: AtomicU32 = AtomicU32::new(0);
/// The first one.
static FIRST: AtomicI32 = AtomicI32::new(0);
/// The first signal is being handled (a rollback runs): it interrupts nothing more.
static ROLLING_BACK: AtomicBool = AtomicBool::new(false);
static INSTALL: Once = Once::new();

/// Handle termination signals from now on (idempotent).
pub fn install() -> Result<()> {
    let mut result = Ok(());
    INSTALL.call_once(|| {
        result = signal_hook::iterator::Signals::new(TERMINATING)
            .context("installing the handlers of SIGTERM, SIGINT and SIGHUP")
            .and_then(|mut signals| {
                std::thread::Builder::new()
                    .name("signals".into())
                    .spawn(move || {
                        for sig in signals.forever() {
                            received(sig);
                        }
                    })
                    .map(drop)
                    .context("starting the signal thread")
            });
    });
    result
}

fn received(sig: i32) {
    let n = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
    if n == 1 {
        FIRST.store(sig, Ordering::SeqCst);
        tracing::warn!(
            "{} received: stopping at the next step (a run that wrote anything rolls back first); \
             send it again to stop at once",
            name(sig)
        );
        return;
    }
    eprintln!(
        "irsa-agent: second termination signal ({}): stopping at once. An apply that had written \
         leaves its backup pending: the next `irsa-agent apply` undoes it first",
        name(sig)
    );
    signal_hook::low_level::exit(128 + sig);
}

/// The name of a termination signal, for messages.
pub fn name(sig: i32) -> &'static str {
    match sig {
        SIGTERM => "SIGTERM",
        SIGINT => "SIGINT",
        SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

/// How many termination signals arrived so far.
pub fn count() -> u32 {
    COUNT.load(Ordering::SeqCst)
}

/// The first termination signal, unless none arrived or it is already being
/// handled by a rollback.
pub fn interrupted() -> Option<i32> {
    if ROLLING_BACK.load(Ordering::SeqCst) || count() == 0 {
        return None;
    }
    Some(FIRST.load(Ordering::SeqCst))
}

/// At a step boundary: an error when a termination signal asks the run to stop.
pub fn check() -> Result<()> {
    match interrupted() {
        Some(sig) => Err(Interrupted(sig).into()),
        None => Ok(()),
    }
}

/// From now on the run puts things back: a first signal no longer
/// interrupts it (a second still stops the process).
pub fn rolling_back() {
    ROLLING_BACK.store(true, Ordering::SeqCst);
}

/// A run stopped by a termination signal.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("interrupted by {}", name(*.0))]
pub struct Interrupted(pub i32);

/// Resolve when a termination signal asks the run to stop (polled: a
/// signal is noticed within [`crate::live::POLL`]).
pub async fn wait_interrupted() -> Interrupted {
    loop {
        if let Some(sig) = interrupted() {
            return Interrupted(sig);
        }
        tokio::time::sleep(crate::live::POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_signal_interrupts_until_a_rollback_handles_it() {
        // Process-wide state: one test drives it through its phases.
        install().unwrap();
        assert!(check().is_ok(), "no signal yet");
        signal_hook::low_level::raise(SIGHUP).unwrap();
        let start = std::time::Instant::now();
        while count() == 0 && start.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(count(), 1, "the process survived and counted it");
        let e = check().unwrap_err();
        assert_eq!(e.to_string(), "interrupted by SIGHUP");
        assert!(e.downcast_ref::<Interrupted>().is_some());
        rolling_back();
        assert!(
            check().is_ok(),
            "a rollback is not interrupted by the same signal"
        );
    }
}
