"""Matching equal-width keys (ids) by their 64-bit hashes (keys.hash_words), always verified on bytes.

One scheme serves read joins and write checks: each key becomes one uint64, the high bits of its
hash with its row number in the low bits, so one numpy sort orders the hashes and remembers the
rows.  Other keys are sorted the same way and each starts its search at its bucket (the index's
first position for the hash's top bits), a step or two before its hit; sorted searched hashes with
no equal neighbours also prove those keys distinct (O8) for free.  Equal truncated hashes only make
candidates: every match is confirmed by comparing the keys' bytes, block by block.
"""
from __future__ import annotations

import threading
from typing import Iterable, NamedTuple

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


def _mismatches(a: np.ndarray, a_rows: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The rows i with a_rows[i] >= 0 and a[a_rows[i]] != b[i], compared block by block (bounded scratch;
    a block whose rows all match costs one gather and one comparison)."""
    buf = pool_array(min(_BLOCK, len(b)) * a.shape[1], np.uint64).reshape(-1, a.shape[1])
    bad = []
    for i in range(0, len(b), _BLOCK):
        m, right = a_rows[i:i + _BLOCK], b[i:i + _BLOCK]
        sel = None if m.min() >= 0 else np.flatnonzero(m >= 0)
        if sel is not None:
            m, right = m[sel], right[sel]
        left = np.take(a, m, axis=0, out=buf[:len(m)], mode="clip")  # clip: no buffered copy (rows are valid)
        if sel is None and np.array_equal(left, right):
            continue
        differ = np.flatnonzero(~(left == right).all(axis=1))
        bad.append(i + (differ if sel is None else sel[differ]))
    return np.concatenate(bad) if bad else np.empty(0, np.int64)


def _bucket_bits(n: int) -> int:
    return max(1, n.bit_length())  # 2**bits buckets > n: half a key per bucket or fewer on average


class Lookup(NamedTuple):
    """KeyIndex.lookup's answer: `rows`, per searched key the index row holding the same key (-1:
    none); `distinct` True when the searched keys are proven pairwise distinct (their truncated
    hashes differ), False when not known (check exactly, e.g. on `rows` and the unmatched keys)."""
    rows: np.ndarray
    distinct: bool


class KeyIndex:
    """Equal-width keys' truncated hashes in ascending order, with their rows: built once by its owner
    (one read's probe keys, one write's key check), then matched against other key columns.

    It holds its key words (a view of `keys`' buffer, or a copy when built from chunks) as long as its
    owner keeps it, and (from the first lookup) a bucket table: per value of a hash's top bits, the
    first sorted position of that value, so a search starts at most a few positions before its hit."""

    def __init__(self, words: np.ndarray, hashes: np.ndarray, keys: pa.Array | None = None, shift: int | None = None):
        self.keys, self.words = keys, words
        self.shift = max(shift or 1, _shift(len(words)))
        self.hashes, rows = _pack_sort(hashes, self.shift)
        self.rows = rows
        if len(rows) < 2**31:  # half the memory, half the bytes each lookup gathers
            self.rows = pool_array(len(rows), np.int32)
            np.copyto(self.rows, rows, casting="unsafe")
        self._starts: np.ndarray | None = None
        self._lock = threading.Lock()

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

    def _bucket_starts(self) -> np.ndarray:
        """starts[b]: the number of hashes whose top bits are below b (built once, by the first lookup)."""
        with self._lock:
            if self._starts is None:
                bits = _bucket_bits(len(self.hashes))
                top = np.right_shift(self.hashes, np.uint64(64 - self.shift - bits),
                                     out=pool_array(len(self.hashes), np.uint64))
                counts = np.bincount(top.view(np.int64), minlength=1 << bits)
                starts = pool_array(len(counts) + 1, np.int32 if len(self.hashes) < 2**31 else np.int64)
                starts[0] = 0
                np.cumsum(counts, dtype=starts.dtype, out=starts[1:])
                self._starts = starts
        return self._starts

    def _search(self, ih: np.ndarray, qh: np.ndarray, shift: int) -> tuple[np.ndarray, np.ndarray]:
        """(np.searchsorted(ih, qh), ih[that] == qh) for ascending `qh` (both at `shift`): each search
        starts at its bucket's first position and steps over the few smaller hashes of that bucket."""
        bshift = 64 - shift - _bucket_bits(len(self.hashes))
        if bshift < 0:
            pos = np.searchsorted(ih, qh)
            return pos, np.take(ih, pos, mode="clip") == qh
        pos = np.take(self._bucket_starts(), np.right_shift(qh, np.uint64(bshift)).view(np.int64))
        n = len(ih)
        # clip: an empty last bucket starts at n (a needle above every hash)
        found = np.take(ih, pos, mode="clip", out=pool_array(len(pos), np.uint64))
        hit = np.equal(found, qh, out=pool_array(len(pos), bool))
        stepped = todo = np.flatnonzero(found < qh)
        while len(todo):
            todo = todo[pos[todo] < n]
            pos[todo] += 1
            todo = todo[np.take(ih, pos[todo], mode="clip") < qh[todo]]
        if len(stepped):
            hit[stepped] = np.take(ih, pos[stepped], mode="clip") == qh[stepped]
        return pos, hit

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
        return self.lookup(words).rows

    def lookup(self, words: np.ndarray) -> Lookup:
        """positions(words), and whether the searched keys are proven distinct (see Lookup)."""
        shift = max(self.shift, _shift(len(words)))
        ih = self._hashes_at(shift)
        if not len(words) or not len(ih):
            return Lookup(np.full(len(words), -1, np.int64), len(words) <= 1)
        qh, qrows = _pack_sort(hash_words(words), shift)
        distinct = not np.any(np.equal(qh[1:], qh[:-1], out=pool_array(len(qh) - 1, bool)))
        pos, cand = self._search(ih, qh, shift)
        rows = np.take(self.rows, pos, mode="clip")
        if not cand.all():  # else the usual case for part keys against the base: every hash is there
            rows[~cand] = -1
        match = pool_array(len(words), np.int64)
        match[qrows] = rows
        for r in _mismatches(self.words, match, words):  # another key shares the truncated hash
            h = hash_words(words[r:r + 1])[0] >> np.uint64(shift)
            run = self.rows[np.searchsorted(ih, h, "left"):np.searchsorted(ih, h, "right")]
            same = run[(np.take(self.words, run, axis=0) == words[r]).all(axis=1)]
            match[r] = same[0] if len(same) else -1
        return Lookup(match, distinct)


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
