"""The newest-non-null-wins kernel (O8, O9) and key normalisation (O2).

One code path builds a namespace view for reads, compaction and materialize.  Per data column the
winner of each key is found with numpy over the key's dictionary index: rows are ordered newest
part first, NULLs dropped, and the first occurrence per key index wins.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

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


def normalize_keys(values: pa.Array | pa.ChunkedArray, key: str) -> pa.Array:
    """O2 k(v): string, trimmed, '' -> NULL; sequence_ci also uppercased."""
    if isinstance(values, pa.ChunkedArray):
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


def _duplicate_keys(keys: pa.Array) -> list:
    counts = pc.value_counts(keys.drop_null())
    dup = counts.filter(pc.greater(counts.field("counts"), 1))
    return dup.field("values").to_pylist()[:5]


def check_unique_keys(keys: pa.Array, where: str) -> None:
    if len(pc.unique(keys.drop_null())) != len(keys.drop_null()):
        raise SchemaError(f"Overlay {where} has duplicate keys: {_duplicate_keys(keys)}",
                          hint="Each key may appear once per overlay file; deduplicate the input.")


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


def _newest_first_tables(src: OverlaySource, columns: list[str], keys_filter) -> tuple[list[pa.Table], list[Part]]:
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

    def load(part: Part) -> pa.Table:
        t = _read_part(part, key, columns, keys_filter)
        arrays = [normalize_keys(t[key], key)]
        arrays += [t[c].combine_chunks() if c in t.column_names else pa.nulls(t.num_rows, types[c]) for c in columns]
        return pa.Table.from_arrays(arrays, [key] + columns)

    tables = _map(load, ordered, 0 if keys_filter is not None else 1 << 30)
    return tables, ordered


def _map(fn, items, rows: int) -> list:
    """fn over items, on two threads when the work is large (parquet, arrow and numpy release the GIL)."""
    if rows < 200_000 or len(items) < 2:
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


def _fast_positions(probe: pa.Array, part_keys: list[pa.Array]) -> list[np.ndarray] | None:
    """Each part row's probe row (-1: none) for equal-width keys (ids), via 64-bit hashes verified word by
    word; None when the keys do not fit (other widths, NULLs, repeated probe keys, a hash collision)."""
    pw, index = _probe_index(probe)
    if pw is None or not index.unique:
        return None
    width = pw.shape[1] * 8
    words = [fixed_words(k, width) for k in part_keys]
    if any(w is None for w in words):
        return None
    def one(w):
        pos = index.lookup(hash_words(w))
        hit = pos >= 0
        if hit.all():
            same = np.array_equal(np.take(pw, pos, axis=0), w)
        else:
            same = np.array_equal(np.take(pw, pos[hit], axis=0), w[hit])
        return pos if same else None

    out = _map(one, words, len(pw))
    return None if any(p is None for p in out) else out


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


def merge_kernel(tables: list[pa.Table], key: str, columns: list[str], probe: pa.Array | None = None,
                 names: list[str] | None = None) -> tuple[pa.Array, dict[str, pa.Array]]:
    """Per column, the first non-NULL value per key in `tables` order (newest first) wins (O9).

    Part rows are mapped to a key slot (a probe row for equal-width unique probe keys, else a
    dictionary index over probe + part keys); per column the parts are scattered oldest to newest
    into one winner row per slot, so the newest non-NULL cell survives.  Returns (keys, columns):
    with `probe`, columns aligned to the probe rows (LEFT JOIN); without, one row per distinct key.
    Duplicate keys inside one table raise SchemaError (O8).
    """
    lens = [t.num_rows for t in tables]
    offsets = np.r_[0, np.cumsum(lens)].astype(np.int64)
    part_keys = [t.column(key) for t in tables]
    part_keys = [(k.combine_chunks() if k.num_chunks != 1 else k.chunk(0)) if isinstance(k, pa.ChunkedArray) else k
                 for k in part_keys]
    part_keys = [k if pa.types.is_string(k.type) else k.cast(pa.string()) for k in part_keys]
    if probe is not None and not pa.types.is_string(probe.type):
        probe = probe.cast(pa.string())
    positions = _fast_positions(probe, part_keys) if probe is not None else None
    dictionary = probe_map = None
    if positions is not None:
        nkeys = len(probe)
    else:
        chunks = ([probe] if probe is not None else []) + part_keys
        all_keys = pa.concat_arrays(chunks) if chunks else pa.array([], pa.string())
        enc = pc.dictionary_encode(all_keys)
        dictionary = enc.dictionary
        nkeys = len(dictionary)
        idx = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False)
        nprobe = len(probe) if probe is not None else 0
        probe_map = idx[:nprobe]
        positions = [idx[nprobe + offsets[i]:nprobe + offsets[i + 1]] for i in range(len(tables))]
    stamp = np.empty(nkeys, np.int64)
    dups = []
    for i, pos in enumerate(positions):
        at = _first_duplicate(pos, nkeys, stamp)
        if at is not None:
            dups.append((int(pos[at]), i))
    if positions is not None and probe_map is None and probe is not None:
        # rows whose key is not in the probe: check their uniqueness per part too
        for i, (pos, k) in enumerate(zip(positions, part_keys)):
            miss = pos < 0
            if miss.any():
                rest = k.filter(pa.array(miss))
                if len(pc.unique(rest)) != len(rest):
                    vc = pc.value_counts(rest)
                    dups.append((nkeys, i, vc.filter(pc.greater(vc.field("counts"), 1)).field("values")[0].as_py()))
    if dups:
        first = min(dups)
        if len(first) == 3:
            bad = first[2]
        else:
            bad = (dictionary[first[0]] if dictionary is not None else probe[first[0]]).as_py()
        _raise_duplicate(bad, names[first[1]] if names else f"part {first[1]}")
    itype = np.int32 if offsets[-1] < 2**31 else np.int64

    def winners(name: str) -> pa.Array:
        col = pa.concat_arrays([t.column(name).combine_chunks() for t in tables]) if tables else pa.array([])
        valid = pc.is_valid(col).to_numpy(zero_copy_only=False)
        win = np.full(nkeys, -1, itype)
        for i in reversed(range(len(tables))):  # oldest first: newer parts overwrite
            pos = positions[i]
            rows = np.flatnonzero(valid[offsets[i]:offsets[i + 1]] & (pos >= 0))
            win[np.take(pos, rows)] = rows + offsets[i]
        if probe_map is not None and probe is not None:
            take = np.where(probe_map >= 0, np.take(win, np.maximum(probe_map, 0)), -1) if nkeys else \
                np.full(len(probe_map), -1, itype)
        else:
            take = win
        return col.take(pa.array(take, mask=take < 0))

    out = dict(zip(columns, _map(winners, columns, offsets[-1])))
    if probe is not None:
        keys = probe
    else:
        keys = dictionary
    return keys, out


def namespace_view(src: OverlaySource, columns: list[str] | None = None,
                   keys_filter: pa.Array | None = None) -> pa.Table:
    """O8/O9: one row per normalised key; columns = key (named `src.key`) + requested data columns."""
    columns = src.data_columns() if columns is None else [c for c in columns if c in src.data_columns()]
    tables, ordered = _newest_first_tables(src, columns, keys_filter)
    keys, cols = merge_kernel(tables, src.key, columns, names=[str(p.path) for p in ordered])
    return pa.Table.from_arrays([keys] + [cols[c] for c in columns], [src.key] + columns)


def joined_columns(src: OverlaySource, columns: list[str], probe: pa.Array,
                   keys_filter: pa.Array | None = None) -> dict[str, pa.Array]:
    """O10: the namespace view LEFT JOINed onto `probe` (normalised base keys), aligned row for row."""
    tables, ordered = _newest_first_tables(src, columns, keys_filter)
    _keys, cols = merge_kernel(tables, src.key, columns, probe=probe, names=[str(p.path) for p in ordered])
    return cols
