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
    proj = doc["scenarios"]["projection"][0]
    assert set(proj["measurements"]) == {"ours_projection", "ours_full", "duckdb_projection", "duckdb_full"}
    assert len({m["rows"] for m in proj["measurements"].values()}) == 1  # DuckDB's reads return our rows
    assert proj["duckdb_ratio"] > 0 and proj["ratio_to_duckdb"] > 0
    assert doc["machine"]["nproc"] >= 1
    assert "| scenario |" in proc.stdout


def test_scale_benchmark_small_run_reports_ours_and_duckdb(tmp_path):
    """Issue 15: `benchmarks.run --scale` measures ours and DuckDB (unlimited, limited) on data built once
    under --workdir; a small budget makes our list scan stream in key ranges with DuckDB's row count."""
    out = tmp_path / "scale.json"
    cmd = [sys.executable, "-m", "benchmarks.run", "--scale", "--workdir", str(tmp_path / "w"), "--n", "30000",
           "--list-n", "20000", "--budget", "16MiB", "--out", str(out)]
    for _ in range(2):  # the second run reuses the data
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"scale benchmark failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert "data ready in 0s" in proc.stdout
    runs = json.loads(out.read_text())["runs"]
    assert set(runs) == {"floats_30000", "lists_20000"}
    for name, scen in runs.items():
        for label, row in scen.items():
            assert "error" not in row["ours"], (name, label, row["ours"])
            assert row["ours"]["rows"] == row["duckdb_unlimited"]["rows"], (name, label)
            assert row["ours"]["bytes_per_row"] > 0
    lists = runs["lists_20000"]["list"]["ours"]
    assert lists["ordered"] is True and lists["ranges"] >= 2  # over budget: key ranges, base order kept
