"""Advisory flock locks (A3-A5): dataset lock, event lock, registry lock.

Locks are created if absent and never deleted.  flock is released by the kernel when the holder
dies, so a killed writer never blocks the next one.  The holder writes its pid into the lock file
so that a timeout can name it.

Taking the dataset lock (`<dataset>/.usr.lock`) also checks, under the lock, that no entry of the dataset's
layout is a symbolic link (storage/confine.py): every mutation holds that lock before its first write, so no
writer writes or deletes through a link, whatever its call site.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from pathlib import Path
from typing import Iterator

from ..errors import LockTimeoutError, SequencesError, UnsafePathError, environment_failure
from .confine import check_dataset_tree

DATASET_LOCK_NAME = ".usr.lock"


def _open_lock_file(path: Path) -> int:
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):
            raise UnsafePathError(
                f"Lock file {path} is a symbolic link; refusing to use it.", path=path,
                hint="Remove the link; USR recreates the lock file itself.",
            ) from exc
        failure = environment_failure(exc, f"Cannot open the lock file {path}")
        if failure is None:
            raise
        raise failure from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        raise SequencesError(
            f"Lock file {path} is not a regular file with one link.",
            hint="Remove it; USR recreates the lock file itself.",
        )
    return fd


def _holder_pid(fd: int) -> int | None:
    try:
        raw = os.pread(fd, 32, 0).decode("ascii", "ignore").strip()
        return int(raw) if raw else None
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def file_lock(path: Path, timeout: float | None = None, what: str = "lock") -> Iterator[None]:
    """Hold an exclusive flock on `path`; wait forever (timeout None) or raise LockTimeoutError."""
    path = Path(path)
    fd = _open_lock_file(path)
    try:
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        if deadline is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            delay = 0.005
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        pid = _holder_pid(fd)
                        holder = f" held by pid {pid}" if pid else ""
                        raise LockTimeoutError(
                            f"Timed out after {timeout:g}s waiting for the {what} {path}{holder}.",
                            path=path, holder_pid=pid,
                            hint="Wait for the other writer to finish, or raise the timeout.",
                        ) from None
                    time.sleep(delay)
                    delay = min(delay * 2, 0.1)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass
        try:
            if path.name == DATASET_LOCK_NAME:
                check_dataset_tree(path.parent)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
