#!/usr/bin/env sh
# One command on a fresh machine with Python 3.11+: venv, install, seed the demo, DAGSTER_HOME, UI on :3000.
set -eu
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q -e '.[dagster]'
export DAGSTER_HOME="$PWD/.dagster_home"
exec .venv/bin/python -m usr_dagster.demo serve --root "${USR_ROOT:-demo_root}" --home "$DAGSTER_HOME" \
  --host "${DAGSTER_HOST:-127.0.0.1}" --port "${DAGSTER_PORT:-3000}"
