"""Replace a namespace's whole overlay with a new table in one atomic step (a full refresh).

Newest-non-null-wins (O9) means a new part can never turn a value back into NULL; a recomputation whose
output must be exactly what readers see afterwards replaces the overlay instead of adding to it.

How, under the dataset lock and inside one transaction (txn.py):
1. the new table is checked like a part (registered columns, conforming types, keys normalised, unique, and
   present in the base) before anything is written;
2. it is written as the compact file `_derived/<ns>.parquet` (temp file, fsync, rename over any old compact
   file).  When the namespace had parts, the new compact file lists all of them in `usr:compacted_parts`:
   by the finished-compaction rule (overlays.discovery) readers then use the compact file alone, so the
   rename is the one step that switches every reader from the old view to the new one;
3. the parts directory is renamed to a hidden name (readers ignore it) and deleted after the event is
   committed; the event `replace_overlay` is appended with the change.
A kill before the rename leaves the old view (plus a temp file the next writer sweeps); after it, the new
one (left-over parts are folded by the rule and deleted by the next writer).  A failure raised before the
event is committed rolls every file back (the transaction's journal).
"""
from __future__ import annotations

import json
import uuid

import pyarrow as pa

from .contract import ts
from .overlays import write as ow
from .overlays.discovery import META_COMPACTED_PARTS, find_overlay, list_part_paths
from .overlays.encoding import overlay_metadata, write_overlay_file
from .overlays.keys import check_key_name
from .records import to_table
from .registry.registry import load_registry, namespace_contract_hash
from .results import PartWritten
from .storage.atomic import crash_point

REPLACE_ACTION = "replace_overlay"


def replace_overlay(ds, namespace: str, table: pa.Table, *, key: str = "id", actor=None, event_args=None,
                    extra_metadata: dict[str, str] | None = None) -> PartWritten:
    """Make `table` (key + `<ns>__<field>` columns) the whole overlay of `namespace`: afterwards readers see
    exactly its values, NULLs included, and nothing of the namespace's previous files. Returns what was
    written (`path` is the new compact file). `extra_metadata`: caller parquet key/values (not `usr:`)."""
    ow.check_writable_namespace(namespace)
    check_key_name(key)
    extra_meta = ow.check_extra_metadata(extra_metadata)
    extra_args = ow.check_event_args(event_args, ow.PART_ARG_KEYS)
    reg = load_registry(ds.root, required=True)
    table = ow.prepare_part_table(namespace, to_table(table), key=key, key_col=None, reg=reg)
    args = {"namespace": namespace, "key": key, "columns": table.column_names[1:], "rows_incoming": table.num_rows,
            **extra_args}
    writer = ds.writer  # the dataset's own writer: it re-enters a lock the caller holds (write_session)
    paths = writer.paths
    with writer.transaction(REPLACE_ACTION, args=args, actor=actor, namespaces=[namespace], reg=reg) as txn:
        src = find_overlay(paths, namespace)  # L7 under the lock
        table, _missing = ow.match_base(paths, table, key, allow_missing=False)
        created_at = ts(txn.overlay_stamp(src))
        meta = {**extra_meta, **overlay_metadata(namespace, key, created_at, txn.registry_hash,
                                                 namespace_contract_hash(reg, namespace))}
        parts_dir, compact = paths.parts_dir(namespace), paths.compact_overlay(namespace)
        parts = list_part_paths(parts_dir)
        if parts:
            meta[META_COMPACTED_PARTS] = json.dumps([p.name for p in parts])
        txn.freeze()
        txn.journal.before_write(compact)
        crash_point("replace:before-publish")
        write_overlay_file(compact, table, key, meta, tmp=paths.compact_overlay_tmp(namespace), label="replace")
        txn.wrote(compact)
        crash_point("replace:after-publish")
        if parts_dir.is_dir():
            hidden = paths.derived / f".{namespace}.rollback-{uuid.uuid4().hex}"
            txn.journal.rename(parts_dir, hidden)
            txn.journal.delete_after_commit(hidden)
            crash_point("replace:after-hide-parts")
        txn.event(REPLACE_ACTION, args={**args, "rows_written": table.num_rows, "parts_replaced": len(parts)},
                  metrics={"rows_written": table.num_rows, "parts_replaced": len(parts)},
                  artifacts={"overlay": {"namespace": namespace, "key": key}}, target_path=compact)
    return PartWritten(namespace, compact, table.num_rows, created_at, 0, extra_meta)
