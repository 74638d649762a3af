"""Validation V1-V3: schema, overlays per registry mode, strict base columns, streamed row checks."""
from __future__ import annotations

import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from testkit import FIXTURES, tree_digest
from usr_core import (AlphabetError, Dataset, DuplicateIDError, NamespaceError, SchemaError, compute_id,
                      register_namespace, registry_hash)
from usr_core.base import base_metadata, write_base_table

SEQS = ("ACGT", "AACC", "GGTT", "TTAA")
IDS = [compute_id("dna", s) for s in SEQS]
NS = {"mock": "mock__score:float64,mock__label:string", "other": "other__x:int64"}
MODES = ["current", "frozen", "either", "namespace-current", "namespace-frozen", "namespace-either"]


@pytest.fixture
def ds(make_ds):
    return make_ds(seqs=SEQS, namespaces=NS)


def _rewrite_base(ds, fn):
    """Replace the base table by fn(table) (keeping M1 metadata) — to plant bad rows."""
    t = pq.read_table(ds.records_path)
    meta = base_metadata(ds.paths)
    write_base_table(ds.paths, fn(t.replace_schema_metadata(None)), meta)


def _set(t: pa.Table, name: str, values) -> pa.Table:
    i = t.column_names.index(name)
    return t.set_column(i, t.schema.field(i), pa.array(values, t.schema.field(i).type))


def test_V1_valid_dataset_passes_every_mode(ds):
    """[V1] [V2] a freshly written dataset validates in all six registry modes, strict or not."""
    ds.write_overlay("mock", pa.table({"id": IDS[:2], "mock__score": [1.0, 2.0]}))
    ds.write_overlay_part("other", pa.table({"id": IDS[:1], "other__x": pa.array([1], pa.int64())}))
    ds.tombstone([IDS[3]])
    ds.set_state([IDS[0]], masked=True)
    for mode in MODES:
        ds.validate(registry_mode=mode)
        ds.validate(strict=True, registry_mode=mode)


def test_V1_fixture_root_validates_strict(tmp_path):
    """[V1] [V3] the interop fixture written by another implementation validates --strict in every mode."""
    root = tmp_path / "fx"
    shutil.copytree(FIXTURES / "dna_multi", root)
    ds = Dataset(root, "promoters")
    before = tree_digest(root)
    for mode in MODES:
        ds.validate(strict=True, registry_mode=mode)
    assert tree_digest(root) == before  # validation is read-only


def test_V2_unknown_mode(ds):
    """[V2] unknown registry mode → SchemaError."""
    with pytest.raises(SchemaError, match="Unknown registry mode"):
        ds.validate(registry_mode="latest")


def test_V2_registry_drift_story(ds, root):
    """[V2] [X4] [X2] [R14] register, write, edit another namespace: default validation fails with the hash
    mismatch, namespace-current passes; refresh / compaction make default validation pass again."""
    ds.write_overlay("mock", pa.table({"id": IDS[:2], "mock__score": [1.0, 2.0]}))
    ds.write_overlay_part("other", pa.table({"id": IDS[:1], "other__x": pa.array([5], pa.int64())}))
    ds.validate()
    old = registry_hash(root)
    register_namespace(root, "extra", "extra__v:string")  # an edit that touches neither mock nor other
    new = registry_hash(root)
    with pytest.raises(SchemaError, match=r"Overlay usr:registry_hash mismatch for .*: "
                                          rf"{old} not in \[{new}\]"):
        ds.validate()
    ds.validate(registry_mode="namespace-current")
    ds.validate(registry_mode="either")  # the frozen registry (base hash) still matches
    with ds.maintenance(reason="drift"):
        ds.refresh_overlay_metadata("mock")
        with pytest.raises(SchemaError, match="mismatch"):
            ds.validate()  # the part overlay is still stamped with the old hash
        ds.compact_overlay("other")
    ds.validate()
    ds.validate(strict=True)
    # frozen mode now uses the restamped base hash: the old overlays would fail, the new ones pass
    ds.validate(registry_mode="frozen")


def test_V2_changed_namespace_fails_namespace_current(ds, root):
    """[V2] an edit of the overlay's own namespace fails namespace-current (contract hash) until rewritten."""
    ds.write_overlay("mock", pa.table({"id": IDS[:1], "mock__score": [1.0]}))
    register_namespace(root, "mock", "mock__score:float64,mock__label:string,mock__n:int64", overwrite=True)
    with pytest.raises(SchemaError, match="usr:namespace_contract_hash mismatch"):
        ds.validate(registry_mode="namespace-current")
    with ds.maintenance(reason="r"):
        ds.refresh_overlay_metadata("mock")
    ds.validate(registry_mode="namespace-current")
    ds.validate()


def test_V2_missing_metadata_messages(ds):
    """[V2] "Overlay missing <field> metadata" for the key and the hash field."""
    ds.write_overlay("mock", pa.table({"id": IDS[:1], "mock__score": [1.0]}))
    path = ds.dir / "_derived" / "mock.parquet"
    t = pq.read_table(path)
    meta = {k: v for k, v in t.schema.metadata.items() if k != b"usr:registry_hash"}
    pq.write_table(t.replace_schema_metadata(meta), path)
    with pytest.raises(SchemaError, match="Overlay missing usr:registry_hash metadata"):
        ds.validate()
    ds.validate(registry_mode="namespace-current")
    meta = {k: v for k, v in meta.items() if k != b"usr:overlay_key"}
    pq.write_table(t.replace_schema_metadata(meta), path)
    with pytest.raises(SchemaError, match="Overlay missing usr:overlay_key metadata"):
        ds.validate(registry_mode="namespace-current")


def test_V2_conformance_after_type_change(ds, root):
    """[V2] [O11] hash check first, then conformance: a retyped column fails every mode that uses the new registry."""
    ds.write_overlay("mock", pa.table({"id": IDS[:1], "mock__score": [1.0]}))
    register_namespace(root, "mock", "mock__score:int64,mock__label:string", overwrite=True)
    for mode in ("current", "namespace-current"):
        with pytest.raises(SchemaError):
            ds.validate(registry_mode=mode)
    ds.validate(registry_mode="frozen")  # the base was frozen before the edit
    ds.validate(registry_mode="namespace-frozen")


def test_V2_frozen_modes_need_base_hash(ds):
    """[V2] frozen modes need base usr:registry_hash ("run registry-freeze")."""
    meta = {k: v for k, v in base_metadata(ds.paths).items() if k != "usr:registry_hash"}
    write_base_table(ds.paths, pq.read_table(ds.records_path).replace_schema_metadata(None), meta)
    for mode in ("frozen", "namespace-frozen"):
        with pytest.raises(SchemaError, match="run registry-freeze"):
            ds.validate(registry_mode=mode)
    ds.validate(registry_mode="either")


def test_V1_essential_columns_and_types(ds):
    """[V1] [S1] a missing or mistyped essential column fails first."""
    _rewrite_base(ds, lambda t: t.set_column(4, pa.field("length", pa.int64()), t["length"].cast(pa.int64())))
    with pytest.raises(SchemaError, match="length"):
        ds.validate()


def test_V1_extra_base_columns_must_be_namespaced(ds):
    """[V1] other base columns must be <ns>__<field> (NamespaceError)."""
    _rewrite_base(ds, lambda t: t.append_column("score", pa.array([1.0] * 4)))
    with pytest.raises(NamespaceError, match="score"):
        ds.validate()


def test_V1_tombstone_file_types(ds):
    """[V1] [T1] a tombstone file with the wrong column types fails."""
    ds.tombstone([IDS[0]])
    path = ds.dir / "_derived" / "usr.parquet"
    t = pq.read_table(path)
    t = t.set_column(1, "usr__deleted", pa.array(["yes"]))
    pq.write_table(t, path)
    with pytest.raises(SchemaError, match="usr__deleted"):
        ds.validate(registry_mode="namespace-current")


@pytest.mark.parametrize("column,values,err,msg", [
    ("id", ["", IDS[1], IDS[2], IDS[3]], SchemaError, "Empty id"),
    ("sequence", ["ACGX", "AACC", "GGTT", "TTAA"], AlphabetError, "invalid characters for dna_4"),
    ("bio_type", ["dna", "d|na", "dna", "dna"], SchemaError, r"\|"),
    ("alphabet", ["dna_4", "rna_4", "dna_4", "dna_4"], AlphabetError, "not allowed"),
    ("length", [4, 4, 5, 4], SchemaError, "length does not match.* 3"),
    ("id", [IDS[1], IDS[1], IDS[2], IDS[3]], SchemaError, "id does not match"),
])
def test_V1_row_checks(ds, column, values, err, msg):
    """[V1] [S5] [S4] per-row checks: ids, alphabet, bio_type, length, id == S4."""
    _rewrite_base(ds, lambda t: _set(t, column, values))
    with pytest.raises(err, match=msg):
        ds.validate()


def test_V1_duplicate_ids(ds):
    """[V1] duplicate ids → DuplicateIDError with count and samples."""
    _rewrite_base(ds, lambda t: pa.concat_tables([t, t.slice(0, 1)]))
    with pytest.raises(DuplicateIDError, match=rf"1 duplicate id\(s\).*{IDS[0]} x2") as exc:
        ds.validate()
    assert exc.value.groups == [{"id": IDS[0], "count": 2}]


def test_V1_rows_are_streamed_across_batches(ds):
    """[V1] streamed checks report base row numbers across batch boundaries."""
    from usr_core.validate import check_rows

    _rewrite_base(ds, lambda t: _set(t, "length", [4, 4, 4, 9]))
    with pytest.raises(SchemaError, match="rows 4"):
        check_rows(ds, batch_size=2)


def test_V3_strict_materialized_columns(ds, root):
    """[V3] materialized columns must conform; the base hash must match in current/frozen/either."""
    ds.write_overlay("mock", pa.table({"id": IDS[:2], "mock__score": [1.0, 2.0]}))
    with ds.maintenance(reason="m"):
        ds.materialize(keep_overlays=False)
    ds.validate(strict=True)
    register_namespace(root, "extra", "extra__v:string")
    with pytest.raises(SchemaError, match="Materialized base columns failed strict registry validation"):
        ds.validate(strict=True)
    ds.validate(strict=True, registry_mode="namespace-current")
    ds.validate(strict=True, registry_mode="either")
    _rewrite_base(ds, lambda t: t.append_column("ghost__v", pa.array([1] * 4)))
    with pytest.raises(SchemaError, match="current: .*frozen: .*ghost"):
        ds.validate(strict=True, registry_mode="either")


def test_V3_unregistered_materialized_namespace(ds):
    """[V3] a materialized column of an unregistered namespace fails strict validation only."""
    _rewrite_base(ds, lambda t: t.append_column("ghost__v", pa.array([1] * 4)))
    ds.validate()
    with pytest.raises(SchemaError, match="ghost"):
        ds.validate(strict=True, registry_mode="namespace-current")


def test_V2_mismatch_is_a_typed_error(ds, root):
    """[V2] a hash mismatch raises RegistryMismatchError carrying field, path, got and allowed; with
    several candidates (either) every candidate's hash is listed."""
    from usr_core.errors import RegistryMismatchError

    ds.write_overlay("mock", pa.table({"id": IDS[:1], "mock__score": [1.0]}))
    old = registry_hash(root)
    register_namespace(root, "extra", "extra__v:string")
    with pytest.raises(RegistryMismatchError) as exc:
        ds.validate()
    assert exc.value.field == "usr:registry_hash" and exc.value.got == old
    assert exc.value.allowed == [registry_hash(root)] and exc.value.path.name == "mock.parquet"
    path = ds.dir / "_derived" / "mock.parquet"  # stamped by neither the current nor the frozen registry
    t = pq.read_table(path)
    pq.write_table(t.replace_schema_metadata({**t.schema.metadata, b"usr:registry_hash": b"0" * 64}), path)
    with pytest.raises(RegistryMismatchError) as exc:
        ds.validate(registry_mode="either")
    assert exc.value.got == "0" * 64 and len(exc.value.allowed) == 2
    assert str(exc.value).startswith("Overlay usr:registry_hash mismatch for ")


def _later_part(ds, table: pa.Table, drop: tuple = ()) -> None:
    """Write a part through USR, then rewrite it as a foreign writer would: `table` as data, the same
    metadata minus the `drop` keys."""
    ds.write_overlay_part("mock", pa.table({"id": IDS[:1], "mock__score": [0.5]}))
    part = max((ds.dir / "_derived" / "mock").glob("part-*.parquet"))
    meta = {k: v for k, v in pq.read_schema(part).metadata.items() if k.decode() not in drop}
    pq.write_table(table.replace_schema_metadata(meta), part)


@pytest.mark.parametrize("case", ["wrong type", "duplicate keys", "no created_at", "garbage created_at"])
def test_V1_validate_fails_whenever_reads_fail(ds, case):
    """[V1] [O8] [O11] a later part with a wrong type, duplicate keys or no (or an unparseable)
    created_at makes every read fail; validate --strict fails too instead of printing OK."""
    ds.write_overlay_part("mock", pa.table({"id": IDS[:2], "mock__score": [1.0, 2.0]}))
    ds.validate(strict=True)
    if case == "wrong type":
        _later_part(ds, pa.table({"id": IDS[:1], "mock__score": pa.array([1], pa.int64())}))
    elif case == "duplicate keys":
        _later_part(ds, pa.table({"id": [IDS[0], " " + IDS[0]], "mock__score": [1.0, 2.0]}))
    elif case == "no created_at":
        _later_part(ds, pa.table({"id": IDS[:1], "mock__score": [1.0]}), drop=("usr:overlay_created_at",))
    else:
        _later_part(ds, pa.table({"id": IDS[:1], "mock__score": [1.0]}))
        part = max((ds.dir / "_derived" / "mock").glob("part-*.parquet"))
        t = pq.read_table(part)
        pq.write_table(t.replace_schema_metadata({**t.schema.metadata, b"usr:overlay_created_at": b"garbage"}), part)
    with pytest.raises(SchemaError) as read_error:
        ds.read_table()
    for strict in (False, True):
        with pytest.raises(SchemaError) as exc:
            ds.validate(strict=strict)
        assert exc.value.hint
    key = {"wrong type": "int64", "duplicate keys": "duplicate keys", "no created_at": "created_at",
           "garbage created_at": "created_at"}[case]
    assert key in str(read_error.value) and key in str(exc.value)
