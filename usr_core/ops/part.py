"""O6 part writes and O7 create-only overlays."""
from __future__ import annotations

import pyarrow as pa

from ..contract import META_OVERLAY_CREATED_AT, ts
from ..errors import SchemaError, option_hint
from ..overlays import write as ow
from ..overlays.discovery import find_overlay, list_part_paths
from ..overlays.encoding import registry_metadata
from ..overlays.keys import check_key_name
from ..records import to_table
from ..results import PartWritten
from ..txn import Writer


def _prepare(w: Writer, ns: str, table, key: str, key_col, allow_missing: bool, event_args, create: bool):
    w.require()
    ow.check_writable_namespace(ns)
    check_key_name(key)
    if create:
        check_create_target(w, ns)
    reg = w.registry(required=True)
    extra = ow.check_event_args(event_args, ow.PART_ARG_KEYS)
    table = ow.prepare_part_table(ns, to_table(table), key=key, key_col=key_col, reg=reg)
    args = {"namespace": ns, "key": key, "columns": table.column_names[1:], "rows_incoming": table.num_rows,
            "rows_matched": table.num_rows, "rows_written": table.num_rows, "rows_missing": 0,
            "allow_missing": allow_missing, **extra}
    return reg, table, args


def _event(txn, ns: str, key: str, args: dict, incoming: int, table: pa.Table, missing: int, part) -> None:
    args.update(rows_matched=table.num_rows, rows_written=table.num_rows, rows_missing=missing)
    txn.event("write_overlay_part", args=args, target_path=part,
              metrics={"rows_incoming": incoming, "rows_written": table.num_rows, "rows_missing": missing},
              artifacts={"overlay": {"namespace": ns, "key": key}})


def write_part(w: Writer, ns: str, table, *, key="id", key_col=None, allow_missing=False, actor=None,
               event_args=None, extra_metadata=None) -> PartWritten:
    """O6: one new part (an existing compact file is promoted first, O6.1); created_at strictly after
    every existing file of the namespace."""
    extra = ow.check_extra_metadata(extra_metadata)
    reg, table, args = _prepare(w, ns, table, key, key_col, allow_missing, event_args, create=False)
    incoming = table.num_rows
    with w.transaction("write_overlay_part", args=args, actor=actor, reg=reg, namespaces=(ns,)) as txn:
        paths = txn.paths
        src = find_overlay(paths, ns)  # L7, under the lock: no compaction or promotion meanwhile
        if src is not None and src.key and src.key != key:
            raise SchemaError(f"Overlay {ns!r} is keyed by {src.key!r}; cannot add a part keyed by {key!r} (M3).",
                              **option_hint("Write with {}.", "key", src.key))
        when = txn.overlay_stamp(src)
        meta = {**extra, **registry_metadata(ns, key, ts(when), reg, cache=w.registry_cache)}
        table, missing, encoded = ow.match_and_encode(paths, table, key, allow_missing, meta)
        if table.num_rows == 0:
            return PartWritten(ns, None, 0, None, missing, extra)
        txn.freeze()
        ow.promote_compact(paths, ns, txn.journal, before=when)
        part = ow.write_part_file(paths.parts_dir(ns), table, meta, encoded, when=when, journal=txn.journal)
        ow.update_digest_ledger(paths.parts_dir(ns), [part], txn.journal)
        _event(txn, ns, key, args, incoming, table, missing, txn.wrote(part))
    return PartWritten(ns, part, table.num_rows, meta[META_OVERLAY_CREATED_AT], missing, extra)


def create_overlay(w: Writer, ns: str, table, *, key="id", key_col=None, allow_missing=False, actor=None,
                   event_args=None) -> int:
    """O7: publish a whole parts directory at once, only if the namespace has no overlay yet."""
    reg, table, args = _prepare(w, ns, table, key, key_col, allow_missing, event_args, create=True)
    incoming = table.num_rows
    with w.transaction("write_overlay_part", args=args, actor=actor, reg=reg) as txn:
        check_create_target(w, ns)
        meta = registry_metadata(ns, key, ts(), reg, cache=w.registry_cache)
        table, missing = ow.match_base(txn.paths, table, key, allow_missing)
        if table.num_rows == 0:
            return 0
        txn.freeze()
        target = txn.paths.parts_dir(ns)
        staging = ow.stage_create(txn.paths, ns, table, meta, txn.journal)
        txn.journal.before_write(target)
        ow.publish_noreplace(staging, target)
        part = next(iter(list_part_paths(target)))
        _event(txn, ns, key, args, incoming, table, missing, txn.wrote(part))
    return table.num_rows


def check_create_target(w: Writer, ns: str) -> None:
    for p in (w.paths.parts_dir(ns), w.paths.compact_overlay(ns)):
        if p.exists() or p.is_symlink():
            raise FileExistsError(f"Overlay {ns!r} already exists at {p} (O7 create-only).")
