"""Namespace assets of two datasets materialize in parallel processes (multiprocess executor, SQLite instance)
without corrupting each other [A6] [G3]."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from usr_core import Dataset
from usr_dagster.demo.namespaces import gc_fraction, longest_orf


@pytest.mark.slow
def test_A6_multiprocess_executor_parallel_namespace_assets(usr_root, tmp_path, monkeypatch):
    """[A6] [G3] one run, multiprocess executor, non-ephemeral SQLite instance: 4 namespace assets on 2 datasets
    in separate processes with overlapping steps; every part lands and every dataset validates."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "USR_TEST_ROOT": str(usr_root), "DAGSTER_HOME": str(home)}
    dagster_cli = Path(sys.executable).parent / "dagster"
    proc = subprocess.run([str(dagster_cli), "job", "execute", "-f", str(Path(__file__).with_name("mp_defs.py")),
                           "-j", "usr_namespaces"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = dg.DagsterInstance.get()
    assert not instance.is_ephemeral
    (run,) = instance.get_runs()
    assert run.is_success
    run_id = run.run_id
    logs = instance.all_logs(run_id)
    starts = {e.step_key: e for e in logs if e.dagster_event and e.dagster_event.event_type_value == "STEP_START"}
    ends = {e.step_key: e for e in logs if e.dagster_event and e.dagster_event.event_type_value == "STEP_SUCCESS"}
    asset_steps = {k for k in starts if not k.startswith("check_")}
    assert asset_steps == {"beta__gc", "beta__orf", "grp__alpha__gc", "grp__alpha__orf"}
    pids = {starts[k].dagster_event.pid for k in asset_steps}
    assert len(pids) == 4 and run_id
    windows = sorted((starts[k].timestamp, ends[k].timestamp) for k in asset_steps)
    assert any(b[0] < a[1] for a, b in zip(windows, windows[1:])), f"steps never overlapped: {windows}"
    for name in ("beta", "grp/alpha"):
        ds = Dataset(usr_root, name)
        for ns in ("gc", "orf"):
            assert len(list((ds.dir / "_derived" / ns).glob("part-*.parquet"))) == 1
        ds.validate(strict=True)
        t = ds.read_table(columns=["sequence", "gc__fraction", "orf__longest_nt"])
        for row in t.to_pylist():
            assert row["gc__fraction"] == pytest.approx(gc_fraction(row["sequence"]))
            assert row["orf__longest_nt"] == longest_orf(row["sequence"])
    checks = [e for e in logs if e.dagster_event and e.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert len(checks) == 16 and all(e.dagster_event.event_specific_data.passed for e in checks)
