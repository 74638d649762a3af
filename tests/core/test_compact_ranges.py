"""Compaction range by range (overlays/ranges.py) against the whole-part merge, on real parquet parts."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from usr_core.overlays import encoding, ranges
from usr_core.overlays.discovery import discover_overlays, list_part_paths
from usr_core.overlays.kernel import namespace_view

NS = {"mock": "mock__score:float64,mock__label:string,mock__vec:list<float64>"}


def _seqs(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return sorted({"".join("ACGT"[i] for i in rng.integers(0, 4, 24)) for _ in range(n)})


def _write_parts(ds, ids, k: int, seed: int = 1, key: str = "id", keys=None) -> None:
    rng = np.random.default_rng(seed)
    keys = ids if keys is None else keys
    for _ in range(k):
        pick = np.flatnonzero(rng.random(len(keys)) < 0.5)
        n = len(pick)
        score = pa.array(rng.random(n), mask=rng.random(n) < 0.2)
        label = pa.array([f"l{int(x)}" for x in rng.integers(0, 1000, n)], mask=rng.random(n) < 0.2)
        vec = pa.array([[float(x)] * 2 for x in rng.random(n)], pa.list_(pa.float64()), mask=rng.random(n) < 0.2)
        ds.write_overlay_part("mock", pa.table({key: pa.array([keys[i] for i in pick]), "mock__score": score,
                                                "mock__label": label, "mock__vec": vec}), key=key)


def _source(ds):
    return next(s for s in discover_overlays(ds.paths) if s.namespace == "mock")


@pytest.mark.parametrize("key", ["id", "sequence"])
def test_O9_X2_view_ranges_equal_whole_view(make_ds, key, monkeypatch):
    """[O9] [X2] many small ranges (cut on row-group statistics) merge to exactly the whole-part view."""
    monkeypatch.setattr(encoding, "OVERLAY_ROW_GROUP_ROWS", 128)
    seqs = _seqs(3000)
    ds = make_ds(seqs=seqs, namespaces=NS)
    ids = ds.read_table(columns=["id", "sequence"])
    keys = ids[key].to_pylist()
    _write_parts(ds, keys, k=6, key=key)
    src = _source(ds)
    assert ranges.clustered(src)
    cols = src.data_columns()
    pieces = list(ranges.view_ranges(src, cols, target_rows=500))
    assert len(pieces) > 5
    got = pa.concat_tables(pieces)
    prefix = ranges.key_prefix(got[key].combine_chunks())
    assert (prefix[1:] >= prefix[:-1]).all()  # written clustered, ranges in key order
    want = namespace_view(src)
    assert got.sort_by(key).equals(want.sort_by(key))


def test_X2_compaction_by_ranges_matches_merged_read(make_ds, monkeypatch):
    """[X2] [O9] compaction through the range path: same merged read before and after, file clustered."""
    monkeypatch.setattr(ranges, "RANGE_ROWS", 300)
    monkeypatch.setattr(encoding, "OVERLAY_ROW_GROUP_ROWS", 100)
    ds = make_ds(seqs=_seqs(2000), namespaces=NS)
    _write_parts(ds, ds.read_table(columns=["id"])["id"].to_pylist(), k=5)
    before = ds.read_table().sort_by("id")
    calls = []
    real = ranges.view_ranges
    monkeypatch.setattr(ranges, "view_ranges", lambda *a: (calls.append(a), real(*a))[1])
    with ds.maintenance(reason="test"):
        out = ds.compact_overlay("mock")
    assert calls and calls[0][2] == 300
    assert ds.read_table().sort_by("id").equals(before)
    pf = pq.ParquetFile(out)
    assert pf.metadata.num_row_groups > 1
    assert pf.schema_arrow.metadata[b"usr:keys_clustered"] == b"prefix8"
    keys = pf.read(columns=["id"])["id"].combine_chunks()
    assert len(keys) == len(set(keys.to_pylist()))


def test_X2_unnormalised_keys_fall_back_to_whole_merge(make_ds):
    """[X2] [O2] a part marked clustered whose stored keys are not normalised (' id') cannot be cut on
    stored keys: the compaction merges whole parts and keys still collapse by their normal form."""
    ds = make_ds(seqs=_seqs(50), namespaces=NS)
    ids = ds.read_table(columns=["id"])["id"].to_pylist()
    _write_parts(ds, ids, k=2)
    part = list_part_paths(ds.paths.parts_dir("mock"))[0]
    t = pq.read_table(part)
    t = t.set_column(0, "id", pa.array([" " + k + " " for k in t["id"].to_pylist()]))
    pq.write_table(t, part)  # keeps the file metadata, keys now padded
    src = _source(ds)
    assert ranges.clustered(src)
    with pytest.raises(ranges.NotClustered):
        list(ranges.view_ranges(src, src.data_columns(), target_rows=10))
    before = ds.read_table().sort_by("id")
    with ds.maintenance(reason="test"):
        out = ds.compact_overlay("mock")
    got = pq.read_table(out)["id"].to_pylist()
    assert len(got) == len(set(got)) and all(k == k.strip() for k in got)
    assert ds.read_table().sort_by("id").equals(before)


def test_O8_duplicate_key_in_a_part_raises_in_range_path(make_ds):
    """[O8] a duplicate key inside one clustered part is reported by the range merge too."""
    from usr_core.errors import SchemaError

    ds = make_ds(seqs=_seqs(40), namespaces=NS)
    ids = ds.read_table(columns=["id"])["id"].to_pylist()
    _write_parts(ds, ids, k=1)
    part = list_part_paths(ds.paths.parts_dir("mock"))[0]
    t = pq.read_table(part)
    t = pa.concat_tables([t, t.slice(0, 1)]).sort_by("id")  # still ordered, one key twice
    pq.write_table(t, part)
    with pytest.raises(SchemaError, match="duplicate keys"):
        list(ranges.view_ranges(_source(ds), _source(ds).data_columns(), target_rows=5))
