"""Helpers for the Dagster tests (imported by name; tests/ has no packages)."""
from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

import dagster as dg

from usr_core import Dataset, ensure_registry_entries
from usr_dagster import build_usr_definitions
from usr_dagster.demo.namespaces import DEMO_NAMESPACES
from usr_dagster.demo.seed import generate_sequences

REPO = Path(__file__).resolve().parents[2]
CREATED = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


def make_root(root: Path, datasets: dict[str, int], seed: int = 11) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    ensure_registry_entries(root, {ns.name: ns.registry_entry() for ns in DEMO_NAMESPACES})
    for i, (name, n) in enumerate(sorted(datasets.items())):
        ds = Dataset(root, name)
        ds.init(source="test")
        ds.import_rows([{"sequence": s, "created_at": CREATED} for s in generate_sequences(n, seed + i)],
                       source="test")
    return root


def usr_cli(root: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "usr"
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-c", "from usr_core.cli.main import main; main()"]
    proc = subprocess.run([*cmd, "--root", str(root), *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)
    assert proc.returncode == 0, f"usr {' '.join(args)} failed: {proc.stdout}\n{proc.stderr}"
    return proc


def cli_attach_motif(root: Path, dataset: str, tmp: Path, *, register: bool = True, value: int = 1) -> None:
    """A write from outside Dagster: register `motif` and attach it with the `usr` CLI in a subprocess."""
    ids = Dataset(root, dataset).read_table(columns=["id"], include_overlays=False).column("id")
    path = tmp / f"motif-{value}.parquet"
    pq.write_table(pa.table({"id": ids, "motif__hits": pa.array([value] * len(ids), pa.int64())}), path)
    if register:
        usr_cli(root, "namespace", "register", "motif", "--columns", "motif__hits:int64", "--owner", "cli@example.org")
    usr_cli(root, "attach", dataset, "--path", str(path), "--namespace", "motif", "--key", "id",
            *(["--allow-overwrite"] if not register else []))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Ticker:
    """One sensor tick as the daemon does it: evaluate with the stored cursor, record the asset events in the
    instance, keep the new cursor."""

    def __init__(self, root, instance):
        self.root, self.instance, self.cursor = root, instance, None

    def tick(self):
        defs = build_usr_definitions(self.root, DEMO_NAMESPACES)  # a reload sees new namespaces
        sensor = defs.resolve_sensor_def("usr_event_log_sensor")
        ctx = dg.build_sensor_context(instance=self.instance, cursor=self.cursor, definitions=defs)
        result = sensor(ctx)
        self.cursor = result.cursor
        for ev in result.asset_events:
            self.instance.report_runless_asset_event(ev)
        return result.asset_events
