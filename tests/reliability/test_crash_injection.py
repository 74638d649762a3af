"""Crash injection (issue 6 §1): SIGKILL every mutating operation at every file-system step [A1] [A2]."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import crash_harness
import crash_ops
import crash_raise
from usr_core import SequencesError


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


def _kill_init_at(root: Path, point: str) -> None:
    code = ("import sys, pathlib; sys.path.insert(0, sys.argv[2]); import crash_ops; "
            "crash_ops.op_init(pathlib.Path(sys.argv[1]))")
    res = subprocess.run([sys.executable, "-c", code, str(root), str(Path(crash_ops.__file__).parent)],
                         env={**os.environ, "USR_CRASH_AT": point}, capture_output=True, timeout=120)
    assert res.returncode == -signal.SIGKILL, res.stderr


def test_init_killed_before_base_publish_is_redone_by_plain_rerun(tmp_path):
    """[L10] [A1] a kill after meta.md but before records.parquet: no dataset yet, the plain init succeeds."""
    root = tmp_path / "root"
    root.mkdir()
    crash_ops.register_base(root)
    _kill_init_at(root, "meta:after-rename")
    ds = crash_ops._ds(root)
    assert not ds.exists()
    ds.init(source="harness")  # must not raise
    assert ds.meta_path.read_text().splitlines()[0] == "name: demo"
    assert ds.read_table().num_rows == 0
    assert [e["action"] for e in ds.manifest(include_events=True).events["events"]][-1] == "init"


def test_init_killed_after_base_publish_leaves_a_readable_dataset(tmp_path):
    """[L10] [A1] a kill after records.parquet is published: the dataset exists with its meta.md and reads;
    a plain rerun is refused with a clear error, the idempotent rerun passes."""
    root = tmp_path / "root"
    root.mkdir()
    crash_ops.register_base(root)
    _kill_init_at(root, "init:after-rename")
    ds = crash_ops._ds(root)
    assert ds.exists() and ds.meta_path.read_text().splitlines()[0] == "name: demo"
    assert ds.read_table().num_rows == 0
    with pytest.raises(SequencesError, match="already exists"):
        ds.init(source="harness")
    crash_ops.rerun_init(root)


@pytest.mark.parametrize("op", ["init", "compact-attach-restamp", "part-promote", "create-overlay"])
def test_injected_failure_at_each_step_changes_nothing(tmp_path, op):
    """Issue 13 item 4: a failure raised at each step of the operation either leaves the root byte-identical
    or comes after the commit, with the event logged [A1] [E8] [R14]."""
    res = crash_raise.run_op(op, tmp_path)
    assert res.problems == [] and res.points >= 4, res.problems
    assert res.failed_clean >= res.points - 2


@pytest.mark.slow
def test_injected_failure_at_each_step_of_every_operation(tmp_path):
    """Issue 13 item 4 over every transaction: failure with the root byte-identical, or success with the event."""
    results = crash_raise.run_all(list(crash_raise.EXPECTED_EVENT), tmp_path)
    problems = [f"{r.op}: {p}" for r in results for p in r.problems]
    assert problems == []
    assert sum(r.points for r in results) >= 150
