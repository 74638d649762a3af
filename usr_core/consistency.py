"""Consistent reads without a lock (issue 6 §2): retry while a writer replaced what a read listed."""
from __future__ import annotations

import stat
import time

from .layout import DatasetPaths

_ATTEMPTS = 10


def _listing(paths: DatasetPaths) -> tuple:
    """(name, inode, mtime) of records.parquet and each top-level _derived entry (dot-names skipped).

    Part appends do not change it (a parts directory counts by inode, not mtime: a reader that missed
    a part appended meanwhile saw an earlier, whole state); promotion, compaction, creation, removal
    and base rewrites do."""
    out = []
    for p in [paths.records] + (sorted(paths.derived.iterdir()) if paths.derived.is_dir() else []):
        if p.name.startswith("."):
            continue
        try:
            st = p.stat()
            out.append((p.name, st.st_ino, None if stat.S_ISDIR(st.st_mode) else st.st_mtime_ns))
        except FileNotFoundError:
            out.append((p.name, None, None))
    return tuple(out)


def vanished(exc: BaseException) -> bool:
    while exc is not None:
        if isinstance(exc, FileNotFoundError) or "No such file or directory" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def consistent(paths: DatasetPaths, build):
    """Run `build()` until no writer replaced the base or an overlay's top-level file meanwhile.

    Readers take no lock: a file listed and then promoted, compacted away or replaced raises
    FileNotFoundError (retried), and a changed listing means the read may mix states (retried)."""
    for attempt in range(_ATTEMPTS):
        before = _listing(paths)
        try:
            result = build()
        except Exception as exc:
            # an error while a writer changed the listing (e.g. a parts directory emptied by a compaction
            # after it was listed) says nothing about the data: read again from the new listing
            if attempt + 1 == _ATTEMPTS or not (vanished(exc) or _listing(paths) != before):
                raise
            time.sleep(0.01 * (attempt + 1))
            continue
        if _listing(paths) == before or attempt + 1 == _ATTEMPTS:
            return result
        time.sleep(0.005 * (attempt + 1))
    raise AssertionError("unreachable")
