"""Maintenance jobs (compaction, freeze, materialize) via execute_in_process, and the asset checks [G4] [X2] [X5]
[X6] [V2] [O8] [O1]."""
from __future__ import annotations

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from usr_core import Dataset, ensure_registry_entries, registry_hash
from usr_dagster import UsrResource, build_usr_definitions
from usr_dagster.common import namespace_key, records_key
from usr_dagster.demo.namespaces import DEMO_NAMESPACES


def _gc_part(root, dataset, value: float):
    ds = Dataset(root, dataset)
    ids = ds.read_table(columns=["id"], include_overlays=False).column("id")
    ds.write_overlay_part("gc", pa.table({"id": ids, "gc__fraction": pa.array([value] * len(ids), pa.float64())}))


def _checks(defs, root, key, instance=None):
    res = dg.materialize([*defs.assets, *defs.asset_checks], selection=dg.AssetSelection.checks_for_assets(key),
                         instance=instance or dg.DagsterInstance.ephemeral(),
                         resources={"usr": UsrResource(root=str(root))}, raise_on_error=False)
    return {e.check_name: e for e in res.get_asset_check_evaluations()}


def test_G4_compaction_job_compacts_over_threshold(usr_root):
    """[G4] [X2] [O9] namespaces with >= threshold parts are compacted (collapsed newest-non-null), others not;
    the job reports an observation and runs again as a no-op."""
    for v in (0.1, 0.2, 0.3):
        _gc_part(usr_root, "beta", v)
    _gc_part(usr_root, "grp/alpha", 0.5)
    defs = build_usr_definitions(usr_root, DEMO_NAMESPACES, part_threshold=2)
    checks = _checks(defs, usr_root, namespace_key("beta", "gc"))
    assert not checks["compaction_debt"].passed and checks["compaction_debt"].severity == dg.AssetCheckSeverity.WARN
    job = defs.resolve_job_def("usr_compaction")
    inst = dg.DagsterInstance.ephemeral()
    res = job.execute_in_process(instance=inst)
    assert res.success
    beta = Dataset(usr_root, "beta")
    assert (beta.dir / "_derived" / "gc.parquet").is_file() and not (beta.dir / "_derived" / "gc").exists()
    assert set(beta.read_table(columns=["gc__fraction"]).column("gc__fraction").to_pylist()) == {0.3}
    assert (Dataset(usr_root, "grp/alpha").dir / "_derived" / "gc").is_dir()
    assert res.output_for_node("compact__beta") == ["gc"] and res.output_for_node("compact__grp_alpha") == []
    obs = inst.fetch_observations(namespace_key("beta", "gc"), limit=5).records
    assert obs and obs[0].asset_observation.metadata["usr/parts_before"].value == 3
    assert job.execute_in_process(instance=inst).output_for_node("compact__beta") == []
    assert _checks(defs, usr_root, namespace_key("beta", "gc"))["compaction_debt"].passed


def test_G4_maintenance_ops_use_a_pool_per_dataset(usr_root):
    """[G4] [A3] every maintenance op of a dataset is in that dataset's pool (limit 1 in dagster.yaml)."""
    defs = build_usr_definitions(usr_root, DEMO_NAMESPACES)
    for name in ("usr_compaction", "usr_registry_freeze", "usr_materialize"):
        job = defs.resolve_job_def(name)
        assert job.tags.get("usr/maintenance")
        pools = {n.definition.pool for n in job.graph.nodes}
        assert pools == {"usr_maintenance__beta", "usr_maintenance__grp_alpha"}


def test_X5_freeze_and_X6_materialize_jobs(usr_root):
    """[X5] registry-freeze restamps records with the current hash; [X6] materialize folds a namespace."""
    _gc_part(usr_root, "beta", 0.25)
    ensure_registry_entries(usr_root, {"extra": {"columns": [{"name": "extra__x", "type": "int64"}],
                                                 "owner": None, "description": None}})
    defs = build_usr_definitions(usr_root, DEMO_NAMESPACES)
    inst = dg.DagsterInstance.ephemeral()
    assert defs.resolve_job_def("usr_registry_freeze").execute_in_process(instance=inst).success
    meta = pq.read_schema(Dataset(usr_root, "beta").records_path).metadata
    assert meta[b"usr:registry_hash"].decode() == registry_hash(usr_root)
    assert inst.fetch_observations(records_key("beta"), limit=1).records
    cfg = {"ops": {"materialize__beta": {"config": {"namespaces": ["gc"]}}}}
    res = defs.resolve_job_def("usr_materialize").execute_in_process(run_config=cfg, instance=inst)
    assert res.success and res.output_for_node("materialize__beta") == ["gc"]
    assert "gc__fraction" in pq.read_schema(Dataset(usr_root, "beta").records_path).names


def test_V2_registry_drift_warns_then_fails(usr_root):
    """[V2] another namespace's registration leaves gc's contract intact (WARN: default validation fails,
    namespace-current passes); changing gc's columns breaks its contract (ERROR)."""
    _gc_part(usr_root, "beta", 0.25)
    key = namespace_key("beta", "gc")
    defs = build_usr_definitions(usr_root, DEMO_NAMESPACES)
    assert _checks(defs, usr_root, key)["registry_drift"].passed
    ensure_registry_entries(usr_root, {"extra": {"columns": [{"name": "extra__x", "type": "int64"}],
                                                 "owner": None, "description": None}})
    drift = _checks(defs, usr_root, key)["registry_drift"]
    assert not drift.passed and drift.severity == dg.AssetCheckSeverity.WARN
    ensure_registry_entries(usr_root, {"gc": {"columns": [{"name": "gc__gc_skew", "type": "float64"}],
                                              "owner": None, "description": None}})
    drift = _checks(defs, usr_root, key)["registry_drift"]
    assert not drift.passed and drift.severity == dg.AssetCheckSeverity.ERROR


def test_O8_O1_foreign_part_fails_key_and_schema_checks(usr_root):
    """[O8] [O1] a part written by a foreign tool with duplicate keys and a non-conforming type fails both
    checks; strict validation of the dataset is a separate check on the records asset."""
    _gc_part(usr_root, "beta", 0.25)
    ds = Dataset(usr_root, "beta")
    good = next((ds.dir / "_derived" / "gc").glob("part-*.parquet"))
    table = pq.read_table(good)
    bad = pa.table({"id": pa.concat_arrays([table.column("id").combine_chunks()[:2]] * 2),
                    "gc__fraction": pa.array([1, 2, 3, 4], pa.int32())}).replace_schema_metadata(
                        table.schema.metadata)
    pq.write_table(bad, good.parent / "part-20990101T000000000000Z-ffffffffffffffffffffffffffffffff.parquet")
    defs = build_usr_definitions(usr_root, DEMO_NAMESPACES)
    res = _checks(defs, usr_root, namespace_key("beta", "gc"))
    assert not res["key_uniqueness"].passed and res["key_uniqueness"].metadata["files_with_duplicates"].value == 1
    assert not res["schema_conformance"].passed
    assert "int32" in res["schema_conformance"].description
    strict = _checks(defs, usr_root, records_key("grp/alpha"))["strict_validation"]
    assert strict.passed
