#!/usr/bin/env bash
# Quickstart: set up, then lint, check the import contracts, and run the whole test suite on the embedded
# Postgres 18 and, when one answers on 127.0.0.1:5432 (or at TEST_PG15_URL), on a Postgres 15 server too.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/pipecd-runtime-$(id -u)}"
mkdir -p -m 700 "$XDG_RUNTIME_DIR"

echo "== ruff"
.venv/bin/ruff check .
echo "== mypy (services)"
.venv/bin/mypy services
echo "== import contracts"
.venv/bin/lint-imports

echo "== tests on the embedded Postgres"
env -u TEST_DATABASE_URL .venv/bin/pytest "$@"

pg15="${TEST_PG15_URL:-postgresql://postgres@127.0.0.1:5432/postgres}"
if .venv/bin/python -c "import psycopg,sys; psycopg.connect(sys.argv[1], connect_timeout=3).close()" "$pg15" 2>/dev/null; then
  echo "== tests on $pg15"
  TEST_DATABASE_URL="$pg15" .venv/bin/pytest "$@"
else
  echo "== no Postgres answers at $pg15: the second run is skipped"
fi
