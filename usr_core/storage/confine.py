"""Confinement: USR writes, renames and deletes only real paths inside its root, never through a symbolic link.

Two guards, both raising UnsafePathError (exit 2) with the path and the fix:

- `check_dataset_tree(dir)` runs whenever the dataset lock (`<dataset>/.usr.lock`) is taken (storage/locks.py),
  so every mutation is covered before its first write: no entry of the dataset's layout (`records*.parquet`,
  `meta.md`, `.events.*`, `_registry`, `_snapshots`, `_derived` and each namespace folder, part, compact file
  and archived overlay below it, `.events.archive`) may be a symbolic link, whatever it points at.  A link
  elsewhere inside the root is refused too: snapshot pruning or compaction through it would delete another
  dataset's files.  `check_dataset_confined(paths)` adds the root check of the dataset directory itself (a
  dataset directory may be a link only to a place inside the root).
- `check_write_target(path)` runs in every atomic write primitive (storage/atomic.py): the target itself and
  each directory between it and its dataset directory (or root) must not be a link.  Paths outside any USR
  layout (an export to a user's file) are not restricted.

Readers are not restricted: reading through a link changes nothing on disk.
"""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from ..errors import UnsafePathError

# dataset-directory entries USR writes or deletes (L4, L9); other names (user files, `_views`) are left alone
_TOP_NAMES = {"meta.md", ".events.log", ".events.lock", ".usr.lock", "_registry", "_snapshots", "_derived",
              ".events.archive"}
_TOP_PATTERN = re.compile(r"^(?:records(?:\..+)?\.parquet(?:\.tmp)?|meta\.md\.tmp|\.events\..+\.log)$")
_SUBDIRS = ("_registry", "_snapshots", "_derived", ".events.archive")
_MARKERS = (".usr.lock", "records.parquet", "meta.md")  # a directory holding one of these is a dataset directory
_ROOT_MARKER = "registry.yaml"
_MAX_UP = 8  # dataset ids nest 1-2 levels (deeper ids open explicitly): a layout path is a few levels deep


def _refuse(path, what: str) -> UnsafePathError:
    return UnsafePathError(
        f"{path} is a symbolic link{what}; USR does not write, rename or delete through links "
        "(it could change or delete files outside the root).",
        path=path,
        hint=f"Replace the link with a real {'folder' if os.path.isdir(path) else 'file'} inside the root "
             f"(e.g. `mv` the target's content in place of {Path(path).name}), or remove the link; nothing was changed.")


def _is_link(path) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _link_target(path) -> str:
    try:
        return f" to {os.path.realpath(path)}"
    except OSError:
        return ""


def _entries(folder):
    try:
        with os.scandir(folder) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _check_folder(folder: Path, depth: int) -> None:
    """Every entry of `folder` (and of its subfolders, `depth` levels down) is a real file or folder."""
    for entry in _entries(folder):
        if entry.is_symlink():
            raise _refuse(entry.path, _link_target(entry.path))
        if depth > 0 and entry.is_dir(follow_symlinks=False):
            _check_folder(Path(entry.path), depth - 1)


def check_dataset_tree(dataset_dir) -> None:
    """Refuse (UnsafePathError) when any entry of the dataset layout under `dataset_dir` is a symbolic link.

    Cost: one scandir per layout folder (a few ms for thousands of parts).  Called under the dataset lock by
    `file_lock`, so it also holds for the whole mutation against other USR writers."""
    d = Path(dataset_dir)
    for entry in _entries(d):
        if entry.name in _TOP_NAMES or _TOP_PATTERN.match(entry.name):
            if entry.is_symlink():
                raise _refuse(entry.path, _link_target(entry.path))
    for sub in _SUBDIRS:
        # _derived/<ns>/part-*, _derived/_archived/<ns>/...: three levels cover the layout (L4)
        _check_folder(d / sub, 3 if sub == "_derived" else 1)


def check_dataset_confined(paths) -> None:
    """The transaction prologue's check for a DatasetPaths: the dataset directory resolves inside the root
    (it may itself be a link only to a place inside the root) and no layout entry is a link."""
    root, target = Path(paths.root).resolve(), Path(paths.dir).resolve()
    if not target.is_relative_to(root) or target == root:
        raise UnsafePathError(f"Dataset directory {paths.dir} resolves to {target}, outside the root {root}.",
                              path=paths.dir, hint="Remove the symbolic link; datasets must live inside the root.")
    check_dataset_tree(paths.dir)


def _is_layout_dir(d: Path) -> str | None:
    if any(os.path.lexists(d / m) for m in _MARKERS):
        return "dataset"
    if os.path.lexists(d / _ROOT_MARKER):
        return "root"
    return None


def _root_above(d: Path) -> Path | None:
    for up in list(d.parents)[:_MAX_UP]:
        if os.path.lexists(up / _ROOT_MARKER):
            return up
    return None


def check_write_target(path) -> None:
    """Refuse to write, replace or delete `path` through a symbolic link (see the module docstring)."""
    path = Path(os.path.abspath(path))
    chain, d, kind = [], path.parent, None
    for _ in range(_MAX_UP):  # find the dataset directory or root holding `path`
        kind = _is_layout_dir(d)
        if kind or d.parent == d:
            break
        chain.append(d)
        d = d.parent
    if kind is None:
        return  # not inside a USR layout (an export target): not ours to restrict
    if _is_link(path):
        raise _refuse(path, _link_target(path))
    for folder in chain:
        if _is_link(folder):
            raise _refuse(folder, _link_target(folder))
    if kind == "dataset" and _is_link(d):  # a dataset directory linked elsewhere inside the root is allowed
        root = _root_above(d)
        if root is None or not Path(os.path.realpath(d)).is_relative_to(os.path.realpath(root)):
            raise _refuse(d, _link_target(d) + " outside the root")
