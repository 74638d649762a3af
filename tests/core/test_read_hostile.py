"""Readers against hostile or broken overlay files (issue 13 items 2, 3, 8): foreign files claiming the
reserved namespaces, unparseable stamps, unreadable parts of unused namespaces, thousands of parts
under a low open-file limit; and no module-level state left holding data after a read."""
from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import types

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import usr_core
from testkit import tree_digest
from usr_core import SchemaError, compute_id
from usr_core.overlays import keys as overlay_keys
from usr_core.overlays.encoding import registry_metadata
from usr_core.registry.registry import load_registry

NS = {"mock": "mock__score:float64", "other": "other__x:int64"}
SEQS = ("ACGT", "AACC", "GGTT", "TTAA", "CAGT", "GATC")
IDS = [compute_id("dna", s) for s in SEQS]
STAMP = "2026-01-01T00:00:00.000000Z"


@pytest.fixture
def ds(make_ds):
    return make_ds(seqs=SEQS, namespaces=NS)


def _plant(path, table: pa.Table, **meta: str) -> None:
    """A hand-made overlay file (not written through USR) with the given usr: metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata({f"usr:{k}": v for k, v in meta.items()}), path)


def _plant_stamped(ds, path, table: pa.Table, created_at: str) -> None:
    """A part with USR's own M2 metadata (current hashes) but the given created_at."""
    meta = registry_metadata("mock", "id", created_at, load_registry(ds.root, required=True))
    _plant(path, table, **{k[len("usr:"):]: v for k, v in meta.items()})


def _tomb(ids) -> pa.Table:
    return pa.table({"id": ids, "usr__deleted": [True] * len(ids),
                     "usr__deleted_at": pa.array([0] * len(ids), pa.timestamp("us", tz="UTC")),
                     "usr__deleted_reason": ["evil"] * len(ids)})


@pytest.mark.parametrize("where", ["_derived/evil/part-20260101T000000000000Z-" + "0" * 32 + ".parquet",
                                   "_derived/evil.parquet"])
def test_T1_only_usr_parquet_holds_tombstones(ds, where):
    """[T1] [T3] [L8] a folder or file other than _derived/usr.parquet that claims namespace `usr` (with
    usr__deleted=true for every row) is refused with an error naming it: it never hides rows."""
    _plant(ds.dir / where, _tomb(IDS), overlay_namespace="usr", overlay_key="id", overlay_created_at=STAMP)
    for read in (lambda: ds.read_table(), lambda: ds.read_table(include_overlays=False),
                 lambda: ds.head(3, columns=["id"]), lambda: ds.validate(strict=True)):
        with pytest.raises(SchemaError, match="reserved namespace 'usr'") as exc:
            read()
        assert "evil" in str(exc.value) and exc.value.hint
    (ds.dir / where).unlink()
    assert ds.read_table().num_rows == len(SEQS)


def test_T1_foreign_file_beside_real_tombstones(ds):
    """[T1] [L7] with real tombstones present, a foreign folder claiming `usr` gets the reserved-file
    error (not an L7 hint to delete the real usr.parquet)."""
    ds.tombstone([IDS[0]])
    _plant(ds.dir / "_derived" / "evil" / f"part-20260101T000000000000Z-{'1' * 32}.parquet", _tomb(IDS), overlay_namespace="usr", overlay_key="id", overlay_created_at=STAMP)
    with pytest.raises(SchemaError, match="only .*usr.parquet may hold it"):
        ds.read_table()


def test_U1_state_namespace_only_from_its_file(ds):
    """[U1] a folder claiming `usr_state` is refused the same way."""
    _plant(ds.dir / "_derived" / "x.parquet", pa.table({"id": IDS[:1], "usr_state__masked": [True]}),
           overlay_namespace="usr_state", overlay_key="id", overlay_created_at=STAMP)
    with pytest.raises(SchemaError, match="reserved namespace 'usr_state'"):
        ds.read_table()


def test_T1_usr_columns_in_another_namespace_hide_nothing(ds):
    """[O11] [T3] usr__* columns in a non-reserved overlay are not tombstones: refused as unregistered."""
    _plant(ds.dir / "_derived" / "other.parquet", _tomb(IDS), overlay_namespace="other", overlay_key="id",
           overlay_created_at=STAMP)
    with pytest.raises(SchemaError, match="usr__deleted is not registered under 'other'"):
        ds.read_table()
    assert ds.read_table(include_overlays=False).num_rows == len(SEQS)


@pytest.mark.parametrize("stamp", ["garbage", "2026-01-01T12:00:00.000000", "2026-01-01 12:00:00.000000Z",
                                   "2026-13-01T00:00:00.000000Z", "2026-01-01T12:00:00Z", ""])
def test_O9_readers_refuse_unparseable_created_at(ds, stamp):
    """[O8] [O9] [M4] a part whose created_at is not a UTC M4 stamp (garbage, local time without Z, an
    impossible date, fewer digits) would rank arbitrarily: reads refuse it naming the file and the fix."""
    ds.write_overlay_part("mock", pa.table({"id": IDS[:2], "mock__score": [1.0, 2.0]}))
    bad = ds.dir / "_derived" / "mock" / f"part-20260101T000000000000Z-{'2' * 32}.parquet"
    _plant_stamped(ds, bad, pa.table({"id": IDS[:1], "mock__score": [9.0]}), stamp)
    before = tree_digest(ds.dir)
    for read in (lambda: ds.read_table(), lambda: ds.head(2), lambda: ds.get(IDS[0])):
        with pytest.raises(SchemaError, match="created_at") as exc:
            read()
        assert bad.name in str(exc.value) and exc.value.hint
    with pytest.raises(SchemaError, match="created_at"):
        ds.validate()
    assert tree_digest(ds.dir) == before


def test_O8_created_at_far_future_is_read_but_fails_validate(ds):
    """[O9] [V1] a stamp dated in the future is a valid stamp (reads use it) but validate reports it."""
    ds.write_overlay_part("mock", pa.table({"id": IDS[:1], "mock__score": [1.0]}))
    _plant_stamped(ds, ds.dir / "_derived" / "mock" / f"part-20260101T000000000000Z-{'3' * 32}.parquet",
                   pa.table({"id": IDS[:1], "mock__score": [9.0]}), "9999-12-31T23:59:59.999999Z")
    assert ds.read_table().column("mock__score")[0].as_py() == 9.0
    with pytest.raises(SchemaError, match="dated in the future"):
        ds.validate()


@pytest.mark.parametrize("damage", ["empty", "garbage"])
def test_L8_unreadable_part_breaks_only_reads_that_use_it(ds, damage):
    """[L8] [O12] one unreadable part (zero bytes, or not parquet) of namespace `other` does not break
    reads that do not use `other`: read_table(include_overlays=False), head/get of base columns, a
    read of `mock` only; reads that use it fail with an error naming the file."""
    ds.write_overlay_part("mock", pa.table({"id": IDS[:2], "mock__score": [1.0, 2.0]}))
    ds.write_overlay_part("other", pa.table({"id": IDS[:2], "other__x": [1, 2]}))
    part = next((ds.dir / "_derived" / "other").glob("part-*.parquet"))
    part.write_bytes(b"" if damage == "empty" else b"not parquet at all")
    assert ds.read_table(include_overlays=False).num_rows == len(SEQS)
    assert ds.head(2, columns=["id"])["id"].to_pylist() == IDS[:2]
    assert ds.head(2, columns=["id", "mock__score"])["mock__score"].to_pylist() == [1.0, 2.0]
    assert ds.get(IDS[0], columns=["id", "sequence"]).num_rows == 1
    assert ds.read_table(include_overlays=["mock"]).column_names[-1] == "mock__score"
    with pytest.raises(SchemaError, match=part.name):
        ds.read_table()
    usr = os.path.join(os.path.dirname(sys.executable), "usr")
    res = subprocess.run([usr, "--root", str(ds.root), "head", ds.name, "--columns", "id", "-n", "2"],
                         capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout + res.stderr
    assert IDS[0] in res.stdout


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads chmod 000 files")
def test_L8_chmod_000_part_breaks_only_reads_that_use_it(ds):
    """[L8] a part without read permission: same rule as an empty one."""
    ds.write_overlay_part("other", pa.table({"id": IDS[:2], "other__x": [1, 2]}))
    part = next((ds.dir / "_derived" / "other").glob("part-*.parquet"))
    part.chmod(0)
    try:
        assert ds.read_table(include_overlays=False).num_rows == len(SEQS)
        assert ds.head(2, columns=["id"]).num_rows == 2
    finally:
        part.chmod(0o644)


@pytest.mark.slow
def test_X2_compaction_of_1500_parts_under_256_open_files(make_ds, tmp_path):
    """[X2] compaction streams parts with a bounded number of open files: 1,500 parts (written through
    USR's own part encoder) compact under `ulimit -n 256` and give the same view."""
    seqs = ["".join("ACGT"[(i >> (2 * k)) & 3] for k in range(10)) for i in range(3000)]
    ds = make_ds(seqs=seqs, namespaces=NS)
    ids = ds.read_table(columns=["id"])["id"].to_pylist()
    script = textwrap.dedent(f"""
        import resource, sys
        import numpy as np, pyarrow as pa
        from usr_core import Dataset
        from usr_core.contract import ts
        from usr_core.layout import DatasetPaths
        from usr_core.overlays.discovery import new_part_name
        from usr_core.overlays.encoding import registry_metadata, write_overlay_file
        from usr_core.registry.registry import load_registry

        ds = Dataset({str(ds.root)!r}, {ds.name!r})
        ids = ds.read_table(columns=["id"])["id"]
        reg = load_registry(ds.root, required=True)
        parts = ds.paths.parts_dir("mock")
        parts.mkdir(parents=True)
        rng = np.random.default_rng(0)
        for k in range(1500):
            pick = np.sort(rng.choice(len(ids), 4, replace=False))
            t = pa.table({{"id": ids.take(pa.array(pick)), "mock__score": pa.array([float(k)] * 4)}})
            final = parts / new_part_name()
            write_overlay_file(final, t, "id", registry_metadata("mock", "id", ts(), reg),
                               tmp=final.with_name(final.name + ".tmp"), label="part")
        before = ds.read_table(columns=["id", "mock__score"])
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
        with ds.maintenance(reason="fd test"):
            ds.compact_overlay("mock")
        after = ds.read_table(columns=["id", "mock__score"])
        assert after.equals(before), "compaction changed the view"
        assert not parts.exists() and ds.paths.compact_overlay("mock").is_file()
        print("ok", before.column("mock__score").null_count)
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and res.stdout.startswith("ok"), res.stdout + res.stderr[-3000:]
    assert len(ids) == 3000


def _module_state() -> list[str]:
    """Module-level containers in usr_core that hold Arrow arrays or numpy arrays."""
    found = []
    for name, mod in list(sys.modules.items()):
        if not name.startswith("usr_core") or not isinstance(mod, types.ModuleType):
            continue
        for attr, value in vars(mod).items():
            items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, set)) else ()
            for item in items:
                parts = item if isinstance(item, tuple) else (item,)
                if any(isinstance(p, (pa.Array, pa.ChunkedArray, np.ndarray)) or type(p).__name__.endswith("Index")
                       for p in parts):
                    found.append(f"{name}.{attr}")
                    break
    return found


def test_no_module_state_after_reads_and_writes(ds):
    """[O10] (issue 10) no module-level cache keeps keys or hash indexes alive after reads and writes."""
    ds.write_overlay_part("mock", pa.table({"id": IDS, "mock__score": [float(i) for i in range(len(IDS))]}))
    ds.tombstone([IDS[1]])
    ds.read_table()
    ds.head(2)
    gc.collect()
    assert _module_state() == []
    assert usr_core.__name__ == "usr_core"


def test_O10_reads_exact_when_every_key_hash_collides(ds, monkeypatch):
    """[O9] [O10] equal-width keys are matched by hashes verified on bytes: with every hash equal the
    read (join of parts and tombstones) gives the same table."""
    ds.write_overlay_part("mock", pa.table({"id": IDS[:4], "mock__score": [1.0, 2.0, 3.0, 4.0]}))
    ds.write_overlay_part("mock", pa.table({"id": IDS[2:], "mock__score": [30.0, None, 50.0, 60.0]}))
    ds.tombstone([IDS[5]])
    want = ds.read_table()
    monkeypatch.setattr(overlay_keys, "hash_multipliers", lambda n: np.zeros(n, np.uint64))
    got = ds.read_table()
    assert got.equals(want)
    assert dict(zip(got["id"].to_pylist(), got["mock__score"].to_pylist())) == {
        IDS[0]: 1.0, IDS[1]: 2.0, IDS[2]: 30.0, IDS[3]: 4.0, IDS[4]: 50.0}
