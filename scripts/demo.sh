#!/usr/bin/env bash
# The bundled demo. Until `runner run` exists it validates the example specs.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/runner --help
