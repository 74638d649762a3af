"""X4 overlay-refresh-metadata: restamp a compact overlay (identical rows) with the current registry's hashes."""
from __future__ import annotations

import pyarrow.parquet as pq

from ..contract import META_NAMESPACE_CONTRACT_HASH, META_REGISTRY_HASH, RESERVED_NAMESPACES, ts
from ..errors import SchemaError
from ..overlays.checks import check_conformance
from ..overlays.discovery import META_COMPACTED_PARTS, SourceKind, find_overlay
from ..overlays.encoding import registry_metadata
from ..overlays.keys import check_key_name
from ..storage.atomic import write_parquet_batches
from ..txn import Writer
from .compact import check_namespace_arg


def refresh_overlay_metadata(w: Writer, ns: str) -> dict:
    check_namespace_arg(ns)
    with w.transaction("refresh_overlay_metadata", gate="overlay-refresh-metadata", namespaces=(ns,)) as txn:
        paths, reg = txn.paths, txn.registry
        src = find_overlay(paths, ns)
        if src is None:
            raise SchemaError(f"Overlay {ns!r} not found in {paths.derived} (X4).",
                              hint="Check the namespace; usr info lists the overlays.")
        if src.kind != SourceKind.COMPACT:
            raise SchemaError(f"Overlay {ns!r} is stored as parts; refresh works on compact overlays only (X4).",
                              hint=f"Compact it first (overlay-compact: ds.compact_overlay({ns!r}) inside ds.maintenance()); "
                                   "compaction stamps fresh metadata.",
                              cli_hint=f"Compact it first: `usr maintenance overlay-compact {w.name} --namespace {ns}` "
                                       "(compaction stamps fresh metadata).")
        key = src.key or "id"
        check_key_name(key)
        if src.first.schema.get_field_index(key) < 0:
            raise SchemaError(f"Overlay {src.path} has no key column {key!r} (X4).",
                              hint="Set usr:overlay_key correctly or rewrite the overlay.")
        if ns not in RESERVED_NAMESPACES:
            check_conformance(src, reg)
        txn.freeze()
        old = src.first.meta
        base = {k: v for k, v in old.items() if k != META_COMPACTED_PARTS}
        meta = registry_metadata(ns, key, ts(), reg, base)
        pf = pq.ParquetFile(src.path)
        schema = pf.schema_arrow.with_metadata({k.encode(): v.encode() for k, v in meta.items()})
        txn.journal.before_write(src.path)
        rows = write_parquet_batches(src.path, schema, lambda: pf.iter_batches(65536),
                                     tmp=paths.compact_overlay_tmp(ns), label="refresh")
        contract = meta.get(META_NAMESPACE_CONTRACT_HASH)
        args = {"namespace": ns, "previous_registry_hash": old.get(META_REGISTRY_HASH),
                "registry_hash": meta[META_REGISTRY_HASH],
                "previous_namespace_contract_hash": old.get(META_NAMESPACE_CONTRACT_HASH),
                "namespace_contract_hash": contract, "rows_refreshed": rows, "maintenance_reason": txn.reason}
        txn.event("refresh_overlay_metadata", args=args, metrics={"rows_refreshed": rows},
                  artifacts={"overlay": {"namespace": ns, "key": key}}, target_path=txn.wrote(src.path))
    return args
