"""The demo code location: deterministic seed, first-load seeding, `dagster definitions validate` [L3] [S4]."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from dagster_helpers import REPO
from usr_core import Dataset, compute_id
from usr_dagster.common import namespace_key, records_key
from usr_dagster.demo.seed import MARKER, generate_sequences


def test_seed_sequences_are_deterministic_dna():
    a, b = generate_sequences(200, 7), generate_sequences(200, 7)
    assert a == b and len(set(a)) == 200 and a != generate_sequences(200, 8)
    assert all(120 <= len(s) <= 600 and set(s) <= set("ACGT") for s in a)


def test_demo_first_load_seeds_and_validates(tmp_path):
    """`dagster definitions validate -w workspace.yaml` on an empty USR_ROOT seeds the demo (a CLI attach
    included) and passes; the location has records, >= 4 namespace assets with schema/lineage/owners, the
    compaction schedule, the event sensor (RUNNING) and the checks."""
    root = tmp_path / "demo_root"
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "USR_ROOT": str(root), "DAGSTER_HOME": str(home)}
    proc = subprocess.run([str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w",
                           str(REPO / "workspace.yaml")], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (root / MARKER).is_file()
    demo = Dataset(root, "dna/demo")
    first = demo.head(1, include_derived=False).to_pylist()[0]
    assert first["id"] == compute_id("dna", first["sequence"]) and demo.info().rows == 3000
    assert "motif__tata" in demo.read_table(columns=["id", "motif__tata"]).column_names
    assert '"tool":"usr-cli-demo"' in demo.events_path.read_text()

    from usr_dagster.definitions import demo_definitions

    defs = demo_definitions(root)
    graph = defs.resolve_asset_graph()
    assert graph.get(records_key("dna/demo")).is_observable
    for ns in ("gc", "kmer3", "tm", "orf"):
        node = graph.get(namespace_key("dna/demo", ns))
        assert node.is_materializable and node.owners == ["team:usr-demo"]
        assert node.metadata["dagster/column_schema"].columns
        assert node.metadata["dagster/column_lineage"].deps_by_column
    assert not graph.get(namespace_key("dna/demo", "motif")).is_executable
    sensor = defs.resolve_sensor_def("usr_event_log_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert defs.resolve_sensor_def("usr_automation_sensor").default_status == dg.DefaultSensorStatus.RUNNING
    assert defs.resolve_schedule_def("usr_compaction_schedule").default_status == dg.DefaultScheduleStatus.RUNNING
    assert len(list(graph.asset_check_keys)) >= 4 * 5 + 2
