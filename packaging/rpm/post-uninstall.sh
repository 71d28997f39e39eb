#!/bin/sh
# Forget irsa-agent.service. Backups under /var/lib/irsa-agent are kept: they
# are the only copy of the node's configuration before an apply.
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null 2>&1 || true
fi
