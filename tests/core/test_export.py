"""export (X10): csv, jsonl, parquet of the merged view."""
from __future__ import annotations

import csv
import json
import math
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from testkit import FIXTURES, tree_digest
from usr_core import Dataset, SequencesError, compute_id

SEQS = ("ACGT", "AACC", "GGTT")
IDS = [compute_id("dna", s) for s in SEQS]
NS = {"mock": "mock__score:float64,mock__label:string",
      "nest": "nest__tags:list<string>,nest__s:struct<a:int64,b:string>,nest__when:timestamp[us, UTC]"}
TS_RE = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$"


@pytest.fixture
def ds(make_ds):
    ds = make_ds(seqs=SEQS, namespaces=NS)
    ds.write_overlay("mock", pa.table({"id": IDS[:2], "mock__score": [1.5, float("nan")], "mock__label": ["a", None]}))
    when = pa.array([1_700_000_000_123_456], pa.timestamp("us", tz="UTC"))
    ds.write_overlay("nest", pa.table({
        "id": IDS[:1], "nest__tags": pa.array([["x", "y"]], pa.list_(pa.string())),
        "nest__s": pa.array([{"a": 1, "b": "q"}], pa.struct([("a", pa.int64()), ("b", pa.string())])),
        "nest__when": when}))
    ds.tombstone([IDS[2]])
    return ds


@pytest.mark.parametrize("fmt", ["xml", "", "tsv"])
def test_X10_unknown_format_fails_before_touching_disk(ds, root, tmp_path, fmt):
    """[X10] fmt outside csv/jsonl/parquet → SequencesError, no file written."""
    before = tree_digest(root)
    with pytest.raises(SequencesError, match="format"):
        ds.export(fmt, tmp_path / "out" / "x.dat")
    assert tree_digest(root) == before and not (tmp_path / "out").exists()


def test_X10_parquet_is_the_merged_view(ds, tmp_path):
    """[X10] [O10] [T3] parquet export = the read view with all overlays, tombstoned rows hidden, zstd."""
    out = ds.export("PARQUET", tmp_path / "o.parquet")
    t = pq.read_table(out)
    view = ds.read_table()
    assert t.schema.remove_metadata() == view.schema and t.num_rows == 2
    assert t["id"].to_pylist() == view["id"].to_pylist()
    assert pq.ParquetFile(out).metadata.row_group(0).column(0).compression == "ZSTD"
    full = pq.read_table(ds.export("parquet", tmp_path / "all.parquet", include_deleted=True))
    assert full.num_rows == 3 and "usr__deleted" in full.column_names


def test_X10_csv_nested_as_json_and_timestamps_as_TS(ds, tmp_path):
    """[X10] (div) CSV: header; nested values as JSON; timestamps as TS."""
    out = ds.export("csv", tmp_path / "o.csv")
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == 2 and list(rows[0]) == ds.read_table().column_names
    r0 = rows[0]
    assert json.loads(r0["nest__tags"]) == ["x", "y"] and json.loads(r0["nest__s"]) == {"a": 1, "b": "q"}
    assert r0["nest__when"] == "2023-11-14T22:13:20.123456Z"
    import re

    assert re.match(TS_RE, r0["created_at"])
    assert r0["mock__label"] == "a" and rows[1]["mock__label"] == ""


def test_X10_jsonl_objects_with_TS(ds, tmp_path):
    """[X10] (div) JSONL: one object per row, timestamps as TS, NaN as null."""
    out = ds.export("jsonl", tmp_path / "o.jsonl", columns=["id", "created_at", "mock__score", "nest__when"])
    lines = out.read_text(encoding="utf-8").splitlines()
    objs = [json.loads(line) for line in lines]
    assert [o["id"] for o in objs] == IDS[:2]
    assert objs[0]["nest__when"] == "2023-11-14T22:13:20.123456Z" and objs[1]["nest__when"] is None
    assert objs[0]["mock__score"] == 1.5 and objs[1]["mock__score"] is None
    assert list(objs[0]) == ["id", "created_at", "mock__score", "nest__when"]


def test_X10_empty_exports(make_ds, tmp_path):
    """[X10] empty dataset: header-only CSV, empty JSONL, zero-row parquet."""
    ds = make_ds(name="empty", seqs=(), namespaces={"mock": "mock__score:float64"})
    header = ds.export("csv", tmp_path / "e.csv").read_text().strip()
    assert header.replace('"', "").split(",") == ["id", "bio_type", "sequence", "alphabet", "length", "source",
                                                  "created_at"]
    assert ds.export("jsonl", tmp_path / "e.jsonl").read_text() == ""
    t = pq.read_table(ds.export("parquet", tmp_path / "e.parquet"))
    assert t.num_rows == 0 and t.schema.field("length").type == pa.int32()


def test_X10_fixture_export_matches_expected_view(tmp_path):
    """[X10] exporting the interop fixture gives the expected merged view (NaN-aware comparison)."""
    root = tmp_path / "fx"
    shutil.copytree(FIXTURES / "dna_multi", root)
    ds = Dataset(root, "promoters")
    got = pq.read_table(ds.export("parquet", tmp_path / "p.parquet")).sort_by("id")
    exp = pq.read_table(FIXTURES / "expected" / "dna_multi.parquet").sort_by("id")
    assert got.column_names == exp.column_names and got.num_rows == exp.num_rows
    for name in exp.column_names:
        a, b = got[name].to_pylist(), exp[name].to_pylist()
        same = [x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))
                for x, y in zip(a, b)]
        assert all(same), name
