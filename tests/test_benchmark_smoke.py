"""Smoke run of the benchmark suite (issue 5): `python -m benchmarks.run --quick` must keep working.

No timing assertions: only that the command exits 0 and reports every scenario without errors.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = {"merged_read", "merged_read_list", "merged_read_seqkey", "projection", "head", "compaction",
             "part_write", "attach", "ingest", "dagster"}


def test_benchmark_quick_run_reports_every_scenario(tmp_path):
    out = tmp_path / "latest.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"benchmark failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    doc = json.loads(out.read_text())
    assert set(doc["scenarios"]) == SCENARIOS
    for name, entries in doc["scenarios"].items():
        assert entries, name
        for entry in entries:
            assert "error" not in entry, f"{name}: {entry['error']}"
    for name in ("merged_read", "merged_read_list", "merged_read_seqkey"):
        entry = doc["scenarios"][name][0]
        assert entry["rows_agree"] and entry["same_cells_as_pyarrow"], f"{name}: ours differs from the baselines"
    assert doc["machine"]["nproc"] >= 1
    assert "| scenario |" in proc.stdout
