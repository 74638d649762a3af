"""Shared helpers: asset keys, actors (E3), Dagster metadata. Everything about the files on disk comes from
usr_core's public inspection API (usr_core.inspect); this package has no storage rules of its own."""
from __future__ import annotations

import re

from dagster import AssetKey

from usr_core.inspect import (BaseDigests, is_reserved, namespace_version, overlay_files, overlay_namespaces,
                              overlay_problems)
from usr_core.inspect import records_version as _records_version

RECORDS = "records"
KINDS = {"usr", "parquet"}

__all__ = ["RECORDS", "KINDS", "records_key", "namespace_key", "split_key", "safe_name", "dagster_actor",
           "dagster_md", "is_reserved", "namespace_version", "overlay_files", "overlay_namespaces",
           "overlay_problems", "records_version", "part_files"]


# One per code-location process (observations, sensor ticks and maintenance ops of one process share it):
# the base of an unchanged dataset is hashed once, not on every tick.
BASE_DIGESTS = BaseDigests()


def records_version(ds) -> str:
    return _records_version(ds, BASE_DIGESTS)


def records_key(dataset: str) -> AssetKey:
    return AssetKey([*dataset.split("/"), RECORDS])


def namespace_key(dataset: str, namespace: str) -> AssetKey:
    if namespace == RECORDS:
        raise ValueError(f"Namespace 'records' in dataset {dataset!r} collides with the records asset key; "
                         "rename the namespace.")
    return AssetKey([*dataset.split("/"), namespace])


def split_key(key: AssetKey) -> tuple[str, str]:
    """(dataset, namespace or 'records') of an asset key built above."""
    path = list(key.path)
    if len(path) < 2:
        raise ValueError(f"Asset key {key.to_user_string()} is not a USR key (<dataset>/<namespace|records>).")
    return "/".join(path[:-1]), path[-1]


def safe_name(text: str) -> str:
    """Dagster names (groups, ops, pools) allow [A-Za-z0-9_] only."""
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def dagster_actor(run_id: str | None, what: str = "dagster") -> dict:
    """E3 actor for writes made by Dagster; the event sensor skips these (the run reports them itself)."""
    return {"tool": "dagster", "run_id": run_id or "dagster-no-run", "component": what}


def part_files(files) -> list:
    """The parts among a namespace's overlay files (the compact file excluded)."""
    return [f for f in files if f.kind == "part"]


def dagster_md(**values) -> dict:
    """Standard `dagster/*` metadata keys (column_schema, column_lineage, row_count, table_name, storage_kind, uri);
    None values are dropped."""
    return {f"dagster/{k}": v for k, v in values.items() if v is not None}
