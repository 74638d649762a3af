"""Code location for the shard tests and benchmarks, loaded by `dagster job execute -f` and by Celery workers.
Env: USR_TEST_ROOT (root), USR_TEST_SHARDS (0: unsharded), USR_TEST_EXECUTOR (in_process | multiprocess | celery),
USR_TEST_BROKER (redis URL), USR_TEST_BATCH (batch_size), USR_TEST_WORK (extra CPU rounds per row), USR_TEST_SLEEP (seconds per call)."""
import os
import sys

import dagster as dg

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # score_fn beside this file
from score_fn import score_table  # noqa: E402
from usr_dagster import build_usr_definitions, usr_namespace

SHARDS = int(os.environ.get("USR_TEST_SHARDS", "4"))

score = usr_namespace("score", columns={"gc": "int64", "digest": "int64", "odd": "float64"}, code_version="s1",
                      shards=SHARDS or 0, batch_size=int(os.environ.get("USR_TEST_BATCH", "0")) or None)(score_table)


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
