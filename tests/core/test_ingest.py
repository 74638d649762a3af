"""init and ingest: S6-S9, M1, M4, L4, L6, L10."""
from __future__ import annotations

import datetime as dt
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from testkit import tree_digest
from usr_core import (ARROW_SCHEMA, Dataset, DuplicateIDError, SchemaError, SequencesError, compute_id,
                      register_namespace)
from usr_core.errors import AlphabetError

TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
UTC = dt.timezone.utc


def _meta(path) -> dict:
    return {k.decode(): v.decode() for k, v in (pq.read_schema(path).metadata or {}).items()}


def _base(ds) -> pa.Table:
    return pq.read_table(ds.records_path)


# ---------------------------------------------------------------- init, layout, meta.md

def test_L4_L10_init_layout_and_meta(root, make_ds):
    """[L4] [L10] init writes records.parquet, meta.md, a freeze file, the event log."""
    ds = make_ds(seqs=())
    assert ds.records_path == root / "demo" / "records.parquet"
    names = {p.name for p in ds.dir.iterdir()}
    assert {"records.parquet", "meta.md", ".events.log", "_registry", "_snapshots"} <= names
    lines = ds.meta_path.read_text().splitlines()
    assert lines[0] == "name: demo"
    assert TS_RE.match(lines[1].split(": ", 1)[1]) and lines[1].startswith("created_at: ")
    assert lines[2] == "source: test" and lines[3].startswith("notes: ") and lines[4] == "schema: USR v1"
    assert lines[5] == ""
    assert re.fullmatch(r"### Updates \(\d{4}-\d{2}-\d{2}\)", lines[6])
    assert re.fullmatch(r"- \S+Z: initialized dataset\.", lines[7])
    freeze = list((ds.dir / "_registry").glob("registry.*.yaml"))
    assert len(freeze) == 1 and re.fullmatch(r"registry\.[0-9a-f]{64}\.yaml", freeze[0].name)


def test_L10_append_meta_note(make_ds):
    """[L10] notes append `- <TS>: <title>` and an optional fenced bash block."""
    ds = make_ds(seqs=())
    ds.append_meta_note("added things", "usr import demo x.csv")
    text = ds.meta_path.read_text()
    assert re.search(r"\n- \S+Z: added things\n```bash\nusr import demo x\.csv\n```\n$", text)


def test_L10_open_by_path(root, make_ds):
    """[L10] [P2] Dataset.open by directory or records.parquet path needs the meta.md name line."""
    ds = make_ds("grp/demo")
    assert Dataset.open(root, ds.dir).name == "grp/demo"
    assert Dataset.open(root, ds.records_path).name == "grp/demo"
    ds.meta_path.write_text("name: other\n")
    with pytest.raises(SequencesError):
        Dataset.open(root, ds.dir)


def test_M1_M4_base_metadata_after_init_and_append(make_ds):
    """[M1] [M4] base metadata keys; dataset_created_at is a TS and survives rewrites."""
    ds = make_ds(seqs=())
    m0 = _meta(ds.records_path)
    assert m0["usr:schema_version"] == "1"
    assert m0["usr:id_hash"] == "sha1_utf8_pipe"
    assert TS_RE.match(m0["usr:dataset_created_at"])
    assert re.fullmatch(r"[0-9a-f]{64}", m0["usr:registry_hash"])
    ds.import_rows([{"sequence": "ACGT"}])
    m1 = _meta(ds.records_path)
    assert m1["usr:dataset_created_at"] == m0["usr:dataset_created_at"]
    assert pq.read_schema(ds.records_path).remove_metadata().equals(ARROW_SCHEMA)


def test_M1_other_keys_preserved(make_ds):
    """[M1] other existing keys are preserved by a rewrite."""
    ds = make_ds(seqs=("ACGT",))
    t = pq.read_table(ds.records_path)
    md = dict(t.schema.metadata)
    md[b"custom:key"] = b"kept"
    pq.write_table(t.replace_schema_metadata(md), ds.records_path)
    ds.import_rows([{"sequence": "GGGG"}])
    assert _meta(ds.records_path)["custom:key"] == "kept"


def test_init_twice_and_registry_required(root, make_ds):
    """[S9] [P2] init needs a registry; an existing dataset → SequencesError."""
    with pytest.raises(SchemaError, match="(?i)registry"):
        Dataset(root, "x").init()
    ds = make_ds(seqs=())
    before = tree_digest(root)
    with pytest.raises(SequencesError):
        ds.init()
    assert tree_digest(root) == before


# ---------------------------------------------------------------- S6 input shapes

def test_S6_input_shapes(make_ds):
    """[S6] table, list of mappings, list of strings (add_sequences); defaults apply."""
    ds = make_ds(seqs=())
    assert ds.import_rows(pa.table({"sequence": ["ACGT"]})) == 1
    assert ds.import_rows([{"sequence": "  GGCC  ", "extra": 1}]) == 1
    res = ds.add_sequences(["TTTT", "AAAA"], bio_type="dna", alphabet="dna_4")
    assert (res.added, res.skipped) == (2, 0)
    assert res.ids == [compute_id("dna", "TTTT"), compute_id("dna", "AAAA")]
    base = _base(ds)
    assert base.column_names == list(ARROW_SCHEMA.names)  # other input columns ignored
    assert base["sequence"].to_pylist() == ["ACGT", "GGCC", "TTTT", "AAAA"]
    assert base["length"].to_pylist() == [4, 4, 4, 4]
    assert set(base["bio_type"].to_pylist()) == {"dna"} and set(base["alphabet"].to_pylist()) == {"dna_4"}


def test_S6_missing_sequence_and_empty_bio_type_column(make_ds, root):
    """[S6] `sequence` column required; a bio_type/alphabet column must be fully non-empty."""
    ds = make_ds(seqs=())
    before = tree_digest(root)
    with pytest.raises(SchemaError):
        ds.import_rows([{"seq": "ACGT"}])
    with pytest.raises(SchemaError):
        ds.import_rows([{"sequence": "ACGT", "bio_type": "dna"}, {"sequence": "GG", "bio_type": " "}])
    with pytest.raises((SchemaError, AlphabetError)):
        ds.import_rows([{"sequence": "ACGT", "alphabet": ""}])
    assert tree_digest(root) == before


def test_S6_row_columns_beat_defaults(make_ds):
    """[S6] row bio_type/alphabet columns override call defaults."""
    ds = make_ds(seqs=())
    ds.import_rows([{"sequence": "ACGU", "bio_type": "rna", "alphabet": "rna_4"}], default_bio_type="dna")
    assert _base(ds)["id"].to_pylist() == [compute_id("rna", "ACGU")]


def test_S6_id_column_checked(make_ds, root):
    """[S6] an id column must equal S4 ("id mismatch"); strict_id_check=False skips it."""
    ds = make_ds(seqs=())
    before = tree_digest(root)
    with pytest.raises(SchemaError, match="id mismatch"):
        ds.import_rows([{"sequence": "ACGT", "id": "0" * 40}])
    with pytest.raises(SchemaError):
        ds.import_rows([{"sequence": "ACGT", "id": ""}])
    assert tree_digest(root) == before
    ok = compute_id("dna", "ACGT")
    assert ds.import_rows([{"sequence": "ACGT", "id": ok}]) == 1
    assert ds.import_rows([{"sequence": "GGGG", "id": "whatever"}], strict_id_check=False) == 1
    assert _base(ds)["id"].to_pylist() == [ok, compute_id("dna", "GGGG")]


def test_S6_created_at_precedence(make_ds):
    """[S6] created_at: explicit argument > row column (→ UTC) > one "now" per batch."""
    ds = make_ds(seqs=())
    explicit = dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)
    ds.add_sequences([{"sequence": "AAAA", "created_at": "2001-01-01T00:00:00Z"}], bio_type="dna",
                     alphabet="dna_4", created_at=explicit)
    ds.import_rows([{"sequence": "CCCC", "created_at": "2001-01-01T01:00:00+01:00"}])
    t0 = dt.datetime.now(UTC)
    ds.import_rows([{"sequence": "GGGG"}, {"sequence": "TTTT"}])
    got = _base(ds)["created_at"].to_pylist()
    assert got[0] == explicit
    assert got[1] == dt.datetime(2001, 1, 1, 0, 0, tzinfo=UTC)
    assert got[2] == got[3] and got[2] >= t0 - dt.timedelta(seconds=1)
    assert _base(ds).schema.field("created_at").type == pa.timestamp("us", tz="UTC")


def test_S6_source_precedence(make_ds):
    """[S6] non-empty source argument overrides rows > row source column > ""."""
    ds = make_ds(seqs=())
    ds.import_rows([{"sequence": "AAAA", "source": "row"}], source="arg")
    ds.import_rows([{"sequence": "CCCC", "source": "row"}])
    ds.import_rows([{"sequence": "GGGG"}])
    ds.import_rows([{"sequence": "TTTT", "source": "row2"}], source="")
    assert _base(ds)["source"].to_pylist() == ["arg", "row", "", "row2"]


def test_S6_field_errors_raise_spec_classes(make_ds, root):
    """[S6] S5 errors surface from ingest with their classes; nothing written."""
    ds = make_ds(seqs=())
    before = tree_digest(root)
    with pytest.raises(AlphabetError, match="invalid characters"):
        ds.import_rows([{"sequence": "ACGTX"}])
    with pytest.raises(SchemaError):
        ds.import_rows([{"sequence": "ACGT", "bio_type": "dna|x"}])
    with pytest.raises(SchemaError):
        ds.import_rows([{"sequence": "   "}])
    assert tree_digest(root) == before


# ---------------------------------------------------------------- S7, S8

def test_S7_batch_duplicates(make_ds, root):
    """[S7] same id twice in a batch → DuplicateIDError with groups (id, count, rows, sequence)."""
    ds = make_ds(seqs=())
    before = tree_digest(root)
    rows = [{"sequence": s} for s in ["ACGT", "GGGG", "ACGT", " ACGT ", "GGGG", "TTTT"]]
    with pytest.raises(DuplicateIDError) as err:
        ds.import_rows(rows)
    groups = err.value.groups
    assert groups[0]["id"] == compute_id("dna", "ACGT") and groups[0]["count"] == 3
    assert groups[0]["rows"] == [1, 3, 4] and groups[0]["sequence"] == "ACGT"
    assert groups[1]["count"] == 2 and groups[1]["rows"] == [2, 5]
    assert tree_digest(root) == before


def test_S7_at_most_five_groups_sorted(make_ds):
    """[S7] ≤5 groups, count desc then id."""
    ds = make_ds(seqs=())
    seqs = ["A" * i for i in range(1, 8)]
    rows = [{"sequence": s} for s in seqs * 2] + [{"sequence": "AAAAAAA"}]
    with pytest.raises(DuplicateIDError) as err:
        ds.import_rows(rows)
    groups = err.value.groups
    assert len(groups) == 5
    assert groups[0]["sequence"] == "AAAAAAA" and groups[0]["count"] == 3
    rest = [g["id"] for g in groups[1:]]
    assert rest == sorted(rest)


def test_S8_existing_duplicates(make_ds, root):
    """[S8] error (default, import_rows' only mode) vs ignore; other modes → SchemaError."""
    ds = make_ds(seqs=("ACGT",))
    before = tree_digest(root)
    with pytest.raises(DuplicateIDError):
        ds.import_rows([{"sequence": "ACGT"}, {"sequence": "GGGG"}])
    with pytest.raises(DuplicateIDError):
        ds.add_sequences(["ACGT"], bio_type="dna", alphabet="dna_4")
    with pytest.raises(SchemaError):
        ds.add_sequences(["GGGG"], bio_type="dna", alphabet="dna_4", on_conflict="replace")
    assert tree_digest(root) == before
    res = ds.add_sequences(["ACGT", "GGGG"], bio_type="dna", alphabet="dna_4", on_conflict="ignore")
    assert (res.added, res.skipped) == (1, 1)
    assert _base(ds)["sequence"].to_pylist() == ["ACGT", "GGGG"]


def test_S8_ignore_everything_writes_nothing(make_ds, root):
    """[S8] on_conflict='ignore' with nothing left → no write, no event."""
    ds = make_ds(seqs=("ACGT",))
    before = tree_digest(root)
    res = ds.add_sequences(["ACGT"], bio_type="dna", alphabet="dna_4", on_conflict="ignore")
    assert (res.added, res.skipped) == (0, 1)
    assert tree_digest(root) == before


def test_S8_case_variants_are_distinct(make_ds):
    """[S8] [S4] no case folding: acgt and ACGT are two records."""
    ds = make_ds(seqs=("ACGT",))
    assert ds.import_rows([{"sequence": "acgt"}]) == 1


# ---------------------------------------------------------------- S9 append, L6 snapshots

def test_S9_append_keeps_order_and_fills_materialized_columns(make_ds):
    """[S9] existing rows in order + new rows; extra materialized columns get NULL."""
    ds = make_ds(seqs=("ACGT", "GGGG"))
    t = pq.read_table(ds.records_path)
    t = t.append_column("mock__score", pa.array([1.5, 2.5]))
    pq.write_table(t, ds.records_path)
    ds.import_rows([{"sequence": "TTTT"}])
    base = _base(ds)
    assert base["sequence"].to_pylist() == ["ACGT", "GGGG", "TTTT"]
    assert base["mock__score"].to_pylist() == [1.5, 2.5, None]


def test_S9_incompatible_schema(make_ds, root):
    """[S9] the base must hold essential columns with S1 types ("incompatible schema")."""
    ds = make_ds(seqs=("ACGT",))
    t = pq.read_table(ds.records_path)
    t = t.set_column(4, "length", t["length"].cast(pa.int64()))
    pq.write_table(t, ds.records_path)
    before = tree_digest(root)
    with pytest.raises(SchemaError, match="incompatible schema"):
        ds.import_rows([{"sequence": "GGGG"}])
    assert tree_digest(root) == before


def test_S9_requires_initialized_dataset(root):
    """[S9] (div) add_sequences/import_rows on an uninitialized dataset → SequencesError, nothing created."""
    register_namespace(root, "mock", "mock__score:float64")
    ds = Dataset(root, "nope")
    before = tree_digest(root)
    with pytest.raises(SequencesError, match="not initialized"):
        ds.add_sequences(["ACGT"], bio_type="dna", alphabet="dna_4")
    with pytest.raises(SequencesError, match="not initialized"):
        ds.import_rows([{"sequence": "ACGT"}])
    assert tree_digest(root) == before
    assert not (root / "nope").exists()


def test_S9_requires_registry(make_ds, root):
    """[S9] ingest requires a registry."""
    ds = make_ds(seqs=())
    (root / "registry.yaml").unlink()
    with pytest.raises(SchemaError, match="(?i)registry"):
        ds.import_rows([{"sequence": "ACGT"}])


def test_L6_snapshot_per_rewrite_and_pruned_to_five(make_ds):
    """[L6] every base rewrite snapshots the new content; newest 5 kept."""
    ds = make_ds(seqs=())
    for i in range(7):
        ds.import_rows([{"sequence": "A" * (i + 1)}])
    snaps = sorted(ds.snapshot_dir.glob("records-*.parquet"))
    assert len(snaps) == 5
    assert all(re.fullmatch(r"records-\d{8}T\d{12}\.parquet", p.name) for p in snaps)
    newest = pq.read_table(snaps[-1])
    assert newest.equals(pq.read_table(ds.records_path))


def test_S9_incompatible_schema_checked_before_auto_freeze(make_ds, root):
    """[S9] [R14] with a changed registry, a failing append must not restamp the base first."""
    ds = make_ds(seqs=("ACGT",))
    register_namespace(root, "other", "other__x:int64")  # registry_hash changes
    t = pq.read_table(ds.records_path)
    pq.write_table(t.set_column(4, "length", t["length"].cast(pa.int64())), ds.records_path)
    before = tree_digest(root)
    for call in (lambda: ds.import_rows([{"sequence": "GGGG"}]),
                 lambda: ds.add_sequences(["GGGG"], bio_type="dna", alphabet="dna_4")):
        with pytest.raises(SchemaError, match="incompatible schema"):
            call()
        assert tree_digest(root) == before


def test_L6_snapshot_failure_aborts_write(make_ds, root):
    """[L6] snapshot I/O failure aborts the write with SequencesError; records.parquet unchanged."""
    ds = make_ds(seqs=("ACGT",))
    for p in ds.snapshot_dir.iterdir():
        p.unlink()
    ds.snapshot_dir.rmdir()
    ds.snapshot_dir.write_text("not a directory")
    before = tree_digest(root)
    with pytest.raises(SequencesError, match="(?i)snapshot"):
        ds.import_rows([{"sequence": "GGGG"}])
    assert tree_digest(root) == before
