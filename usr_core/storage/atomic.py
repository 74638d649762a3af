"""Atomic file writes (A1): sibling temp file, fsync, rename, fsync of the directory; and the other file
primitives of USR writers (remove, rename, mkdir, copy).

Every primitive refuses a target reached through a symbolic link inside a USR layout (storage/confine.py,
UnsafePathError) and turns a disk-full or permission error into EnvironmentFailure (errors.py) after
removing its temp file, so the old file stays as it was.

`USR_CRASH_AT=<label>` (test-only) makes the process SIGKILL itself at the named step, so the
crash harness can prove every file is old or new.  Steps are `<label>:before-fsync`,
`<label>:before-rename`, `<label>:after-rename`; `crash_point(name)` adds named points between files.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from ..contract import PARQUET_COMPRESSION
from ..errors import environment_failure
from .confine import check_write_target


_CRASH_HITS: dict[str, int] = {}


class InjectedFault(OSError):
    """Test-only: the failure USR_CRASH_MODE=raise injects at a crash point."""


def crash_point(name: str) -> None:
    """Test-only: USR_CRASH_TRACE=<file> records each point; USR_CRASH_AT=<name> or <name>#<k> kills there
    (or raises InjectedFault there when USR_CRASH_MODE=raise)."""
    trace = os.environ.get("USR_CRASH_TRACE")
    if trace:
        with open(trace, "a", encoding="utf-8") as fh:
            fh.write(name + "\n")
    target = os.environ.get("USR_CRASH_AT")
    if target:
        hits = _CRASH_HITS[name] = _CRASH_HITS.get(name, 0) + 1
        if target == name or target == f"{name}#{hits}":
            if os.environ.get("USR_CRASH_MODE") == "raise":
                raise InjectedFault(f"injected failure at {name}")
            os.kill(os.getpid(), signal.SIGKILL)


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: Path, final: Path, label: str = "write") -> None:
    """fsync `tmp`, rename it onto `final`, fsync the directory."""
    crash_point(f"{label}:before-fsync")
    _fsync_file(tmp)
    crash_point(f"{label}:before-rename")
    os.replace(tmp, final)
    crash_point(f"{label}:after-rename")
    fsync_dir(final.parent)


@contextlib.contextmanager
def environment_errors(what: str) -> Iterator[None]:
    """Re-raise disk-full / permission / open-file-limit OSErrors as EnvironmentFailure naming `what`."""
    try:
        yield
    except OSError as exc:
        failure = environment_failure(exc, what)
        if failure is None:
            raise
        raise failure from exc


@contextlib.contextmanager
def atomic_path(final: Path, tmp: Path | None = None, label: str = "write") -> Iterator[Path]:
    """Yield a temp path beside `final`; on success publish it, on failure remove it."""
    final = Path(final)
    tmp = Path(tmp) if tmp is not None else final.with_name(final.name + ".tmp")
    check_write_target(final)
    check_write_target(tmp)
    with environment_errors(f"Cannot write {final}"):
        tmp.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # a stale temp file (L9) or a hard link planted there: never write into its inode
        try:
            yield tmp
            publish(tmp, final, label)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise


def write_bytes(final: Path, data: bytes, tmp: Path | None = None, label: str = "write") -> None:
    with atomic_path(final, tmp, label) as t:
        with open(t, "wb") as fh:
            fh.write(data)


def write_text(final: Path, text: str, tmp: Path | None = None, label: str = "write") -> None:
    write_bytes(final, text.encode("utf-8"), tmp, label)


def write_parquet_batches(final: Path, schema: pa.Schema, batches: Callable[[], Iterator[pa.RecordBatch]],
                          tmp: Path | None = None, label: str = "write") -> int:
    """Stream record batches into an atomically published parquet file; returns rows written."""
    rows = 0
    with atomic_path(final, tmp, label) as t:
        with pq.ParquetWriter(t, schema, compression=PARQUET_COMPRESSION) as writer:
            for batch in batches():
                if batch.num_rows:
                    writer.write_batch(batch)
                    rows += batch.num_rows
    return rows


def copy_file(src: Path, final: Path, tmp: Path | None = None, label: str = "copy") -> None:
    """Copy `src` (a real file, not a link) atomically onto `final` (e.g. a snapshot, L6)."""
    if os.path.islink(src):
        check_write_target(src)  # a link inside a USR layout: refused with the same message
    with atomic_path(final, tmp, label) as t:
        shutil.copyfile(src, t)  # the content (of a link outside any layout: its target's), never a link


def remove_file(path: Path) -> bool:
    """Delete the file `path` if it exists (never through a link inside a USR layout); True if removed."""
    path = Path(path)
    check_write_target(path)
    with environment_errors(f"Cannot delete {path}"):
        try:
            path.unlink()
        except FileNotFoundError:
            return False
    return True


def remove_tree(path: Path) -> None:
    """Delete the folder `path` and its content (a link is refused, never followed)."""
    path = Path(path)
    check_write_target(path)
    with environment_errors(f"Cannot delete {path}"):
        shutil.rmtree(path)


def rename_path(src: Path, dst: Path) -> None:
    """os.rename of a file or folder within a USR layout; both ends must be reached without links."""
    check_write_target(src)
    check_write_target(dst)
    with environment_errors(f"Cannot rename {src} to {dst}"):
        os.rename(src, dst)


def make_dirs(path: Path) -> Path:
    """mkdir -p inside a USR layout, refusing a link on the way."""
    path = Path(path)
    check_write_target(path)
    with environment_errors(f"Cannot create {path}"):
        path.mkdir(parents=True, exist_ok=True)
    return path
