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
from .files import OverlaySource, Part


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
    table = pq.read_table(part.path, columns=wanted)
    if keys_filter is not None:
        table = table.filter(pc.is_in(normalize_keys(table[key], key), value_set=keys_filter))
    return table


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


def namespace_view(src: OverlaySource, columns: list[str] | None = None,
                   keys_filter: pa.Array | None = None) -> pa.Table:
    """O8/O9: one row per normalised key; columns = key (named `src.key`) + requested data columns."""
    key = src.key
    if key is None:
        raise SchemaError(f"Overlay {src.path} is missing usr:overlay_key metadata (O11).",
                          hint="Rewrite the overlay with USR or run overlay-refresh-metadata.")
    check_key_name(key)
    columns = src.data_columns() if columns is None else [c for c in columns if c in src.data_columns()]
    if src.kind == "compact":
        if src.first.created_at is None:
            raise SchemaError(f"Overlay {src.path} is missing required created_at metadata (O8).",
                              hint="Run overlay-refresh-metadata on it.")
        table = _read_part(src.first, key, columns, keys_filter)
        keys = normalize_keys(table[key], key)
        check_unique_keys(keys, str(src.path))
        return table.set_column(0, key, keys).select([key] + columns)
    for part in src.parts:
        if part.created_at is None:
            raise SchemaError(f"Overlay part {part.path} is missing required created_at metadata (O8).",
                              hint="Remove the part or rewrite it with USR.")
    types = unify_types(src, columns)
    ordered = sorted(src.parts, key=lambda p: p.rank, reverse=True)  # newest first
    tables = []
    for part in ordered:
        t = _read_part(part, key, columns, keys_filter)
        k = normalize_keys(t[key], key)
        check_unique_keys(k, str(part.path))
        arrays = [k] + [t[c] if c in t.column_names else pa.nulls(t.num_rows, types[c]) for c in columns]
        tables.append(pa.Table.from_arrays(arrays, [key] + columns))
    return merge_newest_first(tables, key, columns)


def merge_newest_first(tables: list[pa.Table], key: str, columns: list[str]) -> pa.Table:
    """Per column, the first non-NULL value per key in `tables` order (newest first) wins."""
    if len(tables) == 1:
        t = tables[0]
        return t.filter(pc.is_valid(t[key]))
    allrows = pa.concat_tables(tables).combine_chunks()
    allrows = allrows.filter(pc.is_valid(allrows[key]))
    keys = allrows[key].chunk(0) if allrows[key].num_chunks else pa.array([], pa.string())
    uniq = pc.unique(keys)
    idx = pc.index_in(keys, value_set=uniq).to_numpy(zero_copy_only=False)
    out = [uniq]
    for name in columns:
        col = allrows[name]
        valid = pc.is_valid(col).to_numpy(zero_copy_only=False)
        rows = np.flatnonzero(valid)
        winners = np.full(len(uniq), -1, dtype=np.int64)
        if len(rows):
            first_keys, first_pos = np.unique(idx[rows], return_index=True)
            winners[first_keys] = rows[first_pos]
        take = pa.array(winners, mask=winners < 0)
        out.append(col.take(take))
    return pa.Table.from_arrays(out, [key] + columns)
