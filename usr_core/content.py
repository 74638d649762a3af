"""Content versions: an order-independent digest of a table's rows (key + values), computed with numpy.

A namespace's content version is the sum, over its rows with at least one non-NULL value, of a 64-bit hash of
(normalised key, each non-NULL value with its column name), in two independent lanes, plus the row count. Sums do
not depend on row order, file layout, compaction or metadata, and they are additive: when a write adds rows for
keys that had no value before, the new version is the old one plus the digest of the added rows, with no reread.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PREFIX = "usrc1"
_P = np.uint64(0x100000001B3)  # odd: invertible modulo 2**64
_P_INV = np.uint64(pow(0x100000001B3, -1, 1 << 64))
_LANE2 = np.uint64(0xD6E8FEB86659FD93)
SLICE_ROWS = 1 << 16


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (wrapping uint64 arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _name_hash(name: str) -> np.uint64:
    return np.uint64(int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little"))


def _powers(n: int, base: np.uint64) -> np.ndarray:
    out = np.full(n, base, np.uint64)
    if n:
        out[0] = 1
    return np.cumprod(out, dtype=np.uint64)


def _segments(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per segment [offsets[i], offsets[i+1]): sum of values[j] * P**(j - start) (wrapping)."""
    n = len(values)
    w = values * _powers(n, _P)
    cs = np.zeros(n + 1, np.uint64)
    np.cumsum(w, dtype=np.uint64, out=cs[1:])
    starts = offsets[:-1]
    return (cs[offsets[1:]] - cs[starts]) * _powers(n + 1, _P_INV)[starts]


def _bytes_hash(arr: pa.Array) -> np.ndarray:
    large = pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)
    n = len(arr)
    offs = np.frombuffer(arr.buffers()[1], np.int64 if large else np.int32, n + 1, arr.offset * (8 if large else 4))
    offs = offs.astype(np.int64)
    data = arr.buffers()[2]
    raw = np.frombuffer(data, np.uint8)[offs[0]:offs[-1]] if data is not None else np.zeros(0, np.uint8)
    local = offs - offs[0]
    lengths = np.diff(local)
    if n and len(raw) == n * lengths[0] and (lengths == lengths[0]).all():  # equal width: one matrix product
        powers = _powers(int(lengths[0]), _P)  # sum((b + 1) * P**j) = b @ P + sum(P)
        h = raw.reshape(n, len(powers)).astype(np.uint64) @ powers + powers.sum(dtype=np.uint64)
    else:
        h = _segments(raw.astype(np.uint64) + np.uint64(1), local)
    return _mix(h ^ _mix(lengths.astype(np.uint64)))


def _valid(arr: pa.Array) -> np.ndarray:
    if arr.null_count == 0:
        return np.ones(len(arr), bool)
    return arr.is_valid().to_numpy(zero_copy_only=False)


def hash_array(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(64-bit hash per value, valid per value) of any Arrow array; nested values hash element by element."""
    t = arr.type
    valid = _valid(arr)
    if pa.types.is_dictionary(t):
        return hash_array(arr.cast(t.value_type))
    if pa.types.is_null(t):
        return np.zeros(len(arr), np.uint64), valid
    if pa.types.is_boolean(t):
        h = pc.fill_null(arr, False).to_numpy(zero_copy_only=False).astype(np.uint64) + np.uint64(2)
    elif pa.types.is_floating(t):
        h = pc.fill_null(arr.cast(pa.float64()), 0.0).to_numpy(zero_copy_only=False).view(np.uint64)
    elif pa.types.is_integer(t) or pa.types.is_temporal(t):
        ints = arr.cast(pa.int64()) if not pa.types.is_integer(t) else arr
        h = pc.fill_null(ints.cast(pa.int64()), 0).to_numpy(zero_copy_only=False).view(np.uint64)
    elif pa.types.is_string(t) or pa.types.is_binary(t) or pa.types.is_large_string(t) or pa.types.is_large_binary(t):
        h = _bytes_hash(arr)
    elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        if pa.types.is_fixed_size_list(t):
            size = t.list_size
            offs = np.arange(arr.offset, arr.offset + len(arr) + 1, dtype=np.int64) * size
        else:
            offs = arr.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
        child = arr.values.slice(int(offs[0]), int(offs[-1] - offs[0]))
        ch, cv = hash_array(child)
        elem = np.where(cv, _mix(ch + np.uint64(3)), np.uint64(1))
        local = offs - offs[0]
        h = _mix(_segments(elem, local) ^ _mix(np.diff(local).astype(np.uint64)))
    elif pa.types.is_struct(t):
        h = np.zeros(len(arr), np.uint64)
        for f, child in zip(t, arr.flatten()):
            ch, cv = hash_array(child)
            h = h + np.where(cv, _mix(ch ^ _name_hash(f.name)), np.uint64(0))
    else:  # maps, unions, decimals: their text form
        h = _bytes_hash(pa.array([None if v is None else repr(v) for v in arr.to_pylist()], pa.string()))
    return _mix(h ^ _name_hash(str(t.id))), valid


def table_sums(table: pa.Table, key: str) -> tuple[int, int, int]:
    """(rows with a non-NULL value, lane-1 sum, lane-2 sum) over `table` (key column `key`, data columns)."""
    data = sorted(c for c in table.column_names if c != key)
    rows, s1, s2 = 0, np.uint64(0), np.uint64(0)
    with np.errstate(over="ignore"):
        for start in range(0, table.num_rows, SLICE_ROWS):
            part = table.slice(start, SLICE_ROWS)
            kh, _ = hash_array(part.column(key).combine_chunks())
            acc = np.zeros(part.num_rows, np.uint64)
            any_value = np.zeros(part.num_rows, bool)
            for name in data:
                h, v = hash_array(part.column(name).combine_chunks())
                acc = acc + np.where(v, _mix(h ^ _name_hash(name)), np.uint64(0))
                any_value |= v
            r = _mix(kh + _mix(acc))[any_value]
            rows += int(any_value.sum())
            s1 = s1 + r.sum(dtype=np.uint64)
            s2 = s2 + _mix(r ^ _LANE2).sum(dtype=np.uint64)
    return rows, int(s1), int(s2)


def format_version(rows: int, s1: int, s2: int) -> str:
    return f"{PREFIX}:{rows}:{s1:016x}{s2:016x}"


def parse_version(version: str | None) -> tuple[int, int, int] | None:
    try:
        prefix, rows, sums = (version or "").split(":")
        if prefix != PREFIX or len(sums) != 32:
            return None
        return int(rows), int(sums[:16], 16), int(sums[16:], 16)
    except ValueError:
        return None


def add_rows(version: str, table: pa.Table, key: str) -> str | None:
    """The version after adding `table`'s rows for keys that had no value before (None if `version` is not one)."""
    old = parse_version(version)
    if old is None:
        return None
    rows, s1, s2 = table_sums(table, key)
    mask = (1 << 64) - 1
    return format_version(old[0] + rows, (old[1] + s1) & mask, (old[2] + s2) & mask)
