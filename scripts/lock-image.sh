#!/usr/bin/env bash
# Regenerates deploy/constraints.txt: every package the image installs (deploy/Dockerfile: the core,
# with its [s3] extra, papermill[s3,gcs], kubernetes<37), resolved by pip for Python 3.11 without installing anything.
# Run after changing pyproject.toml's dependencies; tests/test_deploy_manifests.py checks the pins
# against pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3.11 -m venv "$tmp/venv" 2>/dev/null || python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet --upgrade pip
"$tmp/venv/bin/pip" install --dry-run --ignore-installed --quiet --report "$tmp/report.json" \
  '.[s3]' 'papermill[s3,gcs]' 'kubernetes<37'
"$tmp/venv/bin/python" - "$tmp/report.json" > deploy/constraints.txt <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
pins = sorted((i["metadata"]["name"].lower(), i["metadata"]["version"]) for i in report["install"])
print("# The image's exact packages (scripts/lock-image.sh; pip's resolution for Python 3.11).")
print("# kubernetes<37: botocore pins python-dateutil<3, which kubernetes 37 refuses.")
for name, version in pins:
    if name != "mistral-runbooks":
        print(f"{name}=={version}")
PY
echo "deploy/constraints.txt: $(grep -vc '^#' deploy/constraints.txt) pins"
