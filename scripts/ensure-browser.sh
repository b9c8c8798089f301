#!/usr/bin/env bash
# The web pages' tests drive Debian's Chromium with Playwright (Playwright's
# own browser download cannot work here): install it when missing.
set -euo pipefail
command -v chromium >/dev/null 2>&1 && exit 0
echo "setup: installing chromium (for the web pages' browser tests)" >&2
apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2
