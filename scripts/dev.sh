#!/usr/bin/env bash
# Quickstart: set up, then run PipeCD on the embedded Postgres with the demo company.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
echo "== starting PipeCD: the embedded Postgres, migrations, demo data, then the server"
exec .venv/bin/pipecd dev "$@"
