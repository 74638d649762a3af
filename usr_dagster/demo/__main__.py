"""`python -m usr_dagster.demo [seed|home|serve]` (see scripts/run_demo.sh)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .seed import ensure_demo

DAGSTER_YAML = """\
# Project-local Dagster instance for the USR demo (SQLite storage, the embedded default).
# For teams: replace the storage block with PostgreSQL (see docs/dagster.md):
# storage:
#   postgres:
#     postgres_url:
#       env: DAGSTER_PG_URL
telemetry:
  enabled: false
concurrency:
  pools:
    default_limit: 1          # one maintenance op per dataset at a time (pool usr_maintenance__<dataset>)
  runs:
    max_concurrent_runs: 4
    tag_concurrency_limits:
      - key: "usr/maintenance"  # maintenance jobs run one at a time
        limit: 1
"""


def write_home(home: Path) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists():
        cfg.write_text(DAGSTER_YAML)
    return cfg


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m usr_dagster.demo")
    p.add_argument("command", choices=["seed", "home", "serve"], nargs="?", default="serve")
    p.add_argument("--root", default=os.environ.get("USR_ROOT", "demo_root"))
    p.add_argument("--home", default=os.environ.get("DAGSTER_HOME", ".dagster_home"))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", default="3000")
    a = p.parse_args(argv)
    root = Path(a.root).resolve()
    if a.command in ("seed", "serve"):
        ensure_demo(root, owned="USR_ROOT" not in os.environ)
        print(f"demo root: {root}")
    if a.command in ("home", "serve"):
        print(f"dagster.yaml: {write_home(Path(a.home).resolve())}")
    if a.command == "serve":
        os.environ["DAGSTER_HOME"] = str(Path(a.home).resolve())
        os.environ["USR_ROOT"] = str(root)
        dagster = Path(sys.executable).parent / "dagster"
        os.execv(str(dagster), [str(dagster), "dev", "-w", "workspace.yaml", "-h", a.host, "-p", a.port])
    return 0


if __name__ == "__main__":
    sys.exit(main())
