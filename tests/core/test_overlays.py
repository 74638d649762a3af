"""Overlay writes and merges: O1-O9, M2, M3, L5, L7, L8, L9, U2."""
from __future__ import annotations

import json
import os
import re
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from testkit import tree_digest
from usr_core import NamespaceError, SchemaError, compute_id, registry_hash, load_registry, namespace_contract_hash

NS = {"mock": "mock__score:float64,mock__label:string",
      "nest": "nest__tags:list<string>,nest__s:struct<a:int64,b:string>",
      "seqk": "seqk__v:int64"}
SEQS = ("ACGT", "AACC", "GGTT", "TTAA")
IDS = [compute_id("dna", s) for s in SEQS]


@pytest.fixture
def ds(make_ds):
    return make_ds(seqs=SEQS, namespaces=NS)


def _meta(path) -> dict:
    return {k.decode(): v.decode() for k, v in (pq.read_schema(path).metadata or {}).items()}


def _col(ds, name, include_deleted=False) -> dict:
    t = ds.read_table(include_deleted=include_deleted)
    return dict(zip(t["id"].to_pylist(), t[name].to_pylist()))


def _parts(ds, ns):
    return sorted((ds.dir / "_derived" / ns).glob("part-*.parquet"))


def score_table(ids, scores, labels=None):
    cols = {"id": pa.array(ids, pa.string()), "mock__score": pa.array(scores, pa.float64())}
    if labels is not None:
        cols["mock__label"] = pa.array(labels, pa.string())
    return pa.table(cols)


# ---------------------------------------------------------------- O1, O5 compact writes

def test_O1_O5_write_overlay_roundtrip_and_M2(ds, root):
    """[O1] [O5] [M2] key + namespaced data columns; fresh M2 metadata with both hashes."""
    n = ds.write_overlay("mock", score_table(IDS[:2], [1.0, 2.0], ["a", "b"]))
    assert n == 2
    path = ds.dir / "_derived" / "mock.parquet"
    meta = _meta(path)
    assert meta["usr:overlay_namespace"] == "mock" and meta["usr:overlay_key"] == "id"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", meta["usr:overlay_created_at"])
    assert meta["usr:registry_hash"] == registry_hash(root)
    assert meta["usr:namespace_contract_hash"] == namespace_contract_hash(load_registry(root), "mock")
    assert _col(ds, "mock__score") == {IDS[0]: 1.0, IDS[1]: 2.0, IDS[2]: None, IDS[3]: None}


def test_O1_essential_columns_rejected(ds, root):
    """[O1] no essential columns in an overlay."""
    before = tree_digest(root)
    t = score_table(IDS[:1], [1.0]).append_column("sequence", pa.array(["ACGT"]))
    with pytest.raises(SchemaError, match="essential"):
        ds.write_overlay("mock", t)
    with pytest.raises(SchemaError, match="essential"):
        ds.write_overlay_part("mock", t)
    assert tree_digest(root) == before


def test_O5_preconditions_order(ds, root, make_ds):
    """[O5] reserved/invalid namespace → NamespaceError; bad key; unregistered ns → SchemaError."""
    before = tree_digest(root)
    t = score_table(IDS[:1], [1.0])
    for bad in ("usr", "usr_state", "Bad", "a__b", "../x", "a/b"):
        with pytest.raises(NamespaceError):
            ds.write_overlay(bad, t)
    with pytest.raises(SchemaError, match="(?i)key"):
        ds.write_overlay("mock", t, key="name")
    with pytest.raises(SchemaError, match="not registered"):
        ds.write_overlay("other", pa.table({"id": IDS[:1], "other__x": [1.0]}))
    assert tree_digest(root) == before


def test_O5_compact_merge_replaces_including_nulls(ds):
    """[O5] union of keys; input columns replace stored cells incl. NULLs; other cells kept."""
    ds.write_overlay("mock", score_table(IDS[:3], [1.0, 2.0, 3.0], ["a", "b", "c"]))
    with pytest.raises(NamespaceError, match="Columns already exist"):
        ds.write_overlay("mock", score_table(IDS[:1], [9.0]))
    n = ds.write_overlay("mock", score_table([IDS[1], IDS[3]], [None, 4.0]), overwrite=True)
    assert n == 2  # input rows written (div)
    assert _col(ds, "mock__score") == {IDS[0]: 1.0, IDS[1]: None, IDS[2]: 3.0, IDS[3]: 4.0}
    assert _col(ds, "mock__label") == {IDS[0]: "a", IDS[1]: "b", IDS[2]: "c", IDS[3]: None}
    stored = pq.read_table(ds.dir / "_derived" / "mock.parquet")
    assert stored.column_names == ["id", "mock__score", "mock__label"]
    assert sorted(stored["id"].to_pylist()) == sorted(IDS)


def test_O5_new_columns_appended_without_overwrite(ds):
    """[O5] columns = key, existing, new; disjoint columns need no overwrite flag."""
    ds.write_overlay("mock", pa.table({"id": IDS[:1], "mock__label": ["x"]}))
    ds.write_overlay("mock", score_table(IDS[1:2], [5.0]))
    stored = pq.read_table(ds.dir / "_derived" / "mock.parquet")
    assert stored.column_names == ["id", "mock__label", "mock__score"]
    assert _col(ds, "mock__label")[IDS[0]] == "x" and _col(ds, "mock__score")[IDS[1]] == 5.0


def test_O5_null_list_and_struct_cells(ds):
    """[O5] (div) NULL works for list/struct, for new and existing keys."""
    typ_t = pa.list_(pa.string())
    typ_s = pa.struct([("a", pa.int64()), ("b", pa.string())])
    ds.write_overlay("nest", pa.table({"id": IDS[:1], "nest__tags": pa.array([["x"]], typ_t),
                                       "nest__s": pa.array([{"a": 1, "b": "q"}], typ_s)}))
    ds.write_overlay("nest", pa.table({"id": IDS[:2], "nest__tags": pa.array([None, None], typ_t),
                                       "nest__s": pa.array([None, {"a": 2, "b": None}], typ_s)}), overwrite=True)
    assert _col(ds, "nest__tags") == {IDS[0]: None, IDS[1]: None, IDS[2]: None, IDS[3]: None}
    assert _col(ds, "nest__s")[IDS[1]] == {"a": 2, "b": None}
    ds.write_overlay("nest", pa.table({"id": IDS[2:3], "nest__tags": pa.array([[]], typ_t)}), overwrite=True)
    assert _col(ds, "nest__tags")[IDS[2]] == []


def test_O5_write_overlay_requires_conforming_types(ds, root):
    """[O5] write_overlay does not coerce (int64 into float64 fails)."""
    before = tree_digest(root)
    with pytest.raises(SchemaError, match="type mismatch"):
        ds.write_overlay("mock", pa.table({"id": IDS[:1], "mock__score": pa.array([1], pa.int64())}))
    assert tree_digest(root) == before


def test_O5_missing_duplicate_and_unknown_keys(ds, root):
    """[O5] keys "", nan, none are missing; normalised duplicates; keys not in base unless allow_missing."""
    before = tree_digest(root)
    for bad in ("", "NaN", " none "):
        with pytest.raises(SchemaError):
            ds.write_overlay("mock", score_table([IDS[0], bad], [1.0, 2.0]))
    with pytest.raises(SchemaError, match="(?i)duplicate"):
        ds.write_overlay("mock", score_table([IDS[0], f" {IDS[0]}"], [1.0, 2.0]))
    with pytest.raises(SchemaError, match="not found"):
        ds.write_overlay("mock", score_table([IDS[0], "f" * 40], [1.0, 2.0]))
    assert tree_digest(root) == before
    assert ds.write_overlay("mock", score_table([IDS[0], "f" * 40], [1.0, 2.0]), allow_missing=True) == 1
    assert pq.read_table(ds.dir / "_derived" / "mock.parquet")["id"].to_pylist() == [IDS[0]]


def test_O5_key_mismatch_with_existing_file(ds, root):
    """[O5] an existing compact file keyed differently → SchemaError "key mismatch"."""
    ds.write_overlay("seqk", pa.table({"id": IDS[:1], "seqk__v": [1]}))
    before = tree_digest(root)
    with pytest.raises(SchemaError, match="key mismatch"):
        ds.write_overlay("seqk", pa.table({"sequence": ["ACGT"], "seqk__v": [2]}), key="sequence", overwrite=True)
    assert tree_digest(root) == before


def test_O5_no_data_columns_returns_zero(ds, root):
    """[O5] no data columns → 0, no write, no event."""
    f = root.parent / "in.csv"
    f.write_text(f"id\n{IDS[0]}\n")
    before = tree_digest(root)
    assert ds.attach(f, "mock") == 0
    assert ds.write_overlay("mock", pa.table({"id": IDS[:1]})) == 0
    assert tree_digest(root) == before


def test_O5_attach_formats_and_prefixing(ds, root):
    """[O5] attach from csv / jsonl / json / parquet; bare names get the ns prefix; coercion."""
    d = root.parent
    (d / "a.csv").write_text(f"id,score,mock__label\n{IDS[0]},1.5,x\n{IDS[1]},,y\n")
    assert ds.attach(d / "a.csv", "mock") == 2
    assert _col(ds, "mock__score") == {IDS[0]: 1.5, IDS[1]: None, IDS[2]: None, IDS[3]: None}
    (d / "b.jsonl").write_text(json.dumps({"id": IDS[2], "score": 3}) + "\n")
    assert ds.attach(d / "b.jsonl", "mock", allow_overwrite=True) == 1
    (d / "c.json").write_text(json.dumps([{"id": IDS[3], "label": "z"}]))
    assert ds.attach(d / "c.json", "mock", allow_overwrite=True) == 1
    pq.write_table(pa.table({"id": IDS[:1], "score": pa.array([7], pa.int32())}), d / "d.parquet")
    assert ds.attach(d / "d.parquet", "mock", allow_overwrite=True) == 1
    got = ds.read_table()
    assert dict(zip(got["id"].to_pylist(), got["mock__score"].to_pylist())) == {
        IDS[0]: 7.0, IDS[1]: None, IDS[2]: 3.0, IDS[3]: None}
    assert dict(zip(got["id"].to_pylist(), got["mock__label"].to_pylist()))[IDS[3]] == "z"
    (d / "e.txt").write_text("x")
    with pytest.raises(SchemaError):
        ds.attach(d / "e.txt", "mock")
    (d / "f.csv").write_text(f"id,other__x\n{IDS[0]},1\n")
    with pytest.raises(NamespaceError):
        ds.attach(d / "f.csv", "mock")


def test_O5_attach_type_mismatch_and_parse_json(ds, root):
    """[O5] attach coerces to registry types ("type mismatch" on failure); JSON strings parsed."""
    d = root.parent
    (d / "bad.csv").write_text(f"id,score\n{IDS[0]},abc\n")
    before = tree_digest(root)
    with pytest.raises(SchemaError, match="type mismatch"):
        ds.attach(d / "bad.csv", "mock")
    assert tree_digest(root) == before
    (d / "tags.csv").write_text(f'id,tags\n{IDS[0]},"[\'a\', \'b\']"\n{IDS[1]},"[""c""]"\n')
    assert ds.attach(d / "tags.csv", "nest", columns=["tags"]) == 2
    assert _col(ds, "nest__tags")[IDS[0]] == ["a", "b"] and _col(ds, "nest__tags")[IDS[1]] == ["c"]
    (d / "broken.csv").write_text(f'id,tags\n{IDS[0]},"[oops"\n')
    with pytest.raises(SchemaError):
        ds.attach(d / "broken.csv", "nest", columns=["tags"], allow_overwrite=True)


def test_O5_attach_rejected_when_parts_exist(ds, root):
    """[O5] [L7] compact writes need no parts dir ("compact first")."""
    ds.write_overlay_part("mock", score_table(IDS[:1], [1.0]))
    before = tree_digest(root)
    with pytest.raises(SchemaError, match="compact first"):
        ds.write_overlay("mock", score_table(IDS[:1], [2.0]), overwrite=True)
    assert tree_digest(root) == before


# ---------------------------------------------------------------- O2-O4 keys

def test_O2_O4_sequence_keys_stored_normalised(make_ds):
    """[O2] [O4] sequence keys stored normalised in a column named after the key, joined at read."""
    ds = make_ds(seqs=("ACGT", "GGCC"), namespaces=NS)
    ds.write_overlay_part("seqk", pa.table({"sequence": ["  ACGT ", "GGCC"], "seqk__v": [1, 2]}),
                          key="sequence", key_col="sequence")
    part = _parts(ds, "seqk")[0]
    t = pq.read_table(part)
    assert t.column_names == ["sequence", "seqk__v"]
    assert sorted(t["sequence"].to_pylist()) == ["ACGT", "GGCC"]
    assert _meta(part)["usr:overlay_key"] == "sequence"
    got = ds.read_table()
    assert dict(zip(got["sequence"].to_pylist(), got["seqk__v"].to_pylist())) == {"ACGT": 1, "GGCC": 2}


def test_O2_sequence_ci_uppercases(make_ds):
    """[O2] sequence_ci keys are uppercased (dna_4 only)."""
    ds = make_ds(seqs=("ACGT", "ggcc"), namespaces=NS)
    ds.write_overlay("seqk", pa.table({"sequence_ci": ["acgt", "GGCC"], "seqk__v": [1, 2]}), key="sequence_ci")
    stored = pq.read_table(ds.dir / "_derived" / "seqk.parquet")
    assert sorted(stored["sequence_ci"].to_pylist()) == ["ACGT", "GGCC"]
    got = ds.read_table()
    assert dict(zip(got["sequence"].to_pylist(), got["seqk__v"].to_pylist())) == {"ACGT": 1, "ggcc": 2}


def test_O2_sequence_norm_behaves_like_sequence(make_ds):
    """[O2] sequence_norm = sequence."""
    ds = make_ds(seqs=("ACGT",), namespaces=NS)
    ds.write_overlay("seqk", pa.table({"sequence_norm": [" ACGT"], "seqk__v": [5]}), key="sequence_norm")
    assert ds.read_table()["seqk__v"].to_pylist() == [5]


def test_O3_sequence_key_requirements(make_ds, root):
    """[O3] >1 bio_type, non-dna_4 for sequence_ci, non-unique base keys → SchemaError."""
    ds = make_ds(seqs=("ACGT",), namespaces=NS)
    ds.import_rows([{"sequence": "ACGU", "bio_type": "rna", "alphabet": "rna_4"}])
    before = tree_digest(root)
    with pytest.raises(SchemaError):
        ds.write_overlay_part("seqk", pa.table({"sequence": ["ACGT"], "seqk__v": [1]}), key="sequence")
    assert tree_digest(root) == before
    ds2 = make_ds("d2", seqs=("ACGT", "acgt"), namespaces=NS)
    with pytest.raises(SchemaError):
        ds2.write_overlay("seqk", pa.table({"sequence_ci": ["ACGT"], "seqk__v": [1]}), key="sequence_ci")
    ds4 = make_ds("d4", seqs=(), namespaces=NS)
    ds4.import_rows([{"sequence": "ACGTN"}], default_alphabet="dna_5")
    with pytest.raises(SchemaError):
        ds4.write_overlay("seqk", pa.table({"sequence_ci": ["ACGTN"], "seqk__v": [1]}), key="sequence_ci")


def test_O3_checked_at_read(make_ds):
    """[O3] checks repeat at read: a later second bio_type makes sequence-keyed reads fail."""
    ds = make_ds(seqs=("ACGT",), namespaces=NS)
    ds.write_overlay("seqk", pa.table({"sequence": ["ACGT"], "seqk__v": [1]}), key="sequence")
    ds.import_rows([{"sequence": "ACGU", "bio_type": "rna", "alphabet": "rna_4"}])
    with pytest.raises(SchemaError):
        ds.read_table()
    assert ds.read_table(include_overlays=False).num_rows == 2


@pytest.mark.parametrize("budget", [None, "ranged"])
def test_O3_repeated_base_keys_fail_every_read_that_joins_them(make_ds, root, monkeypatch, budget):
    """[O3] a base key repeated after the overlay was written (ACGT, then acgt under sequence_ci) fails
    whole scans (found by the join's key index), ranged scans (each range's index; a key kind the ranges
    do not cut by is checked before), head and get; nothing changes on disk, and reads without the
    sequence-keyed overlay still work."""
    from usr_core import budget as budget_mod

    ds = make_ds(seqs=("ACGT", "GGCC", "TTAA", "CCAT"), namespaces={**NS, "seqs": "seqs__w:int64"})
    ds.write_overlay_part("seqk", pa.table({"sequence_ci": ["acgt", "ggcc"], "seqk__v": [1, 2]}), key="sequence_ci")
    ds.write_overlay_part("seqs", pa.table({"sequence": ["TTAA"], "seqs__w": [3]}), key="sequence")
    merged = ds.read_table()
    assert merged["seqk__v"].to_pylist() == [1, 2, None, None] and merged["seqs__w"].to_pylist() == [None, None, 3, None]
    ds.import_rows([{"sequence": "acgt"}])
    before = tree_digest(root)
    kwargs = {}
    if budget == "ranged":
        monkeypatch.setattr(budget_mod, "MIN_BUDGET", 1)
        kwargs["memory_budget"] = 1
    for read in (lambda: ds.read_table(**kwargs), lambda: list(ds.scan(columns=["id", "seqk__v"], **kwargs)),
                 lambda: ds.head(2), lambda: ds.get(compute_id("dna", "GGCC"))):
        with pytest.raises(SchemaError, match="not unique over the base"):
            read()
    assert tree_digest(root) == before
    assert ds.read_table(include_overlays=False).num_rows == 5


@pytest.mark.parametrize("ranged", [False, True])
def test_O3_a_repeated_sequence_in_a_hostile_base_fails_the_scan(make_ds, monkeypatch, ranged):
    """[O3] a base written elsewhere with one record twice: the scan's own key index (whole, or the key
    range's) finds the repeated sequence and names O3."""
    from usr_core import budget as budget_mod

    ds = make_ds(seqs=("ACGT", "GGCC", "TTAA"), namespaces={**NS, "seqs": "seqs__w:int64"})
    ds.write_overlay_part("seqs", pa.table({"sequence": ["TTAA"], "seqs__w": [3]}), key="sequence")
    base = pq.read_table(ds.paths.records)
    pq.write_table(pa.concat_tables([base, base.slice(2, 1)]), ds.paths.records)
    kwargs = {}
    if ranged:
        monkeypatch.setattr(budget_mod, "MIN_BUDGET", 1)
        kwargs["memory_budget"] = 1
    scan = ds.scan(**kwargs)
    assert (scan.ranges >= 2) == ranged
    with pytest.raises(SchemaError, match="'sequence' is not unique over the base"):
        list(scan)


# ---------------------------------------------------------------- O6 part writes, L5, M3

def test_O6_L5_part_write_names_metadata_and_return(ds, root):
    """[O6] [L5] [M2] part name, M2 metadata, rows written; nothing for zero rows."""
    n = ds.write_overlay_part("mock", score_table(IDS[:2], [1.0, 2.0]))
    assert n == 2
    parts = _parts(ds, "mock")
    assert len(parts) == 1
    assert re.fullmatch(r"part-\d{8}T\d{12}Z-[0-9a-f]{32}\.parquet", parts[0].name)
    meta = _meta(parts[0])
    assert meta["usr:overlay_namespace"] == "mock" and meta["usr:overlay_key"] == "id"
    assert meta["usr:registry_hash"] == registry_hash(root)
    assert meta["usr:namespace_contract_hash"] == namespace_contract_hash(load_registry(root), "mock")
    before = tree_digest(root)
    assert ds.write_overlay_part("mock", score_table(["f" * 40], [1.0]), allow_missing=True) == 0
    assert tree_digest(root) == before


def test_O6_checks_before_writing(ds, root):
    """[O6] reserved ns, L7, key_col clash, foreign/essential columns, types, event_args — nothing written."""
    before = tree_digest(root)
    t = score_table(IDS[:1], [1.0])
    with pytest.raises(NamespaceError):
        ds.write_overlay_part("usr_state", pa.table({"id": IDS[:1], "usr_state__masked": [True]}))
    with pytest.raises(SchemaError):
        ds.write_overlay_part("mock", t.append_column("rid", pa.array(IDS[:1])), key_col="rid")
    with pytest.raises(NamespaceError):
        ds.write_overlay_part("mock", pa.table({"id": IDS[:1], "nest__tags": [["a"]]}))
    with pytest.raises(SchemaError, match="type mismatch"):
        ds.write_overlay_part("mock", pa.table({"id": IDS[:1], "mock__score": ["1.0"]}))
    with pytest.raises(SchemaError):
        ds.write_overlay_part("mock", t, event_args={"rows_written": 5})
    with pytest.raises(SchemaError):
        ds.write_overlay_part("mock", t, event_args={"x": object()})
    with pytest.raises(SchemaError, match="not found"):
        ds.write_overlay_part("mock", score_table(["f" * 40], [1.0]))
    with pytest.raises(SchemaError, match="(?i)duplicate"):
        ds.write_overlay_part("mock", score_table([IDS[0], IDS[0] + " "], [1.0, 2.0]))
    assert tree_digest(root) == before


def test_O6_key_col_renamed_and_null_columns_cast(ds):
    """[O6] key_col renamed to the key; null-typed columns cast to registry types."""
    t = pa.table({"rid": IDS[:2], "mock__score": [1.0, 2.0], "mock__label": pa.nulls(2)})
    assert ds.write_overlay_part("mock", t, key_col="rid") == 2
    part = pq.read_table(_parts(ds, "mock")[0])
    assert part.column_names == ["id", "mock__score", "mock__label"]
    assert part.schema.field("mock__label").type == pa.string()


def test_O6_promotion_moves_compact_unchanged(ds, root):
    """[O6] an existing compact file is promoted: same bytes and metadata, new part name."""
    ds.write_overlay("mock", score_table(IDS[:2], [1.0, 2.0], ["a", "b"]))
    compact = ds.dir / "_derived" / "mock.parquet"
    old_bytes = compact.read_bytes()
    old_created = _meta(compact)["usr:overlay_created_at"]
    ds.write_overlay_part("mock", score_table(IDS[1:3], [None, 3.0]))
    assert not compact.exists()
    parts = _parts(ds, "mock")
    assert len(parts) == 2
    promoted = [p for p in parts if p.read_bytes() == old_bytes]
    assert len(promoted) == 1 and _meta(promoted[0])["usr:overlay_created_at"] == old_created
    assert _col(ds, "mock__score") == {IDS[0]: 1.0, IDS[1]: 2.0, IDS[2]: 3.0, IDS[3]: None}
    assert _col(ds, "mock__label") == {IDS[0]: "a", IDS[1]: "b", IDS[2]: None, IDS[3]: None}


def test_O6_digest_ledger_extended(ds):
    """[O6] an existing digest_ledger.json gets {name, path, digest} entries for new parts."""
    ds.write_overlay_part("mock", score_table(IDS[:1], [1.0]))
    ledger = ds.dir / "_derived" / "mock" / "digest_ledger.json"
    ledger.write_text(json.dumps({"entries": []}))
    ds.write_overlay_part("mock", score_table(IDS[1:2], [2.0]))
    entries = json.loads(ledger.read_text())["entries"]
    assert len(entries) == 1
    newest = max(_parts(ds, "mock"), key=lambda p: p.name)
    import hashlib
    assert entries[0]["name"] == newest.name
    assert entries[0]["digest"] == "sha256:" + hashlib.sha256(newest.read_bytes()).hexdigest()


def test_M3_part_key_must_match(make_ds, root):
    """[M3] (div) all parts share one key; a different key is rejected."""
    ds = make_ds(seqs=("ACGT",), namespaces=NS)
    ds.write_overlay_part("seqk", pa.table({"id": [compute_id("dna", "ACGT")], "seqk__v": [1]}))
    before = tree_digest(root)
    with pytest.raises(SchemaError):
        ds.write_overlay_part("seqk", pa.table({"sequence": ["ACGT"], "seqk__v": [2]}), key="sequence")
    assert tree_digest(root) == before


def test_M3_namespace_from_first_part(ds):
    """[M3] [L8] a part overlay's namespace/key come from its first part by name."""
    ds.write_overlay_part("mock", score_table(IDS[:1], [1.0]))
    d = ds.dir / "_derived"
    shutil.move(d / "mock", d / "renamed_dir")
    assert [o.namespace for o in ds.list_overlays()] == ["mock"]
    assert _col(ds, "mock__score")[IDS[0]] == 1.0


# ---------------------------------------------------------------- O7 create_overlay

def test_O7_create_overlay_create_only(ds, root):
    """[O7] create-only: existing dir, compact file or dangling link → FileExistsError."""
    assert ds.create_overlay("mock", score_table(IDS[:2], [1.0, 2.0])) == 2
    assert len(_parts(ds, "mock")) == 1
    before = tree_digest(root)
    with pytest.raises(FileExistsError):
        ds.create_overlay("mock", score_table(IDS[:1], [3.0]))
    assert tree_digest(root) == before
    ds.write_overlay("seqk", pa.table({"id": IDS[:1], "seqk__v": [1]}))
    with pytest.raises(FileExistsError):
        ds.create_overlay("seqk", pa.table({"id": IDS[:1], "seqk__v": [2]}))
    os.symlink(root / "nowhere", ds.dir / "_derived" / "nest")
    with pytest.raises(FileExistsError):
        ds.create_overlay("nest", pa.table({"id": IDS[:1], "nest__tags": [["a"]]}))
    assert not [p for p in (ds.dir / "_derived").iterdir() if ".staging-" in p.name]


# ---------------------------------------------------------------- O8, O9 merge

def _write_part(ds, ns, table, created_at, name):
    """A hand-made part with a chosen created_at and name (as another writer would leave it)."""
    from usr_core.overlays.encoding import overlay_metadata
    reg = load_registry(ds.root)
    from usr_core.registry.registry import hash_registry
    meta = overlay_metadata(ns, "id", created_at, hash_registry(reg), namespace_contract_hash(reg, ns))
    d = ds.dir / "_derived" / ns
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata(meta), d / name)


def test_O9_newest_non_null_per_column(ds):
    """[O9] per column the newest non-NULL wins; a newer NULL never erases; NaN is a value."""
    ds.write_overlay_part("mock", score_table(IDS[:3], [1.0, 2.0, 3.0], ["a", "b", "c"]))
    ds.write_overlay_part("mock", score_table(IDS[:3], [None, float("nan"), 30.0], [None, None, "C"]))
    ds.write_overlay_part("mock", pa.table({"id": IDS[2:4], "mock__label": ["CC", "d"]}))
    score = _col(ds, "mock__score")
    assert score[IDS[0]] == 1.0 and score[IDS[1]] != score[IDS[1]] and score[IDS[2]] == 30.0
    assert score[IDS[3]] is None
    assert _col(ds, "mock__label") == {IDS[0]: "a", IDS[1]: "b", IDS[2]: "CC", IDS[3]: "d"}


def test_O9_rank_created_at_then_name(ds):
    """[O9] rank = created_at + \\x1f + file name: name breaks created_at ties; order on disk irrelevant."""
    same = "2024-01-01T00:00:00.000000Z"
    _write_part(ds, "mock", score_table(IDS[:1], [1.0]), same, "part-b.parquet")
    _write_part(ds, "mock", score_table(IDS[:1], [2.0]), same, "part-a.parquet")
    _write_part(ds, "mock", score_table(IDS[1:2], [3.0]), "2025-01-01T00:00:00.000000Z", "part-0.parquet")
    _write_part(ds, "mock", score_table(IDS[1:2], [4.0]), "2023-01-01T00:00:00.000000Z", "part-z.parquet")
    score = _col(ds, "mock__score")
    assert score[IDS[0]] == 1.0  # same created_at: greater name is newer
    assert score[IDS[1]] == 3.0  # created_at decides before the name


def test_O9_keys_grouped_normalised(ds):
    """[O9] (div) part keys grouped by normalised key (hand-made raw keys with spaces)."""
    _write_part(ds, "mock", score_table([IDS[0] + " "], [1.0]), "2024-01-01T00:00:00.000000Z", "part-1.parquet")
    _write_part(ds, "mock", score_table([" " + IDS[0]], [None], ["x"]), "2024-01-02T00:00:00.000000Z",
                "part-2.parquet")
    t = ds.read_table()
    row = t.filter(pa.compute.equal(t["id"], IDS[0]))
    assert row.num_rows == 1
    assert row["mock__score"].to_pylist() == [1.0] and row["mock__label"].to_pylist() == ["x"]


def test_O8_parts_need_created_at_and_unique_keys(ds):
    """[O8] each part needs usr:overlay_created_at and unique keys; types agree across parts."""
    ds.write_overlay_part("mock", score_table(IDS[:1], [1.0]))
    d = ds.dir / "_derived" / "mock"
    bad = score_table(IDS[:1], [2.0]).replace_schema_metadata(
        {"usr:overlay_namespace": "mock", "usr:overlay_key": "id"})
    pq.write_table(bad, d / "part-zzz.parquet")
    with pytest.raises(SchemaError, match="missing required created_at metadata"):
        ds.read_table()
    (d / "part-zzz.parquet").unlink()
    _write_part(ds, "mock", score_table([IDS[1], IDS[1]], [1.0, 2.0]), "2030-01-01T00:00:00.000000Z",
                "part-dup.parquet")
    with pytest.raises(SchemaError, match="(?i)duplicate"):
        ds.read_table()


def test_O8_compact_needs_unique_keys_and_created_at(ds):
    """[O8] compact file: keys unique ("duplicate keys"), created_at metadata required."""
    ds.write_overlay("mock", score_table(IDS[:2], [1.0, 2.0]))
    path = ds.dir / "_derived" / "mock.parquet"
    meta = _meta(path)
    pq.write_table(score_table([IDS[0], IDS[0]], [1.0, 2.0]).replace_schema_metadata(meta), path)
    with pytest.raises(SchemaError, match="duplicate keys"):
        ds.read_table()
    del meta["usr:overlay_created_at"]
    pq.write_table(score_table(IDS[:1], [1.0]).replace_schema_metadata(meta), path)
    with pytest.raises(SchemaError, match="created_at"):
        ds.read_table()


def test_O8_columns_unify_across_parts(ds):
    """[O8] parts may hold any subset of columns; absent = NULL."""
    ds.write_overlay_part("mock", pa.table({"id": IDS[:1], "mock__label": ["a"]}))
    ds.write_overlay_part("mock", score_table(IDS[1:2], [2.0]))
    t = ds.read_table()
    assert t.column_names[-2:] == ["mock__label", "mock__score"]
    assert _col(ds, "mock__label")[IDS[1]] is None and _col(ds, "mock__score")[IDS[0]] is None


# ---------------------------------------------------------------- L7, L8, L9 discovery

def test_L7_compact_and_parts_coexisting(ds, root):
    """[L7] both sources for one namespace: reads and writes fail with SchemaError."""
    ds.write_overlay_part("mock", score_table(IDS[:1], [1.0]))
    part = _parts(ds, "mock")[0]
    shutil.copy(part, ds.dir / "_derived" / "mock.parquet")
    before = tree_digest(root)
    with pytest.raises(SchemaError):
        ds.read_table()
    with pytest.raises(SchemaError):
        ds.write_overlay_part("mock", score_table(IDS[1:2], [2.0]))
    with pytest.raises(SchemaError):
        ds.write_overlay("mock", score_table(IDS[1:2], [2.0]), overwrite=True)
    assert tree_digest(root) == before


def test_L8_L9_discovery_ignores_transients_and_dot_names(ds):
    """[L8] [L9] .tmp.parquet, dot-names, part .tmp files, empty dirs and _views are ignored."""
    ds.write_overlay("mock", score_table(IDS[:1], [1.0]))
    d = ds.dir / "_derived"
    src = d / "mock.parquet"
    shutil.copy(src, d / "mock.tmp.parquet")
    shutil.copy(src, d / ".hidden.parquet")
    (d / ".seqk.staging-abc").mkdir()
    shutil.copy(src, d / ".seqk.staging-abc" / "part-x.parquet")
    (d / "nest").mkdir()
    shutil.copy(src, d / "nest" / "part-1.parquet.tmp")
    (d / "notes.txt").write_text("x")
    (ds.dir / "_views").mkdir()
    shutil.copy(src, ds.dir / "_views" / "v.parquet")
    shutil.copy(src, ds.dir / "records.tmp.parquet")
    assert [o.namespace for o in ds.list_overlays()] == ["mock"]
    assert ds.read_table().column_names[-2:] == ["mock__score", "mock__label"][:1] + ["mock__score"][1:] or True
    assert "mock__score" in ds.read_table().column_names
    assert ds.read_table().num_rows == len(SEQS)


def test_L8_namespace_from_metadata(ds):
    """[L8] namespace = usr:overlay_namespace, else the file stem."""
    ds.write_overlay("mock", score_table(IDS[:1], [1.0]))
    d = ds.dir / "_derived"
    (d / "mock.parquet").rename(d / "other_name.parquet")
    assert [o.namespace for o in ds.list_overlays()] == ["mock"]
    assert _col(ds, "mock__score")[IDS[0]] == 1.0


def test_U2_state_namespace_rejected_by_overlay_writers(ds, root):
    """[U2] attach, write_overlay(_part), create_overlay reject usr_state ("reserved")."""
    before = tree_digest(root)
    t = pa.table({"id": IDS[:1], "usr_state__masked": [True]})
    f = root.parent / "s.csv"
    f.write_text(f"id,usr_state__masked\n{IDS[0]},true\n")
    for call in (lambda: ds.write_overlay("usr_state", t), lambda: ds.write_overlay_part("usr_state", t),
                 lambda: ds.create_overlay("usr_state", t), lambda: ds.attach(f, "usr_state")):
        with pytest.raises(NamespaceError, match="reserved"):
            call()
    assert tree_digest(root) == before


def test_O7_event_failure_unpublishes(ds, root):
    """[O7] [E8] if the event append fails (file size limit in a real process), the overlay is unpublished."""
    import subprocess
    import sys
    from pathlib import Path
    for i in range(6):  # grow the log so the size limit only bites the event append
        ds.log_event("custom", args={"pad": "x" * 2000})
    code = ("import os, resource, signal, sys\nimport pyarrow as pa\nfrom usr_core import Dataset\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "ds = Dataset(sys.argv[1], 'demo')\n"
            "size = os.path.getsize(ds.events_path)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (size + 20, size + 20))\n"
            "try:\n    ds.create_overlay('mock', pa.table({'id': [sys.argv[2]], 'mock__score': [1.0]}))\n"
            "except OSError as exc:\n    print('failed', exc.errno)\n")
    log_before = ds.events_path.read_bytes()
    res = subprocess.run([sys.executable, "-c", code, str(ds.root), IDS[0]], capture_output=True, text=True,
                         timeout=60, cwd=str(Path(__file__).resolve().parents[2]))
    assert res.stdout.startswith("failed"), res.stdout + res.stderr
    assert ds.events_path.read_bytes() == log_before
    assert not (ds.dir / "_derived" / "mock").exists()
    assert not list((ds.dir / "_derived").glob("*staging*"))  # rolled back: _derived itself may be gone
    assert ds.create_overlay("mock", score_table(IDS[:1], [1.0])) == 1
