"""X3/X6 archives: `_derived/_archived/<ns>-<STAMP>[.parquet]`, only the newest kept per namespace."""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..contract import stamp
from ..journal import Journal
from ..layout import DatasetPaths


def archive_target(paths: DatasetPaths, ns: str, is_file: bool) -> Path:
    """A fresh name, never an existing one."""
    while True:
        target = paths.archived_overlays / f"{ns}-{stamp()}{'.parquet' if is_file else ''}"
        if not os.path.lexists(target):
            return target


def archive(paths: DatasetPaths, ns: str, src_path: Path, is_file: bool, journal: Journal) -> Path:
    target = archive_target(paths, ns, is_file)
    journal.rename(src_path, target)
    return target


def prune_archives(paths: DatasetPaths, ns: str, keep: Path, journal: Journal) -> None:
    """X3: keep only the newest archive of `ns` (the one just written); the others go at commit."""
    pattern = re.compile(rf"^{re.escape(ns)}-\d{{8}}T\d{{12}}Z(\.parquet)?$")
    for p in paths.archived_overlays.iterdir():
        if p != keep and pattern.match(p.name):
            journal.delete(p)
