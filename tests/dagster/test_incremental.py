"""Incremental namespaces, full refresh that replaces, data versions from content (issue 11) [G1] [G3] [O9] [R14]."""
from __future__ import annotations

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.loader import LoadingContextForTest

from usr_core import Dataset, ensure_registry_entries, register_namespace
from usr_core.inspect import namespace_version, overlay_files
from usr_dagster import UsrResource, build_usr_definitions, usr_namespace
from usr_dagster.common import namespace_key, records_key
from usr_dagster.demo.namespaces import DEMO_NAMESPACES
from usr_dagster.demo.seed import generate_sequences

from dagster_helpers import CREATED, Ticker, usr_cli

DS = "beta"


def _run(defs, root, keys, instance, config=None):
    res = dg.materialize([*defs.assets, *defs.asset_checks], selection=keys, instance=instance,
                         resources={"usr": UsrResource(root=str(root))}, run_config=config)
    assert res.success
    return res


def _version(instance, key):
    ev = instance.get_latest_materialization_event(key)
    return ev.asset_materialization.tags["dagster/data_version"] if ev else None


def _md(instance, key):
    return {k: v.value for k, v in instance.get_latest_materialization_event(key).asset_materialization.metadata.items()}


def _counting(name="cnt", code_version="v1", value=lambda s: float(len(s)), calls=None):
    calls = calls if calls is not None else []

    @usr_namespace(name, columns={"v": "float64"}, code_version=code_version)
    def fn(records: pa.Table) -> pa.Table:
        calls.append(records.num_rows)
        return pa.table({"id": records.column("id"),
                         f"{name}__v": pa.array([value(s) for s in records.column("sequence").to_pylist()],
                                                pa.float64())})

    return fn, calls


def _add(root, n, seed=99):
    Dataset(root, DS).import_rows([{"sequence": s, "created_at": CREATED} for s in generate_sequences(n, seed)],
                                  source="more")


def _stale(instance, defs, keys):
    graph = defs.resolve_asset_graph()
    resolver = CachingStaleStatusResolver(instance, graph, LoadingContextForTest(instance))
    return {k.to_user_string(): resolver.get_status(k) for k in keys}


def test_G3_incremental_calls_only_new_rows_and_identical_rerun_writes_nothing(usr_root):
    """A rerun with nothing new calls nothing, writes no file, keeps the data version; 7 added records -> the
    function gets exactly 7 rows and the part holds them; tombstoned rows are never computed."""
    fn, calls = _counting()
    defs = build_usr_definitions(usr_root, [fn])
    key, inst = namespace_key(DS, "cnt"), dg.DagsterInstance.ephemeral()
    ds = Dataset(usr_root, DS)
    gone = ds.head(1, include_derived=False).column("id").to_pylist()
    ds.tombstone(gone, reason="bad")
    _run(defs, usr_root, [key], inst)
    assert calls == [49]
    v1, files1 = _version(inst, key), overlay_files(ds, "cnt")
    _run(defs, usr_root, [key], inst)
    assert calls == [49] and overlay_files(ds, "cnt") == files1 and _version(inst, key) == v1
    assert _md(inst, key)["usr/rows_written"] == 0 and _md(inst, key)["usr/mode"] == "incremental"
    _add(usr_root, 7)
    _run(defs, usr_root, [key], inst)
    assert calls == [49, 7]
    files = overlay_files(ds, "cnt")
    assert len(files) == 2 and files[0].rows == 7 and files[0].extra["dagster/code_version"] == "v1"
    assert _version(inst, key) != v1
    assert _version(inst, key) == namespace_version(ds, "cnt")  # the version added up equals a full recount
    view = ds.read_table(columns=["id", "sequence", "cnt__v"], include_deleted=True)
    ok = view.filter(pc.invert(pc.is_in(view.column("id"), pa.array(gone))))
    assert ok.column("cnt__v").to_pylist() == [float(len(s)) for s in ok.column("sequence").to_pylist()]
    assert view.filter(pc.is_in(view.column("id"), pa.array(gone))).column("cnt__v").to_pylist() == [None]


def test_G3_bookkeeping_survives_a_new_instance_and_compaction(usr_root):
    """The record of what was computed lives in the files: a fresh instance, and a compaction of the parts,
    still compute nothing."""
    fn, calls = _counting()
    defs = build_usr_definitions(usr_root, [fn], part_threshold=2)
    key = namespace_key(DS, "cnt")
    _run(defs, usr_root, [key], dg.DagsterInstance.ephemeral())
    _add(usr_root, 5)
    inst = dg.DagsterInstance.ephemeral()
    _run(defs, usr_root, [key], inst)
    assert calls == [50, 5]
    v = _version(inst, key)
    assert defs.resolve_job_def("usr_compaction").execute_in_process(instance=inst).success
    files = overlay_files(Dataset(usr_root, DS), "cnt")
    assert [f.kind for f in files] == ["compact"] and files[0].extra["dagster/code_version"] == "v1"
    _run(defs, usr_root, [key], dg.DagsterInstance.ephemeral())
    inst2 = dg.DagsterInstance.ephemeral()
    _run(defs, usr_root, [key], inst2)
    assert calls == [50, 5] and _version(inst2, key) == v  # compaction kept the content version


def test_G3_full_refresh_after_code_change_shows_exactly_the_new_output_nulls_included(usr_root):
    """A new code version recomputes every visible row and replaces the overlay: rows where the new code
    returns NULL show NULL, not the old value (newest-non-null-wins would keep it)."""
    old, _ = _counting(code_version="v1")
    _run(build_usr_definitions(usr_root, [old]), usr_root, [namespace_key(DS, "cnt")], dg.DagsterInstance.ephemeral())
    _add(usr_root, 3)
    _run(build_usr_definitions(usr_root, [old]), usr_root, [namespace_key(DS, "cnt")], dg.DagsterInstance.ephemeral())
    ds = Dataset(usr_root, DS)
    assert len(overlay_files(ds, "cnt")) == 2
    new, calls = _counting(code_version="v2", value=lambda s: None if s.startswith("A") else -1.0)
    inst = dg.DagsterInstance.ephemeral()
    _run(build_usr_definitions(usr_root, [new]), usr_root, [namespace_key(DS, "cnt")], inst)
    assert calls == [53]
    md = _md(inst, namespace_key(DS, "cnt"))
    assert md["usr/mode"] == "full_refresh" and md["usr/replaced"] and "code version changed" in md["usr/reasons"]
    files = overlay_files(ds, "cnt")
    assert [f.kind for f in files] == ["compact"] and files[0].extra["dagster/code_version"] == "v2"
    view = ds.read_table(columns=["sequence", "cnt__v"])
    expect = [None if s.startswith("A") else -1.0 for s in view.column("sequence").to_pylist()]
    assert None in expect and view.column("cnt__v").to_pylist() == expect
    assert _version(inst, namespace_key(DS, "cnt")) == namespace_version(ds, "cnt")
    # run config asks for a full refresh with unchanged code: same content, same data version
    v = _version(inst, namespace_key(DS, "cnt"))
    _run(build_usr_definitions(usr_root, [new]), usr_root, [namespace_key(DS, "cnt")], inst,
         config={"ops": {"beta__cnt": {"config": {"full_refresh": True}}}})
    assert calls == [53, 53] and _version(inst, namespace_key(DS, "cnt")) == v
    assert _md(inst, namespace_key(DS, "cnt"))["usr/reasons"] == "run config asks for a full refresh"


def test_G3_upstream_change_refreshes_the_downstream_namespace(usr_root):
    """tm reads gc: when gc's data changes (new rows computed), tm is recomputed for every row."""
    defs = build_usr_definitions(usr_root, DEMO_NAMESPACES)
    keys = [namespace_key(DS, "gc"), namespace_key(DS, "tm")]
    inst = dg.DagsterInstance.ephemeral()
    _run(defs, usr_root, keys, inst)
    _run(defs, usr_root, keys, inst)
    assert _md(inst, keys[1])["usr/rows_computed"] == 0
    _add(usr_root, 4)
    _run(defs, usr_root, keys, inst)
    assert _md(inst, keys[0])["usr/rows_computed"] == 4 and _md(inst, keys[0])["usr/mode"] == "incremental"
    tm = _md(inst, keys[1])
    assert tm["usr/mode"] == "full_refresh" and tm["usr/rows_computed"] == 54 and "upstream" in tm["usr/reasons"]
    assert Dataset(usr_root, DS).read_table(columns=["tm__celsius"]).column("tm__celsius").null_count == 0


def test_G1_no_asset_stale_after_unrelated_register_and_a_materialization(usr_root, tmp_path):
    """`usr namespace register` of an unrelated namespace restamps records.parquet at the next write (auto-freeze);
    records' data version follows content, so after materializing one namespace and observing the records
    (sensor tick, observe job), no asset of the dataset is stale; every data version is unchanged."""
    (tmp_path / "home").mkdir()
    inst = dg.DagsterInstance.local_temp(str(tmp_path / "home"))
    defs = build_usr_definitions(usr_root, DEMO_NAMESPACES)
    keys = [namespace_key(DS, n) for n in ("gc", "kmer3", "tm", "orf")]
    assert defs.resolve_job_def("usr_observe_records").execute_in_process(instance=inst).success
    _run(defs, usr_root, keys, inst)
    ticker = Ticker(usr_root, inst)
    ticker.tick()
    before = {k: _version(inst, k) for k in keys}
    usr_cli(usr_root, "namespace", "register", "unrelated", "--columns", "unrelated__x:int64")
    _run(defs, usr_root, [namespace_key(DS, "gc")], inst)
    ticker.tick()
    assert defs.resolve_job_def("usr_observe_records").execute_in_process(instance=inst).success
    all_keys = [records_key(DS), *keys]
    assert set(_stale(inst, defs, all_keys).values()) == {StaleStatus.FRESH}
    assert {k: _version(inst, k) for k in keys} == before
    _run(defs, usr_root, keys, inst)  # an identical rerun of every namespace: same versions, still fresh
    assert {k: _version(inst, k) for k in keys} == before
    assert set(_stale(inst, defs, all_keys).values()) == {StaleStatus.FRESH}
    # a real change does make downstream stale
    usr_cli(usr_root, "delete", DS, "--id", Dataset(usr_root, DS).head(1).column("id")[0].as_py(),
            "--reason", "qc")
    assert defs.resolve_job_def("usr_observe_records").execute_in_process(instance=inst).success
    assert _stale(inst, defs, keys)[keys[0].to_user_string()] == StaleStatus.STALE


def test_opt_out_incremental_false_writes_a_part_each_run(usr_root):
    """`incremental=False, replace_on_refresh=False` keeps the old behaviour: every run computes every row and
    adds a part; the content version still only changes when values do."""
    calls = []

    @usr_namespace("whole", columns={"v": "float64"}, code_version="1", incremental=False, replace_on_refresh=False)
    def whole(records: pa.Table) -> pa.Table:
        calls.append(records.num_rows)
        return pa.table({"id": records.column("id"), "whole__v": pa.array([1.0] * records.num_rows)})

    defs, inst = build_usr_definitions(usr_root, [whole]), dg.DagsterInstance.ephemeral()
    key = namespace_key(DS, "whole")
    _run(defs, usr_root, [key], inst)
    v = _version(inst, key)
    _run(defs, usr_root, [key], inst)
    assert calls == [50, 50] and len(overlay_files(Dataset(usr_root, DS), "whole")) == 2
    assert _version(inst, key) == v


def test_unrelated_registration_is_not_a_namespace_change(usr_root):
    """The records' content version ignores the base restamp that the auto-freeze makes."""
    from usr_core.inspect import records_version

    ds = Dataset(usr_root, DS)
    before = records_version(ds)
    register_namespace(usr_root, "other", "other__x:int64")
    ensure_registry_entries(usr_root, {})
    ds.write_part("gc", pa.table({"id": ds.head(1).column("id"), "gc__fraction": pa.array([0.5])}))
    assert records_version(Dataset(usr_root, DS)) == before


def test_sequence_keyed_namespace_is_incremental_too(usr_root):
    """[O2] a namespace keyed by sequence: rows are matched on the normalised sequence."""
    calls = []

    @usr_namespace("sk", columns={"len": "int64"}, key="sequence", code_version="1")
    def sk(records: pa.Table) -> pa.Table:
        calls.append(records.num_rows)
        seqs = records.column("sequence").to_pylist()
        return pa.table({"sequence": seqs, "sk__len": pa.array([len(s) for s in seqs], pa.int64())})

    defs, inst = build_usr_definitions(usr_root, [sk]), dg.DagsterInstance.ephemeral()
    key = namespace_key(DS, "sk")
    _run(defs, usr_root, [key], inst)
    v = _version(inst, key)
    _run(defs, usr_root, [key], inst)
    assert calls == [50] and _version(inst, key) == v
    _add(usr_root, 2)
    _run(defs, usr_root, [key], inst)
    assert calls == [50, 2] and _version(inst, key) == namespace_version(Dataset(usr_root, DS), "sk")
    t = Dataset(usr_root, DS).read_table(columns=["sequence", "sk__len"])
    assert t.column("sk__len").to_pylist() == [len(s) for s in t.column("sequence").to_pylist()]


def test_rows_written_by_another_tool_are_computed_once(usr_root):
    """Rows a CLI/other-tool part filled are not ours: the next run computes them, later runs do not."""
    fn, calls = _counting()
    ensure_registry_entries(usr_root, {"cnt": fn.registry_entry()})
    ds = Dataset(usr_root, DS)
    ids = ds.read_table(columns=["id"], include_overlays=False).column("id")
    ds.write_part("cnt", pa.table({"id": ids.slice(0, 10), "cnt__v": pa.array([0.0] * 10)}))
    defs, inst = build_usr_definitions(usr_root, [fn]), dg.DagsterInstance.ephemeral()
    _run(defs, usr_root, [namespace_key(DS, "cnt")], inst)
    _run(defs, usr_root, [namespace_key(DS, "cnt")], inst)
    assert calls == [50]
    assert _version(inst, namespace_key(DS, "cnt")) == namespace_version(ds, "cnt")


def test_declared_columns_change_is_a_full_refresh(usr_root):
    """Same code version, one more declared column: every row is recomputed so the new column is filled."""
    first, _ = _counting(code_version="same")
    _run(build_usr_definitions(usr_root, [first]), usr_root, [namespace_key(DS, "cnt")],
         dg.DagsterInstance.ephemeral())
    calls = []

    @usr_namespace("cnt", columns={"v": "float64", "w": "int64"}, code_version="same")
    def wider(records: pa.Table) -> pa.Table:
        calls.append(records.num_rows)
        seqs = records.column("sequence").to_pylist()
        return pa.table({"id": records.column("id"), "cnt__v": pa.array([float(len(s)) for s in seqs]),
                         "cnt__w": pa.array([1] * len(seqs), pa.int64())})

    inst = dg.DagsterInstance.ephemeral()
    _run(build_usr_definitions(usr_root, [wider]), usr_root, [namespace_key(DS, "cnt")], inst)
    md = _md(inst, namespace_key(DS, "cnt"))
    assert calls == [50] and md["usr/mode"] == "full_refresh" and "declared columns changed" in md["usr/reasons"]
    assert Dataset(usr_root, DS).read_table(columns=["cnt__w"]).column("cnt__w").to_pylist() == [1] * 50


def test_G3_recomputation_written_as_a_part_reports_the_version_readers_see(usr_root, monkeypatch):
    """[G3] [O9] `replace_on_refresh=False` adds every recomputation as a part: the data version is the content
    version of what readers see, whether the new part hides every earlier value (told from its rows) or not (a
    NULL lets an older value show through; a tombstoned record keeps its older row) -- always equal to the
    version read back from the files, and unchanged when the values are."""
    values = {"v": 1.0, "null_first": False}

    @usr_namespace("whole", columns={"v": "float64"}, code_version="1", incremental=False, replace_on_refresh=False)
    def whole(records: pa.Table) -> pa.Table:
        col = [values["v"]] * records.num_rows
        if values["null_first"]:
            col[0] = None
        return pa.table({"id": records.column("id"), "whole__v": pa.array(col, pa.float64())})

    ds = Dataset(usr_root, DS)
    defs, inst = build_usr_definitions(usr_root, [whole]), dg.DagsterInstance.ephemeral()
    key = namespace_key(DS, "whole")
    seen, reads = [], []
    import usr_dagster.incremental as inc

    monkeypatch.setattr(inc, "namespace_version", lambda *a: reads.append(len(seen)) or namespace_version(*a))

    def run_and_check():
        _run(defs, usr_root, [key], inst)
        assert _version(inst, key) == namespace_version(ds, "whole")
        seen.append(_version(inst, key))

    run_and_check()
    values["v"] = 2.0  # every key covered, every cell a value: the new part alone is the view
    run_and_check()
    assert seen[1] != seen[0]
    run_and_check()  # same values again: same version
    assert seen[2] == seen[1]
    values["v"], values["null_first"] = 3.0, True  # the first record keeps 2.0 from the older part
    run_and_check()
    first = ds.read_table(columns=["id", "whole__v"]).column("whole__v")[0].as_py()
    assert first == 2.0 and seen[3] not in seen[:3]
    values["null_first"] = False
    victim = ds.read_table(columns=["id"], include_overlays=False).column("id")[5].as_py()
    ds.tombstone([victim])  # its older rows stay in the view; the new part has no row for it
    run_and_check()
    assert seen[4] != seen[3]
    assert len(overlay_files(ds, "whole")) == 5
    assert reads == [3, 4]  # read back only where the new part does not hide every earlier row
