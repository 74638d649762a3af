"""Lock behaviour (issue 6 §3): timeouts name the holder's pid; a SIGKILLed holder blocks nobody [A3] [A4]."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

import crash_ops
from testkit import tree_digest
from usr_core import Dataset, LockTimeoutError

HOLD = """
import sys, time
from usr_core import Dataset
from usr_core.storage.locks import file_lock
from usr_core.layout import dataset_paths
root, which = sys.argv[1], sys.argv[2]
paths = dataset_paths(root, "demo")
target = {"dataset": paths.lock, "events": paths.events_lock}[which]
with file_lock(target):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def dataset_root(root):
    crash_ops.base_setup(root)
    return root


def _holder(root, which="dataset") -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(root), which], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_A3_lock_timeout_names_holder_pid(dataset_root):
    holder = _holder(dataset_root)
    try:
        ds = Dataset(dataset_root, "demo", lock_timeout=0.2)
        before = tree_digest(dataset_root)
        t0 = time.monotonic()
        with pytest.raises(LockTimeoutError) as info:
            ds.tombstone(crash_ops._ids(dataset_root)[:1])
        assert time.monotonic() - t0 < 5
        assert info.value.holder_pid == holder.pid
        assert f"pid {holder.pid}" in str(info.value)
        assert info.value.hint
        assert tree_digest(dataset_root) == before
    finally:
        holder.kill()
        holder.wait()


def test_A4_lock_of_sigkilled_holder_does_not_block(dataset_root):
    for which in ("dataset", "events"):
        holder = _holder(dataset_root, which)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        assert holder.returncode == -signal.SIGKILL
        ds = Dataset(dataset_root, "demo", lock_timeout=2)
        assert ds.tombstone(crash_ops._ids(dataset_root)[1:2], reason=which) == 1  # takes both locks


def test_A4_writer_killed_mid_write_does_not_block(dataset_root):
    """A writer SIGKILLed inside its critical section (USR_CRASH_AT) leaves a lock file, not a lock."""
    code = ("import sys; sys.path.insert(0, sys.argv[2]); import crash_ops, pathlib; "
            "crash_ops.op_tombstone(pathlib.Path(sys.argv[1]))")
    env = {**os.environ, "USR_CRASH_AT": "compact:before-rename"}
    res = subprocess.run([sys.executable, "-c", code, str(dataset_root), os.path.dirname(crash_ops.__file__)],
                         env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == -signal.SIGKILL, res.stderr
    ds = Dataset(dataset_root, "demo", lock_timeout=2)
    crash_ops.op_tombstone(dataset_root)
    assert ds.read_table().num_rows == 8 - 3
