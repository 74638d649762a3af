"""Dataset reads (O10-O12, T3): base batches LEFT JOIN one newest-non-null view per overlay.

The base key column is matched against each overlay view once (verified key hashes, overlays.keymatch;
one index of the base keys per read, shared by its overlays), then every base batch takes its slice of
those positions: no per-batch rehashing, base order kept.
"""
from __future__ import annotations

import itertools
import stat
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .contract import TOMBSTONE_COLUMNS, TOMBSTONE_NS
from .errors import SchemaError, SequencesError, option_hint
from .layout import DatasetPaths
from .overlays.checks import check_sequence_keys, check_source
from .overlays.discovery import OverlaySource, discover_overlays
from .overlays.kernel import ProbeKeys, joined_columns, namespace_view
from .overlays.keys import normalize_keys
from .registry.registry import Registry, load_registry


# ---------------------------------------------------------------- consistent listings (issue 6 §2)
_ATTEMPTS = 10


def _listing(paths: DatasetPaths) -> tuple:
    """(name, inode, mtime) of records.parquet and each top-level _derived entry (dot-names skipped).

    Part appends do not change it (a parts directory counts by inode, not mtime: a reader that missed
    a part appended meanwhile saw an earlier, whole state); promotion, compaction, creation, removal
    and base rewrites do."""
    out = []
    for p in [paths.records] + (sorted(paths.derived.iterdir()) if paths.derived.is_dir() else []):
        if p.name.startswith("."):
            continue
        try:
            st = p.stat()
            out.append((p.name, st.st_ino, None if stat.S_ISDIR(st.st_mode) else st.st_mtime_ns))
        except FileNotFoundError:
            out.append((p.name, None, None))
    return tuple(out)


def _vanished(exc: BaseException) -> bool:
    while exc is not None:
        if isinstance(exc, FileNotFoundError) or "No such file or directory" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def consistent(paths: DatasetPaths, build):
    """Run `build()` until no writer replaced the base or an overlay's top-level file meanwhile.

    Readers take no lock: a file listed and then promoted, compacted away or replaced raises
    FileNotFoundError (retried), and a changed listing means the read may mix states (retried)."""
    for attempt in range(_ATTEMPTS):
        before = _listing(paths)
        try:
            result = build()
        except Exception as exc:
            # an error while a writer changed the listing (e.g. a parts directory emptied by a compaction
            # after it was listed) says nothing about the data: read again from the new listing
            if attempt + 1 == _ATTEMPTS or not (_vanished(exc) or _listing(paths) != before):
                raise
            time.sleep(0.01 * (attempt + 1))
            continue
        if _listing(paths) == before or attempt + 1 == _ATTEMPTS:
            return result
        time.sleep(0.005 * (attempt + 1))
    raise AssertionError("unreachable")


def not_initialized(paths: DatasetPaths) -> SequencesError:
    return SequencesError(f"Dataset not initialized: {paths.name!r} (no {paths.records}).",
                          hint=f"Create it with Dataset(root, {paths.name!r}).init(), or check the root.",
                          cli_hint=f"Create it with `usr init {paths.name}`, or check --root / USR_ROOT.")


def base_schema(paths: DatasetPaths) -> pa.Schema:
    if not paths.records.is_file():
        raise not_initialized(paths)
    try:
        return pq.read_schema(paths.records)
    except (OSError, pa.ArrowInvalid) as exc:
        raise SchemaError(f"Cannot read {paths.records}: {exc}",
                          hint="The base table is corrupt; restore it from _snapshots/.") from exc


@dataclass
class ReadPlan:
    paths: DatasetPaths
    base_names: list[str]
    out_columns: list[str]
    overlays: list[tuple[OverlaySource, list[str]]] = field(default_factory=list)  # (source, data columns to take)
    tombstones: OverlaySource | None = None
    include_deleted: bool = False
    o3_passed: set = field(default_factory=set)  # O3 results of this read (checks.check_sequence_keys)

    @property
    def base_read(self) -> list[str]:
        need = [c for c in self.base_names if c in self.out_columns]
        extra = set()
        for src, _ in self.overlays:
            extra.add("id" if src.key == "id" else "sequence")
        if self.tombstones is not None:
            extra.add("id")
        return need + [c for c in self.base_names if c in extra and c not in need]


def _needed_namespaces(columns, include_overlays) -> set[str] | None:
    """The namespaces a read uses (None: all).  Overlay columns are `<ns>__<field>` (O5), so explicit
    columns name their namespaces; tombstones (`usr`) are always needed.  A read opens only the files
    of these namespaces, so an unreadable part elsewhere does not break it."""
    if isinstance(include_overlays, (list, tuple, set)):
        allowed = set(include_overlays)
    else:
        allowed = None if include_overlays else set()
    if columns is not None:
        named = {c.split("__", 1)[0] for c in columns if "__" in c}
        allowed = named if allowed is None else allowed & named
    return None if allowed is None else allowed | {TOMBSTONE_NS}


def plan_read(paths: DatasetPaths, columns=None, include_overlays=True, include_deleted=False,
              registry: Registry | None = None) -> ReadPlan:
    schema = base_schema(paths)
    base_names = list(schema.names)
    sources = discover_overlays(paths, _needed_namespaces(columns, include_overlays))
    tomb = next((s for s in sources if s.namespace == TOMBSTONE_NS), None)
    others = [s for s in sources if s.namespace != TOMBSTONE_NS]
    if isinstance(include_overlays, (list, tuple, set)):
        wanted = set(include_overlays)
        others = [s for s in others if s.namespace in wanted]
    elif not include_overlays:
        others = []
    reg = None
    if others:
        reg = registry if registry is not None else load_registry(paths.root, required=True)
    for src in others + ([tomb] if tomb is not None else []):
        check_source(src, paths, reg)
    available = list(base_names)
    per_source = []
    for src in others:
        cols = src.data_columns()
        per_source.append((src, cols))
        available += [c for c in cols if c not in available]
    tomb_cols = list(TOMBSTONE_COLUMNS) if tomb is not None else []
    if columns is None:  # O10: tombstone columns stand where `usr` falls among the overlays (L8 name order)
        later = {id(s) for s in sources[sources.index(tomb) + 1:]} if tomb is not None else set()
        cut = next((available.index(c) for s, cols in per_source if id(s) in later for c in cols
                    if c not in base_names), len(available))
        out = available[:cut] + (tomb_cols if include_deleted else []) + available[cut:]
    else:
        out = list(dict.fromkeys(columns))
        hidden = [c for c in out if c in TOMBSTONE_COLUMNS]
        if hidden and not include_deleted:
            raise SchemaError(f"Columns {hidden} are tombstone columns (O11).",
                              **option_hint("Pass {}.", "include_deleted"))
        unknown = [c for c in out if c not in available and c not in TOMBSTONE_COLUMNS]
        if unknown:
            raise SchemaError(f"Unknown columns requested: {unknown} (O11).",
                              hint=f"Available: {', '.join(available)}.")
    plan = ReadPlan(paths, base_names, out, include_deleted=include_deleted)
    plan.overlays = [(s, [c for c in cols if c in out]) for s, cols in per_source]
    plan.overlays = [(s, cols) for s, cols in plan.overlays if cols]
    plan.tombstones = tomb if (tomb is not None and (not include_deleted or any(c in out for c in tomb_cols))) else None
    for src, _ in plan.overlays:
        if src.key != "id":
            check_sequence_keys(paths, src.key, plan.o3_passed)
    return plan


def _base_keys(plan: ReadPlan, table_or_batch, key: str):
    return normalize_keys(table_or_batch.column("id" if key == "id" else "sequence"), key, combine=key == "id")


class _Joined:
    """Overlay columns LEFT JOINed onto a set of base rows (aligned row for row)."""

    def __init__(self, plan: ReadPlan, base, keys_filter: bool):
        """`base`: the base rows (at least their key columns), or a Future of them (read meanwhile).

        The normalised base keys of each key kind, and their hash index, are built once and shared by
        every overlay (and the tombstones) joined here; they live as long as this object."""
        self.plan = plan
        self.views = []  # (columns dict aligned with base rows, names)
        table = (lambda: base.result()) if isinstance(base, Future) else (lambda: base)
        probes: dict[str, tuple[ProbeKeys, pa.Array | None]] = {}

        def probe(key: str) -> tuple[ProbeKeys, pa.Array | None]:
            if key not in probes:
                if keys_filter:
                    keys = _base_keys(plan, table(), key)
                    probes[key] = ProbeKeys(keys), pc.unique(keys.drop_null())
                else:
                    probes[key] = ProbeKeys(lambda: _base_keys(plan, table(), key)), None
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


def _read_ahead(batches: Iterator[pa.RecordBatch], budget: int) -> list[pa.RecordBatch]:
    got, size = [], 0
    for batch in batches:
        got.append(batch)
        size += batch.nbytes
        if size >= budget:
            break
    return got


def scan(paths: DatasetPaths, *, columns=None, include_overlays=True, include_deleted=False,
         batch_size: int = 65536, registry: Registry | None = None) -> Iterator[pa.RecordBatch]:
    def prepare():
        plan = plan_read(paths, columns, include_overlays, include_deleted, registry)
        pf = pq.ParquetFile(paths.records)  # open handles survive a later replacement of the file
        if not (plan.overlays or plan.tombstones is not None):
            return plan, None, pf.iter_batches(batch_size=batch_size, columns=plan.base_read), [], None
        key_cols = sorted({"id" if s.key == "id" else "sequence" for s, _ in plan.overlays}
                          | ({"id"} if plan.tombstones is not None else set()))
        # the key columns are read whole for the join (while the join reads the parts), then the other
        # base columns are read ahead
        rest = [c for c in plan.base_read if c not in key_cols]
        batches = iter(())
        with ThreadPoolExecutor(1) as pool:
            keys = pool.submit(pf.read, columns=key_cols)
            if rest:
                batches = pq.ParquetFile(paths.records).iter_batches(batch_size=batch_size, columns=rest)
                ahead = pool.submit(_read_ahead, batches, _READ_AHEAD_BYTES)
            joined = _Joined(plan, keys, keys_filter=False)
            keys = keys.result()
            ahead = ahead.result() if rest else []
        if not rest:
            batches = (keys.slice(i, batch_size) for i in range(0, keys.num_rows, batch_size))
        return plan, keys if rest else None, batches, ahead, joined

    plan, keys, batches, ahead, joined = consistent(paths, prepare)
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
    pf = pq.ParquetFile(paths.records)
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
