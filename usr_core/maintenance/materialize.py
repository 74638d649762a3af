"""materialize (X6): fold overlays into records.parquet through the one merged read (O10)."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from .. import events as ev
from .. import read as rd
from ..base import base_metadata, m1_metadata, rewrite_base
from ..contract import STATE_NS, TOMBSTONE_NS
from ..errors import NamespaceError, SchemaError, option_hint
from ..overlays.checks import check_conformance, require_key
from ..overlays.discovery import OverlaySource, SourceKind, discover_overlays
from ..registry.registry import hash_registry
from ..storage.atomic import crash_point
from ..txn import Writer
from .archive import archive


def _selection(sources: list[OverlaySource], namespaces) -> list[OverlaySource]:
    if namespaces is None:
        return [s for s in sources if s.namespace not in (TOMBSTONE_NS, STATE_NS)]
    wanted = [namespaces] if isinstance(namespaces, str) else list(namespaces)
    if TOMBSTONE_NS in wanted:
        raise NamespaceError("Namespace 'usr' (tombstones) cannot be materialized (X6).",
                             **option_hint("Use {} to remove tombstoned rows.", "drop_deleted"))
    return [s for s in sources if s.namespace in set(wanted)]  # unknown namespaces are ignored


def _check_source(src: OverlaySource, reg) -> None:
    require_key(src, "X6")
    if not src.data_columns():
        raise SchemaError(f"Overlay {src.path} has no data columns (X6).", hint="Remove the empty overlay.")
    check_conformance(src, reg)


def materialize(w: Writer, namespaces=None, keep_overlays: bool = True, archive_overlays: bool = False,
                drop_deleted: bool = False) -> dict | None:
    with w.transaction("materialize", gate="materialize") as txn:
        paths, reg = txn.paths, txn.registry
        selected = _selection(discover_overlays(paths), namespaces)
        if not selected and not drop_deleted:
            return None
        for src in selected:
            _check_source(src, reg)
        txn.freeze()
        for src in selected:
            txn.finish_pending_compaction(src.namespace)
        base = pq.ParquetFile(paths.records)
        rows_before = base.metadata.num_rows
        types = {f.name: f.type for f in base.schema_arrow}
        for src in selected:  # overlay type wins, as in the read's COALESCE
            for c in src.data_columns():
                types[c] = src.column_type(c)
        columns = list(types)
        schema = pa.schema([(c, t) for c, t in types.items()])
        names = [s.namespace for s in selected]

        def batches():
            yield from rd.scan(paths, columns=columns, include_overlays=names, include_deleted=not drop_deleted,
                               registry=reg)

        meta = m1_metadata(base_metadata(paths), hash_registry(reg))
        overlays = [{"namespace": s.namespace, "key": s.key,
                     "fingerprint": ev.fingerprint(s.path if s.kind == SourceKind.COMPACT else s.parts[-1].path)}
                    for s in selected]
        tomb = paths.compact_overlay(TOMBSTONE_NS)
        rows_after = rewrite_base(paths, schema, batches, meta, label="materialize", journal=txn.journal)
        crash_point("materialize:after-base")
        archived = {}
        for src in selected:
            if archive_overlays:
                target = archive(paths, src.namespace, src.path, src.kind == SourceKind.COMPACT, txn.journal)
                archived[src.namespace] = str(target)
            elif not keep_overlays:
                txn.journal.delete(src.path)
        args = {"namespaces": names, "keep_overlays": keep_overlays, "archive_overlays": archive_overlays,
                "drop_deleted": drop_deleted, "overlays": overlays, "archived": archived,
                "tombstones": ev.fingerprint(tomb) if tomb.is_file() else None,
                "rows_before": rows_before, "rows_after": rows_after, "maintenance_reason": txn.reason}
        txn.event("materialize", args=args,
                  metrics={"rows_before": rows_before, "rows_after": rows_after,
                           "rows_dropped": rows_before - rows_after, "overlays": len(selected)})
    return {"namespaces": names, "rows": rows_after, "rows_dropped": rows_before - rows_after,
            "archived": archived}
