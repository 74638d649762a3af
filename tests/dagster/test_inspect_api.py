"""usr_dagster on usr_core's inspection API only; checks that run on their own; the sensor and the compaction job
say what happened (issue 11, issue 13 item 6) [O8] [V2] [G2] [G4] [E1]."""
from __future__ import annotations

import json
import re
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from usr_core import Dataset, SequencesError
from usr_core.inspect import EventCursor, overlay_problems, tail_events
from usr_dagster import UsrResource, build_usr_definitions
from usr_dagster.common import namespace_key
from usr_dagster.demo.namespaces import DEMO_NAMESPACES

from dagster_helpers import Ticker, cli_attach_motif, usr_cli

PKG = Path(__file__).resolve().parents[2] / "usr_dagster"


def test_usr_dagster_has_no_storage_rules_of_its_own():
    """No `usr:` metadata key, no reserved namespace name, no discovery or parquet read of overlay files."""
    for path in PKG.rglob("*.py"):
        text = path.read_text()
        rel = path.relative_to(PKG.parent)
        assert not re.search(r"""["']usr:""", text), rel  # a `usr:` metadata key (parameters `usr: UsrResource` are fine)
        assert "_derived" not in text and "part-" not in text, rel
        assert not re.search(r"""["']usr_state["']|RESERVED|TOMBSTONE""", text), rel
        assert not re.search(r"ParquetFile\(|read_table\(\s*[a-z_.]*path|read_metadata\(|\.glob\(", text), rel
        for m in re.finditer(r"pq\.read_schema\(([^)]*)\)", text):
            assert m.group(1) == "ds.records_path", rel


def _gc_part(root, dataset="beta", value=0.25):
    ds = Dataset(root, dataset)
    ids = ds.read_table(columns=["id"], include_overlays=False).column("id")
    return ds.write_part("gc", pa.table({"id": ids, "gc__fraction": pa.array([value] * len(ids))}))


def _check_results(defs, root, selection, instance=None):
    res = dg.materialize([*defs.assets, *defs.asset_checks], selection=selection,
                         instance=instance or dg.DagsterInstance.ephemeral(),
                         resources={"usr": UsrResource(root=str(root))}, raise_on_error=False)
    return res, {(e.asset_key.to_user_string(), e.check_name): e for e in res.get_asset_check_evaluations()}


def test_O8_trailing_space_key_fails_the_dagster_check_and_the_reader_alike(usr_root):
    """A part with keys `k` and `k ` (trailing space): the reader normalises keys (O2) and refuses the file, and the
    Dagster key check, which runs the reader's own check, fails too."""
    written = _gc_part(usr_root)
    k = pq.read_table(written.path, columns=["id"]).column("id")[0].as_py()
    bad = pa.table({"id": [k, k + " "], "gc__fraction": [0.1, 0.2]}).replace_schema_metadata(
        pq.read_schema(written.path).metadata)
    pq.write_table(bad, written.path.with_name("part-20990101T000000000000Z-" + "e" * 32 + ".parquet"))
    ds = Dataset(usr_root, "beta")
    with pytest.raises(SequencesError, match="duplicate"):
        ds.read_table(columns=["id", "gc__fraction"])
    assert [p.kind for p in overlay_problems(ds, "gc")] == ["keys"]
    defs = build_usr_definitions(usr_root, DEMO_NAMESPACES)
    _, checks = _check_results(defs, usr_root, dg.AssetSelection.checks_for_assets(namespace_key("beta", "gc")))
    keys = checks[("beta/gc", "key_uniqueness")]
    assert not keys.passed and k in keys.description


def test_checks_run_on_their_own_for_cli_namespaces_and_records(usr_root, tmp_path):
    """One check alone (subsetting), the scheduled `usr_checks` job over every namespace (a CLI-written one
    included) and `records`; a registry change shows in the drift check without any materialization."""
    cli_attach_motif(usr_root, "beta", tmp_path)
    defs = build_usr_definitions(usr_root, DEMO_NAMESPACES)
    motif = namespace_key("beta", "motif")
    res, one = _check_results(defs, usr_root, dg.AssetSelection.checks(dg.AssetCheckKey(motif, "registry_drift")))
    assert res.success and list(one) == [("beta/motif", "registry_drift")] and one[("beta/motif", "registry_drift")].passed
    assert defs.resolve_schedule_def("usr_checks_schedule").job_name == "usr_checks"
    job = defs.resolve_job_def("usr_checks")
    inst = dg.DagsterInstance.ephemeral()
    result = job.execute_in_process(instance=inst, raise_on_error=False)
    evals = {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}
    assert evals[("beta/motif", "schema_conformance")].passed
    assert evals[("beta/records", "strict_validation")].passed
    assert ("grp/alpha/gc", "key_uniqueness") in evals
    usr_cli(usr_root, "namespace", "register", "later", "--columns", "later__x:int64")
    result = job.execute_in_process(instance=inst, raise_on_error=False)
    evals = {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}
    drift = evals[("beta/motif", "registry_drift")]
    assert not drift.passed and drift.severity == dg.AssetCheckSeverity.WARN
    assert not evals[("beta/records", "strict_validation")].passed  # usr validate --strict fails the same way


def test_G4_compaction_job_says_why_per_namespace(usr_root):
    for v in (0.1, 0.2):
        _gc_part(usr_root, value=v)
    defs = build_usr_definitions(usr_root, DEMO_NAMESPACES)
    inst = dg.DagsterInstance.ephemeral()
    res = defs.resolve_job_def("usr_compaction").execute_in_process(instance=inst)
    logs = [e.user_message for e in inst.all_logs(res.run_id)]
    assert any("beta/gc: skipped: 2 part(s) < threshold 8" in m for m in logs), logs
    assert any("grp/alpha: nothing to compact" in m for m in logs)
    cfg = {"ops": {"compact__beta": {"config": {"part_threshold": 2}}}}
    res = defs.resolve_job_def("usr_compaction").execute_in_process(instance=inst, run_config=cfg)
    logs = [e.user_message for e in inst.all_logs(res.run_id)]
    assert any("beta/gc: compact: 2 parts >= threshold 2" in m for m in logs), logs


def _append_raw(ds: Dataset, line: str) -> None:
    with open(ds.events_path, "ab") as fh:
        fh.write(line.encode() + b"\n")


def test_E1_sensor_skips_and_reports_unusable_lines_and_says_what_it_reported(usr_root, tmp_path):
    """[issue 13 item 6] An event whose args is a list, JSON lines that are not objects and a torn line: the sensor
    skips them, reports them, keeps its cursor moving and reports the CLI write that follows."""
    inst = dg.DagsterInstance.ephemeral()
    ticker = Ticker(usr_root, inst)
    ticker.tick()
    ds = Dataset(usr_root, "beta")
    _append_raw(ds, json.dumps({"action": "attach", "args": ["gc"], "timestamp_utc": "2099-01-01T00:00:00.000000Z"}))
    for raw in ("123", '["x"]', "null", '{"action": "attach", "args": {"namespace": "gc"'):
        _append_raw(ds, raw)
    defs = build_usr_definitions(usr_root, DEMO_NAMESPACES)
    sensor = defs.resolve_sensor_def("usr_event_log_sensor")
    ctx = dg.build_sensor_context(instance=inst, cursor=ticker.cursor, definitions=defs)
    result = sensor(ctx)
    assert not result.asset_events and "Skipped 5 unusable event-log line(s)" in result.skip_reason.skip_message
    ticker.cursor = result.cursor
    cli_attach_motif(usr_root, "beta", tmp_path)
    ctx = dg.build_sensor_context(instance=inst, cursor=ticker.cursor, definitions=defs)
    result = sensor(ctx)
    keys = {e.asset_key for e in result.asset_events}
    assert namespace_key("beta", "motif") in keys
    assert result.skip_reason.skip_message.startswith("Reported ") and "outside Dagster" in result.skip_reason.skip_message
    again = sensor(dg.build_sensor_context(instance=inst, cursor=result.cursor, definitions=defs))
    assert not again.asset_events


def test_tail_events_cursor_skips_bad_lines_and_follows_gardening(usr_root):
    ds = Dataset(usr_root, "beta")
    first = tail_events(ds.events_path)
    assert first.events and not first.skipped
    _append_raw(ds, '{"args": [1]}')
    ds.log_event("note_written", args={"n": 1})
    more = tail_events(ds.events_path, first.cursor)
    assert [e["action"] for e in more.events] == ["note_written"] and len(more.skipped) == 1
    assert tail_events(ds.events_path, more.cursor).lines == []
    assert EventCursor.from_dict(more.cursor.to_dict()) == more.cursor
    assert EventCursor.from_dict(["junk"]) == EventCursor()


def test_cli_events_tail_follow_shares_the_tail(usr_root):
    """`usr events tail --follow` (the sensor's tail): new events print once complete, a torn line does not stop it."""
    import os
    import subprocess
    import sys
    import time

    ds = Dataset(usr_root, "beta")
    exe = Path(sys.executable).parent / "usr"
    proc = subprocess.Popen([str(exe), "--root", str(usr_root), "events", "tail", "beta", "--n", "1", "--follow",
                             "--format", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ})
    try:
        time.sleep(2.0)
        _append_raw(ds, '{"torn": ')
        ds.log_event("followed_one", args={"n": 1})
        deadline, out = time.monotonic() + 30, ""
        os.set_blocking(proc.stdout.fileno(), False)
        while time.monotonic() < deadline and "followed_one" not in out:
            time.sleep(0.3)
            out += proc.stdout.read() or ""
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "followed_one" in out and "invalid_line" in out, out[-2000:]


def test_V2_sensor_reevaluates_drift_when_the_registry_changes(usr_root):
    """[V2] `usr namespace register` writes no dataset event; the sensor notices the new registry hash and posts
    the drift check of every namespace, so the UI does not keep showing the old result."""
    _gc_part(usr_root)
    inst = dg.DagsterInstance.ephemeral()
    ticker = Ticker(usr_root, inst)
    ticker.tick()
    assert not [e for e in ticker.tick() if isinstance(e, dg.AssetCheckEvaluation)]
    usr_cli(usr_root, "namespace", "register", "another", "--columns", "another__x:int64")
    defs = build_usr_definitions(usr_root, DEMO_NAMESPACES)
    result = defs.resolve_sensor_def("usr_event_log_sensor")(
        dg.build_sensor_context(instance=inst, cursor=ticker.cursor, definitions=defs))
    evals = [e for e in result.asset_events if isinstance(e, dg.AssetCheckEvaluation)]
    assert [(e.asset_key, e.check_name, e.passed, e.severity) for e in evals] == [
        (namespace_key("beta", "gc"), "registry_drift", False, dg.AssetCheckSeverity.WARN)]
    assert "registry.yaml changed" in result.skip_reason.skip_message
    for ev in result.asset_events:
        inst.report_runless_asset_event(ev)
