#!/usr/bin/env bash
# Make gVisor's runtime `runsc` available to the running Docker engine, as
# `runner run --isolation gvisor` needs it. Where the engine lists it already,
# change nothing. Otherwise install Debian's runsc, merge it into the engine's
# daemon.json (its --config-file, else /etc/docker/daemon.json; every other
# setting kept) and send dockerd SIGHUP: a reload, so running containers are
# untouched. Where that cannot be done (not root, no single dockerd to
# reload), fail and print what to add.
#
# "--network=host" makes gVisor use the network namespace Docker made for the
# container instead of its own network stack, which refuses Docker's bridge
# networks on this kernel ("cannot run with network enabled in root network
# namespace"): the container stays on its own bridge, as under runc.
#
# The engine is the one `docker` talks to (DOCKER_HOST); RUNNER_DOCKERD_PID
# names its dockerd where several run (the tests' private engines).
set -euo pipefail
RUNSC=/usr/bin/runsc
ENTRY='{"runtimes": {"runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=host"]}}}'

registered() {
  docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"runsc"'
}

fail() {
  echo "setup: $1" >&2
  cat >&2 <<EOF
setup: to use --isolation gvisor, install runsc (apt-get install runsc) and add
       this to the engine's daemon.json (merged with what is there), then reload
       dockerd (\`kill -HUP \$(pidof dockerd)\` or \`systemctl reload docker\`):
  $ENTRY
EOF
  exit 1
}

if registered; then
  exit 0
fi
docker info >/dev/null 2>&1 || fail "no Docker engine answers; start it first (scripts/ensure-docker.sh)"
[ "$(id -u)" = 0 ] || fail "the Docker engine has no runsc runtime and we are not root"

pid=${RUNNER_DOCKERD_PID:-$(pidof dockerd || true)}
if [ -z "$pid" ] || [ "$(wc -w <<<"$pid")" != 1 ]; then
  fail "cannot tell which dockerd to reload (pids: ${pid:-none}); set RUNNER_DOCKERD_PID"
fi
if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != dockerd ]; then
  fail "process $pid is not a running dockerd"
fi
# The file this engine reads: its --config-file, or the default.
config=$(python3 - "$pid" <<'EOF'
import sys

args = open(f"/proc/{sys.argv[1]}/cmdline", "rb").read().split(b"\0")
path = "/etc/docker/daemon.json"
for i, arg in enumerate(args):
    if arg.startswith(b"--config-file="):
        path = arg.split(b"=", 1)[1].decode()
    elif arg == b"--config-file" and i + 1 < len(args):
        path = args[i + 1].decode()
print(path)
EOF
)

if [ ! -x "$RUNSC" ]; then
  echo "setup: installing runsc (gVisor)" >&2
  apt-get update -qq >&2
  # needrestart would offer to restart docker; nothing is restarted here.
  NEEDRESTART_SUSPEND=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq runsc >&2
fi

mkdir -p "$(dirname "$config")"
# Merged as JSON, never edited as text: whatever else is set stays as it is.
python3 - "$config" "$RUNSC" <<'EOF' || fail "could not update $config"
import json
import os
import sys

path, runsc = sys.argv[1], sys.argv[2]
try:
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
except FileNotFoundError:
    config = {}
if not isinstance(config, dict) or not isinstance(config.get("runtimes", {}), dict):
    sys.exit(f"setup: {path} does not hold a JSON object with a runtimes object")
config.setdefault("runtimes", {})["runsc"] = {"path": runsc, "runtimeArgs": ["--network=host"]}
tmp = path + ".runner-tmp"
with open(tmp, "w", encoding="utf-8") as f:
    json.dump(config, f, indent=2)
    f.write("\n")
os.replace(tmp, path)
EOF
echo "setup: registered runsc in $config; reloading dockerd (pid $pid)" >&2
kill -HUP "$pid"
for _ in $(seq 1 30); do
  registered && exit 0
  sleep 1
done
fail "dockerd did not list runsc within 30 s of the reload (see its log)"
