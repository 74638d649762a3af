"""Machine description and the Markdown table printed by benchmarks.run."""
from __future__ import annotations

import os
import platform
from pathlib import Path


def machine() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    versions = {}
    for mod in ("pyarrow", "duckdb", "numpy", "dagster"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:
            pass
    return {"nproc": os.cpu_count(), "loadavg": os.getloadavg(), "cpu": cpu or platform.processor(), "ram_gb": ram_gb,
            "python": platform.python_version(), "platform": platform.platform(), "versions": versions}


def _fmt_s(x) -> str:
    return "—" if x is None else (f"{x:.3f}s" if x < 10 else f"{x:.1f}s")


def _fmt_mb(x) -> str:
    return "—" if x is None else f"{x:,.0f}"


LABELS = {
    "merged_read": "merged read (3×float64)", "merged_read_list": "merged read (+list<float64>)",
    "merged_read_seqkey": "merged read (sequence key)", "projection": "projection (id + 1 col)",
    "head": "head(10)", "compaction": "compaction of K parts", "part_write": "part write (N/2 rows)",
    "attach": "attach (≤100k rows)", "ingest": "ingest (add_sequences)", "dagster": "Dagster materialize",
}


def rows(doc: dict):
    for name, entries in doc["scenarios"].items():
        for e in entries:
            label = LABELS.get(name, name)
            if "error" in e:
                yield [label, "", "ERROR", "", "", "", "", "", "", e["error"].splitlines()[0][:100]]
                continue
            m = e.get("measurements") or {}
            ours_key = next((k for k in m if k.startswith("ours")), None)
            ours = m.get(ours_key, {}) if ours_key else {}
            others = " · ".join(f"{k} {_fmt_s(v['seconds'])}" for k, v in m.items() if k != ours_key)
            peaks = " · ".join(f"{_fmt_mb(v['peak_rss_mb'])}" for k, v in m.items())
            ratio = "n/a" if e.get("ratio") is None else f"{e['ratio']:.2f}x"
            met = {True: "yes", False: "**no**", None: "—"}[e.get("met")]
            n = f"{e['n']:,}" if e.get("n") else ""
            read = ours.get("read_bytes")
            yield [label, n, _fmt_s(ours.get("seconds")) if ours else e.get("status", "n/a"), others, ratio,
                   e.get("ratio_def", e.get("note", "")), peaks, "—" if read is None else f"{read / (1 << 20):,.1f}",
                   e.get("target") or "—", met]


HEADER = ["scenario", "N", "ours", "baselines / references", "ratio", "ratio of", "peak RSS MB (same order)",
          "ours read MB", "target", "met"]


def table(doc: dict) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows(doc)]
    mc = doc["machine"]
    lines.append("")
    lines.append(f"{doc['date']} · {mc['nproc']} CPUs ({mc['cpu']}) · {mc['ram_gb']} GB RAM · Python {mc['python']} · "
                 + ", ".join(f"{k} {v}" for k, v in mc["versions"].items()) + " · "
                 + f"runs={doc['config']['runs']} K={doc['config']['k']}")
    return "\n".join(lines)


METHOD = """\
How it is measured (`benchmarks/`): synthetic DNA records (length 100-300) are written through
usr_core's public API into a temp root: `Dataset.init`, `add_sequences`, K `write_overlay_part`
calls per namespace (each part a random 50% of the keys, 3 float64 columns with 10% NULLs; the
`+list` variant adds a `list<float64>[8]` column, the `sequence key` variant keys the parts by
sequence), 1% of the records tombstoned. Every measurement runs in its own freshly forked process
(a forkserver that has imported pyarrow, duckdb and usr_core), so peak RSS is that process's
`ru_maxrss` — it includes ~150 MB of imported libraries (`rss_before_mb` in the JSON). Seconds are
medians over the runs, variants of a scenario are interleaved run by run. Baselines read the same
files: `duckdb` is a hand-written `arg_max(col, part_rank) FILTER (WHERE col IS NOT NULL) GROUP BY
key` over `read_parquet(parts)` LEFT JOINed to `records.parquet` minus tombstones; `pyarrow` is the
same merge via a threaded `group_by(key).aggregate(max row position of the non-NULL cells)` + `take`
and an Acero join. Both skip every check usr_core makes (registry conformance, key normalisation,
O3). The machine may be shared: compare ratios within one run, and read `seconds_all` in the JSON
for the spread. Writes are compared with `pq.write_table(..., compression="zstd")` of the same table plus one
read of the base ids; compaction with ours' own merged read of the same parts."""


def markdown(doc: dict) -> str:
    mc, cfg = doc["machine"], doc["config"]
    return "\n".join([
        "# Performance",
        "",
        "Generated by `python -m benchmarks.run --doc docs/performance.md` "
        f"(N = {', '.join(f'{n:,}' for n in cfg['n'])}, K = {cfg['k']}, {cfg['runs']} runs; "
        f"total {doc['total_seconds']} s). Targets are those of issue 5; ratios come from the same run.",
        "",
        f"Machine: {mc['nproc']} CPUs ({mc['cpu']}), {mc['ram_gb']} GB RAM, {mc['platform']}, Python {mc['python']}, "
        + ", ".join(f"{k} {v}" for k, v in mc["versions"].items())
        + f". Load average (1/5/15 min) before the run: {', '.join(f'{x:.1f}' for x in mc.get('loadavg', []))}, "
        f"after: {', '.join(f'{x:.1f}' for x in mc.get('loadavg_end', []))}. Date: {doc['date']}.",
        "",
        table(doc).rsplit("\n\n", 1)[0],
        "",
        METHOD,
        "",
    ])
