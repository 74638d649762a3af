"""Sharded namespace speed-up (issue 12): one command,

    .venv/bin/python -m benchmarks.shards                       # 200k rows, 4 shards vs 1, target >= 1.6x
    .venv/bin/python -m benchmarks.shards --n 4000 --work 2 --min-speedup 0   # smoke

A CPU-bound namespace (a per-row Python hash of each sequence, `--work` rounds: a stand-in for a model) over an
N-row dataset, materialized end to end under Dagster's multiprocess executor, measured in one run on two copies
of the same root:

- 1 shard: the unsharded namespace, one `dagster job execute` run (job `usr_namespaces`);
- S shards: `shards=S`, one `dagster job execute` run per partition, all launched at once (what a UI backfill does
  through the run queue), each step in its own process.

Wall time covers the process start (code location load) to the last exit. The merged views of both roots must be
equal. Prints the figures (and the load average: the speed-up depends on free cores) and exits 1 below
`--min-speedup`. This file is also the code location the runs load (`USR_BENCH_ROOT` set).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATASET = "bench/shards"
HERE = Path(__file__).resolve()


def cpu_score(records):
    """Per-row Python work over each sequence's first 64 bases (USR_BENCH_WORK rounds)."""
    import pyarrow as pa

    work = int(os.environ.get("USR_BENCH_WORK", "100"))
    out = []
    for s in records.column("sequence").to_pylist():
        h = 0
        for _ in range(work):
            for ch in s[:64]:
                h = (h * 31 + ord(ch)) & 0xFFFFFFFF
        out.append(h)
    return pa.table({"id": records.column("id"), "cpu__digest": pa.array(out, pa.int64())})


def _namespace(shards: int):
    from usr_dagster import usr_namespace

    return usr_namespace("cpu", columns={"digest": "int64"}, code_version="bench-1", owner="bench",
                         shards=shards)(cpu_score)


def _runs(root: Path, home: Path, shards: int, work: int, logs: Path) -> float:
    env = {**os.environ, "USR_BENCH_ROOT": str(root), "USR_BENCH_SHARDS": str(shards), "DAGSTER_HOME": str(home),
           "USR_BENCH_WORK": str(work)}
    dagster = Path(sys.executable).parent / "dagster"
    base = [str(dagster), "job", "execute", "-f", str(HERE)]
    if shards:
        width = len(str(shards - 1))
        cmds = [base + ["-j", f"usr_shards_{shards}", "--tags", json.dumps({"dagster/partition": f"{i:0{width}d}"})]
                for i in range(shards)]
    else:
        cmds = [base + ["-j", "bench_one"]]
    logs.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    procs = [subprocess.Popen(c, env=env, stdout=open(logs / f"run-{shards}-{i}.log", "w"), stderr=subprocess.STDOUT)
             for i, c in enumerate(cmds)]
    codes = [p.wait() for p in procs]
    secs = time.perf_counter() - t
    if any(codes):
        raise SystemExit(f"a run failed ({codes}); logs in {logs}")
    return secs


def _home(path: Path) -> Path:
    import dagster as dg

    path.mkdir(parents=True, exist_ok=True)
    (path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    dg.DagsterInstance.from_config(str(path)).dispose()  # the schema exists before concurrent runs start
    return path


def run(n: int, shards: int, work: int, workdir: Path | None = None, seed: int = 1) -> dict:
    import pyarrow as pa

    from usr_core import Dataset, ensure_registry_entries

    from .synth import random_sequences

    tmp = tempfile.TemporaryDirectory(prefix="usr-shards-") if workdir is None else None
    base = Path(tmp.name if tmp else workdir)
    try:
        one, many = base / "root-1", base / f"root-{shards}"
        for p in (one, many):
            shutil.rmtree(p, ignore_errors=True)
        one.mkdir(parents=True)
        ensure_registry_entries(one, {"cpu": _namespace(0).registry_entry()})
        ds = Dataset(one, DATASET)
        ds.init(source="benchmark")
        ds.add_sequences(pa.table({"sequence": random_sequences(n, seed, 60, 240)}), bio_type="dna",
                         alphabet="dna_4", source="benchmark")
        shutil.copytree(one, many)
        load_before = os.getloadavg()
        t1 = _runs(one, _home(base / "home-1"), 0, work, base / "logs")
        ts = _runs(many, _home(base / f"home-{shards}"), shards, work, base / "logs")
        load_after = os.getloadavg()
        cols = ["id", "cpu__digest"]
        a = Dataset(one, DATASET).read_table(columns=cols).sort_by("id")
        b = Dataset(many, DATASET).read_table(columns=cols).sort_by("id")
        return {"rows": n, "shards": shards, "work": work, "cpus": os.cpu_count(),
                "one_shard_s": round(t1, 2), "sharded_s": round(ts, 2), "speedup": round(t1 / ts, 2),
                "views_equal": a.equals(b) and a.num_rows == n and a.column("cpu__digest").null_count == 0,
                "loadavg_before": [round(x, 2) for x in load_before],
                "loadavg_after": [round(x, 2) for x in load_after]}
    finally:
        if tmp:
            tmp.cleanup()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.shards", description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--work", type=int, default=100, help="rounds of the per-row hash (CPU cost per row)")
    p.add_argument("--workdir", type=Path, default=None, help="keep the roots here (default: a temp dir)")
    p.add_argument("--min-speedup", type=float, default=1.6)
    a = p.parse_args(argv)
    out = run(a.n, a.shards, a.work, a.workdir)
    print(json.dumps(out, indent=2))
    ok = out["views_equal"] and out["speedup"] >= a.min_speedup
    print(f"{'OK' if ok else 'MISSED'}: {a.shards} shards {out['speedup']}x faster than 1 shard "
          f"(target {a.min_speedup}x), merged views equal: {out['views_equal']}")
    return 0 if ok else 1


if os.environ.get("USR_BENCH_ROOT"):  # loaded by `dagster job execute -f` as the runs' code location
    import dagster as dg

    from usr_dagster import build_usr_definitions

    _executor = dg.multiprocess_executor.configured({"max_concurrent": 2, "start_method": {"forkserver": {
        "preload_modules": ["dagster", "pyarrow", "usr_core", "usr_dagster"]}}})
    _spec = _namespace(int(os.environ["USR_BENCH_SHARDS"]))
    # the 1-shard side runs like a shard job: the asset alone, its checks left to usr_checks
    defs = dg.Definitions.merge(build_usr_definitions(os.environ["USR_BENCH_ROOT"], [_spec], executor=_executor),
                                dg.Definitions(jobs=[dg.define_asset_job(
        "bench_one", selection=dg.AssetSelection.assets(dg.AssetKey([*DATASET.split("/"), "cpu"])).without_checks(),
        executor_def=_executor)]))
elif __name__ == "__main__":
    sys.exit(main())
