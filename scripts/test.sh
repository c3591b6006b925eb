#!/usr/bin/env bash
# Quickstart: set up, then lint, check the import contracts, run the whole test suite on the embedded Postgres 18
# and, when one answers on 127.0.0.1:5432 (or at TEST_PG15_URL), on a Postgres 15 server too, and end with a smoke
# run of the benchmark (a tiny run that fails when the harness breaks). The two test runs go side by side, each
# one's output printed whole when it ends; the benchmark's PostGraphile installs from npm meanwhile.
# Arguments go to both pytest runs.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh || exit 1
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/pipecd-runtime-$(id -u)}"
mkdir -p -m 700 "$XDG_RUNTIME_DIR"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
failed=()

# in the background, into its own log: the step's name goes to $out/<name>.pid
start() {
  local name=$1
  shift
  ( "$@" ) >"$out/$name.log" 2>&1 &
  echo $! >"$out/$name.pid"
}

# waits for a background step, prints its output, and records its failure
finish() {
  local name=$1 status=0
  wait "$(cat "$out/$name.pid")" || status=$?
  cat "$out/$name.log"
  if [ "$status" -ne 0 ]; then
    echo "== $name failed (exit $status)"
    failed+=("$name")
  fi
}

install_postgraphile() {
  if [ ! -x bench/postgraphile/node_modules/.bin/node ] || [ bench/postgraphile/package-lock.json -nt bench/postgraphile/node_modules ]; then
    echo "== installing PostGraphile 5 and Node 22 from npm into bench/postgraphile (about 500 MB)"
    npm ci --prefix bench/postgraphile --no-audit --no-fund --loglevel=error
  fi
}
start postgraphile install_postgraphile

pg15="${TEST_PG15_URL:-postgresql://postgres@127.0.0.1:5432/postgres}"
if .venv/bin/python -c "import psycopg,sys; psycopg.connect(sys.argv[1], connect_timeout=3).close()" "$pg15" 2>/dev/null; then
  start pg15 env TEST_DATABASE_URL="$pg15" .venv/bin/pytest "$@"
  pg15_note="== tests on $pg15"
else
  pg15_note="== no Postgres answers at $pg15: the second run is skipped"
fi

echo "== ruff"
.venv/bin/ruff check . || failed+=(ruff)
echo "== mypy (services)"
.venv/bin/mypy services || failed+=(mypy)
echo "== import contracts"
.venv/bin/lint-imports || failed+=(import-contracts)

echo "== tests on the embedded Postgres"
env -u TEST_DATABASE_URL .venv/bin/pytest "$@" || failed+=(tests-embedded)

# the smoke run overlaps the Postgres 15 tests' end (the embedded run is the shorter one)
echo "== benchmark smoke run"
finish postgraphile
.venv/bin/python -m bench.run --smoke --output "$out/bench" || failed+=(benchmark-smoke)

echo "$pg15_note"
[ -f "$out/pg15.pid" ] && finish pg15

if [ ${#failed[@]} -gt 0 ]; then
  echo "== failed: ${failed[*]}"
  exit 1
fi
echo "== all passed"
