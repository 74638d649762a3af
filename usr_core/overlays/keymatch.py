"""Matching equal-width keys (ids) by their 64-bit hashes (keys.hash_words), always verified on bytes.

`HashIndex` (open addressing) maps part keys to base rows for read joins.  Write checks (duplicates,
membership in the base) sort packed hashes instead:

Each key becomes one uint64: the high bits of a 64-bit hash of its bytes with its row number in
the low bits, so one numpy sort orders the hashes and remembers the rows.  Equal truncated hashes
only make keys candidates; candidates are confirmed by comparing the keys' bytes.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..storage.pool import pool_arange, pool_array
from .keys import already_normal, fixed_words, hash_words

_LAST: list = []  # [(identity, keys, shift, sorted hashes, rows)]: the duplicate check's sort, reused by the match


def _shift(n: int) -> int:
    return max(1, (n - 1).bit_length())


def _ident(arr: pa.Array) -> tuple:
    return tuple(b.address if b is not None else None for b in arr.buffers()) + (arr.offset, len(arr))


def _sorted(arr: pa.Array, words: np.ndarray, shift: int, remember: bool) -> tuple[np.ndarray, np.ndarray]:
    """(truncated hashes ascending, their rows) of `words`, the keys of `arr`."""
    entry = _LAST[0] if _LAST else None
    if entry is not None and entry[0] == _ident(arr) and entry[2] <= shift:
        h = entry[3]
        if shift > entry[2]:
            h = np.right_shift(h, np.uint64(shift - entry[2]), out=pool_array(len(h), np.uint64))
        return h, entry[4]
    h, rows = _pack_sort(hash_words(words), shift)
    if remember:
        _LAST[:] = [(_ident(arr), arr, shift, h, rows)]  # holding `arr` keeps its buffer addresses valid
    return h, rows


def _pack_sort(h: np.ndarray, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes (modified in place) -> (their high bits ascending, the row of each)."""
    low = np.uint64((1 << shift) - 1)
    np.bitwise_and(h, ~low, out=h)
    np.bitwise_or(h, pool_arange(len(h), np.uint64), out=h)
    h.sort()
    rows = np.bitwise_and(h, low, out=pool_array(len(h), np.uint64)).view(np.int64)
    h >>= np.uint64(shift)
    return h, rows


def duplicate_keys(keys: pa.Array, remember: bool = False) -> list | None:
    """Up to five keys that occur more than once; None when the keys are not equal-width."""
    words = fixed_words(keys, None) if isinstance(keys, pa.Array) else None
    if words is None:
        return None
    h, rows = _sorted(keys, words, _shift(len(words)), remember)
    same = np.flatnonzero(h[1:] == h[:-1])
    if not len(same):
        return []
    suspects = np.unique(np.concatenate([rows[same], rows[same + 1]]))
    counts = pc.value_counts(keys.take(pa.array(suspects)))
    return counts.filter(pc.greater(counts.field("counts"), 1)).field("values").to_pylist()[:5]


def present_in(keys: pa.Array, chunks: Iterable[pa.Array], total: int) -> np.ndarray | None:
    """Per key: is it among the `total` keys of `chunks` (e.g. the base id column, row group by row group;
    only their bytes are kept)?  None when `keys` or a chunk are not equal-width keys without surrounding
    whitespace."""
    kw = fixed_words(keys, None) if isinstance(keys, pa.Array) else None
    if kw is None or not total:
        return None
    bw = pool_array(total * kw.shape[1], np.uint64).reshape(total, kw.shape[1])
    bh = pool_array(total, np.uint64)
    at = 0
    for chunk in chunks:
        words = fixed_words(chunk, kw.shape[1] * 8) if len(chunk) else np.empty((0, kw.shape[1]), np.uint64)
        if words is None or not already_normal(chunk) or at + len(words) > total:
            return None
        bw[at:at + len(words)] = words
        hash_words(words, out=bh[at:at + len(words)])  # while the chunk is in cache
        at += len(words)
    return _present(keys, kw, bw, bh) if at == total else None


def _present(keys: pa.Array, kw: np.ndarray, bw: np.ndarray, bh: np.ndarray) -> np.ndarray:
    """Per row of kw: is it a row of bw (bh: the hashes of bw's rows, sorted in place here)?"""
    shift = _shift(max(len(bw), len(kw)))
    kh, krows = _sorted(keys, kw, shift, False)
    _LAST.clear()
    bh, brows = _pack_sort(bh, shift)
    pos = np.searchsorted(bh, kh)  # sorted needles: a cache-friendly search
    np.minimum(pos, len(bh) - 1, out=pos)
    found = np.take(bh, pos, out=pool_array(len(pos), np.uint64))
    cand = np.equal(found, kh, out=pool_array(len(pos), bool))
    if cand.all():  # the usual case: every key's hash is in the base
        match = pool_array(len(kw), np.int64)
        match[krows] = np.take(brows, pos, out=found.view(np.int64))
        if _same_rows(bw, match, kw):
            return np.ones(len(kw), bool)
    else:
        match = np.full(len(kw), -1, np.int64)
        match[krows[cand]] = brows[pos[cand]]
    rows = np.flatnonzero(match >= 0)
    equal = (np.take(bw, match[rows], axis=0) == np.take(kw, rows, axis=0)).all(axis=1)
    out = np.zeros(len(kw), bool)
    out[rows[equal]] = True
    for r in rows[~equal]:  # another base key shares the truncated hash: look at all of them
        h = hash_words(kw[r:r + 1])[0] >> np.uint64(shift)
        same = brows[np.searchsorted(bh, h, "left"):np.searchsorted(bh, h, "right")]
        out[r] = bool((np.take(bw, same, axis=0) == kw[r]).all(axis=1).any())
    return out


def _same_rows(bw: np.ndarray, match: np.ndarray, kw: np.ndarray, block: int = 1 << 16) -> bool:
    """bw[match] == kw, compared block by block (no copy of all matched rows)."""
    buf = pool_array(min(block, len(kw)) * kw.shape[1], np.uint64).reshape(-1, kw.shape[1])
    for i in range(0, len(kw), block):
        m = match[i:i + block]
        if not np.array_equal(np.take(bw, m, axis=0, out=buf[:len(m)]), kw[i:i + block]):
            return False
    return True


class HashIndex:
    """Open addressing over 64-bit key hashes (load <= 0.5), built and probed with whole-array numpy steps."""

    def __init__(self, h: np.ndarray):
        bits = max(4, int(2 * len(h) - 1).bit_length())
        self.shift, self.mask, self.h = np.uint64(64 - bits), (1 << bits) - 1, h
        self.slots = np.full(1 << bits, -1, np.int32)
        self.unique = True
        cand = (h >> self.shift).astype(np.int64)
        pending = np.arange(len(h), dtype=np.int32)
        while len(pending):
            c = cand[pending]
            occ = self.slots[c]
            taken = occ >= 0
            if (h[occ[taken]] == h[pending[taken]]).any():
                self.unique = False
                return
            free_rows, free_c = pending[~taken], c[~taken]
            self.slots[free_c] = free_rows
            lost = free_rows[self.slots[free_c] != free_rows]
            retry = np.concatenate([pending[taken], lost])
            cand[pending[taken]] = (cand[pending[taken]] + 1) & self.mask
            pending = retry

    def lookup(self, q: np.ndarray) -> np.ndarray:
        out = np.full(len(q), -1, np.int32)
        cand = (q >> self.shift).astype(np.int64)
        pending = np.arange(len(q), dtype=np.int64)
        while len(pending):
            e = np.take(self.slots, cand)
            occ = e >= 0
            hit = occ & (np.take(self.h, np.maximum(e, 0)) == q)
            out[pending[hit]] = e[hit]
            more = occ & ~hit
            pending, cand, q = pending[more], (cand[more] + 1) & self.mask, q[more]
        return out
