"""The fast paths of overlay writes: key checks by sorted hashes, clustering, the parallel encode (O5, O6)."""
from __future__ import annotations

import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from testkit import tree_digest
from usr_core import NamespaceError, SchemaError
from usr_core.overlays import keymatch, keys
from usr_core.overlays.encoding import META_KEYS_CLUSTERED, OVERLAY_ROW_GROUP_ROWS, cluster_by_key

N = 3 * OVERLAY_ROW_GROUP_ROWS + 100
BASES = "ACGT"


def _seqs(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(BASES) for _ in range(24)) + f"{i:08b}".replace("0", "A").replace("1", "C")
            for i in range(n)]


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A dataset of N sequences and its ids in base order."""
    from usr_core import Dataset, register_namespace

    root = tmp_path_factory.mktemp("fast") / "root"
    root.mkdir()
    register_namespace(root, "w", "w__a:float64,w__b:float64,w__label:string")
    register_namespace(root, "at", "at__a:float64")
    ds = Dataset(root, "d")
    ds.init()
    ids = ds.add_sequences(pa.table({"sequence": _seqs(N)}), bio_type="dna", alphabet="dna_4").ids
    return ds, ids


def _random_keys(rng, n, width):
    return ["".join(rng.choice("0123456789abcdef") for _ in range(width)) for _ in range(n)]


def _reference_dups(keys):
    vc = pc.value_counts(pa.array(keys, pa.string()))
    return sorted(vc.filter(pc.greater(vc.field("counts"), 1)).field("values").to_pylist())


def _check_against_arrow(rng, width):
    base = list(dict.fromkeys(_random_keys(rng, rng.randint(1, 200), width)))
    if rng.random() < 0.3:
        base += base[: rng.randint(0, len(base))]
    keys = rng.sample(base, min(len(base), rng.randint(0, 40))) + _random_keys(rng, rng.randint(0, 10), width)
    if keys and rng.random() < 0.5:
        keys += rng.sample(keys, rng.randint(1, min(3, len(keys))))
    rng.shuffle(keys)
    ka, ba = pa.array(keys, pa.string()), pa.array(base, pa.string())
    dups = keymatch.duplicate_keys(ka)
    assert dups is not None  # equal-width keys take the fast path: a silent fallback fails here
    ref = _reference_dups(keys)
    assert sorted(dups) == ref if len(ref) <= 5 else set(dups) <= set(ref) and len(dups) == 5
    cuts = sorted(rng.sample(range(len(base) + 1), 2))
    chunks = [ba.slice(0, cuts[0]), ba.slice(cuts[0], cuts[1] - cuts[0]), ba.slice(cuts[1])]
    mask = keymatch.present_in(ka, chunks, len(base))
    if keys:
        assert mask is not None
        assert mask.tolist() == pc.is_in(ka, value_set=ba).to_pylist()


def test_O6_keymatch_agrees_with_arrow():
    """[O6] duplicate and membership checks for equal-width keys give arrow's answers."""
    rng = random.Random(3)
    for _ in range(200):
        _check_against_arrow(rng, rng.choice([8, 16, 40, 64]))
    assert keymatch.duplicate_keys(pa.array(["a", "bb"])) is None  # not equal-width: the caller falls back
    assert keymatch.present_in(pa.array(["a" * 8]), [pa.array(["b" * 16])], 1) is None
    assert keymatch.present_in(pa.array(["a" * 8]), [pa.array([" " + "b" * 7])], 1) is None  # untrimmed base key
    assert keymatch.present_in(pa.array(["a" * 8]), [pa.array(["a" * 8])], 2) is None  # fewer rows than announced


def test_O6_keymatch_exact_when_hashes_collide(monkeypatch):
    """[O6] keys sharing a truncated hash are told apart by their bytes."""
    monkeypatch.setattr(keys, "hash_multipliers", lambda n: np.zeros(n, np.uint64))  # every hash is 0
    rng = random.Random(5)
    for _ in range(100):
        _check_against_arrow(rng, 16)


def test_O6_cluster_by_key_orders_by_prefix():
    """[O6] rows ordered by the 8-byte key prefix, same rows, equal-width and other keys alike."""
    rng = random.Random(1)
    for width in (40, None):
        keys = [("".join(rng.choice("0123456789abcdef") for _ in range(width or rng.randint(1, 12))))
                for _ in range(5000)]
        keys = list(dict.fromkeys(keys))
        t = pa.table({"id": keys, "v": pa.array([float(i) if i % 7 else None for i in range(len(keys))])})
        out = cluster_by_key(t, "id")
        prefixes = [k.encode()[:8].ljust(8, b"\0") for k in out["id"].to_pylist()]
        assert prefixes == sorted(prefixes)
        assert out.sort_by("id").equals(t.sort_by("id"))
        assert cluster_by_key(out, "id") is out  # already clustered: returned as is


def _clean(ds, ns):
    import shutil

    shutil.rmtree(ds.dir / "_derived" / ns, ignore_errors=True)
    (ds.dir / "_derived" / f"{ns}.parquet").unlink(missing_ok=True)


def test_O6_part_write_file_layout(big):
    """[O6] one part of clustered small row groups; no dictionary for the key and float columns."""
    ds, ids = big
    _clean(ds, "w")
    rng = np.random.default_rng(0)
    pick = sorted(rng.choice(len(ids), len(ids) // 2, replace=False))
    keys = [ids[i] for i in pick]
    t = pa.table({"id": keys, "w__a": pa.array(rng.random(len(keys)), mask=rng.random(len(keys)) < 0.1),
                  "w__b": rng.random(len(keys)), "w__label": [f"l{i % 3}" for i in range(len(keys))]})
    written = ds.write_part("w", t)
    assert written.rows == len(keys)
    part = written.path
    pf = pq.ParquetFile(part)
    assert pf.schema_arrow.metadata[META_KEYS_CLUSTERED.encode()] == b"prefix8"
    md = pf.metadata
    assert md.num_row_groups == -(-len(keys) // OVERLAY_ROW_GROUP_ROWS)
    his = [md.row_group(i).column(0).statistics.max for i in range(md.num_row_groups)]
    los = [md.row_group(i).column(0).statistics.min for i in range(md.num_row_groups)]
    assert all(hi[:8] <= lo[:8] for hi, lo in zip(his, los[1:]))  # row groups cover disjoint prefix ranges
    dict_cols = {md.row_group(0).column(j).path_in_schema for j in range(md.num_columns)
                 if md.row_group(0).column(j).has_dictionary_page}
    assert dict_cols == {"w__label"}
    assert pf.read().sort_by("id").select(t.column_names).equals(t.sort_by("id"))
    got = ds.read_table(include_overlays=["w"]).filter(pc.is_valid(pc.field("w__b")))
    assert got.num_rows == len(keys)


def test_O6_part_write_missing_keys(big):
    """[O6] keys not in the base: SchemaError and no change on disk; allow_missing drops them."""
    ds, ids = big
    _clean(ds, "w")
    t = pa.table({"id": ids[:100] + ["f" * 40, "e" * 40], "w__a": [1.0] * 102})
    before = tree_digest(ds.dir)
    with pytest.raises(SchemaError, match="2 key"):
        ds.write_overlay_part("w", t)
    assert tree_digest(ds.dir) == before
    written = ds.write_part("w", t, allow_missing=True)
    assert written.rows == 100
    assert pq.read_table(written.path)["id"].to_pylist() == sorted(ids[:100], key=lambda k: k[:8])
    ev = json.loads(ds.events_path.read_text().splitlines()[-1])
    assert ev["args"]["rows_missing"] == 2 and ev["metrics"]["rows_written"] == 100


def test_O6_part_write_duplicate_keys(big):
    """[O6] duplicate keys in one write are named in the error."""
    ds, ids = big
    _clean(ds, "w")
    before = tree_digest(ds.dir)
    with pytest.raises(SchemaError, match=ids[5]):
        ds.write_overlay_part("w", pa.table({"id": ids[:10] + [ids[5]], "w__a": [1.0] * 11}))
    assert tree_digest(ds.dir) == before


def test_O5_attach_error_order_and_upsert(big, tmp_path):
    """[O5] missing keys are reported before column clashes; nothing changes on either error."""
    ds, ids = big
    _clean(ds, "at")
    first = tmp_path / "first.parquet"
    pq.write_table(pa.table({"id": ids[:50], "a": [1.0] * 50}), first)
    assert ds.attach(first, "at") == 50
    again = tmp_path / "again.parquet"
    pq.write_table(pa.table({"id": ids[40:60] + ["f" * 40], "a": [2.0] * 21}), again)
    before = tree_digest(ds.dir)
    with pytest.raises(SchemaError, match="not found"):
        ds.attach(again, "at")
    with pytest.raises(NamespaceError, match="already exist"):
        ds.attach(again, "at", allow_missing=True)
    assert tree_digest(ds.dir) == before
    assert ds.attach(again, "at", allow_missing=True, allow_overwrite=True) == 20
    vals = dict(zip(*pq.read_table(ds.dir / "_derived" / "at.parquet").to_pydict().values()))
    assert len(vals) == 60 and vals[ids[0]] == 1.0 and vals[ids[45]] == 2.0 and vals[ids[59]] == 2.0
