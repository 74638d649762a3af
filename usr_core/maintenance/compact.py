"""overlay-compact (X2): collapse an overlay's parts into `_derived/<ns>.parquet` by O9.

Memory: clustered parts (every part we write) are merged range by range, each range sized to the
memory budget (budget.memory_budget: argument, USR_MEMORY_BUDGET, default); other parts are merged
whole when that fits the budget, else in key ranges read from every part (a read of the parts per range).

Crash safety: the compact file records the names of the parts it folded (`usr:compacted_parts`), so a
compaction killed after writing it is finished by the next writer (maintenance/pending.py).
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..budget import PEAK_FACTOR, memory_budget as resolve_budget
from ..contract import PARQUET_COMPRESSION, RESERVED_NAMESPACES, ts
from ..errors import SchemaError
from ..layout import check_namespace_name
from ..overlays import encoding, ranges
from ..overlays.checks import check_conformance, require_key, unify_types
from ..overlays.discovery import META_COMPACTED_PARTS, folded_by_compact, find_overlay, list_part_paths
from ..overlays.encoding import META_KEYS_CLUSTERED, dictionary_columns, registry_metadata, write_overlay_file
from ..overlays.kernel import namespace_view
from ..storage.atomic import atomic_path, crash_point
from ..txn import Writer
from .pending import delete_parts_dir


def check_namespace_arg(ns: str) -> str:
    if ns in RESERVED_NAMESPACES:
        return ns
    return check_namespace_name(ns, allow_reserved=False)


log = logging.getLogger(__name__)


def compact_overlay(w: Writer, ns: str, memory_budget=None) -> Path:
    check_namespace_arg(ns)
    budget = resolve_budget(memory_budget)  # a bad budget fails before anything is locked or written
    with w.transaction("compact_overlay", gate="overlay-compact") as txn:
        paths = txn.paths
        compact, parts_dir = paths.compact_overlay(ns), paths.parts_dir(ns)
        part_paths = list_part_paths(parts_dir)
        leftovers = list(paths.derived.glob(f".{ns}.rollback-*")) if paths.derived.is_dir() else []
        if compact.is_file() and (folded_by_compact(compact, part_paths) or (leftovers and not part_paths)):
            txn.freeze()
            delete_parts_dir(parts_dir, txn.journal)
            txn.event("compact_overlay", args={"namespace": ns, "archived": None, "resumed": True,
                                               "maintenance_reason": txn.reason}, target_path=compact)
            return compact
        if not part_paths:
            raise SchemaError(f"Overlay parts not found for namespace {ns!r} in {parts_dir} (X2).",
                              hint="Only part overlays (written with write_overlay_part) can be compacted.")
        if compact.is_file():
            raise SchemaError(f"Overlay file already exists: {compact} (X2, L7).",
                              hint=f"Remove {compact} (or the parts directory) and rerun the compaction.")
        txn.freeze()
        src = find_overlay(paths, ns)
        require_key(src, "X2")
        if ns not in RESERVED_NAMESPACES:
            check_conformance(src, txn.registry)
        base = {k: v for k, v in src.first.meta.items() if k.startswith("usr:")}
        base.update(shared_extra_metadata(src))
        base[META_COMPACTED_PARTS] = json.dumps([p.path.name for p in src.parts])
        meta = registry_metadata(ns, src.key, ts(txn.overlay_stamp(src)), txn.registry, base)
        txn.journal.before_write(compact)
        rows = _write_view(src, compact, paths.compact_overlay_tmp(ns), meta, budget)
        crash_point("compact:before-delete-parts")
        delete_parts_dir(parts_dir, txn.journal)
        crash_point("compact:after-delete-parts")
        txn.event("compact_overlay", args={"namespace": ns, "archived": None, "parts": len(src.parts),
                                           "rows": rows, "maintenance_reason": txn.reason},
                  metrics={"parts": len(src.parts), "rows": rows}, target_path=txn.wrote(compact))
    return compact


def shared_extra_metadata(src) -> dict[str, str]:
    """Caller (non-`usr:`) key/values on which every folded file agrees: they survive the compaction."""
    metas = [p.meta for p in src.parts]
    keys = [k for k in metas[0] if not k.startswith(("usr:", "ARROW:")) and k != "pandas"]
    return {k: metas[0][k] for k in keys if all(m.get(k) == metas[0][k] for m in metas[1:])}


def _write_view(src, final: Path, tmp: Path, meta: dict[str, str], budget: int) -> int:
    """Write the namespace view (O9, the one newest-non-null kernel shared with reads); returns rows.

    Parts clustered by key prefix are merged and written range by range (ranges sized to `budget`);
    others, or parts whose keys turn out not to fit, are merged whole when their estimated state fits
    `budget`, else range by range from row-group-filtered reads of every part."""
    columns = src.data_columns()
    if ranges.clustered(src):
        try:
            return _write_ranges(src, final, tmp, meta, ranges.view_ranges(
                src, columns, ranges.range_rows(src, columns, budget, PEAK_FACTOR)))
        except ranges.NotClustered:
            pass
    state = ranges.view_bytes(src, columns)[0] * PEAK_FACTOR
    if state <= budget:
        view = namespace_view(src).replace_schema_metadata(None)
        write_overlay_file(final, view, src.key, meta, tmp=tmp, label="compact")
        return view.num_rows
    count = max(2, math.ceil(state / (budget / 2)))
    log.info("compaction of %s: merge state ~%d MiB exceeds the memory budget of %d MiB; merging %d key ranges",
             src.namespace, int(state) >> 20, budget >> 20, count)
    return _write_ranges(src, final, tmp, meta, ranges.filtered_ranges(src, columns, count))


def _write_ranges(src, final: Path, tmp: Path, meta: dict[str, str], tables) -> int:
    columns = src.data_columns()
    types = unify_types(src, columns)
    schema = pa.schema([(src.key, pa.string())] + [(c, types[c]) for c in columns],
                       metadata={**meta, META_KEYS_CLUSTERED: "prefix8"})
    rows = 0
    with atomic_path(final, tmp, "compact") as t:
        with pq.ParquetWriter(t, schema, compression=PARQUET_COMPRESSION,
                              use_dictionary=dictionary_columns(schema, src.key)) as writer:
            for table in tables:
                writer.write_table(table.replace_schema_metadata(schema.metadata),
                                   row_group_size=encoding.OVERLAY_ROW_GROUP_ROWS)
                rows += table.num_rows
    return rows
