#!/usr/bin/env bash
# The test command: creates .venv if needed, installs the project with its test extras, runs pytest
# (every suite, the slow crash/concurrency/webserver ones included).  Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[test,dagster,postgres,bench]"
exec .venv/bin/python -m pytest "$@"
