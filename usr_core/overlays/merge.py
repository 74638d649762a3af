"""The newest-non-null-wins kernel (O8, O9) and key normalisation (O2).

One code path builds a namespace view for reads, compaction and materialize.  Part rows are mapped
to key slots (base rows for ids, via verified 64-bit hashes; else one dictionary encoding), then each
column is scattered part by part, oldest to newest, so the newest non-NULL value per slot survives.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..contract import OVERLAY_KEYS
from ..errors import SchemaError
from .files import META_KEYS_CLUSTERED, OverlaySource, Part, row_groups_with_keys


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
    if key != "sequence_ci" and _already_normal(values):
        return values
    out = pc.utf8_trim_whitespace(values)
    if key == "sequence_ci":
        out = pc.utf8_upper(out)
    return pc.if_else(pc.equal(out, ""), pa.scalar(None, pa.string()), out)


def _already_normal(values: pa.Array) -> bool:
    """True when no key is NULL or empty and each starts and ends with a printable ASCII non-space
    byte, so trimming changes nothing (every byte of a multi-byte character is >= 0x80)."""
    if values.null_count or not len(values):
        return False
    offs = np.frombuffer(values.buffers()[1], np.int32, len(values) + 1, values.offset * 4)
    if np.diff(offs).min() <= 0:
        return False
    data = np.frombuffer(values.buffers()[2], np.uint8)
    ends = np.concatenate([np.take(data, offs[:-1]), np.take(data, offs[1:] - 1)])
    return bool(((ends > 32) & (ends < 127)).all())


def _read_part(part: Part, key: str, columns: list[str], keys_filter: pa.Array | None) -> pa.Table:
    wanted = [key] + [c for c in columns if part.schema.get_field_index(c) >= 0]
    if keys_filter is None:
        return pq.read_table(part.path, columns=wanted)
    pf = pq.ParquetFile(part.path)
    groups = None
    if part.meta.get(META_KEYS_CLUSTERED):
        groups = row_groups_with_keys(pf, key, sorted(keys_filter.to_pylist()))
    table = pf.read(columns=wanted) if groups is None else pf.read_row_groups(groups, columns=wanted)
    return table.filter(pc.is_in(normalize_keys(table[key], key), value_set=keys_filter))


def unify_types(src: OverlaySource, columns: list[str]) -> dict[str, pa.DataType]:
    types: dict[str, pa.DataType] = {}
    for part in src.parts:
        for name in columns:
            idx = part.schema.get_field_index(name)
            if idx < 0:
                continue
            t = part.schema.field(idx).type
            if name in types and types[name] != t:
                raise SchemaError(f"Overlay {src.namespace!r}: column {name} has type {types[name]} in one part and "
                                  f"{t} in {part.path.name} (O8).",
                                  hint="Rewrite the odd part with the registered type, or remove it.")
            types[name] = t
    return types


THREADED_ROWS = 200_000


def _map(fn, items, rows: int) -> list:
    """fn over items, on two threads when the work is large (parquet, arrow and numpy release the GIL)."""
    if rows < THREADED_ROWS or len(items) < 2:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(fn, items))


_MIX = np.uint64(0x9E3779B97F4A7C15)


def fixed_words(arr: pa.Array, width: int | None) -> np.ndarray | None:
    """The keys as an (n, words) uint64 matrix when every key is non-NULL and `width` bytes long."""
    if arr.null_count or not pa.types.is_string(arr.type):
        return None
    offs = np.frombuffer(arr.buffers()[1], np.int32, len(arr) + 1, arr.offset * 4)
    w = int(offs[1] - offs[0]) if width is None and len(arr) else width
    if w is None or w == 0 or w % 8 or not np.all(np.diff(offs) == w):
        return None
    data = np.frombuffer(arr.buffers()[2], np.uint8)[offs[0]:offs[-1]]
    return data.view("<u8").reshape(-1, w // 8)


def hash_words(words: np.ndarray) -> np.ndarray:
    h = np.zeros(len(words), np.uint64)
    for j in range(words.shape[1]):
        h ^= words[:, j]
        h *= _MIX
        h ^= h >> np.uint64(29)
    return h


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


_LAST_PROBE: list = []  # [(buffer identity, probe, words, index)]: one read joins several overlays on one probe


def _probe_index(probe: pa.Array):
    bufs = probe.buffers()
    ident = tuple(b.address if b is not None else None for b in bufs) + (probe.offset, len(probe))
    entry = _LAST_PROBE[0] if _LAST_PROBE else None  # one read of the shared slot (threads may replace it)
    if entry is not None and entry[0] == ident:
        return entry[2], entry[3]
    pw = fixed_words(probe, None)
    if pw is None or not len(pw):
        return None, None
    index = HashIndex(hash_words(pw))
    _LAST_PROBE[:] = [(ident, probe, pw, index)]  # the probe reference keeps its buffers (and addresses) alive
    return pw, index


def _one_array(values):
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    return values


def _fast_positions(pw: np.ndarray, index: HashIndex, keys: pa.Array) -> np.ndarray | None:
    """Each part row's probe row (-1: none) for equal-width keys (ids), via 64-bit hashes verified word
    by word; None when the keys do not fit (another width, NULLs)."""
    w = fixed_words(keys, pw.shape[1] * 8)
    if w is None:
        return None
    pos = index.lookup(hash_words(w))
    if not len(pos) or pos.min() >= 0:
        same = np.array_equal(np.take(pw, pos, axis=0), w)
    else:
        hit = np.flatnonzero(pos >= 0)
        same = np.array_equal(np.take(pw, pos[hit], axis=0), w[hit])
    return pos if same else None  # a 64-bit hash collision: let the dictionary path decide


def _raise_duplicate(key_value, where: str):
    raise SchemaError(f"Overlay {where} has duplicate keys: {[key_value]} (O8).",
                      hint="Each key may appear once per overlay file; remove or rewrite that file.")


def _first_duplicate(pos: np.ndarray, nkeys: int, stamp: np.ndarray) -> int | None:
    """Index into `pos` of a repeated non-negative value, or None; `stamp` is scratch of size nkeys."""
    rows = np.flatnonzero(pos >= 0)
    vals = pos[rows]
    stamp[vals] = rows
    lost = stamp[vals] != rows
    if lost.any():
        return int(rows[np.flatnonzero(lost)[0]])
    return None


@dataclass
class _Loaded:
    """One part, newest first: data columns, and either slots (probe rows) or the keys to encode."""
    name: str
    n: int
    cols: dict
    pos: np.ndarray | None = None
    keys: pa.Array | None = None


def _load_parts(src: OverlaySource, columns: list[str], probe, keys_filter: pa.Array | None
                ) -> tuple[list[_Loaded], pa.Array | None]:
    """Read the parts (newest first, O9) and map their keys to probe rows where the fast path fits.

    `probe` may be a callable: it is called (once) by the first part that needs it, so parts are
    read while the caller's base keys are still being read.  Keys are dropped as soon as they are
    mapped, so a read holds the key strings of two parts at most.  Returns (parts, probe)."""
    key = src.key
    if key is None:
        raise SchemaError(f"Overlay {src.path} is missing usr:overlay_key metadata (O11).",
                          hint="Rewrite the overlay with USR or run overlay-refresh-metadata.")
    check_key_name(key)
    for part in src.parts:
        if part.created_at is None:
            raise SchemaError(f"Overlay {part.path} is missing required created_at metadata (O8).",
                              hint="Run overlay-refresh-metadata on it, or remove the part.")
    types = unify_types(src, columns)
    ordered = sorted(src.parts, key=lambda p: p.rank, reverse=True)  # O9: newest first
    state: dict = {}
    lock = threading.Lock()

    def resolved() -> dict:
        with lock:
            if not state:
                p = probe() if callable(probe) else probe
                if p is not None and not pa.types.is_string(p.type):
                    p = p.cast(pa.string())
                single = isinstance(p, pa.Array) or (p is not None and p.num_chunks == 1)
                pw, index = _probe_index(_one_array(p)) if single else (None, None)
                state.update(probe=p, pw=pw, index=index, fast=pw is not None and index.unique)
        return state

    def load(part: Part) -> _Loaded:
        t = _read_part(part, key, columns, keys_filter)
        cols = {c: t[c].combine_chunks() if c in t.column_names else pa.nulls(t.num_rows, types[c]) for c in columns}
        out = _Loaded(str(part.path), t.num_rows, cols)
        st = resolved()
        keys = normalize_keys(t[key], key, combine=st["fast"])
        out.pos = _fast_positions(st["pw"], st["index"], keys) if st["fast"] else None
        if out.pos is None:
            out.keys = keys
            return out
        nprobe = len(st["probe"])
        if _first_duplicate(out.pos, nprobe, np.empty(nprobe, np.int32)) is not None:
            out.pos, out.keys = None, keys  # the dictionary path names the duplicate
            return out
        miss = out.pos < 0
        if miss.any():  # keys outside the probe are dropped by the join, yet must be unique (O8)
            rest = keys.filter(pa.array(miss))
            if len(pc.unique(rest)) != len(rest):
                vc = pc.value_counts(rest)
                _raise_duplicate(vc.filter(pc.greater(vc.field("counts"), 1)).field("values")[0].as_py(), out.name)
        return out

    loaded = _map(load, ordered, 0 if keys_filter is not None else 1 << 30)
    return loaded, resolved()["probe"]


def _primitive(dt: pa.DataType) -> bool:
    return (pa.types.is_integer(dt) or pa.types.is_floating(dt) or pa.types.is_temporal(dt)) \
        and dt.bit_width % 8 == 0


def _raw_values(arr: pa.Array) -> np.ndarray:
    width = arr.type.bit_width // 8
    return np.frombuffer(arr.buffers()[1], np.dtype(f"u{width}"), len(arr), arr.offset * width)


def _scatter_primitive(arrays: list[pa.Array], positions: list[np.ndarray], nslots: int) -> tuple:
    """(values, valid) per slot: parts oldest to newest, so the newest non-NULL value stays (O9)."""
    dt = arrays[0].type
    out = np.zeros(nslots, np.dtype(f"u{dt.bit_width // 8}"))
    ok = np.zeros(nslots, bool)
    for arr, pos in zip(reversed(arrays), reversed(positions)):
        vals = _raw_values(arr)
        keep = pos >= 0
        if arr.null_count:
            keep &= pc.is_valid(arr).to_numpy(zero_copy_only=False)
        if keep.all():
            out[pos] = vals
            ok[pos] = True
        else:
            rows = np.flatnonzero(keep)
            sel = pos[rows]
            out[sel] = vals[rows]
            ok[sel] = True
    return out, ok


def _primitive_array(dt: pa.DataType, values: np.ndarray, ok: np.ndarray) -> pa.Array:
    nulls = len(ok) - int(np.count_nonzero(ok))
    validity = pa.py_buffer(np.packbits(ok, bitorder="little")) if nulls else None
    return pa.Array.from_buffers(dt, len(ok), [validity, pa.py_buffer(values)], null_count=nulls)


def _scatter_any(arrays: list[pa.Array], positions: list[np.ndarray], nslots: int, take: np.ndarray | None):
    col = pa.concat_arrays(arrays)
    offsets = np.r_[0, np.cumsum([len(a) for a in arrays])].astype(np.int64)
    itype = np.int32 if offsets[-1] < 2**31 else np.int64
    valid = pc.is_valid(col).to_numpy(zero_copy_only=False)
    win = np.full(nslots, -1, itype)
    for i in reversed(range(len(arrays))):  # oldest first: newer parts overwrite
        pos = positions[i]
        rows = np.flatnonzero(valid[offsets[i]:offsets[i + 1]] & (pos >= 0))
        win[np.take(pos, rows)] = rows + offsets[i]
    if take is not None:
        win = np.where(take >= 0, np.take(win, np.maximum(take, 0)), -1) if nslots else np.full(len(take), -1, itype)
    return col.take(pa.array(win, mask=win < 0))


def merge_parts(loaded: list[_Loaded], key: str, columns: list[str], probe: pa.Array | None = None,
                ) -> tuple[pa.Array, dict[str, pa.Array]]:
    """Per column, the first non-NULL value per key in `loaded` order (newest first) wins (O9).

    Rows mapped to probe rows by the fast path keep those; the others (and every row when there is
    no probe) get a slot from one dictionary encoding of probe + their keys, chunk by chunk (no
    concatenation).  Per column the parts are scattered oldest to newest into one winner per slot.
    Returns (keys, columns): with `probe`, columns aligned to the probe rows (LEFT JOIN); without,
    one row per distinct key.  Duplicate keys inside one part raise SchemaError (O8).
    """
    slow = [x for x in loaded if x.pos is None]
    take = dictionary = None
    if slow or probe is None:
        arrays = ([probe] if probe is not None else []) + [x.keys for x in slow]
        chunks = [c for a in arrays for c in (a.chunks if isinstance(a, pa.ChunkedArray) else [a])]
        enc = pc.dictionary_encode(pa.chunked_array(chunks, pa.string()))
        dictionary = enc.chunks[-1].dictionary if enc.num_chunks else pa.array([], pa.string())
        nslots = len(dictionary)
        idx = np.concatenate([pc.fill_null(c.indices, -1).to_numpy(zero_copy_only=False) for c in enc.chunks]
                             + [np.empty(0, np.int32)])
        bounds = np.cumsum([0] + [len(a) for a in arrays])
        idx = [idx[bounds[i]:bounds[i + 1]] for i in range(len(arrays))]
        if probe is not None:
            take, idx = idx[0], idx[1:]
        for x, pos in zip(slow, idx):  # fast positions are probe rows = slots (probe keys unique, non-NULL)
            x.pos = pos
        stamp = np.empty(nslots, np.int64)
        for x in slow:
            at = _first_duplicate(x.pos, nslots, stamp)
            if at is not None:
                _raise_duplicate(dictionary[int(x.pos[at])].as_py(), x.name)
            x.keys = None
        if take is not None and np.array_equal(take, np.arange(len(take))):
            take = None  # probe keys are the first slots, in order
    else:
        nslots = len(probe)
    positions = [x.pos for x in loaded]

    def winners(name: str) -> pa.Array:
        arrays = [x.cols[name] for x in loaded]
        dt = arrays[0].type if arrays else pa.null()
        if not arrays:
            return pa.nulls(len(probe) if probe is not None else nslots, dt)
        if _primitive(dt):
            values, ok = _scatter_primitive(arrays, positions, nslots)
            if take is not None:
                hit = take >= 0
                values, ok = np.take(values, np.where(hit, take, 0)), np.take(ok, np.where(hit, take, 0)) & hit
            return _primitive_array(dt, values, ok)
        return _scatter_any(arrays, positions, nslots, take)

    out = dict(zip(columns, _map(winners, columns, sum(x.n for x in loaded))))
    return (probe if probe is not None else dictionary), out


def namespace_view(src: OverlaySource, columns: list[str] | None = None,
                   keys_filter: pa.Array | None = None) -> pa.Table:
    """O8/O9: one row per normalised key; columns = key (named `src.key`) + requested data columns."""
    columns = src.data_columns() if columns is None else [c for c in columns if c in src.data_columns()]
    keys, cols = merge_parts(_load_parts(src, columns, None, keys_filter)[0], src.key, columns)
    return pa.Table.from_arrays([keys] + [cols[c] for c in columns], [src.key] + columns)


def joined_columns(src: OverlaySource, columns: list[str], probe,
                   keys_filter: pa.Array | None = None) -> dict[str, pa.Array]:
    """O10: the namespace view LEFT JOINed onto `probe` (normalised base keys, or a callable returning
    them), aligned row for row."""
    loaded, probe = _load_parts(src, columns, probe, keys_filter)
    return merge_parts(loaded, src.key, columns, probe)[1]
