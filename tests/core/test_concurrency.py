"""Concurrent writers in real processes: A2, A3, A4, A6 (no lost updates)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from usr_core import Dataset, compute_id, register_namespace

REPO = Path(__file__).resolve().parents[2]
NPROC = 4
SEQS = [("ACGT"[i % 4] + "ACGT"[(i // 4) % 4] + "ACGT"[(i // 16) % 4] + "ACGT"[(i // 64) % 4]) * 2 for i in range(40)]
IDS = [compute_id("dna", s) for s in SEQS]

WORKER = r"""
import os, sys, time
from pathlib import Path
import pyarrow as pa
from usr_core import Dataset, compute_id
root, name, p, nproc, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])
ids = Path(sys.argv[6]).read_text().split()
ds = Dataset(root, name)
while not go.exists():
    time.sleep(0.005)
mine = [i for k, i in enumerate(ids) if k % nproc == p and k > 0]  # ids[0] is the shared cell
for chunk in range(3):
    sel = mine[chunk::3]
    t = pa.table({"id": sel + [ids[0]],
                  "conc__v": pa.array([p * 1000 + ids.index(i) for i in sel] + [None], pa.int64()),
                  "conc__last": pa.array([None] * len(sel) + [f"p{p}c{chunk}"], pa.string())})
    ds.write_overlay_part("conc", t, event_args={"proc": p, "chunk": chunk})
ds.set_state(mine + ([ids[0]] if p == 0 else []), split=["train", "val", "test", "holdout"][p])
ds.add_sequences([("ACGT"[p] * 3) + "T" * (k + 10) for k in range(5)], bio_type="dna", alphabet="dna_4")
ds.tombstone(mine[::4], reason=f"p{p}")
ds.tombstone(mine[2::4], reason=f"p{p}")
print("done", flush=True)
"""


def _run_all(root: Path, name: str, tmp: Path) -> None:
    go = tmp / "go"
    idfile = tmp / "ids.txt"
    idfile.write_text("\n".join(IDS))
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(root), name, str(p), str(NPROC), str(go),
                               str(idfile)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                              cwd=str(REPO))
             for p in range(NPROC)]
    time.sleep(0.3)
    go.write_text("go")
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and out.strip() == "done", err


def _make(root: Path) -> Dataset:
    register_namespace(root, "conc", "conc__v:int64,conc__last:string")
    ds = Dataset(root, "conc")
    ds.init()
    ds.import_rows([{"sequence": s} for s in SEQS])
    return ds


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> Dataset:
    """One run of 4 worker processes writing at once: 3 parts, set_state, add_sequences, 2 tombstones each."""
    tmp = tmp_path_factory.mktemp("conc")
    (tmp / "root").mkdir()
    ds = _make(tmp / "root")
    _run_all(ds.root, ds.name, tmp)
    return ds


def _events(ds) -> list[dict]:
    return [json.loads(line) for line in ds.events_path.read_text().splitlines()]


def test_A6_four_processes_append_parts_no_lost_update(ran):
    """[A6] [A3] [A4] 4 processes write parts at once: every row of every part is visible; events intact."""
    parts = sorted((ran.dir / "_derived" / "conc").glob("part-*.parquet"))
    assert len(parts) == NPROC * 3
    t = ran.read_table(include_deleted=True)
    got = dict(zip(t["id"].to_pylist(), t["conc__v"].to_pylist()))
    assert got[IDS[0]] is None
    for k, i in enumerate(IDS[1:], start=1):
        assert got[i] == (k % NPROC) * 1000 + k, (k, got[i])
    for part in parts:  # every row of every part is visible
        pt = pq.read_table(part)
        for i, v in zip(pt["id"].to_pylist(), pt["conc__v"].to_pylist()):
            if v is not None:
                assert got[i] == v
    # A6: parts ordered by O9; the overlapping cell goes to the newest part
    ranked = sorted(parts, key=lambda p: (pq.read_schema(p).metadata[b"usr:overlay_created_at"].decode()
                                          + "\x1f" + p.name))
    newest = pq.read_table(ranked[-1])
    want = [v for i, v in zip(newest["id"].to_pylist(), newest["conc__last"].to_pylist()) if i == IDS[0]][0]
    assert dict(zip(t["id"].to_pylist(), t["conc__last"].to_pylist()))[IDS[0]] == want
    ev = [e for e in _events(ran) if e["action"] == "write_overlay_part"]
    assert sorted((e["args"]["proc"], e["args"]["chunk"]) for e in ev) == sorted(
        (p, c) for p in range(NPROC) for c in range(3))


def test_A6_concurrent_tombstones_not_lost(ran):
    """[A6] [T2] [A4] [E8] concurrent compact upserts (tombstones): none lost; event lines never interleave."""
    t = pq.read_table(ran.dir / "_derived" / "usr.parquet")
    want = []
    for p in range(NPROC):
        mine = [i for k, i in enumerate(IDS) if k % NPROC == p and k > 0]
        want += mine[::4] + mine[2::4]
    assert sorted(t["id"].to_pylist()) == sorted(want)
    visible = set(ran.read_table(columns=["id"])["id"].to_pylist())
    assert not visible & set(want) and set(IDS) - set(want) <= visible
    assert len([e for e in _events(ran) if e["action"] == "tombstone"]) == NPROC * 2
    raw = ran.events_path.read_bytes()
    assert raw.endswith(b"\n")
    for line in raw.splitlines():
        json.loads(line)


def test_A6_concurrent_state_and_ingest(ran):
    """[A6] [U3] [S9] concurrent set_state and add_sequences from 4 processes are all kept."""
    st = ran.get_state(IDS)
    want = [["train", "val", "test", "holdout"][k % NPROC] for k in range(len(IDS))]
    assert st["usr_state__split"].to_pylist() == want
    base = pq.read_table(ran.records_path)
    assert base.num_rows == len(IDS) + NPROC * 5
    assert base["id"].to_pylist()[:len(IDS)] == IDS  # S9: existing rows first, in order
    assert len(set(base["id"].to_pylist())) == base.num_rows


def test_A2_crash_between_data_and_event_leaves_consistent_files(root):
    """[A2] a writer killed after its part is published but before its event: files whole, event missing."""
    code = ("import pyarrow as pa, sys\nfrom usr_core import Dataset\n"
            "ds = Dataset(sys.argv[1], 'conc')\n"
            "ds.write_overlay_part('conc', pa.table({'id': [sys.argv[2]], 'conc__v': pa.array([7], pa.int64())}))\n")
    cds = _make(root)
    cds.write_overlay("conc", pa.table({"id": IDS[:1], "conc__v": pa.array([1], pa.int64())}))
    before = len(_events(cds))
    env = {**os.environ, "USR_CRASH_AT": "part:after-rename", "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-c", code, str(cds.root), IDS[1]], env=env, cwd=str(REPO),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == -9, res.stderr  # SIGKILLed at the crash point
    assert len(_events(cds)) == before  # the event is missing
    assert not (cds.dir / "_derived" / "conc.parquet").exists()  # promoted
    assert len(list((cds.dir / "_derived" / "conc").glob("part-*.parquet"))) == 2
    t = cds.read_table()
    assert dict(zip(t["id"].to_pylist(), t["conc__v"].to_pylist()))[IDS[0]] == 1
    assert dict(zip(t["id"].to_pylist(), t["conc__v"].to_pylist()))[IDS[1]] == 7


def test_A6_threads_sharing_one_dataset_object(root):
    """[A6] [A3] threads sharing one Dataset object are serialised too (lock re-entry is per thread)."""
    import threading
    ds = _make(root)
    errors = []

    def work(p):
        try:
            for i in IDS[p::4]:
                ds.tombstone([i])
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(p,)) for p in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(pq.read_table(ds.dir / "_derived" / "usr.parquet")["id"].to_pylist()) == sorted(IDS)
    with ds.write_session() as s:  # re-entry within one thread still works
        s.add_sequences(["GGGGCCCCAAAA"], bio_type="dna", alphabet="dna_4")
