#!/usr/bin/env bash
# Build the local images the tests and the demo use. No registry is
# reachable, so they are built FROM scratch around a static busybox.
# Builds only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
BUSYBOX=/bin/busybox
if ! file -L "$BUSYBOX" 2>/dev/null | grep -q 'statically linked'; then
  echo "setup: installing busybox-static (a static $BUSYBOX is needed for the images)" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >&2
fi
build() {  # build TAG DIR
  local tag=$1 dir=$2 ctx
  docker image inspect "$tag" >/dev/null 2>&1 && return 0
  ctx=$(mktemp -d)
  cp -r "$dir"/. "$ctx"/
  cp "$BUSYBOX" "$ctx/busybox"
  echo "setup: building image $tag" >&2
  if ! docker build -q -t "$tag" "$ctx" >/dev/null 2>"$ctx.err"; then cat "$ctx.err" >&2; exit 1; fi
  rm -f "$ctx.err"
  rm -rf "$ctx"
}
build runner-test/busybox:latest images/busybox
build runner-demo/tools:latest images/demo
