#!/usr/bin/env bash
# The template tests compare runner's engine with Go's text/template, so the
# test suite needs a Go toolchain: install Debian's golang-go when missing.
set -euo pipefail
command -v go >/dev/null 2>&1 && exit 0
echo "setup: installing golang-go (Go's text/template is the tests' oracle)" >&2
apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go >&2
