"""The event-log sensor through real ticks on a real SQLite instance, after real `usr` CLI writes [G2] [E1] [X11]."""
from __future__ import annotations

import json

import dagster as dg
import pytest

from dagster_helpers import Ticker, cli_attach_motif
from usr_core import Dataset
from usr_dagster import UsrResource, build_usr_definitions
from usr_dagster.common import namespace_key, namespace_version, records_key, records_version
from usr_dagster.demo.namespaces import DEMO_NAMESPACES
from usr_dagster.sensors import evaluate, read_new_events


@pytest.fixture
def instance(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


def test_G2_cli_attach_becomes_runless_materialization(usr_root, instance, tmp_path):
    """[G2] [E7] a `usr attach` in a subprocess shows up at the next tick as a runless materialization whose data
    version is the namespace's content version; the records observation carries the records' content version."""
    t = Ticker(usr_root, instance)
    first = t.tick()
    assert {e.asset_key for e in first} == {records_key("beta"), records_key("grp/alpha")}
    assert all(isinstance(e, dg.AssetObservation) for e in first)
    assert t.tick() == []  # nothing new

    cli_attach_motif(usr_root, "beta", tmp_path)
    events = t.tick()
    mats = [e for e in events if isinstance(e, dg.AssetMaterialization)]
    assert [m.asset_key for m in mats] == [namespace_key("beta", "motif")]
    version = namespace_version(Dataset(usr_root, "beta"), "motif")
    assert mats[0].tags["dagster/data_version"] == version
    assert mats[0].metadata["usr/action"].value == "attach"
    stored = instance.get_latest_materialization_event(namespace_key("beta", "motif")).asset_materialization
    assert stored.tags["dagster/data_version"] == version
    obs = instance.get_latest_data_version_record(records_key("beta"))
    assert obs.asset_observation.tags["dagster/data_version"] == records_version(Dataset(usr_root, "beta"))
    assert t.tick() == []


def test_G2_dagster_writes_are_not_reported_twice(usr_root, instance):
    """[G2] parts written by Dagster runs (actor tool `dagster`) are reported by the run, not by the sensor."""
    t = Ticker(usr_root, instance)
    t.tick()
    defs = build_usr_definitions(usr_root, DEMO_NAMESPACES)
    assert dg.materialize([*defs.assets], selection=[namespace_key("beta", "gc")], instance=instance,
                          resources={"usr": UsrResource(root=str(usr_root))}).success
    assert not [e for e in t.tick() if isinstance(e, dg.AssetMaterialization)]


def test_X11_gardened_log_does_not_replay_events(usr_root, instance, tmp_path):
    """[X11] gardening replaces the log: the sensor rereads it from 0 but reports only newer events."""
    t = Ticker(usr_root, instance)
    cli_attach_motif(usr_root, "beta", tmp_path, value=1)
    assert [e.asset_key for e in t.tick() if isinstance(e, dg.AssetMaterialization)] == \
        [namespace_key("beta", "motif")]
    Dataset(usr_root, "beta").garden_event_log(retain_last=2, write=True, acknowledge_cursor_reset=True,
                                               reason="test")
    assert not [e for e in t.tick() if isinstance(e, dg.AssetMaterialization)]
    cli_attach_motif(usr_root, "beta", tmp_path, register=False, value=2)
    mats = [e for e in t.tick() if isinstance(e, dg.AssetMaterialization)]
    assert len(mats) == 1 and mats[0].metadata["usr/events"].value == 1


def test_G2_cursor_skips_partial_lines(tmp_path):
    """[E1] a line without its newline is read at the next tick, once complete."""
    log = tmp_path / ".events.log"
    line = json.dumps({"action": "init", "timestamp_utc": "2024-01-01T00:00:00.000000Z"})
    log.write_text(line + "\n" + line[:10])
    events, state, _ = read_new_events(log, None)
    assert len(events) == 1 and state["off"] == len(line) + 1
    with open(log, "a") as fh:
        fh.write(line[10:].replace("00.000000Z", "01.000000Z") + "\n")
    events, state, _ = read_new_events(log, state)
    assert len(events) == 1 and events[0]["timestamp_utc"].endswith("01.000000Z")


def test_G2_new_namespace_is_reported_and_flagged_for_reload(usr_root, tmp_path):
    """[G2] [L8] a namespace attached after the definitions loaded is still reported; the tick names it as
    needing a code-location reload."""
    defs = build_usr_definitions(usr_root, DEMO_NAMESPACES)
    known = frozenset(defs.resolve_asset_graph().get_all_asset_keys())
    _, cursor, _, _ = evaluate(usr_root, None, known)
    cli_attach_motif(usr_root, "beta", tmp_path)
    events, _, unknown, _ = evaluate(usr_root, cursor, known)
    assert namespace_key("beta", "motif") in {e.asset_key for e in events}
    assert unknown == ["beta/motif"]
