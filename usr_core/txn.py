"""The one write path: every mutation of a dataset runs as a `Transaction` opened by its `Writer`.

Prologue, once and in the contract's order: maintenance gate (X1), dataset exists, registry,
event pre-check (E6, E8: the event builds and the log is writable before anything changes), dataset
lock (A3), re-check, stale temp files of killed writers removed, pending compactions finished.
The operation then checks, writes through `txn.journal`, calls `txn.freeze()` (R14, after its own
checks) and names its event with `txn.event(...)`.  Commit appends the freeze event and the
operation's event in one write; any failure before that rolls every file back (journal.py), so a
failed mutation leaves the root byte-identical and a published change always has its event.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from . import events as ev
from . import read as rd
from .base import auto_freeze
from . import contract
from .contract import ts
from .errors import ClockError, SchemaError, SequencesError
from .journal import Journal, sweep
from .layout import DatasetPaths, dataset_paths
from .maintenance.pending import finish_pending_compaction
from .overlays.discovery import OverlaySource
from .registry.registry import Registry, RegistryCache
from .storage.atomic import crash_point
from .storage.locks import file_lock

_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_ONE_US = dt.timedelta(microseconds=1)


@dataclass
class Committed:
    """What a transaction wrote: the paths it published (the operation's main output first) and the
    events it appended."""

    events: list[str] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)


@dataclass
class _Event:
    action: str
    kw: dict


class Writer:
    """The write side of one dataset: paths, the dataset lock (re-entrant within one thread) and the
    maintenance gate.  Lives as long as its `Dataset`."""

    def __init__(self, root, name: str, lock_timeout: float | None = None):
        self.paths: DatasetPaths = dataset_paths(root, name)
        self.lock_timeout = lock_timeout
        self.gate: dict | None = None  # set inside `maintenance()`: {"reason": ...}
        self.gate_actor: dict | None = None
        self.registry_cache = RegistryCache(self.paths.root)  # lives as long as this writer
        self._depth = 0
        self._owner: int | None = None

    @property
    def root(self) -> Path:
        return self.paths.root

    @property
    def name(self) -> str:
        return self.paths.name

    def exists(self) -> bool:
        return self.paths.records.is_file()

    def require(self) -> None:
        """The dataset exists and its base footer reads (SequencesError / SchemaError otherwise)."""
        rd.base_schema(self.paths)

    def registry(self, required: bool = True) -> Registry | None:
        return self.registry_cache.load(required=required)

    def registry_hash(self) -> str | None:
        reg = self.registry(required=False)
        return self.registry_cache.hash(reg) if reg is not None else None

    # ---------------------------------------------------------------- lock and gate
    @contextlib.contextmanager
    def lock(self, timeout: float | None = None) -> Iterator[None]:
        """A3: the dataset write lock (re-used when this writer already holds it in this thread)."""
        if self._depth and self._owner == threading.get_ident():
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._check_inside_root()
        self.paths.dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self.paths.lock, timeout if timeout is not None else self.lock_timeout, what="dataset lock"):
            self._depth, self._owner = 1, threading.get_ident()
            try:
                yield
            finally:
                self._depth, self._owner = 0, None

    def _check_inside_root(self) -> None:
        root, target = self.root.resolve(), self.paths.dir.resolve()
        if not target.is_relative_to(root) or target == root:
            raise SequencesError(f"Dataset directory {self.paths.dir} resolves to {target}, outside the root {root}.",
                                 hint="Remove the symbolic link; datasets must live inside the root.")

    @contextlib.contextmanager
    def maintenance(self, reason: str = "", *, actor=None) -> Iterator[None]:
        """X1: the gate for maintenance-only operations."""
        prev = (self.gate, self.gate_actor)
        self.gate = {"reason": reason}
        self.gate_actor = ev.check_actor(actor) if actor is not None else None
        try:
            yield
        finally:
            self.gate, self.gate_actor = prev

    def require_gate(self, op: str) -> dict:
        if self.gate is None:
            raise SchemaError(f"{op} is a maintenance-only operation (X1).",
                              hint="Run it inside `with ds.maintenance(reason=...):` or via `usr maintenance`.")
        return self.gate

    # ---------------------------------------------------------------- events
    def event_defaults(self, maintenance, actor) -> tuple[dict | None, dict | None]:
        if maintenance is None and self.gate is not None:
            maintenance = self.gate
        if actor is None and self.gate_actor is not None:
            actor = self.gate_actor
        return maintenance, actor

    def log_event(self, action: str, *, registry_hash=False, **kw) -> None:
        """Append one event now (outside a transaction: the public `Dataset.log_event`)."""
        kw["maintenance"], kw["actor"] = self.event_defaults(kw.get("maintenance"), kw.get("actor"))
        h = self.registry_hash() if registry_hash is False else registry_hash
        ev.append_line(self.paths, ev.build_event(self.paths, action, registry_hash=h, **kw))

    def precheck_event(self, action: str, args=None, actor=None) -> None:
        """E6 (div) and E8: the event builds and the log accepts a line before anything is mutated."""
        ev.check_log_files(self.paths)
        _check_log_writable(self.paths)
        ev.build_event(self.paths, action, args=args, actor=actor, target_path=False)

    # ---------------------------------------------------------------- the transaction
    @contextlib.contextmanager
    def transaction(self, action: str, *, gate: str | None = None, args=None, actor=None, namespaces=(),
                    reg: Registry | None = None, exists: bool = True) -> Iterator["Transaction"]:
        """Open a transaction for `action`; see the module docstring for the prologue."""
        gate_info = self.require_gate(gate) if gate else None
        if exists:
            self.require()
        reg = reg if reg is not None else self.registry(required=True)
        self.precheck_event(action, args, actor)
        new_dir = not os.path.lexists(self.paths.dir)
        with self.lock():
            if exists:
                self.require()
            sweep(self._temp_folders())
            txn = Transaction(self, reg, gate_info, actor)
            try:
                for ns in namespaces:
                    txn.finish_pending_compaction(ns)
                yield txn
                txn.commit()
            except BaseException as exc:
                for failed in txn.rollback():
                    exc.add_note(f"Rollback could not restore a file: {failed}")
                if new_dir:
                    _remove_lock_only_dir(self.paths)
                raise

    def _temp_folders(self) -> list[Path]:
        p = self.paths
        folders = [p.dir, p.snapshots, p.derived, p.registry_dir, p.archived_overlays]
        if p.derived.is_dir():
            folders += [d for d in p.derived.iterdir() if d.is_dir() and not d.is_symlink()]
        return folders


class Transaction:
    """One mutation under the dataset lock: what it may use (paths, registry, journal) and what it
    commits (its files and its event, together)."""

    def __init__(self, writer: Writer, reg: Registry, gate: dict | None, actor):
        self.writer = writer
        self.paths = writer.paths
        self.registry = reg
        self.registry_hash = writer.registry_cache.hash(reg)
        self.gate = gate if gate is not None else writer.gate
        self.actor = actor
        self.journal = Journal()
        self.result = Committed()
        self._freeze_event: _Event | None = None
        self._event: _Event | None = None
        self._froze = False

    @property
    def reason(self) -> str | None:
        return (self.gate or {}).get("reason")

    # ---------------------------------------------------------------- steps
    def freeze(self) -> bool:
        """R14 (once per transaction): freeze file and base restamp, journaled; their event is queued."""
        if self._froze:
            return False
        self._froze = True
        args, changed = auto_freeze(self.paths, self.registry, journal=self.journal, registry_hash=self.registry_hash)
        if changed:
            self._freeze_event = _Event("registry_freeze", dict(
                args={"registry_hash": args["registry_hash"], "snapshot": args["snapshot"], "auto": True},
                metrics={"updated": int(args["restamped"])}, actor=self.actor, maintenance={}))
        return changed

    def finish_pending_compaction(self, ns: str) -> bool:
        return finish_pending_compaction(self.paths, ns, self.journal)

    def event(self, action: str, **kw) -> None:
        """The event committed with this change (kw as for events.build_event)."""
        kw.setdefault("actor", self.actor)
        self._event = _Event(action, kw)

    def wrote(self, path: Path) -> Path:
        self.result.written.append(Path(path))
        return path

    def overlay_stamp(self, src: OverlaySource | None) -> dt.datetime:
        """A created_at strictly after every file of the overlay `src` (its parts, or the compact file a
        part write promotes), so the order of writes is the order of stamps whatever the clock does:
        behind, frozen, or restarting in each process (the dataset lock serialises the writers)."""
        now = contract.utcnow()  # looked up at call time: tests patch the clock
        stamps = [_parse_ts(p.created_at) for p in (src.parts if src is not None else [])]
        newest = max((s for s in stamps if s is not None), default=None)
        if newest is None or now > newest:
            return now
        if newest >= dt.datetime.max.replace(tzinfo=dt.timezone.utc) - _ONE_US:
            raise ClockError(f"Overlay {src.namespace!r} holds a file dated {ts(newest)}; no later stamp exists.",
                             hint="Remove or re-stamp that file (usr validate lists stamps in the future).")
        return newest + _ONE_US

    # ---------------------------------------------------------------- outcome
    def commit(self) -> None:
        events = [e for e in (self._freeze_event, self._event) if e is not None]
        if events:
            lines = []
            for e in events:
                maintenance, actor = self.writer.event_defaults(e.kw.pop("maintenance", None), e.kw.pop("actor", None))
                lines.append(ev.build_event(self.paths, e.action, maintenance=maintenance, actor=actor,
                                            registry_hash=self.registry_hash, **e.kw))
            crash_point("txn:before-event")
            ev.append_line(self.paths, b"".join(lines))
            self.result.events = [e.action for e in events]
        self.journal.commit()
        seen = set(self.result.written)
        self.result.written += [p for p in self.journal.published if p not in seen and os.path.lexists(p)]

    def rollback(self) -> list[OSError]:
        return self.journal.rollback()


def _parse_ts(value: str | None) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(value or "", _TS_FORMAT).replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return None  # unparseable stamps are the reader's to refuse


def _remove_lock_only_dir(paths: DatasetPaths) -> None:
    """A failed init leaves no dataset folder: the one its lock created is removed if it holds only lock
    files (a writer of the same new name waiting on that lock then works in a folder it re-creates)."""
    with contextlib.suppress(OSError):
        entries = os.listdir(paths.dir)
        if all(name.endswith(".lock") for name in entries):
            for name in entries:
                os.unlink(paths.dir / name)
            os.rmdir(paths.dir)


def _check_log_writable(paths: DatasetPaths) -> None:
    """E8 before any change: an existing log must open for appending (a read-only log fails here)."""
    if not os.path.lexists(paths.events):
        return
    try:
        fd = os.open(paths.events, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise SequencesError(f"Cannot open event log {paths.events} for appending: {exc}",
                             hint="Make the event log writable (chmod u+w .events.log); nothing was changed.") from exc
    os.close(fd)
