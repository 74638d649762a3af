"""Shard backfills on real distributed engines (issue 12): the multiprocess executor and dagster-celery with a
real Redis broker and two Celery worker processes; a kill -9 of a worker mid-backfill loses no acknowledged part
and a re-run completes the backfill [A3] [A6] [O6] [G3].

Redis: $USR_TEST_REDIS_URL (.ci/run starts one with scripts/start_redis.sh), else scripts/start_redis.sh is tried
here; without a server the Celery tests skip outside CI and fail in CI (env CI set)."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import dagster as dg
import pytest

from usr_core import Dataset
from usr_dagster import build_usr_definitions, usr_namespace

import shard_runs
from dagster_helpers import REPO, make_root
from score_fn import score_table

pytestmark = pytest.mark.slow
DS = "grp/alpha"
COLS = ["id", "score__gc", "score__digest", "score__odd"]
PARTS = ["0", "1", "2", "3"]


def _ping(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=2).ping())
    except Exception:
        return False


@pytest.fixture(scope="session")
def redis_url():
    url = os.environ.get("USR_TEST_REDIS_URL")
    if url and _ping(url):
        return url
    proc = subprocess.run(["bash", str(REPO / "scripts" / "start_redis.sh")], capture_output=True, text=True)
    line = proc.stdout.strip().rsplit("\n", 1)[-1]
    if proc.returncode == 0 and line.startswith("export USR_TEST_REDIS_URL="):
        url = line.split("=", 1)[1]
        if _ping(url):
            return url
    why = f"no Redis server could be started (scripts/start_redis.sh: {proc.stderr.strip()[-300:]})"
    if os.environ.get("CI"):
        pytest.fail(f"{why}; CI must run the Celery tests: install redis-server (.ci/run does)")
    pytest.skip(f"{why}; set USR_TEST_REDIS_URL or install redis-server to run the Celery tests")


@pytest.fixture
def workers(tmp_path, redis_url):
    """Start Celery workers as real processes; every one started is killed at the end."""
    import redis

    redis.Redis.from_url(redis_url).flushdb()  # no task left over from an earlier test
    started = []

    def start(env, name):
        cfg = shard_runs.celery_config_dir(tmp_path / "celery", redis_url)
        log = tmp_path / f"{name}.log"
        proc = shard_runs.start_worker(env, cfg, name, log)
        started.append(proc)
        shard_runs.wait_worker_ready(log, proc)
        return proc, log

    yield start
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def unsharded_view(tmp_path) -> "pa.Table":
    root = make_root(tmp_path / "unsharded", {DS: 300})
    ns = usr_namespace("score", columns={"gc": "int64", "digest": "int64", "odd": "float64"},
                       code_version="s1")(score_table)
    res = build_usr_definitions(root, [ns]).resolve_job_def("usr_namespaces").execute_in_process(
        instance=dg.DagsterInstance.ephemeral())
    assert res.success
    return Dataset(root, DS).read_table(columns=COLS).sort_by("id")


def sharded_view(root):
    return Dataset(root, DS).read_table(columns=COLS).sort_by("id")


def run_windows(home: Path) -> list[tuple[float, float, str]]:
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        out = []
        for run in instance.get_runs():
            stats = instance.get_run_stats(run.run_id)
            out.append((stats.start_time, stats.end_time, run.tags.get("dagster/partition")))
        return sorted(out)
    finally:
        instance.dispose()


def test_multiprocess_four_shard_backfill_equals_unsharded(tmp_path):
    """4 runs (one per shard) at once, multiprocess executor, one SQLite instance: the merged view equals an
    unsharded materialization and the runs overlapped."""
    root = make_root(tmp_path / "root", {DS: 300})
    home = shard_runs.dagster_home(tmp_path / "home")
    env = shard_runs.env_for(root, home, USR_TEST_EXECUTOR="multiprocess", USR_TEST_SHARDS=4)
    codes = shard_runs.backfill(env, PARTS, tmp_path / "logs")
    assert codes == {p: 0 for p in PARTS}, [(tmp_path / "logs" / f"run-{p}.log").read_text()[-2000:] for p in PARTS]
    windows = run_windows(home)
    assert sorted(w[2] for w in windows) == PARTS
    assert any(b[0] < a[1] for a, b in zip(windows, windows[1:])), f"runs never overlapped: {windows}"
    assert sharded_view(root).equals(unsharded_view(tmp_path))
    Dataset(root, DS).validate(strict=True)


def _worker_names(home: Path) -> set[str]:
    """The Celery workers that executed steps, from the runs' engine events."""
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        names = set()
        for run in instance.get_runs():
            for rec in instance.all_logs(run.run_id):
                ev = rec.dagster_event
                if ev is not None and ev.event_type_value == "ENGINE_EVENT" and ev.event_specific_data is not None:
                    for key, value in (ev.event_specific_data.metadata or {}).items():
                        if key == "Celery worker":
                            names.add(value.value)
        return names
    finally:
        instance.dispose()


def test_celery_four_shard_backfill_equals_unsharded(tmp_path, redis_url, workers):
    """dagster-celery, Redis broker, two worker processes: every shard's step runs on a worker, both workers
    work, and the merged view equals an unsharded materialization."""
    root = make_root(tmp_path / "root", {DS: 300})
    home = shard_runs.dagster_home(tmp_path / "home")
    env = shard_runs.env_for(root, home, USR_TEST_EXECUTOR="celery", USR_TEST_SHARDS=4, USR_TEST_BROKER=redis_url,
                             USR_TEST_SLEEP="0.5")
    workers(env, "w0")
    workers(env, "w1")
    codes = shard_runs.backfill(env, PARTS, tmp_path / "logs")
    assert codes == {p: 0 for p in PARTS}, [(tmp_path / "logs" / f"run-{p}.log").read_text()[-2000:] for p in PARTS]
    assert len({n.split("@")[0] for n in _worker_names(home)}) == 2
    assert sharded_view(root).equals(unsharded_view(tmp_path))
    Dataset(root, DS).validate(strict=True)


def _acknowledged_parts(home: Path) -> dict[str, str]:
    """Parts acknowledged to Dagster (named in a materialization the instance recorded): path -> sha256."""
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        records = instance.fetch_materializations(dg.AssetKey(["grp", "alpha", "score"]), limit=1000).records
    finally:
        instance.dispose()
    out = {}
    for rec in records:
        for path in rec.asset_materialization.metadata["usr/part_paths"].value.split("\n"):
            if path:
                out[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return out


def test_celery_worker_kill9_mid_backfill_loses_no_part_and_rerun_completes(tmp_path, redis_url, workers):
    root = make_root(tmp_path / "root", {DS: 300})
    home = shard_runs.dagster_home(tmp_path / "home")
    env = shard_runs.env_for(root, home, USR_TEST_EXECUTOR="celery", USR_TEST_SHARDS=4, USR_TEST_BROKER=redis_url,
                             USR_TEST_SLEEP="3")
    victim, victim_log = workers(env, "w0")
    workers(env, "w1")
    logs = tmp_path / "logs"
    logs.mkdir()
    runs = {p: shard_runs.launch(env, p, logs / f"run-{p}.log") for p in PARTS}
    ds = Dataset(root, DS)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # kill while the victim is inside a step and a part was acknowledged
        text = victim_log.read_text()
        busy = text.count("STEP_START") > text.count("succeeded in")
        if busy and _acknowledged_parts(home):
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"no moment with an acknowledged part and a busy victim worker:\n{victim_log.read_text()[-3000:]}")
    os.killpg(victim.pid, signal.SIGKILL)  # kill -9 of the worker and its pool child
    victim.wait()
    acked = _acknowledged_parts(home)
    assert acked
    hung = []
    for p, proc in runs.items():  # the run whose step died with the worker waits for it: stop it
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            hung.append(p)
    assert hung, "the kill hit no step"
    for path, digest in acked.items():  # every acknowledged part is there, byte for byte
        assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == digest
    ds.validate(strict=True)

    instance = dg.DagsterInstance.from_config(str(home))  # what run monitoring does for a run whose worker died
    for run in instance.get_runs():
        if not run.is_finished:
            instance.report_run_failed(run)
    instance.dispose()
    workers(env, "w2")
    codes = shard_runs.backfill(env, PARTS, tmp_path / "logs-rerun")
    assert codes == {p: 0 for p in PARTS}
    for path, digest in acked.items():
        assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == digest
    assert set(acked) <= set(_acknowledged_parts(home))
    assert sharded_view(root).equals(unsharded_view(tmp_path))
    ds.validate(strict=True)
