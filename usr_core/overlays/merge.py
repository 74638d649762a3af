"""The newest-non-null-wins kernel (O8, O9) and key normalisation (O2).

One code path builds a namespace view for reads, compaction and materialize.  Per data column the
winner of each key is found with numpy over the key's dictionary index: rows are ordered newest
part first, NULLs dropped, and the first occurrence per key index wins.
"""
from __future__ import annotations

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
    out = pc.utf8_trim_whitespace(values)
    if key == "sequence_ci":
        out = pc.utf8_upper(out)
    return pc.if_else(pc.equal(out, ""), pa.scalar(None, pa.string()), out)


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
    tables = []
    for part in ordered:
        t = _read_part(part, key, columns, keys_filter)
        arrays = [normalize_keys(t[key], key)]
        arrays += [t[c].combine_chunks() if c in t.column_names else pa.nulls(t.num_rows, types[c]) for c in columns]
        tables.append(pa.Table.from_arrays(arrays, [key] + columns))
    return tables, ordered


def merge_kernel(tables: list[pa.Table], key: str, columns: list[str], probe: pa.Array | None = None,
                 names: list[str] | None = None) -> tuple[pa.Array, dict[str, pa.Array]]:
    """Per column, the first non-NULL value per key in `tables` order (newest first) wins (O9).

    One dictionary-encode pass over (probe keys + part keys) and one stable integer sort.  Returns
    (keys, columns): with `probe`, columns aligned to the probe rows (LEFT JOIN); without, one row per
    distinct key.  Duplicate keys inside one table raise SchemaError (O8).
    """
    lens = [t.num_rows for t in tables]
    part_keys = [t.column(key) for t in tables]
    chunks = ([probe] if probe is not None else []) + [k.combine_chunks() if isinstance(k, pa.ChunkedArray) else k
                                                       for k in part_keys]
    all_keys = pa.concat_arrays([c.cast(pa.string()) for c in chunks]) if chunks else pa.array([], pa.string())
    enc = pc.dictionary_encode(all_keys)
    idx = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    nprobe = len(probe) if probe is not None else 0
    probe_idx, part_idx = idx[:nprobe], idx[nprobe:]
    part_no = np.repeat(np.arange(len(tables)), lens)
    rows = np.flatnonzero(part_idx >= 0)
    # one unique integer per row (key index, then table position): a plain quicksort groups the keys
    # and keeps newest-first order inside each group
    order = rows[np.argsort(part_idx[rows] * max(len(tables), 1) + part_no[rows])]
    ks, ps = part_idx[order], part_no[order]
    same = (ks[1:] == ks[:-1]) & (ps[1:] == ps[:-1])
    if same.any():
        at = int(np.flatnonzero(same)[0])
        bad = enc.dictionary[int(ks[at])].as_py()
        where = names[ps[at]] if names else f"part {ps[at]}"
        raise SchemaError(f"Overlay {where} has duplicate keys: {[bad]} (O8).",
                          hint="Each key may appear once per overlay file; remove or rewrite that file.")
    if len(order):
        starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
    else:
        starts = np.array([], dtype=np.int64)
    group_keys = ks[starts]
    big = np.iinfo(np.int64).max
    seq = np.arange(len(order), dtype=np.int64)
    out: dict[str, pa.Array] = {}
    for name in columns:
        col = pa.concat_arrays([t.column(name).combine_chunks() for t in tables]) if tables else pa.array([])
        valid = pc.is_valid(col).to_numpy(zero_copy_only=False)[order]
        if len(starts):
            first = np.minimum.reduceat(np.where(valid, seq, big), starts)
            winner = np.where(first < big, order[np.minimum(first, max(len(order) - 1, 0))], -1)
        else:
            winner = np.array([], dtype=np.int64)
        if probe is not None:
            by_key = np.full(len(enc.dictionary), -1, dtype=np.int64)
            by_key[group_keys] = winner
            take = np.where(probe_idx >= 0, by_key[np.maximum(probe_idx, 0)], -1)
        else:
            take = winner
        out[name] = col.take(pa.array(take, mask=take < 0))
    keys = probe if probe is not None else enc.dictionary.take(pa.array(group_keys))
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
