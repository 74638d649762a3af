"""Small maintenance operations: snapshot (X7), registry-freeze (X5), overlay-remove (X3),
overlay-refresh-metadata (X4)."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq

from ..base import _prune_snapshots, auto_freeze
from ..contract import (META_NAMESPACE_CONTRACT_HASH, META_OVERLAY_CREATED_AT, META_OVERLAY_KEY,
                        META_OVERLAY_NAMESPACE, META_REGISTRY_HASH, MUTATION_RESERVED_NAMESPACES,
                        RESERVED_NAMESPACES, snapshot_stamp, stamp, ts)
from ..errors import NamespaceError, SchemaError
from ..layout import DatasetPaths, check_namespace_name
from ..overlays.checks import check_conformance
from ..overlays.discovery import META_COMPACTED_PARTS, find_overlay
from ..overlays.keys import check_key_name
from ..registry.registry import hash_registry, namespace_contract_hash
from ..storage.atomic import atomic_path, crash_point, fsync_dir, write_parquet_batches
from .compact import check_namespace_arg, delete_parts_dir, finish_pending_compaction

REMOVE_MODES = ("error", "delete", "archive")


def snapshot(ds, actor=None) -> Path:
    """X7: copy records.parquet to _snapshots/records-<S>.parquet and prune to the newest 5 (L6)."""
    ds._require()
    reg = ds._registry(required=True)
    with ds.lock():
        ds._require()
        ds._freeze(reg, actor)
        paths = ds.paths
        paths.snapshots.mkdir(parents=True, exist_ok=True)
        snap = paths.snapshots / f"records-{snapshot_stamp()}.parquet"
        with atomic_path(snap, snap.with_name(snap.name + ".tmp"), label="snapshot") as tmp:
            shutil.copyfile(paths.records, tmp)
        _prune_snapshots(paths)
        rows = pq.ParquetFile(paths.records).metadata.num_rows
        ds.log_event("snapshot", args={"snapshot": str(snap)}, metrics={"rows": rows},
                     artifacts={"snapshot": {"path": str(snap)}}, actor=actor)
    return snap


def freeze_registry(ds) -> Path:
    """X5: R14 without the auto event, then `registry_freeze {..., auto: false, updated}`."""
    ds._require_gate("registry-freeze")
    ds._require()
    reg = ds._registry(required=True)
    with ds.lock():
        ds._require()
        args, _changed = auto_freeze(ds.paths, reg)
        updated = bool(args["restamped"])
        ds.log_event("registry_freeze", args={"registry_hash": args["registry_hash"], "snapshot": args["snapshot"],
                                              "auto": False, "updated": updated},
                     metrics={"updated": int(updated)}, artifacts={"registry_snapshot": args["snapshot"]})
    return Path(args["snapshot"])


def archive_target(paths: DatasetPaths, ns: str, is_file: bool) -> Path:
    """X3/X6: _derived/_archived/<ns>-<STAMP>[.parquet] (a fresh name, never an existing one)."""
    paths.archived_overlays.mkdir(parents=True, exist_ok=True)
    while True:
        target = paths.archived_overlays / f"{ns}-{stamp()}{'.parquet' if is_file else ''}"
        if not os.path.lexists(target):
            return target


def move_overlay(src_path: Path, target: Path) -> None:
    os.rename(src_path, target)
    fsync_dir(target.parent)
    fsync_dir(src_path.parent)


def _prune_archives(paths: DatasetPaths, ns: str, keep: Path) -> None:
    """X3: keep only the newest archive of `ns` (the one just written)."""
    pattern = re.compile(rf"^{re.escape(ns)}-\d{{8}}T\d{{12}}Z(\.parquet)?$")
    for p in paths.archived_overlays.iterdir():
        if p == keep or not pattern.match(p.name):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def remove_overlay(ds, ns: str, mode: str = "error") -> dict:
    """X3: not gated, locked.  error | delete | archive."""
    if mode not in REMOVE_MODES:
        raise SchemaError(f"Unknown overlay-remove mode {mode!r}.", hint=f"Use one of: {', '.join(REMOVE_MODES)}.")
    if ns in MUTATION_RESERVED_NAMESPACES:
        raise NamespaceError(f"Namespace {ns!r} is reserved and cannot be removed (X3, U2).",
                             hint="Use restore / state clear to change reserved overlays.")
    check_namespace_name(ns)
    ds._require()
    reg = ds._registry(required=True)
    paths = ds.paths
    with ds.lock():
        ds._require()
        src = find_overlay(paths, ns)  # L7 → SchemaError unless a finished compaction
        if src is None:
            if mode == "error":
                raise SchemaError(f"Overlay {ns!r} not found in {paths.derived}.",
                                  hint="Check the namespace (usr info lists overlays) or use --mode delete.")
            return {"removed": False, "namespace": ns}
        ds._freeze(reg)
        finish_pending_compaction(paths, ns)
        if mode == "archive":
            target = archive_target(paths, ns, src.kind == "compact")
            move_overlay(src.path, target)
            crash_point("remove:after-archive")
            _prune_archives(paths, ns, target)
            ds.log_event("archive_overlay", args={"namespace": ns, "archived": str(target)},
                         artifacts={"overlay": {"namespace": ns}}, target_path=target if target.is_file() else None)
            return {"removed": True, "namespace": ns, "archived_path": str(target)}
        if src.kind == "compact":
            src.path.unlink()
            fsync_dir(src.path.parent)
        else:
            delete_parts_dir(src.path)
        ds.log_event("remove_overlay", args={"namespace": ns}, artifacts={"overlay": {"namespace": ns}})
    return {"removed": True, "namespace": ns}


def refresh_overlay_metadata(ds, ns: str) -> dict:
    """X4: restamp a compact overlay (identical rows) with the current registry's hashes."""
    gate = ds._require_gate("overlay-refresh-metadata")
    check_namespace_arg(ns)
    ds._require()
    reg = ds._registry(required=True)
    paths = ds.paths
    with ds.lock():
        ds._require()
        finish_pending_compaction(paths, ns)
        src = find_overlay(paths, ns)
        if src is None:
            raise SchemaError(f"Overlay {ns!r} not found in {paths.derived} (X4).",
                              hint="Check the namespace; usr info lists the overlays.")
        if src.kind != "compact":
            raise SchemaError(f"Overlay {ns!r} is stored as parts; refresh works on compact overlays only (X4).",
                              hint=f"Compact it first: `usr maintenance overlay-compact {ds.name} --namespace {ns}` "
                                   "(compaction stamps fresh metadata).")
        key = src.key or "id"
        check_key_name(key)
        if src.first.schema.get_field_index(key) < 0:
            raise SchemaError(f"Overlay {src.path} has no key column {key!r} (X4).",
                              hint="Set usr:overlay_key correctly or rewrite the overlay.")
        if ns not in RESERVED_NAMESPACES:
            check_conformance(src, reg)
        ds._freeze(reg)
        old = src.first.meta
        meta = {k: v for k, v in old.items() if k != META_COMPACTED_PARTS}
        h = hash_registry(reg)
        meta.update({META_OVERLAY_NAMESPACE: ns, META_OVERLAY_KEY: key, META_OVERLAY_CREATED_AT: ts(),
                     META_REGISTRY_HASH: h})
        contract = None if ns in RESERVED_NAMESPACES else namespace_contract_hash(reg, ns)
        if contract is None:
            meta.pop(META_NAMESPACE_CONTRACT_HASH, None)
        else:
            meta[META_NAMESPACE_CONTRACT_HASH] = contract
        pf = pq.ParquetFile(src.path)
        schema = pf.schema_arrow.with_metadata({k.encode(): v.encode() for k, v in meta.items()})
        rows = write_parquet_batches(src.path, schema, lambda: pf.iter_batches(65536),
                                     tmp=paths.compact_overlay_tmp(ns), label="refresh")
        args = {"namespace": ns, "previous_registry_hash": old.get(META_REGISTRY_HASH), "registry_hash": h,
                "previous_namespace_contract_hash": old.get(META_NAMESPACE_CONTRACT_HASH),
                "namespace_contract_hash": contract, "rows_refreshed": rows,
                "maintenance_reason": gate.get("reason")}
        ds.log_event("refresh_overlay_metadata", args=args, metrics={"rows_refreshed": rows},
                     artifacts={"overlay": {"namespace": ns, "key": key}}, target_path=src.path)
    return args
