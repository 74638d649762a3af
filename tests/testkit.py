"""Helpers shared by every test folder (importable as `testkit`: tests/ is on pytest's pythonpath)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"  # a copy of ../shared/fixtures
SHARED_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


def tree_digest(path, *, ignore_locks: bool = True) -> str:
    """sha256 over every entry below `path`: relative name, kind, file bytes / link target.

    Lock files (`*.lock`) are skipped by default: they are created on first use, never deleted,
    and hold the last holder's pid, so they are not data.
    """
    path = Path(path)
    h = hashlib.sha256()
    if not path.exists():
        return h.hexdigest()
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted(dirnames + filenames):
            p = base / name
            rel = p.relative_to(path).as_posix()
            if ignore_locks and name.endswith(".lock") and not p.is_dir():
                continue
            if p.is_symlink():
                h.update(f"L {rel} -> {os.readlink(p)}\n".encode())
            elif p.is_dir():
                h.update(f"D {rel}\n".encode())
            else:
                h.update(f"F {rel} {hashlib.sha256(p.read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


def private_tmpfs_works() -> bool:
    """Can a test mount a small tmpfs in a private mount namespace (`unshare -m`, root on Linux)?"""
    import shutil
    import subprocess
    import sys
    import tempfile

    if sys.platform != "linux" or shutil.which("unshare") is None:
        return False
    with tempfile.TemporaryDirectory() as d:
        res = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=16k tmpfs {d}"],
                             capture_output=True)
        return res.returncode == 0
