"""Launch the runs of a shard backfill as real `dagster job execute` processes (what the UI's backfill does
through the run queue: one run per partition), concurrently, against one non-ephemeral instance."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

DEFS = Path(__file__).with_name("shard_defs.py")
DAGSTER = Path(sys.executable).parent / "dagster"


def dagster_home(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    import dagster as dg

    dg.DagsterInstance.from_config(str(path)).dispose()  # create the SQLite schema once, before the runs race
    return path


def env_for(root, home, **extra) -> dict:
    env = {**os.environ, "USR_TEST_ROOT": str(root), "DAGSTER_HOME": str(home)}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def launch(env: dict, partition: str | None, log: Path) -> subprocess.Popen:
    job = f"usr_shards_{env.get('USR_TEST_SHARDS', '4')}" if partition is not None else "usr_namespaces"
    cmd = [str(DAGSTER), "job", "execute", "-f", str(DEFS), "-j", job]
    if partition is not None:
        cmd += ["--tags", json.dumps({"dagster/partition": partition})]
    out = open(log, "w")
    return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def backfill(env: dict, partitions, logs: Path, timeout: float = 600) -> dict[str, int]:
    """All partitions at once; returns {partition: exit code} (raises on timeout)."""
    logs.mkdir(parents=True, exist_ok=True)
    procs = {p: launch(env, p, logs / f"run-{p if p is not None else 'all'}.log") for p in partitions}
    deadline = time.monotonic() + timeout
    codes = {}
    for p, proc in procs.items():
        codes[p] = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    return codes


def celery_config_dir(path: Path, url: str) -> Path:
    """A `dagster_celery_config` module (read by dagster_celery.app) pointing the workers at the Redis broker."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "dagster_celery_config.py").write_text(
        f"broker_url = {url!r}\nresult_backend = {url!r}\nworker_prefetch_multiplier = 1\n"
        "broker_connection_retry_on_startup = True\n")
    return path


def start_worker(env: dict, config_dir: Path, name: str, log: Path) -> subprocess.Popen:
    """A real Celery worker process (prefork pool, one task at a time) in its own session, so a kill -9 of the
    group kills it and its pool child like a lost node."""
    wenv = {**env, "PYTHONPATH": os.pathsep.join([str(config_dir), str(DEFS.parent),
                                                  env.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    cmd = [sys.executable, "-m", "celery", "-A", "dagster_celery.app", "worker", "-Q", "dagster", "-c", "1",
           "-n", f"{name}@%h", "--loglevel=INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    return subprocess.Popen(cmd, env=wenv, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
                            cwd=str(config_dir))


def wait_worker_ready(log: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Celery worker exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if " ready." in log.read_text():
            return
        time.sleep(0.3)
    raise TimeoutError(f"Celery worker not ready after {timeout}s:\n{log.read_text()[-3000:]}")
