"""Maintenance operations: X1-X7, X11, X12 and the compaction recovery rule (issue 6)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from testkit import tree_digest
from usr_core import (Dataset, NamespaceError, SchemaError, compute_id, load_registry, namespace_contract_hash,
                      register_namespace, registry_hash)
from usr_core.events import read_events

SEQS = ("ACGT", "AACC", "GGTT", "TTAA")
IDS = [compute_id("dna", s) for s in SEQS]
NS = {"mock": "mock__score:float64,mock__label:string", "other": "other__x:int64"}


@pytest.fixture
def ds(make_ds):
    return make_ds(seqs=SEQS, namespaces=NS)


def _meta(path) -> dict:
    return {k.decode(): v.decode() for k, v in (pq.read_schema(path).metadata or {}).items()}


def _col(ds, name, **kw) -> dict:
    t = ds.read_table(**kw)
    return dict(zip(t["id"].to_pylist(), t[name].to_pylist()))


def _part(ds, ids, scores, labels=None):
    cols = {"id": pa.array(ids, pa.string()), "mock__score": pa.array(scores, pa.float64())}
    if labels is not None:
        cols["mock__label"] = pa.array(labels, pa.string())
    ds.write_overlay_part("mock", pa.table(cols))


def _with_parts(ds):
    _part(ds, IDS[:3], [1.0, 2.0, 3.0], ["a", "b", "c"])
    _part(ds, IDS[1:3], [20.0, None], [None, "C"])
    _part(ds, IDS[3:], [4.0])
    return sorted((ds.dir / "_derived" / "mock").glob("part-*.parquet"))


def _last(ds, action):
    return [e for e in read_events(ds.paths) if e["action"] == action][-1]


EXPECTED_SCORE = {IDS[0]: 1.0, IDS[1]: 20.0, IDS[2]: 3.0, IDS[3]: 4.0}
EXPECTED_LABEL = {IDS[0]: "a", IDS[1]: "b", IDS[2]: "C", IDS[3]: None}


# ---------------------------------------------------------------- X1 gate

@pytest.mark.parametrize("call", [
    lambda d: d.compact_overlay("mock"), lambda d: d.refresh_overlay_metadata("mock"),
    lambda d: d.freeze_registry(), lambda d: d.materialize(), lambda d: d.dedupe("id"),
])
def test_X1_gated_operations_need_maintenance_and_change_nothing(ds, root, call):
    """[X1] gated operations outside `with ds.maintenance()` raise SchemaError and leave the root untouched."""
    _with_parts(ds)
    before = tree_digest(root)
    with pytest.raises(SchemaError, match="maintenance-only"):
        call(ds)
    assert tree_digest(root) == before


def test_X1_maintenance_reason_is_recorded(ds):
    """[X1] [E2] the maintenance reason lands in the event's maintenance field and args."""
    _with_parts(ds)
    with ds.maintenance(reason="nightly compaction"):
        ds.compact_overlay("mock")
    ev = _last(ds, "compact_overlay")
    assert ev["maintenance"] == {"reason": "nightly compaction"}
    assert ev["args"]["maintenance_reason"] == "nightly compaction"
    assert ev["args"]["namespace"] == "mock" and ev["args"]["archived"] is None


# ---------------------------------------------------------------- X2 compaction

def test_X2_compaction_collapses_by_O9_and_matches_the_read(ds, root):
    """[X2] [O9] one row per key, newest non-null per column; the read view is unchanged."""
    parts = _with_parts(ds)
    before = ds.read_table()
    with ds.maintenance(reason="t"):
        path = ds.compact_overlay("mock")
    assert path == ds.dir / "_derived" / "mock.parquet"
    assert not (ds.dir / "_derived" / "mock").exists()
    t = pq.read_table(path)
    assert t.num_rows == 4 and sorted(t["id"].to_pylist()) == sorted(IDS)
    assert ds.read_table().equals(before)
    assert _col(ds, "mock__score") == EXPECTED_SCORE and _col(ds, "mock__label") == EXPECTED_LABEL
    meta = _meta(path)
    first = _meta(parts[0]) if parts[0].exists() else None
    assert first is None
    assert meta["usr:registry_hash"] == registry_hash(root)
    assert meta["usr:namespace_contract_hash"] == namespace_contract_hash(load_registry(root), "mock")
    assert meta["usr:overlay_namespace"] == "mock" and meta["usr:overlay_key"] == "id"
    assert json.loads(meta["usr:compacted_parts"]) == [p.name for p in parts]


def test_X2_compaction_stamps_fresh_created_at_and_recomputes_contract_hash(ds, root):
    """[X2] (div) fresh created_at, current registry_hash and a recomputed namespace_contract_hash."""
    parts = _with_parts(ds)
    old = _meta(parts[0])
    register_namespace(root, "mock", "mock__score:float64,mock__label:string", owner="bob", overwrite=True)
    with ds.maintenance(reason="t"):
        path = ds.compact_overlay("mock")
    meta = _meta(path)
    assert meta["usr:overlay_created_at"] > max(_m["usr:overlay_created_at"] for _m in [old])
    assert meta["usr:registry_hash"] == registry_hash(root) != old["usr:registry_hash"]
    assert meta["usr:namespace_contract_hash"] == namespace_contract_hash(load_registry(root), "mock")
    # base restamped by the auto-freeze (R14)
    assert _meta(ds.records_path)["usr:registry_hash"] == registry_hash(root)


def test_X2_preconditions_change_nothing(ds, root):
    """[X2] no parts → "Overlay parts not found"; a compact file beside parts → "Overlay file already exists"."""
    before = tree_digest(root)
    with ds.maintenance(reason="t"):
        with pytest.raises(SchemaError, match="Overlay parts not found"):
            ds.compact_overlay("mock")
    assert tree_digest(root) == before
    _with_parts(ds)
    shutil.copy(next((ds.dir / "_derived" / "mock").glob("part-*.parquet")), ds.dir / "_derived" / "mock.parquet")
    before = tree_digest(root)
    with ds.maintenance(reason="t"):
        with pytest.raises(SchemaError, match="Overlay file already exists"):
            ds.compact_overlay("mock")
    assert tree_digest(root) == before


def test_X2_compaction_checks_registry_conformance(ds, root):
    """[X2] [O11] parts that no longer conform to the current registry are not compacted."""
    _with_parts(ds)
    register_namespace(root, "mock", "mock__score:int64,mock__label:string", overwrite=True)
    with ds.maintenance(reason="t"):
        with pytest.raises(SchemaError, match="registry says int64"):
            ds.compact_overlay("mock")
    assert len(list((ds.dir / "_derived" / "mock").glob("part-*.parquet"))) == 3
    assert not (ds.dir / "_derived" / "mock.parquet").exists()


def test_X2_L7_recovery_rule_finished_compaction_with_leftover_parts(ds, root):
    """[X2] [L7] [A2] compact file + parts all listed in usr:compacted_parts = finished compaction.

    Readers use the compact file; the next compaction deletes the leftovers (resumed)."""
    _with_parts(ds)
    saved = root.parent / "saved_parts"
    shutil.copytree(ds.dir / "_derived" / "mock", saved)
    with ds.maintenance(reason="t"):
        ds.compact_overlay("mock")
    expected = ds.read_table()
    shutil.copytree(saved, ds.dir / "_derived" / "mock")  # as if killed before the parts were deleted
    assert ds.read_table().equals(expected)
    assert [o.namespace for o in ds.list_overlays()] == ["mock"]
    with ds.maintenance(reason="rerun"):
        ds.compact_overlay("mock")
    assert not (ds.dir / "_derived" / "mock").exists()
    assert _last(ds, "compact_overlay")["args"]["resumed"] is True
    assert ds.read_table().equals(expected)


def test_X2_L7_unlisted_part_still_fails(ds, root):
    """[L7] a part the compact file did not fold keeps the one-source rule: reads fail with SchemaError."""
    _with_parts(ds)
    with ds.maintenance(reason="t"):
        ds.compact_overlay("mock")
    stray = ds.dir / "_derived" / "mock"
    stray.mkdir()
    shutil.copy(ds.dir / "_derived" / "mock.parquet", stray / "part-20990101T000000000000Z-" f"{'0' * 32}.parquet")
    with pytest.raises(SchemaError, match="L7"):
        ds.read_table()


CRASH_SCRIPT = textwrap.dedent("""
    import sys
    from usr_core import Dataset
    ds = Dataset(sys.argv[1], "demo")
    with ds.maintenance(reason="crash test"):
        ds.compact_overlay("mock")
""")


@pytest.mark.parametrize("point", ["compact:before-rename", "compact:before-delete-parts",
                                   "parts-delete:after-rename"])
def test_X2_A2_killed_compaction_reads_old_or_new_and_rerun_succeeds(ds, root, point):
    """[X2] [A2] SIGKILL at each compaction step: the dataset reads the same view; a rerun finishes."""
    _with_parts(ds)
    expected = ds.read_table()
    env = {**os.environ, "USR_CRASH_AT": point}
    proc = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, str(root)], env=env, capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()
    assert ds.read_table().equals(expected)
    with ds.maintenance(reason="rerun"):
        ds.compact_overlay("mock")
    assert ds.read_table().equals(expected)
    derived = sorted(p.name for p in (ds.dir / "_derived").iterdir())
    assert derived == ["mock.parquet"]


# ---------------------------------------------------------------- X3 overlay-remove

def test_X3_remove_modes(ds, root):
    """[X3] error removes or fails "not found"; delete reports removed false; events remove_overlay."""
    ds.write_overlay("mock", pa.table({"id": IDS[:1], "mock__score": [1.0]}))
    assert ds.remove_overlay("mock") == {"removed": True, "namespace": "mock"}
    assert not (ds.dir / "_derived" / "mock.parquet").exists()
    assert _last(ds, "remove_overlay")["args"] == {"namespace": "mock"}
    before = tree_digest(root)
    with pytest.raises(SchemaError, match="not found"):
        ds.remove_overlay("mock", mode="error")
    assert ds.remove_overlay("mock", mode="delete") == {"removed": False, "namespace": "mock"}
    assert tree_digest(root) == before
    _with_parts(ds)
    assert ds.remove_overlay("mock", mode="delete")["removed"] is True
    assert not (ds.dir / "_derived" / "mock").exists()


def test_X3_archive_keeps_only_newest_archive(ds):
    """[X3] archive moves to _derived/_archived/<ns>-<STAMP>[.parquet] and keeps one archive per namespace."""
    ds.write_overlay("mock", pa.table({"id": IDS[:1], "mock__score": [1.0]}))
    first = ds.remove_overlay("mock", mode="archive")
    _with_parts(ds)
    second = ds.remove_overlay("mock", mode="archive")
    arch = ds.dir / "_derived" / "_archived"
    assert [p.name for p in arch.iterdir()] == [os.path.basename(second["archived_path"])]
    assert first["archived_path"].endswith(".parquet") and not second["archived_path"].endswith(".parquet")
    assert (arch / os.path.basename(second["archived_path"])).is_dir()
    ev = _last(ds, "archive_overlay")
    assert ev["args"] == {"namespace": "mock", "archived": second["archived_path"]}
    assert "mock__score" not in ds.read_table().column_names


@pytest.mark.parametrize("ns,mode,err,msg", [
    ("usr", "error", NamespaceError, "reserved"), ("usr_state", "delete", NamespaceError, "reserved"),
    ("../x", "delete", NamespaceError, "Invalid namespace"), ("mock", "purge", SchemaError, "Unknown"),
])
def test_X3_bad_arguments_change_nothing(ds, root, ns, mode, err, msg):
    """[X3] [U2] [R4] reserved namespaces, bad names and unknown modes are refused before any change."""
    ds.tombstone([IDS[0]])
    before = tree_digest(root)
    with pytest.raises(err, match=msg):
        ds.remove_overlay(ns, mode=mode)
    assert tree_digest(root) == before


def test_X3_L7_conflict_is_refused(ds, root):
    """[X3] [L7] a compact file beside unlisted parts → SchemaError, nothing removed."""
    _with_parts(ds)
    shutil.copy(next((ds.dir / "_derived" / "mock").glob("part-*.parquet")), ds.dir / "_derived" / "mock.parquet")
    before = tree_digest(root)
    with pytest.raises(SchemaError, match="L7"):
        ds.remove_overlay("mock", mode="delete")
    assert tree_digest(root) == before


# ---------------------------------------------------------------- X4 refresh

def test_X4_refresh_restamps_identical_rows(ds, root):
    """[X4] identical rows, fresh created_at, current hashes; event with previous/refreshed hashes."""
    ds.write_overlay("mock", pa.table({"id": IDS[:2], "mock__score": [1.0, 2.0]}))
    path = ds.dir / "_derived" / "mock.parquet"
    old_rows, old = pq.read_table(path), _meta(path)
    register_namespace(root, "other", "other__x:int64,other__y:string", overwrite=True)
    with ds.maintenance(reason="refresh"):
        out = ds.refresh_overlay_metadata("mock")
    new = _meta(path)
    assert pq.read_table(path).equals(old_rows)
    assert new["usr:registry_hash"] == registry_hash(root) != old["usr:registry_hash"]
    assert new["usr:overlay_created_at"] > old["usr:overlay_created_at"]
    assert new["usr:namespace_contract_hash"] == old["usr:namespace_contract_hash"]
    ev = _last(ds, "refresh_overlay_metadata")
    assert ev["args"]["previous_registry_hash"] == old["usr:registry_hash"]
    assert ev["args"]["registry_hash"] == new["usr:registry_hash"] == out["registry_hash"]
    assert ev["args"]["rows_refreshed"] == 2 and ev["args"]["maintenance_reason"] == "refresh"


def test_X4_refresh_reserved_drops_contract_hash(ds, root):
    """[X4] [T1] the reserved `usr` overlay is refreshed without namespace_contract_hash."""
    ds.tombstone([IDS[0]])
    with ds.maintenance(reason="r"):
        ds.refresh_overlay_metadata("usr")
    meta = _meta(ds.dir / "_derived" / "usr.parquet")
    assert "usr:namespace_contract_hash" not in meta and meta["usr:registry_hash"] == registry_hash(root)


def test_X4_refresh_refuses_parts_and_absent(ds, root):
    """[X4] parts → SchemaError advising compaction; absent → SchemaError; nothing changes."""
    _with_parts(ds)
    before = tree_digest(root)
    with ds.maintenance(reason="r"):
        with pytest.raises(SchemaError, match="parts") as exc:
            ds.refresh_overlay_metadata("mock")
        assert "overlay-compact" in exc.value.hint
        with pytest.raises(SchemaError, match="not found"):
            ds.refresh_overlay_metadata("other")
    assert tree_digest(root) == before


# ---------------------------------------------------------------- X5 freeze, X7 snapshot

def test_X5_registry_freeze_event_and_path(ds, root):
    """[X5] [R13] [R14] returns the freeze path; event registry_freeze with auto false and updated."""
    register_namespace(root, "extra", "extra__v:string")
    with ds.maintenance(reason="freeze"):
        path = ds.freeze_registry()
    h = registry_hash(root)
    assert path == ds.dir / "_registry" / f"registry.{h}.yaml" and path.is_file()
    assert _meta(ds.records_path)["usr:registry_hash"] == h
    ev = _last(ds, "registry_freeze")
    assert ev["args"] == {"registry_hash": h, "snapshot": str(path), "auto": False, "updated": True}
    with ds.maintenance(reason="again"):
        ds.freeze_registry()
    assert _last(ds, "registry_freeze")["args"]["updated"] is False


def test_X7_L6_snapshot_copies_and_prunes(ds):
    """[X7] [L6] copies records.parquet to _snapshots/records-<S>.parquet, keeps the 5 newest, event snapshot."""
    for _ in range(6):
        snap = ds.snapshot()
    snaps = sorted((ds.dir / "_snapshots").glob("records-*.parquet"))
    assert len(snaps) == 5 and snaps[-1] == snap
    assert snap.read_bytes() == ds.records_path.read_bytes()
    assert _last(ds, "snapshot")["args"]["snapshot"] == str(snap)


# ---------------------------------------------------------------- X6 materialize

def test_X6_materialize_folds_overlays_keeps_state_and_tombstones(ds, root):
    """[X6] default selection excludes usr and usr_state; values folded into the base; overlays kept."""
    _with_parts(ds)
    ds.write_overlay("other", pa.table({"id": IDS[:1], "other__x": pa.array([7], pa.int64())}))
    ds.set_state([IDS[0]], qc_status="pass")
    ds.tombstone([IDS[3]])
    view = ds.read_table()
    with ds.maintenance(reason="m"):
        ds.materialize()
    base = pq.read_table(ds.records_path)
    assert "mock__score" in base.column_names and "other__x" in base.column_names
    assert "usr_state__qc_status" not in base.column_names
    assert dict(zip(base["id"].to_pylist(), base["mock__score"].to_pylist())) == EXPECTED_SCORE
    assert ds.read_table().equals(view)  # overlays kept: COALESCE(overlay, base) gives the same values
    assert (ds.dir / "_derived" / "usr.parquet").exists() and (ds.dir / "_derived" / "usr_state.parquet").exists()
    assert _meta(ds.records_path)["usr:registry_hash"] == registry_hash(root)
    ev = _last(ds, "materialize")
    assert sorted(ev["args"]["namespaces"]) == ["mock", "other"] and ev["args"]["drop_deleted"] is False
    assert {o["namespace"] for o in ev["args"]["overlays"]} == {"mock", "other"}
    assert ev["args"]["tombstones"]["rows"] == 1


def test_X6_materialize_drop_deleted_and_delete_overlays(ds):
    """[X6] [T3] drop_deleted removes tombstoned rows physically; keep_overlays=False deletes the overlays."""
    _with_parts(ds)
    ds.tombstone([IDS[3]])
    with ds.maintenance(reason="m"):
        out = ds.materialize(keep_overlays=False, drop_deleted=True)
    assert out["rows_dropped"] == 1
    base = pq.read_table(ds.records_path)
    assert base.num_rows == 3 and IDS[3] not in base["id"].to_pylist()
    assert not (ds.dir / "_derived" / "mock").exists()
    assert (ds.dir / "_derived" / "usr.parquet").exists()
    assert _col(ds, "mock__label") == {k: v for k, v in EXPECTED_LABEL.items() if k != IDS[3]}


def test_X6_materialize_archives_unpruned_and_coalesces(ds):
    """[X6] [O10] archive_overlays keeps every archive; a later overlay COALESCEs over the materialized column."""
    ds.write_overlay("mock", pa.table({"id": IDS[:2], "mock__score": [1.0, 2.0]}))
    with ds.maintenance(reason="m1"):
        ds.materialize(namespaces=["mock"], archive_overlays=True)
    ds.write_overlay("mock", pa.table({"id": IDS[1:3], "mock__score": [20.0, 30.0]}))
    assert _col(ds, "mock__score") == {IDS[0]: 1.0, IDS[1]: 20.0, IDS[2]: 30.0, IDS[3]: None}
    with ds.maintenance(reason="m2"):
        ds.materialize(namespaces=["mock"], archive_overlays=True)
    assert len(list((ds.dir / "_derived" / "_archived").iterdir())) == 2
    base = pq.read_table(ds.records_path)
    assert base["mock__score"].to_pylist() == [1.0, 20.0, 30.0, None]  # base order kept


def test_X6_materialize_nothing_selected_is_silent(ds, root):
    """[X6] nothing selected and no drop_deleted → no write, no event; `usr` may not be selected."""
    ds.set_state([IDS[0]], masked=True)
    before = tree_digest(root)
    with ds.maintenance(reason="m"):
        assert ds.materialize() is None
        assert ds.materialize(namespaces=["nope"]) is None
        with pytest.raises(NamespaceError):
            ds.materialize(namespaces=["usr"])
    assert tree_digest(root) == before


def test_X6_materialize_explicit_usr_state(ds):
    """[X6] [U5] usr_state is materialized only when named; get_state still reads it afterwards."""
    ds.set_state([IDS[0]], qc_status="fail")
    with ds.maintenance(reason="m"):
        ds.materialize(namespaces=["usr_state"], keep_overlays=False)
    assert "usr_state__qc_status" in pq.read_schema(ds.records_path).names
    assert ds.get_state([IDS[0]])["usr_state__qc_status"].to_pylist() == ["fail"]


def test_X6_materialize_refuses_nonconforming_overlay(ds, root):
    """[X6] each selected overlay must conform to the current registry; nothing is written."""
    _with_parts(ds)
    register_namespace(root, "mock", "mock__score:int64,mock__label:string", overwrite=True)
    before = tree_digest(root)
    with ds.maintenance(reason="m"):
        with pytest.raises(SchemaError):
            ds.materialize()
    assert tree_digest(root) == before


# ---------------------------------------------------------------- X11 garden

def test_X11_garden_dry_run_and_write(ds):
    """[X11] dry run counts only; write needs the acknowledgement, archives the log, keeps the last lines."""
    events = ds.events_path.read_bytes()
    n = len(events.splitlines())
    dry = ds.garden_event_log(retain_last=2)
    assert dry == {"write": False, "lines_total": n, "lines_retained": 2, "lines_removed": n - 2,
                   "archive_path": None}
    assert ds.events_path.read_bytes() == events
    with pytest.raises(ValueError, match="acknowledge"):
        ds.garden_event_log(retain_last=2, write=True)
    out = ds.garden_event_log(retain_last=2, write=True, acknowledge_cursor_reset=True, reason="tidy")
    archive = ds.dir / ".events.archive"
    files = list(archive.glob("events-*.jsonl"))
    assert len(files) == 1 and files[0].read_bytes() == events and str(files[0]) == out["archive_path"]
    lines = ds.events_path.read_bytes().splitlines()
    assert lines[:2] == events.splitlines()[-2:]
    assert json.loads(lines[-1])["action"] == "event_log_garden"
    assert json.loads(lines[-1])["maintenance"] == {"reason": "tidy"}


def test_X11_garden_rejects_invalid_lines_and_bad_retain(ds, root):
    """[X11] invalid JSON lines are refused before anything changes, as is retain_last < 1; with
    skip_invalid=True they are dropped and reported, and the archive holds every byte."""
    with open(ds.events_path, "ab") as fh:
        fh.write(b"{not json\n")
    original = ds.events_path.read_bytes()
    before = tree_digest(root)
    with pytest.raises(SchemaError, match="not valid JSON"):
        ds.garden_event_log(retain_last=1, write=True, acknowledge_cursor_reset=True)
    with pytest.raises(ValueError):
        ds.garden_event_log(retain_last=0)
    assert tree_digest(root) == before
    out = ds.garden_event_log(retain_last=1, write=True, acknowledge_cursor_reset=True, skip_invalid=True)
    assert [p["offset"] for p in out["lines_skipped"]] == [original.index(b"{not json")]
    assert "not valid JSON" in out["lines_skipped"][0]["problem"]
    assert b"{not json" not in ds.events_path.read_bytes()
    assert Path(out["archive_path"]).read_bytes() == original


# ---------------------------------------------------------------- X12 project

def test_X12_project_overlay_between_datasets(make_ds, root):
    """[X12] copy one namespace from a source read view onto a destination (compact overwrite)."""
    src = make_ds(name="src", seqs=SEQS, namespaces=NS)
    dest = make_ds(name="dest", seqs=SEQS[:3], namespaces=NS)
    src.write_overlay("mock", pa.table({"id": IDS, "mock__score": [1.0, 2.0, 3.0, 4.0]}))
    before = tree_digest(root)
    with pytest.raises(SchemaError, match="no destination match"):
        dest.project_overlay(src, "mock")
    dry = dest.project_overlay(src, "mock", allow_missing=True, dry_run=True)
    assert tree_digest(root) == before
    assert dry["rows_matched"] == 3 and dry["rows_missing"] == 1
    out = dest.project_overlay("src", "mock", allow_missing=True, columns=["score"])
    assert out["rows_written"] == 3
    assert _col(dest, "mock__score") == {IDS[0]: 1.0, IDS[1]: 2.0, IDS[2]: 3.0}
    with pytest.raises(NamespaceError):
        dest.project_overlay(src, "mock", allow_missing=True, overwrite=False)


def test_X12_project_joins_on_sequence(make_ds):
    """[X12] src_join / dest_join map rows through another column (here the sequence)."""
    src = make_ds(name="src", seqs=SEQS, namespaces=NS)
    dest = make_ds(name="dest", seqs=SEQS[:2], namespaces=NS)
    src.write_overlay("mock", pa.table({"id": IDS, "mock__label": ["a", "b", "c", "d"]}))
    dest.project_overlay(src, "mock", src_join="sequence", dest_join="sequence", allow_missing=True)
    assert _col(dest, "mock__label") == {IDS[0]: "a", IDS[1]: "b"}


def test_P2_maintenance_needs_dataset(root):
    """[P2] maintenance on a missing dataset → SequencesError "Dataset not initialized"."""
    from usr_core import SequencesError

    register_namespace(root, "mock", "mock__score:float64")
    with pytest.raises(SequencesError, match="not initialized"):
        Dataset(root, "ghost").snapshot()


def _nan_equal(a: pa.Table, b: pa.Table) -> bool:
    import math

    if a.column_names != b.column_names or a.num_rows != b.num_rows:
        return False
    for name in a.column_names:
        for x, y in zip(a[name].to_pylist(), b[name].to_pylist()):
            if x != y and not (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)):
                return False
    return True


def test_X2_X6_fixture_compact_and_materialize_keep_the_view(tmp_path):
    """[X2] [X6] [O9] on the interop fixture: compaction then materialize leave the merged view unchanged."""
    from testkit import FIXTURES

    root = tmp_path / "fx"
    shutil.copytree(FIXTURES / "dna_multi", root)
    ds = Dataset(root, "promoters")
    expected = pq.read_table(FIXTURES / "expected" / "dna_multi.parquet").sort_by("id")
    with ds.maintenance(reason="fixture"):
        ds.compact_overlay("assay")
        assert _nan_equal(ds.read_table().sort_by("id"), expected)
        ds.materialize(keep_overlays=False)
    assert _nan_equal(ds.read_table().sort_by("id"), expected)
    assert [o.namespace for o in ds.list_overlays()] == ["usr"]
    ds.validate(strict=True)
