"""Dagster in-process materialization of a namespace asset vs the direct usr_core call (issue 5, item 6).

Both compute the same namespace (GC fraction of each record) from `id, sequence` and write one
overlay part. Dagster side: `usr_dagster.usr_namespace` + `build_usr_definitions` (built in the
untimed setup, as at code-location load), then `dagster.materialize` with an ephemeral instance —
"cold" is the first run in a fresh process, "warm" a second run after one untimed run.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .steps import _ds, step

NS = "benchdg"
COLUMNS = [{"name": f"{NS}__gc", "type": "float64"}]


def _gc_counts(chunk: pa.Array) -> np.ndarray:
    """G/C bytes per string of one chunk (vectorised over the data buffer: the function under test
    should cost about what a real column computation costs, so Dagster's overhead stays visible)."""
    offs = np.frombuffer(chunk.buffers()[1], np.int32, len(chunk) + 1, chunk.offset * 4).astype(np.int64)
    data = np.frombuffer(chunk.buffers()[2], np.uint8)[:offs[-1]]
    hits = (data == ord("G")) | (data == ord("C"))
    if not len(chunk) or offs[-1] == offs[0]:
        return np.zeros(len(chunk), np.int64)
    counts = np.add.reduceat(hits, np.minimum(offs[:-1], offs[-1] - 1), dtype=np.int64)
    counts[offs[1:] == offs[:-1]] = 0  # reduceat gives an empty string the next byte
    return counts


def gc(records: pa.Table) -> pa.Table:
    """GC fraction of each sequence (benchmark namespace)."""
    seq = records["sequence"]
    chunks = seq.chunks if isinstance(seq, pa.ChunkedArray) else [seq]
    counts = np.concatenate([_gc_counts(c) for c in chunks] + [np.empty(0, np.int64)])
    frac = pc.divide(pa.array(counts, pa.float64()), pc.cast(pc.utf8_length(seq), pa.float64()))
    return pa.table({"id": records["id"], f"{NS}__gc": frac})


@step
def dagster_direct(a):
    ds = _ds(a)

    def run():
        table = ds.read_table(columns=["id", "sequence"], include_overlays=False)
        return {"rows": ds.write_overlay_part(NS, gc(table))}
    return run


def _materializer(a):
    import dagster as dg
    from usr_dagster import UsrResource, build_usr_definitions, usr_namespace

    # every run recomputes and writes one part, like the direct call (incremental runs: benchmarks/incremental.py)
    spec = usr_namespace(NS, columns={"gc": "float64"}, owner="bench", incremental=False,
                         replace_on_refresh=False)(gc)
    defs = build_usr_definitions(a["root"], [spec], datasets=[a["name"]])
    key = dg.AssetKey([*a["name"].split("/"), NS])
    assets = [x for x in defs.assets if getattr(x, "key", None) == key]
    resources = {"usr": UsrResource(root=a["root"])}
    instance = dg.DagsterInstance.ephemeral()

    def run():
        res = dg.materialize(assets, instance=instance, resources=resources, raise_on_error=True)
        return {"success": bool(res.success)}
    return run


@step
def dagster_cold(a):
    return _materializer(a)


@step
def dagster_warm(a):
    run = _materializer(a)
    run()
    return run


def run(built, runs, scratch) -> list[dict]:
    from .scenarios import _on_copy, measure

    try:
        import usr_dagster
    except ModuleNotFoundError as exc:
        if exc.name != "usr_dagster":
            raise
        usr_dagster = None
    if usr_dagster is None or not hasattr(usr_dagster, "usr_namespace"):
        return [{"status": "n/a", "ratio": None, "target": "<= 0.5 s overhead", "met": None,
                 "note": "usr_dagster exposes no namespace-asset factory (usr_namespace)"}]
    out = []
    for b in built.values():  # the overhead target is at 1M (issue 15); smaller sizes for reference
        out.append(_measure(b, runs, measure, _on_copy))
    return out


def _measure(b, runs, measure, _on_copy) -> dict:
    m = measure({"ours_direct": _on_copy(b, "dagster_direct", "dgd"),
                 "dagster_cold": _on_copy(b, "dagster_cold", "dgc"),
                 "dagster_warm": _on_copy(b, "dagster_warm", "dgw")}, runs)
    over = m["dagster_cold"]["seconds"] - m["ours_direct"]["seconds"]
    warm = m["dagster_warm"]["seconds"] - m["ours_direct"]["seconds"]
    return {"n": b.n, "measurements": m, "ratio": m["dagster_cold"]["seconds"] / m["ours_direct"]["seconds"],
            "ratio_def": "dagster materialize (cold) / direct usr_core", "overhead_s": over,
            "overhead_warm_s": warm, "target": "<= 0.5 s overhead", "met": over <= 0.5}
