"""A PostgreSQL-backed Dagster instance (dagster-postgres): a materialization, the compaction job and a sensor
tick, read back from the database [G2] [G3] [G4].

Server: $USR_TEST_PG_DSN (a DSN whose user may CREATE DATABASE), else a throwaway server started from the local
PostgreSQL binaries. Skips with the reason when neither works, unless $CI or $USR_REQUIRE_POSTGRES is set (then it
fails)."""
from __future__ import annotations

import os

import dagster as dg
import pyarrow as pa
import pytest

from dagster_helpers import Ticker, cli_attach_motif, free_port
from pg_helpers import DSN_ENV, Unavailable, fresh_database, throwaway_server
from usr_core import Dataset
from usr_dagster import UsrResource, build_usr_definitions
from usr_dagster.common import namespace_key
from usr_dagster.demo.namespaces import DEMO_NAMESPACES


def _required() -> bool:
    return bool(os.environ.get("CI") or os.environ.get("USR_REQUIRE_POSTGRES"))


@pytest.fixture
def pg_dsn():
    pytest.importorskip("dagster_postgres")
    try:
        if os.environ.get(DSN_ENV):
            with fresh_database(os.environ[DSN_ENV]) as dsn:
                yield dsn
            return
        with throwaway_server(free_port()) as server, fresh_database(server) as dsn:
            yield dsn
    except Unavailable as exc:
        if _required():
            pytest.fail(f"PostgreSQL is required here (CI/USR_REQUIRE_POSTGRES) but unavailable: {exc}")
        pytest.skip(f"no PostgreSQL server could be started: {exc}")


@pytest.fixture
def pg_instance(pg_dsn, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\nstorage:\n  postgres:\n    postgres_url:\n      env: USR_TEST_INSTANCE_PG_URL\n")
    # SQLAlchemy 2.1 maps postgresql:// to psycopg 3; dagster-postgres ships with psycopg2
    os.environ["USR_TEST_INSTANCE_PG_URL"] = pg_dsn.replace("postgresql://", "postgresql+psycopg2://", 1)
    try:
        with dg.DagsterInstance.from_config(str(home)) as inst:
            yield inst
    finally:
        os.environ.pop("USR_TEST_INSTANCE_PG_URL", None)


def test_G4_postgres_instance_materialize_compact_sense(usr_root, pg_instance, tmp_path):
    inst = pg_instance
    assert type(inst.event_log_storage).__name__ == "PostgresEventLogStorage"
    defs = build_usr_definitions(usr_root, DEMO_NAMESPACES, part_threshold=2)
    key = namespace_key("beta", "gc")
    res = dg.materialize([*defs.assets, *defs.asset_checks], selection=[key], instance=inst,
                         resources={"usr": UsrResource(root=str(usr_root))})
    assert res.success
    ds = Dataset(usr_root, "beta")
    ids = ds.read_table(columns=["id"], include_overlays=False).column("id")
    ds.write_overlay_part("gc", pa.table({"id": ids, "gc__fraction": pa.array([0.5] * len(ids), pa.float64())}))

    comp = defs.resolve_job_def("usr_compaction").execute_in_process(instance=inst)
    assert comp.success and comp.output_for_node("compact__beta") == ["gc"]
    assert (ds.dir / "_derived" / "gc.parquet").is_file()

    t = Ticker(usr_root, inst)
    t.tick()
    cli_attach_motif(usr_root, "beta", tmp_path)
    t.tick()

    # read everything back from PostgreSQL
    mats = inst.fetch_materializations(key, limit=10).records
    # the run's own materialization, then the sensor's runless one for the part written with usr_core directly
    assert [m.run_id for m in mats] == ["", res.run_id]
    assert all(m.asset_materialization.tags["dagster/data_version"].startswith("usrc1:") for m in mats)
    assert inst.fetch_observations(key, limit=10).records[0].run_id == comp.run_id
    motif = inst.get_latest_materialization_event(namespace_key("beta", "motif"))
    assert motif is not None and motif.run_id == ""
    assert inst.get_run_by_id(comp.run_id).is_success
    checks = [e for e in inst.all_logs(res.run_id) if e.dagster_event and
              e.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert len(checks) == 4
