"""Dataset.write_part (O6, M2): the typed PartWritten result and caller metadata carried by compaction (X2)."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from usr_core import PartWritten, SchemaError, compute_id

SEQS = ("ACGT", "AACC", "GGTT")
IDS = [compute_id("dna", s) for s in SEQS]


@pytest.fixture
def ds(make_ds):
    return make_ds(seqs=SEQS)


def _meta(path) -> dict:
    return {k.decode(): v.decode() for k, v in (pq.read_schema(path).metadata or {}).items()}


def _table(ids, scores):
    return pa.table({"id": pa.array(ids, pa.string()), "mock__score": pa.array(scores, pa.float64())})


def test_O6_write_part_returns_what_was_written(ds):
    out = ds.write_part("mock", _table(IDS[:2], [1.0, 2.0]), extra_metadata={"dagster/run": "r1"})
    assert isinstance(out, PartWritten)
    assert out.namespace == "mock" and out.rows == 2 and out.path.is_file()
    assert out.path.parent == ds.dir / "_derived" / "mock"
    meta = _meta(out.path)
    assert meta["dagster/run"] == "r1"
    assert meta["usr:overlay_created_at"] == out.created_at
    assert ds.read_table()["mock__score"].to_pylist()[:2] == [1.0, 2.0]


def test_O6_write_part_zero_rows_has_no_path(ds):
    out = ds.write_part("mock", _table(["nope"], [1.0]), allow_missing=True)
    assert out == PartWritten("mock", None, 0, None, 1, {})
    assert ds.write_overlay_part("mock", _table(IDS[:1], [1.0])) == 1  # the int API is unchanged


@pytest.mark.parametrize("bad", [{"usr:overlay_key": "x"}, {"k": 1}, {"": "v"}])
def test_M2_extra_metadata_rejected_without_change(ds, bad, tree_digest):
    before = tree_digest(ds.root)
    with pytest.raises(SchemaError):
        ds.write_part("mock", _table(IDS[:1], [1.0]), extra_metadata=bad)
    assert tree_digest(ds.root) == before


def test_X2_compaction_keeps_extra_metadata_all_parts_agree_on(ds):
    ds.write_part("mock", _table(IDS[:1], [1.0]), extra_metadata={"same": "v", "differs": "a", "only1": "x"})
    ds.write_part("mock", _table(IDS[1:2], [2.0]), extra_metadata={"same": "v", "differs": "b"})
    with ds.maintenance(reason="t"):
        compact = ds.compact_overlay("mock")
    meta = _meta(compact)
    assert meta["same"] == "v" and "differs" not in meta and "only1" not in meta
