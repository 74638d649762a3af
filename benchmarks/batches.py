"""Batch-wise namespace memory (issue 12): one command,

    .venv/bin/python -m benchmarks.batches                        # 5M rows, batch_size 250k, target peak RSS <= 1.5 GB
    .venv/bin/python -m benchmarks.batches --n 200000 --batch-size 20000 --max-rss-gb 0   # smoke

Builds an N-row dataset (in a temp dir, or --workdir), then materializes a namespace declared with
`batch_size=B` through Dagster (`dagster.materialize`, ephemeral instance) in a child process, and reads that
process's peak RSS from the kernel (wait4). The function is called on record batches streamed from usr_core's
scan and a part is written per batch, so the peak stays bounded whatever N is. For scale the same run reports the
size of the dataset's `sequence` column in memory (what a whole-table read of it alone would hold). Exits 1 above
`--max-rss-gb` or when a row is missing.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

DATASET = "bench/batches"


def gc_batch(records):
    """GC fraction of each sequence, vectorised per batch."""
    import pyarrow as pa
    import pyarrow.compute as pc

    seq = records.column("sequence")
    gc = pc.add(pc.count_substring(seq, "G"), pc.count_substring(seq, "C")).cast(pa.float64())
    return pa.table({"id": records.column("id"), "gcb__fraction": pc.divide(gc, pc.utf8_length(seq).cast(pa.float64()))})


def _namespace(batch_size: int):
    from usr_dagster import usr_namespace

    return usr_namespace("gcb", columns={"fraction": "float64"}, code_version="bench-1", owner="bench",
                         batch_size=batch_size)(gc_batch)


def build(root: Path, n: int, chunk: int = 1_000_000, seed: int = 3) -> float:
    import pyarrow as pa

    from usr_core import Dataset, ensure_registry_entries

    from .synth import random_sequences

    t = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    ensure_registry_entries(root, {"gcb": _namespace(1).registry_entry()})
    ds = Dataset(root, DATASET)
    ds.init(source="benchmark")
    for i, start in enumerate(range(0, n, chunk)):
        ds.add_sequences(pa.table({"sequence": random_sequences(min(chunk, n - start), seed + i, 40, 120)}),
                         bio_type="dna", alphabet="dna_4", source="benchmark")
    return time.perf_counter() - t


def materialize(root: Path, batch_size: int) -> None:
    """Child process: one materialization of the batch-wise namespace."""
    import dagster as dg

    from usr_dagster import UsrResource, build_usr_definitions

    spec = _namespace(batch_size)
    defs = build_usr_definitions(root, [spec], datasets=[DATASET])
    key = dg.AssetKey([*DATASET.split("/"), spec.name])
    assets = [a for a in defs.assets if getattr(a, "key", None) == key]
    res = dg.materialize(assets, instance=dg.DagsterInstance.ephemeral(), resources={"usr": UsrResource(root=str(root))})
    assert res.success
    mat = res.asset_materializations_for_node(assets[0].op.name)[0]
    print(json.dumps({"rows_computed": mat.metadata["usr/rows_computed"].value,
                      "parts_written": mat.metadata["usr/parts_written"].value}))


def run(n: int, batch_size: int, workdir: Path | None) -> dict:
    import subprocess

    import pyarrow.parquet as pq

    from usr_core import Dataset

    tmp = tempfile.TemporaryDirectory(prefix="usr-batches-") if workdir is None else None
    root = Path(tmp.name if tmp else workdir) / "root"
    try:
        build_s = 0.0
        if not (root / DATASET / "records.parquet").exists():
            build_s = build(root, n)
        ds = Dataset(root, DATASET)
        if "gcb" in [o.namespace for o in ds.list_overlays()]:  # a kept --workdir: measure a full computation again
            ds.remove_overlay("gcb")
        seq_bytes = pq.read_table(ds.records_path, columns=["sequence"]).nbytes
        t = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.batches", "--child", str(root),
                                 "--batch-size", str(batch_size)], stdout=subprocess.PIPE, text=True,
                                cwd=str(Path(__file__).resolve().parents[1]))
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        secs = time.perf_counter() - t
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"the materialization failed ({status})")
        child = json.loads(out.strip().splitlines()[-1])
        t = ds.read_table(columns=["id", "gcb__fraction"])
        return {"rows": n, "batch_size": batch_size, "build_s": round(build_s, 1), "materialize_s": round(secs, 1),
                "peak_rss_gb": round(usage.ru_maxrss * 1024 / 1e9, 3), **child,
                "sequence_column_gb": round(seq_bytes / 1e9, 3), "rows_with_value": t.num_rows - t.column(1).null_count}
    finally:
        if tmp:
            tmp.cleanup()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.batches", description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=5_000_000)
    p.add_argument("--batch-size", type=int, default=250_000)
    p.add_argument("--workdir", type=Path, default=None, help="keep the root here (default: a temp dir)")
    p.add_argument("--max-rss-gb", type=float, default=1.5)
    p.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child is not None:
        materialize(a.child, a.batch_size)
        return 0
    out = run(a.n, a.batch_size, a.workdir)
    print(json.dumps(out, indent=2))
    ok = out["rows_with_value"] == a.n and (a.max_rss_gb <= 0 or out["peak_rss_gb"] <= a.max_rss_gb)
    print(f"{'OK' if ok else 'MISSED'}: peak RSS {out['peak_rss_gb']} GB for {a.n} rows in batches of "
          f"{a.batch_size} (target <= {a.max_rss_gb} GB), {out['rows_with_value']} rows with a value")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
