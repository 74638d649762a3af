"""A full scan over the memory budget (issue 15), still in base order.

When the join state of a whole-dataset scan does not fit the budget (budget.py), the key space is cut
into prefix ranges and joined one range at a time, in three passes:

1. the base key columns, with each row's number, are spilled to one Arrow file per key range;
2. each range is joined on its own (clustered parts read only that range's row groups) and its
   merged overlay columns, with the row numbers, go to one file per range;
3. the base is streamed in order: each batch takes its rows from every range's file (all read in
   row order, so each file is read once, front to back) and is assembled as in a whole scan.

Only the key columns and the merged overlay columns are spilled, never the other base columns, so
the spill is small beside the base and rows keep base order.  Files live in a temporary folder
(`$TMPDIR`) removed when the scan ends or is closed.
"""
from __future__ import annotations

import math
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .consistency import consistent, vanished
from .contract import TOMBSTONE_COLUMNS
from .errors import SequencesError, environment_failure
from .joined import Joined, base_column, base_file, base_keys, ordered_batches, prefetched
from .layout import DatasetPaths
from .overlays.checks import check_sequence_keys
from .overlays.keys import key_prefix
from .overlays.winners import take_rows
from .readplan import ReadPlan, plan_read

ROW = "__usr_row"  # the base row number carried through the spill files
RANGES_AT_ONCE = 2  # ranges joined at the same time (budget.range_count sizes ranges for this many)
_SPILL_BATCH_BYTES = 4 << 20  # merged rows per spilled batch: about this many bytes (a cursor holds one)


def range_key(plan: ReadPlan) -> str:
    """The key kind the ranges cut: the one with more overlay bytes (its clustered parts then read
    only a range's row groups; the other kind's files are filtered row group by row group)."""
    size = {"id": 0, "sequence": 0}
    sources = [s for s, _ in plan.overlays] + ([plan.tombstones] if plan.tombstones is not None else [])
    for src in sources:
        size["id" if src.key == "id" else "sequence"] += sum(p.path.stat().st_size for p in src.parts)
    return "sequence" if size["sequence"] > size["id"] else "id"


def range_cuts(pf: pq.ParquetFile, plan: ReadPlan, key: str, ranges: int) -> list[int]:
    """Key prefixes cutting the base into `ranges` ranges of about equal rows (quantiles of the first
    64k keys of up to 16 row groups spread over the file)."""
    md = pf.metadata
    step = max(1, md.num_row_groups // 16)
    sample = [np.empty(0, np.uint64)]
    for i in range(0, md.num_row_groups, step):
        batch = next(pf.iter_batches(batch_size=1 << 16, row_groups=[i], columns=[base_column(key)]), None)
        if batch is not None:
            sample.append(key_prefix(base_keys(batch, key)))
    prefixes = np.sort(np.concatenate(sample))
    if not len(prefixes):
        return []
    at = [prefixes[min(len(prefixes) - 1, math.floor(len(prefixes) * i / ranges))] for i in range(1, ranges)]
    return sorted({int(x) for x in at if int(x) > 0})


def _spill_keys(pf: pq.ParquetFile, plan: ReadPlan, key: str, cuts: np.ndarray, folder: Path) -> list[Path]:
    """One pass over the base key columns: each row (keys and row number) goes to the file of its key
    range (Arrow IPC, uncompressed), in base order within a range."""
    files = [folder / f"keys-{r:05d}.arrow" for r in range(len(cuts) + 1)]
    writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
    start = 0
    try:
        for batch in prefetched(pf.iter_batches(batch_size=1 << 16, columns=plan.key_columns)):
            rid = np.searchsorted(cuts, key_prefix(base_keys(batch, key)), side="right")
            counts = np.bincount(rid, minlength=len(files))
            order = np.argsort(rid.astype(np.uint16) if len(files) <= 1 << 16 else rid, kind="stable")
            grouped = pa.RecordBatch.from_arrays([take_rows(c, order) for c in batch.columns] + [pa.array(order + start)],
                                                 batch.schema.names + [ROW])
            at = 0
            for r in np.flatnonzero(counts):
                if r not in writers:
                    writers[r] = pa.ipc.new_stream(files[r], grouped.schema)
                writers[r].write_batch(grouped.slice(at, int(counts[r])))
                at += int(counts[r])
            start += batch.num_rows
    finally:
        for w in writers.values():
            w.close()
    return files


def _merged_table(joined: Joined, rows: pa.Array) -> pa.Table:
    """The row numbers and the joined columns (overlays, then tombstones) of one range."""
    cols, names = [rows], [ROW]
    for view, view_names in joined.views:
        cols += [view[c] for c in view_names]
        names += list(view_names)
    if joined.tomb is not None:
        cols += [joined.tomb[c] for c in TOMBSTONE_COLUMNS]
        names += list(TOMBSTONE_COLUMNS)
    return pa.Table.from_arrays(cols, names)


def _write_merged(table: pa.Table, path: Path) -> None:
    rows = max(1024, min(1 << 16, _SPILL_BATCH_BYTES * max(table.num_rows, 1) // max(table.nbytes, 1)))
    with pa.ipc.new_stream(path, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=rows):
            writer.write_batch(batch)


class _Cursor:
    """One range's merged rows, read front to back: `until(end)` gives those with row number < end."""

    def __init__(self, path: Path):
        self._file = pa.OSFile(str(path))
        self._reader = pa.ipc.open_stream(self._file)
        self._batch: pa.RecordBatch | None = None
        self._rows = np.empty(0, np.int64)
        self._done = False

    def until(self, end: int) -> list[pa.RecordBatch]:
        out = []
        while not self._done:
            if self._batch is None:
                try:
                    self._batch = self._reader.read_next_batch()
                except StopIteration:
                    self._done = True
                    self.close()
                    break
                self._rows = self._batch.column(0).to_numpy()
            k = int(np.searchsorted(self._rows, end))
            if k == len(self._rows):
                out.append(self._batch)
                self._batch = None
                continue
            if k:
                out.append(self._batch.slice(0, k))
                self._batch, self._rows = self._batch.slice(k), self._rows[k:]
            break
        return out

    def close(self) -> None:
        self._file.close()


def _aligned(plan: ReadPlan, pieces: list[pa.RecordBatch], schema: pa.Schema, start: int, n: int) -> Joined:
    """The merged rows start..start+n-1 gathered from the ranges' pieces, as a Joined over those rows."""
    table = pa.Table.from_batches(pieces, schema).combine_chunks()
    rows = table.column(ROW).to_numpy()
    order = np.argsort(rows, kind="stable")
    if len(rows) != n or (len(rows) and (rows[order[0]] != start or rows[order[-1]] != start + n - 1)):
        raise SequencesError(f"Internal error: a ranged scan gathered {len(rows)} merged rows for base rows "
                       f"{start}..{start + n - 1}.", hint="Report this; read with a larger memory_budget meanwhile.")
    cols = {name: take_rows(table.column(name).chunk(0), order) for name in table.column_names}  # one chunk each
    views = [({c: cols[c] for c in names}, names) for _, names in plan.overlays]
    tomb = {c: cols[c] for c in TOMBSTONE_COLUMNS} if plan.tombstones is not None else None
    return Joined.aligned(plan, views, tomb)


def scan_ranges(paths: DatasetPaths, plan: ReadPlan, batch_size: int, ranges: int) -> Iterator[pa.RecordBatch]:
    """The merged batches in base order, joined `ranges` key ranges at a time (module docstring)."""
    pf = base_file(paths)  # the base as it was when the scan began
    key = range_key(plan)
    if plan.o3_unique_by_join:  # each range's join checks its own key kind; a key kind it does not cut by
        for other in {s.key for s, _ in plan.overlays} - {"id", key}:  # may repeat across ranges
            check_sequence_keys(paths, other, plan.o3_passed)
    cuts = range_cuts(pf, plan, key, ranges)
    state = {"plan": plan}

    def build(keys: pa.Table, lo: int, hi: int | None) -> Joined:
        try:
            return Joined(state["plan"], keys, keys_filter=True, key_range=(key, (lo, hi)))
        except Exception as exc:
            if vanished(exc):  # a compaction or promotion replaced parts: join this range with the new files
                again = plan_read(paths, plan.out_columns, [s.namespace for s, _ in plan.overlays] or False,
                                  plan.include_deleted, unique_by_join=plan.o3_unique_by_join)
                if again.out_columns == plan.out_columns:
                    state["plan"] = again
            raise

    def join_range(path: Path, lo: int, hi: int | None) -> tuple[Path, pa.Schema] | None:
        """Join one range and spill its merged columns, in row order; None when the range is empty."""
        if not path.exists():
            return None
        with pa.memory_map(str(path)) as source:  # mapped: the range's keys are not copied
            keys = pa.ipc.open_stream(source).read_all()
        path.unlink()
        table = _merged_table(consistent(paths, lambda: build(keys, lo, hi)), keys.column(ROW).combine_chunks())
        out = path.with_name(path.name.replace("keys-", "merged-"))
        _write_merged(table, out)
        return out, table.schema

    with tempfile.TemporaryDirectory(prefix="usr-scan-") as folder:
        try:
            files = _spill_keys(pf, plan, key, np.array(cuts, np.uint64), Path(folder))
            with ThreadPoolExecutor(RANGES_AT_ONCE) as pool:  # two ranges joined at once: both cores busy
                done = [r for r in pool.map(join_range, files, [0] + cuts, cuts + [None]) if r is not None]
        except OSError as exc:
            failure = environment_failure(exc, f"A scan over its memory budget cannot spill to {folder}")
            if failure is None:
                raise
            spill = (f"{failure.hint} The spill of a scan over budget needs about the size of the key columns "
                     "and the merged overlay columns: point TMPDIR at a larger disk, or")
            failure.hint = f"{spill} give the scan a larger memory_budget."
            failure.cli_hint = f"{spill} set USR_MEMORY_BUDGET higher."
            raise failure from exc
        merged = [p for p, _ in done]
        schema = done[0][1] if done else None
        cursors = [_Cursor(p) for p in merged]
        try:
            start = 0
            for batch in ordered_batches(paths, pf, plan.base_read, batch_size):
                n = batch.num_rows
                if not n:
                    continue
                pieces = [piece for c in cursors for piece in c.until(start + n)]
                out = _aligned(plan, pieces, schema, start, n).assemble(batch, 0)
                start += n
                for b in out.to_batches():
                    if b.num_rows:
                        yield b
        finally:
            for c in cursors:
                c.close()
