"""The buffer-level fast paths of ingest agree with the per-row definitions (S3-S5, S7)."""
from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pytest

from usr_core import AddSequencesResult, compute_id
from usr_core.errors import AlphabetError, DuplicateIDError
from usr_core.identity import check_columns, compute_ids, edges_may_be_space
from usr_core.records import ids_may_repeat, validate_rows

SEQS = ["ACGT", " acgt\n", "ÅCGT", "\u3000ACG\u2029", "AC GT", "x"]
BTS = ["dna", "rna", " dna", "protein", "dna", "rna"]


@pytest.mark.parametrize("layout", ["array", "large", "sliced", "chunked"])
def test_S4_compute_ids_on_every_string_layout(layout):
    """[S4] [S3] ids from the raw buffers equal compute_id for string, large_string, sliced and chunked input."""
    seqs = {"array": pa.array(SEQS), "large": pa.array(SEQS, pa.large_string()),
            "sliced": pa.array(["TT"] + SEQS + ["GG"]).slice(1, len(SEQS)),
            "chunked": pa.chunked_array([SEQS[:2], [], SEQS[2:]])}[layout]
    assert compute_ids(pa.array(BTS), seqs).to_pylist() == [compute_id(b, s) for b, s in zip(BTS, SEQS)]
    assert compute_ids(pa.array(["dna"] * len(SEQS)), seqs).to_pylist() == [compute_id("dna", s) for s in SEQS]


def test_S4_compute_ids_chunks_beyond_int32_offsets():
    """[S4] the hex id array is split into chunks rather than overflowing int32 offsets."""
    from usr_core.identity import _hex_ids

    want = [hashlib.sha1(str(i).encode()).hexdigest() for i in range(7)]
    got = _hex_ids(np.frombuffer("".join(want).encode(), np.uint8).copy(), step=3)
    assert isinstance(got, pa.ChunkedArray) and got.num_chunks == 3 and got.to_pylist() == want


def test_S3_edges_check_is_conservative():
    """[S3] trimming is skipped only when no value can start or end with whitespace."""
    assert not edges_may_be_space(pa.array(["ACGT", "", "a"]))
    for s in ["ACGT ", "\tA", "A\u3000", "Å", "A\x1c"]:
        assert edges_may_be_space(pa.array(["ACGT", s]))


def test_S5_fast_alphabet_check_equals_the_regex():
    """[S2] [S5] the byte-level check accepts and rejects exactly what the per-row pattern does."""
    rng = np.random.default_rng(3)
    letters = list("ACGTacgtNnU -Å")
    seqs = ["".join(rng.choice(letters, rng.integers(1, 6))) for _ in range(400)]
    for s in seqs:
        ok = all(c in "ACGTacgt" for c in s)
        col = pa.array(["ACGT", s] * 3)
        if ok:
            check_columns(pa.array(["dna"] * 6), pa.array(["dna_4"] * 6), col)
        else:
            with pytest.raises(AlphabetError, match="invalid characters for dna_4 at row 2: "):
                check_columns(pa.array(["dna"] * 6), pa.array(["dna_4"] * 6), col)


def test_S5_fast_alphabet_check_per_group_and_chunked():
    """[S5] mixed (bio_type, alphabet) groups and chunked sequences: rows still reported 1-based."""
    bts, als = pa.array(["dna", "rna", "dna", "rna"]), pa.array(["dna_4", "rna_4", "dna_4", "rna_4"])
    check_columns(bts, als, pa.chunked_array([["ACGT", "ACGU"], ["acgt", "acgu"]]))
    with pytest.raises(AlphabetError, match="invalid characters for rna_4 at row 4: 'ACGT'"):
        check_columns(bts, als, pa.chunked_array([["ACGT", "ACGU"], ["acgt", "ACGT"]]))


def test_S7_duplicate_precheck_is_exact_when_it_says_no():
    """[S7] 64-bit key collisions only send a batch to the exact check; equal ids are always caught."""
    ids = compute_ids(pa.array(["dna"] * 3), pa.array(["A", "C", "G"]))
    assert not ids_may_repeat(pa.chunked_array([ids]))
    assert ids_may_repeat(pa.chunked_array([ids, ids.slice(1, 1)]))
    same_prefix = pa.chunked_array([pa.array(["0" * 16 + "a" * 24, "0" * 16 + "b" * 24])])
    assert ids_may_repeat(same_prefix)  # same first 16 chars: goes to the exact check
    assert ids_may_repeat(pa.chunked_array([pa.array(["short", "ids"])]))


def test_S7_batch_duplicates_found_across_input_chunks():
    """[S7] duplicates split over input chunks are reported with 1-based rows."""
    table = pa.table({"sequence": pa.chunked_array([["ACGT", "GGGG"], ["TTTT", " ACGT"]])})
    with pytest.raises(DuplicateIDError) as err:
        with validate_rows(table, bio_type="dna", alphabet="dna_4", source="") as new:
            new.kept(None, "error")
    assert err.value.groups[0]["rows"] == [1, 4] and err.value.groups[0]["count"] == 2


def test_S6_validate_rows_trims_padded_input():
    """[S3] [S6] whitespace-padded input is trimmed before storing, ids and lengths."""
    with validate_rows(pa.table({"sequence": ["  acGT\n", "GG"]}), bio_type=" dna ", alphabet="dna_4",
                       source="s") as new:
        t = new.table()
    assert t["sequence"].to_pylist() == ["acGT", "GG"] and t["length"].to_pylist() == [4, 2]
    assert t["id"].to_pylist() == [compute_id("dna", "acGT"), compute_id("dna", "GG")]
    assert t["bio_type"].to_pylist() == ["dna", "dna"] and t["source"].to_pylist() == ["s", "s"]


def test_P2_add_sequences_result_ids_are_a_list():
    """[P2] AddSequencesResult(added, skipped, ids): ids is a real list, built on first access."""
    res = AddSequencesResult(1, 0, pa.chunked_array([pa.array(["a"])]))
    assert res.ids == ["a"] and isinstance(res.ids, list)
    assert res == AddSequencesResult(1, 0, ["a"]) and "added=1" in repr(res)


def _random_seqs(n: int, seed: int = 5) -> list[str]:
    letters = np.frombuffer(b"ACGT", np.uint8)[np.random.default_rng(seed).integers(0, 4, 24 * n)]
    text = letters.tobytes().decode()
    return [text[i:i + 24] for i in range(0, 24 * n, 24)]


def test_S7_S9_failed_checks_after_the_overlapped_write_leave_no_trace(make_ds, root):
    """[S7] [S8] [A1] ids are checked while the new rows are already being encoded: a duplicate in a late chunk
    or an existing id still raises and leaves the root byte-identical (the temp file is removed)."""
    import pyarrow.parquet as pq
    from testkit import tree_digest

    ds = make_ds(seqs=("ACGT",))
    seqs = _random_seqs(70_000)
    before = tree_digest(root)
    with pytest.raises(DuplicateIDError) as err:
        ds.add_sequences(seqs + [seqs[3]], bio_type="dna", alphabet="dna_4")
    assert err.value.groups[0]["rows"] == [4, 70_001]
    with pytest.raises(DuplicateIDError, match="already exist"):
        ds.add_sequences(seqs + ["ACGT"], bio_type="dna", alphabet="dna_4")
    assert tree_digest(root) == before
    res = ds.add_sequences(seqs + ["ACGT"], bio_type="dna", alphabet="dna_4", on_conflict="ignore")
    assert (res.added, res.skipped) == (70_000, 1) and res.ids[-1] == compute_id("dna", "ACGT")
    pf = pq.ParquetFile(ds.records_path)
    assert pf.read(columns=["sequence"])["sequence"].to_pylist() == ["ACGT"] + seqs
    assert [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)] == [1, 65536, 4464]
    assert not list(ds.dir.glob("*.tmp.parquet"))


def test_R14_S9_append_after_a_registry_edit_restamps_first(make_ds, root):
    """[R14] [S9] with a changed registry the base is restamped (snapshot) before the append, as before."""
    import json

    import pyarrow.parquet as pq

    from usr_core import register_namespace, registry_hash

    ds = make_ds(seqs=("ACGT",))
    snaps = len(list(ds.snapshot_dir.glob("*.parquet")))
    register_namespace(root, "other", "other__x:int64")
    assert ds.add_sequences(_random_seqs(3), bio_type="dna", alphabet="dna_4").added == 3
    meta = pq.read_schema(ds.records_path).metadata
    assert meta[b"usr:registry_hash"].decode() == registry_hash(root)
    assert len(list(ds.snapshot_dir.glob("*.parquet"))) == snaps + 2  # restamp, then append
    actions = [json.loads(line)["action"] for line in ds.events_path.read_text().splitlines()]
    assert actions[-2:] == ["registry_freeze", "import_rows"]
