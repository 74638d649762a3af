"""export (X10): csv, jsonl, parquet of the merged view."""
from __future__ import annotations

import csv
import datetime as dt
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


TYPED = {"typed": "typed__n:int64,typed__f:float64,typed__b:bool,typed__x:float64,typed__l:list<float64>,"
                  "typed__t:string"}


@pytest.fixture
def typed_csv(make_ds, tmp_path):
    """int, integral floats, bool, NaN next to NULL, lists and awkward text, exported to CSV."""
    ds = make_ds(name="typed", seqs=(), namespaces=TYPED)
    ds.import_rows(pa.table({"sequence": list(SEQS)}), source="lab run 7")
    ds.write_overlay("typed", pa.table({
        "id": IDS,
        "typed__n": pa.array([1, -2, 3], pa.int64()),
        "typed__f": pa.array([106.0, -0.0, 2.5], pa.float64()),
        "typed__b": pa.array([True, False, True]),
        "typed__x": pa.array([float("nan"), None, 1.0], pa.float64()),
        "typed__l": pa.array([[1.0, 2.5], [], None], pa.list_(pa.float64())),
        "typed__t": pa.array(['say "hi", twice', "", None], pa.string()),
    }))
    return ds, ds.export("csv", tmp_path / "typed.csv")


def test_X10_csv_cells_follow_pandas_conventions(typed_csv):
    """[X10] integral floats keep `.0`, booleans True/False, NaN `NaN`, NULL empty, text quoted only when needed."""
    _ds, out = typed_csv
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("id,bio_type,sequence,alphabet,length,source,created_at,typed__n,")
    first = lines[1]
    assert first.startswith(f"{IDS[0]},dna,ACGT,dna_4,4,lab run 7,")  # no quotes around plain text
    assert first.endswith(',1,106.0,True,NaN,"[1.0,2.5]","say ""hi"", twice"')
    assert lines[2].endswith(',-2,-0.0,False,,[],""')  # NULL is empty, the empty string quoted
    assert lines[3].endswith(",3,2.5,True,1.0,,")


def test_X10_csv_round_trips_through_pandas(typed_csv):
    """[X10] pandas.read_csv gets int64, float64 (integral values too), bool, NaN/NULL, JSON lists back."""
    pd = pytest.importorskip("pandas")
    ds, out = typed_csv
    df = pd.read_csv(out)
    assert str(df["typed__n"].dtype) == "int64" and df["typed__n"].tolist() == [1, -2, 3]
    assert str(df["typed__f"].dtype) == "float64" and df["typed__f"].tolist() == [106.0, -0.0, 2.5]
    assert str(df["typed__b"].dtype) == "bool" and df["typed__b"].tolist() == [True, False, True]
    assert str(df["length"].dtype) == "int64" and str(df["typed__x"].dtype) == "float64"
    x = df["typed__x"].tolist()
    assert math.isnan(x[0]) and math.isnan(x[1]) and x[2] == 1.0  # pandas has one missing value for both
    assert json.loads(df["typed__l"][0]) == [1.0, 2.5] and json.loads(df["typed__l"][1]) == []
    assert pd.isna(df["typed__l"][2])
    assert df["typed__t"][0] == 'say "hi", twice'
    assert df["id"].tolist() == ds.read_table()["id"].to_pylist()


def test_X10_csv_round_trips_through_duckdb(typed_csv):
    """[X10] DuckDB read_csv: BIGINT, DOUBLE, BOOLEAN, NaN apart from NULL, lists castable, TS as timestamptz."""
    duckdb = pytest.importorskip("duckdb")
    ds, out = typed_csv
    rel = duckdb.sql(f"SELECT * FROM read_csv('{out}')")
    types = dict(zip(rel.columns, map(str, rel.types)))
    assert types["typed__n"] == "BIGINT" and types["length"] == "BIGINT"
    assert types["typed__f"] == types["typed__x"] == "DOUBLE" and types["typed__b"] == "BOOLEAN"
    assert types["created_at"] == "TIMESTAMP WITH TIME ZONE"
    rows = rel.fetchall()
    cols = rel.columns
    get = {c: [r[i] for r in rows] for i, c in enumerate(cols)}
    assert get["typed__n"] == [1, -2, 3] and get["typed__f"] == [106.0, -0.0, 2.5]
    assert get["typed__b"] == [True, False, True]
    assert math.isnan(get["typed__x"][0]) and get["typed__x"][1] is None and get["typed__x"][2] == 1.0
    assert get["typed__t"][0] == 'say "hi", twice'
    lists = duckdb.sql(f"SELECT typed__l::DOUBLE[] FROM read_csv('{out}')").fetchall()
    assert [r[0] for r in lists] == [[1.0, 2.5], [], None]
    view = ds.read_table()
    assert [t.astimezone(dt.timezone.utc) for t in get["created_at"]] == view["created_at"].to_pylist()


def test_X10_csv_streams_many_batches(make_ds, tmp_path):
    """[X10] a multi-batch export has exactly one header and every row once."""
    seqs = ["".join("ACGT"[(i >> (2 * k)) & 3] for k in range(10)) for i in range(3000)]
    ds = make_ds(name="big", seqs=seqs, namespaces={"mock": "mock__score:float64"})
    out = ds.export("csv", tmp_path / "big.csv")
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == 3000 and {r["sequence"] for r in rows} == set(seqs)


def test_X10_csv_lists_of_numbers_and_booleans_are_json(make_ds, tmp_path):
    """[X10] list<float64|int64|bool> cells are compact JSON: NaN and NULL elements as null, empty and NULL lists."""
    ds = make_ds(name="lists", seqs=SEQS, namespaces={
        "lst": "lst__f:list<float64>,lst__i:list<int64>,lst__b:list<bool>,lst__s:list<string>"})
    ds.write_overlay("lst", pa.table({
        "id": IDS,
        "lst__f": pa.array([[106.0, float("nan"), None, 0.1, -2.5e-7], [], None], pa.list_(pa.float64())),
        "lst__i": pa.array([[1, None, -3], None, []], pa.list_(pa.int64())),
        "lst__b": pa.array([[True, False, None], [], None], pa.list_(pa.bool_())),
        "lst__s": pa.array([['a"b', None, "c,d"], [], None], pa.list_(pa.string())),
    }))
    out = ds.export("csv", tmp_path / "lists.csv", columns=["id", "lst__f", "lst__i", "lst__b", "lst__s"])
    rows = {r["id"]: r for r in csv.DictReader(out.open(encoding="utf-8"))}
    first, second, third = (rows[i] for i in IDS)
    assert json.loads(first["lst__f"]) == [106.0, None, None, 0.1, -2.5e-7]
    assert json.loads(first["lst__i"]) == [1, None, -3] and json.loads(first["lst__b"]) == [True, False, None]
    assert json.loads(first["lst__s"]) == ['a"b', None, "c,d"]
    assert second["lst__f"] == "[]" and second["lst__i"] == "" and second["lst__b"] == "[]"
    assert third["lst__f"] == "" and third["lst__i"] == "[]" and third["lst__s"] == ""


def test_X10_jsonl_equals_python_json_of_each_row(make_ds, tmp_path):
    """[X10] JSONL rows built by Arrow kernels parse to exactly what json.dumps of each row gives: escapes
    (quotes, backslashes, control characters, non-ASCII), NaN/inf as null, integral floats, nested values."""
    ds = make_ds(name="jl", seqs=SEQS, namespaces={
        "j": "j__s:string,j__c:string,j__f:float64,j__n:int64,j__b:bool,j__l:list<float64>,j__t:list<string>,"
             "j__st:struct<a:int64,b:string>,j__w:timestamp[us, UTC]"})
    when = pa.array([1_700_000_000_123_456, None, 0], pa.timestamp("us", tz="UTC"))
    ds.write_overlay("j", pa.table({
        "id": IDS,
        "j__s": pa.array(['q"uote\\back', "µ—☃ </script>", None]),  # escaped by Arrow kernels
        "j__c": pa.array(["tab\there\x01", "", None]),  # control characters: the Python path
        "j__f": pa.array([106.0, float("inf"), float("nan")]),
        "j__n": pa.array([1, None, -5], pa.int64()),
        "j__b": pa.array([True, None, False]),
        "j__l": pa.array([[1.0, float("nan")], None, []], pa.list_(pa.float64())),
        "j__t": pa.array([["a", None], [], None], pa.list_(pa.string())),
        "j__st": pa.array([{"a": 1, "b": "x"}, None, {"a": None, "b": 'y"'}],
                          pa.struct([("a", pa.int64()), ("b", pa.string())])),
        "j__w": when}))
    lines = ds.export("jsonl", tmp_path / "o.jsonl").read_text(encoding="utf-8").splitlines()
    got = {o["id"]: o for o in map(json.loads, lines)}
    from usr_core.maintenance.export import _plain

    for row in ds.read_table().to_pylist():
        expected = json.loads(json.dumps(_plain(row), ensure_ascii=False, allow_nan=False))
        assert got[row["id"]] == expected and list(got[row["id"]]) == list(row)
    assert got[IDS[0]]["j__f"] == 106.0 and isinstance(got[IDS[0]]["j__f"], float)
