//! Where irsa-agent keeps its own files on the node (node paths, resolved
//! under the root by [`crate::system::Sysroot`]). One place, so that modules
//! naming them need not depend on the modules that write them.

/// The desired state read by `apply` when no flag names it.
pub const CONFIG_FILE: &str = "/etc/irsa-agent/config.yaml";
/// irsa-agent's own state.
pub const STATE_DIR: &str = "/var/lib/irsa-agent";
/// One directory per backup, outside every directory a daemon watches.
pub const BACKUP_DIR: &str = "/var/lib/irsa-agent/backups";
