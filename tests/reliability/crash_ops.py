"""The mutating operations the crash harness kills, each with a deterministic setup and an idempotent rerun.

An `Op` has `setup(root)` (builds the state before the operation, in the parent), `run(root)` (the operation,
executed in a child process that USR_CRASH_AT may kill) and `rerun(root)` (what a pipeline retries after the
kill: the operation itself, or its idempotent form where the plain call refuses a second run, e.g. `init`).
`needs` names a usr_core module that must exist (maintenance ops are skipped until they land).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

DS = "demo"
SRC = "src"
DELETED_AT = "2024-01-01T00:00:00Z"


def seqs(start: int, n: int) -> list[str]:
    """Distinct deterministic DNA sequences."""
    out = []
    for i in range(start, start + n):
        s, k = [], i + 1
        while k:
            s.append("ACGT"[k % 4])
            k //= 4
        out.append("GATTACA" + "".join(s) + "T" * (i % 3))
    return out


def _ds(root, name=DS):
    from usr_core import Dataset

    return Dataset(root, name)


def _ids(root, name=DS) -> list[str]:
    return pq.read_table(_ds(root, name).records_path, columns=["id"])["id"].to_pylist()


def _rows(start: int, n: int) -> list[dict]:
    return [{"sequence": s, "source": "harness"} for s in seqs(start, n)]


def register_base(root) -> None:
    from usr_core import register_namespace

    register_namespace(root, "feat", "feat__score:float64,feat__label:string", owner="harness")


def base_setup(root, *, parts: bool = False) -> None:
    """feat registered, dataset `demo` with 8 rows, compact feat overlay (or parts), one tombstone, state."""
    register_base(root)
    ds = _ds(root)
    ds.init(source="harness")
    ds.import_rows(_rows(0, 8))
    ids = _ids(root)
    ds.write_overlay("feat", pa.table({"id": ids[:4], "feat__score": [1.0, 2.0, 3.0, 4.0]}))
    if parts:
        ds.write_overlay_part("feat", pa.table({"id": ids[2:6], "feat__label": ["a", "b", "c", "d"]}))
    ds.tombstone([ids[7]], reason="setup", deleted_at=DELETED_AT)
    ds.set_state([ids[6]], qc_status="warn")


def _maint(root, fn, name=DS):
    ds = _ds(root, name)
    with ds.maintenance(reason="crash harness"):
        return fn(ds)


# ---------------------------------------------------------------- operations

def op_init(root):
    _ds(root).init(source="harness")


def rerun_init(root):
    ds = _ds(root)
    if not ds.exists():
        ds.init(source="harness")


def op_import(root):
    _ds(root).import_rows(_rows(100, 6))


def rerun_import(root):
    _ds(root).add_sequences(_rows(100, 6), bio_type="dna", alphabet="dna_4", source="harness", on_conflict="ignore")


def op_attach(root):
    ids = _ids(root)
    path = Path(root).parent / "attach_input.parquet"
    if not path.exists():
        pq.write_table(pa.table({"id": ids[:5], "label": ["p", "q", "r", "s", "t"]}), path)
    _ds(root).attach(path, "feat", allow_overwrite=True)


def op_part(root):
    ids = _ids(root)
    _ds(root).write_overlay_part("feat", pa.table({"id": ids[1:5], "feat__label": ["w", "x", "y", "z"]}))


def setup_create(root):
    base_setup(root)
    from usr_core import register_namespace

    register_namespace(root, "fresh", "fresh__n:int64")  # the next write also auto-freezes and restamps


def op_create(root):
    ids = _ids(root)
    _ds(root).create_overlay("fresh", pa.table({"id": ids[:3], "fresh__n": pa.array([1, 2, 3], pa.int64())}))


def rerun_create(root):
    from usr_core.overlays.discovery import find_overlay

    if find_overlay(_ds(root).paths, "fresh") is None:
        op_create(root)


def op_tombstone(root):
    _ds(root).tombstone(_ids(root)[1:3], reason="harness", deleted_at=DELETED_AT)


def op_restore(root):
    _ds(root).restore([_ids(root)[7]])


def op_state(root):
    _ds(root).set_state(_ids(root)[2:5], qc_status="fail", split="train")


def op_register(root):
    from usr_core import register_namespace

    register_namespace(root, "extra", "extra__n:int64", owner="harness")


def rerun_register(root):
    from usr_core import ensure_registry_entries

    ensure_registry_entries(root, {"extra": {"columns": "extra__n:int64", "owner": "harness"}})


def op_compact(root):
    _maint(root, lambda ds: ds.compact_overlay("feat"))


def rerun_compact(root):
    from usr_core.overlays.discovery import list_part_paths

    if list_part_paths(_ds(root).paths.parts_dir("feat")):  # else the kill came after the last step
        op_compact(root)


def op_materialize(root):
    _maint(root, lambda ds: ds.materialize())


def op_materialize_archive(root):
    _maint(root, lambda ds: ds.materialize(keep_overlays=False, archive_overlays=True))


def op_freeze(root):
    _maint(root, lambda ds: ds.freeze_registry())


def setup_freeze(root):
    base_setup(root)
    from usr_core import register_namespace

    register_namespace(root, "later", "later__x:string")


def op_remove_archive(root):
    _maint(root, lambda ds: ds.remove_overlay("feat", mode="archive"))


def rerun_remove_archive(root):
    from usr_core.overlays.discovery import find_overlay

    if find_overlay(_ds(root).paths, "feat") is not None:
        op_remove_archive(root)


def op_refresh(root):
    _maint(root, lambda ds: ds.refresh_overlay_metadata("feat"))


def setup_refresh(root):
    base_setup(root)
    from usr_core import register_namespace

    register_namespace(root, "feat", "feat__score:float64,feat__label:string,feat__extra:int64", owner="harness",
                       overwrite=True)


def setup_dedupe(root):
    base_setup(root)
    ds = _ds(root)
    # same sequence in upper and lower case: distinct ids, one sequence_ci key
    ds.add_sequences([{"sequence": seqs(0, 2)[1].lower()}], bio_type="dna", alphabet="dna_4", source="harness")


def op_dedupe(root):
    _maint(root, lambda ds: ds.dedupe("sequence_ci", keep="keep-first"))


def setup_merge(root):
    base_setup(root)
    src = _ds(root, SRC)
    src.init(source="harness")
    src.import_rows(_rows(4, 8))  # 4 shared with demo, 4 new


def op_merge(root):
    from usr_core import merge

    dest = _ds(root)
    with dest.maintenance(reason="crash harness"):
        merge(root, DS, SRC, duplicate_policy="skip", reason="crash harness")


def setup_garden(root):
    base_setup(root)
    ds = _ds(root)
    for i in range(6):
        ds.log_event("note", args={"i": i})


def op_garden(root):
    _maint(root, lambda ds: ds.garden_event_log(retain_last=3, write=True, acknowledge_cursor_reset=True,
                                                        reason="harness"))


@dataclass
class Op:
    name: str
    setup: Callable
    run: Callable
    rerun: Callable | None = None
    needs: str | None = None  # module that must exist

    def missing(self) -> str | None:
        if self.needs and importlib.util.find_spec(self.needs) is None:
            return f"{self.needs} does not exist yet"
        return None


OPS: dict[str, Op] = {o.name: o for o in [
    Op("init", register_base, op_init, rerun_init),
    Op("import", base_setup, op_import, rerun_import),
    Op("compact-attach", base_setup, op_attach),
    Op("compact-attach-restamp", setup_create, op_attach),  # R14 restamps the base before the attach
    Op("part-promote", base_setup, op_part),
    Op("part-append", lambda r: base_setup(r, parts=True), op_part),
    Op("part-restamp", setup_create, op_part),
    Op("create-overlay", setup_create, op_create, rerun_create),
    Op("tombstone", base_setup, op_tombstone),
    Op("tombstone-restamp", setup_create, op_tombstone),
    Op("restore", base_setup, op_restore),
    Op("state-set", base_setup, op_state),
    Op("namespace-register", base_setup, op_register, rerun_register),
    Op("overlay-compact", lambda r: base_setup(r, parts=True), op_compact, rerun_compact, needs="usr_core.maintenance.compact"),
    Op("materialize", lambda r: base_setup(r, parts=True), op_materialize, needs="usr_core.maintenance.materialize"),
    Op("materialize-archive", lambda r: base_setup(r, parts=True), op_materialize_archive,
       needs="usr_core.maintenance.materialize"),
    Op("registry-freeze", setup_freeze, op_freeze, needs=None),
    Op("overlay-remove-archive", base_setup, op_remove_archive, rerun_remove_archive, needs=None),
    Op("refresh-metadata", setup_refresh, op_refresh, needs=None),
    Op("dedupe", setup_dedupe, op_dedupe, needs="usr_core.maintenance.dedupe"),
    Op("merge", setup_merge, op_merge, needs="usr_core.maintenance.merge"),
    Op("event-log-garden", setup_garden, op_garden, needs="usr_core.maintenance.garden"),
]}
