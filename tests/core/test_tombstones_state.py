"""Tombstones (T1-T3) and record state (U1-U5)."""
from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from testkit import tree_digest
from usr_core import SchemaError, compute_id, load_registry, namespace_contract_hash, registry_hash

SEQS = ("ACGT", "AACC", "GGTT", "TTAA")
IDS = [compute_id("dna", s) for s in SEQS]
UTC = dt.timezone.utc
STATE_COLS = ["usr_state__masked", "usr_state__qc_status", "usr_state__split", "usr_state__supersedes",
              "usr_state__lineage"]


@pytest.fixture
def ds(make_ds):
    return make_ds(seqs=SEQS)


def _meta(path) -> dict:
    return {k.decode(): v.decode() for k, v in (pq.read_schema(path).metadata or {}).items()}


def _events(ds) -> list[dict]:
    return [json.loads(line) for line in ds.events_path.read_text().splitlines()]


def test_T1_tombstone_file_shape(ds, root):
    """[T1] _derived/usr.parquet keyed by id with the three columns; registry_hash, no contract hash."""
    ds.tombstone([IDS[0]], reason="bad")
    path = ds.dir / "_derived" / "usr.parquet"
    t = pq.read_table(path)
    assert t.schema.remove_metadata() == pa.schema([("id", pa.string()), ("usr__deleted", pa.bool_()),
                                                    ("usr__deleted_at", pa.timestamp("us", tz="UTC")),
                                                    ("usr__deleted_reason", pa.string())])
    meta = _meta(path)
    assert meta["usr:overlay_namespace"] == "usr" and meta["usr:overlay_key"] == "id"
    assert meta["usr:registry_hash"] == registry_hash(root)
    assert "usr:namespace_contract_hash" not in meta
    assert t["usr__deleted_reason"].to_pylist() == ["bad"]


def test_T2_tombstone_restore_upserts_keep_other_rows(ds):
    """[T2] (div) later calls with new ids keep earlier rows; restore writes (false, NULL, NULL)."""
    when = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert ds.tombstone([IDS[0]], reason="r0", deleted_at=when) == 1
    assert ds.tombstone([f" {IDS[1]} ", ""], reason="r1") == 1
    assert ds.restore([IDS[0]]) == 1
    t = pq.read_table(ds.dir / "_derived" / "usr.parquet")
    rows = {r["id"]: r for r in t.to_pylist()}
    assert set(rows) == {IDS[0], IDS[1]}
    assert rows[IDS[0]]["usr__deleted"] is False
    assert rows[IDS[0]]["usr__deleted_at"] is None and rows[IDS[0]]["usr__deleted_reason"] is None
    assert rows[IDS[1]]["usr__deleted"] is True and rows[IDS[1]]["usr__deleted_reason"] == "r1"
    ds.tombstone([IDS[2]], deleted_at=when)
    t = pq.read_table(ds.dir / "_derived" / "usr.parquet")
    at = dict(zip(t["id"].to_pylist(), t["usr__deleted_at"].to_pylist()))
    assert at[IDS[2]] == dt.datetime(2024, 5, 1, 10, 0, tzinfo=UTC)  # → UTC


def test_T2_bad_ids(ds, root):
    """[T2] none left / repeats / unknown ids → SchemaError ("N id(s) not found"); nothing written."""
    before = tree_digest(root)
    with pytest.raises(SchemaError):
        ds.tombstone(["", "  "])
    with pytest.raises(SchemaError):
        ds.tombstone([IDS[0], IDS[0]])
    with pytest.raises(SchemaError, match="1 id\\(s\\) not found"):
        ds.tombstone([IDS[0], "0" * 40])
    with pytest.raises(SchemaError, match="not found"):
        ds.restore(["0" * 40])
    assert tree_digest(root) == before
    assert ds.tombstone([IDS[0], "0" * 40], allow_missing=True) == 1


def test_T2_events(ds):
    """[T2] [E7] events tombstone {rows, reason, allow_missing} / restore {rows, allow_missing}."""
    ds.tombstone([IDS[0], IDS[1]], reason="dup")
    ds.restore([IDS[1]])
    ev = _events(ds)
    tomb = [e for e in ev if e["action"] == "tombstone"][-1]
    assert tomb["args"] == {"rows": 2, "reason": "dup", "allow_missing": False}
    assert tomb["metrics"]["rows"] == 2
    assert tomb["artifacts"]["overlay"]["namespace"] == "usr"
    rest = [e for e in ev if e["action"] == "restore"][-1]
    assert rest["args"] == {"rows": 1, "allow_missing": False}


def test_T3_reads_hide_deleted(ds):
    """[T3] usr__deleted = true hidden; no row / NULL / false visible; include_deleted adds columns."""
    ds.tombstone([IDS[0], IDS[1]])
    ds.restore([IDS[1]])
    assert sorted(ds.read_table()["id"].to_pylist()) == sorted(IDS[1:])
    path = ds.dir / "_derived" / "usr.parquet"
    t = pq.read_table(path)
    t = t.set_column(1, "usr__deleted", pa.array([None if i == IDS[1] else v for i, v in
                                                  zip(t["id"].to_pylist(), t["usr__deleted"].to_pylist())],
                                                 pa.bool_()))
    pq.write_table(t, path)
    assert sorted(ds.read_table()["id"].to_pylist()) == sorted(IDS[1:])
    full = ds.read_table(include_deleted=True)
    assert full.num_rows == len(SEQS)
    assert full.column_names[-3:] == ["usr__deleted", "usr__deleted_at", "usr__deleted_reason"]
    assert "usr__deleted" not in ds.read_table().column_names
    sel = ds.read_table(columns=["id", "sequence"], include_deleted=True)
    assert sel.column_names == ["id", "sequence"] and sel.num_rows == len(SEQS)


# ---------------------------------------------------------------- usr_state

def test_U1_state_file_shape(ds, root):
    """[U1] _derived/usr_state.parquet keyed by id, R3 types, both hashes."""
    ds.set_state([IDS[0]], masked=True, qc_status="pass", split="train", supersedes="x", lineage=["a", "b"])
    path = ds.dir / "_derived" / "usr_state.parquet"
    t = pq.read_table(path)
    assert t.schema.field("usr_state__lineage").type == pa.list_(pa.string())
    assert t.schema.field("usr_state__masked").type == pa.bool_()
    meta = _meta(path)
    assert meta["usr:overlay_key"] == "id" and meta["usr:registry_hash"] == registry_hash(root)
    assert meta["usr:namespace_contract_hash"] == namespace_contract_hash(load_registry(root), "usr_state")


def test_U1_U3_value_checks(ds, root):
    """[U1] [U3] bad qc_status/split/masked/lineage/empty text → SchemaError naming the column."""
    before = tree_digest(root)
    cases = [({"qc_status": "great"}, "qc_status"), ({"split": "dev"}, "split"), ({"masked": "yes"}, "masked"),
             ({"lineage": ["", " "]}, "lineage"), ({"supersedes": "  "}, "supersedes"), ({}, "at least one field")]
    for kwargs, col in cases:
        with pytest.raises(SchemaError, match=col):
            ds.set_state([IDS[0]], **kwargs)
    with pytest.raises(SchemaError, match="not found"):
        ds.set_state(["0" * 40], masked=True)
    assert tree_digest(root) == before


def test_U3_partial_set_preserves_other_fields(ds):
    """[U3] (div) only given fields are upserted; new ids added; text trimmed; lineage str → list."""
    ds.set_state([IDS[0]], masked=True, qc_status=" pass ", lineage="  run1 ")
    ds.set_state([IDS[0], IDS[1]], split="val")
    st = {r["id"]: r for r in ds.get_state(IDS[:3]).to_pylist()}
    assert st[IDS[0]] == {"id": IDS[0], "usr_state__masked": True, "usr_state__qc_status": "pass",
                          "usr_state__split": "val", "usr_state__supersedes": None, "usr_state__lineage": ["run1"]}
    assert st[IDS[1]]["usr_state__split"] == "val" and st[IDS[1]]["usr_state__masked"] is False


def test_U3_event(ds):
    """[U3] [E7] state_set event args."""
    ds.set_state(IDS[:2], masked=False, lineage=["a", "b", ""])
    e = [e for e in _events(ds) if e["action"] == "state_set"][-1]
    assert e["args"] == {"rows": 2, "masked": False, "qc_status": None, "split": None, "supersedes": None,
                         "lineage_count": 2, "allow_missing": False}
    assert e["artifacts"]["overlay"]["namespace"] == "usr_state"


def test_U4_clear_state(ds):
    """[U4] clear_state upserts masked=false and NULL elsewhere; event state_clear."""
    ds.set_state([IDS[0]], masked=True, qc_status="fail", split="test", supersedes="s", lineage=["l"])
    assert ds.clear_state([IDS[0]]) == 1
    row = ds.get_state([IDS[0]]).to_pylist()[0]
    assert row == {"id": IDS[0], "usr_state__masked": False, "usr_state__qc_status": None,
                   "usr_state__split": None, "usr_state__supersedes": None, "usr_state__lineage": None}
    assert [e for e in _events(ds) if e["action"] == "state_clear"][-1]["args"]["rows"] == 1


def test_U5_get_state_order_defaults_and_missing(ds):
    """[U5] one row per id in request order; missing state → masked=false + NULLs; unknown ids."""
    ds.set_state([IDS[2]], qc_status="warn")
    t = ds.get_state([IDS[2], IDS[0]])
    assert t.column_names == ["id"] + STATE_COLS
    assert t["id"].to_pylist() == [IDS[2], IDS[0]]
    assert t["usr_state__masked"].to_pylist() == [False, False]
    assert t["usr_state__qc_status"].to_pylist() == ["warn", None]
    with pytest.raises(SchemaError, match="not found"):
        ds.get_state(["0" * 40])
    t = ds.get_state([IDS[1], "0" * 40], allow_missing=True)
    assert t["id"].to_pylist() == [IDS[1], "0" * 40]


def test_U5_get_state_without_any_state(ds):
    """[U5] no usr_state overlay at all → defaults."""
    t = ds.get_state(IDS[:2])
    assert t["usr_state__masked"].to_pylist() == [False, False]
    assert t["usr_state__lineage"].to_pylist() == [None, None]


def test_U5_get_state_sees_materialized_state(ds):
    """[U5] (div) state materialized into the base stays visible to get_state."""
    base = pq.read_table(ds.records_path)
    base = base.append_column("usr_state__qc_status", pa.array(["pass", None, None, None]))
    pq.write_table(base, ds.records_path)
    assert ds.get_state([IDS[0]])["usr_state__qc_status"].to_pylist() == ["pass"]


def test_U5_state_of_tombstoned_record(ds):
    """[U5] get_state works for tombstoned ids; [U2] state columns appear in ordinary reads."""
    ds.set_state([IDS[0]], split="holdout")
    ds.tombstone([IDS[0]])
    assert ds.get_state([IDS[0]])["usr_state__split"].to_pylist() == ["holdout"]
    ds.restore([IDS[0]])
    t = ds.read_table()
    assert dict(zip(t["id"].to_pylist(), t["usr_state__split"].to_pylist()))[IDS[0]] == "holdout"


def test_U5_get_state_ignores_unrelated_nonconforming_overlay(ds, root):
    """[U5] [O11] get_state reads only usr_state: a drifted unrelated overlay does not block it."""
    ds.set_state([IDS[0]], split="train")
    bad = pa.table({"id": [IDS[0]], "stray__x": [1.0]})
    (ds.dir / "_derived").mkdir(exist_ok=True)
    pq.write_table(bad.replace_schema_metadata({"usr:overlay_namespace": "stray", "usr:overlay_key": "id",
                                                "usr:overlay_created_at": "2026-01-01T00:00:00.000000Z"}),
                   ds.dir / "_derived" / "stray.parquet")
    with pytest.raises(SchemaError):
        ds.head(1)
    assert ds.get_state([IDS[0]])["usr_state__split"].to_pylist() == ["train"]
