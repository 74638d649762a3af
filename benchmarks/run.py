"""`python -m benchmarks.run [--quick] [--n 100000,1000000] [--runs 3] [--out FILE] [--doc FILE]`
(`python -m benchmarks.run --scale --workdir DIR ...` runs the scale benchmark, benchmarks/scale.py)

Builds synthetic datasets in a temp dir through usr_core's public API, measures every scenario of
issue 5 side by side with its baseline (each measurement in a fresh interpreter, medians over
runs, runs interleaved), prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from . import build as B
from . import report, scale, scenarios

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "latest.json"


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[1])
    p.add_argument("--quick", action="store_true", help="N=2000, 1 run, K=3: a smoke run of a few seconds")
    p.add_argument("--n", default=None, help="comma-separated dataset sizes (default 100000,1000000)")
    p.add_argument("--runs", type=int, default=None, help="measurements per variant (default 3)")
    p.add_argument("--k", type=int, default=None, help="overlay parts per namespace (default 10)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})")
    p.add_argument("--doc", type=Path, default=None, help="also write the Markdown report (docs/performance.md)")
    p.add_argument("--only", default=None, help="comma-separated scenario names (debugging)")
    p.add_argument("--workdir", type=Path, default=None, help="keep the generated data here (default: a temp dir)")
    a = p.parse_args(argv)
    a.n = [int(x.replace("_", "")) for x in a.n.split(",")] if a.n else ([2000] if a.quick else [100_000, 1_000_000])
    a.runs = a.runs or (1 if a.quick else 3)
    a.k = a.k or (3 if a.quick else 10)
    a.only = set(a.only.split(",")) if a.only else None
    return a


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--scale" in argv:
        return scale.main([x for x in argv if x != "--scale"])
    a = parse_args(argv)
    started = time.perf_counter()
    host = report.machine()  # load average before the run
    work = a.workdir or Path(tempfile.mkdtemp(prefix="usr-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        built = {}
        for n in sorted(a.n):
            t0 = time.perf_counter()
            built[n] = B.build(work / f"n{n}", n, a.k)
            print(f"built N={n:,} K={a.k} in {time.perf_counter() - t0:.1f}s "
                  f"({', '.join(f'{k} {v:.1f}s' for k, v in built[n].seconds.items())})", flush=True)
        results = scenarios.run_all(built, a.runs, work / "scratch", only=a.only)
    finally:
        if a.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    doc = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {**host, "loadavg_end": report.machine()["loadavg"]},
        "config": {"n": a.n, "runs": a.runs, "k": a.k, "quick": a.quick},
        "build_seconds": {str(n): b.seconds for n, b in built.items()},
        "total_seconds": None,
        "scenarios": results,
    }
    doc["total_seconds"] = round(time.perf_counter() - started, 1)
    print()
    print(report.table(doc))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"\nwrote {a.out} (total {doc['total_seconds']}s)")
    if a.doc:
        kept = report.keep_scale_section(a.doc.read_text()) if a.doc.exists() else ""
        text = report.markdown(doc)
        a.doc.write_text(report.with_scale_section(text, kept) if kept else text)
        print(f"wrote {a.doc}")
    failed = [k for k, v in results.items() if any("error" in e for e in v)]
    if failed:
        print(f"FAILED scenarios: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
