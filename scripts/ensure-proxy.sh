#!/usr/bin/env bash
# Install mitmproxy, the egress proxy of `runner run --network allow`, into a
# virtual environment of its own beside runner's (.venv/proxy), where runner
# looks for `mitmdump` (RUNNER_PROXY_BIN names another). Its own environment
# keeps mitmproxy's pinned dependencies away from runner's.
# Re-installs only when the pinned version changes.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=11.0.2
PROXY=.venv/proxy
stamp=$PROXY/.installed-$VERSION
if [ -f "$stamp" ] && [ -x "$PROXY/bin/mitmdump" ]; then
  exit 0
fi
echo "setup: installing mitmproxy $VERSION for runner's egress proxy" >&2
python3 -m venv "$PROXY"
"$PROXY/bin/pip" install -q --upgrade pip >&2
"$PROXY/bin/pip" install -q "mitmproxy==$VERSION" >&2
touch "$stamp"
