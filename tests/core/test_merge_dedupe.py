"""dedupe (X8) and merge (X9)."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from testkit import tree_digest
from usr_core import (DuplicateIDError, SchemaError, ValidationError, compute_id, merge, register_namespace,
                      registry_hash)
from usr_core.base import base_metadata, write_base_table
from usr_core.events import read_events

NS = {"mock": "mock__score:float64,mock__label:string"}


def _ids(seqs, bt="dna"):
    return [compute_id(bt, s) for s in seqs]


def _last(ds, action):
    return [e for e in read_events(ds.paths) if e["action"] == action][-1]


def _plant_rows(ds, rows: list[dict]):
    """Append raw rows (bypassing ingest's duplicate checks) to build dedupe cases."""
    t = pq.read_table(ds.records_path).replace_schema_metadata(None)
    extra = pa.Table.from_pylist([{**r, "created_at": t["created_at"][0].as_py()} for r in rows], schema=t.schema)
    write_base_table(ds.paths, pa.concat_tables([t, extra]), base_metadata(ds.paths))


def _row(seq, bt="dna", alphabet="dna_4", source="dup"):
    return {"id": compute_id(bt, seq), "bio_type": bt, "sequence": seq, "alphabet": alphabet, "length": len(seq),
            "source": source}


# ---------------------------------------------------------------- X8 dedupe

@pytest.fixture
def dupes(make_ds):
    ds = make_ds(seqs=("ACGT", "acgt", "GGCC"), namespaces=NS)
    _plant_rows(ds, [_row("ACGT", source="second"), _row("GGCC", source="second"), _row("GGCC", source="third")])
    return ds


def test_X8_dedupe_dry_run_counts_without_writing(dupes, root):
    """[X8] (div) a dry run counts only: no write, no event, no freeze."""
    register_namespace(root, "extra", "extra__v:string")  # a stale base hash must not be restamped
    before = tree_digest(root)
    with dupes.maintenance(reason="d"):
        stats = dupes.dedupe("id", dry_run=True)
    assert (stats.rows_total, stats.rows_dropped, stats.groups, stats.key, stats.keep) == (6, 3, 2, "id", "keep-first")
    assert tree_digest(root) == before


@pytest.mark.parametrize("keep,sources", [("keep-first", ["", "", ""]),
                                          ("keep-last", ["", "second", "third"])])
def test_X8_dedupe_keep_first_and_last(dupes, keep, sources):
    """[X8] keep the first / last occurrence in file order; event dedupe with the counts and reason."""
    with dupes.maintenance(reason="cleanup"):
        stats = dupes.dedupe("id", keep=keep, batch_size=2)
    assert stats.rows_dropped == 3
    t = pq.read_table(dupes.records_path)
    assert t["sequence"].to_pylist() == (["ACGT", "acgt", "GGCC"] if keep == "keep-first" else ["acgt", "ACGT", "GGCC"])
    src = dict(zip(t["sequence"].to_pylist(), t["source"].to_pylist()))
    assert [src["acgt"], src["ACGT"], src["GGCC"]] == [sources[0], sources[1], sources[2]]
    ev = _last(dupes, "dedupe")
    assert ev["args"] == {"key": "id", "keep": keep, "rows_total": 6, "rows_dropped": 3, "groups": 2,
                          "maintenance_reason": "cleanup"}
    dupes.validate()


def test_X8_dedupe_sequence_ci_and_nothing_to_drop(make_ds, root):
    """[X8] sequence_ci folds case (dna_4 only); nothing to drop → no write, no event."""
    ds = make_ds(seqs=("ACGT", "acgt", "GGCC"), namespaces=NS)
    before = tree_digest(root)
    with ds.maintenance(reason="d"):
        assert ds.dedupe("sequence").rows_dropped == 0
        assert tree_digest(root) == before
        stats = ds.dedupe("sequence_ci")
    assert (stats.rows_dropped, stats.groups) == (1, 1)
    assert pq.read_table(ds.records_path)["sequence"].to_pylist() == ["ACGT", "GGCC"]


def test_X8_dedupe_bad_arguments_change_nothing(make_ds, root):
    """[X8] unknown key/keep and sequence_ci over non-dna_4 alphabets → SchemaError, nothing changes."""
    ds = make_ds(seqs=("ACGT",), namespaces=NS)
    ds.import_rows([{"sequence": "ACGTN", "alphabet": "dna_5"}])
    before = tree_digest(root)
    with ds.maintenance(reason="d"):
        for kw in ({"key": "name"}, {"key": "id", "keep": "keep-middle"}, {"key": "sequence_ci"}):
            with pytest.raises(SchemaError):
                ds.dedupe(**kw)
    assert tree_digest(root) == before


# ---------------------------------------------------------------- X9 merge

@pytest.fixture
def pair(make_ds):
    dest = make_ds(name="dest", seqs=("AAAA", "CCCC", "GGGG"), namespaces=NS)
    src = make_ds(name="src", seqs=("GGGG", "TTTT", "cccc", "ACAC"), namespaces=NS)
    return dest, src


def test_X9_duplicate_error_changes_nothing(pair, root):
    """[X9] duplicate_policy=error → ValidationError (DuplicateIDError) before any write."""
    before = tree_digest(root)
    with pytest.raises(DuplicateIDError) as exc:
        merge(root, "dest", "src")
    assert isinstance(exc.value, ValidationError) and exc.value.groups[0]["id"] == _ids(["GGGG"])[0]
    assert tree_digest(root) == before


def test_X9_skip_with_casefold_filter_after_exact_duplicates(pair, root):
    """[X9] (div: order) exact-id duplicates are counted first, then the casefold filter drops cccc."""
    preview = merge(root, "dest", "src", duplicate_policy="skip", dry_run=True)
    assert (preview.duplicates, preview.rows_skipped, preview.casefold_dropped, preview.rows_added) == (1, 1, 1, 2)
    dest, _ = pair
    before = tree_digest(root)
    out = merge(root, "dest", "src", duplicate_policy="skip", reason="combine")
    assert out.rows_total == 5 and tree_digest(root) != before
    t = pq.read_table(dest.records_path)
    assert t["sequence"].to_pylist() == ["AAAA", "CCCC", "GGGG", "TTTT", "ACAC"]
    ev = _last(dest, "merge_datasets")
    assert ev["args"]["duplicate_policy"] == "skip" and ev["args"]["maintenance_reason"] == "combine"
    assert ev["maintenance"] == {"reason": "combine"}
    assert ev["metrics"]["rows_added"] == 2 and ev["metrics"]["casefold_dropped"] == 1
    assert base_metadata(dest.paths)["usr:registry_hash"] == registry_hash(root)
    assert len(list((dest.dir / "_snapshots").glob("*.parquet"))) >= 2
    dest.validate()


def test_X9_without_casefold_filter_keeps_case_variants(pair, root):
    """[X9] avoid_casefold_dups=False keeps cccc (a distinct record, S4)."""
    out = merge(root, "dest", "src", duplicate_policy="prefer-dest", avoid_casefold_dups=False)
    assert out.rows_added == 3 and out.rows_total == 6


def test_X9_prefer_src_replaces_dest_rows(make_ds, root):
    """[X9] prefer-src replaces the dest row by the src row (exact-id duplicates)."""
    dest = make_ds(name="dest", seqs=("AAAA", "CCCC"), namespaces=NS)
    src = make_ds(name="src", seqs=(), namespaces=NS)
    src.add_sequences(["CCCC"], bio_type="dna", alphabet="dna_4", source="from-src")
    out = merge(root, "dest", "src", duplicate_policy="prefer-src")
    assert (out.rows_replaced, out.rows_added, out.rows_total) == (1, 1, 2)
    t = pq.read_table(dest.records_path)
    assert dict(zip(t["sequence"].to_pylist(), t["source"].to_pylist())) == {"AAAA": "", "CCCC": "from-src"}


def _add_column(ds, name, array):
    t = pq.read_table(ds.records_path).replace_schema_metadata(None)
    write_base_table(ds.paths, t.append_column(name, array), base_metadata(ds.paths))


def test_X9_columns_modes_and_coercion(pair, root):
    """[X9] require-same needs equal columns; union = essentials, dest extras, src extras; type clashes need to-dest."""
    dest, src = pair
    _add_column(dest, "mock__score", pa.array([1.0, 2.0, 3.0]))
    _add_column(src, "mock__label", pa.array(["a", "b", "c", "d"]))
    before = tree_digest(root)
    with pytest.raises(SchemaError, match="Columns differ"):
        merge(root, "dest", "src", duplicate_policy="skip")
    assert tree_digest(root) == before
    out = merge(root, "dest", "src", columns_mode="union", duplicate_policy="skip")
    t = pq.read_table(dest.records_path)
    assert t.column_names[-2:] == ["mock__score", "mock__label"] and out.columns_total == 9
    assert t["mock__score"].to_pylist() == [1.0, 2.0, 3.0, None, None]
    assert t["mock__label"].to_pylist() == [None, None, None, "b", "d"]


def test_X9_type_clash(make_ds, root):
    """[X9] shared column with different types: none → SchemaError; to-dest casts src values."""
    dest = make_ds(name="dest", seqs=("AAAA",), namespaces=NS)
    src = make_ds(name="src", seqs=("TTTT",), namespaces=NS)
    _add_column(dest, "mock__score", pa.array([1.5]))
    _add_column(src, "mock__score", pa.array([2], pa.int64()))
    before = tree_digest(root)
    with pytest.raises(SchemaError, match="types differ"):
        merge(root, "dest", "src")
    assert tree_digest(root) == before
    merge(root, "dest", "src", coerce_overlap="to-dest")
    t = pq.read_table(dest.records_path)
    assert t.schema.field("mock__score").type == pa.float64() and t["mock__score"].to_pylist() == [1.5, 2.0]


def test_X9_carry_namespaces(pair, root):
    """[X9] carry_namespaces copies src overlay rows of surviving src ids into dest (compact overwrite)."""
    dest, src = pair
    src_ids = _ids(["GGGG", "TTTT", "cccc", "ACAC"])
    src.write_overlay("mock", pa.table({"id": src_ids, "mock__score": [1.0, 2.0, 3.0, 4.0]}))
    dest.write_overlay("mock", pa.table({"id": _ids(["GGGG"]), "mock__score": [9.0]}))
    out = merge(root, "dest", "src", duplicate_policy="skip", carry_namespaces=["mock"])
    assert out.carried == {"mock": 2}
    t = dest.read_table()
    assert dict(zip(t["sequence"].to_pylist(), t["mock__score"].to_pylist())) == {
        "AAAA": None, "CCCC": None, "GGGG": 9.0, "TTTT": 2.0, "ACAC": 4.0}
    assert _last(dest, "merge_datasets")["args"]["carried"] == {"mock": 2}


def test_X9_carry_preconditions_change_nothing(pair, root):
    """[X9] reserved or missing carry namespaces, and part overlays, → SchemaError before any write."""
    dest, src = pair
    src.write_overlay_part("mock", pa.table({"id": _ids(["TTTT"]), "mock__score": [1.0]}))
    before = tree_digest(root)
    for ns in ("usr", "nope", "mock"):
        with pytest.raises(SchemaError):
            merge(root, "dest", "src", duplicate_policy="skip", carry_namespaces=[ns])
    assert tree_digest(root) == before


def test_X9_bad_options_change_nothing(pair, root):
    """[X9] unknown modes/policies and merging a dataset into itself → SchemaError."""
    before = tree_digest(root)
    for kw in ({"columns_mode": "any"}, {"coerce_overlap": "to-src"}, {"duplicate_policy": "newest"}):
        with pytest.raises(SchemaError):
            merge(root, "dest", "src", **kw)
    with pytest.raises(SchemaError, match="itself"):
        merge(root, "dest", "dest")
    assert tree_digest(root) == before
