#!/usr/bin/env bash
# Install what the private-registry tests need (tests/test_registry_auth.py):
# Debian's docker-registry package (the CNCF distribution registry) and
# htpasswd from apache2-utils, which writes the bcrypt password file the
# registry's htpasswd authentication reads. The package's own service stays
# stopped: each test session starts a registry of its own on loopback.
# Changes nothing where both are already installed.
set -euo pipefail
need=()
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v htpasswd >/dev/null 2>&1 || need+=(apache2-utils)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "setup: ${need[*]} missing; run scripts/ensure-registry.sh as root" >&2
  exit 1
fi
echo "setup: installing ${need[*]} for the private-registry tests" >&2
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d keeps the package from starting its system-wide registry on :5000.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  made_policy=1
fi
trap '[ "$made_policy" = 1 ] && rm -f "$policy"' EXIT
apt-get install -y -q --no-install-recommends "${need[@]}" >&2 || {
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${need[@]}" >&2
}
