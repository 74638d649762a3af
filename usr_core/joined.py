"""Overlay columns LEFT JOINed onto base rows (O10): the join state of one read and how a base batch
takes its slice of it.  Shared by whole-dataset scans, key-range scans (rangescan), head and get."""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .budget import row_group_bytes
from .contract import TOMBSTONE_COLUMNS
from .layout import DatasetPaths
from .overlays.checks import keys_not_unique
from .overlays.kernel import ProbeKeys, joined_columns
from .overlays.keys import normalize_keys
from .readplan import ReadPlan
from .storage.pool import one_array


def base_keys(table_or_batch, key: str):
    return normalize_keys(table_or_batch.column(base_column(key)), key, combine=key == "id")


class Joined:
    """Overlay columns LEFT JOINed onto a set of base rows (aligned row for row)."""

    def __init__(self, plan: ReadPlan, base, keys_filter: bool, key_range: tuple | None = None):
        """`base`: the base rows (at least their key columns), or a Future of them (read meanwhile).
        `key_range` (key kind, prefix range): the base rows are those of that key range, so overlays of
        that key kind read only its part rows (no key filter needed).

        The normalised base keys of each key kind, and their hash index, are built once and shared by
        every overlay (and the tombstones) joined here; they live as long as this object."""
        self.plan = plan
        self.views = []  # (columns dict aligned with base rows, names)
        table = (lambda: base.result()) if isinstance(base, Future) else (lambda: base)
        probes: dict[str, tuple[ProbeKeys, pa.Array | None]] = {}

        def probe(key: str) -> tuple:
            if key not in probes:
                ranged = key_range is not None and key == key_range[0]
                # every base row (of the key range) is a probe row: repeats break O3 (plan_read, unique_by_join)
                repeated = (lambda: keys_not_unique(plan.paths, key)) \
                    if key != "id" and plan.o3_unique_by_join and (ranged or not keys_filter) else None
                if ranged:
                    probes[key] = ProbeKeys(base_keys(table(), key), repeated), None, key_range[1]
                elif keys_filter:
                    keys = base_keys(table(), key)
                    probes[key] = ProbeKeys(keys), pc.unique(keys.drop_null()), None
                else:
                    probes[key] = ProbeKeys(lambda: base_keys(table(), key), repeated), None, None
            return probes[key]

        for src, cols in plan.overlays:
            self.views.append((joined_columns(src, cols, *probe(src.key)), cols))
        self.deleted = None
        self.tomb = None
        if plan.tombstones is not None:
            self.tomb = joined_columns(plan.tombstones, list(TOMBSTONE_COLUMNS), *probe("id"))
            self.deleted = pc.fill_null(self.tomb["usr__deleted"], False)

    @classmethod
    def aligned(cls, plan: ReadPlan, views: list, tomb: dict | None) -> "Joined":
        """Columns joined elsewhere (rangescan), already aligned with the base rows to assemble."""
        self = cls.__new__(cls)
        self.plan, self.views, self.tomb = plan, views, tomb
        self.deleted = pc.fill_null(tomb["usr__deleted"], False) if tomb is not None else None
        return self

    def assemble(self, base: pa.Table | pa.RecordBatch, start: int) -> pa.Table:
        n = base.num_rows
        plan = self.plan
        cols: dict[str, pa.Array] = {c: base.column(c) for c in plan.base_names if c in plan.out_columns}
        for joined, names in self.views:
            for c in names:
                v = joined[c].slice(start, n)
                cols[c] = pc.coalesce(v, cols[c]) if c in cols and cols[c].type == v.type else v
        if self.tomb is not None and plan.include_deleted:
            for c in TOMBSTONE_COLUMNS:
                if c in plan.out_columns:
                    cols[c] = self.tomb[c].slice(start, n)
        arrays, names = [], []
        for c in plan.out_columns:
            if c in cols:
                arrays.append(cols[c])
            elif c in TOMBSTONE_COLUMNS:
                dt = {"usr__deleted": pa.bool_(), "usr__deleted_at": pa.timestamp("us", tz="UTC")}.get(c, pa.string())
                arrays.append(pa.nulls(n, dt))
            names.append(c)
        table = pa.Table.from_arrays([one_array(a) for a in arrays], names)
        if self.deleted is not None and not plan.include_deleted:
            table = table.filter(pc.invert(self.deleted.slice(start, n)))
        return table




def base_file(paths: DatasetPaths) -> pq.ParquetFile:
    """The base for batch iteration.  pre_buffer=False: with pre-buffering (pyarrow's default) an
    iteration keeps every row group it has read (5M rows: 450 MB held by the end of a pass)."""
    return pq.ParquetFile(paths.records, pre_buffer=False)


def base_column(key: str) -> str:
    return "id" if key == "id" else "sequence"


def prefetched(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """The batches, the next one decoded on a thread while the caller works on the current one."""
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(next, batches, None)
        while (batch := pending.result()) is not None:
            pending = pool.submit(next, batches, None)
            yield batch


def _twin(paths: DatasetPaths, md: pq.FileMetaData) -> pq.ParquetFile | None:
    """A second handle on the base, for a second decoding thread; None when the base was replaced since
    the footer `md` was read (the two handles would see different files)."""
    other = base_file(paths)
    return other if other.metadata.equals(md) else None


def read_halves(paths: DatasetPaths, pf: pq.ParquetFile, columns: list[str]) -> pa.Table:
    """`pf.read(columns)`, its row groups in two halves decoded at once on two threads (one file handle
    each: one column decodes on one core, and a read join's base key column is one column).  One read
    when there is one row group or the second handle does not see the same file."""
    md = pf.metadata
    half = md.num_row_groups // 2
    other = _twin(paths, md) if half else None
    if other is None:
        return pf.read(columns=columns)
    with ThreadPoolExecutor(1) as pool:
        second = pool.submit(other.read_row_groups, range(half, md.num_row_groups), columns=columns)
        first = pf.read_row_groups(range(half), columns=columns)
        return pa.concat_tables([first, second.result()])


_ROW_GROUP_CAP = 64 << 20  # largest row group (columns read, uncompressed) decoded two at a time


def ordered_batches(paths: DatasetPaths, pf: pq.ParquetFile, columns: list[str], batch_size: int
                    ) -> Iterator[pa.RecordBatch]:
    """The base batches of `pf` in order, two row groups decoded at once on two threads (one file handle
    each: a column's row group decodes on one core).  Falls back to one streamed pass when a row group
    is large or the second handle does not see the same file."""
    md = pf.metadata
    other = _twin(paths, md) if md.num_row_groups > 1 and max(row_group_bytes(md, set(columns))) <= _ROW_GROUP_CAP \
        else None
    if other is None:
        yield from prefetched(pf.iter_batches(batch_size=batch_size, columns=columns))
        return
    handles = [pf, other]
    with ThreadPoolExecutor(2) as pool:
        pending = [pool.submit(handles[i % 2].read_row_group, i, columns=columns) for i in range(2)]
        for i in range(md.num_row_groups):
            table = pending[i % 2].result()
            if i + 2 < md.num_row_groups:  # handle i % 2 is free again
                pending[i % 2] = pool.submit(handles[i % 2].read_row_group, i + 2, columns=columns)
            yield from table.to_batches(max_chunksize=batch_size)

