"""Parts already folded into a compact file (X2 crash recovery) and the removal of a parts directory.

A compact file beside a parts directory whose parts are all listed in its `usr:compacted_parts` is a
finished compaction whose parts await deletion: readers use the compact file (overlays.discovery), and
the next writer, compaction, removal or refresh deletes the parts (`finish_pending_compaction`).
"""
from __future__ import annotations

from pathlib import Path

from ..journal import Journal
from ..layout import DatasetPaths
from ..overlays.discovery import folded_by_compact, list_part_paths
from ..storage.atomic import crash_point


def finish_pending_compaction(paths: DatasetPaths, ns: str, journal: Journal) -> bool:
    """Delete parts already folded into the compact file (under the dataset lock)."""
    parts_dir = paths.parts_dir(ns)
    if not folded_by_compact(paths.compact_overlay(ns), list_part_paths(parts_dir)):
        return False
    delete_parts_dir(parts_dir, journal)
    return True


def delete_parts_dir(parts_dir: Path, journal: Journal) -> None:
    """Remove a parts directory: one rename to a hidden L9 name (readers ignore it; rollback renames it
    back), deleted after the commit.  A crash never leaves a readable subset of the parts; hidden
    leftovers of the namespace are swept after the commit too."""
    derived = parts_dir.parent
    if parts_dir.is_dir():
        journal.delete(parts_dir)
        crash_point("parts-delete:after-rename")
    for leftover in derived.glob(f".{parts_dir.name}.rollback-*"):
        journal.delete_after_commit(leftover)
