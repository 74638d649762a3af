"""Overlay discovery, metadata and part names (L5, L7, L8, M2, M3)."""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..storage.pool import pool_arange, pool_array
from ..contract import (META_NAMESPACE_CONTRACT_HASH, META_OVERLAY_CREATED_AT, META_OVERLAY_KEY,
                        META_OVERLAY_NAMESPACE, META_REGISTRY_HASH, stamp)
from ..errors import SchemaError
from ..layout import PART_GLOB, DatasetPaths

META_COMPACTED_PARTS = "usr:compacted_parts"  # X2 crash recovery: part names folded into a compact file
# Our overlay files store normalised keys clustered by their first 8 bytes in small row groups, so
# the key column's row-group min/max prune lookups of a few keys (head, get).  Only files that carry
# this marker are pruned: other writers may store raw keys whose normalised form falls outside them.
META_KEYS_CLUSTERED = "usr:keys_clustered"
OVERLAY_ROW_GROUP_ROWS = 8192


def file_metadata(schema: pa.Schema) -> dict[str, str]:
    return {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in (schema.metadata or {}).items()}


def read_file_schema(path: Path) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise SchemaError(f"Cannot read parquet file {path}: {exc}",
                          hint="The file is corrupt or truncated; restore it or remove the overlay.") from exc


@dataclass
class Part:
    path: Path
    schema: pa.Schema
    meta: dict[str, str]

    @property
    def created_at(self) -> str | None:
        return self.meta.get(META_OVERLAY_CREATED_AT)

    @property
    def rank(self) -> str:
        """O9: created_at + '\\x1f' + file name; greatest is newest."""
        return f"{self.created_at or ''}\x1f{self.path.name}"


@dataclass
class OverlaySource:
    """One namespace's overlay on disk: a compact file or a directory of parts."""

    namespace: str
    kind: str  # "compact" | "parts"
    path: Path
    parts: list[Part] = field(default_factory=list)  # for compact: one entry, the file itself

    @property
    def first(self) -> Part:
        return self.parts[0]

    @property
    def key(self) -> str | None:
        return self.first.meta.get(META_OVERLAY_KEY)

    @property
    def created_at(self) -> str | None:
        return max((p.created_at or "" for p in self.parts), default=None) or None

    @property
    def registry_hash(self) -> str | None:
        return self.first.meta.get(META_REGISTRY_HASH)

    @property
    def contract_hash(self) -> str | None:
        return self.first.meta.get(META_NAMESPACE_CONTRACT_HASH)

    def data_columns(self) -> list[str]:
        key = self.key
        seen: dict[str, None] = {}
        for p in self.parts:
            for name in p.schema.names:
                if name != key:
                    seen.setdefault(name, None)
        return list(seen)

    def column_type(self, name: str) -> pa.DataType | None:
        for p in self.parts:
            idx = p.schema.get_field_index(name)
            if idx >= 0:
                return p.schema.field(idx).type
        return None


def _load_part(path: Path) -> Part:
    schema = read_file_schema(path)
    return Part(path, schema, file_metadata(schema))


def list_part_paths(parts_dir: Path) -> list[Path]:
    if not parts_dir.is_dir():
        return []
    return sorted(p for p in parts_dir.glob(PART_GLOB) if p.is_file())


def _folded_by_compact(compact: Path, part_paths: list[Path]) -> bool:
    """Recovery rule (docs/reliability.md): an interrupted compaction left its compact file and
    some of the parts it folded.  The compact file lists them in `usr:compacted_parts`; when every
    remaining part name is listed, the compaction finished and the parts only await deletion."""
    if not part_paths or not compact.is_file():
        return False
    try:
        folded = json.loads(_load_part(compact).meta.get(META_COMPACTED_PARTS) or "null")
    except (SchemaError, ValueError):  # vanished (promoted) or unreadable: not a finished compaction
        return False
    return isinstance(folded, list) and {p.name for p in part_paths} <= set(map(str, folded))


def discover_overlays(paths: DatasetPaths) -> list[OverlaySource]:
    """L8 (sorted by name), enforcing L7 (one source per namespace) except for finished compactions."""
    derived = paths.derived
    if not derived.is_dir():
        return []
    found: dict[str, OverlaySource] = {}
    for entry in sorted(derived.iterdir(), key=lambda p: p.name):
        name = entry.name
        if name.startswith("."):
            continue
        if entry.is_file() and name.endswith(".parquet") and not name.endswith(".tmp.parquet"):
            part = _load_part(entry)
            ns = part.meta.get(META_OVERLAY_NAMESPACE) or entry.name[: -len(".parquet")]
            src = OverlaySource(ns, "compact", entry, [part])
        elif entry.is_dir():
            part_paths = list_part_paths(entry)
            if not part_paths or _folded_by_compact(derived / f"{name}.parquet", part_paths):
                continue
            parts = [_load_part(p) for p in part_paths]
            ns = parts[0].meta.get(META_OVERLAY_NAMESPACE) or name
            src = OverlaySource(ns, "parts", entry, parts)
        else:
            continue
        if ns in found:
            raise SchemaError(
                f"Namespace {ns!r} has both a compact overlay and overlay parts ({found[ns].path}, {src.path}) (L7).",
                hint=f"Remove one of them: delete {paths.compact_overlay(ns)} and rerun the compaction, "
                     "or remove the parts directory.")
        found[ns] = src
    return list(found.values())


def find_overlay(paths: DatasetPaths, ns: str) -> OverlaySource | None:
    compact, parts_dir = paths.compact_overlay(ns), paths.parts_dir(ns)
    has_compact = compact.is_file()
    part_paths = list_part_paths(parts_dir)
    if has_compact and part_paths and not _folded_by_compact(compact, part_paths):
        raise SchemaError(f"Namespace {ns!r} has both {compact.name} and parts in {parts_dir} (L7).",
                          hint=f"Remove {compact} and rerun the compaction, or remove the parts directory.")
    if has_compact:
        return OverlaySource(ns, "compact", compact, [_load_part(compact)])
    if part_paths:
        return OverlaySource(ns, "parts", parts_dir, [_load_part(p) for p in part_paths])
    return None


def new_part_name(when=None) -> str:
    """L5: part-<STAMP>-<HEX32>.parquet."""
    return f"part-{stamp(when)}-{uuid.uuid4().hex}.parquet"


def overlay_metadata(ns: str, key: str, created_at: str, registry_hash: str | None,
                     contract_hash: str | None) -> dict[str, str]:
    """M2."""
    meta = {META_OVERLAY_NAMESPACE: ns, META_OVERLAY_KEY: key, META_OVERLAY_CREATED_AT: created_at}
    if registry_hash:
        meta[META_REGISTRY_HASH] = registry_hash
    if contract_hash:
        meta[META_NAMESPACE_CONTRACT_HASH] = contract_hash
    return meta


def key_prefix(col: pa.Array) -> np.ndarray:
    """The first 8 bytes of each string key as a big-endian uint64 (integer order = byte order)."""
    from .merge import fixed_words  # merge imports this module

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


def cluster_by_key(table: pa.Table, key: str) -> pa.Table:
    """Order rows by the first 8 bytes of the key (a cheap integer sort, not a string sort)."""
    col = table.column(key).combine_chunks()
    if len(col) < 2 or not pa.types.is_string(col.type):
        return table
    from .merge import fixed_words

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
    from ..storage.atomic import atomic_path

    with atomic_path(final, tmp, label) as t:
        _write_overlay(table, key, meta, t)


def encode_overlay_file(table: pa.Table, key: str, meta: dict[str, str]) -> pa.Buffer:
    """The bytes write_overlay_file would write, built in memory."""
    sink = pa.BufferOutputStream()
    _write_overlay(table, key, meta, sink)
    return sink.getvalue()


def _write_overlay(table: pa.Table, key: str, meta: dict[str, str], where) -> None:
    from ..contract import PARQUET_COMPRESSION

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


def row_groups_with_keys(pf: pq.ParquetFile, key: str, sorted_keys: list[str]) -> list[int] | None:
    """Row groups whose key min/max may hold one of `sorted_keys`; None when statistics are unusable."""
    import bisect

    md = pf.metadata
    try:
        col_idx = pf.schema_arrow.get_field_index(key)
    except KeyError:
        return None
    keep = []
    for i in range(md.num_row_groups):
        stats = md.row_group(i).column(col_idx).statistics
        if stats is None or not stats.has_min_max:
            return None
        lo, hi = stats.min, stats.max
        if isinstance(lo, bytes):
            lo, hi = lo.decode("utf-8", "replace"), hi.decode("utf-8", "replace")
        j = bisect.bisect_left(sorted_keys, lo)
        if j < len(sorted_keys) and sorted_keys[j] <= hi:
            keep.append(i)
    return keep
