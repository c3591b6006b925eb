#!/usr/bin/env bash
# The side-by-side benchmark (see README, "Benchmark"): sets up PipeCD and PostGraphile 5 (from npm, with the
# Node 22 it needs), then measures. Arguments go to `python -m bench.run` (e.g. --scales 10000 --rounds 3,
# --with-1m, --smoke).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
if [ ! -x bench/postgraphile/node_modules/.bin/node ] || [ bench/postgraphile/package-lock.json -nt bench/postgraphile/node_modules ]; then
  echo "== installing PostGraphile 5 and Node 22 from npm into bench/postgraphile (about 500 MB)"
  npm ci --prefix bench/postgraphile --no-audit --no-fund --loglevel=error
fi
exec .venv/bin/python -m bench.run "$@"
