"""Base-table rewrites (S9, M1, L6) and auto-freeze (R13, R14)."""
from __future__ import annotations

import re
import shutil
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from .contract import (ARROW_SCHEMA, ID_HASH_SPEC, META_DATASET_CREATED_AT, META_ID_HASH, META_REGISTRY_HASH,
                       META_SCHEMA_VERSION, PARQUET_COMPRESSION, SCHEMA_VERSION, SNAPSHOTS_KEPT, snapshot_stamp, ts)
from .errors import SchemaError, SequencesError
from .layout import DatasetPaths
from .overlays.discovery import file_metadata
from .journal import Journal
from .registry.registry import Registry, hash_registry, write_freeze_file
from .storage.atomic import atomic_path, crash_point, remove_file


def base_metadata(paths: DatasetPaths) -> dict[str, str]:
    return file_metadata(pq.read_schema(paths.records))


def check_essentials(schema: pa.Schema, where) -> None:
    """S9/V1: essential columns present with S1 types."""
    for f in ARROW_SCHEMA:
        idx = schema.get_field_index(f.name)
        if idx < 0 or schema.field(idx).type != f.type:
            got = "missing" if idx < 0 else str(schema.field(idx).type)
            raise SchemaError(f"{where} has an incompatible schema: column {f.name} is {got}, expected {f.type}.",
                              hint="The base table must hold every essential column with its contract type.")


def m1_metadata(existing: dict[str, str], registry_hash: str | None, created_at: str | None = None) -> dict[str, str]:
    meta = dict(existing)
    meta[META_SCHEMA_VERSION] = SCHEMA_VERSION
    meta[META_ID_HASH] = ID_HASH_SPEC
    meta.setdefault(META_DATASET_CREATED_AT, created_at or ts())
    if registry_hash:
        meta[META_REGISTRY_HASH] = registry_hash
    return meta


SNAPSHOT_NAME = re.compile(r"^records-\d{8}T\d{12}\.parquet$")


def prune_snapshots(paths: DatasetPaths) -> None:
    """L6: keep the newest SNAPSHOTS_KEPT snapshots; only files named as USR names them are deleted."""
    snaps = sorted(p for p in paths.snapshots.glob("records-*.parquet") if SNAPSHOT_NAME.match(p.name))
    for old in snaps[:-SNAPSHOTS_KEPT]:
        remove_file(old)


ROW_GROUP_ROWS = 65536


def rewrite_base(paths: DatasetPaths, schema: pa.Schema, batches: Callable[[], Iterator[pa.RecordBatch | pa.Table]],
                 metadata: dict[str, str], label: str = "base",
                 before_publish: Callable[[], None] | None = None, *, journal: Journal | None = None) -> int:
    """Write a new records.parquet: temp file, snapshot copy of the new content (L6), rename, prune.

    A batch becomes one row group, a table row groups of ROW_GROUP_ROWS.  `before_publish` runs once the temp
    file is complete; if it raises, the temp file is removed.  The journal keeps the old base and prunes
    old snapshots only after the commit (without one, the rewrite is its own commit)."""
    if journal is None:
        with Journal().scope() as own:
            return rewrite_base(paths, schema, batches, metadata, label, before_publish, journal=own)
    schema = schema.with_metadata({k.encode(): v.encode() for k, v in metadata.items()})
    rows = 0
    journal.before_write(paths.records)
    with atomic_path(paths.records, paths.records_tmp, label=label) as tmp:
        with pq.ParquetWriter(tmp, schema, compression=PARQUET_COMPRESSION) as writer:
            for part in batches():
                if part.num_rows:
                    part = part.cast(schema.remove_metadata()) if part.schema != schema else part
                    if isinstance(part, pa.Table):  # one call, GIL released throughout: see records.NewRows
                        writer.write_table(part, row_group_size=ROW_GROUP_ROWS)
                    else:
                        writer.write_batch(part)
                    rows += part.num_rows
        if before_publish is not None:
            before_publish()
        try:
            snap = paths.snapshots / f"records-{snapshot_stamp()}.parquet"
            journal.before_write(snap)
            with atomic_path(snap, label=f"{label}-snapshot") as snap_tmp:
                shutil.copyfile(tmp, snap_tmp)
        except OSError as exc:
            raise SequencesError(f"Snapshot write failed: {exc}", hint="Check free space and permissions.") from exc
        crash_point(f"{label}:after-snapshot")
    journal.after_commit(lambda: prune_snapshots(paths))
    return rows


def write_base_table(paths: DatasetPaths, table: pa.Table, metadata: dict[str, str], label: str = "base", *,
                     journal: Journal | None = None) -> int:
    return rewrite_base(paths, table.schema.remove_metadata(), lambda: iter(table.to_batches(65536)), metadata, label,
                        journal=journal)


def restamp_base(paths: DatasetPaths, registry_hash: str, *, journal: Journal | None = None) -> None:
    pf = pq.ParquetFile(paths.records)
    meta = m1_metadata(file_metadata(pf.schema_arrow), registry_hash)
    rewrite_base(paths, pf.schema_arrow.remove_metadata(), lambda: pf.iter_batches(65536), meta, label="restamp",
                 journal=journal)


def auto_freeze(paths: DatasetPaths, reg: Registry, *, journal: Journal | None = None,
                registry_hash: str | None = None) -> tuple[dict, bool]:
    """R14: freeze file for the current hash, restamp the base if its hash differs.

    Returns (event args, changed).  The caller logs the event (auto=True) when changed.
    """
    h = registry_hash or hash_registry(reg)
    freeze = paths.freeze_file(h)
    if journal is not None and not freeze.exists():
        journal.before_write(freeze)
    wrote = write_freeze_file(freeze, reg)
    restamped = False
    if paths.records.is_file():
        if base_metadata(paths).get(META_REGISTRY_HASH) != h:
            restamp_base(paths, h, journal=journal)
            restamped = True
    return {"registry_hash": h, "snapshot": str(freeze), "restamped": restamped}, (wrote or restamped)
