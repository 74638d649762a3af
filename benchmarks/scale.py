"""`python -m benchmarks.scale --workdir DIR [--n 5000000,20000000] [--list-n 2000000] [--budget 1GiB]`
(also `python -m benchmarks.run --scale ...`).

Reads at scale under a memory budget (issue 15): N base records with 3 overlapping parts (each a
random 60% of the ids) of two float64 columns, plus a dataset of `--list-n` records with a
list<float32> namespace of 256 values per row.  For each: our full scan and projection (`id` + one
column) with `memory_budget`, and DuckDB's hand-written merge (benchmarks.baselines) unlimited and
with `memory_limit` = our budget, all streamed (batches / to_arrow_reader), each in a fresh forked
process of the same run: seconds, peak RSS, bytes read, and our peak in bytes per row.

Data is built once under --workdir and reused (never in git); its files are read once before each
scenario so every variant starts from a warm page cache.  The machine may be shared: compare
ratios within one run.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from . import report

NAME = "scale"
NS, LIST_NS, LIST_LEN = "sc", "emb", 256
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "scale.json"


def _rchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return -1


# --------------------------------------------------------------------------------- data
def _start(root: Path, ns: str, columns: str, n: int, seed: int):
    """(dataset, ids) of a new build of n records with namespace `ns` registered; None when built already."""
    from usr_core import Dataset, register_namespace

    if (root / ".built").exists():
        return None
    root.mkdir(parents=True, exist_ok=True)
    register_namespace(root, ns, columns, overwrite=True)
    ds = Dataset(root, NAME)
    if not ds.paths.records.is_file():
        ds.init(source="synthetic")
    return ds, _add_in_chunks(ds, n, seed)


def build_floats(workdir: Path, n: int, seed: int = 1) -> Path:
    """Dataset of n records + 3 overlapping float parts; returns the dataset dir (reused when built)."""
    root = workdir / f"floats_n{n}"
    started = _start(root, NS, f"{NS}__a:float64,{NS}__b:float64", n, seed)
    if started is not None:
        ds, ids = started
        rng = np.random.default_rng(seed + 1)
        for _ in range(3):
            idx = np.flatnonzero(rng.random(n) < 0.6)
            ds.write_part(NS, pa.table({"id": ids.take(pa.array(idx)),
                                        f"{NS}__a": pa.array(rng.random(len(idx)), mask=rng.random(len(idx)) < 0.1),
                                        f"{NS}__b": pa.array(rng.random(len(idx)))}))
            del idx
        (root / ".built").write_text("ok\n")
    return root / NAME


def build_lists(workdir: Path, n: int, seed: int = 2, chunk: int = 250_000) -> Path:
    """Dataset of n records + a list<float32> namespace of LIST_LEN values per row (parts of `chunk` rows)."""
    root = workdir / f"lists_n{n}"
    started = _start(root, LIST_NS, f"{LIST_NS}__v:list<float32>", n, seed)
    if started is not None:
        ds, ids = started
        rng = np.random.default_rng(seed + 1)
        for lo in range(0, n, chunk):
            m = min(chunk, n - lo)
            values = pa.array(rng.random(m * LIST_LEN, dtype=np.float32))
            offsets = pa.array(np.arange(0, (m + 1) * LIST_LEN, LIST_LEN, dtype=np.int32))
            ds.write_part(LIST_NS, pa.table({"id": ids.slice(lo, m),
                                             f"{LIST_NS}__v": pa.ListArray.from_arrays(offsets, values)}))
        (root / ".built").write_text("ok\n")
    return root / NAME


def _add_in_chunks(ds, n: int, seed: int, chunk: int = 5_000_000) -> pa.Array:
    """Import n random sequences, at most `chunk` per import (bounded memory while building)."""
    from . import synth

    ids = []
    for i, lo in enumerate(range(0, n, chunk)):
        table = synth.sequences_table(min(chunk, n - lo), seed + 1000 * i)
        ids.append(pa.array(ds.add_sequences(table, bio_type="dna", alphabet="dna_4").ids, pa.string()))
    return pa.concat_arrays(ids)


# --------------------------------------------------------------------------------- steps
def _ours(ds_dir: str, columns, budget) -> int:
    from usr_core import Dataset

    ds_dir = Path(ds_dir)
    scan = Dataset(ds_dir.parent, ds_dir.name).scan(columns=columns, memory_budget=budget)
    rows = sum(b.num_rows for b in scan)
    return rows, {"ordered": scan.ordered, "ranges": scan.ranges}


def _duckdb(ds_dir: str, ns: str, columns, limit) -> int:
    import duckdb

    from .baselines import duckdb_merged_sql

    con = duckdb.connect()
    if limit:
        con.execute(f"SET memory_limit = '{int(limit) >> 20}MB'")
        con.execute(f"SET temp_directory = '{Path(ds_dir).parent / 'duckdb_tmp'}'")
    rows = sum(b.num_rows for b in con.sql(duckdb_merged_sql(Path(ds_dir), ns, columns=columns)).to_arrow_reader(65536))
    con.close()
    return rows, {}


def _child(conn, fn, args) -> None:
    try:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        r0, t0 = _rchar(), time.perf_counter()
        rows, extra = fn(*args)
        secs = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        conn.send({"seconds": round(secs, 2), "peak_rss_mb": round(peak / 1024), "rss_before_mb": round(before / 1024),
                   "read_mb": round((_rchar() - r0) / 2**20), "rows": rows, **extra})
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        conn.send({"error": repr(exc)[:500]})
    finally:
        conn.close()


def measure(fn, *args) -> dict:
    ctx = mp.get_context("fork")  # the parent holds no data: a child starts from its small resident set
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, fn, args))
    proc.start()
    send.close()
    try:
        out = recv.recv()
    except EOFError:
        out = {"error": f"died (exit code {proc.exitcode}; OOM killer?)"}
    proc.join()
    return out


def _warm(ds_dir: Path) -> None:
    """Read every file of the dataset once, so the first measured read does not pay for a cold page
    cache that the following ones (DuckDB's) would not."""
    for path in sorted(ds_dir.rglob("*")):
        if path.is_file():
            with open(path, "rb") as fh:
                while fh.read(8 << 20):
                    pass


def scenarios(ds_dir: Path, ns: str, columns_list, budget: int, n: int) -> dict:
    out = {}
    for label, columns in columns_list:
        _warm(ds_dir)
        row = {"ours": measure(_ours, str(ds_dir), columns, budget),
               "duckdb_unlimited": measure(_duckdb, str(ds_dir), ns, columns, None),
               "duckdb_limited": measure(_duckdb, str(ds_dir), ns, columns, budget)}
        ours = row["ours"]
        if "error" not in ours:
            ours["bytes_per_row"] = round((ours["peak_rss_mb"] << 20) / n)
            for base in ("duckdb_unlimited", "duckdb_limited"):
                if "error" not in row[base]:
                    row[f"ratio_vs_{base}"] = round(ours["seconds"] / row[base]["seconds"], 2)
        out[label] = row
        print(json.dumps({label: row}), flush=True)
    return out


def main(argv=None) -> int:
    from usr_core.budget import memory_budget

    p = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[1])
    p.add_argument("--workdir", type=Path, required=True, help="data is built here once and reused")
    p.add_argument("--n", default="5000000,20000000", help="comma-separated base sizes")
    p.add_argument("--list-n", type=int, default=2_000_000, help="rows of the list<float32>[256] dataset (0: skip)")
    p.add_argument("--budget", default=None, help="memory budget (default: USR_MEMORY_BUDGET or 1 GiB)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--doc", type=Path, default=None, help="also write the scale section of this Markdown file")
    a = p.parse_args(argv)
    budget = memory_budget(a.budget)
    results = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "budget_bytes": budget,
               "loadavg_start": [round(x, 2) for x in __import__("os").getloadavg()], "runs": {}}
    for n in [int(x.replace("_", "")) for x in a.n.split(",") if x]:
        t0 = time.perf_counter()
        ds_dir = measure_build(build_floats, a.workdir, n)
        print(f"floats N={n:,}: data ready in {time.perf_counter() - t0:.0f}s", flush=True)
        results["runs"][f"floats_{n}"] = scenarios(ds_dir, NS, [("full", None), ("projection", ["id", f"{NS}__a"])],
                                                   budget, n)
    if a.list_n:
        t0 = time.perf_counter()
        ds_dir = measure_build(build_lists, a.workdir, a.list_n)
        print(f"lists N={a.list_n:,}: data ready in {time.perf_counter() - t0:.0f}s", flush=True)
        results["runs"][f"lists_{a.list_n}"] = scenarios(ds_dir, LIST_NS, [("list", ["id", f"{LIST_NS}__v"])],
                                                         budget, a.list_n)
    results["loadavg_end"] = [round(x, 2) for x in __import__("os").getloadavg()]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {a.out}")
    if a.doc:
        a.doc.write_text(report.with_scale_section(a.doc.read_text() if a.doc.exists() else "",
                                                   report.scale_markdown(results)))
        print(f"wrote {a.doc}")
    return 0


def _build_child(conn, fn, workdir, n):
    try:
        conn.send(str(fn(workdir, n)))
    except BaseException as exc:  # noqa: BLE001
        conn.send("error: " + repr(exc)[:2000])
    conn.close()


def measure_build(fn, workdir: Path, n: int) -> Path:
    """Build in a child process, so the measuring parent stays small."""
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_build_child, args=(send, fn, workdir, n))
    proc.start()
    send.close()
    got = recv.recv()
    proc.join()
    if got.startswith("error: "):
        raise RuntimeError(got)
    return Path(got)


if __name__ == "__main__":
    sys.exit(main())
