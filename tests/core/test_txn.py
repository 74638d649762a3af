"""The transaction every mutation runs in (usr_core/txn.py, journal.py): issue 13 items 4 and 8 (temp files)."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pyarrow as pa
import pytest

from testkit import tree_digest
from usr_core import compute_id, register_namespace
from usr_core import events as ev

SEQS = ("ACGT", "AACC", "GGTT")
IDS = [compute_id("dna", s) for s in SEQS]


@pytest.fixture
def ds(make_ds):
    return make_ds(seqs=SEQS)


def _score(ids, values):
    return pa.table({"id": ids, "mock__score": values})


MUTATIONS = {
    "import": lambda ds, tmp: ds.import_rows([{"sequence": "GGGG"}]),
    "tombstone": lambda ds, tmp: ds.tombstone([IDS[0]], reason="x"),
    "state": lambda ds, tmp: ds.set_state([IDS[1]], qc_status="pass"),
    "write_overlay": lambda ds, tmp: ds.write_overlay("mock", _score(IDS[:1], [1.0])),
    "part": lambda ds, tmp: ds.write_overlay_part("mock", _score(IDS[:2], [1.0, 2.0])),
    "create": lambda ds, tmp: ds.create_overlay("mock", _score(IDS[:2], [1.0, 2.0])),
    "snapshot": lambda ds, tmp: ds.snapshot(),
}


@pytest.mark.parametrize("registry_edit", [False, True], ids=["same-registry", "after-registry-edit"])
@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_E8_event_append_failure_changes_nothing(ds, root, tmp_path, monkeypatch, name, registry_edit):
    """An event log that refuses the line (read-only, disk full): the mutation fails and the root is
    byte-identical, including the auto-freeze's restamp and freeze file after a registry edit [R14]."""
    if registry_edit:
        register_namespace(root, "later", "later__x:string")
    before = tree_digest(root)

    def refuse(paths, data):
        raise PermissionError(errno.EACCES, "Permission denied", str(paths.events))

    monkeypatch.setattr(ev, "append_line", refuse)
    with pytest.raises(PermissionError):
        MUTATIONS[name](ds, tmp_path)
    assert tree_digest(root) == before


def test_E8_change_and_its_events_are_one_commit(ds, root):
    """After a registry edit the freeze event and the operation's event are appended together, in order."""
    register_namespace(root, "later", "later__x:string")
    n = len(ev.read_events(ds.paths))
    ds.write_overlay_part("mock", _score(IDS[:1], [1.0]))
    actions = [e["action"] for e in ev.read_events(ds.paths)[n:]]
    assert actions == ["registry_freeze", "write_overlay_part"]


def test_E8_log_not_a_regular_file_fails_before_any_change(ds, root):
    ds.events_path.unlink()
    ds.events_path.mkdir()
    before = tree_digest(root)
    with pytest.raises(Exception, match="(?i)event log"):
        ds.tombstone([IDS[0]])
    assert tree_digest(root) == before


STAMP = "20240101T000000123456"
HEX = "0" * 32


def test_stale_temp_files_are_swept_by_the_next_writer_and_foreign_files_kept(ds):
    """Issue 13 item 8: temp files of killed writers (named as USR names them) go at the next mutation
    under the lock; files that only look similar stay."""
    ds.write_overlay_part("mock", _score(IDS[:1], [1.0]))
    d = ds.dir
    ours = [d / "_snapshots" / f"records-{STAMP}.parquet.tmp", d / "records.tmp.parquet",
            d / "_derived" / "mock.tmp.parquet", d / f".records.parquet.undo-{HEX}", d / "meta.md.tmp",
            d / "_derived" / "mock" / f"part-{STAMP}Z-{HEX}.parquet.tmp"]
    foreign = [d / "_snapshots" / "records-mine.parquet.tmp", d / "_snapshots" / "notes.txt",
               d / "_derived" / "mock.tmp", d / "records.parquet.bak", d / "_derived" / "mock" / "part-x.parquet.tmp",
               d / f".records.parquet.undo-{HEX[:31]}"]
    for p in ours + foreign:
        p.write_bytes(b"x" * 10)
    staging = d / "_derived" / f".mock.staging-{HEX}"
    staging.mkdir()
    (staging / "part.parquet").write_bytes(b"x")
    ds.tombstone([IDS[1]])
    assert [p for p in ours if p.exists()] == [] and not staging.exists()
    assert all(p.exists() for p in foreign)


def test_A3_write_session_reenters_the_transactions_lock(ds):
    with ds.write_session(timeout=1) as s:
        s.write_overlay_part("mock", _score(IDS[:1], [1.0]))
        s.import_rows([{"sequence": "GGGG"}])
        ds.tombstone([IDS[2]])
    assert ds.info().rows == 4


def test_rollback_restores_the_base_bytes_after_a_restamp(ds, root, monkeypatch):
    """The journal keeps the old base as a hard link and puts it back; no undo file is left behind."""
    register_namespace(root, "later", "later__x:string")
    old = ds.records_path.read_bytes()
    monkeypatch.setattr(ev, "append_line", lambda paths, data: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    with pytest.raises(OSError):
        ds.tombstone([IDS[0]])
    assert ds.records_path.read_bytes() == old
    assert not [n for n in os.listdir(ds.dir) if ".undo-" in n]


def test_transaction_result_names_what_it_wrote(ds):
    """The typed result: published paths (main output first) and the events appended with them."""
    from usr_core.storage.atomic import write_bytes

    with ds.writer.transaction("custom_note") as txn:
        note = txn.paths.dir / "_derived" / "notes" / "n.txt"
        txn.journal.before_write(note)
        write_bytes(note, b"hello")
        txn.event("custom_note", args={"n": 1})
    assert txn.result.written == [note] and txn.result.events == ["custom_note"]
    assert ev.read_events(ds.paths)[-1]["action"] == "custom_note"


def test_transaction_failure_removes_created_folders(ds, root):
    from usr_core.storage.atomic import write_bytes

    before = tree_digest(root)
    with pytest.raises(RuntimeError):
        with ds.writer.transaction("custom_note") as txn:
            note = txn.paths.dir / "_derived" / "deep" / "er" / "n.txt"
            txn.journal.before_write(note)
            write_bytes(note, b"hello")
            raise RuntimeError("boom")
    assert tree_digest(root) == before


def _as_nobody(fn) -> tuple[int, str]:
    """Run fn() in a forked child with the uid of `nobody` (modules are already loaded in the parent)."""
    import pwd
    import tempfile

    nobody = pwd.getpwnam("nobody")
    with tempfile.TemporaryFile("w+") as out:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 0
            try:
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
                fn()
            except Exception as exc:
                out.write(f"{type(exc).__name__}: {exc}")
                out.flush()
                code = 3
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        out.seek(0)
        return os.waitstatus_to_exitcode(status), out.read()


@pytest.fixture
def open_root(ds, root):
    """A copy of the root below a folder every user may traverse (pytest's own tmp folder is 0700)."""
    import shutil
    import tempfile

    ds.write_overlay("mock", _score(IDS[2:], [9.0]))  # every mutation below finds its folders in place
    top = Path(tempfile.mkdtemp(prefix="usr-ro-"))
    os.chmod(top, 0o755)
    shutil.copytree(root, top / "root", symlinks=True)
    yield top / "root"
    shutil.rmtree(top, ignore_errors=True)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="needs root to drop to another user")
@pytest.mark.parametrize("name", ["import", "tombstone", "write_overlay", "part"])
def test_E8_read_only_event_log_fails_before_any_change(open_root, tmp_path, name):
    """Issue 13 item 4: with `.events.log` read-only for the writer, the mutation fails naming the log and
    the root is byte-identical (the data is never changed first)."""
    import pwd

    from usr_core import Dataset

    nobody = pwd.getpwnam("nobody")
    for folder, dirs, files in os.walk(open_root):
        for entry in [folder] + [os.path.join(folder, n) for n in dirs + files]:
            os.chown(entry, nobody.pw_uid, nobody.pw_gid)
    ds = Dataset(open_root, "demo")
    os.chmod(ds.events_path, 0o444)
    before = tree_digest(open_root)
    code, message = _as_nobody(lambda: MUTATIONS[name](ds, tmp_path))
    assert code == 3 and "event log" in message, message
    assert tree_digest(open_root) == before
