"""Sharded and batch-wise namespaces (issue 12): stable disjoint shards, per-shard incremental rules, a merged view
equal to an unsharded materialization, compaction of the shard parts, bounded batches [O6] [O9] [G1]."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pytest

from usr_core import Dataset
from usr_core.external import shard_of
from usr_core.inspect import overlay_files
from usr_dagster import build_usr_definitions, usr_namespace
from usr_dagster.demo.seed import generate_sequences
from usr_dagster.shards import shard_keys

from dagster_helpers import CREATED, make_root
import shard_defs

COLS = ["id", "score__gc", "score__digest", "score__odd"]
DS = "grp/alpha"


def unsharded(**kw):
    return usr_namespace("score", columns={"gc": "int64", "digest": "int64", "odd": "float64"}, code_version="s1",
                         **kw)(shard_defs.score_table)


def view(root) -> pa.Table:
    return Dataset(root, DS).read_table(columns=COLS).sort_by("id")


def run_shards(root, instance, keys=None, n=4):
    job = build_usr_definitions(root, [shard_defs.score]).resolve_job_def(f"usr_shards_{n}")
    out = {}
    for k in keys or shard_keys(n):
        res = job.execute_in_process(partition_key=k, instance=instance)
        assert res.success
        (mat,) = res.asset_materializations_for_node("grp__alpha__score")
        out[k] = (mat.metadata["usr/rows_computed"].value, mat.tags.get("dagster/data_version"))
    return out


def run_unsharded(root, instance, ns=None):
    res = build_usr_definitions(root, [ns or unsharded()]).resolve_job_def("usr_namespaces").execute_in_process(
        instance=instance)
    assert res.success


def add_records(root, n, seed):
    Dataset(root, DS).import_rows([{"sequence": s, "created_at": CREATED} for s in generate_sequences(n, seed)],
                                  source="test")


def test_shard_of_is_stable_across_processes_and_disjoint():
    """A record always falls in the same shard: the assignment is a content hash of the id, not hash()."""
    ids = [f"id-{i:05d}" for i in range(2000)]
    here = shard_of(pa.array(ids), 8)
    code = ("import json,sys,pyarrow as pa; from usr_core.external import shard_of; "
            "print(json.dumps(shard_of(pa.array(json.loads(sys.stdin.read())), 8).tolist()))")
    other = subprocess.run([sys.executable, "-c", code], input=json.dumps(ids), capture_output=True, text=True,
                           env={"PYTHONHASHSEED": "123", "PATH": ""}, check=True)
    assert json.loads(other.stdout) == here.tolist()
    counts = np.bincount(here, minlength=8)
    assert counts.sum() == 2000 and counts.min() > 180  # every id in exactly one shard, roughly balanced
    assert shard_of(pa.array(ids[:10]), 8).tolist() == here[:10].tolist()  # independent of the batch it is in


def test_four_shards_equal_unsharded_incremental_per_shard(tmp_path):
    """Four partitions, then an unsharded materialization of a twin root: the merged views are equal; after
    adding records one shard computes only its new rows; an identical rerun computes nothing and keeps versions."""
    a, b = make_root(tmp_path / "a", {DS: 300}), make_root(tmp_path / "b", {DS: 300})
    inst = dg.DagsterInstance.ephemeral()
    first = run_shards(a, inst)
    assert sum(r for r, _ in first.values()) == 300 and all(r > 0 for r, _ in first.values())
    assert len(overlay_files(Dataset(a, DS), "score")) == 4
    run_unsharded(b, inst)
    assert view(a).equals(view(b))

    again = run_shards(a, inst)
    assert again == {k: (0, v) for k, (_, v) in first.items()}  # nothing computed, same data versions
    assert len(overlay_files(Dataset(a, DS), "score")) == 4

    add_records(a, 40, seed=99)
    add_records(b, 40, seed=99)
    new_ids = Dataset(a, DS).read_table(columns=["id"]).column("id").to_pylist()[300:]
    in_1 = int((shard_of(pa.array(new_ids), 4) == 1).sum())
    assert run_shards(a, inst, ["1"])["1"][0] == in_1
    rest = run_shards(a, inst)
    assert rest["1"][0] == 0 and sum(r for r, _ in rest.values()) == 40 - in_1
    assert rest["0"][1] != first["0"][1] or int((shard_of(pa.array(new_ids), 4) == 0).sum()) == 0
    run_unsharded(b, inst)
    assert view(a).equals(view(b))
    Dataset(a, DS).validate(strict=True)


def test_compaction_folds_shard_parts_and_keeps_bookkeeping(tmp_path):
    """The compaction job folds the shard parts into one file; the view is unchanged and the next backfill
    computes nothing (the bookkeeping the parts agree on is kept on the compact file)."""
    root = make_root(tmp_path / "r", {DS: 200})
    inst = dg.DagsterInstance.ephemeral()
    versions = run_shards(root, inst)
    before = view(root)
    defs = build_usr_definitions(root, [shard_defs.score], part_threshold=2)
    assert defs.resolve_job_def("usr_compaction").execute_in_process(instance=inst).success
    files = overlay_files(Dataset(root, DS), "score")
    assert [f.kind for f in files] == ["compact"]
    assert view(root).equals(before)
    assert run_shards(root, inst) == {k: (0, v) for k, (_, v) in versions.items()}


def test_batches_call_the_function_on_bounded_batches(tmp_path):
    """batch_size=64: the function is called on batches of 64 to 127 rows (scan batches gathered up to the size),
    one part is written per call, and the view equals a one-call materialization of a twin root."""
    a, b = make_root(tmp_path / "a", {DS: 300}), make_root(tmp_path / "b", {DS: 300})
    sizes = []

    def score_table(records: pa.Table) -> pa.Table:
        sizes.append(records.num_rows)
        return shard_defs.score_table(records)

    batched = usr_namespace("score", columns={"gc": "int64", "digest": "int64", "odd": "float64"},
                            code_version="s1", batch_size=64)(score_table)
    inst = dg.DagsterInstance.ephemeral()
    run_unsharded(a, inst, batched)
    assert sum(sizes) == 300 and max(sizes) < 2 * 64 and len(sizes) >= 300 // 128
    assert len(overlay_files(Dataset(a, DS), "score")) == len(sizes)
    run_unsharded(b, inst)
    assert view(a).equals(view(b))
    sizes.clear()
    run_unsharded(a, inst, batched)
    assert sizes == []  # incremental: nothing left to compute


def test_bad_slicing_options_are_refused_with_the_fix():
    for kw, words in [({"shards": 1}, "from 2 to 4096"), ({"shards": -3}, "from 2 to 4096"),
                      ({"batch_size": 0}, "positive integer"), ({"shards": 4, "key": "sequence"}, "key='id'")]:
        with pytest.raises(ValueError, match=words.replace("(", r"\(")):
            usr_namespace("score", columns={"gc": "int64"}, **kw)(shard_defs.score_table)


def test_code_change_recomputes_shard_by_shard_then_replaces_stale_files(tmp_path):
    """A new code version: each shard recomputes its slice; when the last one is done the stale files are
    replaced, so the view is exactly the new output (NULLs included, where the old code had values) and a
    compaction later does not mix old and new bookkeeping (the next backfill computes nothing)."""
    root = make_root(tmp_path / "r", {DS: 200})
    inst = dg.DagsterInstance.ephemeral()
    run_shards(root, inst)

    def new_code(records: pa.Table) -> pa.Table:
        t = shard_defs.score_table(records)
        return t.set_column(3, "score__odd", pa.nulls(t.num_rows, pa.float64()))  # NULL everywhere now

    v2 = usr_namespace("score", columns={"gc": "int64", "digest": "int64", "odd": "float64"}, code_version="s2",
                       shards=4)(new_code)
    job = build_usr_definitions(root, [v2]).resolve_job_def("usr_shards_4")
    computed = []
    for k in shard_keys(4):
        res = job.execute_in_process(partition_key=k, instance=inst)
        computed.append(res.asset_materializations_for_node("grp__alpha__score")[0].metadata["usr/rows_computed"].value)
    assert sum(computed) == 200
    ds = Dataset(root, DS)
    files = overlay_files(ds, "score")
    assert [f.kind for f in files] == ["compact"] and files[0].extra["dagster/code_version"] == "s2"
    got = view(root)
    assert got.column("score__odd").null_count == 200
    want = new_code(ds.read_table(columns=["id", "sequence"], include_overlays=False)).sort_by("id")
    assert got.equals(want)
    again = [job.execute_in_process(partition_key=k, instance=inst).asset_materializations_for_node(
        "grp__alpha__score")[0].metadata["usr/rows_computed"].value for k in shard_keys(4)]
    assert again == [0, 0, 0, 0]
