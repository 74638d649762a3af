"""Namespace assets: materializing = writing an overlay part through usr_core [G1] [G3] [O6] [R11] [R14]."""
from __future__ import annotations

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from usr_core import Dataset, load_registry, namespace_contract_hash, registry_hash
from usr_dagster import UsrResource, build_usr_definitions, usr_namespace
from usr_dagster.common import namespace_key, namespace_version, records_key
from usr_dagster.demo.namespaces import DEMO_NAMESPACES, gc_fraction, kmer3_profile, longest_orf, melting_temp

from dagster_helpers import cli_attach_motif


def _assets(defs):
    return [*defs.assets, *defs.asset_checks]


def _parts(root, dataset, ns):
    return sorted((Dataset(root, dataset).dir / "_derived" / ns).glob("part-*.parquet"))


def test_G3_materialize_writes_a_part_with_content_version_as_data_version(usr_root):
    """[G3] [O6] [M2] materialize() with an ephemeral instance writes one part; data version = the namespace's
    content version (what readers see of it)."""
    defs = build_usr_definitions(usr_root, DEMO_NAMESPACES)
    key = namespace_key("grp/alpha", "gc")
    res = dg.materialize(_assets(defs), selection=[key], instance=dg.DagsterInstance.ephemeral(),
                         resources={"usr": UsrResource(root=str(usr_root))})
    assert res.success
    parts = _parts(usr_root, "grp/alpha", "gc")
    assert len(parts) == 1
    mat = res.asset_materializations_for_node(res.get_asset_materialization_events()[0].node_name)[0]
    assert mat.asset_key == key
    assert mat.tags["dagster/data_version"] == namespace_version(Dataset(usr_root, "grp/alpha"), "gc")
    md = {k: v.value for k, v in mat.metadata.items()}
    assert md["dagster/row_count"] == 80 and md["usr/rows_written"] == 80
    assert md["usr/part_path"] == str(parts[0]) and md["dagster/uri"] == parts[0].resolve().as_uri()
    assert md["usr/registry_hash"] == registry_hash(usr_root)
    assert md["usr/namespace_contract_hash"] == namespace_contract_hash(load_registry(usr_root, True), "gc")
    assert [c.name for c in md["dagster/column_schema"].columns] == ["gc__fraction", "gc__count"]
    deps = md["dagster/column_lineage"].deps_by_column["gc__fraction"]
    assert {(d.asset_key, d.column_name) for d in deps} == {(records_key("grp/alpha"), "id"),
                                                            (records_key("grp/alpha"), "sequence")}
    # the part carries the contract metadata and real values
    meta = pq.read_schema(parts[0]).metadata
    assert meta[b"usr:namespace_contract_hash"].decode() == md["usr/namespace_contract_hash"]
    view = Dataset(usr_root, "grp/alpha").read_table(columns=["sequence", "gc__fraction"])
    for seq, frac in zip(view.column("sequence").to_pylist()[:10], view.column("gc__fraction").to_pylist()[:10]):
        assert frac == pytest.approx(gc_fraction(seq))


def test_G3_second_materialization_writes_nothing_new(usr_root):
    """[O9] a rematerialization with no new record writes no part and keeps the data version."""
    defs = build_usr_definitions(usr_root, DEMO_NAMESPACES)
    key = namespace_key("beta", "orf")
    inst = dg.DagsterInstance.ephemeral()
    versions = []
    for _ in range(2):
        assert dg.materialize(_assets(defs), selection=[key], instance=inst,
                              resources={"usr": UsrResource(root=str(usr_root))}).success
        versions.append(inst.get_latest_materialization_event(key).asset_materialization.tags["dagster/data_version"])
    assert len(_parts(usr_root, "beta", "orf")) == 1 and versions[0] == versions[1]


def test_G1_pandas_namespace_reads_upstream_namespace(usr_root):
    """[G1] tm (pandas in/out) reads the gc namespace through the merged view; list<float64> for kmer3."""
    defs = build_usr_definitions(usr_root, DEMO_NAMESPACES)
    keys = [namespace_key("beta", n) for n in ("gc", "tm", "kmer3")]
    res = dg.materialize(_assets(defs), selection=keys, instance=dg.DagsterInstance.ephemeral(),
                         resources={"usr": UsrResource(root=str(usr_root))})
    assert res.success
    t = Dataset(usr_root, "beta").read_table(columns=["sequence", "length", "gc__fraction", "tm__celsius",
                                                        "kmer3__profile"])
    assert t.schema.field("kmer3__profile").type == pa.list_(pa.float64())
    row = t.slice(0, 1).to_pylist()[0]
    assert row["tm__celsius"] == pytest.approx(melting_temp(row["length"], gc_fraction(row["sequence"])))
    assert row["kmer3__profile"] == pytest.approx(kmer3_profile(row["sequence"]))
    assert sum(row["kmer3__profile"]) == pytest.approx(1.0)


def test_G1_records_observation_data_version_changes_with_the_base(usr_root):
    """[G1] the records asset is observable; its data version follows the registry hash + fingerprints."""
    defs = build_usr_definitions(usr_root, DEMO_NAMESPACES)
    inst = dg.DagsterInstance.ephemeral()
    key = records_key("beta")
    job = defs.resolve_job_def("usr_observe_records")

    def version():
        assert job.execute_in_process(instance=inst).success
        return inst.get_latest_data_version_record(key).asset_observation.tags["dagster/data_version"]

    v1 = version()
    assert v1 == version()
    Dataset(usr_root, "beta").tombstone([Dataset(usr_root, "beta").head(1).column("id")[0].as_py()])
    assert version() != v1


def test_definitions_shape_external_namespace_owners_kinds(usr_root, tmp_path):
    """[L3] [L8] records + namespace assets, an external asset for a CLI-attached overlay, owners/kinds/schema."""
    cli_attach_motif(usr_root, "beta", tmp_path)
    defs = build_usr_definitions(usr_root, DEMO_NAMESPACES)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"beta/records", "grp/alpha/records", "beta/motif", "beta/gc", "grp/alpha/tm"} <= keys
    assert "grp/alpha/motif" not in keys
    motif = graph.get(namespace_key("beta", "motif"))
    assert not motif.is_executable and motif.owners == ["cli@example.org"]
    gc = graph.get(namespace_key("beta", "gc"))
    assert gc.is_materializable and gc.kinds >= {"usr", "parquet"} and gc.owners == ["team:usr-demo"]
    assert gc.code_version and graph.get(records_key("beta")).is_observable
    assert [c.name for c in gc.metadata["dagster/column_schema"].columns] == ["gc__fraction", "gc__count"]
    tm = graph.get(namespace_key("beta", "tm"))
    assert namespace_key("beta", "gc") in tm.parent_keys and records_key("beta") in tm.parent_keys
    check_names = {k.name for k in graph.asset_check_keys if k.asset_key == namespace_key("beta", "motif")}
    assert check_names == {"registry_drift", "compaction_debt", "key_uniqueness", "schema_conformance"}
    assert {j.name for j in defs.jobs} >= {"usr_compaction", "usr_registry_freeze", "usr_materialize",
                                            "usr_namespaces"}


def test_factory_rejects_bad_results(usr_root):
    """[O1] a function that forgets a declared column fails with a message naming the fix."""

    @usr_namespace("broken", columns={"x": "float64", "y": "int64"}, owner="qa@example.org")
    def broken(records: pa.Table) -> pa.Table:
        return pa.table({"id": records.column("id"), "broken__x": [1.0] * records.num_rows})

    defs = build_usr_definitions(usr_root, [broken])
    with pytest.raises(Exception, match="lacks registered columns"):
        dg.materialize(_assets(defs), selection=[namespace_key("beta", "broken")],
                       instance=dg.DagsterInstance.ephemeral(), resources={"usr": UsrResource(root=str(usr_root))})
    assert "broken" in load_registry(usr_root, True)  # R11: registered by the first run


def test_orf_and_gc_functions():
    assert gc_fraction("GGCCAT") == pytest.approx(4 / 6)
    assert longest_orf("CCATGAAATAGCC") == 9
    assert longest_orf("CCCTATTTCATCC") == 9  # reverse complement GGATGAAATAGGG
    assert longest_orf("AAAA") == 0


def test_G3_non_incremental_namespace_versions_equal_a_recount(usr_root):
    """[G3] [O9] a namespace recomputed on every run (incremental=False, parts not replaced): the first run's
    data version is added up from the rows written (no part before it), later runs recount; both equal
    the content version read back, NULL cells included."""
    def half(records: pa.Table) -> pa.Table:
        n = records.num_rows
        return pa.table({"id": records["id"], "nh__v": pa.array([None if i % 3 == 0 else float(i) for i in range(n)],
                                                                pa.float64())})

    from usr_core import register_namespace
    register_namespace(usr_root, "nh", "nh__v:float64")
    spec = usr_namespace("nh", columns={"v": "float64"}, incremental=False, replace_on_refresh=False)(half)
    defs = build_usr_definitions(usr_root, [spec], datasets=["beta"])
    key = namespace_key("beta", "nh")
    inst = dg.DagsterInstance.ephemeral()
    for run in range(2):
        res = dg.materialize([a for a in defs.assets if getattr(a, "key", None) == key], instance=inst,
                             resources={"usr": UsrResource(root=str(usr_root))})
        assert res.success
        mat = res.get_asset_materialization_events()[0].event_specific_data.materialization
        assert mat.tags["dagster/data_version"] == namespace_version(Dataset(usr_root, "beta"), "nh"), run
    assert len(_parts(usr_root, "beta", "nh")) == 2
