"""The streamed join (parts merged newest first and dropped), key-ordered slots without probe keys, and
compaction within a memory budget, on real parquet parts, against a newest-non-null computed by hand."""
from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from usr_core.errors import SchemaError
from usr_core.overlays import kernel, ranges
from usr_core.overlays.discovery import discover_overlays, list_part_paths
from usr_core.overlays.kernel import namespace_view
from usr_core.overlays.slots import sorted_slots
from usr_core.overlays.winners import Winners

NS = {"mock": "mock__score:float64,mock__label:string,mock__vec:list<float64>"}
COLS = ["mock__score", "mock__label", "mock__vec"]


def _seqs(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return sorted({"".join("ACGT"[i] for i in rng.integers(0, 4, 24)) for _ in range(n)})


def _part(rng, keys: list[str], width: int = 4) -> pa.Table:
    n = len(keys)
    return pa.table({
        "id": pa.array(keys, pa.string()),
        "mock__score": pa.array(rng.random(n), mask=rng.random(n) < 0.3),
        "mock__label": pa.array([f"l{int(x)}" for x in rng.integers(0, 1000, n)], mask=rng.random(n) < 0.3),
        "mock__vec": _lists(rng, n, width)})


def _lists(rng, n: int, width: int) -> pa.Array:
    offsets = np.concatenate([[0], np.cumsum(rng.integers(0, width + 1, n))]).astype(np.int32)
    null = pa.array(rng.random(n) < 0.3)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(rng.random(int(offsets[-1]))), mask=null)


def _expected(tables_newest_first: list[pa.Table]) -> dict:
    """{key: {column: newest non-NULL value}} (O9), by hand."""
    out: dict = {}
    for t in tables_newest_first:
        for row in t.to_pylist():
            key = row["id"].strip() if row["id"] is not None else None
            if not key:
                continue
            slot = out.setdefault(key, {c: None for c in COLS})
            for c in COLS:
                if slot[c] is None and row.get(c) is not None:
                    slot[c] = row[c]
    return out


def _write(ds, rng, ids, k):
    tables = []
    for _ in range(k):
        pick = [ids[i] for i in np.flatnonzero(rng.random(len(ids)) < 0.5)]
        t = _part(rng, pick)
        ds.write_overlay_part("mock", t, key="id")
        tables.append(t)
    return tables[::-1]


def _check_read(ds, expected, ids):
    got = ds.read_table(memory_budget="4GiB").to_pylist()
    assert len(got) == len(ids)
    for row in got:
        want = expected.get(row["id"], {c: None for c in COLS})
        assert {c: row[c] for c in COLS} == want, row["id"]


def test_O9_O10_streamed_join_newest_non_null_per_column(make_ds):
    """[O9] [O10] each part is merged as soon as it is read, newest first: per column the newest
    non-NULL value wins, for primitive, string and list columns (NULLs in every column)."""
    ds = make_ds(seqs=_seqs(400), namespaces=NS)
    ids = ds.read_table(columns=["id"])["id"].to_pylist()
    tables = _write(ds, np.random.default_rng(3), ids, k=5)
    _check_read(ds, _expected(tables), ids)


def test_O9_O8_part_the_hash_path_cannot_map(make_ds):
    """[O9] [O2] [O8] a part with a padded key and an empty (NULL) key does not fit the equal-width
    hash path: it is matched by a dictionary encoding instead, between hash-matched parts, same
    result; a duplicate key in such a part is named."""
    ds = make_ds(seqs=_seqs(300), namespaces=NS)
    ids = ds.read_table(columns=["id"])["id"].to_pylist()
    rng = np.random.default_rng(5)
    tables = _write(ds, rng, ids, k=2)
    odd = _part(rng, [" " + ids[0] + " ", ""] + ids[1:100:3])
    ds.write_overlay_part("mock", odd.slice(2), key="id")  # a normal part first, then made odd on disk
    path = sorted(list_part_paths(ds.paths.parts_dir("mock")))[-1]
    meta = pq.read_schema(path).metadata
    pq.write_table(odd.replace_schema_metadata(meta), path)
    tables = _write(ds, rng, ids, k=1) + [odd] + tables  # a hash-matched part newer than the odd one
    _check_read(ds, _expected(tables), ids)

    dup = pa.concat_tables([odd, odd.slice(3, 1)])
    pq.write_table(dup.replace_schema_metadata(meta), path)
    with pytest.raises(SchemaError, match=f"duplicate keys.*{odd['id'][3].as_py()}"):
        ds.read_table(memory_budget="4GiB")


def test_O9_winners_unit_newest_first():
    """[O9] Winners: a slot keeps the first valid value fed (newest part first); -1 rows are ignored."""
    for dt, a, b in [(pa.int64(), [1, None, 3], [10, 20, 30]),
                     (pa.string(), ["a", None, "c"], ["x", "y", "z"]),
                     (pa.list_(pa.int32()), [[1], None, []], [[7], [8, 8], [9]])]:
        acc = Winners(dt, 4)
        acc.add(pa.array(a, dt), np.array([2, 0, -1]))
        acc.add(pa.array(b, dt), np.array([0, 2, 1]))
        assert acc.result().to_pylist() == [b[0], b[2], a[0], None]
        acc = Winners(dt, 4)
        acc.add(pa.array(b, dt), np.array([3, 2, 1]))
        assert acc.result(np.array([3, -1, 1])).to_pylist() == [b[0], None, b[2]]


def test_O2_sorted_slots_keys_sharing_their_first_bytes():
    """[O8] [O9] equal-width keys numbered in byte order even when distinct keys share the first 8
    bytes (interleaved in a prefix sort): slots equal the distinct keys, parts map back exactly."""
    rng = np.random.default_rng(7)
    pool = [("aaaaaaaa" if rng.random() < 0.5 else "bbbbbbbb") + "".join(rng.choice(list("xyz"), 8))
            for _ in range(60)]
    parts = [pa.array(list(rng.choice(pool, 40))) for _ in range(4)]
    distinct, slots = sorted_slots(parts)
    d = distinct.to_pylist()
    assert d == sorted({x for p in parts for x in p.to_pylist()})
    for p, s in zip(parts, slots):
        assert [d[i] for i in s] == p.to_pylist()
    assert sorted_slots([pa.array(["ab", None])]) is None  # NULLs: the dictionary path
    assert sorted_slots([pa.array(["abcdefgh"]), pa.array(["abcdefghabcdefgh"])]) is None


def test_X2_O9_namespace_view_shared_prefix_keys(make_ds):
    """[X2] [O9] equal-width keys sharing their first 8 bytes (sequences with one 8-base start) merge
    to one row each, in byte order, equal to the dictionary-encoded merge."""
    rng = np.random.default_rng(11)
    seqs = sorted({("ACGTACGT" if rng.random() < 0.5 else "TTTTGGGG") + "".join("ACGT"[i] for i in rng.integers(0, 4, 16))
                   for _ in range(200)})
    ds = make_ds(seqs=seqs, namespaces=NS)
    for _ in range(3):
        t = _part(rng, [seqs[i] for i in np.flatnonzero(rng.random(len(seqs)) < 0.6)]).rename_columns(["sequence"] + COLS)
        ds.write_overlay_part("mock", t, key="sequence")
    src = next(s for s in discover_overlays(ds.paths) if s.namespace == "mock")
    got = namespace_view(src)
    assert got["sequence"].to_pylist() == sorted(got["sequence"].to_pylist())
    real = kernel.sorted_slots
    try:
        kernel.sorted_slots = lambda keys: None
        want = namespace_view(src)
    finally:
        kernel.sorted_slots = real
    assert got.num_rows == len(set(got["sequence"].to_pylist()))
    assert got.sort_by("sequence").equals(want.sort_by("sequence"))


def _unclustered(ds):
    """Rewrite every part shuffled and without the clustered mark (as a foreign writer would)."""
    rng = np.random.default_rng(2)
    for path in list_part_paths(ds.paths.parts_dir("mock")):
        t = pq.read_table(path)
        meta = {k: v for k, v in t.schema.metadata.items() if k != b"usr:keys_clustered"}
        t = t.take(pa.array(rng.permutation(t.num_rows)))
        pq.write_table(t.replace_schema_metadata(meta), path, row_group_size=1000)


def test_X2_unclustered_parts_over_budget_merge_in_key_ranges(make_ds, monkeypatch, caplog):
    """[X2] [O9] parts not clustered by key whose merge state exceeds the memory budget (argument or
    USR_MEMORY_BUDGET) are compacted in key ranges read from every part: same merged read, one row
    per key, file clustered; within the budget they are merged whole."""
    ds = make_ds(seqs=_seqs(15000), namespaces=NS)
    ids = ds.read_table(columns=["id"])["id"].to_pylist()
    rng = np.random.default_rng(4)
    for _ in range(4):
        keys = [ids[i] for i in np.flatnonzero(rng.random(len(ids)) < 0.7)]
        ds.write_overlay_part("mock", _part(rng, keys, width=40), key="id")
    _unclustered(ds)
    src = next(s for s in discover_overlays(ds.paths) if s.namespace == "mock")
    assert not ranges.clustered(src)
    assert ranges.view_bytes(src, src.data_columns())[0] * 3 > 16 << 20  # over the smallest budget
    before = ds.read_table().sort_by("id")
    monkeypatch.setenv("USR_MEMORY_BUDGET", "16MiB")
    with caplog.at_level(logging.INFO, logger="usr_core.maintenance.compact"):
        with ds.maintenance(reason="test"):
            out = ds.compact_overlay("mock")
    assert "key ranges" in caplog.text
    pf = pq.ParquetFile(out)
    assert pf.schema_arrow.metadata[b"usr:keys_clustered"] == b"prefix8"
    keys = pf.read(columns=["id"])["id"].to_pylist()
    assert len(keys) == len(set(keys))
    prefix = ranges.key_prefix(pa.array(keys))
    assert (prefix[1:] >= prefix[:-1]).all()
    assert ds.read_table().sort_by("id").equals(before)


def test_X2_unclustered_parts_within_budget_merge_whole(make_ds, caplog):
    """[X2] within the budget, unclustered parts are merged whole (no ranges)."""
    ds = make_ds(seqs=_seqs(300), namespaces=NS)
    ids = ds.read_table(columns=["id"])["id"].to_pylist()
    _write(ds, np.random.default_rng(8), ids, k=3)
    _unclustered(ds)
    before = ds.read_table().sort_by("id")
    with caplog.at_level(logging.INFO, logger="usr_core.maintenance.compact"):
        with ds.maintenance(reason="test"):
            ds.compact_overlay("mock", memory_budget="1GiB")
    assert "key ranges" not in caplog.text
    assert ds.read_table().sort_by("id").equals(before)


def test_X2_compaction_budget_sizes_ranges_and_rejects_bad_budget(make_ds, monkeypatch):
    """[X2] clustered parts: a smaller budget means smaller ranges (same result); a budget that is not
    a size fails before anything is written."""
    ds = make_ds(seqs=_seqs(500), namespaces=NS)
    ids = ds.read_table(columns=["id"])["id"].to_pylist()
    _write(ds, np.random.default_rng(9), ids, k=3)
    src = next(s for s in discover_overlays(ds.paths) if s.namespace == "mock")
    cols = src.data_columns()
    assert ranges.range_rows(src, cols, 16 << 20, 1e4) < ranges.range_rows(src, cols, 1 << 30, 3.0)
    before = ds.read_table().sort_by("id")
    parts = list_part_paths(ds.paths.parts_dir("mock"))
    with pytest.raises(SchemaError, match="not a size"):
        with ds.maintenance(reason="test"):
            ds.compact_overlay("mock", memory_budget="lots")
    assert list_part_paths(ds.paths.parts_dir("mock")) == parts
    sizes = []
    real = ranges.view_ranges
    monkeypatch.setattr(ranges, "view_ranges", lambda *a: (sizes.append(a[2]), real(*a))[1])
    with ds.maintenance(reason="test"):
        ds.compact_overlay("mock", memory_budget="16MiB")
    assert sizes and sizes[0] <= ranges.RANGE_ROWS
    assert ds.read_table().sort_by("id").equals(before)
