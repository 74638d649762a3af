"""Code location for the shard tests and benchmarks, loaded by `dagster job execute -f` and by Celery workers.
Env: USR_TEST_ROOT (root), USR_TEST_SHARDS (0: unsharded), USR_TEST_EXECUTOR (in_process | multiprocess | celery),
USR_TEST_BROKER (redis URL), USR_TEST_WORK (extra CPU rounds per row), USR_TEST_SLEEP (seconds per call)."""
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import dagster as dg

from usr_dagster import build_usr_definitions, usr_namespace

SHARDS = int(os.environ.get("USR_TEST_SHARDS", "4"))
WORK = int(os.environ.get("USR_TEST_WORK", "0"))


def score_table(records: pa.Table) -> pa.Table:
    """GC count and a CPU-bound digest of each sequence (WORK rounds of a byte-wise hash, deterministic)."""
    if float(os.environ.get("USR_TEST_SLEEP", "0")):
        time.sleep(float(os.environ["USR_TEST_SLEEP"]))
    seqs = records.column("sequence").to_pylist()
    digest = []
    for s in seqs:
        h = 0
        for _ in range(WORK):
            for ch in s[:64]:
                h = (h * 31 + ord(ch)) & 0xFFFFFFFF
        digest.append(h)
    gc = pc.add(pc.count_substring(records.column("sequence"), "G"),
                pc.count_substring(records.column("sequence"), "C"))
    return pa.table({"id": records.column("id"), "score__gc": gc.cast(pa.int64()),
                     "score__digest": pa.array(digest, pa.int64()),
                     "score__odd": pa.array(np.ones(len(gc)), mask=np.asarray(gc) % 2 == 0)})  # NULL when even


score = usr_namespace("score", columns={"gc": "int64", "digest": "int64", "odd": "float64"}, code_version="s1",
                      shards=SHARDS)(score_table)


def _executor():
    kind = os.environ.get("USR_TEST_EXECUTOR", "in_process")
    if kind == "multiprocess":
        return dg.multiprocess_executor.configured({"max_concurrent": 2, "start_method": {"forkserver": {
            "preload_modules": ["dagster", "pyarrow", "pandas", "usr_core", "usr_dagster"]}}})
    if kind == "celery":
        from dagster_celery import celery_executor

        url = os.environ["USR_TEST_BROKER"]
        return celery_executor.configured({"broker": url, "backend": url})
    return dg.in_process_executor


defs = build_usr_definitions(os.environ["USR_TEST_ROOT"], [score], executor=_executor()) \
    if "USR_TEST_ROOT" in os.environ else None
