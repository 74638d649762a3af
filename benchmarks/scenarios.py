"""The scenarios of issue 5. Each returns entries {n, measurements, ratio, target, met, ...};
the variants of one scenario are measured interleaved (run 1 of each, then run 2, ...)."""
from __future__ import annotations

import shutil
import time
import traceback
from pathlib import Path
from typing import Callable

import pyarrow.parquet as pq

from .build import ATTACH_NS, READ_NAMESPACES, WRITE_NS, Built, link_copy
from .measure import run_step, summarize

MB = 1 << 20
CHECK_MAX_N = 100_000  # compare ours cell by cell with the pyarrow baseline up to this N
Variant = Callable[[int], tuple]  # run index -> (step name, args[, cleanup])


def measure(variants: dict[str, Variant], runs: int) -> dict:
    samples: dict[str, list] = {v: [] for v in variants}
    for r in range(runs):
        for name, make in variants.items():
            step, args, *cleanup = make(r)
            try:
                samples[name].append(run_step(step, args))
            finally:
                for fn in cleanup:
                    fn()
    return {v: summarize(s) for v, s in samples.items()}


def _ours(b: Built, **extra) -> dict:
    return {"root": str(b.root), "name": b.name, "dir": str(b.dir), **extra}


def _fixed(step: str, args: dict) -> Variant:
    return lambda r: (step, args)


def _on_copy(b: Built, step: str, tag: str, **extra) -> Variant:
    """Mutating step: each run gets its own hard-linked copy of the dataset."""
    def make(r):
        name = f"{b.name}_{tag}{r}"
        d = link_copy(b, name)
        return step, {"root": str(b.root), "name": name, "dir": str(d), **extra}, lambda: shutil.rmtree(d)
    return make


def _s(m: dict, v: str) -> float:
    return m[v]["seconds"]


def merged_read(b: Built, runs: int, ns: str) -> dict:
    key = READ_NAMESPACES[ns][0]
    base = {"dir": str(b.dir), "ns": ns, "key": key}
    m = measure({"ours": _fixed("read_ours", _ours(b, ns=ns)), "duckdb": _fixed("read_duckdb", base),
                 "pyarrow": _fixed("read_pyarrow", base)}, runs)
    best = min(("duckdb", "pyarrow"), key=lambda v: _s(m, v))
    ratio = _s(m, "ours") / _s(m, best)
    rows = {v: m[v].get("rows") for v in m}
    check = run_step("check_merged", _ours(b, ns=ns, key=key)) if b.n <= CHECK_MAX_N else None
    return {"n": b.n, "k": b.k, "namespace": ns, "key": key, "measurements": m, "baseline": best,
            "ratio": ratio, "ratio_def": f"ours / {best} (fastest baseline)", "target": "<= 1.0",
            "met": ratio <= 1.0, "rows_agree": len(set(rows.values())) == 1,
            "same_cells_as_pyarrow": None if check is None else check["equal"],
            **({"differing_columns": check["differing_columns"]} if check and not check["equal"] else {})}


def projection(b: Built, runs: int, scratch: Path) -> dict:
    """Ours against our full read (the target), and the same two reads in DuckDB: how far a projection
    can fall below a full read when both must still decode and match every part's keys."""
    cols = ["id", "bench__c0"]
    duck = {"dir": str(b.dir), "ns": "bench", "key": "id"}
    m = measure({"ours_projection": _fixed("read_ours", _ours(b, ns="bench", columns=cols)),
                 "ours_full": _fixed("read_ours", _ours(b, ns="bench")),
                 "duckdb_projection": _fixed("read_duckdb", {**duck, "columns": cols}),
                 "duckdb_full": _fixed("read_duckdb", duck)}, runs)
    ratio = _s(m, "ours_projection") / _s(m, "ours_full")
    return {"n": b.n, "columns": cols, "measurements": m, "ratio": ratio,
            "ratio_def": "projection / full merged read (both ours)", "target": "<= 0.3", "met": ratio <= 0.3,
            "cols_returned": m["ours_projection"].get("cols"),
            "duckdb_ratio": _s(m, "duckdb_projection") / _s(m, "duckdb_full"),
            "ratio_to_duckdb": _s(m, "ours_projection") / _s(m, "duckdb_projection")}


def head(built: dict[int, Built], runs: int) -> list[dict]:
    out = []
    for n, b in built.items():
        m = measure({"ours": _fixed("head_ours", _ours(b))}, runs)
        out.append({"n": n, "measurements": m, "ratio": None, "target": None, "met": None})
    if len(out) > 1:
        lo, hi = out[0], out[-1]
        r = _s(hi["measurements"], "ours") / _s(lo["measurements"], "ours")
        hi.update(ratio=r, ratio_def=f"head(10) at N={hi['n']:,} / at N={lo['n']:,}", target="<= 2.0",
                  met=r <= 2.0)
    return out


def compaction(b: Built, runs: int, scratch: Path) -> dict:
    ns = "bench"
    base = {"dir": str(b.dir), "ns": ns, "key": "id", "scratch": str(scratch)}
    m = measure({"ours": _on_copy(b, "compact_ours", "compact", ns=ns),
                 "ours_merged_read": _fixed("read_ours", _ours(b, ns=ns)),
                 "duckdb": _fixed("compact_duckdb", base), "pyarrow": _fixed("compact_pyarrow", base)}, runs)
    parts = list((b.dir / "_derived" / ns).glob("part-*.parquet"))
    largest = max(parts, key=lambda p: pq.read_metadata(p).num_rows)
    largest_mb = pq.read_table(largest).nbytes / MB
    limit = 2 * largest_mb + 300
    ratio = _s(m, "ours") / _s(m, "ours_merged_read")
    best = min(("duckdb", "pyarrow"), key=lambda v: _s(m, v))
    peak = m["ours"]["peak_rss_mb"]
    return {"n": b.n, "k": b.k, "measurements": m, "ratio": ratio,
            "ratio_def": "compaction / merged read (both ours)", "target": "<= 1.2; peak RSS <= 2x largest part + 300 MB",
            "met": ratio <= 1.2 and peak <= limit, "largest_part_mb": largest_mb, "peak_limit_mb": limit,
            "ratio_to_baseline": _s(m, "ours") / _s(m, best), "baseline": best}


def part_write(b: Built, runs: int, scratch: Path) -> dict:
    m = measure({"ours": _on_copy(b, "part_write_ours", "pw", ns=WRITE_NS, input=str(b.part_input)),
                 "plain": _fixed("part_write_plain", {"dir": str(b.dir), "input": str(b.part_input),
                                                      "scratch": str(scratch)})}, runs)
    ratio = _s(m, "ours") / _s(m, "plain")
    return {"n": b.n, "rows": pq.read_metadata(b.part_input).num_rows, "measurements": m, "ratio": ratio,
            "ratio_def": "write_overlay_part / (read base ids + pq.write_table zstd)", "target": "<= 1.5",
            "met": ratio <= 1.5}


def attach(b: Built, runs: int, scratch: Path) -> dict:
    m = measure({"ours": _on_copy(b, "attach_ours", "at", ns=ATTACH_NS, input=str(b.attach_input)),
                 "plain": _fixed("attach_plain", {"dir": str(b.dir), "input": str(b.attach_input),
                                                  "scratch": str(scratch)})}, runs)
    ratio = _s(m, "ours") / _s(m, "plain")
    return {"n": b.n, "rows": pq.read_metadata(b.attach_input).num_rows, "measurements": m, "ratio": ratio,
            "ratio_def": "attach (parquet file) / (read file + read base ids + pq.write_table zstd)",
            "target": None, "met": None}


def ingest(b: Built, runs: int, scratch: Path) -> dict:
    def ours(r):
        name = f"ingest_r{r}"
        return "ingest_ours", {"root": str(b.root), "name": name, "input": str(b.seqs_path)}, \
            lambda: shutil.rmtree(b.root / name, ignore_errors=True)
    m = measure({"ours": ours, "plain": _fixed("ingest_plain", {"input": str(b.seqs_path),
                                                                 "scratch": str(scratch)})}, runs)
    input_mb = pq.read_table(b.seqs_path).nbytes / MB
    limit = 2 * input_mb + 300
    secs, peak = _s(m, "ours"), m["ours"]["peak_rss_mb"]
    return {"n": b.n, "measurements": m, "ratio": secs / _s(m, "plain"),
            "ratio_def": "add_sequences / (hashlib ids + pq.write_table)", "input_mb": input_mb,
            "peak_limit_mb": limit, "target": "<= 5 s; peak RSS <= 2x input + 300 MB",
            "met": secs <= 5.0 and peak <= limit}


def dagster(built: dict[int, Built], runs: int, scratch: Path) -> list[dict]:
    from . import dagster_bench

    return dagster_bench.run(built, runs, scratch)


def run_all(built: dict[int, Built], runs: int, scratch: Path, only: set | None = None) -> dict:
    scratch.mkdir(parents=True, exist_ok=True)
    ns_of = {"merged_read": "bench", "merged_read_list": "benchlist", "merged_read_seqkey": "benchseq"}
    per_n: dict[str, Callable[[Built], dict]] = {
        **{s: (lambda b, ns=ns: merged_read(b, runs, ns)) for s, ns in ns_of.items()},
        "projection": lambda b: projection(b, runs, scratch),
        "compaction": lambda b: compaction(b, runs, scratch),
        "part_write": lambda b: part_write(b, runs, scratch),
        "attach": lambda b: attach(b, runs, scratch),
    }
    whole: dict[str, Callable[[], list]] = {
        "head": lambda: head(built, runs),
        "ingest": lambda: [ingest(built[max(built)], runs, scratch)],
        "dagster": lambda: dagster(built, runs, scratch),
    }
    order = ["merged_read", "merged_read_list", "merged_read_seqkey", "projection", "head", "compaction",
             "part_write", "attach", "ingest", "dagster"]
    results: dict[str, list] = {}
    for name in order:
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        try:
            results[name] = [per_n[name](b) for b in built.values()] if name in per_n else whole[name]()
            print(f"-- {name}: {time.perf_counter() - t0:.1f}s", flush=True)
        except Exception as exc:  # keep measuring the others; run.py exits 1 on any error
            results[name] = [{"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-4000:]}]
            print(f"   FAILED: {type(exc).__name__}: {str(exc)[:2000]}", flush=True)
    return results
