#!/usr/bin/env bash
# The bundled demo, end to end: sample repositories, a global secret and a
# user override in a demo RUNNER_HOME, `runner run`, and what it wrote.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUNNER_HOME="$PWD/demo-home/state"
unset RUNNER_DATABASE_URL RUNNER_MASTER_KEY_FILE
export RUNNER_USER=demo
runner=.venv/bin/runner
say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

rm -rf demo-home
mkdir -p demo-home/repos
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1
for repo in github.com/demo/payments-service github.com/demo/website; do
  dir="demo-home/repos/$repo"
  mkdir -p "$dir"
  git -C "$dir" init -q -b main
  printf '# %s\n\nA demo repository.\n' "${repo##*/}" > "$dir/README.md"
  git -C "$dir" add -A
  git -C "$dir" -c user.name=Demo -c user.email=demo@example.com commit -q -m "Initial commit"
done

say "Secrets: a global DEMO_API_TOKEN, and an override for user:demo (values read from stdin)"
printf 'global-token-that-nobody-should-see' | $runner secret set DEMO_API_TOKEN --global
printf 'demo-users-own-token-4f9a2c' | $runner secret set DEMO_API_TOKEN --user demo
$runner secret list --user demo

say "Validate the spec"
$runner validate specs/demo.batch.yaml

say "Where each step's env comes from (nothing decrypted)"
$runner env explain specs/demo.batch.yaml --namespace user:demo --repos-root demo-home/repos

say "Run it: each step in a container; the token is printed by the step but shown redacted"
set +e
$runner run specs/demo.batch.yaml --repos-root demo-home/repos --out demo-home/out --log-format text
code=$?
set -e

say "What it wrote"
find demo-home/out -type f | sort
say "A changeset spec"
cat demo-home/out/github.com/demo/payments-service/_root/demo-readme-badge.json
say "Its patch"
cat demo-home/out/github.com/demo/payments-service/_root/demo-readme-badge.patch

say "The audit log: one access per secret per run"
$runner secret log DEMO_API_TOKEN

say "Leak check: the token values appear nowhere in what the run left behind"
if grep -rl -e 'demo-users-own-token-4f9a2c' -e 'global-token-that-nobody-should-see' demo-home/out demo-home/state; then
  echo "LEAK FOUND" >&2; exit 1
fi
echo "no value found in demo-home/out or demo-home/state" >&2

say "Run it again: every step is served from the cache, no container starts"
$runner run specs/demo.batch.yaml --repos-root demo-home/repos --out demo-home/out --log-format text >/dev/null
exit $code
