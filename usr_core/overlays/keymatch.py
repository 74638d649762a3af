"""Matching equal-width keys (ids) by their 64-bit hashes (keys.hash_words), always verified on bytes.

One scheme serves read joins and write checks: each key becomes one uint64, the high bits of its
hash with its row number in the low bits, so one numpy sort orders the hashes and remembers the
rows; other keys are then found by a binary search of their own sorted hashes.  Equal truncated
hashes only make candidates: every match is confirmed by comparing the keys' bytes.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..storage.pool import pool_arange, pool_array
from .keys import already_normal, fixed_words, hash_words

_BLOCK = 1 << 16  # rows compared at once (bounded scratch memory)


def _shift(n: int) -> int:
    return max(1, (n - 1).bit_length())


def _pack_sort(h: np.ndarray, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes (modified in place) -> (their high bits ascending, the row of each)."""
    low = np.uint64((1 << shift) - 1)
    np.bitwise_and(h, ~low, out=h)
    np.bitwise_or(h, pool_arange(len(h), np.uint64), out=h)
    h.sort()
    rows = np.bitwise_and(h, low, out=pool_array(len(h), np.uint64)).view(np.int64)
    h >>= np.uint64(shift)
    return h, rows


def _same_rows(a: np.ndarray, a_rows: np.ndarray, b: np.ndarray) -> bool:
    """a[a_rows] == b, compared block by block (no copy of all matched rows)."""
    buf = pool_array(min(_BLOCK, len(b)) * a.shape[1], np.uint64).reshape(-1, a.shape[1])
    for i in range(0, len(b), _BLOCK):
        m = a_rows[i:i + _BLOCK]
        if not np.array_equal(np.take(a, m, axis=0, out=buf[:len(m)]), b[i:i + _BLOCK]):
            return False
    return True


def _equal_rows(a: np.ndarray, a_rows: np.ndarray, b: np.ndarray, b_rows: np.ndarray | None) -> np.ndarray:
    """a[a_rows] == b[b_rows] row by row (b_rows None: b in order), block by block (no full copy)."""
    out = np.empty(len(a_rows), bool)
    buf = pool_array(min(_BLOCK, len(a_rows)) * a.shape[1], np.uint64).reshape(-1, a.shape[1])
    for i in range(0, len(a_rows), _BLOCK):
        m = a_rows[i:i + _BLOCK]
        left = np.take(a, m, axis=0, out=buf[:len(m)])
        right = b[i:i + _BLOCK] if b_rows is None else np.take(b, b_rows[i:i + _BLOCK], axis=0)
        out[i:i + len(m)] = (left == right).all(axis=1)
    return out


class KeyIndex:
    """Equal-width keys' truncated hashes in ascending order, with their rows: built once by its owner
    (one read's probe keys, one write's key check), then matched against other key columns.

    It holds its key words (a view of `keys`' buffer, or a copy when built from chunks) as long as its
    owner keeps it."""

    def __init__(self, words: np.ndarray, hashes: np.ndarray, keys: pa.Array | None = None, shift: int | None = None):
        self.keys, self.words = keys, words
        self.shift = max(shift or 1, _shift(len(words)))
        self.hashes, self.rows = _pack_sort(hashes, self.shift)

    @classmethod
    def build(cls, keys, shift: int | None = None) -> KeyIndex | None:
        """None when the keys are not equal-width (8k bytes each, no NULL)."""
        words = fixed_words(keys, None) if isinstance(keys, pa.Array) else None
        return None if words is None else cls(words, hash_words(words), keys, shift)

    @classmethod
    def from_chunks(cls, chunks: Iterable[pa.Array], total: int, width: int, shift: int | None = None
                    ) -> KeyIndex | None:
        """The index of `total` keys read chunk by chunk (e.g. the base id column, row group by row group;
        only their bytes are kept, each chunk hashed while in cache).  None when a chunk is not
        equal-width already-normal keys of `width` bytes, or the chunks do not hold `total` keys."""
        nw = width // 8
        words, hashes = pool_array(total * nw, np.uint64).reshape(total, nw), pool_array(total, np.uint64)
        at = 0
        for chunk in chunks:
            if not len(chunk):
                continue
            cw = fixed_words(chunk, width)
            if cw is None or not already_normal(chunk, cw) or at + len(cw) > total:
                return None
            words[at:at + len(cw)] = cw
            hash_words(cw, out=hashes[at:at + len(cw)])
            at += len(cw)
        return cls(words, hashes, None, shift) if at == total else None

    def _hashes_at(self, shift: int) -> np.ndarray:
        if shift == self.shift:
            return self.hashes
        return np.right_shift(self.hashes, np.uint64(shift - self.shift), out=pool_array(len(self.hashes), np.uint64))

    def duplicates(self) -> list:
        """Up to five keys that occur more than once (exact)."""
        same = np.flatnonzero(self.hashes[1:] == self.hashes[:-1])
        if not len(same):
            return []
        suspects = np.unique(np.concatenate([self.rows[same], self.rows[same + 1]]))
        counts = pc.value_counts(self.keys.take(pa.array(suspects)))
        return counts.filter(pc.greater(counts.field("counts"), 1)).field("values").to_pylist()[:5]

    def positions(self, words: np.ndarray) -> np.ndarray:
        """For each row of `words` (same width), a row of this index holding the same key, else -1."""
        shift = max(self.shift, _shift(len(words)))
        ih = self._hashes_at(shift)
        if not len(words) or not len(ih):
            return np.full(len(words), -1, np.int64)
        qh, qrows = _pack_sort(hash_words(words), shift)
        pos = np.searchsorted(ih, qh)  # sorted needles: a cache-friendly search
        np.minimum(pos, len(ih) - 1, out=pos)
        found = np.take(ih, pos, out=pool_array(len(pos), np.uint64))
        cand = np.equal(found, qh, out=pool_array(len(pos), bool))
        if cand.all():  # the usual case for part keys against the base: every hash is there
            match = pool_array(len(words), np.int64)
            match[qrows] = np.take(self.rows, pos, out=found.view(np.int64))
            if _same_rows(self.words, match, words):
                return match
        else:
            match = np.full(len(words), -1, np.int64)
            match[qrows[cand]] = self.rows[pos[cand]]
        rows = np.flatnonzero(match >= 0)
        if len(rows) == len(words):
            ok = _equal_rows(self.words, match, words, None)
        else:
            ok = _equal_rows(self.words, match[rows], words, rows)
        for r in rows[~ok]:  # another key shares the truncated hash: look at every key of that hash
            h = hash_words(words[r:r + 1])[0] >> np.uint64(shift)
            run = self.rows[np.searchsorted(ih, h, "left"):np.searchsorted(ih, h, "right")]
            same = run[(np.take(self.words, run, axis=0) == words[r]).all(axis=1)]
            match[r] = same[0] if len(same) else -1
        return match


def duplicate_keys(keys: pa.Array) -> list | None:
    """Up to five keys that occur more than once; None when the keys are not equal-width."""
    index = KeyIndex.build(keys)
    return None if index is None else index.duplicates()


def present_in(keys: pa.Array, chunks: Iterable[pa.Array], total: int) -> np.ndarray | None:
    """Per key: is it among the `total` keys of `chunks` (see KeyIndex.from_chunks)?  None when either
    side does not fit.  The chunks (the larger side, e.g. the base) are indexed, the keys searched."""
    kw = fixed_words(keys, None) if isinstance(keys, pa.Array) else None
    if kw is None or not total:
        return None
    index = KeyIndex.from_chunks(chunks, total, kw.shape[1] * 8, _shift(len(kw)))
    return None if index is None else index.positions(kw) >= 0
