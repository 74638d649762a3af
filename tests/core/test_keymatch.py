"""Equal-width key matching (overlays.keymatch, overlays.keys): the bucket search, block-wise byte
verification, forced hash collisions, duplicate proofs and O2 normalisation of equal-width keys
(O2, O6, O8, O10)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from usr_core.overlays import keymatch, keys
from usr_core.storage.pool import pool_arange

HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


def _hex_keys(rng, n: int, width: int = 40) -> pa.Array:
    """n random hex keys of `width` characters (ids' shape), built without a Python loop."""
    data = HEX[rng.integers(0, 16, n * width)]
    offsets = np.arange(n + 1, dtype=np.int32) * width
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data.tobytes())])


def _reference_positions(base: pa.Array, query: pa.Array) -> np.ndarray:
    """Per query key, the row of the same key in (unique) base, else -1: arrow's hash join."""
    return pc.fill_null(pc.index_in(query, value_set=base), -1).to_numpy().astype(np.int64)


def _case(rng, nbase: int, nquery: int, width: int = 40, hit: float = 0.8, dup_rows: int = 0):
    base = _hex_keys(rng, nbase, width)
    base = pc.unique(base)  # random keys of 40 hex digits are unique in practice; make sure
    take = rng.choice(len(base), min(len(base), int(nquery * hit)), replace=False)
    parts = [base.take(pa.array(take)), _hex_keys(rng, nquery - len(take), width)]
    query = pa.concat_arrays(parts)
    if dup_rows:
        query = pa.concat_arrays([query, query.take(pa.array(rng.integers(0, len(query), dup_rows)))])
    query = query.take(pa.array(rng.permutation(len(query))))
    return base, query


def _check(base: pa.Array, query: pa.Array) -> keymatch.Lookup:
    index = keymatch.KeyIndex.build(base)
    width = keys.fixed_words(base, None).shape[1] * 8
    got = index.lookup(keys.fixed_words(query, width))
    assert np.array_equal(got.rows, _reference_positions(base, query))
    assert np.array_equal(index.positions(keys.fixed_words(query, width)), got.rows)
    if got.distinct:  # a proof, never a guess
        assert len(pc.unique(query)) == len(query)
    return got


def test_O10_lookup_agrees_with_arrow_across_blocks():
    """[O10] ids matched over several verification blocks (hits, misses, shuffled) give arrow's join;
    distinct keys are proven distinct, and a repeated key is never called distinct (O8)."""
    rng = np.random.default_rng(11)
    base, query = _case(rng, 150_000, 140_000)
    assert _check(base, query).distinct
    base, query = _case(rng, 150_000, 140_000, dup_rows=3)
    assert not _check(base, query).distinct
    base, query = _case(rng, 50_000, 200_000, width=16, hit=0.2)  # the searched side larger than the index
    _check(base, query)
    base, query = _case(rng, 3, 5, width=8)
    _check(base, query)


def test_O10_lookup_exact_when_truncated_hashes_collide(monkeypatch):
    """[O10] a weak hash (only 8 high bits, so a dozen keys share each) changes no match:
    every candidate is verified on bytes, every key of a shared hash is looked at."""
    real = keys.hash_words

    def weak(words, out=None):
        h = real(words, out)
        h &= np.uint64(0xFF << 56)
        return h

    monkeypatch.setattr(keymatch, "hash_words", weak)
    rng = np.random.default_rng(12)
    base, query = _case(rng, 3_000, 2_500)
    index = keymatch.KeyIndex.build(base)
    assert np.count_nonzero(index.hashes[1:] == index.hashes[:-1]) > 2000  # the collisions are real
    _check(base, query)
    base, query = _case(rng, 3_000, 2_500, dup_rows=5)
    assert not _check(base, query).distinct

    def weak24(words, out=None):  # a few hundred collisions spread over several verification blocks
        h = real(words, out)
        h &= np.uint64(0xFFFFFF << 40)
        return h

    monkeypatch.setattr(keymatch, "hash_words", weak24)
    base, query = _case(rng, 150_000, 140_000, hit=0.6)
    _check(base, query)
    monkeypatch.setattr(keymatch, "hash_words", lambda words, out=None: np.zeros(len(words), np.uint64))
    base, query = _case(rng, 300, 200, hit=0.5)  # one hash for all: the search starts at its run
    assert not _check(base, query).distinct


@pytest.mark.parametrize("too_many_bits", [False, True])
def test_O10_bucket_search_is_searchsorted(monkeypatch, too_many_bits):
    """[O10] the bucket-table search returns np.searchsorted's positions, for needles below, inside,
    between and above the index's hashes, at the index's shift and at a larger one (and the plain
    binary search when the bucket bits would not fit beside the shift)."""
    if too_many_bits:
        monkeypatch.setattr(keymatch, "_bucket_bits", lambda n: 64)
    rng = np.random.default_rng(13)
    for n in (1, 2, 7, 1000, 70_000):
        index = keymatch.KeyIndex.build(_hex_keys(rng, n, 24))
        for shift in (index.shift, index.shift + 3):
            ih = index._hashes_at(shift)
            top = np.uint64((1 << (64 - shift)) - 1)
            spread = rng.integers(0, 2**63, 500, dtype=np.int64).view(np.uint64) >> np.uint64(shift - 1)
            needles = np.concatenate([ih, ih + np.uint64(1), ih - np.minimum(ih, np.uint64(1)), spread,
                                      np.array([0, top], np.uint64)])
            needles = np.sort(np.minimum(needles, top))
            pos, hit = index._search(ih, needles.copy(), shift)
            assert np.array_equal(pos, np.searchsorted(ih, needles))
            assert np.array_equal(hit, np.isin(needles, ih))


def test_O6_hash_words_value_is_stable():
    """[O6] the one key hash keeps its value: sum(word_j * odd_j) mod 2**64 (content versions and
    write checks compare hashes made at different times), across block boundaries and into `out`."""
    rng = np.random.default_rng(14)
    for nw in (1, 2, 5, 8):
        for n in (0, 1, 16_383, 16_385, 40_000):
            w = rng.integers(0, 2**63, (n, nw), dtype=np.int64).view(np.uint64) * np.uint64(3)
            mult = np.arange(1, nw + 1, dtype=np.uint64) * keys.HASH_MIX | np.uint64(1)
            want = (w * mult).sum(axis=1, dtype=np.uint64) if n else np.empty(0, np.uint64)
            assert np.array_equal(keys.hash_words(w), want)
            out = np.zeros(n + 2, np.uint64)
            keys.hash_words(w, out=out[1:n + 1])
            assert np.array_equal(out[1:n + 1], want) and out[0] == 0 and out[-1] == 0


def _o2(values: pa.Array, key: str) -> pa.Array:
    out = pc.utf8_trim_whitespace(values.cast(pa.string()))
    if key == "sequence_ci":
        out = pc.utf8_upper(out)
    return pc.if_else(pc.equal(out, ""), pa.scalar(None, pa.string()), out)


@pytest.mark.parametrize("values", [
    ["abcdefgh", "12345678"], ["abcdefgh", " 2345678"], ["abcdefgh", "1234567\t"], ["abcdefgh", "1234567\x7f"],
    ["abcdefgh", "é234567"], ["~bcdefgh", "!2345678"], ["abcdefgh", None], ["abcdefgh", "        "],
    ["abcdefg", "1234567"], ["", ""], [], ["a" * 40, "b" * 39 + " "], ["a" * 40, "\u00a0" + "b" * 38],
])
def test_O2_normalize_equal_width_keys_exact(values):
    """[O2] k(v) on equal-width keys (the already-trimmed check reads the first and last byte of each
    key from its words) equals trimming done the long way, for ids and sequence_ci."""
    arr = pa.array(values, pa.string())
    for key in ("id", "sequence_ci"):
        assert keys.normalize_keys(arr, key).equals(_o2(arr, key))
        assert keys.normalize_keys(pa.chunked_array([arr, arr]), key).equals(_o2(pa.concat_arrays([arr, arr]), key))
    words = keys.fixed_words(arr, None)
    assert keys.already_normal(arr, words) == keys.already_normal(arr)
    if keys.already_normal(arr):  # a sufficient check: trimming would change nothing
        assert _o2(arr, "id").equals(arr)


def test_pool_arange_is_arange():
    for n in (0, 1, 4095, 4096, 4097, 100_003):
        for dtype, step in ((np.int64, 1), (np.uint64, 1), (np.int32, 40)):
            got = pool_arange(n, dtype, step)
            assert got.dtype == np.dtype(dtype) and np.array_equal(got, np.arange(n, dtype=dtype) * step)
