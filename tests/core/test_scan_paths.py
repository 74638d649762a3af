"""scan() paths: base key columns read once, other base columns read ahead, parts read while the base
keys are still being read; checked against a merge written out by hand in Python."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from usr_core import read
from usr_core.overlays import kernel

NS = {"mock": "mock__score:float64,mock__label:string", "seqk": "seqk__v:int64"}


def _seqs(n: int) -> list[str]:
    rng = np.random.default_rng(3)
    return sorted({"".join("ACGT"[i] for i in rng.integers(0, 4, 20)) for _ in range(n)})


@pytest.fixture
def ds(make_ds):
    ds = make_ds(seqs=_seqs(400), namespaces=NS)
    base = ds.read_table(columns=["id", "sequence"])
    ids, seqs = base["id"].to_pylist(), base["sequence"].to_pylist()
    rng = np.random.default_rng(4)
    expected = {i: {"mock__score": None, "mock__label": None, "seqk__v": None} for i in ids}
    for k in range(4):  # older parts first: a newer non-NULL value wins (O9)
        pick = [i for i in range(len(ids)) if rng.random() < 0.5]
        scores = [None if rng.random() < 0.3 else float(rng.random()) for _ in pick]
        labels = [None if rng.random() < 0.3 else f"p{k}" for _ in pick]
        ds.write_overlay_part("mock", pa.table({"id": [ids[i] for i in pick], "mock__score": pa.array(scores, pa.float64()),
                                                "mock__label": pa.array(labels, pa.string())}))
        vals = [None if rng.random() < 0.3 else int(rng.integers(0, 99)) for _ in pick]
        ds.write_overlay_part("seqk", pa.table({"sequence": [seqs[i] for i in pick], "seqk__v": pa.array(vals, pa.int64())}),
                              key="sequence")
        for i, s, lab, v in zip(pick, scores, labels, vals):
            row = expected[ids[i]]
            for name, val in (("mock__score", s), ("mock__label", lab), ("seqk__v", v)):
                if val is not None:
                    row[name] = val
    deleted = ids[::37]
    ds.tombstone(deleted)
    ds.expected, ds.deleted, ds.ids = expected, set(deleted), ids
    return ds


@pytest.mark.parametrize("columns", [None, ["id", "mock__score"], ["mock__label"], ["sequence", "seqk__v", "id"]])
@pytest.mark.parametrize("ahead,threaded", [(1, 0), (1 << 30, 10**9)])
def test_O9_O10_scan_matches_hand_merge(ds, monkeypatch, columns, ahead, threaded):
    """[O9] [O10] [O12] every column selection, read-ahead cut after one batch or covering the whole base,
    parts loaded on two threads or one, small batches: base order kept, tombstoned rows hidden, newest
    non-NULL value per key."""
    monkeypatch.setattr(read, "_READ_AHEAD_BYTES", ahead)
    monkeypatch.setattr(kernel, "THREADED_ROWS", threaded)
    batches = list(ds.scan(columns=columns, batch_size=7))
    assert all(b.num_rows <= 7 for b in batches)
    got = pa.Table.from_batches(batches)
    want_ids = [i for i in ds.ids if i not in ds.deleted]
    names = columns or got.column_names
    assert got.column_names == names
    assert got.num_rows == len(want_ids)
    for name in names:
        if name in ("mock__score", "mock__label", "seqk__v"):
            assert got[name].to_pylist() == [ds.expected[i][name] for i in want_ids], name
    if "id" in names:
        assert got["id"].to_pylist() == want_ids


def test_O10_scan_include_deleted_shows_tombstone_columns(ds):
    """[O10] [T3] include_deleted: every base row, usr__deleted true exactly for the tombstoned ids."""
    got = pa.Table.from_batches(list(ds.scan(include_deleted=True, batch_size=50)))
    assert got["id"].to_pylist() == ds.ids
    flags = dict(zip(got["id"].to_pylist(), got["usr__deleted"].to_pylist()))
    assert {i for i, f in flags.items() if f} == ds.deleted


def test_O12_read_ahead_is_what_the_budget_leaves_beside_the_join(ds):
    """[O12] a join state that fits the budget only with less read-ahead keeps base order, its expected
    peak within the budget; one that leaves less than the minimum read-ahead joins key ranges."""
    from usr_core.budget import PEAK_FACTOR, peak_bytes
    from usr_core.readplan import plan_read

    plan = plan_read(ds.paths, None, True, False)
    budget = 1 << 30
    fits = read.Scan(ds.paths, plan, budget, int((900 << 20) / PEAK_FACTOR), 1024, lambda: plan)
    assert fits.ranges == 1 and fits.estimated_bytes <= budget
    assert fits.estimated_bytes - peak_bytes(fits.join_bytes, 0) < read._READ_AHEAD_BYTES  # read-ahead shrank
    tight = read.Scan(ds.paths, plan, budget, int((1010 << 20) / PEAK_FACTOR), 1024, lambda: plan)
    assert tight.ordered and tight.ranges >= 2
    roomy = read.Scan(ds.paths, plan, budget, 1 << 20, 1024, lambda: plan)
    assert roomy.estimated_bytes - peak_bytes(roomy.join_bytes, 0) == read._READ_AHEAD_BYTES
    for s in (fits, tight, roomy):
        s.close()


@pytest.mark.parametrize("row_groups,batch_size", [(1, 64), (9, 7), (9, 1000)])
def test_O12_base_batches_decoded_two_row_groups_at_once_keep_order(tmp_path, row_groups, batch_size):
    """[O12] joined.ordered_batches: row groups decoded on two threads come back in base order, whole,
    within batch_size, for one row group (streamed) or many (two at a time)."""
    import pyarrow.parquet as pq

    from usr_core.joined import base_file, ordered_batches
    from usr_core.layout import DatasetPaths

    paths = DatasetPaths(tmp_path, "d")
    paths.dir.mkdir()
    n = 450
    table = pa.table({"id": [f"{i:040x}" for i in range(n)], "length": pa.array(range(n), pa.int32())})
    pq.write_table(table, paths.records, row_group_size=-(-n // row_groups))
    pf = base_file(paths)
    assert pf.metadata.num_row_groups == row_groups
    batches = list(ordered_batches(paths, pf, ["id", "length"], batch_size))
    assert all(b.num_rows <= batch_size for b in batches)
    assert pa.Table.from_batches(batches).equals(table)


@pytest.mark.parametrize("row_groups", [1, 2, 9])
def test_O10_base_key_columns_read_in_two_halves_equal_one_read(tmp_path, row_groups):
    """[O10] joined.read_halves: the base key columns decoded in two halves on two threads are the
    file's columns in order; a base replaced between the two opens is read once, from the first handle."""
    import os

    import pyarrow.parquet as pq

    from usr_core.joined import base_file, read_halves
    from usr_core.layout import DatasetPaths

    paths = DatasetPaths(tmp_path, "d")
    paths.dir.mkdir()
    n = 450
    table = pa.table({"id": [f"{i:040x}" for i in range(n)], "sequence": [f"ACGT{i}" for i in range(n)]})
    pq.write_table(table, paths.records, row_group_size=-(-n // row_groups))
    got = read_halves(paths, base_file(paths), ["sequence", "id"])
    assert got.equals(table.select(["sequence", "id"]))
    pf = base_file(paths)  # the file this read began with
    newer = table.slice(0, 100)
    pq.write_table(newer, str(paths.records) + ".new", row_group_size=10)
    os.replace(str(paths.records) + ".new", paths.records)
    assert read_halves(paths, pf, ["id"]).equals(table.select(["id"]))
