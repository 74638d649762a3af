"""External compute through Dagster Pipes (issue 12): a subprocess that imports usr_core only reads the rows to
compute, writes its part and reports the materialization with the content data version [O6] [G1] [E3]."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import dagster as dg
import pyarrow as pa

from usr_core import Dataset
from usr_core.inspect import namespace_version, overlay_files
from usr_dagster import build_usr_definitions
from usr_dagster.pipes import usr_pipes_namespace

from dagster_helpers import CREATED, make_root
from score_fn import score_table
from usr_dagster.demo.seed import generate_sequences

SCRIPT = Path(__file__).with_name("pipes_score.py")
COLS = ["id", "score__gc", "score__digest", "score__odd"]
DS = "beta"


def pipes_score(**kw):
    return usr_pipes_namespace("score", columns={"gc": "int64", "digest": "int64", "odd": "float64"},
                               command=[sys.executable, str(SCRIPT)], **kw)


def materialize(root, instance, ns, partition=None):
    res = build_usr_definitions(root, [ns]).resolve_job_def("usr_namespaces" if partition is None else
                                                            "usr_shards_2").execute_in_process(
        instance=instance, partition_key=partition)
    assert res.success
    (mat,) = res.asset_materializations_for_node("beta__score")
    return mat


def test_pipes_subprocess_writes_part_and_reports_content_version(tmp_path):
    root = make_root(tmp_path / "r", {DS: 120})
    inst = dg.DagsterInstance.ephemeral()
    mat = materialize(root, inst, pipes_score())
    ds = Dataset(root, DS)
    # Dagster recorded what the subprocess reported: rows and the content data version of the namespace
    assert mat.metadata["usr/rows_computed"].value == 120
    assert mat.metadata["usr/computed_by"].value == "dagster-pipes"
    version = mat.tags["dagster/data_version"]
    assert version == namespace_version(ds, "score") and version.startswith("usrc1:120:")
    latest = inst.get_latest_materialization_event(dg.AssetKey(["beta", "score"])).asset_materialization
    assert latest.tags["dagster/data_version"] == version
    # the merged view holds the subprocess's values, written by usr_core with the Dagster run as actor
    got = ds.read_table(columns=COLS).sort_by("id")
    want = score_table(ds.read_table(columns=["id", "sequence"], include_overlays=False)).sort_by("id")
    assert got.equals(want)
    (part,) = overlay_files(ds, "score")
    assert part.extra["dagster/code_version"]  # the incremental bookkeeping went with the part
    events = [json.loads(line) for line in ds.events_path.read_text().splitlines()]
    writes = [e for e in events if e["actor"].get("component") == "pipes" and e["action"] != "registry_freeze"]
    assert len(writes) == 1 and writes[0]["actor"]["tool"] == "dagster"  # the event sensor leaves it to the run

    # incremental through Pipes: new records only, then nothing
    ds.import_rows([{"sequence": s, "created_at": CREATED} for s in generate_sequences(7, 501)], source="t")
    assert materialize(root, inst, pipes_score()).metadata["usr/rows_computed"].value == 7
    again = materialize(root, inst, pipes_score())
    assert again.metadata["usr/rows_computed"].value == 0 and len(overlay_files(ds, "score")) == 2
    assert again.tags["dagster/data_version"] == namespace_version(ds, "score")


def test_pipes_sharded_external_namespace(tmp_path):
    """A sharded Pipes namespace: each partition's subprocess computes only its shard."""
    root = make_root(tmp_path / "r", {DS: 100})
    inst = dg.DagsterInstance.ephemeral()
    rows = [materialize(root, inst, pipes_score(shards=2), k).metadata["usr/rows_computed"].value for k in "01"]
    assert sum(rows) == 100 and min(rows) > 0
    ds = Dataset(root, DS)
    want = score_table(ds.read_table(columns=["id", "sequence"], include_overlays=False)).sort_by("id")
    assert ds.read_table(columns=COLS).sort_by("id").equals(want)
    assert pa.compute.sum(pa.array([f.rows for f in overlay_files(ds, "score")])).as_py() == 100
