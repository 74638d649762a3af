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
read of the base ids; compaction with ours' own merged read of the same parts; the projection with
ours' full read and, for reference, DuckDB's projection and full read of the same files."""


def markdown(doc: dict) -> str:
    mc, cfg = doc["machine"], doc["config"]
    return "\n".join([
        "# Performance",
        "",
        "Generated by `python -m benchmarks.run --doc docs/performance.md` "
        f"(N = {', '.join(f'{n:,}' for n in cfg['n'])}, K = {cfg['k']}, {cfg['runs']} runs; "
        f"total {doc['total_seconds']} s). Targets are those of issues 5 and 15; ratios come from the same run.",
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


# --- reads at scale (benchmarks/scale.py, issue 15) -------------------------------------------------

SCALE_BEGIN, SCALE_END = "<!-- scale:begin -->", "<!-- scale:end -->"

MEMORY_MODEL = """\
**Memory model.** A scan (`Dataset.scan`; export and materialize stream through it, `read_table` and
the Dagster IO manager build their table from it) holds a join state: the base key column with its
hash index, the merged overlay columns aligned to base rows, and the parts in flight. Parts are read
newest first, each part's keys mapped to base rows as soon as it is read (ids and sequences alike, by
verified 64-bit hashes) and its values fed to per-column winners, then the part is dropped: about two
parts are held at once, whatever their number. Before reading, the scan estimates that state from the
parquet footers (calibrated on measured peaks, `usr_core/budget.py`) and compares it with the memory
budget: `memory_budget=` (bytes or e.g. `"512MB"`), else the `USR_MEMORY_BUDGET` environment
variable, else 1 GiB. Within budget it streams base batches in base order, reading ahead only what
the budget leaves beside the join. Over budget it joins one key-prefix range at a time, in three
passes (`usr_core/rangescan.py`): the base key columns, with row numbers, are spilled by range to
Arrow files in the temp folder (`$TMPDIR`); each range is joined on its own (clustered parts read only
the row groups of that range, so wide overlay columns such as lists and embeddings are never all held
at once) and its merged overlay columns go to a file in row order; then the base is streamed in order
and each batch takes its rows from every range's file. Only keys and merged columns are spilled, and
rows keep base order (`scan.ranges` says how many ranges; an INFO line on the `usr_core.read` logger).
Compaction (`compact_overlay(namespace, memory_budget=None)`) merges clustered parts range by range
with ranges sized to the budget, and other parts whole when they fit, else by key range. The spill
needs free space in the temp folder of about the key columns and the merged columns (20M ids and two
float64 columns: ~1.5 GB)."""


def _mb(v) -> str:
    return "—" if v is None else f"{v:,}"


def scale_markdown(doc: dict) -> str:
    """The scale section: the memory model and one table of `benchmarks.scale` results."""
    budget = doc["budget_bytes"]
    load = [", ".join(f"{float(x):.1f}" for x in doc.get(k) or []) for k in ("loadavg_start", "loadavg_end")]
    parent = max([row["ours"].get("rss_before_mb", 0) for scen in doc["runs"].values() for row in scen.values()] + [0])
    lines = [SCALE_BEGIN, "## Reads at scale and the memory budget (issue 15)", "", MEMORY_MODEL, "",
             f"Measured by `python -m benchmarks.run --scale --workdir DIR` on {doc['date']} (budget "
             f"{budget / 2**30:.2f} GiB; load average {load[0]} -> {load[1]}; "
             "the machine is shared: compare ratios within the run). Data: N random DNA records with 3 "
             "overlapping parts (each 60% of the ids) of two float64 columns; the list dataset has one "
             "`list<float32>` of 256 values per row. Every figure is one fresh forked process streaming "
             "the whole result (our `scan()` batches, DuckDB's `to_arrow_reader`); DuckDB runs the "
             "hand-written merge of `benchmarks/baselines.py`, unlimited and with `memory_limit` = our "
             f"budget. Peak RSS includes ~{parent} MB of the forked parent.", "",
             "| data | read | ours s | ours peak MB | ours B/row | ours order, joins | DuckDB s / MB | DuckDB limited "
             "s / MB | ours / DuckDB | ours / DuckDB limited | read MB ours / DuckDB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for data, scen in doc["runs"].items():
        for label, row in scen.items():
            o, du, dl = row["ours"], row["duckdb_unlimited"], row["duckdb_limited"]

            def sm(m):
                return m["error"][:40] if "error" in m else f"{m['seconds']} / {_mb(m['peak_rss_mb'])}"
            joins = "one join" if o.get("ranges") == 1 else f"{o.get('ranges')} key ranges"
            order = "—" if "error" in o else ("base, " + joins if o.get("ordered") else f"key-range order, {joins}")
            lines.append(f"| {data} | {label} | {o.get('seconds', o.get('error', '')[:40])} | "
                         f"{_mb(o.get('peak_rss_mb'))} | {o.get('bytes_per_row', '—')} | {order} | {sm(du)} | "
                         f"{sm(dl)} | {row.get('ratio_vs_duckdb_unlimited', '—')} | "
                         f"{row.get('ratio_vs_duckdb_limited', '—')} | {_mb(o.get('read_mb'))} / "
                         f"{_mb(du.get('read_mb'))} |")
    lines += ["", SCALE_END]
    return "\n".join(lines)


def keep_scale_section(old_text: str) -> str:
    """The scale section of an existing performance.md ('' if none), kept when the rest is regenerated."""
    if SCALE_BEGIN in old_text and SCALE_END in old_text:
        return old_text[old_text.index(SCALE_BEGIN):old_text.index(SCALE_END) + len(SCALE_END)]
    return ""


def with_scale_section(text: str, section: str) -> str:
    old = keep_scale_section(text)
    if old:
        return text.replace(old, section)
    return text.rstrip("\n") + "\n\n" + section + "\n"
