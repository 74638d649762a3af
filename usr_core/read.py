"""Dataset reads (O10-O12, T3): base batches LEFT JOIN one newest-non-null view per overlay.

The base key column is matched against each overlay view once (verified key hashes, overlays.keymatch;
one index of the base keys per read, shared by its overlays), then every base batch takes its slice of
those positions: no per-batch rehashing, base order kept.
"""
from __future__ import annotations

import itertools
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .budget import estimate_join_bytes, memory_budget as resolve_budget, peak_bytes, range_count
from .consistency import consistent
from .joined import Joined, base_file, read_halves
from .layout import DatasetPaths
from .overlays.kernel import namespace_view
from .overlays.keys import normalize_keys
from .rangescan import RANGES_AT_ONCE, scan_ranges
from .readplan import ReadPlan, base_schema, plan_read  # noqa: F401 (base_schema: read API)
from .registry.registry import Registry


_READ_AHEAD_BYTES = 256 << 20
_MIN_READ_AHEAD_BYTES = 32 << 20
log = logging.getLogger(__name__)


def _read_ahead(batches: Iterator[pa.RecordBatch], budget: int) -> list[pa.RecordBatch]:
    got, size = [], 0
    for batch in batches:
        got.append(batch)
        size += batch.nbytes
        if size >= budget:
            break
    return got


class Scan:
    """The batches of one scan (an iterator), and how it streams.

    Rows always come in base order (`ordered`).  `ranges`: 1 when the join state fits `memory_budget`
    (one join, base batches stream past it); more when it does not: the scan joins one key range at a
    time and spills the merged columns (rangescan).  `estimated_bytes`: the expected peak of a one-join
    scan (budget.peak_bytes), compared with the budget; `join_bytes`: the join state it derives from
    (budget.estimate_join_bytes)."""

    def __init__(self, paths: DatasetPaths, plan: ReadPlan, budget: int, estimate: int,
                 batch_size: int, replan: Callable[[], ReadPlan]):
        self.join_bytes = join = estimate
        ahead = min(_READ_AHEAD_BYTES, budget // 4)
        if join:  # read ahead (while the join runs) what the budget leaves beside the join state
            ahead = max(min(ahead, budget - peak_bytes(join, 0)), min(_MIN_READ_AHEAD_BYTES, ahead))
        self.memory_budget, self.estimated_bytes = budget, peak_bytes(join, ahead) if join else 0
        self.ranges = 1 if self.estimated_bytes <= budget else range_count(join, budget, RANGES_AT_ONCE)
        self.ordered = True
        if self.ranges == 1:
            self._it = _scan_whole(paths, plan, replan, batch_size, ahead)
        else:
            log.info("scan of %s: join state ~%d MiB exceeds the memory budget of %d MiB; joining %d key "
                     "ranges one at a time", paths.name, self.estimated_bytes >> 20, budget >> 20, self.ranges)
            self._it = scan_ranges(paths, plan, batch_size, self.ranges)

    def __iter__(self):
        return self

    def __next__(self) -> pa.RecordBatch:
        return next(self._it)

    def close(self) -> None:
        """Stop early: a ranged scan removes its spill files now."""
        self._it.close()


def scan(paths: DatasetPaths, *, columns=None, include_overlays=True, include_deleted=False,
         batch_size: int = 65536, registry: Registry | None = None, memory_budget=None) -> Scan:
    """O10/O12: merged batches; peak memory bounded by `memory_budget` (budget.memory_budget)."""
    budget = resolve_budget(memory_budget)

    def replan() -> ReadPlan:
        return plan_read(paths, columns, include_overlays, include_deleted, registry, unique_by_join=True)

    def prepare():
        plan = replan()
        if not (plan.overlays or plan.tombstones is not None):
            return plan, 0
        return plan, estimate_join_bytes(plan, pq.read_metadata(paths.records))

    plan, estimate = consistent(paths, prepare)
    return Scan(paths, plan, budget, estimate, batch_size, replan)


def _scan_whole(paths: DatasetPaths, plan: ReadPlan, replan: Callable[[], ReadPlan], batch_size: int,
                ahead_bytes: int):
    attempts = 0

    def prepare():
        nonlocal attempts, plan
        if attempts:  # a retry: the files listed by the plan may have been compacted or promoted away
            plan = replan()
        attempts += 1
        pf = base_file(paths)  # open handles survive a later replacement of the file
        if not (plan.overlays or plan.tombstones is not None):
            return None, pf.iter_batches(batch_size=batch_size, columns=plan.base_read), [], None
        key_cols = plan.key_columns
        # the key columns are read whole for the join (while the join reads the parts), then the other
        # base columns are read ahead.  Sequences decode for long on one core: in two halves on two (ids
        # decode in a tenth of the time, and two halves only hold more at once)
        rest = [c for c in plan.base_read if c not in key_cols]
        batches = iter(())
        with ThreadPoolExecutor(1) as pool:
            if "sequence" in key_cols:
                keys = pool.submit(read_halves, paths, pf, key_cols)
            else:
                keys = pool.submit(pf.read, columns=key_cols)
            if rest:
                batches = base_file(paths).iter_batches(batch_size=batch_size, columns=rest)
                ahead = pool.submit(_read_ahead, batches, ahead_bytes)
            joined = Joined(plan, keys, keys_filter=False)
            keys = keys.result()
            ahead = ahead.result() if rest else []
        if not rest:
            batches = (keys.slice(i, batch_size) for i in range(0, keys.num_rows, batch_size))
        return keys if rest else None, batches, ahead, joined

    keys, batches, ahead, joined = consistent(paths, prepare)
    start = 0
    for batch in itertools.chain(ahead, batches):
        n = batch.num_rows
        if keys is not None:
            cols = {name: batch.column(name) for name in batch.schema.names}
            cols.update({name: keys.column(name).slice(start, n) for name in keys.column_names})
            batch = pa.table(cols)
        if joined is None:
            out = pa.Table.from_batches([batch]).select(plan.out_columns)
        else:
            out = joined.assemble(batch, start)
        start += n
        for b in out.to_batches():
            if b.num_rows:
                yield b


def read_table(paths: DatasetPaths, **kwargs) -> pa.Table:
    batches = consistent(paths, lambda: list(scan(paths, **kwargs)))
    if batches:
        return pa.Table.from_batches(batches)
    plan_schema = output_schema(paths, kwargs.get("columns"), kwargs.get("include_overlays", True),
                                kwargs.get("include_deleted", False))
    return plan_schema.empty_table()


def output_schema(paths: DatasetPaths, columns=None, include_overlays=True, include_deleted=False) -> pa.Schema:
    """The merged schema without reading data (types from file footers)."""
    return consistent(paths, lambda: _output_schema(paths, columns, include_overlays, include_deleted))


def _output_schema(paths, columns, include_overlays, include_deleted) -> pa.Schema:
    plan = plan_read(paths, columns, include_overlays, include_deleted)
    schema = base_schema(paths)
    types = {f.name: f.type for f in schema}
    for src, cols in plan.overlays:
        for c in cols:
            types.setdefault(c, src.column_type(c))
    tomb_types = {"usr__deleted": pa.bool_(), "usr__deleted_at": pa.timestamp("us", tz="UTC"),
                  "usr__deleted_reason": pa.string()}
    return pa.schema([(c, types.get(c) or tomb_types[c]) for c in plan.out_columns])


def head(paths: DatasetPaths, n: int = 10, *, columns=None, include_overlays=True, include_deleted=False,
         registry: Registry | None = None) -> pa.Table:
    """O12: the first n visible rows in base order, reading only as many base batches as needed."""
    return consistent(paths, lambda: _head(paths, n, columns, include_overlays, include_deleted, registry))


def _head(paths, n, columns, include_overlays, include_deleted, registry) -> pa.Table:
    plan = plan_read(paths, columns, include_overlays, include_deleted, registry)
    pf = base_file(paths)
    hidden = None
    if plan.tombstones is not None and not include_deleted:  # the tombstone file is small: hide rows first
        tv = namespace_view(plan.tombstones, ["usr__deleted"])
        hidden = tv.column(0).filter(pc.fill_null(tv["usr__deleted"], False))
    batches, got = [], 0
    for batch in pf.iter_batches(batch_size=max(1024, min(65536, n)), columns=plan.base_read):
        if hidden is not None and len(hidden):
            batch = batch.filter(pc.invert(pc.is_in(normalize_keys(batch.column("id"), "id"), value_set=hidden)))
        batches.append(batch)
        got += batch.num_rows
        if got >= n:
            break
    if not batches:
        return output_schema(paths, columns, include_overlays, include_deleted).empty_table()
    # overlays are joined for exactly the rows returned: their row groups are pruned by key statistics
    return _head_join(plan, pa.Table.from_batches(batches).slice(0, n))


def _head_join(plan: ReadPlan, base: pa.Table) -> pa.Table:
    if plan.overlays or plan.tombstones is not None:
        return Joined(plan, base, keys_filter=True).assemble(base.combine_chunks(), 0)
    return base.select(plan.out_columns)


def get_rows(paths: DatasetPaths, ids: list[str], *, columns=None, include_deleted=False,
             include_overlays=True) -> pa.Table:
    """Rows for the given ids (any order), using a filtered base read."""
    return consistent(paths, lambda: _get_rows(paths, ids, columns, include_deleted, include_overlays))


def _get_rows(paths, ids, columns, include_deleted, include_overlays) -> pa.Table:
    plan = plan_read(paths, columns, include_overlays, include_deleted)
    read_cols = list(dict.fromkeys(plan.base_read + ["id"]))
    base = pq.read_table(paths.records, columns=read_cols, filters=pc.field("id").isin(ids))
    if plan.overlays or plan.tombstones is not None:
        return Joined(plan, base, keys_filter=True).assemble(base, 0)
    return base.select(plan.out_columns)
