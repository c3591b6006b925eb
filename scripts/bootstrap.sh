#!/usr/bin/env bash
# Create .venv and install PipeCD with its test tools, again only when pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "PipeCD needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv ($("$PYTHON" --version))"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.pipecd-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  # pip's own output goes to a log, shown only when it fails
  log=.venv/pip-install.log
  pip() {
    if ! .venv/bin/python -m pip "$@" --quiet --disable-pip-version-check >"$log" 2>&1; then
      tail -n 30 "$log" >&2
      echo "pip install failed; the whole log is in $log" >&2
      exit 1
    fi
  }
  echo "== installing PipeCD and its test tools into .venv (about a minute the first time)"
  pip install --upgrade pip
  pip install -e '.[test]'
  echo "$want" > "$stamp"
fi
