"""dedupe (X8): drop duplicate base rows by id / sequence / sequence_ci, keeping first or last."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..base import base_metadata, m1_metadata, rewrite_base
from ..errors import SchemaError
from ..registry.registry import hash_registry
from ..txn import Writer

DEDUPE_KEYS = ("id", "sequence", "sequence_norm", "sequence_ci")
KEEP = ("keep-first", "keep-last")


@dataclass
class DedupeStats:
    rows_total: int
    rows_dropped: int
    groups: int
    key: str
    keep: str


def dedupe_keys(records, key: str) -> pa.Array:
    """X8 keys over the whole base (one string column held, not the table)."""
    if key == "id":
        col = pq.read_table(records, columns=["id"])["id"]
    else:
        cols = ["sequence", "alphabet"] if key == "sequence_ci" else ["sequence"]
        t = pq.read_table(records, columns=cols)
        if key == "sequence_ci" and t.num_rows and not pc.all(pc.equal(t["alphabet"], "dna_4")).as_py():
            raise SchemaError("dedupe by sequence_ci needs every record's alphabet to be dna_4 (X8).",
                              hint="Use key='sequence' (case-sensitive) or key='id'.",
                              cli_hint="Use --key sequence (case-sensitive) or --key id.")
        col = pc.utf8_trim_whitespace(t["sequence"])
        if key == "sequence_ci":
            col = pc.utf8_upper(col)
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    return col.cast(pa.string()) if not pa.types.is_string(col.type) else col


def keep_mask(keys: pa.Array, keep: str) -> tuple[np.ndarray, int]:
    """Boolean keep mask over file order and the number of duplicate groups."""
    n = len(keys)
    if n == 0:
        return np.ones(0, dtype=bool), 0
    idx = pc.index_in(keys, value_set=pc.unique(keys)).to_numpy(zero_copy_only=False)
    if keep == "keep-first":
        _, pos = np.unique(idx, return_index=True)
    else:
        _, rpos = np.unique(idx[::-1], return_index=True)
        pos = n - 1 - rpos
    mask = np.zeros(n, dtype=bool)
    mask[pos] = True
    counts = np.bincount(idx)
    return mask, int((counts > 1).sum())


def dedupe(w: Writer, key: str, keep: str = "keep-first", batch_size: int = 65536,
           dry_run: bool = False) -> DedupeStats:
    w.require_gate("dedupe")
    if key not in DEDUPE_KEYS:
        raise SchemaError(f"Unknown dedupe key {key!r}.", hint=f"Use one of: {', '.join(DEDUPE_KEYS)}.")
    if keep not in KEEP:
        raise SchemaError(f"Unknown keep policy {keep!r}.", hint=f"Use one of: {', '.join(KEEP)}.")
    w.require()
    if dry_run:  # X8 (div): counts only, no lock, no freeze, no write
        mask, groups = keep_mask(dedupe_keys(w.paths.records, key), keep)
        return DedupeStats(len(mask), int((~mask).sum()), groups, key, keep)
    with w.transaction("dedupe", gate="dedupe") as txn:
        paths = txn.paths
        mask, groups = keep_mask(dedupe_keys(paths.records, key), keep)
        stats = DedupeStats(len(mask), int((~mask).sum()), groups, key, keep)
        if stats.rows_dropped == 0:
            return stats
        txn.freeze()  # may restamp the base: same rows in the same order, so the mask still holds
        pf = pq.ParquetFile(paths.records)
        meta = m1_metadata(base_metadata(paths), hash_registry(txn.registry))

        def batches():
            start = 0
            for batch in pf.iter_batches(batch_size=batch_size):
                m = mask[start:start + batch.num_rows]
                start += batch.num_rows
                yield batch.filter(pa.array(m))

        rewrite_base(paths, pf.schema_arrow.remove_metadata(), batches, meta, label="dedupe", journal=txn.journal)
        args = {"key": key, "keep": keep, "rows_total": stats.rows_total, "rows_dropped": stats.rows_dropped,
                "groups": stats.groups, "maintenance_reason": txn.reason}
        txn.event("dedupe", args=args, metrics={"rows_total": stats.rows_total,
                                                "rows_dropped": stats.rows_dropped, "groups": stats.groups})
    return stats
