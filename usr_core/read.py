"""Dataset reads (O10-O12, T3): base batches LEFT JOIN one newest-non-null view per overlay.

The base key column is matched against each overlay view once (verified key hashes, overlays.keymatch;
one index of the base keys per read, shared by its overlays), then every base batch takes its slice of
those positions: no per-batch rehashing, base order kept.
"""
from __future__ import annotations

import itertools
import logging
import math
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .budget import base_bytes, estimate_join_bytes, memory_budget as resolve_budget, peak_bytes, range_count
from .consistency import consistent, vanished
from .contract import TOMBSTONE_COLUMNS
from .layout import DatasetPaths
from .overlays.kernel import ProbeKeys, joined_columns, namespace_view
from .overlays.keys import key_prefix, normalize_keys
from .readplan import ReadPlan, base_schema, plan_read  # noqa: F401 (base_schema: read API)
from .registry.registry import Registry


def _base_keys(plan: ReadPlan, table_or_batch, key: str):
    return normalize_keys(table_or_batch.column("id" if key == "id" else "sequence"), key, combine=key == "id")


class _Joined:
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
                if key_range is not None and key == key_range[0]:
                    probes[key] = ProbeKeys(_base_keys(plan, table(), key)), None, key_range[1]
                elif keys_filter:
                    keys = _base_keys(plan, table(), key)
                    probes[key] = ProbeKeys(keys), pc.unique(keys.drop_null()), None
                else:
                    probes[key] = ProbeKeys(lambda: _base_keys(plan, table(), key)), None, None
            return probes[key]

        for src, cols in plan.overlays:
            self.views.append((joined_columns(src, cols, *probe(src.key)), cols))
        self.deleted = None
        self.tomb = None
        if plan.tombstones is not None:
            self.tomb = joined_columns(plan.tombstones, list(TOMBSTONE_COLUMNS), *probe("id"))
            self.deleted = pc.fill_null(self.tomb["usr__deleted"], False)

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
        table = pa.Table.from_arrays([a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for a in arrays],
                                     names)
        if self.deleted is not None and not plan.include_deleted:
            table = table.filter(pc.invert(self.deleted.slice(start, n)))
        return table


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

    `ordered`: rows come in base order (the join state fits `memory_budget`); False: the scan joins one
    key range at a time (`ranges` of them) and rows come range by range, each range in base order
    (O12).  `estimated_bytes`: the expected peak of a base-order scan (budget.peak_bytes), compared with
    the budget; `join_bytes`: the join state it derives from (budget.estimate_join_bytes)."""

    def __init__(self, paths: DatasetPaths, plan: ReadPlan, budget: int, estimate: tuple[int, int],
                 batch_size: int, replan: Callable[[], ReadPlan]):
        join, base = estimate
        self.join_bytes = join
        ahead = min(_READ_AHEAD_BYTES, budget // 4)
        if join:  # read ahead (while the join runs) what the budget leaves beside the join state
            ahead = max(min(ahead, budget - peak_bytes(join, 0)), min(_MIN_READ_AHEAD_BYTES, ahead))
        self.memory_budget, self.estimated_bytes = budget, peak_bytes(join, ahead) if join else 0
        self.ranges = 1 if self.estimated_bytes <= budget else range_count(join, base, budget)
        self.ordered = self.ranges == 1
        if self.ordered:
            self._it = _scan_whole(paths, plan, replan, batch_size, ahead)
        else:
            log.info("scan of %s: join state ~%d MiB exceeds the memory budget of %d MiB; streaming %d key "
                     "ranges, rows in key-range order (O12)", paths.name, self.estimated_bytes >> 20, budget >> 20,
                     self.ranges)
            self._it = _scan_ranges(paths, plan, batch_size, self.ranges)

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
        return plan_read(paths, columns, include_overlays, include_deleted, registry)

    def prepare():
        plan = replan()
        if not (plan.overlays or plan.tombstones is not None):
            return plan, (0, 0)
        md = pq.read_metadata(paths.records)
        return plan, (estimate_join_bytes(plan, md), base_bytes(plan, md))

    plan, estimate = consistent(paths, prepare)
    return Scan(paths, plan, budget, estimate, batch_size, replan)


def _base_file(paths: DatasetPaths) -> pq.ParquetFile:
    """The base for batch iteration.  pre_buffer=False: with pre-buffering (pyarrow's default) an
    iteration keeps every row group it has read (5M rows: 450 MB held by the end of a pass)."""
    return pq.ParquetFile(paths.records, pre_buffer=False)


def _scan_whole(paths: DatasetPaths, plan: ReadPlan, replan: Callable[[], ReadPlan], batch_size: int,
                ahead_bytes: int):
    attempts = 0

    def prepare():
        nonlocal attempts, plan
        if attempts:  # a retry: the files listed by the plan may have been compacted or promoted away
            plan = replan()
        attempts += 1
        pf = _base_file(paths)  # open handles survive a later replacement of the file
        if not (plan.overlays or plan.tombstones is not None):
            return None, pf.iter_batches(batch_size=batch_size, columns=plan.base_read), [], None
        key_cols = sorted({"id" if s.key == "id" else "sequence" for s, _ in plan.overlays}
                          | ({"id"} if plan.tombstones is not None else set()))
        # the key columns are read whole for the join (while the join reads the parts), then the other
        # base columns are read ahead
        rest = [c for c in plan.base_read if c not in key_cols]
        batches = iter(())
        with ThreadPoolExecutor(1) as pool:
            keys = pool.submit(pf.read, columns=key_cols)
            if rest:
                batches = _base_file(paths).iter_batches(batch_size=batch_size, columns=rest)
                ahead = pool.submit(_read_ahead, batches, ahead_bytes)
            joined = _Joined(plan, keys, keys_filter=False)
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


def _range_key(plan: ReadPlan) -> str:
    """The key kind the ranges cut: the one with more overlay bytes (its clustered parts then read
    only a range's row groups; the other kind's files are filtered row group by row group)."""
    size = {"id": 0, "sequence": 0}
    sources = [s for s, _ in plan.overlays] + ([plan.tombstones] if plan.tombstones is not None else [])
    for src in sources:
        size["id" if src.key == "id" else "sequence"] += sum(p.path.stat().st_size for p in src.parts)
    return "sequence" if size["sequence"] > size["id"] else "id"


def _cuts(pf: pq.ParquetFile, plan: ReadPlan, key: str, ranges: int) -> list[int]:
    """Key prefixes cutting the base into `ranges` ranges of about equal rows (quantiles of the first
    64k keys of up to 16 row groups spread over the file)."""
    md = pf.metadata
    step = max(1, md.num_row_groups // 16)
    sample = [np.empty(0, np.uint64)]
    for i in range(0, md.num_row_groups, step):
        batch = next(pf.iter_batches(batch_size=1 << 16, row_groups=[i], columns=[_base_column(key)]), None)
        if batch is not None:
            sample.append(key_prefix(_base_keys(plan, batch, key)))
    prefixes = np.sort(np.concatenate(sample))
    if not len(prefixes):
        return []
    at = [prefixes[min(len(prefixes) - 1, math.floor(len(prefixes) * i / ranges))] for i in range(1, ranges)]
    return sorted({int(x) for x in at if int(x) > 0})


def _base_column(key: str) -> str:
    return "id" if key == "id" else "sequence"


def _prefetched(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """The batches, the next one decoded on a thread while the caller works on the current one."""
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(next, batches, None)
        while (batch := pending.result()) is not None:
            pending = pool.submit(next, batches, None)
            yield batch


def _spill_by_range(pf: pq.ParquetFile, plan: ReadPlan, key: str, cuts: np.ndarray, folder: Path) -> list[Path]:
    """One pass over the base: each batch's rows go to the spill file of their key range (Arrow IPC,
    uncompressed: LZ4 would double the time of the pass), in base order within a range."""
    files = [folder / f"range-{r:05d}.arrow" for r in range(len(cuts) + 1)]
    writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
    try:
        for batch in _prefetched(pf.iter_batches(batch_size=1 << 16, columns=plan.base_read)):
            rid = np.searchsorted(cuts, key_prefix(_base_keys(plan, batch, key)), side="right")
            counts = np.bincount(rid, minlength=len(files))
            grouped = batch.take(pa.array(np.argsort(rid, kind="stable")))
            start = 0
            for r in np.flatnonzero(counts):
                if r not in writers:
                    writers[r] = pa.ipc.new_stream(files[r], batch.schema)
                writers[r].write_batch(grouped.slice(start, int(counts[r])))
                start += int(counts[r])
    finally:
        for w in writers.values():
            w.close()
    return files


def _range_join(plan: ReadPlan, base: pa.Table, key: str, lo: int, hi: int | None) -> _Joined:
    """The overlays joined onto `base`, the base rows whose key prefix is in [lo, hi)."""
    return _Joined(plan, base, keys_filter=True, key_range=(key, (lo, hi)))


def _scan_ranges(paths: DatasetPaths, plan: ReadPlan, batch_size: int, ranges: int):
    """Spill the base columns by key range (one read of the base, files in the temp folder, each removed
    once its range is joined), then join range by range."""
    pf = _base_file(paths)  # the base as it was when the scan began
    key = _range_key(plan)
    cuts = _cuts(pf, plan, key, ranges)
    state = {"plan": plan}

    def build(base, lo, hi):
        try:
            return _range_join(state["plan"], base, key, lo, hi)
        except Exception as exc:
            if vanished(exc):  # a compaction or promotion replaced parts: join this range with the new files
                again = plan_read(paths, plan.out_columns, [s.namespace for s, _ in plan.overlays] or False,
                                  plan.include_deleted)
                if again.out_columns == plan.out_columns:
                    state["plan"] = again
            raise

    with tempfile.TemporaryDirectory(prefix="usr-scan-") as folder:
        files = _spill_by_range(pf, plan, key, np.array(cuts, np.uint64), Path(folder))
        for path, lo, hi in zip(files, [0] + cuts, cuts + [None]):
            if not path.exists():
                continue
            # mapped, not read: the range's batches are assembled in place (no copy of the base columns)
            with pa.memory_map(str(path)) as source:
                base = pa.ipc.open_stream(source).read_all()
            path.unlink()
            joined = consistent(paths, lambda base=base, lo=lo, hi=hi: build(base, lo, hi))
            start = 0
            for batch in base.to_batches():
                for b in joined.assemble(batch, start).to_batches(max_chunksize=batch_size):
                    if b.num_rows:
                        yield b
                start += batch.num_rows
            del base, joined


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
    pf = _base_file(paths)
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
        return _Joined(plan, base, keys_filter=True).assemble(base.combine_chunks(), 0)
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
        return _Joined(plan, base, keys_filter=True).assemble(base, 0)
    return base.select(plan.out_columns)
