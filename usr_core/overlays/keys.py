"""Overlay keys (O2): key names, normalisation, equal-width words, the one 64-bit hash, 8-byte prefixes.

The first link of the overlays chain (keys -> keymatch -> discovery -> encoding -> checks -> kernel
-> ranges -> read): it imports nothing from the other overlay modules.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..contract import OVERLAY_KEYS
from ..errors import SchemaError
from ..storage.pool import pool_array

HASH_MIX = np.uint64(0x9E3779B97F4A7C15)  # 2**64 / golden ratio: the multiplier of every key hash


def check_key_name(key: str) -> str:
    if key not in OVERLAY_KEYS:
        raise SchemaError(f"Unsupported overlay key {key!r}.", hint=f"Use one of: {', '.join(OVERLAY_KEYS)}.")
    return key


def normalize_keys(values: pa.Array | pa.ChunkedArray, key: str, combine: bool = True):
    """O2 k(v): string, trimmed, '' -> NULL; sequence_ci also uppercased.

    combine=False keeps a chunked input chunked (long keys such as sequences: no copy)."""
    if isinstance(values, pa.ChunkedArray):
        if not combine and values.num_chunks > 1:
            return pa.chunked_array([normalize_keys(c, key) for c in values.chunks], pa.string())
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        values = pc.cast(values, pa.string())
    if pa.types.is_large_string(values.type):
        values = pc.cast(values, pa.string())
    if key != "sequence_ci" and already_normal(values, fixed_words(values, None)):
        return values
    out = pc.utf8_trim_whitespace(values)
    if key == "sequence_ci":
        out = pc.utf8_upper(out)
    return pc.if_else(pc.equal(out, ""), pa.scalar(None, pa.string()), out)


def already_normal(values: pa.Array, words: np.ndarray | None = None) -> bool:
    """The one "already trimmed" check: no key is NULL or empty and each starts and ends with a
    printable ASCII non-space byte (0x21-0x7E), so O2 trimming changes nothing (every byte of a
    multi-byte character is >= 0x80).  `words`: the keys' fixed_words(), when the caller has them
    (equal widths: the first and last bytes are two strided columns, no gather)."""
    if not pa.types.is_string(values.type) or values.null_count:
        return False
    if not len(values):
        return True
    if words is not None:
        rows = words.view(np.uint8)
        ends = np.concatenate([rows[:, 0], rows[:, -1]])
    else:
        offs = np.frombuffer(values.buffers()[1], np.int32, len(values) + 1, values.offset * 4)
        if np.diff(offs).min() <= 0:
            return False
        data = np.frombuffer(values.buffers()[2], np.uint8)
        ends = np.concatenate([np.take(data, offs[:-1]), np.take(data, offs[1:] - 1)])
    np.subtract(ends, np.uint8(33), out=ends)  # 0x21-0x7E -> 0-93; any other byte wraps above 93
    return bool(ends.max() < 94)


def trimmed_fixed_width(keys: pa.Array) -> bool:
    """Equal-width keys (8k bytes, so never 'nan' or 'none') that are already normal."""
    words = fixed_words(keys, None) if isinstance(keys, pa.Array) else None
    return words is not None and already_normal(keys, words)


def fixed_words(arr: pa.Array, width: int | None) -> np.ndarray | None:
    """The keys as an (n, words) uint64 matrix (a view) when every key is non-NULL and `width` bytes
    long (`None`: the first key's width), a multiple of 8; else None."""
    if arr.null_count or not pa.types.is_string(arr.type):
        return None
    offs = np.frombuffer(arr.buffers()[1], np.int32, len(arr) + 1, arr.offset * 4)
    w = int(offs[1] - offs[0]) if width is None and len(arr) else width
    if w is None or w == 0 or w % 8 or not np.all(np.diff(offs) == w):
        return None
    data = np.frombuffer(arr.buffers()[2], np.uint8)[offs[0]:offs[-1]]
    return data.view("<u8").reshape(-1, w // 8)


def hash_multipliers(n: int) -> np.ndarray:
    return np.arange(1, n + 1, dtype=np.uint64) * HASH_MIX | np.uint64(1)


_HASH_BLOCK = 1 << 14  # rows hashed at once: the scratch and output blocks stay in cache


def hash_words(words: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The one 64-bit key hash: sum(word_j * odd_j) mod 2**64.

    Its high bits (hash-table slots, sort order) depend on every bit of every word.  Hashes only
    make candidates: every caller confirms a match by comparing the words.  Computed as per-word
    multiply-adds block by block (numpy's integer matmul is a slow generic loop; same value)."""
    n, nw = words.shape
    if out is None:
        out = pool_array(n, np.uint64)
    mult = hash_multipliers(nw)
    tmp = np.empty(min(n, _HASH_BLOCK), np.uint64)
    for i in range(0, n, _HASH_BLOCK):
        w, o = words[i:i + _HASH_BLOCK], out[i:i + _HASH_BLOCK]
        np.multiply(w[:, 0], mult[0], out=o)
        for j in range(1, nw):
            t = np.multiply(w[:, j], mult[j], out=tmp[:len(o)])
            np.add(o, t, out=o)
    return out


def key_prefix(col: pa.Array) -> np.ndarray:
    """The first 8 bytes of each string key as a big-endian uint64 (integer order = byte order)."""
    words = fixed_words(col, None)
    if words is not None:
        return words[:, 0].byteswap()
    if not len(col):
        return np.empty(0, np.uint64)
    offsets = np.frombuffer(col.buffers()[1], np.int32, len(col) + 1, col.offset * 4)
    data = np.frombuffer(col.buffers()[2], np.uint8) if col.buffers()[2] is not None else np.zeros(0, np.uint8)
    if not len(data):
        return np.zeros(len(col), np.uint64)
    starts, lengths = offsets[:-1].astype(np.int64), np.diff(offsets).astype(np.int64)
    pos = np.minimum(starts[:, None] + np.arange(8), len(data) - 1)
    prefix = np.where(np.arange(8) < lengths[:, None], data[pos], 0).astype(np.uint8)
    return prefix.view(">u8").ravel().astype(np.uint64)
