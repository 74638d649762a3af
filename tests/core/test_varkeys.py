"""Variable-width key matching (overlays/varkeys.py): sequence keys map to base rows through verified
hashes, exactly like a dictionary encoding would; reads through it keep O2, O8, O9, O10 and O12."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from usr_core import budget
from usr_core.errors import SchemaError
from usr_core.overlays.discovery import list_part_paths
from usr_core.overlays import varkeys
from usr_core.overlays.varkeys import VarKeyIndex, string_hashes


def _dna(rng, n: int, lo: int, hi: int) -> list[str]:
    return ["".join("ACGT"[i] for i in rng.integers(0, 4, int(rng.integers(lo, hi + 1)))) for _ in range(n)]


def _reference(probe: pa.Array, keys: pa.Array) -> np.ndarray:
    """Each key's probe row by a dictionary encoding of probe + keys (the exact answer), -1 none/NULL."""
    enc = pc.dictionary_encode(pa.chunked_array([probe, keys], pa.string()))
    idx = np.concatenate([pc.fill_null(c.indices, -1).to_numpy(zero_copy_only=False) for c in enc.chunks])
    first = np.full(len(enc.chunks[-1].dictionary), -1, np.int64)
    prow = idx[:len(probe)]
    ok = prow >= 0
    first[prow[ok][::-1]] = np.flatnonzero(ok)[::-1]
    kidx = idx[len(probe):]
    return np.where(kidx >= 0, first[np.maximum(kidx, 0)], -1)


@pytest.mark.parametrize("in_place", [True, False])
@pytest.mark.parametrize("threaded", [False, True])
@pytest.mark.parametrize("bits", [64, 6, 1])
def test_O10_positions_equal_dictionary_encoding(bits, threaded, in_place, monkeypatch):
    """[O10] random keys of 0-40 bytes (under one word, one word, many), some absent from the probe,
    NULLs, a chunked probe; with 6 and 1 hash bits every key collides with many others: still exact.
    Hashing and matching in two halves on two threads gives the same answer; so does verifying on
    copied keys (pyarrow without string_view comparisons) instead of views in place."""
    if threaded:
        monkeypatch.setattr(varkeys, "THREADED_KEYS", 2)
    if not in_place:
        monkeypatch.setattr(varkeys, "IN_PLACE", False)
    elif not varkeys.IN_PLACE:
        pytest.skip("this pyarrow does not compare string_view arrays")
    rng = np.random.default_rng(7)
    probe_list = list(dict.fromkeys(_dna(rng, 3000, 1, 40)))
    probe = pa.chunked_array([probe_list[:1000], probe_list[1000:]], pa.string())
    keys = pa.array([probe_list[i] if rng.random() < 0.7 else s
                     for i, s in zip(rng.integers(0, len(probe_list), 2000), _dna(rng, 2000, 0, 41))]
                    + [None, "", "A", "AAAAAAAA"], pa.string())
    index = VarKeyIndex(probe, full=False, bits=bits)
    got = index.positions(keys)
    want = _reference(probe.combine_chunks(), keys)
    assert (got == want).all()
    assert got[-4] == -1  # NULL never matches
    assert (VarKeyIndex(probe, full=True, bits=bits).positions(keys) == want).all()
    assert (index.positions(pa.chunked_array([keys[:700], keys[700:]])) == want).all()


def test_O10_point_mutants_switch_to_the_full_hash():
    """[O10] keys differing only between the sampled words (a mutant library) collide in the sampled
    hash: the index notices on the probe and hashes every word; matches stay exact."""
    rng = np.random.default_rng(8)
    wild = _dna(rng, 1, 200, 200)[0]
    mutants = list(dict.fromkeys(wild[:i] + b + wild[i + 1:] for i in range(9, 190) for b in "ACGT"))
    sampled = string_hashes(pa.array(mutants))
    assert len(np.unique(sampled)) < len(mutants) // 2  # the sampled hash alone would collide a lot
    probe = pa.array(mutants[::2])
    index = VarKeyIndex.build(probe)
    assert index.full and index.collisions == 0
    keys = pa.array(mutants[::-1])
    assert (index.positions(keys) == _reference(probe, keys)).all()


@pytest.mark.skipif(not varkeys.IN_PLACE, reason="this pyarrow does not compare string_view arrays")
def test_O10_views_compare_bytes_where_they_lie():
    """[O10] string_views of sliced, chunked, large_string and NULL-holding keys share the keys' bytes
    (nothing copied for string keys) and compare equal exactly where the keys do, short (inline) and
    long keys alike, whichever rows are gathered."""
    rng = np.random.default_rng(11)
    words = _dna(rng, 400, 0, 40)
    plain = pa.array(["pad"] + words + [None]).slice(1)
    chunked = pa.chunked_array([pa.array(words[:150]), pa.array(words[150:] + [None])])
    a, b = varkeys.string_views(plain), varkeys.string_views(chunked)
    large = varkeys.string_views(pa.array(words + [None], pa.large_string()))
    assert a.type == b.type == large.type == pa.string_view() and len(a) == len(b) == len(words) + 1
    assert a.buffers()[2].address == plain.buffers()[2].address  # the data buffer itself, no copy
    assert a.to_pylist() == b.to_pylist() == large.to_pylist() == words + [None]
    rows = rng.integers(0, len(words), 3000)
    other = rng.integers(0, len(words), 3000)
    want = np.array([words[i] == words[j] for i, j in zip(rows, other)])
    assert (varkeys._same_views(a, rows, b, other) == want).all()
    assert (varkeys._same_views(a, None, b, np.arange(len(words))) ).all()
    assert varkeys._take_views(b, rows).to_pylist() == [words[i] for i in rows]


def test_hashes_do_not_depend_on_where_a_key_sits():
    """Equal keys hash equally whatever their buffer offset, chunk or neighbours (slices too)."""
    rng = np.random.default_rng(9)
    keys = _dna(rng, 500, 0, 70)
    a = pa.array(keys)
    b = pa.array(["x" * 13] + keys[::-1]).slice(1)
    for full in (False, True):
        assert (string_hashes(a, full) == string_hashes(b, full)[::-1]).all()


def test_O8_probe_duplicates_are_found():
    """[O8] duplicate probe keys are reported exactly (the read then names them the slow way)."""
    probe = pa.array(["ACGT" * 20, "ACGA" * 20, "ACGT" * 20, None, None, "T"])
    assert VarKeyIndex.build(probe).duplicates() == ["ACGT" * 20]
    assert VarKeyIndex(probe, False, 2).duplicates() == ["ACGT" * 20]
    assert VarKeyIndex.build(pa.array(["A", "C", None])).duplicates() == []


# ---------------------------------------------------------------- reads through the dataset

NS = {"seqk": "seqk__v:int64,seqk__w:float64"}


def _seqs(n: int) -> list[str]:
    rng = np.random.default_rng(3)
    return sorted(set(_dna(rng, n, 12, 60)))


def _rewrite_keys(part, keys: list) -> None:
    """Store raw keys in an existing part (keeps its metadata except the clustering claim)."""
    t = pq.read_table(part)
    meta = {k: v for k, v in (t.schema.metadata or {}).items() if k != b"usr:keys_clustered"}
    t = t.set_column(0, t.schema.field(0), pa.array(keys, pa.string())).replace_schema_metadata(meta)
    pq.write_table(t, part)


@pytest.fixture
def ds(make_ds):
    ds = make_ds(seqs=_seqs(500), namespaces=NS)
    seqs = ds.read_table(columns=["sequence"])["sequence"].to_pylist()
    rng = np.random.default_rng(4)
    expected = {s: {"seqk__v": None, "seqk__w": None} for s in seqs}
    for k in range(4):  # older parts first: a newer non-NULL value wins (O9)
        pick = [i for i in range(len(seqs)) if rng.random() < 0.5]
        v = [None if rng.random() < 0.3 else int(rng.integers(0, 99)) for _ in pick]
        w = [None if rng.random() < 0.3 else float(rng.random()) for _ in pick]
        absent = _dna(rng, 20, 61, 90)  # keys the base does not hold: dropped by the join
        ds.write_overlay_part("seqk", pa.table({"sequence": [seqs[i] for i in pick] + absent,
                                                "seqk__v": pa.array(v + [1] * 20, pa.int64()),
                                                "seqk__w": pa.array(w + [1.0] * 20, pa.float64())}), key="sequence",
                              allow_missing=True)
        for i, a, b in zip(pick, v, w):
            for name, val in (("seqk__v", a), ("seqk__w", b)):
                if val is not None:
                    expected[seqs[i]][name] = val
    ds.expected, ds.seqs = expected, seqs
    return ds


def _check(ds, table: pa.Table) -> None:
    got = {s: {"seqk__v": a, "seqk__w": b} for s, a, b in
           zip(table["sequence"].to_pylist(), table["seqk__v"].to_pylist(), table["seqk__w"].to_pylist())}
    assert got == ds.expected and table.num_rows == len(ds.seqs)


def test_O9_O10_sequence_keyed_scan_matches_hand_merge(ds):
    """[O9] [O10] base order, newest non-NULL value per sequence, part keys absent from the base dropped."""
    table = ds.read_table(columns=["sequence", "seqk__v", "seqk__w"])
    assert table["sequence"].to_pylist() == ds.seqs
    _check(ds, table)


def test_O12_ranged_scan_equals_base_order_scan(ds, monkeypatch):
    """[O12] a budget far below the join state: key ranges, each matched through its own probe; the
    same rows as the base-order scan."""
    cols = ["sequence", "seqk__v", "seqk__w"]
    whole = ds.scan(columns=cols)
    assert whole.ordered
    want = pa.Table.from_batches(list(whole))
    monkeypatch.setattr(budget, "MIN_BUDGET", 1)
    small = ds.scan(columns=cols, memory_budget=whole.join_bytes // 2)
    got = pa.Table.from_batches(list(small), want.schema)
    assert small.ordered and small.ranges >= 2
    assert got.equals(want)
    _check(ds, got)


def test_O2_part_keys_are_normalised_and_null_keys_never_match(ds):
    """[O2] part keys with surrounding whitespace match their trimmed base key; '' and whitespace-only
    keys are NULL: never matched, never duplicates of each other."""
    part = list_part_paths(ds.paths.parts_dir("seqk"))[-1]  # the newest part
    keys = pq.read_table(part, columns=["sequence"])["sequence"].to_pylist()
    raw = [f"  {k}\t" if i % 3 == 0 else k for i, k in enumerate(keys)]
    raw[1], raw[2], raw[4] = "", "   ", None
    lost = {keys[1], keys[2], keys[4]}
    _rewrite_keys(part, raw)
    table = ds.read_table(columns=["sequence", "seqk__v", "seqk__w"])
    got = dict(zip(table["sequence"].to_pylist(), table["seqk__v"].to_pylist()))
    newest = pq.read_table(part)
    for k, v in zip(raw, newest["seqk__v"].to_pylist()):
        if k is not None and k.strip() and k.strip() in got and v is not None:
            assert got[k.strip()] == v
    for k in lost & set(ds.seqs):  # its value now comes from older parts only
        assert got[k] == _older_value(ds, k, part)


def _older_value(ds, key: str, newest_part):
    value = None
    for part in list_part_paths(ds.paths.parts_dir("seqk")):
        if part == newest_part:
            continue
        t = pq.read_table(part).to_pydict()
        for k, v in zip(t["sequence"], t["seqk__v"]):
            if k == key and v is not None:
                value = v
    return value


def test_O8_duplicate_sequence_in_a_part_names_the_key(ds):
    """[O8] a sequence twice in one part (once padded with spaces) is refused, naming the key; also
    when the repeated key is not in the base."""
    part = list_part_paths(ds.paths.parts_dir("seqk"))[0]
    keys = pq.read_table(part, columns=["sequence"])["sequence"].to_pylist()
    _rewrite_keys(part, [keys[0]] + [f" {keys[0]} "] + keys[2:])
    with pytest.raises(SchemaError, match=f"duplicate keys.*{keys[0]}"):
        ds.read_table()
    _rewrite_keys(part, ["GATTACA" * 20, " " + "GATTACA" * 20] + keys[2:])
    with pytest.raises(SchemaError, match="duplicate keys.*GATTACA"):
        ds.read_table()


def test_O2_sequence_ci_folds_case(make_ds):
    """[O2] [O3] sequence_ci: lower-case part keys match the upper-cased base sequences."""
    ds = make_ds(seqs=_seqs(200), namespaces={"ci": "ci__v:int64"})
    seqs = ds.read_table(columns=["sequence"])["sequence"].to_pylist()
    ds.write_overlay_part("ci", pa.table({"sequence": seqs[::2], "ci__v": pa.array(range(0, len(seqs), 2))}),
                          key="sequence_ci", key_col="sequence")
    part = list_part_paths(ds.paths.parts_dir("ci"))[0]
    stored = pq.read_table(part, columns=["sequence_ci"])["sequence_ci"].to_pylist()
    _rewrite_keys(part, [s.lower() for s in stored])
    table = ds.read_table(columns=["sequence", "ci__v"])
    want = {s: (i if i % 2 == 0 else None) for i, s in enumerate(seqs)}
    assert dict(zip(table["sequence"].to_pylist(), table["ci__v"].to_pylist())) == want


def test_O12_estimate_counts_parts_in_flight_and_sequence_state(ds):
    """[O12] the join estimate counts two parts in flight (more parts of the same size add nothing),
    and sequence-keyed state at SEQUENCE_PEAK_FACTOR of the id factor's scale."""
    import pyarrow.parquet as pq

    from usr_core.readplan import plan_read

    md = pq.read_metadata(ds.paths.records)
    before = budget.estimate_join_bytes(plan_read(ds.paths, ["sequence", "seqk__v"], ["seqk"], True), md)
    parts = list_part_paths(ds.paths.parts_dir("seqk"))
    t = pq.read_table(parts[0])
    ds.write_overlay_part("seqk", t.select(["sequence", "seqk__v", "seqk__w"]), key="sequence", allow_missing=True)
    plan = plan_read(ds.paths, ["sequence", "seqk__v"], ["seqk"], True)
    assert budget.estimate_join_bytes(plan, md) == before
    seq = budget.estimate_join_bytes(plan, md)
    n = md.num_rows
    keys = sum(md.row_group(i).column(md.schema.to_arrow_schema().get_field_index("sequence")).total_uncompressed_size
               for i in range(md.num_row_groups))
    assert seq >= int((keys + 32 * n) * budget.SEQUENCE_PEAK_FACTOR / budget.PEAK_FACTOR)


# ------------------------------------------------- parts read and matched chunk by chunk (seqparts)

def _regroup(part, keys: list | None = None, rows: int = 7) -> None:
    """Rewrite a part in row groups of `rows` rows (and with `keys` as its raw keys)."""
    t = pq.read_table(part)
    meta = t.schema.metadata or {}
    if keys is not None:
        meta = {k: v for k, v in meta.items() if k != b"usr:keys_clustered"}
        t = t.set_column(0, t.schema.field(0), pa.array(keys, pa.string()))
    pq.write_table(t.replace_schema_metadata(meta), part, row_group_size=rows)


@pytest.fixture
def chunky(ds, monkeypatch):
    """`ds` with every part in row groups of 7 rows, read 16 rows a chunk (many chunks, two threads);
    `ds.chunked` lists the parts read that way (all but the first part read, which is read while the
    base keys are)."""
    from usr_core.overlays import kernel, seqparts

    for part in list_part_paths(ds.paths.parts_dir("seqk")):
        _regroup(part)
    monkeypatch.setattr(seqparts, "CHUNK_ROWS", 16)
    ds.chunked = []

    def counted(part, *args):
        ds.chunked.append(part.path)
        return seqparts.read_matched(part, *args)

    monkeypatch.setattr(kernel, "read_matched", counted)
    return ds


def test_O10_a_small_part_is_split_between_both_chunk_threads(tmp_path, monkeypatch):
    """[O10] a part under two chunks' rows is cut in WORKERS chunks (both threads decode it); a large
    one in chunks of about CHUNK_ROWS rows, whole row groups each, every row group once, in order."""
    from usr_core.overlays import seqparts

    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"k": [f"K{i}" for i in range(100)]}), path, row_group_size=10)
    md = pq.read_metadata(path)
    small = seqparts.row_group_chunks(md)
    assert small == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    monkeypatch.setattr(seqparts, "CHUNK_ROWS", 30)
    assert seqparts.row_group_chunks(md) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert seqparts.row_group_chunks(md, 1000) == [list(range(10))]


def _whole_part_read(ds, monkeypatch, cols) -> pa.Table:
    from usr_core.overlays import kernel

    with monkeypatch.context() as m:
        m.setattr(kernel.ProbeKeys, "peek", lambda self: None)  # every part read whole, then matched
        return ds.read_table(columns=cols)


def test_O9_O10_parts_matched_chunk_by_chunk(chunky):
    """[O9] [O10] parts read in chunks of row groups on two threads, each chunk matched as decoded:
    base order, the newest non-NULL value per sequence, part keys absent from the base dropped."""
    table = chunky.read_table(columns=["sequence", "seqk__v", "seqk__w"])
    assert len(chunky.chunked) == 3  # the three parts read after the first
    assert table["sequence"].to_pylist() == chunky.seqs
    _check(chunky, table)


def test_O2_chunked_parts_normalise_keys_and_never_match_null(chunky, monkeypatch):
    """[O2] padded keys match their trimmed base key and '', whitespace-only and NULL keys (several, in
    different chunks) never match nor count as duplicates: the same table as whole-part matching."""
    part = list_part_paths(chunky.paths.parts_dir("seqk"))[0]  # the oldest: read chunk by chunk
    keys = pq.read_table(part, columns=["sequence"])["sequence"].to_pylist()
    raw = [f"  {k}\t" if i % 3 == 0 else k for i, k in enumerate(keys)]
    for i in (1, 20, 40):
        raw[i] = ""
    for i in (2, 33):
        raw[i] = "   "
    raw[4] = raw[50] = None
    _regroup(part, raw)
    cols = ["sequence", "seqk__v", "seqk__w"]
    got = chunky.read_table(columns=cols)
    assert part in chunky.chunked
    assert got.equals(_whole_part_read(chunky, monkeypatch, cols))


def test_O8_duplicates_in_different_chunks_name_the_key(chunky):
    """[O8] a sequence twice in one part, the two rows in different chunks (one padded), is refused
    naming the key; so is a repeated key the base does not hold."""
    part = list_part_paths(chunky.paths.parts_dir("seqk"))[0]
    keys = pq.read_table(part, columns=["sequence"])["sequence"].to_pylist()
    _regroup(part, keys[:-1] + [f" {keys[0]} "])
    with pytest.raises(SchemaError, match=f"duplicate keys.*{keys[0]}"):
        chunky.read_table()
    absent = "GATTACA" * 20
    _regroup(part, [absent] + keys[1:-1] + [absent + " "])
    with pytest.raises(SchemaError, match="duplicate keys.*GATTACA"):
        chunky.read_table()
    assert part in chunky.chunked


@pytest.mark.parametrize("nkeys", [50, 100_000])
def test_O8_first_duplicate_is_exact(nkeys):
    """[O8] the repeated-slot check (bool marks for many values, the stamp otherwise) finds a repeat
    exactly when one exists, and points at a row whose value occurs again; -1 never counts."""
    from usr_core.overlays.kernel import _first_duplicate

    rng = np.random.default_rng(12)
    for trial in range(200):
        n = int(rng.integers(0, 50))
        pos = rng.choice(np.arange(-1, nkeys), n, replace=bool(trial % 2)).astype(np.int64)
        valid = pos[pos >= 0]
        at = _first_duplicate(pos, nkeys, np.empty(nkeys, np.int64))
        if len(np.unique(valid)) == len(valid):
            assert at is None
        else:
            assert at is not None and pos[at] >= 0 and np.count_nonzero(pos == pos[at]) > 1
