"""Measured steps. Each measurement runs in its own fresh process (benchmarks.measure).

A step factory does the untimed setup (loading the input table, opening the dataset) and returns
the timed callable. By hand: `python -m benchmarks.steps NAME JSON_ARGS`.
"""
from __future__ import annotations

import gc
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from . import baselines as bl

STEPS: dict[str, Callable[[dict], Callable[[], dict]]] = {}


def step(fn):
    STEPS[fn.__name__] = fn
    return fn


def _ds(a: dict):
    from usr_core import Dataset

    return Dataset(a["root"], a["name"])


def _drain(batches) -> dict:
    rows = cols = 0
    for b in batches:
        rows += b.num_rows
        cols = b.num_columns
    return {"rows": rows, "cols": cols}


# --- merged read, projection, head ------------------------------------------------------

@step
def read_ours(a):
    ds = _ds(a)
    return lambda: _drain(ds.scan(columns=a.get("columns"), include_overlays=[a["ns"]]))


@step
def read_duckdb(a):
    return lambda: {"rows": bl.duckdb_merged_read(Path(a["dir"]), a["ns"], a["key"], columns=a.get("columns"))}


@step
def read_pyarrow(a):
    return lambda: {"rows": bl.pyarrow_merged_read(Path(a["dir"]), a["ns"], a["key"])}


@step
def check_merged(a):
    """Not a timing: does ours return the same cells as the pyarrow baseline (sorted by id)?"""
    ds = _ds(a)

    def run():
        ours = ds.read_table(include_overlays=[a["ns"]]).sort_by("id")
        ref = bl.pyarrow_merged_table(Path(a["dir"]), a["ns"], a["key"]).sort_by("id")
        diff = [c for c in ref.column_names if c not in ours.column_names
                or not ours[c].cast(ref[c].type).equals(ref[c])]
        return {"equal": ours.num_rows == ref.num_rows and not diff and ours.column_names == ref.column_names,
                "differing_columns": diff, "rows": ours.num_rows, "ref_rows": ref.num_rows}
    return run


@step
def head_ours(a):
    ds = _ds(a)
    return lambda: {"rows": ds.head(10).num_rows}


# --- compaction -------------------------------------------------------------------------

@step
def compact_ours(a):
    ds = _ds(a)

    def run():
        with ds.maintenance(reason="bench"):
            ds.compact_overlay(a["ns"])
        return {"rows": pq.read_metadata(Path(a["dir"]) / "_derived" / f"{a['ns']}.parquet").num_rows}
    return run


def _compact_baseline(a, fn):
    parts = bl.ranked_parts(Path(a["dir"]), a["ns"])
    out = Path(tempfile.mkdtemp(dir=a["scratch"])) / "compact.parquet"
    return lambda: {"rows": fn(parts, a["key"], out)}


@step
def compact_duckdb(a):
    return _compact_baseline(a, bl.duckdb_compact)


@step
def compact_pyarrow(a):
    return _compact_baseline(a, bl.pyarrow_compact)


# --- writes -----------------------------------------------------------------------------

def _plain_write(a, table: pa.Table, read_ids: bool):
    out = Path(tempfile.mkdtemp(dir=a["scratch"])) / "plain.parquet"

    def run():
        if read_ids:
            pq.read_table(Path(a["dir"]) / "records.parquet", columns=["id"])
        pq.write_table(table, out, compression="zstd")
        return {"rows": table.num_rows}
    return run


@step
def part_write_ours(a):
    ds, table = _ds(a), pq.read_table(a["input"])
    return lambda: {"rows": ds.write_overlay_part(a["ns"], table)}


@step
def part_write_plain(a):
    return _plain_write(a, pq.read_table(a["input"]), read_ids=True)


@step
def attach_ours(a):
    ds = _ds(a)
    ds.remove_overlay(a["ns"], mode="delete")  # each run attaches into an empty namespace
    return lambda: {"rows": ds.attach(a["input"], a["ns"], key="id")}


@step
def attach_plain(a):
    out = Path(tempfile.mkdtemp(dir=a["scratch"])) / "plain.parquet"

    def run():
        table = pq.read_table(a["input"])
        pq.read_table(Path(a["dir"]) / "records.parquet", columns=["id"])
        pq.write_table(table, out, compression="zstd")
        return {"rows": table.num_rows}
    return run


@step
def ingest_ours(a):
    from usr_core import Dataset

    table = pq.read_table(a["input"])
    ds = Dataset(a["root"], a["name"])
    ds.init(source="bench")
    return lambda: {"rows": ds.add_sequences(table, bio_type="dna", alphabet="dna_4", source="bench").added}


@step
def ingest_plain(a):
    """What a hand-written ingest does at least: SHA-1 ids, lengths, one zstd parquet write."""
    import hashlib

    import pyarrow.compute as pc

    table = pq.read_table(a["input"])
    out = Path(tempfile.mkdtemp(dir=a["scratch"])) / "records.parquet"

    def run():
        seqs = table["sequence"]
        ids = pa.array([hashlib.sha1(b"dna|" + s.encode()).hexdigest() for s in seqs.to_pylist()])
        n = len(ids)
        out_t = pa.table({"id": ids, "bio_type": pa.array(["dna"] * n), "sequence": seqs,
                          "alphabet": pa.array(["dna_4"] * n),
                          "length": pc.utf8_length(seqs).cast(pa.int32()), "source": pa.array(["bench"] * n)})
        pq.write_table(out_t, out, compression="zstd")
        return {"rows": n}
    return run


# --- child entry point ------------------------------------------------------------------

def _rchar() -> int:
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1


def _preload() -> None:
    """Import lazily loaded extension modules up front: the first pq.read_table alone imports
    pyarrow.dataset (~0.4 s), which would otherwise be charged to whichever code runs first."""
    import importlib

    for mod in ("numpy", "pyarrow.compute", "pyarrow.dataset", "pyarrow.acero", "duckdb"):
        try:
            importlib.import_module(mod)
        except ImportError:
            pass
    import pyarrow as pa

    t = pa.table({"k": ["a", "b"] * 500, "v": list(range(1000))})
    t.group_by("k").aggregate([("v", "max")]).join(t, "k")


def measure_here(name: str, args: dict) -> dict:
    """Set the step up, then time it; peak RSS is this process's (a fresh one per measurement)."""
    _preload()
    timed = STEPS[name](args)
    gc.collect()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    io0 = _rchar()
    t0 = time.perf_counter()
    info = timed()
    seconds = time.perf_counter() - t0
    io1 = _rchar()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "rss_before_mb": rss_before / 1024, "peak_rss_mb": peak / 1024,
            "read_bytes": io1 - io0 if io0 >= 0 else None, **(info or {})}


from . import dagster_bench  # noqa: E402,F401  (registers its steps)

def profile(name: str, args: dict, top: int = 30) -> None:
    """cProfile one run of a step (after its setup), sorted by cumulative time."""
    import cProfile
    import pstats

    _preload()
    timed = STEPS[name](args)
    prof = cProfile.Profile()
    prof.runcall(timed)
    pstats.Stats(prof).sort_stats("cumulative").print_stats(top)


if __name__ == "__main__":  # by hand: python -m benchmarks.steps [--profile] NAME JSON_ARGS
    if sys.argv[1] == "--profile":
        profile(sys.argv[2], json.loads(sys.argv[3]))
    else:
        print(json.dumps(measure_here(sys.argv[1], json.loads(sys.argv[2]))))
