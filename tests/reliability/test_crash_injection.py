"""Crash injection (issue 6 §1): SIGKILL every mutating operation at every file-system step [A1] [A2]."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

import crash_harness
import crash_ops


def test_kill_points_are_traced(tmp_path, monkeypatch):
    """USR_CRASH_TRACE records every crash point the operation passes, in order [A1]."""
    trace = tmp_path / "trace.txt"
    root = tmp_path / "root"
    root.mkdir()
    crash_ops.register_base(root)
    monkeypatch.setenv("USR_CRASH_TRACE", str(trace))
    crash_ops.op_init(root)
    points = crash_harness.kill_points(trace)
    assert "init:before-rename" in points and "meta:after-rename" in points
    assert len(points) == len(set(points))  # repeated points are numbered <name>#k


@pytest.mark.slow
def test_crash_injection_all_operations(capsys):
    """Every (operation, kill point): dataset readable, rows old-or-new, nothing acknowledged lost,
    rerun succeeds and reaches the clean run's state [A1] [A2] [L7]."""
    work = Path(tempfile.mkdtemp(prefix="usr-crash-", dir=crash_harness.scratch_dir()))
    try:
        summary = crash_harness.run_all(list(crash_ops.OPS), work, jobs=2)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = []
    summary.report(lines.append)
    with capsys.disabled():
        print("\n" + "\n".join(lines) + "\n" + summary.line())
    assert summary.failed == 0, "\n".join(lines)
    assert summary.lost == 0
    assert summary.total >= 100


def test_init_killed_after_base_publish_is_completed_by_rerun(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    root = tmp_path / "root"
    root.mkdir()
    crash_ops.register_base(root)
    code = ("import sys, pathlib; sys.path.insert(0, sys.argv[2]); import crash_ops; "
            "crash_ops.op_init(pathlib.Path(sys.argv[1]))")
    res = subprocess.run([sys.executable, "-c", code, str(root), str(Path(crash_ops.__file__).parent)],
                         env={**os.environ, "USR_CRASH_AT": "init:after-rename"}, capture_output=True, timeout=120)
    assert res.returncode == -signal.SIGKILL
    ds = crash_ops._ds(root)
    try:
        ds.init(source="harness")  # the plain rerun
    except Exception:
        pass
    assert ds.meta_path.is_file(), "meta.md (L10) is missing after the rerun"
