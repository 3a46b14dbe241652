#!/usr/bin/env bash
# Installs the real servers and the browser the tests run against (Debian packages), once.
#   prometheus (+ promtool): tests start their own instance on a free 127.0.0.1 port.
#   prometheus-alertmanager: the alert-to-record test starts its own on 127.0.0.1.
#   chromium: the JupyterLab browser test drives it through Playwright (no browser download).
set -euo pipefail
need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "ensure-test-servers: missing ${need[*]} and not root: install them with apt-get" >&2
  exit 1
fi
echo "ensure-test-servers: installing ${need[*]} (Debian packages)..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
