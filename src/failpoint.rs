//! Named failpoints for the crash-safety tests. They exist only in builds
//! with the cargo feature `failpoints` (off by default; `tests/run` and the
//! integration tests that need them turn it on): without it [`hit`] and
//! [`mid_write`] are empty inline functions that read no environment, so a
//! release build ignores `IRSA_AGENT_FAILPOINT` entirely.
//!
//! `IRSA_AGENT_FAILPOINT=SPEC[,SPEC...]`, `SPEC = NAME[#N][:ACTION]`:
//! - `error` (the default): the step fails with an error, as a real failure
//!   would (apply cleans up or rolls back). Acts at the first hit only, so
//!   the clean-up, which passes the same points again, can run.
//! - `kill`: the process sends itself SIGKILL: a real crash, no clean-up.
//! - `delay=MS`: sleep, then go on; at every hit (to widen a window, or to
//!   hold the run lock in a test).
//!
//! `#N` acts at the N-th hit of that point only (1-based), e.g.
//! `after-rename#2:kill` stops after the second file of a run is in place.
//!
//! The points, in the order `apply` passes them, then `mid-restore`: see [`NAMES`].

pub const ENV: &str = "IRSA_AGENT_FAILPOINT";

/// Every failpoint, in the order a run of `apply` reaches them.
pub const NAMES: [&str; 10] = [
    // the run lock is held, nothing is written yet
    "after-lock",
    // a file copy of the backup is half written (temp file, not yet renamed)
    "mid-backup",
    // the backup is complete (renamed into place), no node file written yet
    "after-backup",
    // a node file's temp file is half written, before fsync and rename
    "mid-write",
    // a node file was renamed into place (#N: the N-th file of the run)
    "after-rename",
    // every file is written, the apiserver not restarted yet
    "after-write",
    // the restart was done (systemd job / new static pod), not waited for
    "after-restart",
    // a fresh token was verified, the old token not yet reviewed
    "during-verify",
    // everything succeeded; the backup is not yet marked finished
    "before-finish",
    // a file was put back from a backup (apply's own rollback, the undoing
    // of an interrupted apply, `rollback`); #N: the N-th file
    "mid-restore",
];

#[cfg(feature = "failpoints")]
pub use real::{hit, mid_write};

#[cfg(feature = "failpoints")]
mod real {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;
    use std::time::Duration;

    use anyhow::{anyhow, bail, Result};

    use super::{ENV, NAMES};

    use crate::paths::BACKUP_DIR;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Action {
        Error,
        Kill,
        Delay(u64),
        Pause,
    }

    #[derive(Debug)]
    struct Spec {
        name: String,
        nth: Option<u32>,
        action: Action,
        hits: AtomicU32,
    }

    fn parse(value: &str) -> Result<Vec<Spec>> {
        let mut out = Vec::new();
        for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (point, action) = item.split_once(':').unwrap_or((item, "error"));
            let (name, nth) = match point.split_once('#') {
                Some((n, k)) => {
                    let k: u32 =
                        k.parse().ok().filter(|k| *k > 0).ok_or_else(|| {
                            anyhow!("{ENV}: {item:?}: #N must be a positive number")
                        })?;
                    (n, Some(k))
                }
                None => (point, None),
            };
            if !NAMES.contains(&name) {
                bail!(
                    "{ENV}: unknown failpoint {name:?} (known: {})",
                    NAMES.join(", ")
                );
            }
            let action = match action {
                "error" => Action::Error,
                "kill" => Action::Kill,
                "pause" => Action::Pause,
                a => match a.strip_prefix("delay=").and_then(|ms| ms.parse().ok()) {
                    Some(ms) => Action::Delay(ms),
                    None => {
                        bail!("{ENV}: {item:?}: the action must be error, kill, pause or delay=MS")
                    }
                },
            };
            out.push(Spec {
                name: name.to_string(),
                nth,
                action,
                hits: AtomicU32::new(0),
            });
        }
        Ok(out)
    }

    fn specs() -> &'static std::result::Result<Vec<Spec>, String> {
        static SPECS: OnceLock<std::result::Result<Vec<Spec>, String>> = OnceLock::new();
        SPECS.get_or_init(|| match std::env::var(ENV) {
            Ok(v) => parse(&v).map_err(|e| format!("{e:#}")),
            Err(_) => Ok(Vec::new()),
        })
    }

    /// Pass the failpoint `name`: act if `IRSA_AGENT_FAILPOINT` asks for it.
    pub fn hit(name: &str) -> Result<()> {
        debug_assert!(NAMES.contains(&name), "unknown failpoint {name}");
        let specs = specs().as_ref().map_err(|e| anyhow!("{e}"))?;
        for s in specs.iter().filter(|s| s.name == name) {
            let n = s.hits.fetch_add(1, Ordering::SeqCst) + 1;
            let acts = match (s.nth, s.action) {
                (Some(k), _) => n == k,
                (None, Action::Delay(_) | Action::Pause) => true,
                (None, _) => n == 1,
            };
            if !acts {
                continue;
            }
            match s.action {
                Action::Error => bail!("failpoint {name} ({ENV})"),
                Action::Delay(ms) => std::thread::sleep(Duration::from_millis(ms)),
                Action::Pause => {
                    // Wait for a signal (the signal tests send one), at most 60 s.
                    let seen = crate::signals::count();
                    eprintln!("failpoint {name}: paused ({ENV})");
                    let start = std::time::Instant::now();
                    while crate::signals::count() == seen
                        && start.elapsed() < Duration::from_secs(60)
                    {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                Action::Kill => {
                    eprintln!("failpoint {name}: SIGKILL ({ENV})");
                    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
                    // SIGKILL cannot be caught; never reached.
                    std::process::abort();
                }
            }
        }
        Ok(())
    }

    /// The point inside an atomic write of `node_path` (half of the temp file
    /// written): `mid-backup` for irsa-agent's own backups, `mid-write` for
    /// everything else.
    pub fn mid_write(node_path: &str) -> Result<()> {
        if node_path.starts_with(&format!("{BACKUP_DIR}/")) {
            hit("mid-backup")
        } else {
            hit("mid-write")
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn specs_parse_with_defaults_and_counts() {
            let s = parse("after-rename#2:kill, mid-write:delay=30,after-write").unwrap();
            assert_eq!(s.len(), 3);
            assert_eq!(
                (s[0].name.as_str(), s[0].nth, s[0].action),
                ("after-rename", Some(2), Action::Kill)
            );
            assert_eq!(s[1].action, Action::Delay(30));
            assert_eq!((s[2].nth, s[2].action), (None, Action::Error));
            assert!(parse("").unwrap().is_empty());
        }

        #[test]
        fn bad_specs_are_refused_naming_the_problem() {
            for (bad, want) in [
                ("after-wirte", "unknown failpoint \"after-wirte\""),
                ("after-write:explode", "error, kill, pause or delay=MS"),
                ("after-write:delay=x", "delay=MS"),
                ("after-rename#0:kill", "positive"),
                ("after-rename#x", "positive"),
            ] {
                let e = format!("{:#}", parse(bad).unwrap_err());
                assert!(e.contains(want) && e.starts_with(ENV), "{bad}: {e}");
            }
        }
    }
}

/// Without the `failpoints` feature: nothing, not even a look at the
/// environment.
#[cfg(not(feature = "failpoints"))]
#[inline]
pub fn hit(_name: &str) -> anyhow::Result<()> {
    Ok(())
}

/// Without the `failpoints` feature: nothing.
#[cfg(not(feature = "failpoints"))]
#[inline]
pub fn mid_write(_node_path: &str) -> anyhow::Result<()> {
    Ok(())
}

/// A build without the feature (a release build) ignores the variable, even
/// a spec that would kill the process or one that does not parse.
#[cfg(all(test, not(feature = "failpoints")))]
mod without_the_feature {
    use super::*;

    #[test]
    fn the_variable_is_ignored() {
        std::env::set_var(ENV, "after-lock:kill,after-write,no-such-point");
        for name in NAMES {
            hit(name).unwrap();
        }
        mid_write("/etc/kubernetes/manifests/kube-apiserver.yaml").unwrap();
        mid_write(&format!("{}/x", crate::paths::BACKUP_DIR)).unwrap();
        std::env::remove_var(ENV);
    }
}
