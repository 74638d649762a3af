"""Smoke run of benchmarks/incremental.py at small N: the function gets exactly the added rows, a run with nothing
new calls nothing, writes nothing and keeps the data version (the 10% time target is for N = 1M, not here)."""
from __future__ import annotations

from benchmarks.incremental import main, run, verdict


def test_incremental_benchmark_smoke():
    r = run(2000, 20)
    assert r["first_rows"] == 2000 and r["second_rows"] == 20
    assert r["third_calls"] == 0 and not r["third_wrote_files"] and r["third_same_version"]
    assert r["version_changed_on_add"]
    assert verdict(r, max_ratio=10.0) == []
    assert verdict({**r, "ratio_second_first": 0.5}, max_ratio=0.1)  # the time target is checked


def test_incremental_benchmark_command_line(tmp_path, capsys):
    assert main(["--n", "500", "--add", "5", "--max-ratio", "10", "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "function called with 5 rows" in out and "all targets met" in out
