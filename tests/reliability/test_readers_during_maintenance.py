"""Readers during maintenance (issue 6 §2): 4 part writers, 1 compactor, 2 readers for ~20 s [A2] [A3]."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import concurrency_worker as cw

WORKER = Path(cw.__file__).resolve()
SECONDS = float(os.environ.get("USR_CONCURRENCY_SECONDS", "20"))


@pytest.mark.slow
def test_readers_during_part_writes_compaction_and_base_rewrites(root, tmp_path):
    cw.setup(root)
    roles = [("writer", str(k)) for k in range(cw.WRITERS)] + [("compactor", "")] + [("reader", ""), ("reader", "")]
    procs = []
    for i, (role, arg) in enumerate(roles):
        out = tmp_path / f"{i}-{role}.json"
        cmd = [sys.executable, str(WORKER), role, str(root), str(SECONDS), str(out)] + ([arg] if arg else [])
        procs.append((role, out, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
    results = []
    for role, out, p in procs:
        log, _ = p.communicate(timeout=SECONDS + 240)
        res = json.loads(out.read_text()) if out.exists() else {"ok": False, "error": log[-2000:]}
        results.append((role, res))
    failed = [(role, r.get("error"), r.get("trace")) for role, r in results if not r["ok"]]
    print(json.dumps([(role, {k: v for k, v in r.items() if k != "trace"}) for role, r in results], indent=1))
    assert not failed, failed
    writers = [r for role, r in results if role == "writer"]
    readers = [r for role, r in results if role == "reader"]
    compactor = next(r for role, r in results if role == "compactor")
    assert all(w["parts"] >= 2 for w in writers)
    assert all(r["reads"] >= 5 for r in readers)
    assert compactor["compactions"] >= 1
    # the final state: every writer's last acknowledged part is visible on every row
    from usr_core import Dataset

    t = Dataset(root, "demo").read_table(columns=cw.COLS)
    for k, w in enumerate(writers):
        assert set(t[cw.COLS[k]].to_pylist()) <= {w["parts"], None}
        assert t[cw.COLS[k]].null_count < t.num_rows
