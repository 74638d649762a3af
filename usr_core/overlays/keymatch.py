"""Exact duplicate and membership checks for equal-width keys (ids) by sorting packed hashes.

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
from .merge import fixed_words

_MIX = np.uint64(0x9E3779B97F4A7C15)
_LAST: list = []  # [(identity, keys, shift, sorted hashes, rows)]: the duplicate check's sort, reused by the match


def _odd(n: int) -> np.ndarray:
    return np.arange(1, n + 1, dtype=np.uint64) * _MIX | np.uint64(1)


def _hash(words: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """sum(word_j * odd_j) mod 2**64: its high bits depend on every bit of every word (one matmul pass)."""
    return np.matmul(words, _odd(words.shape[1]), out=pool_array(len(words), np.uint64) if out is None else out)


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
    h, rows = _pack_sort(_hash(words), shift)
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
        if words is None or not _trimmed(words) or at + len(words) > total:
            return None
        bw[at:at + len(words)] = words
        _hash(words, out=bh[at:at + len(words)])  # while the chunk is in cache
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
        h = _hash(kw[r:r + 1])[0] >> np.uint64(shift)
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


def _trimmed(words: np.ndarray) -> bool:
    ends = words.view(np.uint8)[:, [0, -1]]
    return bool(not len(ends) or ends.min() > 32 and ends.max() < 127)


def trimmed_fixed_width(keys: pa.Array) -> bool:
    """Equal-width keys whose first and last bytes are printable non-space ASCII: O2 trimming changes
    nothing (normalize_keys checks the same with gathers, as widths may vary)."""
    words = fixed_words(keys, None) if isinstance(keys, pa.Array) else None
    return words is not None and _trimmed(words)
