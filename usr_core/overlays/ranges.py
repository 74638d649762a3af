"""The namespace view range by range, for compaction of parts clustered by key prefix.

Parts we write keep their rows ordered by the first 8 key bytes, so the key space can be cut into
prefix ranges and each range merged on its own: memory holds one range of every part instead of
every part whole, and each row group is read once (rows past a cut wait for the next range).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..budget import row_group_bytes
from .checks import check_created_at, require_key, unify_types
from .discovery import OverlaySource, Part
from .encoding import META_KEYS_CLUSTERED, stat_prefix
from .kernel import LoadedPart, load_parts, map_parallel, merge_parts
from .keys import key_prefix, normalize_keys

RANGE_ROWS = 262144  # part rows merged at once (all parts together), at most
_POSITION_BYTES = 8  # a part row's slot
_SAMPLE_PARTS = 16  # parts whose first row group's keys place the cuts of filtered ranges


class NotClustered(Exception):
    """A part's stored keys are not normalised or not ordered: use the whole-view merge instead."""


class _Cursor:
    """Row groups of one part read in order; rows at or past the current cut are carried over."""

    def __init__(self, part: Part, key: str, columns: list[str], types: dict):
        self.part, self.key, self.types = part, key, types
        self.columns = [key] + [c for c in columns if part.schema.get_field_index(c) >= 0]
        self.all_columns = columns
        md = pq.read_metadata(part.path)  # files are opened only while read: 1,500 parts need no 1,500 handles
        idx = part.schema.get_field_index(key)
        self.groups = []  # (prefix of min, prefix of max, rows)
        for i in range(md.num_row_groups):
            st = md.row_group(i).column(idx).statistics
            if st is None or not st.has_min_max or st.null_count:
                raise NotClustered(part.path)
            self.groups.append((stat_prefix(st.min), stat_prefix(st.max), md.row_group(i).num_rows))
        if any(b[0] < a[1] for a, b in zip(self.groups, self.groups[1:])):
            raise NotClustered(part.path)
        self.next = 0
        self.carry: pa.Table | None = None

    def take(self, hi: int | None) -> LoadedPart:
        """The rows with key prefix < hi (all remaining rows when hi is None)."""
        stop = self.next
        while stop < len(self.groups) and (hi is None or self.groups[stop][0] < hi):
            stop += 1
        tables = [self.carry] if self.carry is not None else []
        if stop > self.next:
            with pq.ParquetFile(self.part.path) as pf:
                tables.append(pf.read_row_groups(range(self.next, stop), columns=self.columns))
        self.next = stop
        table = pa.concat_tables(tables) if len(tables) > 1 else (tables[0] if tables else None)
        if table is None:
            table = pa.table({c: pa.array([], pa.string() if c == self.key else self.types[c]) for c in
                              [self.key] + self.all_columns})
        stored = table.column(self.key).combine_chunks()
        if not pa.types.is_string(stored.type):
            raise NotClustered(self.part.path)
        prefix = key_prefix(stored)
        if len(prefix) > 1 and not (prefix[1:] >= prefix[:-1]).all():
            raise NotClustered(self.part.path)
        cut = len(prefix) if hi is None else int(np.searchsorted(prefix, np.uint64(hi)))
        self.carry = table.slice(cut) if cut < table.num_rows else None
        table, stored = table.slice(0, cut), stored.slice(0, cut)
        keys = normalize_keys(stored, self.key)
        if keys is not stored and not keys.equals(stored):
            raise NotClustered(self.part.path)  # a range is cut on stored keys: they must be the merged keys
        cols = {c: table[c].combine_chunks() if c in table.column_names else pa.nulls(cut, self.types[c])
                for c in self.all_columns}
        return LoadedPart(str(self.part.path), cut, cols, keys=keys)


def clustered(src: OverlaySource) -> bool:
    return src.key in ("id", "sequence") and bool(src.parts) and \
        all(p.meta.get(META_KEYS_CLUSTERED) for p in src.parts)


def _cuts(cursors: list[_Cursor], target_rows: int) -> list[int]:
    """Prefix values cutting the key space into ranges of about `target_rows` part rows."""
    groups = sorted((g[1], g[2]) for c in cursors for g in c.groups)
    cuts, acc = [], 0
    for hi, rows in groups:
        acc += rows
        if acc >= target_rows and (not cuts or hi + 1 > cuts[-1]):
            cuts.append(hi + 1)
            acc = 0
    return cuts


def view_ranges(src: OverlaySource, columns: list[str], target_rows: int) -> Iterator[pa.Table]:
    """Tables of (key + columns), one per key range in prefix order, together the namespace view (O9).

    Raises NotClustered (before or between ranges) when a part does not fit; the caller then
    discards what it wrote and merges whole parts."""
    require_key(src)
    check_created_at(src)
    types = unify_types(src, columns)
    cursors = [_Cursor(p, src.key, columns, types) for p in src.newest_first()]  # O9: newest first
    his = _cuts(cursors, target_rows) + [None]
    rows = sum(g[2] for c in cursors for g in c.groups)

    def load(hi):
        return map_parallel(lambda c: c.take(hi), cursors, rows)

    # the next range is read while this one is merged and written (a cursor reads its ranges in order)
    with ThreadPoolExecutor(1) as ahead:
        pending = ahead.submit(load, his[0])
        for i in range(len(his)):
            loaded = pending.result()
            if i + 1 < len(his):
                pending = ahead.submit(load, his[i + 1])
            keys, cols = merge_parts(loaded, src.key, columns)
            del loaded
            if not len(keys):
                continue
            prefix = key_prefix(keys)
            if (prefix[1:] < prefix[:-1]).any():  # ids come in key order already (overlays.slots)
                order = pa.array(np.argsort(prefix, kind="stable"))
                keys, cols = keys.take(order), {c: cols[c].take(order) for c in columns}
            yield pa.Table.from_arrays([keys] + [cols[c] for c in columns], [src.key] + columns)


def view_bytes(src: OverlaySource, columns: list[str]) -> tuple[int, int]:
    """(bytes, rows) of the parts: their keys and `columns` in memory (uncompressed sizes from the
    footers) plus a slot per row, what a whole-namespace merge holds before its merged columns."""
    names = {src.key, *columns}
    total = rows = 0
    for part in src.parts:
        md = pq.read_metadata(part.path)
        rows += md.num_rows
        total += md.num_rows * _POSITION_BYTES + sum(row_group_bytes(md, names))
    return total, rows


def range_rows(src: OverlaySource, columns: list[str], budget: int, peak_factor: float) -> int:
    """Part rows per range so that one range's state (about `peak_factor` times its rows' bytes) stays
    within `budget`; RANGE_ROWS at most (larger ranges merge no faster)."""
    size, rows = view_bytes(src, columns)
    per_row = max(size / max(rows, 1), 1.0)
    return int(min(RANGE_ROWS, max(1024, budget / (peak_factor * per_row))))


def filtered_ranges(src: OverlaySource, columns: list[str], ranges: int) -> Iterator[pa.Table]:
    """The namespace view in `ranges` key-prefix ranges, each merged from the rows of every part in it
    (parts read row group by row group, the other rows dropped): memory holds one range, every part is
    read once per range.  For parts not clustered by key (clustered parts use view_ranges)."""
    sample = [np.empty(0, np.uint64)]
    for part in src.newest_first()[:_SAMPLE_PARTS]:
        with pq.ParquetFile(part.path) as pf:
            if pf.metadata.num_row_groups:
                keys = normalize_keys(pf.read_row_group(0, columns=[src.key])[src.key], src.key).drop_null()
                sample.append(key_prefix(keys))
    prefixes = np.sort(np.concatenate(sample))
    cuts = sorted({int(prefixes[len(prefixes) * i // ranges]) for i in range(1, ranges)} - {0}) \
        if len(prefixes) else []
    for lo, hi in zip([0] + cuts, cuts + [None]):
        loaded, _ = load_parts(src, columns, None, None, (lo, hi))
        keys, cols = merge_parts(loaded, src.key, columns)
        del loaded
        if len(keys):
            order = pa.array(np.argsort(key_prefix(keys), kind="stable"))
            yield pa.Table.from_arrays([keys.take(order)] + [cols[c].take(order) for c in columns],
                                       [src.key] + columns)
