"""Overlay files as we write them (M2): the one metadata builder, key clustering, encoding, pruning.

Our overlay files store normalised keys clustered by their first 8 bytes in small row groups, so the
key column's row-group min/max prune lookups of a few keys (head, get).  Only files that carry
META_KEYS_CLUSTERED are pruned: other writers may store raw keys whose normalised form falls outside.
"""
from __future__ import annotations

import bisect
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..contract import (META_NAMESPACE_CONTRACT_HASH, META_OVERLAY_CREATED_AT, META_OVERLAY_KEY,
                        META_OVERLAY_NAMESPACE, META_REGISTRY_HASH, PARQUET_COMPRESSION, RESERVED_NAMESPACES)
from ..registry.registry import Registry, RegistryCache, hash_registry, namespace_contract_hash
from ..storage.atomic import atomic_path
from ..storage.pool import pool_arange, pool_array
from .keys import fixed_words, key_prefix

META_KEYS_CLUSTERED = "usr:keys_clustered"
OVERLAY_ROW_GROUP_ROWS = 8192


def overlay_metadata(ns: str, key: str, created_at: str, registry_hash: str | None,
                     contract_hash: str | None, base: dict[str, str] | None = None) -> dict[str, str]:
    """M2, the one builder: `base` (e.g. the first part's metadata on a compaction) updated with the
    namespace, key, created_at and both hashes; a hash that is None is dropped."""
    meta = dict(base or {})
    meta.update({META_OVERLAY_NAMESPACE: ns, META_OVERLAY_KEY: key, META_OVERLAY_CREATED_AT: created_at})
    for field, value in ((META_REGISTRY_HASH, registry_hash), (META_NAMESPACE_CONTRACT_HASH, contract_hash)):
        if value:
            meta[field] = value
        else:
            meta.pop(field, None)
    return meta


def registry_metadata(ns: str, key: str, created_at: str, reg: Registry,
                      base: dict[str, str] | None = None, *, cache: RegistryCache | None = None) -> dict[str, str]:
    """M2 stamped from a registry: current registry hash, and the namespace contract hash (R9; omitted
    for reserved namespaces).  `cache` (the writer's) spares re-hashing an unchanged registry."""
    if cache is None:
        contract = None if ns in RESERVED_NAMESPACES else namespace_contract_hash(reg, ns)
        return overlay_metadata(ns, key, created_at, hash_registry(reg), contract, base)
    contract = None if ns in RESERVED_NAMESPACES else cache.contract_hash(reg, ns)
    return overlay_metadata(ns, key, created_at, cache.hash(reg), contract, base)


def cluster_by_key(table: pa.Table, key: str) -> pa.Table:
    """Order rows by the first 8 bytes of the key (a cheap integer sort, not a string sort)."""
    col = table.column(key).combine_chunks()
    if len(col) < 2 or not pa.types.is_string(col.type):
        return table
    words = fixed_words(col, None)
    if words is not None:
        prefix = pool_array(len(words), np.uint64)
        np.copyto(prefix, words[:, 0])
        prefix.byteswap(inplace=True)  # big-endian: integer order is byte order
    else:
        prefix = key_prefix(col)
    if (prefix[1:] >= prefix[:-1]).all():
        return table
    order = np.argsort(prefix)  # ties (equal prefixes) may land in any order
    arrays = []
    for name, c in zip(table.column_names, table.columns):
        if name == key and words is not None:  # equal-width keys move as fixed-size rows, not as strings
            rows = pool_array(words.size, np.uint64).reshape(words.shape)
            np.take(words, order, axis=0, out=rows)
            offsets = pool_arange(len(col) + 1, np.int32, words.shape[1] * 8)
            arrays.append(pa.Array.from_buffers(pa.string(), len(col), [None, pa.py_buffer(offsets),
                                                                        pa.py_buffer(rows)]))
        else:
            arrays.append(c.combine_chunks().take(order))  # ChunkedArray.take is slower
    return pa.Table.from_arrays(arrays, schema=table.schema)


def write_overlay_file(final: Path, table: pa.Table, key: str, meta: dict[str, str], *, tmp: Path,
                       label: str) -> None:
    """Write an overlay file (compact or part) with normalised keys, clustered for row-group pruning."""
    with atomic_path(final, tmp, label) as t:
        _write_overlay(table, key, meta, t)


def encode_overlay_file(table: pa.Table, key: str, meta: dict[str, str]) -> pa.Buffer:
    """The bytes write_overlay_file would write, built in memory."""
    sink = pa.BufferOutputStream()
    _write_overlay(table, key, meta, sink)
    return sink.getvalue()


def _write_overlay(table: pa.Table, key: str, meta: dict[str, str], where) -> None:
    table = cluster_by_key(table, key)
    merged = dict(table.schema.metadata or {})
    merged.update({k.encode(): v.encode() for k, v in {**meta, META_KEYS_CLUSTERED: "prefix8"}.items()})
    pq.write_table(table.replace_schema_metadata(merged), where, compression=PARQUET_COMPRESSION,
                   row_group_size=OVERLAY_ROW_GROUP_ROWS, use_dictionary=dictionary_columns(table.schema, key))


def dictionary_columns(schema: pa.Schema, key: str) -> list[str]:
    """Dictionary-encode only top-level string data columns: keys are unique and float values rarely
    repeat, so a dictionary there costs write and read time and makes the file larger."""
    return [f.name for f in schema if f.name != key and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
                                                         or pa.types.is_dictionary(f.type))]


def key_stats(pf: pq.ParquetFile, key: str) -> list[tuple] | None:
    """(min, max) of the key column per row group; None when the column or any statistics are missing."""
    md = pf.metadata
    col_idx = pf.schema_arrow.get_field_index(key)
    if col_idx < 0:
        return None
    out = []
    for i in range(md.num_row_groups):
        stats = md.row_group(i).column(col_idx).statistics
        if stats is None or not stats.has_min_max:
            return None
        out.append((stats.min, stats.max))
    return out


def row_groups_in_range(pf: pq.ParquetFile, key: str, prefix_range: tuple) -> list[int] | None:
    """Row groups whose key min/max prefixes (first 8 bytes, big-endian) overlap [lo, hi); None when
    statistics are unusable."""
    lo, hi = prefix_range
    stats = key_stats(pf, key)
    if stats is None:
        return None
    return [i for i, (gmin, gmax) in enumerate(stats)
            if stat_prefix(gmax) >= lo and (hi is None or stat_prefix(gmin) < hi)]


def stat_prefix(value) -> int:
    raw = value if isinstance(value, bytes) else str(value).encode()
    return int.from_bytes(raw[:8].ljust(8, b"\0"), "big")


def row_groups_with_keys(pf: pq.ParquetFile, key: str, sorted_keys: list[str]) -> list[int] | None:
    """Row groups whose key min/max may hold one of `sorted_keys`; None when statistics are unusable."""
    stats = key_stats(pf, key)
    if stats is None:
        return None
    keep = []
    for i, (lo, hi) in enumerate(stats):
        if isinstance(lo, bytes):
            lo, hi = lo.decode("utf-8", "replace"), hi.decode("utf-8", "replace")
        j = bisect.bisect_left(sorted_keys, lo)
        if j < len(sorted_keys) and sorted_keys[j] <= hi:
            keep.append(i)
    return keep
