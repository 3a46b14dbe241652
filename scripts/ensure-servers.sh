#!/usr/bin/env bash
# Installs the real servers (and the browser) the demo or the tests run against, as Debian packages, once.
#   ensure-servers.sh demo: prometheus (the demo's metrics step; it starts its own on 127.0.0.1)
#   ensure-servers.sh test: prometheus (+ promtool), prometheus-alertmanager (the alert-to-record
#                           test), chromium (the JupyterLab browser test, through Playwright; no download),
#                           kubernetes-client (kubectl: the printed kubectl commands run against the emulator),
#                           curl (the integrations' dry-run curl commands run against their stand-ins),
#                           awscli + jq (the AWS rotation's recorded command and undo run against moto_server)
# Installing needs root (apt-get); without it, nothing is changed and the message says what to run.
set -euo pipefail
for_what=${1:-}
case "$for_what" in
  demo) wanted=(prometheus) ;;
  test) wanted=(prometheus prometheus-alertmanager chromium kubernetes-client curl awscli jq) ;;
  *) echo "usage: $0 demo|test" >&2; exit 2 ;;
esac
need=()
for pkg in "${wanted[@]}"; do
  case "$pkg" in
    chromium) [ -x /usr/bin/chromium ] || need+=("$pkg") ;;
    kubernetes-client) command -v kubectl >/dev/null 2>&1 || need+=("$pkg") ;;
    awscli) command -v aws >/dev/null 2>&1 || need+=("$pkg") ;;
    *) command -v "$pkg" >/dev/null 2>&1 || need+=("$pkg") ;;
  esac
done
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "${EUID:-$(id -u)}" != 0 ]; then
  echo "ensure-servers: \`make $for_what\` runs against these Debian packages, not installed here: ${need[*]}" >&2
  echo "  Installing them needs root: run \`sudo make $for_what\`, or as root:" >&2
  echo "  apt-get install -y --no-install-recommends ${need[*]}" >&2
  if [ "$for_what" = demo ]; then
    echo "  To run the demo without them (no metrics step; the postmortem estimates from pod logs):" >&2
    echo "  .venv/bin/runbook demo --full" >&2
  fi
  exit 1
fi
echo "ensure-servers: installing ${need[*]} (Debian packages) for the $for_what..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
