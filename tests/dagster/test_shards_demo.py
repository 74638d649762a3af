"""The demo shows issue 12: `cpg` is sharded (4 partitions, job usr_shards_4) and `gc_skew` is computed by an
external script through Dagster Pipes; both land in the merged view."""
from __future__ import annotations

import dagster as dg
import pyarrow.compute as pc

from usr_core import Dataset
from usr_dagster.common import namespace_key
from usr_dagster.definitions import demo_definitions

from dagster_helpers import make_root


def test_demo_has_a_sharded_and_a_pipes_namespace(tmp_path, monkeypatch):
    root = make_root(tmp_path / "root", {"dna/demo": 120})
    monkeypatch.setenv("USR_ROOT", str(root))
    defs = demo_definitions(root)
    graph = defs.resolve_asset_graph()
    cpg = graph.get(namespace_key("dna/demo", "cpg"))
    assert cpg.partitions_def.get_partition_keys() == ["0", "1", "2", "3"]
    assert graph.get(namespace_key("dna/demo", "gc_skew")).tags["usr/origin"] == "pipes"
    inst = dg.DagsterInstance.ephemeral()
    for k in "0123":
        assert defs.resolve_job_def("usr_shards_4").execute_in_process(partition_key=k, instance=inst).success
    assert defs.resolve_job_def("usr_namespaces").execute_in_process(instance=inst).success
    t = Dataset(root, "dna/demo").read_table(columns=["id", "sequence", "cpg__count", "gc_skew__skew"])
    assert t.column("cpg__count").null_count == 0 and t.column("gc_skew__skew").null_count == 0
    want = pc.count_substring(pc.utf8_upper(t.column("sequence")), "CG").cast("int64")
    assert t.column("cpg__count").equals(want)
