"""X7 snapshot: copy records.parquet to _snapshots/records-<S>.parquet, keep the newest five (L6)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq

from ..base import prune_snapshots
from ..contract import snapshot_stamp
from ..storage.atomic import atomic_path
from ..txn import Writer


def snapshot(w: Writer, actor=None) -> Path:
    with w.transaction("snapshot", actor=actor) as txn:
        txn.freeze()
        paths = txn.paths
        snap = paths.snapshots / f"records-{snapshot_stamp()}.parquet"
        txn.journal.before_write(snap)
        with atomic_path(snap, snap.with_name(snap.name + ".tmp"), label="snapshot") as tmp:
            shutil.copyfile(paths.records, tmp)
        txn.journal.after_commit(lambda: prune_snapshots(paths))
        rows = pq.ParquetFile(paths.records).metadata.num_rows
        txn.event("snapshot", args={"snapshot": str(snap)}, metrics={"rows": rows},
                  artifacts={"snapshot": {"path": str(txn.wrote(snap))}})
    return snap
