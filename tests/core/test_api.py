"""Public Python API (P1, P2), write sessions and locks (A3, A5), bad input changes nothing (L9 leftovers)."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import usr_core
from testkit import tree_digest
from usr_core import (Dataset, LockTimeoutError, NamespaceError, SchemaError, SequencesError, compute_id,
                      load_registry, register_namespace)

SEQS = ("ACGT", "AACC", "GGTT")
IDS = [compute_id("dna", s) for s in SEQS]
HOLDER = ("import sys, time\nfrom usr_core.storage.locks import file_lock\n"
          "with file_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(float(sys.argv[2]))\n")


def test_P1_module_exports_and_constants():
    """[P1] the module's names and constant values."""
    for name in ("Dataset", "merge", "compute_id", "normalize_sequence", "validate_bio_type", "validate_alphabet",
                 "parse_columns_spec", "register_namespace", "ensure_registry_entries", "load_registry",
                 "registry_hash", "namespace_contract_hash", "ARROW_SCHEMA", "REQUIRED_COLUMNS", "SequencesError",
                 "ValidationError", "SchemaError", "NamespaceError", "AlphabetError", "DuplicateIDError",
                 "LockTimeoutError"):
        assert hasattr(usr_core, name), name
    assert usr_core.SCHEMA_VERSION == "1" and usr_core.ID_HASH_SPEC == "sha1_utf8_pipe"
    assert usr_core.USR_EVENT_VERSION == 1
    assert usr_core.RESERVED_NAMESPACES == {"usr"}
    assert usr_core.MUTATION_RESERVED_NAMESPACES == {"usr", "usr_state"}
    assert tuple(usr_core.REQUIRED_COLUMNS) == ("id", "bio_type", "sequence", "alphabet", "length", "source",
                                                "created_at")
    assert issubclass(usr_core.SchemaError, usr_core.ValidationError)
    assert issubclass(usr_core.ValidationError, usr_core.SequencesError)
    assert issubclass(usr_core.LockTimeoutError, usr_core.SequencesError)
    assert not issubclass(usr_core.LockTimeoutError, usr_core.ValidationError)


def test_P1_core_does_not_import_dagster():
    """[P1] usr_core is a pure contract library (no Dagster import)."""
    code = "import sys, usr_core, usr_core.dataset; print('dagster' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=str(Path(__file__).resolve().parents[2]))
    assert out.stdout.strip() == "False", out.stderr


def test_P2_constructor_does_no_io_and_paths(root):
    """[P2] Dataset(root, name) normalises the id (L2) without I/O; path properties."""
    before = tree_digest(root, ignore_locks=False)
    ds = Dataset(root, " grp//demo/ ")
    assert ds.name == "grp/demo"
    assert ds.dir == root / "grp" / "demo"
    assert ds.records_path == ds.dir / "records.parquet"
    assert ds.snapshot_dir == ds.dir / "_snapshots"
    assert ds.meta_path == ds.dir / "meta.md"
    assert ds.events_path == ds.dir / ".events.log"
    assert not ds.exists()
    assert tree_digest(root, ignore_locks=False) == before


@pytest.mark.parametrize("bad", ["", "  ", "/abs", "../x", "a/../b", "a/./b", "archived", "archived/x"])
def test_P2_dataset_ids_escaping_root_rejected(root, bad):
    """[P2] [L2] bad dataset ids are rejected before any file is touched."""
    before = tree_digest(root, ignore_locks=False)
    with pytest.raises(SequencesError):
        Dataset(root, bad)
    assert tree_digest(root, ignore_locks=False) == before


@pytest.mark.parametrize("ns", ["../x", "a/b", "/abs", "x/../../y", "usr", "A", "a__b", ""])
def test_P2_bad_namespaces_change_nothing(make_ds, root, ns):
    """[P2] [O5] [O6] namespaces that try to escape (.., /, absolute) fail before anything is written."""
    ds = make_ds(seqs=SEQS)
    before = tree_digest(root)
    t = pa.table({"id": IDS[:1], "x": [1.0]})
    for call in (lambda: ds.write_overlay(ns, t), lambda: ds.write_overlay_part(ns, t),
                 lambda: ds.create_overlay(ns, t)):
        with pytest.raises((NamespaceError, SchemaError)):
            call()
    assert tree_digest(root) == before
    assert sorted(p.name for p in root.parent.iterdir()) == ["root"]


def test_P2_open_by_id_and_missing(root, make_ds):
    """[P2] open by id; a missing dataset → SequencesError "Dataset not initialized" on use."""
    make_ds("demo")
    assert Dataset.open(root, "demo").exists()
    ghost = Dataset.open(root, "ghost")
    with pytest.raises(SequencesError, match="not initialized"):
        ghost.tombstone(["x"])
    with pytest.raises(SequencesError, match="not initialized"):
        ghost.write_overlay_part("mock", pa.table({"id": ["x"], "mock__score": [1.0]}))
    assert not (root / "ghost").exists()


def test_P2_write_session_batches_under_one_lock(root, make_ds):
    """[P2] [A3] write_session holds the lock once; init_if_missing, import_rows, add_sequences, write_overlay."""
    make_ds(seqs=())  # registers mock
    ds = Dataset(root, "sess")
    with ds.write_session() as s:
        assert s.init_if_missing(source="s") is True
        assert s.init_if_missing() is False
        assert s.import_rows([{"sequence": "ACGT"}]) == 1
        assert s.add_sequences(["AACC"], bio_type="dna", alphabet="dna_4").added == 1
        assert s.write_overlay("mock", pa.table({"id": IDS[:1], "mock__score": [1.0]})) == 1
    assert ds.read_table()["mock__score"].to_pylist() == [1.0, None]


def test_A3_lock_timeout_changes_nothing(root, make_ds):
    """[A3] (div) another process holds .usr.lock: a timeout raises LockTimeoutError naming the holder."""
    make_ds(seqs=SEQS)
    ds = Dataset(root, "demo", lock_timeout=0.3)
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(ds.dir / ".usr.lock"), "30"], stdout=subprocess.PIPE,
                         text=True, cwd=str(Path(__file__).resolve().parents[2]))
    try:
        assert p.stdout.readline().strip() == "locked"
        before = tree_digest(root)
        with pytest.raises(LockTimeoutError) as err:
            ds.tombstone([IDS[0]])
        assert str(p.pid) in str(err.value)
        with pytest.raises(LockTimeoutError):
            ds.write_overlay_part("mock", pa.table({"id": IDS[:1], "mock__score": [1.0]}))
        with pytest.raises(LockTimeoutError):
            with ds.write_session(timeout=0.1):
                pass
        assert tree_digest(root) == before
    finally:
        p.kill()
        p.wait()
        p.stdout.close()
    assert ds.tombstone([IDS[0]]) == 1


def test_A3_lock_file_is_kept(make_ds):
    """[A3] .usr.lock is created on first mutation and never deleted."""
    ds = make_ds(seqs=SEQS)
    assert (ds.dir / ".usr.lock").is_file()
    ds.tombstone([IDS[0]])
    assert (ds.dir / ".usr.lock").is_file()


def test_A5_registry_writes_serialised(root):
    """[A5] registrations from 8 threads at once: all kept (registry lock + atomic write)."""
    errors = []

    def reg(i):
        try:
            register_namespace(root, f"ns{i}", f"ns{i}__v:int64")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reg, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert {f"ns{i}" for i in range(8)} <= set(load_registry(root))
    assert not [p for p in root.iterdir() if p.name not in ("registry.yaml", ".registry.lock")]


def test_A5_registry_write_waits_for_lock(root):
    """[A5] a registry write waits while another process holds <root>/.registry.lock."""
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(root / ".registry.lock"), "1.0"],
                         stdout=subprocess.PIPE, text=True, cwd=str(Path(__file__).resolve().parents[2]))
    try:
        assert p.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        register_namespace(root, "late", "late__v:int64")
        assert time.monotonic() - t0 >= 0.5
    finally:
        p.wait()
        p.stdout.close()
    assert "late" in load_registry(root)


def test_L9_transient_leftovers_ignored_and_overwritten(make_ds):
    """[L9] crash leftovers (records.tmp.parquet, <ns>.tmp.parquet, part .tmp, .events.<rand>.log) are
    ignored by readers and overwritten by writers."""
    ds = make_ds(seqs=SEQS)
    (ds.dir / "records.tmp.parquet").write_bytes(b"garbage")
    d = ds.dir / "_derived"
    d.mkdir(exist_ok=True)
    (d / "mock.tmp.parquet").write_bytes(b"garbage")
    (d / "mock").mkdir()
    (d / "mock" / "part-x.parquet.tmp").write_bytes(b"garbage")
    (ds.dir / ".events.abc.log").write_text("junk")
    assert ds.read_table().num_rows == len(SEQS)
    assert ds.import_rows([{"sequence": "TTTT"}]) == 1
    assert ds.write_overlay_part("mock", pa.table({"id": IDS[:1], "mock__score": [1.0]})) == 1
    assert ds.read_table()["mock__score"].to_pylist()[0] == 1.0
    assert pq.read_table(ds.records_path).num_rows == len(SEQS) + 1


def test_P2_failed_calls_change_nothing(make_ds, root):
    """[P2] a battery of failing calls: the dataset tree hash is unchanged after each."""
    ds = make_ds(seqs=SEQS)
    ds.write_overlay_part("mock", pa.table({"id": IDS[:1], "mock__score": [1.0]}))
    before = tree_digest(root)
    bad_calls = [
        lambda: ds.import_rows([{"sequence": "XYZ"}]),
        lambda: ds.import_rows([{"sequence": "ACGT"}]),
        lambda: ds.add_sequences(["ACGT", "ACGT"], bio_type="dna", alphabet="dna_4"),
        lambda: ds.add_sequences(["ACGU"], bio_type="rna", alphabet="dna_4"),
        lambda: ds.write_overlay_part("mock", pa.table({"id": ["nope"], "mock__score": [1.0]})),
        lambda: ds.write_overlay_part("mock", pa.table({"sequence": ["ACGT"], "mock__score": [1.0]}),
                                      key="sequence"),
        lambda: ds.write_overlay_part("mock", pa.table({"id": IDS[:1], "mock__zzz": [1.0]})),
        lambda: ds.write_overlay("mock", pa.table({"id": IDS[:1], "mock__score": [2.0]}), overwrite=True),
        lambda: ds.tombstone([]),
        lambda: ds.restore(["nope"]),
        lambda: ds.set_state([IDS[0]], split="nope"),
        lambda: ds.clear_state(["nope"]),
        lambda: ds.create_overlay("mock", pa.table({"id": IDS[:1], "mock__score": [1.0]})),
        lambda: ds.log_event("x", actor={"tool": ""}),
        lambda: ds.attach(root.parent / "missing.csv", "mock"),
    ]
    for i, call in enumerate(bad_calls):
        with pytest.raises((SequencesError, ValueError, FileExistsError, FileNotFoundError)):
            call()
        assert tree_digest(root) == before, i
