"""Matching variable-width string keys (sequences) by 64-bit hashes, always verified on bytes.

The counterpart of keymatch for keys of any length: the probe keys (a read's base keys) are hashed
once, their hashes sorted and bucketed by their high bits; a part's keys are hashed, looked up in their
bucket, and every candidate match is confirmed by comparing the two keys' bytes (Arrow's string
equality).  Equal hashes of different keys only cost a second look at the other probe keys of that hash.
Where pyarrow compares string_view arrays, the bytes are compared where they lie: both sides become
16-byte views into their own buffers and only the views are gathered (copying the probe keys to compare
them cost more than the comparison).

The hash reads five words of each key (its first and last 8 bytes and three spread between them) plus
its length: a few vectorised numpy passes whatever the key length (one gather of all five words, their
sum weighted by odd multipliers, Murmur3's finaliser).  Keys that agree on those words
but differ elsewhere (e.g. a library of point mutants) share a hash; when the probe keys collide like
that, the index hashes every word of every key instead (slower, still linear).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..storage.pool import one_array, pool_array

_BLOCK = 1 << 12  # keys hashed at once (their bytes stay in cache over the passes)
_VERIFY_BLOCK = 1 << 14  # keys whose bytes are compared at once (a copy of their probe keys)
_VIEW_BLOCK = 1 << 16  # keys whose views are gathered and compared at once (16 bytes a side per key)
THREADED_KEYS = 1 << 17  # from this many keys, hashing and matching run in two halves on two threads
SAMPLE_SHIFT = 2
SAMPLES = (1 << SAMPLE_SHIFT) + 1  # words hashed per key by the sampled hash: first, last, 3 between
_MIX = np.uint64(0x9E3779B97F4A7C15)
_MULT, _SHR = np.uint64(0xD6E8FEB86659FD93), np.uint64(29)  # h = (h ^ h >> 29) * _MULT + word, word by word
_FMIX1, _FMIX2, _S33 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53), np.uint64(33)
_SAMPLE_MULT = (np.arange(1, SAMPLES + 1, dtype=np.uint64) * _MULT | np.uint64(1))[:, None]  # odd, one per word
_SAMPLE_AT = np.arange(SAMPLES - 1, dtype=np.int64)[:, None]  # a sampled word's place: first + k * step
_LOW_BYTES = np.array([(1 << (8 * i)) - 1 for i in range(8)] + [(1 << 64) - 1], np.uint64)


def _strings(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start, length) of each key (int64) and an unaligned uint64 view of the data buffer at every byte
    (word at byte p = view[p]); the buffer is padded to 8 bytes when shorter."""
    if pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type):
        offs = np.frombuffer(arr.buffers()[1], np.int64, len(arr) + 1, arr.offset * 8)
    else:
        offs = np.frombuffer(arr.buffers()[1], np.int32, len(arr) + 1, arr.offset * 4)
    buf = arr.buffers()[2]
    data = np.frombuffer(buf, np.uint8) if buf is not None else np.zeros(0, np.uint8)
    if len(data) < 8:
        data = np.concatenate([data, np.zeros(8 - len(data), np.uint8)])
    view = np.ndarray((len(data) - 7,), "<u8", data, 0, (1,))
    starts = offs[:-1].astype(np.int64)
    return starts, offs[1:] - starts, view


def _fmix(h: np.ndarray) -> np.ndarray:
    """Murmur3's finaliser: every bit of h reaches the high bits (the index sorts and buckets on them)."""
    h ^= h >> _S33
    h *= _FMIX1
    h ^= h >> _S33
    h *= _FMIX2
    h ^= h >> _S33
    return h


def _hash_block(starts: np.ndarray, lengths: np.ndarray, view: np.ndarray, full: bool) -> np.ndarray:
    h = lengths.astype(np.uint64) * _MIX
    tail = np.maximum(lengths - 8, 0)  # where the key's last word starts (within the key)
    short = np.flatnonzero(lengths < 8)
    first, last = starts.copy(), starts + tail
    small = None
    if len(short):  # keys under 8 bytes: their bytes only (the word may run past the buffer)
        at = starts[short]
        inside = np.minimum(at, len(view) - 1)
        small = (view[inside] >> ((at - inside).astype(np.uint64) * np.uint64(8))) & _LOW_BYTES[lengths[short]]
        first[short] = last[short] = inside
    if full:
        for k in range(int((lengths.max() + 7) // 8) if len(lengths) else 0):
            w = view[np.minimum(first + 8 * k, last)]
            if small is not None:
                w[short] = small
            more = (h ^ (h >> _SHR)) * _MULT + w
            np.copyto(h, more, where=8 * k < np.maximum(lengths, 1))  # past a key's last word: unchanged
        return _fmix(h)
    # the sampled words in one gather (a few numpy calls per block: two threads hash without waiting
    # on each other for the GIL), combined as sum(word_k * odd_k); _fmix spreads the sum's bits
    at = np.empty((SAMPLES, len(starts)), np.int64)
    np.multiply(_SAMPLE_AT, tail >> SAMPLE_SHIFT, out=at[:-1])
    at[:-1] += first
    at[-1] = last
    w = view[at]
    if small is not None:
        w[:, short] = small
    w *= _SAMPLE_MULT
    h += w.sum(axis=0, dtype=np.uint64)
    return _fmix(h)


def string_hashes(keys: pa.Array | pa.ChunkedArray, full: bool = False, bits: int = 64) -> np.ndarray:
    """A 64-bit hash per key (NULL keys hash as ''), block by block, on two threads for many keys.
    `full`: every word of each key; else SAMPLES words.  `bits` < 64 keeps only that many low bits
    (tests force collisions with it)."""
    out = pool_array(len(keys), np.uint64)
    if len(keys) < THREADED_KEYS:
        _hash_into(keys, full, out)
    else:
        mid = len(keys) // 2
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(_hash_into, (keys.slice(0, mid), keys.slice(mid)), (full, full), (out[:mid], out[mid:])))
    if bits < 64:
        out &= np.uint64((1 << bits) - 1)
    return out


def _hash_into(keys: pa.Array | pa.ChunkedArray, full: bool, out: np.ndarray) -> None:
    at = 0
    for chunk in keys.chunks if isinstance(keys, pa.ChunkedArray) else [keys]:
        starts, lengths, view = _strings(chunk)
        for i in range(0, len(chunk), _BLOCK):
            j = min(i + _BLOCK, len(chunk))
            out[at + i:at + j] = _hash_block(starts[i:j], lengths[i:j], view, full)
        at += len(chunk)


def _valid(keys) -> np.ndarray:
    if not keys.null_count:
        return np.ones(len(keys), bool)
    return pc.is_valid(keys).to_numpy(zero_copy_only=False)


def _rows(a, rows: np.ndarray) -> pa.Array:
    """a[rows] as one array, `rows` ascending: a take from the (combined) span they cover (a take across
    many chunks costs far more)."""
    lo, hi = int(rows[0]), int(rows[-1]) + 1
    span = one_array(a.slice(lo, hi - lo))
    return span if len(rows) == hi - lo else span.take(pa.array(rows - lo))


def _same(a, a_rows: np.ndarray | None, b, b_rows: np.ndarray) -> np.ndarray:
    """a[a_rows] == b[b_rows] on bytes (a_rows None: a in order; else ascending), block by block; the
    rows of a chunked `b` are taken chunk by chunk."""
    chunks = b.chunks if isinstance(b, pa.ChunkedArray) else [b]
    bounds = np.cumsum([0] + [len(c) for c in chunks])
    out = np.empty(len(b_rows), bool)
    for i in range(0, len(b_rows), _VERIFY_BLOCK):
        rows = b_rows[i:i + _VERIFY_BLOCK]
        left = one_array(a.slice(i, len(rows))) if a_rows is None else _rows(a, a_rows[i:i + _VERIFY_BLOCK])
        if len(chunks) == 1:
            out[i:i + len(rows)] = _equal(left, chunks[0].take(pa.array(rows)))
            continue
        order = np.argsort(rows)  # grouped by probe chunk, ascending within each (a cache-friendlier read)
        ordered = rows[order]
        cut = np.searchsorted(ordered, bounds)
        right = pa.chunked_array([chunks[c].take(pa.array(ordered[cut[c]:cut[c + 1]] - bounds[c]))
                                  for c in range(len(chunks)) if cut[c + 1] > cut[c]], left.type)
        out[i + order] = _equal(left.take(pa.array(order)), right)
    return out


def _equal(left: pa.Array, right: pa.Array) -> np.ndarray:
    return pc.fill_null(pc.equal(left, right), False).to_numpy(zero_copy_only=False)


def _compares_views() -> bool:
    try:
        a = pa.array(["A" * 13, "C"], pa.string_view())
        return pc.equal(a, a).to_pylist() == [True, True]
    except (pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return False


IN_PLACE = _compares_views()  # string_view equality is a recent pyarrow kernel; else keys are copied


def string_views(keys: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The keys as one string_view array whose views point into the keys' own data buffers (one
    variadic buffer per chunk; no key byte copied)."""
    views = [pc.cast(c, pa.string_view()) for c in (keys.chunks if isinstance(keys, pa.ChunkedArray) else [keys])]
    return views[0] if len(views) == 1 else pa.concat_arrays(views)


def _take_views(views: pa.Array, rows: np.ndarray | None) -> pa.Array:
    """views[rows] for rows holding non-NULL keys: the 16-byte views gathered, the data buffers shared."""
    if rows is None:
        return views
    structs = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), len(views), [None, views.buffers()[1]],
                                                   offset=views.offset).take(pa.array(rows))
    return pa.Array.from_buffers(pa.string_view(), len(rows), [None, structs.buffers()[1]] + views.buffers()[2:],
                                 offset=structs.offset)


def _same_views(a: pa.Array, a_rows: np.ndarray | None, b: pa.Array, b_rows: np.ndarray) -> np.ndarray:
    """a[a_rows] == b[b_rows] on bytes (a_rows None: a in order), `a` and `b` from string_views()."""
    out = np.empty(len(b_rows), bool)
    for i in range(0, len(b_rows), _VIEW_BLOCK):
        rows = b_rows[i:i + _VIEW_BLOCK]
        left = a.slice(i, len(rows)) if a_rows is None else _take_views(a, a_rows[i:i + _VIEW_BLOCK])
        out[i:i + len(rows)] = _equal(left, _take_views(b, rows))
    return out


class VarKeyIndex:
    """The probe keys' hashes in ascending order with their rows (NULL keys left out), built once per
    read and matched against each part's keys.  Holds a reference to the probe keys for verification
    (and, where pyarrow compares views, their string_views: 16 bytes per key)."""

    def __init__(self, probe: pa.Array | pa.ChunkedArray, full: bool, bits: int):
        self.probe, self.full, self.bits = probe, full, bits
        self._views = string_views(probe) if IN_PLACE else None
        h = string_hashes(probe, full, bits)
        valid = _valid(probe)
        rows = np.flatnonzero(valid) if not valid.all() else None
        order = np.argsort(h if rows is None else h[rows])  # equal hashes in any order: each is verified
        self.rows = order if rows is None else rows[order]
        self._padded = np.empty(len(self.rows) + 1, np.uint64)  # a read at an empty last bucket's start
        np.take(h, self.rows, out=self._padded[:-1])
        self._padded[-1] = 0
        self.hashes = self._padded[:-1]
        same = self.hashes[1:] == self.hashes[:-1]
        self.collisions = int(np.count_nonzero(same))
        self.longest_run = _longest_run(same) + 1 if len(self.hashes) else 0
        nb = max(1, min(bits, len(self.hashes).bit_length()))  # at most one key per bucket on average
        self._shift = np.uint64(bits - nb)
        counts = np.bincount((self.hashes >> self._shift).astype(np.intp), minlength=1 << nb)
        bounds = np.r_[0, np.cumsum(counts)].astype(np.int32 if len(self.hashes) < 2**31 else np.int64)
        self._starts, self._ends = bounds[:-1], bounds[1:]  # bucket b: hashes[_starts[b]:_ends[b]]

    def _find(self, h: np.ndarray) -> np.ndarray:
        """Per hash, the index of its first equal in self.hashes, else -1 (a walk through its bucket:
        the first round covers every hash at once, the few left go on)."""
        b = (h >> self._shift).astype(np.intp)
        lo, hi = self._starts[b], self._ends[b]
        at = self._padded[lo]
        hit = (at == h) & (lo < hi)
        found = np.where(hit, lo, -1).astype(np.int64)
        rows = np.flatnonzero((at < h) & (lo + 1 < hi))
        pos, hi, q = lo[rows].astype(np.int64) + 1, hi[rows], h[rows]
        while len(rows):  # as many rounds as the fullest bucket holds hashes
            at = self.hashes[pos]
            eq = at == q
            found[rows[eq]] = pos[eq]
            more = (at < q) & (pos + 1 < hi)
            rows, pos, hi, q = rows[more], pos[more] + 1, hi[more], q[more]
        return found

    @classmethod
    def build(cls, probe: pa.Array | pa.ChunkedArray, bits: int = 64) -> VarKeyIndex:
        """The sampled-hash index, or the full-hash one when sampled hashes of distinct probe keys
        collide often (more than 1 in 1,000 keys)."""
        index = cls(probe, False, bits)
        if index.collisions > 16 + len(index.hashes) // 1000:
            index = cls(probe, True, bits)
        return index

    def duplicates(self) -> list:
        """Up to five probe keys that occur more than once (exact)."""
        if not self.collisions:
            return []
        same = np.flatnonzero(self.hashes[1:] == self.hashes[:-1])
        suspects = np.unique(np.concatenate([self.rows[same], self.rows[same + 1]]))
        counts = pc.value_counts(self.probe.take(pa.array(suspects)))
        return counts.filter(pc.greater(counts.field("counts"), 1)).field("values").to_pylist()[:5]

    def positions(self, keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """For each key, the probe row holding the same key (bytes compared), else -1 (NULL: -1).
        Many keys are matched in two halves on two threads."""
        if len(keys) < THREADED_KEYS:
            return self._positions(keys)
        mid = len(keys) // 2
        with ThreadPoolExecutor(2) as pool:
            return np.concatenate(list(pool.map(self._positions, (keys.slice(0, mid), keys.slice(mid)))))

    def _positions(self, keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
        n = len(keys)
        match = np.full(n, -1, np.int64)
        if not n or not len(self.hashes):
            return match
        h = pool_array(n, np.uint64)
        _hash_into(keys, self.full, h)
        if self.bits < 64:
            h &= np.uint64((1 << self.bits) - 1)
        at = self._find(h)  # the candidate's position in self.hashes per key
        ok_rows = at >= 0
        if keys.null_count:
            ok_rows &= _valid(keys)
        todo = np.flatnonzero(ok_rows) if not ok_rows.all() else None  # None: every key, in order
        at = at if todo is None else at[todo]
        views = string_views(keys) if self._views is not None else None
        for step in range(self.longest_run):  # the step-th probe key of an equal-hash run
            if step:
                nxt = np.minimum(at + step, len(self.hashes) - 1)
                keep = (at + step < len(self.hashes)) & (self.hashes[nxt] == h[todo])
                todo, at = todo[keep], at[keep]
            if not len(at):
                break
            cand = self.rows[at + step]
            if views is not None:
                ok = _same_views(views, todo, self._views, cand)
            else:
                ok = _same(keys, todo, self.probe, cand)
            if todo is None:
                if ok.all():  # every key found at its first candidate (the usual case)
                    return cand
                todo = np.arange(n)
            match[todo[ok]] = cand[ok]
            todo, at = todo[~ok], at[~ok]
        return match


def _longest_run(same: np.ndarray) -> int:
    """The longest stretch of True in `same` (adjacent equal hashes)."""
    if not same.any():
        return 0
    edges = np.flatnonzero(np.diff(np.r_[0, same.astype(np.int8), 0]))
    return int((edges[1::2] - edges[::2]).max())
