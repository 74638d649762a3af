"""Part writes of concurrent shard runs are parallel-safe while compaction runs at the same time, serialised by
the dataset lock: nothing is lost, the view equals an unsharded materialization [A3] [A6] [X2]."""
from __future__ import annotations

import time

import dagster as dg
import pytest

from usr_core import Dataset
from usr_core.inspect import overlay_files
from usr_dagster import build_usr_definitions, usr_namespace

import shard_runs
from dagster_helpers import make_root
from score_fn import score_table

DS = "grp/alpha"
COLS = ["id", "score__gc", "score__digest", "score__odd"]


@pytest.mark.slow
def test_shard_parts_and_compaction_interleave_without_loss(tmp_path):
    root = make_root(tmp_path / "root", {DS: 400})
    home = shard_runs.dagster_home(tmp_path / "home")
    env = shard_runs.env_for(root, home, USR_TEST_EXECUTOR="in_process", USR_TEST_SHARDS=4, USR_TEST_BATCH=20,
                             USR_TEST_SLEEP="0.2")
    (tmp_path / "logs").mkdir()
    procs = [shard_runs.launch(env, p, tmp_path / "logs" / f"run-{p}.log") for p in "0123"]
    ds = Dataset(root, DS)
    compactions = 0
    while any(p.poll() is None for p in procs):
        parts = [f for f in overlay_files(ds, "score") if f.kind == "part"]
        if len(parts) >= 2:
            with ds.maintenance(reason="test compaction during a backfill"):
                ds.compact_overlay("score")
            compactions += 1
        time.sleep(0.3)
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [
        (tmp_path / "logs" / f"run-{p}.log").read_text()[-2000:] for p in "0123"]
    assert compactions >= 1
    ds.validate(strict=True)
    twin = make_root(tmp_path / "twin", {DS: 400})
    ns = usr_namespace("score", columns={"gc": "int64", "digest": "int64", "odd": "float64"},
                       code_version="s1")(score_table)
    assert build_usr_definitions(twin, [ns]).resolve_job_def("usr_namespaces").execute_in_process(
        instance=dg.DagsterInstance.ephemeral()).success
    want = Dataset(twin, DS).read_table(columns=COLS).sort_by("id")
    assert ds.read_table(columns=COLS).sort_by("id").equals(want)
