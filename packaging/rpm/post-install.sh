#!/bin/sh
# Let systemd see the new or changed irsa-agent.service. The unit is not
# enabled: edit /etc/irsa-agent/config.yaml first, then enable it.
set -e
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null 2>&1 || true
fi
