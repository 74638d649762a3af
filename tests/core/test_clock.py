"""Issue 13 item 2 (writer side) [O6] [O9]: the later write wins whatever the writers' clocks do.

Each write runs in its own process whose clock (usr_core.contract.utcnow) is patched by a small shim:
1 h or 2 s behind, frozen at one instant, or restarting at the same instant in every process.  Under the
dataset lock a part is stamped strictly after every existing file of its namespace, so the order of the
stamps is the order of the writes.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from usr_core import compute_id

SEQS = ("ACGT", "AACC")
ID = compute_id("dna", SEQS[0])
REPO = Path(__file__).resolve().parents[2]

# The shim: USR_TEST_CLOCK=<mode>:<seconds> patches the clock before any write.
SHIM = """
import datetime as dt, os, sys, time
import usr_core.contract as contract
mode, _, arg = os.environ["USR_TEST_CLOCK"].partition(":")
real = contract.utcnow
if mode == "offset":
    contract.utcnow = lambda: real() + dt.timedelta(seconds=float(arg))
elif mode == "frozen":
    contract.utcnow = lambda: dt.datetime.fromtimestamp(float(arg), dt.timezone.utc)
elif mode == "restart":
    start = time.monotonic()
    contract.utcnow = lambda: dt.datetime.fromtimestamp(float(arg) + time.monotonic() - start, dt.timezone.utc)
import pyarrow as pa
from usr_core import Dataset
ds = Dataset(sys.argv[1], "demo")
if sys.argv[2] == "compact":
    with ds.maintenance(reason="test"):
        ds.compact_overlay("mock")
else:
    out = ds.write_part("mock", pa.table({"id": [sys.argv[3]], "mock__score": [float(sys.argv[2])]}))
    print(out.created_at)
"""
FROZEN = "1900000000"  # 2030-03-17: later than the real clock, so a real-clock write is "behind" it


def _write(root: Path, value, clock: str) -> str:
    res = subprocess.run([sys.executable, "-c", SHIM, str(root), str(value), ID], cwd=REPO, capture_output=True,
                         text=True, timeout=120, env={**os.environ, "USR_TEST_CLOCK": clock})
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def _score(ds) -> float:
    t = ds.read_table(columns=["id", "mock__score"])
    return dict(zip(t["id"].to_pylist(), t["mock__score"].to_pylist()))[ID]


@pytest.fixture
def ds(make_ds):
    return make_ds(seqs=SEQS)


@pytest.mark.parametrize("clocks", [
    ("offset:0", "offset:-3600"),  # the later writer's clock is 1 h behind
    pytest.param(("offset:0", "offset:-2"), marks=pytest.mark.slow),  # 2 s behind
    (f"frozen:{FROZEN}", f"frozen:{FROZEN}"),  # both writers see the same instant
    pytest.param((f"restart:{FROZEN}", f"restart:{FROZEN}"), marks=pytest.mark.slow),  # restarts per process
    pytest.param((f"frozen:{FROZEN}", "offset:0"), marks=pytest.mark.slow),  # the first clock was ahead
], ids=["1h-back", "2s-back", "frozen", "restart-per-process", "ahead-then-real"])
def test_O9_later_write_wins_whatever_the_clock(ds, clocks):
    stamps = []
    for i in range(3):  # three alternating writes: each must win over all before it
        stamps.append(_write(ds.root, float(i + 1), clocks[i % 2]))
        assert _score(ds) == float(i + 1), (clocks, stamps)
    assert stamps == sorted(stamps) and len(set(stamps)) == 3


def test_O6_O9_compact_then_clock_back(ds):
    """A part written 1 h behind after a compaction wins over the promoted compact file."""
    _write(ds.root, 1.0, "offset:0")
    _write(ds.root, 2.0, "offset:0")
    _write(ds.root, "compact", "offset:0")
    assert _score(ds) == 2.0
    _write(ds.root, 3.0, "offset:-3600")
    assert _score(ds) == 3.0
    parts = sorted((ds.dir / "_derived" / "mock").glob("part-*.parquet"))
    stamps = [pq.read_schema(p).metadata[b"usr:overlay_created_at"].decode() for p in parts]
    assert len(parts) == 2 and stamps[0] < stamps[1]  # file names follow the stamps


def test_O6_stamp_after_a_part_dated_at_the_end_of_time_is_refused(ds):
    """No stamp exists after 9999-12-31T23:59:59.999999Z: a clear error, nothing written."""
    import pyarrow as pa

    from usr_core.errors import ClockError
    from testkit import tree_digest

    out = ds.write_part("mock", pa.table({"id": [ID], "mock__score": [1.0]}))
    meta = dict(pq.read_schema(out.path).metadata)
    meta[b"usr:overlay_created_at"] = b"9999-12-31T23:59:59.999999Z"
    t = pq.read_table(out.path).replace_schema_metadata(meta)
    pq.write_table(t, out.path)
    before = tree_digest(ds.root)
    with pytest.raises(ClockError, match="9999"):
        ds.write_part("mock", pa.table({"id": [ID], "mock__score": [2.0]}))
    assert tree_digest(ds.root) == before
