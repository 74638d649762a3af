"""Memory budget of scans (issue 15): over budget, a scan joins one key range at a time and gives the
same merged view (O9, O10, T3) in the same base order; within budget it joins once."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import threading

import numpy as np
import pyarrow as pa
import pytest

from usr_core import budget, rangescan
from usr_core.errors import SchemaError
from testkit import private_tmpfs_works

NS = {"mock": "mock__score:float64,mock__label:string", "emb": "emb__v:list<float32>",
      "seqk": "seqk__v:int64"}


def _seqs(n: int) -> list[str]:
    rng = np.random.default_rng(5)
    return sorted({"".join("ACGT"[i] for i in rng.integers(0, 4, 24)) for _ in range(n)})


@pytest.fixture
def ds(make_ds):
    ds = make_ds(seqs=_seqs(600), namespaces=NS)
    base = ds.read_table(columns=["id", "sequence"])
    ids, seqs = base["id"].to_pylist(), base["sequence"].to_pylist()
    rng = np.random.default_rng(6)
    for k in range(3):  # overlapping parts: the newest non-NULL value wins
        pick = [i for i in range(len(ids)) if rng.random() < 0.6]
        ds.write_overlay_part("mock", pa.table({
            "id": [ids[i] for i in pick],
            "mock__score": pa.array([None if rng.random() < 0.3 else float(rng.random()) for _ in pick], pa.float64()),
            "mock__label": pa.array([None if rng.random() < 0.3 else f"p{k}" for _ in pick], pa.string())}))
        ds.write_overlay_part("emb", pa.table({
            "id": [ids[i] for i in pick],
            "emb__v": pa.array([None if rng.random() < 0.2 else rng.random(8).astype(np.float32).tolist()
                                for _ in pick], pa.list_(pa.float32()))}))
        ds.write_overlay_part("seqk", pa.table({"sequence": [seqs[i] for i in pick],
                                                "seqk__v": pa.array(rng.integers(0, 99, len(pick)), pa.int64())}),
                              key="sequence")
    ds.tombstone(ids[::23])
    return ds


def _tiny(ds, monkeypatch, **kw):
    """A scan whose budget is its bare join state, well below its expected peak (several key ranges)."""
    monkeypatch.setattr(budget, "MIN_BUDGET", 1)
    return ds.scan(memory_budget=ds.scan(**kw).join_bytes, **kw)


@pytest.mark.parametrize("kw", [{}, {"columns": ["id", "mock__score"]}, {"columns": ["id", "emb__v"]},
                                {"columns": ["sequence", "seqk__v"]}, {"include_deleted": True},
                                {"columns": ["id", "seqk__v", "emb__v"], "batch_size": 17}])
def test_O12_tiny_budget_scans_the_same_rows_in_key_ranges(ds, monkeypatch, caplog, kw):
    """[O9] [O10] [O12] [T3] a budget below the join state: several key ranges, equal to the unbounded
    scan row for row, in base order (lists, tombstones, sequence keys), batches within batch_size."""
    whole = ds.scan(**kw)
    assert whole.ordered and whole.ranges == 1
    want = pa.Table.from_batches(list(whole))
    with caplog.at_level(logging.INFO, logger="usr_core.read"):
        small = _tiny(ds, monkeypatch, **kw)
        batches = list(small)
    assert small.ordered and small.ranges >= 3
    assert "key ranges one at a time" in caplog.text
    assert all(b.num_rows <= kw.get("batch_size", 65536) for b in batches)
    got = pa.Table.from_batches(batches, want.schema)
    assert got.schema == want.schema and got.equals(want)


def test_O12_default_budget_keeps_base_order(ds):
    """[O12] within the default budget the scan is in base order and says so."""
    s = ds.scan()
    assert s.ordered and s.memory_budget == budget.DEFAULT_BUDGET
    assert pa.Table.from_batches(list(s))["id"].to_pylist() == ds.read_table()["id"].to_pylist()


def test_budget_from_env_and_argument(ds, monkeypatch):
    monkeypatch.setenv(budget.ENV_VAR, "64MiB")
    assert ds.scan().memory_budget == 64 << 20
    assert ds.scan(memory_budget="2GB").memory_budget == 2 * 10**9
    assert ds.scan(memory_budget=100 << 20).memory_budget == 100 << 20
    for bad in ("lots", "12 parsecs", "1KB"):
        with pytest.raises(SchemaError) as exc:
            ds.scan(memory_budget=bad)
        assert "memory_budget" in (exc.value.hint or "") or "MiB" in (exc.value.hint or "")
    monkeypatch.setenv(budget.ENV_VAR, "nonsense")
    with pytest.raises(SchemaError, match="nonsense"):
        ds.scan()


def test_O12_ranged_scan_survives_a_compaction_between_ranges(ds, monkeypatch):
    """[O12] [X2] the parts a ranged scan listed are compacted away after its first range is joined: the
    later ranges are joined from the compact file (the same view), nothing is lost or repeated."""
    want = pa.Table.from_batches(list(ds.scan(batch_size=50)))
    real, calls, lock = rangescan._merged_table, [], threading.Lock()

    def compact_after_first(joined, rows):  # ranges are joined on two threads
        with lock:
            calls.append(len(rows))
            if len(calls) == 1:
                with ds.maintenance(reason="test"):
                    for ns in ("mock", "emb"):
                        ds.compact_overlay(ns)
        return real(joined, rows)

    monkeypatch.setattr(rangescan, "_merged_table", compact_after_first)
    small = _tiny(ds, monkeypatch, batch_size=50)
    assert small.ranges >= 2
    got = pa.Table.from_batches(list(small), want.schema)
    assert len(calls) >= 2 and not list(ds.paths.derived.glob("mock/part-*"))
    assert got.equals(want)


def test_O10_base_order_scan_planned_before_a_compaction_reads_the_new_files(ds):
    """[O10] [X2] a scan is planned (its parts listed), then the parts are compacted away before its first
    batch: the retry plans again from the compact file instead of failing on the vanished parts."""
    want = pa.Table.from_batches(list(ds.scan(batch_size=50)))
    planned = ds.scan(batch_size=50)
    assert planned.ordered
    with ds.maintenance(reason="test"):
        for ns in ("mock", "emb", "seqk"):
            ds.compact_overlay(ns)
    assert pa.Table.from_batches(list(planned), want.schema).equals(want)


def test_O12_read_table_takes_the_budget(ds, monkeypatch):
    """[O12] read_table joins within memory_budget too: the same rows in the same order."""
    want = ds.read_table()
    monkeypatch.setattr(budget, "MIN_BUDGET", 1)
    got = ds.read_table(memory_budget=ds.scan().join_bytes)
    assert got.equals(want)


def test_O12_closing_a_ranged_scan_removes_its_spill_files(ds, monkeypatch, tmp_path):
    """A ranged scan spills to the temp folder; closing it early leaves nothing behind."""
    spill = tmp_path / "spill"
    spill.mkdir()
    monkeypatch.setenv("TMPDIR", str(spill))
    monkeypatch.setattr(tempfile, "tempdir", None)
    small = _tiny(ds, monkeypatch)
    next(small)
    assert any(spill.iterdir())
    small.close()
    assert not any(spill.iterdir())


_FULL_TMP = """
import json, os, sys
from pathlib import Path
from usr_core import Dataset, budget
from usr_core.errors import EnvironmentFailure
budget.MIN_BUDGET = 1
ds = Dataset(Path(sys.argv[1]), sys.argv[2])
s = ds.scan(memory_budget=ds.scan().join_bytes)
try:
    list(s)
    out = {"raised": None}
except EnvironmentFailure as exc:
    out = {"raised": "EnvironmentFailure", "errno": exc.errno, "message": str(exc), "hint": exc.hint}
out["ranges"], out["left"] = s.ranges, os.listdir(os.environ["TMPDIR"])
print(json.dumps(out))
"""


@pytest.mark.skipif(not private_tmpfs_works(), reason="needs unshare -m and tmpfs mounts (root on Linux)")
def test_O12_ranged_scan_on_a_full_temp_folder_names_the_fix(ds, tmp_path):
    """[O12] a scan over budget whose temp folder is full (a real 16 KiB tmpfs in a private mount namespace):
    EnvironmentFailure (ENOSPC) naming TMPDIR and memory_budget, and no spill file left behind."""
    import errno

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    script = f'mount -t tmpfs -o size=16k tmpfs "{tmp}" && TMPDIR="{tmp}" exec "{sys.executable}" -c "$0" "$1" "$2"'
    res = subprocess.run(["unshare", "-m", "sh", "-c", script, _FULL_TMP, str(ds.paths.root), ds.paths.name],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["ranges"] >= 2 and out["raised"] == "EnvironmentFailure" and out["errno"] == errno.ENOSPC, out
    assert "No space left on device" in out["message"] and "TMPDIR" in out["hint"] and "memory_budget" in out["hint"]
    assert out["left"] == []

