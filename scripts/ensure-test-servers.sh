#!/usr/bin/env bash
# The servers and the browser the tests run against (see ensure-servers.sh): prometheus,
# prometheus-alertmanager, chromium; installed once, as root.
exec bash "$(dirname "$0")/ensure-servers.sh" test
