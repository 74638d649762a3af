"""Atomic file writes (A1): sibling temp file, fsync, rename, fsync of the directory.

`USR_CRASH_AT=<label>` (test-only) makes the process SIGKILL itself at the named step, so the
crash harness can prove every file is old or new.  Steps are `<label>:before-fsync`,
`<label>:before-rename`, `<label>:after-rename`; `crash_point(name)` adds named points between files.
"""
from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from ..contract import PARQUET_COMPRESSION


_CRASH_HITS: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Test-only: USR_CRASH_TRACE=<file> records each point; USR_CRASH_AT=<name> or <name>#<k> kills there."""
    trace = os.environ.get("USR_CRASH_TRACE")
    if trace:
        with open(trace, "a", encoding="utf-8") as fh:
            fh.write(name + "\n")
    target = os.environ.get("USR_CRASH_AT")
    if target:
        hits = _CRASH_HITS[name] = _CRASH_HITS.get(name, 0) + 1
        if target == name or target == f"{name}#{hits}":
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
def atomic_path(final: Path, tmp: Path | None = None, label: str = "write") -> Iterator[Path]:
    """Yield a temp path beside `final`; on success publish it, on failure remove it."""
    final = Path(final)
    tmp = Path(tmp) if tmp is not None else final.with_name(final.name + ".tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
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


def write_parquet(final: Path, table: pa.Table, tmp: Path | None = None, label: str = "write",
                  metadata: dict[str, str] | None = None, row_group_size: int | None = None) -> None:
    """Write `table` (with merged key/value metadata) atomically as zstd parquet."""
    if metadata is not None:
        merged = dict(table.schema.metadata or {})
        merged.update({k.encode(): v.encode() for k, v in metadata.items()})
        table = table.replace_schema_metadata(merged)
    with atomic_path(final, tmp, label) as t:
        pq.write_table(table, t, compression=PARQUET_COMPRESSION, row_group_size=row_group_size)


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
