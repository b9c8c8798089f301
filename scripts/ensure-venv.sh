#!/usr/bin/env bash
# Create .venv and install the project editable with its dev extras.
# Re-installs only when pyproject.toml is newer than the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -m venv .venv 2>/dev/null; then
    echo "setup: python3-venv is missing; installing it" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
    rm -rf .venv && "$PY" -m venv .venv
  fi
fi
stamp=.venv/.installed
# A dependency added since the last install (prometheus_client for /metrics,
# xdist for `make test`) also forces one, even where pyproject.toml's time stamp
# did not move (a fresh clone).
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] \
  || ! .venv/bin/python -c 'import prometheus_client, xdist' 2>/dev/null; then
  .venv/bin/pip install -q --upgrade pip >&2
  .venv/bin/pip install -q -e '.[dev]' >&2
  touch "$stamp"
fi
