"""U1-U2: tombstones, an upsert into the reserved compact overlay `usr`."""
from __future__ import annotations

import pyarrow as pa

from .. import tombstones as tb
from ..contract import TOMBSTONE_NS
from ..overlays import write as ow
from ..txn import Writer


def upsert_reserved(w: Writer, ns: str, table: pa.Table, action: str, args: dict, actor) -> int:
    with w.transaction(action, args=args, actor=actor) as txn:
        txn.freeze()
        written, _missing, _total = ow.write_compact(txn.paths, ns, table, key="id", reg=txn.registry,
                                                     journal=txn.journal, allow_overwrite=True, allow_missing=True)
        txn.event(action, args=args, metrics={"rows": written})
    return written


def existing_ids(w: Writer, ids, allow_missing: bool) -> list[str]:
    w.require()
    return tb.check_ids_exist(w.paths, tb.clean_ids(ids), allow_missing)


def tombstone(w: Writer, ids, reason=None, deleted_at=None, allow_missing=False, actor=None) -> int:
    ids = existing_ids(w, ids, allow_missing)
    args = {"rows": len(ids), "reason": reason, "allow_missing": allow_missing}
    table = tb.tombstone_table(ids, True, deleted_at, reason)
    return upsert_reserved(w, TOMBSTONE_NS, table, "tombstone", args, actor) if ids else 0


def restore(w: Writer, ids, allow_missing=False, actor=None) -> int:
    ids = existing_ids(w, ids, allow_missing)
    args = {"rows": len(ids), "allow_missing": allow_missing}
    table = tb.tombstone_table(ids, False, None, None)
    return upsert_reserved(w, TOMBSTONE_NS, table, "restore", args, actor) if ids else 0
