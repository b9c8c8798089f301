#!/usr/bin/env bash
# Make sure a Docker engine answers. On a machine where one runs already,
# change nothing; otherwise install Debian's docker.io and start dockerd.
set -euo pipefail
# runner's fence between job networks is an nftables table of its own (docs/egress.md).
if [ "$(id -u)" = 0 ] && ! command -v nft >/dev/null 2>&1; then
  echo "setup: installing nftables" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables >&2
fi
if docker info >/dev/null 2>&1; then
  exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: no Docker engine answers and we are not root; start Docker and retry" >&2
    exit 1
  fi
  echo "setup: installing docker.io" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >&2
fi
if ! docker info >/dev/null 2>&1; then
  echo "setup: starting dockerd in the background (log: /var/log/runner-dockerd.log)" >&2
  nohup dockerd >/var/log/runner-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
fi
docker info >/dev/null 2>&1 || { echo "setup: dockerd did not answer within 60 s; see /var/log/runner-dockerd.log" >&2; exit 1; }
