"""Atomic writes (A1, A2) and flock locks (A3, A5), with real subprocesses."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from usr_core.errors import LockTimeoutError, SequencesError
from usr_core.storage.atomic import atomic_path, write_bytes, write_parquet_batches, write_text
from usr_core.storage.locks import file_lock

HOLDER = """
import sys, time
from usr_core.storage.locks import file_lock
with file_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""

CRASHER = """
import sys
from pathlib import Path
from usr_core.storage.atomic import write_bytes
write_bytes(Path(sys.argv[1]), b"new", label="reg")
print("survived", flush=True)
"""


@pytest.fixture
def lock_holder():
    """Start a subprocess that holds file_lock(path) until killed; yields start(path) -> Popen."""
    procs: list[subprocess.Popen] = []

    def start(path: Path) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        line = proc.stdout.readline()
        assert line.strip() == "locked", proc.stderr.read()
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


# --- A1 atomic writes -------------------------------------------------------------------------------------------

def test_A1_write_bytes_and_text_leave_no_temp_file(tmp_path):
    """[A1] the published file holds the new bytes and no temp file remains."""
    target = tmp_path / "registry.yaml"
    write_bytes(target, b"old\n")
    write_text(target, "néw\n")
    assert target.read_bytes() == "néw\n".encode("utf-8")
    assert _siblings(target) == ["registry.yaml"]


def test_A1_write_creates_missing_parent_and_honours_tmp_name(tmp_path):
    """[A1][L9] a sibling temp name may be given (e.g. records.tmp.parquet); parents are created."""
    target = tmp_path / "a" / "b" / "x.json"
    write_bytes(target, b"{}", tmp=target.with_name("x.json.tmp"))
    assert target.read_bytes() == b"{}" and _siblings(target) == ["x.json"]


def test_A1_failing_write_keeps_old_file(tmp_path):
    """[A1] an error while writing the temp file leaves the old file intact and removes the temp."""
    target = tmp_path / "registry.yaml"
    write_bytes(target, b"old")
    with pytest.raises(TypeError):
        write_bytes(target, "not bytes")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert _siblings(target) == ["registry.yaml"]


def test_A1_failing_parquet_stream_keeps_old_file(tmp_path):
    """[A1] a batch generator failing midway leaves the old parquet intact, no temp file."""
    target = tmp_path / "records.parquet"
    old = pa.table({"x": pa.array([1, 2], pa.int64())})
    pq.write_table(old, target)

    def batches():
        yield pa.record_batch({"x": pa.array([7], pa.int64())})
        raise RuntimeError("source died")

    with pytest.raises(RuntimeError, match="source died"):
        write_parquet_batches(target, old.schema, batches, tmp=tmp_path / "records.tmp.parquet")
    assert pq.read_table(target).equals(old)
    assert _siblings(target) == ["records.parquet"]


def test_A1_parquet_batches_counts_rows_and_skips_empty(tmp_path):
    """[A1] streamed writes are zstd and return the row count; empty batches are skipped; empty streams give a valid file."""
    schema = pa.schema([("x", pa.int32())])
    target = tmp_path / "out.parquet"

    def batches():
        yield pa.record_batch([pa.array([1, 2], pa.int32())], schema=schema)
        yield pa.record_batch([pa.array([], pa.int32())], schema=schema)
        yield pa.record_batch([pa.array([3], pa.int32())], schema=schema)

    assert write_parquet_batches(target, schema, batches) == 3
    assert pq.read_table(target)["x"].to_pylist() == [1, 2, 3]
    assert pq.ParquetFile(target).metadata.row_group(0).column(0).compression == "ZSTD"
    assert write_parquet_batches(target, schema, lambda: iter(())) == 0
    assert pq.read_table(target).num_rows == 0 and pq.read_schema(target).names == ["x"]
    assert _siblings(target) == ["out.parquet"]


@pytest.mark.parametrize("point,want", [("before-fsync", b"old"), ("before-rename", b"old"),
                                        ("after-rename", b"new")])
def test_A1_A2_crash_leaves_old_or_new(tmp_path, point, want):
    """[A1][A2] a SIGKILL at any step leaves the file old or new, never partial (a temp file may remain)."""
    target = tmp_path / "registry.yaml"
    target.write_bytes(b"old")
    env = {**os.environ, "USR_CRASH_AT": f"reg:{point}"}
    res = subprocess.run([sys.executable, "-c", CRASHER, str(target)], env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == -signal.SIGKILL, res.stderr
    assert "survived" not in res.stdout
    assert target.read_bytes() == want
    assert set(_siblings(target)) <= {"registry.yaml", "registry.yaml.tmp"}


# --- A3 / A5 locks ---------------------------------------------------------------------------------------------

def test_A3_lock_file_created_kept_and_names_holder(tmp_path):
    """[A3] the lock file is created if absent, holds the holder's pid, and is never deleted."""
    path = tmp_path / ".usr.lock"
    with file_lock(path, timeout=1):
        assert path.is_file()
        assert path.read_text().strip() == str(os.getpid())
    assert path.is_file()
    with file_lock(path, timeout=0):  # free again, reusable
        pass


def test_A3_lock_is_not_reentrant_in_process(tmp_path):
    """[A3] a second acquisition (even by the same process) times out with LockTimeoutError."""
    path = tmp_path / ".usr.lock"
    with file_lock(path):
        t0 = time.monotonic()
        with pytest.raises(LockTimeoutError) as ei:
            with file_lock(path, timeout=0.2, what="dataset lock"):
                pass
        assert 0.15 <= time.monotonic() - t0 < 2
    assert ei.value.holder_pid == os.getpid() and Path(ei.value.path) == path
    assert "dataset lock" in str(ei.value) and ei.value.hint


def test_A3_second_holder_times_out_naming_subprocess_pid(tmp_path, lock_holder):
    """[A3] while a real subprocess holds the lock, a timed wait raises LockTimeoutError naming its pid."""
    path = tmp_path / ".usr.lock"
    proc = lock_holder(path)
    with pytest.raises(LockTimeoutError) as ei:
        with file_lock(path, timeout=0.3):
            pytest.fail("acquired a held lock")
    assert ei.value.holder_pid == proc.pid
    assert f"pid {proc.pid}" in str(ei.value) and str(path) in str(ei.value)
    with pytest.raises(LockTimeoutError):
        with file_lock(path, timeout=0):
            pass


def test_A3_lock_of_killed_holder_does_not_block(tmp_path, lock_holder):
    """[A3] a lock held by a SIGKILLed process is free at once (flock dies with its holder)."""
    path = tmp_path / ".usr.lock"
    proc = lock_holder(path)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    t0 = time.monotonic()
    with file_lock(path, timeout=5):
        assert path.read_text().strip() == str(os.getpid())
    assert time.monotonic() - t0 < 1


def test_A3_default_waits_until_holder_is_gone(tmp_path, lock_holder):
    """[A3] without a timeout the waiter blocks, then proceeds once the holder dies."""
    path = tmp_path / ".usr.lock"
    proc = lock_holder(path)
    got = threading.Event()

    def waiter():
        with file_lock(path):
            got.set()

    th = threading.Thread(target=waiter, daemon=True)
    th.start()
    assert not got.wait(0.3)
    proc.kill()
    proc.wait(timeout=10)
    assert got.wait(5)
    th.join(5)


def test_A3_symlinked_lock_file_rejected(tmp_path):
    """[A3] a lock path that is a symlink is refused and its target untouched (existing or dangling)."""
    target = tmp_path / "victim.txt"
    target.write_text("precious")
    link = tmp_path / ".usr.lock"
    link.symlink_to(target)
    with pytest.raises(SequencesError, match="symbolic link") as ei:
        with file_lock(link, timeout=0.1):
            pytest.fail("locked through a symlink")
    assert ei.value.hint and target.read_text() == "precious"
    dangling = tmp_path / ".events.lock"
    dangling.symlink_to(tmp_path / "created-by-attacker")
    with pytest.raises(SequencesError):
        with file_lock(dangling):
            pass
    assert not (tmp_path / "created-by-attacker").exists()


def test_A3_hardlinked_lock_file_rejected(tmp_path):
    """[A3] a lock file with a second hard link is refused and left as it was."""
    other = tmp_path / "other.txt"
    other.write_text("keep")
    path = tmp_path / ".usr.lock"
    os.link(other, path)
    with pytest.raises(SequencesError, match="one link"):
        with file_lock(path, timeout=0.1):
            pass
    assert other.read_text() == "keep"
