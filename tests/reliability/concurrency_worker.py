"""One process of the readers-during-maintenance test: `python concurrency_worker.py ROLE ROOT SECONDS OUT [K]`.

Roles:
  writer K   loops: write a part of namespace `w` setting column w__k<K> = i on *every* base row (i = 1, 2, ...)
  compactor  loops: overlay-compact `w` in a maintenance gate; every 3rd round also appends 3 base rows
             (a records.parquet rewrite)
  reader     loops: read_table(id, w__k0..w__k3) and checks the invariant below
Invariant (a read is a consistent state): for each writer column, every non-NULL value is the same
(a part is seen whole or not at all: rows added after a part was written are NULL there), values never
go backwards between successive reads of one reader, and the row count never shrinks.
"""
from __future__ import annotations

import json
import sys
import time
import traceback

import pyarrow as pa
import pyarrow.compute as pc

NS = "w"
WRITERS = 4
COLS = [f"{NS}__k{k}" for k in range(WRITERS)]


def setup(root) -> None:
    from usr_core import Dataset, register_namespace

    register_namespace(root, NS, ",".join(f"{c}:int64" for c in COLS))
    ds = Dataset(root, "demo")
    ds.init(source="concurrency")
    ds.import_rows([{"sequence": "ACGT" + "ACGT"[i % 4] * (i + 1)} for i in range(200)])
    ids = ds.read_table(columns=["id"])["id"]
    ds.write_overlay(NS, pa.table({"id": ids, **{c: pa.array([0] * len(ids), pa.int64()) for c in COLS}}))


def writer(ds, k: int, deadline: float) -> dict:
    i = 0
    col = COLS[k]
    while time.monotonic() < deadline:
        i += 1
        ids = ds.read_table(columns=["id"], include_overlays=False, include_deleted=True)["id"]
        ds.write_overlay_part(NS, pa.table({"id": ids, col: pa.array([i] * len(ids), pa.int64())}))
    return {"parts": i}


def compactor(ds, deadline: float) -> dict:
    rounds = compactions = appended = 0
    while time.monotonic() < deadline:
        rounds += 1
        with ds.maintenance(reason="concurrency test"):
            try:
                ds.compact_overlay(NS)
                compactions += 1
            except Exception as exc:  # no parts right now: nothing to compact
                if "not found" not in str(exc) and "no parts" not in str(exc).lower():
                    raise
        if rounds % 3 == 0:
            ds.import_rows([{"sequence": "GGGTTT" + "ACGT"[j % 4] * (appended + j + 1)} for j in range(3)])
            appended += 3
        time.sleep(0.05)
    return {"compactions": compactions, "rows_appended": appended}


def reader(ds, deadline: float) -> dict:
    reads, last, last_rows = 0, [0] * WRITERS, 0
    while time.monotonic() < deadline:
        t = ds.read_table(columns=["id"] + COLS)
        reads += 1
        if t.num_rows < last_rows:
            raise AssertionError(f"row count shrank: {last_rows} -> {t.num_rows}")
        last_rows = t.num_rows
        for k, c in enumerate(COLS):
            if t[c].null_count > t.num_rows - 200:  # setup wrote 0 for the first 200 rows
                raise AssertionError(f"{c} lost values: {t[c].null_count} NULLs in {t.num_rows} rows")
            vals = pc.unique(t[c].drop_null()).to_pylist()
            if len(vals) > 1:
                raise AssertionError(f"torn read: {c} has values {sorted(vals)[:6]}")
            if vals and vals[0] < last[k]:
                raise AssertionError(f"{c} went backwards: {last[k]} -> {vals[0]}")
            if vals:
                last[k] = vals[0]
    return {"reads": reads, "last": last, "rows": last_rows}


def main(argv) -> int:
    role, root, seconds, out = argv[:4]
    from usr_core import Dataset

    ds = Dataset(root, "demo")
    deadline = time.monotonic() + float(seconds)
    try:
        if role == "writer":
            res = writer(ds, int(argv[4]), deadline)
        elif role == "compactor":
            res = compactor(ds, deadline)
        else:
            res = reader(ds, deadline)
        res["ok"] = True
    except Exception as exc:
        res = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
    with open(out, "w") as fh:
        json.dump(res, fh)
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
