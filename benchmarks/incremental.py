"""Incremental namespace materialization (issue 11): one command,

    .venv/bin/python -m benchmarks.incremental --n 1000000            # the figures for docs/dagster.md
    .venv/bin/python -m benchmarks.incremental --n 2000 --add 20      # smoke (tests/dagster/test_incremental_bench.py)

1. an N-row dataset; its namespace materialized through Dagster (`dagster.materialize`, ephemeral instance):
   the function is called with every row;
2. `--add` records added (default 1,000); the re-materialization must call the function with exactly those rows
   and take at most `--max-ratio` (10%) of the first materialization's wall time;
3. a third materialization with nothing new: no function call, no file written, the same data version.

The namespace function is the demo's `gc` (`usr_dagster/demo/namespaces.py`: per-sequence GC fraction and count
in Python, a stand-in for a model); `--fn kmer3` uses the demo's 3-mer profile instead. Prints the figures and
exits 1 when a target is missed.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from .synth import random_sequences

DATASET = "bench/incremental"


def _namespace(fn_name: str, calls: list):
    from usr_dagster import usr_namespace
    from usr_dagster.demo import namespaces as demo

    base = {"gc": demo.gc, "kmer3": demo.kmer3}[fn_name]

    def counted(records: pa.Table) -> pa.Table:
        calls.append(records.num_rows)
        return base.fn(records)

    return usr_namespace(base.name, columns={c["name"].split("__", 1)[1]: c["type"] for c in base.columns},
                         code_version="bench-1", owner="bench")(counted)


def run(n: int, add: int, fn_name: str = "gc", workdir: Path | None = None, seed: int = 1) -> dict:
    import dagster as dg

    from usr_core import Dataset, ensure_registry_entries
    from usr_core.inspect import overlay_files
    from usr_dagster import UsrResource, build_usr_definitions

    tmp = tempfile.TemporaryDirectory(prefix="usr-incremental-") if workdir is None else None
    root = Path(tmp.name if tmp else workdir) / "root"
    root.mkdir(parents=True, exist_ok=True)
    try:
        calls: list[int] = []
        spec = _namespace(fn_name, calls)
        ensure_registry_entries(root, {spec.name: spec.registry_entry()})
        ds = Dataset(root, DATASET)
        ds.init(source="benchmark")
        t0 = time.perf_counter()
        ds.add_sequences(pa.table({"sequence": random_sequences(n, seed, 60, 240)}), bio_type="dna",
                         alphabet="dna_4", source="benchmark")
        build_s = time.perf_counter() - t0
        defs = build_usr_definitions(root, [spec], datasets=[DATASET])
        key = dg.AssetKey([*DATASET.split("/"), spec.name])
        assets = [a for a in defs.assets if getattr(a, "key", None) == key]
        instance = dg.DagsterInstance.ephemeral()
        resources = {"usr": UsrResource(root=str(root))}

        def materialize() -> tuple[float, str, int]:
            before = len(calls)
            t = time.perf_counter()
            res = dg.materialize(assets, instance=instance, resources=resources)
            secs = time.perf_counter() - t
            assert res.success
            version = instance.get_latest_materialization_event(key).asset_materialization.tags[
                "dagster/data_version"]
            return secs, version, sum(calls[before:])

        first_s, v1, rows1 = materialize()
        ds.add_sequences(pa.table({"sequence": random_sequences(add, seed + 1, 60, 240)}), bio_type="dna",
                         alphabet="dna_4", source="benchmark")
        second_s, v2, rows2 = materialize()
        files = [(f.path, f.size_bytes) for f in overlay_files(ds, spec.name)]
        third_s, v3, rows3 = materialize()
        files_after = [(f.path, f.size_bytes) for f in overlay_files(ds, spec.name)]
        return {"n": n, "added": add, "function": fn_name, "build_s": round(build_s, 3),
                "first_s": round(first_s, 3), "first_rows": rows1, "first_calls": len(calls[:1]),
                "second_s": round(second_s, 3), "second_rows": rows2,
                "third_s": round(third_s, 3), "third_rows": rows3, "third_calls": len(calls) - 2,
                "third_wrote_files": files_after != files, "version_changed_on_add": v2 != v1,
                "third_same_version": v3 == v2, "ratio_second_first": round(second_s / first_s, 4)}
    finally:
        if tmp is not None:
            tmp.cleanup()


def verdict(r: dict, max_ratio: float) -> list[str]:
    """The targets missed (empty when all are met)."""
    missed = []
    if r["first_rows"] != r["n"]:
        missed.append(f"first materialization computed {r['first_rows']} rows, expected {r['n']}")
    if r["second_rows"] != r["added"]:
        missed.append(f"re-materialization called the function with {r['second_rows']} rows, expected {r['added']}")
    if r["ratio_second_first"] > max_ratio:
        missed.append(f"re-materialization took {r['ratio_second_first']:.1%} of the first, target <= {max_ratio:.0%}")
    if r["third_rows"] or r["third_calls"]:
        missed.append("third materialization called the function")
    if r["third_wrote_files"]:
        missed.append("third materialization wrote a file")
    if not r["third_same_version"]:
        missed.append("third materialization reported a new data version")
    return missed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000, help="records in the dataset (default 1,000,000)")
    p.add_argument("--add", type=int, default=1000, help="records added before the re-materialization")
    p.add_argument("--fn", choices=["gc", "kmer3"], default="gc", help="demo namespace function")
    p.add_argument("--max-ratio", type=float, default=0.10, help="target: second / first wall time")
    p.add_argument("--workdir", type=Path, help="keep the data here (default: a temp dir, removed)")
    p.add_argument("--json", type=Path, help="also write the figures as JSON")
    a = p.parse_args(argv)
    r = run(a.n, a.add, a.fn, a.workdir)
    print(f"dataset: {r['n']:,} records (built in {r['build_s']:.1f} s), namespace function: demo {r['function']}")
    print(f"1. first materialization:   {r['first_s']:8.2f} s, function called with {r['first_rows']:,} rows")
    print(f"2. +{r['added']:,} records, re-mat.:  {r['second_s']:8.2f} s, function called with {r['second_rows']:,} "
          f"rows ({r['ratio_second_first']:.1%} of the first; target <= {a.max_ratio:.0%})")
    print(f"3. nothing new:             {r['third_s']:8.2f} s, function calls: {r['third_calls']}, file written: "
          f"{r['third_wrote_files']}, same data version: {r['third_same_version']}")
    if a.json:
        a.json.write_text(json.dumps(r, indent=2))
    missed = verdict(r, a.max_ratio)
    for m in missed:
        print("MISSED:", m)
    print("all targets met" if not missed else f"{len(missed)} target(s) missed")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
