#!/usr/bin/env bash
# Run a command with a private PostgreSQL server, its URL in
# RUNNER_TEST_POSTGRES_URL. When that variable already names a server that
# answers (a developer's own), use it and change nothing. Otherwise install
# Debian's postgresql if missing, initdb as the postgres user (it refuses
# root) in a private folder, start it on a private port, and stop and remove
# it when the command ends.
set -euo pipefail
if [ -n "${RUNNER_TEST_POSTGRES_URL:-}" ] && psql "$RUNNER_TEST_POSTGRES_URL" -Atc 'select 1' >/dev/null 2>&1; then
  exec "$@"
fi
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$pgbin" ] || [ ! -x "$pgbin/initdb" ]; then
  echo "setup: installing postgresql" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
dir=$(mktemp -d /tmp/runner-pg.XXXXXX)
chmod 0755 "$dir"
[ "$(id -u)" = 0 ] && chown postgres "$dir"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
stop() {
  as_pg "$pgbin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap stop EXIT
as_pg "$pgbin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >/dev/null
as_pg "$pgbin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
export RUNNER_TEST_POSTGRES_URL="postgresql://postgres@127.0.0.1:$port/postgres"
echo "setup: PostgreSQL on port $port for this run" >&2
set +e
"$@"
rc=$?
set -e
exit $rc
