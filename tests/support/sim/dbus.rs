//! A private `dbus-daemon` per simulated cluster, standing in for the system
//! bus (Debian package `dbus-daemon`). The tool under test reaches it through
//! `DBUS_SYSTEM_BUS_ADDRESS`. Nothing else runs on it: the only service is
//! the simulator's fake systemd (see `systemd.rs`).

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};

pub const DBUS_DAEMON: &str = "/usr/bin/dbus-daemon";

/// The bus configuration: a unix socket in the cluster's temp dir, EXTERNAL
/// auth (the peer's uid over SO_PEERCRED), and a policy that lets anyone own
/// any name and send/receive anything. No `<user>` (tests run as root and no
/// privileges are dropped), no `<fork>`, no pid file, no service activation.
pub fn config(socket: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <!-- irsa-agent test simulator: a private stand-in for the system bus -->
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"#,
        socket.display()
    )
}

/// A running `dbus-daemon --nofork --print-address`; killed on drop.
pub struct DbusDaemon {
    child: Child,
    pub address: String,
}

impl DbusDaemon {
    pub fn spawn(dir: &Path) -> Result<Self> {
        let conf = dir.join("system-bus.conf");
        std::fs::write(&conf, config(&dir.join("system_bus_socket")))
            .with_context(|| format!("writing {}", conf.display()))?;
        let mut child = Command::new(DBUS_DAEMON)
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--print-address"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| {
                format!("starting {DBUS_DAEMON} (Debian package dbus-daemon) for the simulator")
            })?;
        let mut line = String::new();
        let n = BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .context("reading the address printed by dbus-daemon")?;
        if n == 0 {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "dbus-daemon exited without printing its address: {}",
                err.trim()
            );
        }
        Ok(DbusDaemon {
            child,
            address: line.trim().to_string(),
        })
    }
}

impl Drop for DbusDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
