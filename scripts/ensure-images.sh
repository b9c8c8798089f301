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

# runner-test/debian-tools: curl, git and a CA bundle for the brokered-secret
# tests (real TLS clients and git over HTTPS). Built from Debian's packages
# by debootstrap; the root tarball is cached so a removed image re-imports in
# seconds instead of minutes.
debian_tools() {
  local tag=runner-test/debian-tools:latest
  local cache=${RUNNER_TEST_IMAGE_CACHE:-/var/cache/runner-test}
  local tarball=$cache/debian-tools-bookworm.tar
  docker image inspect "$tag" >/dev/null 2>&1 && return 0
  mkdir -p "$cache"
  if [ ! -s "$tarball" ]; then
    if ! command -v debootstrap >/dev/null 2>&1; then
      echo "setup: installing debootstrap (for $tag)" >&2
      apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2
    fi
    local root
    root=$(mktemp -d)
    echo "setup: building $tag with debootstrap (a few minutes)" >&2
    debootstrap --variant=minbase --include=curl,git,ca-certificates \
      bookworm "$root" http://deb.debian.org/debian >&2
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$root"
  fi
  echo "setup: importing $tag from $tarball" >&2
  docker import - "$tag" <"$tarball" >/dev/null
}
debian_tools
