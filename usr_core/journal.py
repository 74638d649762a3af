"""The undo journal of one transaction: how to put the dataset back if the transaction fails.

A mutation publishes its files one by one (each atomically, so a kill leaves every file old or new).
Before a file is published the journal keeps its before-image: a hard link to the old bytes under a
hidden name (`.<name>.undo-<tag>`), or the note that the path did not exist.  Renames and created
directories are recorded too; deletions are deferred until after the commit.  If anything fails
before the event is appended, `rollback()` restores every path, so an acknowledged failure leaves
the root byte-identical.  A kill leaves at most hidden undo links behind, which the next writer
removes (`stale_files`).
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Callable

from .storage.atomic import crash_point, fsync_dir, remove_file, remove_tree, rename_path
from .storage.confine import check_write_target

UNDO_SUFFIX = ".undo-"
# The temp names our writers use (never anything else): `<file>.tmp`, `<stem>.tmp.parquet`,
# `.<name>.undo-<hex32>`, `.<ns>.staging-<hex32>`.  Hidden `.<ns>.rollback-<hex32>` folders are left to
# compaction, which reads them as the sign of a finished compaction (maintenance/compact.py).
_OWN_TEMP = re.compile(r"^(?:\..+\.(?:undo|staging)-[0-9a-f]{32}"
                       r"|records-\d{8}T\d{12}\.parquet\.tmp|part-\d{8}T\d{12}Z-[0-9a-f]{32}\.parquet\.tmp"
                       r"|registry\.[0-9a-f]{64}\.yaml\.tmp|[a-z][a-z0-9_]*\.tmp\.parquet"
                       r"|digest_ledger\.json\.tmp|meta\.md\.tmp)$")


class Journal:
    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex
        self._undo: list[Callable[[], None]] = []
        self._after: list[Callable[[], None]] = []
        self._backups: list[Path] = []
        self._kept: set[Path] = set()  # paths whose before-image is already kept
        self.published: list[Path] = []  # paths created, replaced or renamed into place, in order

    # ---------------------------------------------------------------- recording
    def mkdirs(self, path: Path) -> Path:
        """Create `path` and its missing parents; rollback removes the ones created here."""
        path = Path(path)
        missing = []
        p = path
        while not p.exists() and p != p.parent:
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            check_write_target(d)
            with contextlib.suppress(FileExistsError):
                d.mkdir()
                self._undo.append(lambda d=d: d.rmdir())
        return path

    def before_write(self, path: Path) -> None:
        """Call before `path` is (re)published: rollback restores its old bytes or removes it."""
        path = Path(path)
        if path in self._kept:
            return
        self._kept.add(path)
        self.published.append(path)
        self.mkdirs(path.parent)
        if not os.path.lexists(path):
            self._undo.append(lambda: _remove(path))
            return
        backup = path.with_name(f".{path.name}{UNDO_SUFFIX}{self.tag}")
        check_write_target(path)
        check_write_target(backup)
        try:
            os.link(path, backup, follow_symlinks=False)
        except OSError:
            shutil.copy2(path, backup, follow_symlinks=False)
        self._backups.append(backup)
        self._undo.append(lambda: os.replace(backup, path))

    def rename(self, src: Path, dst: Path) -> None:
        """os.rename, undone by the reverse rename (`dst` must not exist)."""
        self.mkdirs(Path(dst).parent)
        crash_point("journal:before-rename")
        rename_path(src, dst)
        self.published.append(Path(dst))
        self._undo.append(lambda: os.rename(dst, src))
        fsync_dir(Path(dst).parent)
        if Path(src).parent != Path(dst).parent:
            fsync_dir(Path(src).parent)

    def delete(self, path: Path) -> None:
        """Deletion cannot be undone, so `path` moves to a hidden name now (readers skip it; rollback
        moves it back) and is deleted once the event is committed."""
        path = Path(path)
        hidden = path.with_name(f".{path.name}.rollback-{uuid.uuid4().hex}")
        self.rename(path, hidden)
        self.delete_after_commit(hidden)

    def delete_after_commit(self, path: Path) -> None:
        self._after.append(lambda: _remove(Path(path)))

    def after_commit(self, fn: Callable[[], None]) -> None:
        self._after.append(fn)

    # ---------------------------------------------------------------- outcome
    @contextlib.contextmanager
    def scope(self):
        """Commit on success, roll back on failure (a journal used outside a transaction)."""
        try:
            yield self
        except BaseException:
            self.rollback()
            raise
        self.commit()

    def rollback(self) -> list[OSError]:
        """Undo in reverse order; every step is attempted even if an earlier one fails.  Returns the
        steps that failed (the caller reports them with the error that caused the rollback)."""
        errors = []
        for undo in reversed(self._undo):
            try:
                undo()
            except (FileNotFoundError, NotADirectoryError):
                pass
            except OSError as exc:
                errors.append(exc)
        self._undo.clear()
        self._drop_backups()
        self._after.clear()
        self._kept.clear()
        return errors

    def commit(self) -> None:
        """The event is appended: drop the before-images, then run the deferred clean-ups (best effort:
        the change is durable, a failed clean-up only leaves garbage the next writer sweeps)."""
        self._undo.clear()
        self._drop_backups()
        for fn in self._after:
            with contextlib.suppress(Exception):
                crash_point("txn:after-commit")
                fn()
        self._after.clear()

    def _drop_backups(self) -> None:
        for b in self._backups:
            with contextlib.suppress(FileNotFoundError):
                b.unlink()
        self._backups.clear()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        remove_tree(path)
    else:
        with contextlib.suppress(NotADirectoryError):
            remove_file(path)


def stale_files(folders: list[Path]) -> list[Path]:
    """Leftovers of killed writers in `folders`: only names our own writers use for temp files."""
    out = []
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        out.extend(Path(e.path) for e in entries if _OWN_TEMP.match(e.name) and not e.is_symlink())
    return out


def sweep(folders: list[Path]) -> None:
    """Remove stale temp files (call under the dataset lock: no live writer owns them then)."""
    for p in stale_files(folders):
        with contextlib.suppress(OSError):
            _remove(p)
