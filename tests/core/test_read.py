"""Dataset reads: O10-O12, head/scan/get/grep/schema/info (P2), reads need no lock (A3)."""
from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from testkit import tree_digest
from usr_core import (ARROW_SCHEMA, Dataset, SchemaError, SequencesError, compute_id, register_namespace)
from usr_core.contract import ID_HASH_SPEC

NS = {"mock": "mock__score:float64,mock__label:string", "aaa": "aaa__x:int64", "seqk": "seqk__v:int64"}
SEQS = ("ACGT", "AACC", "GGTT", "TTAA", "CAGT", "GATC")
IDS = [compute_id("dna", s) for s in SEQS]


@pytest.fixture
def ds(make_ds):
    return make_ds(seqs=SEQS, namespaces=NS)


def _by_id(t: pa.Table, col: str) -> dict:
    return dict(zip(t["id"].to_pylist(), t[col].to_pylist()))


def test_O10_left_join_columns_and_order(ds):
    """[O10] base columns in file order, then overlays' data columns in L8 order; unmatched → NULL."""
    ds.write_overlay("mock", pa.table({"id": IDS[:2] + ["f" * 40], "mock__score": [1.0, 2.0, 3.0]}),
                     allow_missing=True)
    ds.write_overlay_part("aaa", pa.table({"id": IDS[1:3], "aaa__x": [10, 20]}))
    t = ds.read_table()
    assert t.column_names == list(ARROW_SCHEMA.names) + ["aaa__x", "mock__score"]
    assert t.num_rows == len(SEQS)
    assert t["id"].to_pylist() == IDS  # base order kept by read_table here
    assert _by_id(t, "mock__score") == {IDS[0]: 1.0, IDS[1]: 2.0, **{i: None for i in IDS[2:]}}
    assert _by_id(t, "aaa__x") == {IDS[1]: 10, IDS[2]: 20, **{i: None for i in IDS[:1] + IDS[3:]}}
    assert t.schema.field("aaa__x").type == pa.int64()
    assert ds.schema() == t.schema


def test_O10_overlay_unmatched_rows_ignored(ds):
    """[O10] overlay rows whose key is not in the base are ignored (hand-made overlay)."""
    ds.write_overlay("mock", pa.table({"id": IDS[:1], "mock__score": [1.0]}))
    path = ds.dir / "_derived" / "mock.parquet"
    t = pq.read_table(path)
    extra = pa.table({"id": ["0" * 40], "mock__score": [9.0]})
    pq.write_table(pa.concat_tables([t.replace_schema_metadata(None), extra]).replace_schema_metadata(
        t.schema.metadata), path)
    assert ds.read_table().num_rows == len(SEQS)


def test_O10_materialized_column_coalesced(ds):
    """[O10] an overlay column that also exists in the base reads COALESCE(overlay, existing)."""
    base = pq.read_table(ds.records_path)
    base = base.append_column("mock__score", pa.array([0.5] * len(SEQS)))
    pq.write_table(base, ds.records_path)
    ds.write_overlay("mock", pa.table({"id": IDS[:2], "mock__score": [1.0, None]}))
    t = ds.read_table()
    assert t.column_names.count("mock__score") == 1
    assert _by_id(t, "mock__score") == {IDS[0]: 1.0, IDS[1]: 0.5, **{i: 0.5 for i in IDS[2:]}}


def test_O10_sequence_key_join(make_ds):
    """[O10] sequence-keyed overlays join on k(sequence) of the base."""
    ds = make_ds(seqs=(" ACGT", "GGCC"), namespaces=NS)
    ds.write_overlay("seqk", pa.table({"sequence": ["ACGT "], "seqk__v": [7]}), key="sequence")
    t = ds.read_table()
    assert dict(zip(t["sequence"].to_pylist(), t["seqk__v"].to_pylist())) == {"ACGT": 7, "GGCC": None}


def test_O11_nonconforming_overlay_fails_read(ds, root):
    """[O11] overlays must conform to the *current* registry; stale registry_hash does not block."""
    ds.write_overlay("mock", pa.table({"id": IDS[:1], "mock__score": [1.0]}))
    register_namespace(root, "other", "other__y:string")  # changes registry_hash only
    assert _by_id(ds.read_table(), "mock__score")[IDS[0]] == 1.0
    register_namespace(root, "mock", "mock__score:int64", overwrite=True)
    with pytest.raises(SchemaError):
        ds.read_table()
    assert ds.read_table(include_overlays=False).num_rows == len(SEQS)


def test_O11_missing_key_metadata(ds):
    """[O11] an overlay without usr:overlay_key → SchemaError."""
    ds.write_overlay("mock", pa.table({"id": IDS[:1], "mock__score": [1.0]}))
    path = ds.dir / "_derived" / "mock.parquet"
    t = pq.read_table(path)
    md = {k: v for k, v in t.schema.metadata.items() if k != b"usr:overlay_key"}
    pq.write_table(t.replace_schema_metadata(md), path)
    with pytest.raises(SchemaError, match="overlay_key"):
        ds.read_table()


def test_O11_unknown_and_tombstone_columns(ds):
    """[O11] unknown columns → SchemaError listing them; tombstone columns need include_deleted."""
    ds.tombstone([IDS[0]])
    with pytest.raises(SchemaError, match="nope"):
        ds.read_table(columns=["id", "nope"])
    with pytest.raises(SchemaError):
        ds.head(3, columns=["id", "usr__deleted"])
    t = ds.read_table(columns=["id", "usr__deleted"], include_deleted=True)
    assert t.column_names == ["id", "usr__deleted"]
    assert _by_id(t, "usr__deleted")[IDS[0]] is True


def test_O11_registry_required_for_non_reserved_overlays(ds, root):
    """[O11] [R2] reads need the registry only when a non-reserved overlay exists."""
    ds.tombstone([IDS[0]])
    (root / "registry.yaml").rename(root / "registry.bak")
    assert ds.read_table().num_rows == len(SEQS) - 1
    (root / "registry.bak").rename(root / "registry.yaml")
    ds.write_overlay("mock", pa.table({"id": IDS[:1], "mock__score": [1.0]}))
    (root / "registry.yaml").unlink()
    with pytest.raises(SchemaError, match="(?i)registry"):
        ds.read_table()


def test_O12_include_overlays_bool_and_list(ds):
    """[O12] include_overlays True / False / list of namespaces."""
    ds.write_overlay("mock", pa.table({"id": IDS[:1], "mock__score": [1.0]}))
    ds.write_overlay("aaa", pa.table({"id": IDS[:1], "aaa__x": [1]}))
    assert ds.read_table(include_overlays=False).column_names == list(ARROW_SCHEMA.names)
    assert ds.read_table(include_overlays=["mock"]).column_names == list(ARROW_SCHEMA.names) + ["mock__score"]
    assert len(ds.read_table(include_overlays=True).column_names) == len(ARROW_SCHEMA.names) + 2
    assert ds.head(2, include_derived=False).column_names == list(ARROW_SCHEMA.names)


def test_O12_column_selection(ds):
    """[O12] [P2] columns select and order output columns."""
    ds.write_overlay("mock", pa.table({"id": IDS[:1], "mock__score": [1.0]}))
    t = ds.read_table(columns=["mock__score", "id"])
    assert t.column_names == ["mock__score", "id"]
    assert ds.head(2, columns=["sequence"]).column_names == ["sequence"]


def test_O12_head_first_visible_rows_in_base_order(ds):
    """[O12] head(n) = first n visible rows in base order (tombstoned ones skipped)."""
    ds.tombstone([IDS[0], IDS[2]])
    assert ds.head(3)["id"].to_pylist() == [IDS[1], IDS[3], IDS[4]]
    assert ds.head(3, include_deleted=True)["id"].to_pylist() == IDS[:3]
    assert ds.head(100).num_rows == len(SEQS) - 2
    assert ds.head(0).num_rows == 0


def test_O12_head_does_not_read_the_whole_base(make_ds):
    """[O12] head(10) decodes only leading row groups: later row groups are corrupted on purpose."""
    ds = make_ds(seqs=SEQS, namespaces=NS)
    ds.write_overlay("mock", pa.table({"id": IDS[:2], "mock__score": [1.0, 2.0]}))
    ds.tombstone([IDS[1]])
    meta = pq.read_schema(ds.records_path).metadata
    n = 20000
    ids = IDS + [f"{i:040x}" for i in range(n)]
    when = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
    big = pa.table({"id": ids, "bio_type": ["dna"] * len(ids), "sequence": [f"ACGT{i}" for i in range(len(ids))],
                    "alphabet": ["dna_4"] * len(ids), "length": pa.array([4] * len(ids), pa.int32()),
                    "source": [""] * len(ids),
                    "created_at": pa.array([when] * len(ids), pa.timestamp("us", tz="UTC"))},
                   schema=ARROW_SCHEMA.with_metadata(meta))
    pq.write_table(big, ds.records_path, row_group_size=1000, compression="zstd")
    md = pq.ParquetFile(ds.records_path).metadata

    def chunks(rg):
        for i in range(rg.num_columns):
            c = rg.column(i)
            first = c.dictionary_page_offset if c.has_dictionary_page else c.data_page_offset
            yield first, first + c.total_compressed_size

    start = min(a for a, _ in chunks(md.row_group(3)))
    end = max(b for b, _ in chunks(md.row_group(md.num_row_groups - 1)))
    with open(ds.records_path, "r+b") as fh:
        fh.seek(start)
        fh.write(b"\xff" * (end - start))
    with pytest.raises(Exception):
        ds.read_table()  # proves the corruption is real
    h = ds.head(10)
    assert h.num_rows == 10
    assert h["id"].to_pylist() == [IDS[0]] + IDS[2:] + [f"{i:040x}" for i in range(5)]
    assert h["mock__score"].to_pylist()[0] == 1.0
    assert ds.head(10, include_derived=False).num_rows == 10


def test_scan_streams_batches(ds):
    """[P2] [O10] [T3] scan() yields record batches of <= batch_size rows (several of them); together they
    are the base rows minus the tombstoned one, each with its own overlay value (checked against the
    inputs, not against read_table(), which is built from scan())."""
    ds.write_overlay("mock", pa.table({"id": IDS[:3], "mock__score": [1.0, 2.0, 3.0]}))
    ds.tombstone([IDS[4]])
    batches = list(ds.scan(batch_size=2))
    assert all(isinstance(b, pa.RecordBatch) and 0 < b.num_rows <= 2 for b in batches)
    assert len(batches) >= 3
    t = pa.Table.from_batches(batches)
    assert sorted(t["id"].to_pylist()) == sorted(i for i in IDS if i != IDS[4])
    assert _by_id(t, "mock__score") == {IDS[0]: 1.0, IDS[1]: 2.0, IDS[2]: 3.0, IDS[3]: None, IDS[5]: None}
    assert _by_id(t, "sequence") == {i: s for i, s in zip(IDS, SEQS) if i != IDS[4]}
    assert t.column_names == list(ARROW_SCHEMA.names) + ["mock__score"]


def test_get_and_grep(ds):
    """[P2] get(id) one row (or none); grep → id, sequence, length with a limit."""
    ds.write_overlay("mock", pa.table({"id": IDS[:1], "mock__score": [1.0]}))
    g = ds.get(IDS[0])
    assert g.num_rows == 1 and g["mock__score"].to_pylist() == [1.0]
    assert ds.get("0" * 40).num_rows == 0
    ds.tombstone([IDS[0]])
    assert ds.get(IDS[0]).num_rows == 0
    assert ds.get(IDS[0], include_deleted=True).num_rows == 1
    hits = ds.grep("GAT")
    assert hits.column_names == ["id", "sequence", "length"]
    assert hits["sequence"].to_pylist() == ["GATC"]
    assert ds.grep("A", limit=2).num_rows == 2
    assert ds.grep("ACGT").num_rows == 0  # tombstoned
    assert ds.grep("ACGT", include_deleted=True).num_rows == 1


def test_empty_dataset_reads(make_ds):
    """[P2] reads of an empty dataset return empty tables with the merged schema."""
    ds = make_ds(seqs=(), namespaces=NS)
    t = ds.read_table()
    assert t.num_rows == 0 and t.schema.names == list(ARROW_SCHEMA.names)
    assert ds.head(5).num_rows == 0
    assert list(ds.scan()) == []


def test_reads_of_missing_dataset(root):
    """[P2] missing dataset → SequencesError ("Dataset not initialized")."""
    register_namespace(root, "mock", "mock__score:float64")
    ds = Dataset(root, "ghost")
    for call in (ds.read_table, ds.head, ds.info, ds.schema, lambda: list(ds.scan())):
        with pytest.raises(SequencesError, match="not initialized"):
            call()
    assert not (root / "ghost").exists()


def test_info_and_list_overlays(ds):
    """[P2] info(): rows incl. deleted, columns incl. overlay + tombstone, namespaces."""
    ds.write_overlay_part("mock", pa.table({"id": IDS[:2], "mock__score": [1.0, 2.0]}))
    ds.tombstone([IDS[0]])
    info = ds.info()
    assert info.name == "demo" and info.rows == len(SEQS)
    assert info.columns == list(ARROW_SCHEMA.names) + ["mock__score", "usr__deleted", "usr__deleted_at",
                                                        "usr__deleted_reason"]
    assert info.namespaces == ["mock", "usr"]
    ov = {o.namespace: o for o in ds.list_overlays()}
    assert ov["mock"].key == "id" and ov["mock"].columns == ["mock__score"]
    assert ov["mock"].fingerprint["rows"] == 2
    m = ds.manifest()
    assert m.metadata["usr:id_hash"] == ID_HASH_SPEC and m.events["count"] >= 3


def test_A3_readers_take_no_lock(ds, tmp_path):
    """[A3] readers work while another process holds the dataset lock."""
    import subprocess
    import sys
    ds.write_overlay("mock", pa.table({"id": IDS[:1], "mock__score": [1.0]}))
    code = ("import sys,time; from usr_core.storage.locks import file_lock\n"
            "with file_lock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(30)\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(ds.dir / ".usr.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "locked"
        assert ds.read_table().num_rows == len(SEQS)
        assert ds.head(2).num_rows == 2
    finally:
        p.kill()
        p.wait()
        p.stdout.close()


def test_reads_change_nothing(ds, root):
    """[A3] reads write nothing (not even lock files)."""
    ds.write_overlay("mock", pa.table({"id": IDS[:1], "mock__score": [1.0]}))
    before = tree_digest(root, ignore_locks=False)
    ds.read_table()
    ds.head(3)
    ds.get(IDS[0])
    ds.info()
    ds.schema()
    assert tree_digest(root, ignore_locks=False) == before
