"""Compute a namespace (or one shard of it) in any process: a Dagster step, a Celery worker, a Pipes subprocess on a
GPU node or an HPC job. Dagster-free: the external side imports only usr_core (and `dagster_pipes`, the protocol's
light package, inside `pipes_main` only).

- `shard_of(ids, shards)`: the stable shard of each record id (a content hash of the id: the same in every
  process, platform and Python version, unlike `hash()`);
- `pending_batches(...)`: the visible rows of a shard that have no row in a file carrying the caller's
  bookkeeping (key/values such as the code version), streamed from `Dataset.scan` in bounded batches;
- `compute_namespace(...)`: call a function on those batches and write one part per batch as it goes;
- `pipes_main(fn)`: the whole external side of Dagster Pipes in one call.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import content
from . import read as rd
from .dataset import Dataset
from .inspect import overlay_files, overlay_keys, rows_missing_from, version_of_rows
from .overlays.discovery import OverlaySource, find_overlay
from .overlays.kernel import namespace_view
from .registry.registry import load_registry
from .registry.types import parse_type
from .replace import replace_overlay
from .results import PartWritten

SHARD_KEY = "dagster/shard"  # extra part metadata "<shard>/<shards>" (informative; not part of the bookkeeping)
DEFAULT_BATCH = 65536


def shard_of(ids, shards: int) -> np.ndarray:
    """Shard (0..shards-1) of each id: the 64-bit content hash of the id string (usr_core.content), modulo."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}.")
    arr = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    if shards == 1 or len(arr) == 0:
        return np.zeros(len(arr), np.int64)
    h, _ = content.hash_array(arr.cast(pa.string()))
    return (h % np.uint64(shards)).astype(np.int64)


def shard_mask(ids, shard: int | None, shards: int) -> np.ndarray:
    if shard is None or shards <= 1:
        return np.ones(len(ids), bool)
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is outside 0..{shards - 1}.")
    return shard_of(ids, shards) == shard


def current_files(ds, namespace: str, bookkeeping: dict[str, str], files=None):
    """The namespace's overlay files whose caller metadata holds every key/value of `bookkeeping`."""
    files = overlay_files(ds, namespace) if files is None else files
    return [f for f in files if all(f.extra.get(k) == v for k, v in bookkeeping.items())]


def fold_to_current(ds, namespace: str, bookkeeping: dict[str, str], *, actor=None, event_args=None):
    """Once every visible row has a row in a current file (the last shard or batch of a recomputation after a code,
    column or input change), replace the overlay by the view of the current files alone: readers then see exactly
    the new output, NULLs included, and no stale file is left for compaction to mix in. Returns what was written,
    None while rows are pending or when no stale file exists. (A part written by a concurrent run between the read
    and the replacement is dropped; its rows are pending again and the next run computes them.)"""
    def current_view() -> pa.Table | None:  # retried when a compaction removes files read here
        files = overlay_files(ds, namespace)
        current = current_files(ds, namespace, bookkeeping, files)
        if not current or len(current) == len(files):
            return None
        if rows_missing_from(ds, current, key="id", columns=[]).num_rows:
            return None
        keep = {f.path for f in current}
        src = find_overlay(ds.paths, namespace)
        return namespace_view(OverlaySource(src.namespace, src.kind, src.path,
                                            [p for p in src.parts if p.path in keep]))

    view = rd.consistent(ds.paths, current_view)
    if view is None:
        return None
    return replace_overlay(ds, namespace, view, key="id", actor=actor, event_args=event_args,
                           extra_metadata=bookkeeping)


def _check_key(key: str) -> None:
    if key != "id":
        raise ValueError(f"Sharded, batch-wise and external namespaces are keyed by record id (key='id'), got "
                         f"key={key!r}: compute the sequence-keyed namespace in one process (no shards/batch_size).")


def pending_batches(ds, namespace: str, *, columns: list[str], bookkeeping: dict[str, str], shard: int | None = None,
                    shards: int = 1, batch_size: int | None = DEFAULT_BATCH, full_refresh: bool = False,
                    inputs=()) -> Iterator[pa.Table]:
    """The visible rows (tombstoned hidden) of `shard` whose id has no row in a current file (all of them with
    `full_refresh`), with `id` + `columns` (+ the `inputs` namespaces' columns when listed in `columns`), in tables
    of about `batch_size` rows (None: one table). Memory is bounded by the batch, plus the ids already computed."""
    def computed_ids():  # retried when a compaction removes the files listed here
        files = current_files(ds, namespace, bookkeeping)
        return overlay_keys(files).combine_chunks() if files else None

    done = None if full_refresh else rd.consistent(ds.paths, computed_ids)
    cols = list(dict.fromkeys(["id", *columns]))
    size = batch_size or DEFAULT_BATCH
    held, rows = [], 0
    for batch in ds.scan(columns=cols, include_overlays=list(inputs) or False, batch_size=size):
        keep = shard_mask(batch.column("id"), shard, shards)
        if done is not None and len(done):
            keep &= ~pc.fill_null(pc.is_in(batch.column("id"), value_set=done), False).to_numpy(zero_copy_only=False)
        if not keep.any():
            continue
        held.append(pa.Table.from_batches([batch]).filter(pa.array(keep)))
        rows += held[-1].num_rows
        if batch_size and rows >= batch_size:
            yield pa.concat_tables(held).combine_chunks()
            held, rows = [], 0
    if held:
        yield pa.concat_tables(held).combine_chunks()


def namespace_columns(root, namespace: str) -> list[dict]:
    entry = (load_registry(root, required=True) or {}).get(namespace)
    if not entry:
        raise ValueError(f"Namespace {namespace!r} is not registered; register it first "
                         f"(`usr namespace register {namespace} --columns ...`).")
    return [dict(c) for c in entry["columns"]]


def conform_columns(table: pa.Table, namespace: str, columns: list[dict]) -> pa.Table:
    """`id` + the registered columns, cast to their registry types (pandas gives int64/double)."""
    missing = [c for c in ["id", *(c["name"] for c in columns)] if c not in table.column_names]
    if missing:
        raise ValueError(f"Namespace {namespace!r}: the function's result lacks columns {missing}; return `id` and "
                         "every declared column, named <ns>__<field>.")
    out = {"id": table.column("id").cast(pa.string())}
    for c in columns:
        col, target = table.column(c["name"]), parse_type(c["type"])
        out[c["name"]] = col if col.type == target else col.cast(target)
    return pa.table(out)


@dataclass(frozen=True)
class Computed:
    """What one computation did: rows the function was called with, parts written, the slice's content version."""

    namespace: str
    rows_input: int
    parts: list[PartWritten] = field(default_factory=list)
    version: str | None = None

    @property
    def rows_written(self) -> int:
        return sum(p.rows for p in self.parts)


def compute_namespace(ds, namespace: str, fn: Callable[[pa.Table], pa.Table], *, columns: list[str],
                      bookkeeping: dict[str, str], key: str = "id", shard: int | None = None, shards: int = 1,
                      batch_size: int | None = None, full_refresh: bool = False, inputs=(), actor=None,
                      event_args=None, log=None) -> Computed:
    """Call `fn` on the pending rows of the shard (one call, or one per batch of `batch_size` rows) and write
    each result as a part carrying `bookkeeping` (so the next run skips these rows), then return what happened
    with the content version of the shard as readers see it. `fn` returns `id` + the declared columns (a pyarrow
    Table or a pandas DataFrame)."""
    _check_key(key)
    ns_cols = namespace_columns(ds.root, namespace)
    extra = dict(bookkeeping)
    if shard is not None and shards > 1:
        extra[SHARD_KEY] = f"{shard}/{shards}"
    rows_input, parts = 0, []
    for table in pending_batches(ds, namespace, columns=columns, bookkeeping=bookkeeping, shard=shard,
                                 shards=shards, batch_size=batch_size, full_refresh=full_refresh, inputs=inputs):
        rows_input += table.num_rows
        out = conform_columns(_to_arrow(fn(table)), namespace, ns_cols)
        if out.num_rows:
            parts.append(ds.write_part(namespace, out, key="id", actor=actor, event_args=event_args,
                                       extra_metadata=extra))
            pa.default_memory_pool().release_unused()  # keep the peak at one batch: hand freed pages back
            if log:
                log(f"{ds.name}/{namespace}{_label(shard, shards)}: wrote {out.num_rows} row(s) "
                    f"({rows_input} computed so far)")
    if log and not rows_input:
        log(f"{ds.name}/{namespace}{_label(shard, shards)}: nothing to compute")
    folded = fold_to_current(ds, namespace, bookkeeping, actor=actor, event_args=event_args)
    if folded is not None:
        parts.append(folded)
        if log:
            log(f"{ds.name}/{namespace}: every row is computed with the current code: stale files replaced by "
                f"the current view ({folded.rows} rows, one file)")
    return Computed(namespace, rows_input, parts, slice_version(ds, namespace, shard=shard, shards=shards,
                                                               columns=ns_cols))


def _label(shard, shards) -> str:
    return f" shard {shard}/{shards}" if shard is not None and shards > 1 else ""


def _to_arrow(obj) -> pa.Table:
    if isinstance(obj, pa.Table):
        return obj
    if isinstance(obj, pa.RecordBatch):
        return pa.Table.from_batches([obj])
    if type(obj).__name__ == "DataFrame":
        return pa.Table.from_pandas(obj, preserve_index=False)
    raise TypeError(f"A namespace function must return a pyarrow Table or a pandas DataFrame, got "
                    f"{type(obj).__name__}.")


def slice_version(ds, namespace: str, *, shard: int | None = None, shards: int = 1,
                  columns: list[dict] | None = None, batch_size: int = 1 << 18) -> str | None:
    """Content version (usr_core.content) of what readers see of `namespace` on the visible rows of `shard`
    (all rows when None), streamed; rows without any value are left out. None when the namespace has no overlay."""
    if not overlay_files(ds, namespace):
        return None
    names = [c["name"] for c in (columns or namespace_columns(ds.root, namespace))]
    version = None
    for batch in ds.scan(columns=["id", *names], include_overlays=[namespace], batch_size=batch_size):
        keep = shard_mask(batch.column("id"), shard, shards)
        table = pa.Table.from_batches([batch]).filter(pa.array(keep))
        version = version_of_rows(table, "id", version)
    return version or version_of_rows(pa.table({"id": pa.array([], pa.string())}), "id")


def pipes_main(fn: Callable[[pa.Table], pa.Table]) -> Computed:
    """The external side of Dagster Pipes: read the task the Dagster asset sent (root, dataset, namespace,
    bookkeeping, shard, batch size, full refresh), compute and write with `compute_namespace`, and report the
    materialization (rows, parts, content data version) back. A script is then three lines:

        from usr_core.external import pipes_main
        def embed(records): ...
        pipes_main(embed)
    """
    from dagster_pipes import open_dagster_pipes  # the protocol's light package (no dagster)

    with open_dagster_pipes() as pipes:
        task = pipes.extras
        ds = Dataset(task["root"], task["dataset"])
        done = compute_namespace(ds, task["namespace"], fn, columns=list(task["columns"]),
                                 bookkeeping=dict(task["bookkeeping"]), shard=task.get("shard"),
                                 shards=int(task.get("shards") or 1), batch_size=task.get("batch_size"),
                                 full_refresh=bool(task.get("full_refresh")), inputs=tuple(task.get("inputs") or ()),
                                 actor={"tool": "dagster", "run_id": task.get("run_id") or "pipes",
                                        "component": "pipes"},
                                 event_args={"dagster_run_id": task.get("run_id") or "",
                                             "dagster_asset": task.get("asset") or ""},
                                 log=pipes.log.info)
        pipes.report_asset_materialization(
            metadata={"usr/rows_computed": done.rows_input, "usr/rows_written": done.rows_written,
                      "usr/parts_written": len(done.parts),
                      "usr/part_paths": "\n".join(str(p.path) for p in done.parts if p.path is not None),
                      "usr/computed_by": "dagster-pipes"},
            data_version=done.version)
    return done
