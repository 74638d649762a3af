"""Run each measurement in a fresh process and collect its seconds, peak RSS and bytes read.

Processes are forked from a multiprocessing forkserver that has imported pyarrow, duckdb and
usr_core once, so a measurement costs a fork instead of ~2 s of imports, and every child starts
from the same resident set (reported as rss_before_mb). A forked child's ru_maxrss is its own.
pandas is preloaded too: pyarrow imports it (when installed) on the first `pa.array` call of a
process, ~0.3 s that would otherwise land in whichever step calls it first.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import traceback

PRELOAD = ["numpy", "pandas", "pyarrow", "pyarrow.compute", "pyarrow.parquet", "pyarrow.dataset",
           "pyarrow.acero", "duckdb", "usr_core", "benchmarks.steps"]
_ctx = None


class StepFailed(RuntimeError):
    pass


def _context():
    global _ctx
    if _ctx is None:
        _ctx = mp.get_context("forkserver")
        _ctx.set_forkserver_preload(PRELOAD)
    return _ctx


def _child(conn, name: str, args: dict, quiet: bool) -> None:
    if quiet:  # Dagster logs every event to the console
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
    try:
        from .steps import measure_here

        conn.send(("ok", measure_here(name, args)))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def run_step(name: str, args: dict, timeout: float = 1800, quiet: bool = True) -> dict:
    ctx = _context()
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, name, args, quiet), name=f"bench-{name}")
    proc.start()
    send.close()
    try:
        if not recv.poll(timeout):
            proc.kill()
            raise StepFailed(f"step {name} timed out after {timeout}s")
        status, payload = recv.recv()
    except EOFError:
        proc.join()
        raise StepFailed(f"step {name} died (exit code {proc.exitcode}; killed by the OOM killer?)") from None
    finally:
        proc.join()
        recv.close()
    if status != "ok":
        raise StepFailed(f"step {name} failed:\n{payload[-3000:]}")
    return payload


def summarize(samples: list[dict]) -> dict:
    secs = [s["seconds"] for s in samples]
    out = {"seconds": statistics.median(secs), "seconds_all": secs,
           "peak_rss_mb": statistics.median(s["peak_rss_mb"] for s in samples),
           "rss_before_mb": statistics.median(s["rss_before_mb"] for s in samples)}
    rb = [s["read_bytes"] for s in samples if s.get("read_bytes") is not None]
    if rb:
        out["read_bytes"] = int(statistics.median(rb))
    for k in ("rows", "cols"):
        if k in samples[-1]:
            out[k] = samples[-1][k]
    return out
