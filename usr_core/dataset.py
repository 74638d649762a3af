"""`Dataset`: the thin facade over the contract's modules (spec §13 P2).

Every mutation is one function of a `Transaction` (usr_core/txn.py) in usr_core/ops/ or
usr_core/maintenance/; reads go to read.py and describe.py.  Methods here only forward.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from . import describe, read as rd, validate as vd
from .describe import DatasetInfo, Manifest, OverlayInfo  # noqa: F401 (public re-export)
from .errors import SequencesError
from .maintenance import compact, dedupe, export, freeze, garden, materialize, project, refresh, remove
from .maintenance import merge as merge_op
from .ops import attach, ingest, meta_note, part, snapshot, state, tombstone
from .records import AddSequencesResult
from .results import PartWritten
from .txn import Writer


class WriteSession:
    """P2 write_session(): the dataset lock held once for a batch of mutations."""

    def __init__(self, ds: "Dataset"):
        self.dataset = ds

    def init(self, **kw):
        return self.dataset.init(**kw)

    def init_if_missing(self, **kw) -> bool:
        if self.dataset.exists():
            return False
        self.dataset.init(**kw)
        return True

    def import_rows(self, rows, **kw):
        return self.dataset.import_rows(rows, **kw)

    def add_sequences(self, rows, **kw):
        return self.dataset.add_sequences(rows, **kw)

    def write_overlay(self, ns, table, **kw):
        return self.dataset.write_overlay(ns, table, **kw)

    def write_overlay_part(self, ns, table, **kw):
        return self.dataset.write_overlay_part(ns, table, **kw)


class Dataset:
    def __init__(self, root, name, *, lock_timeout: float | None = None):
        self.writer = Writer(root, name, lock_timeout)  # paths, lock, maintenance gate, transactions

    # ------------------------------------------------------------------ paths and opening
    @classmethod
    def open(cls, root, name_or_path, **kw) -> "Dataset":
        return cls(root, _name_from(Path(root), name_or_path), **kw)

    @property
    def root(self) -> Path:
        return self.writer.root

    @property
    def name(self) -> str:
        return self.writer.name

    @property
    def paths(self):
        return self.writer.paths

    @property
    def lock_timeout(self) -> float | None:
        return self.writer.lock_timeout

    @lock_timeout.setter
    def lock_timeout(self, seconds: float | None) -> None:
        self.writer.lock_timeout = seconds

    @property
    def dir(self) -> Path:
        return self.paths.dir

    @property
    def records_path(self) -> Path:
        return self.paths.records

    @property
    def snapshot_dir(self) -> Path:
        return self.paths.snapshots

    @property
    def meta_path(self) -> Path:
        return self.paths.meta

    @property
    def events_path(self) -> Path:
        return self.paths.events

    def exists(self) -> bool:
        return self.writer.exists()

    def __repr__(self) -> str:
        return f"Dataset(root={str(self.root)!r}, name={self.name!r})"

    # ------------------------------------------------------------------ locking, gate, events
    def lock(self, timeout: float | None = None):
        """A3: the dataset write lock (re-used when already held by this object in this thread)."""
        return self.writer.lock(timeout)

    @contextlib.contextmanager
    def write_session(self, timeout: float | None = None) -> Iterator[WriteSession]:
        with self.writer.lock(timeout):
            yield WriteSession(self)

    @contextlib.contextmanager
    def maintenance(self, reason: str = "", *, actor=None) -> Iterator["Dataset"]:
        """X1: the gate for maintenance-only operations."""
        with self.writer.maintenance(reason, actor=actor):
            yield self

    def log_event(self, action: str, *, args=None, metrics=None, artifacts=None, maintenance=None,
                  target_path=None, actor=None) -> None:
        self.writer.log_event(action, args=args, metrics=metrics, artifacts=artifacts, maintenance=maintenance,
                              target_path=target_path, actor=actor)

    # ------------------------------------------------------------------ init and ingest (S7-S9, L10)
    def init(self, source: str = "", notes: str = "", actor=None) -> None:
        ingest.init(self.writer, source, notes, actor)

    def import_rows(self, rows, default_bio_type: str = "dna", default_alphabet: str = "dna_4", source=None,
                    strict_id_check: bool = True, actor=None) -> int:
        return ingest.import_rows(self.writer, rows, default_bio_type, default_alphabet, source, strict_id_check, actor)

    def add_sequences(self, rows, *, bio_type: str, alphabet: str, source: str = "", created_at=None,
                      on_conflict: str = "error", actor=None) -> AddSequencesResult:
        return ingest.add_sequences(self.writer, rows, bio_type=bio_type, alphabet=alphabet, source=source,
                                    created_at=created_at, on_conflict=on_conflict, actor=actor)

    # ------------------------------------------------------------------ overlay writes (O5-O7)
    def attach(self, path, namespace, *, key="id", key_col=None, columns=None, allow_overwrite=False,
               allow_missing=False, parse_json=True, backend="pyarrow", note="", actor=None, event_args=None) -> int:
        """O5 compact attach from a file."""
        return attach.attach(self.writer, path, namespace, key=key, key_col=key_col, columns=columns,
                             allow_overwrite=allow_overwrite, allow_missing=allow_missing, parse_json=parse_json,
                             backend=backend, note=note, actor=actor, event_args=event_args)

    def write_overlay(self, ns, table, *, key="id", overwrite=False, allow_missing=False, actor=None) -> int:
        """O5 compact write from a table (schema must already conform)."""
        return attach.write_overlay(self.writer, ns, table, key=key, overwrite=overwrite,
                                    allow_missing=allow_missing, actor=actor)

    def write_part(self, namespace, table, *, key="id", key_col=None, allow_missing=False, actor=None,
                   event_args=None, extra_metadata=None) -> PartWritten:
        """O6; returns what was written (`extra_metadata`: more parquet key/values, not `usr:`)."""
        return part.write_part(self.writer, namespace, table, key=key, key_col=key_col, allow_missing=allow_missing,
                               actor=actor, event_args=event_args, extra_metadata=extra_metadata)

    def write_overlay_part(self, ns, table, *, key="id", key_col=None, allow_missing=False, actor=None,
                           event_args=None) -> int:
        """O6; returns the rows written."""
        return self.write_part(ns, table, key=key, key_col=key_col, allow_missing=allow_missing, actor=actor,
                               event_args=event_args).rows

    def create_overlay(self, ns, table, *, key="id", key_col=None, allow_missing=False, actor=None,
                       event_args=None) -> int:
        """O7: create-only part overlay."""
        return part.create_overlay(self.writer, ns, table, key=key, key_col=key_col, allow_missing=allow_missing,
                                   actor=actor, event_args=event_args)

    # ------------------------------------------------------------------ tombstones and state (U1-U5)
    def tombstone(self, ids, reason=None, deleted_at=None, allow_missing=False, actor=None) -> int:
        return tombstone.tombstone(self.writer, ids, reason, deleted_at, allow_missing, actor)

    def restore(self, ids, allow_missing=False, actor=None) -> int:
        return tombstone.restore(self.writer, ids, allow_missing, actor)

    def set_state(self, ids, masked=None, qc_status=None, split=None, supersedes=None, lineage=None,
                  allow_missing=False, actor=None) -> int:
        return state.set_state(self.writer, ids, masked, qc_status, split, supersedes, lineage, allow_missing, actor)

    def clear_state(self, ids, allow_missing=False, actor=None) -> int:
        return state.clear_state(self.writer, ids, allow_missing, actor)

    def get_state(self, ids, allow_missing=False) -> pa.Table:
        return state.get_state(self.writer, ids, allow_missing)

    # ------------------------------------------------------------------ reads
    def scan(self, *, columns=None, include_overlays=True, include_deleted=False,
             batch_size: int = 65536, memory_budget=None) -> rd.Scan:
        """Merged batches; memory bounded by `memory_budget` (bytes or e.g. '512MB'; default
        $USR_MEMORY_BUDGET or 1 GiB); base order always (over budget, key ranges are joined one at a time)."""
        self.writer.require()
        return rd.scan(self.paths, columns=columns, include_overlays=include_overlays,
                       include_deleted=include_deleted, batch_size=batch_size, memory_budget=memory_budget)

    def read_table(self, *, columns=None, include_overlays=True, include_deleted=False, memory_budget=None) -> pa.Table:
        """The merged view as one table; the join stays within `memory_budget` (see `scan`)."""
        self.writer.require()
        return rd.read_table(self.paths, columns=columns, include_overlays=include_overlays,
                             include_deleted=include_deleted, memory_budget=memory_budget)

    def head(self, n: int = 10, columns=None, *, include_derived=True, include_deleted=False) -> pa.Table:
        self.writer.require()
        return rd.head(self.paths, n, columns=columns, include_overlays=include_derived,
                       include_deleted=include_deleted)

    def get(self, id, columns=None, *, include_deleted=False) -> pa.Table:
        self.writer.require()
        return rd.get_rows(self.paths, [str(id).strip()], columns=columns, include_deleted=include_deleted)

    def grep(self, pattern: str, limit: int = 20, *, include_deleted=False) -> pa.Table:
        self.writer.require()
        return describe.grep(self.paths, pattern, limit, include_deleted=include_deleted)

    def schema(self) -> pa.Schema:
        self.writer.require()
        return rd.output_schema(self.paths)

    def list_overlays(self) -> list[OverlayInfo]:
        self.writer.require()
        return describe.list_overlays(self.paths)

    def info(self) -> DatasetInfo:
        self.writer.require()
        return describe.info(self.paths)

    def manifest(self, include_events: bool = False) -> Manifest:
        self.writer.require()
        return describe.manifest(self.paths, include_events)

    def append_meta_note(self, title: str, code_block: str | None = None) -> None:
        meta_note.append_meta_note(self.writer, title, code_block)

    # ------------------------------------------------------------------ maintenance (spec §6, §10)
    def snapshot(self, actor=None) -> Path:
        return snapshot.snapshot(self.writer, actor)

    def freeze_registry(self) -> Path:
        return freeze.freeze_registry(self.writer)

    def compact_overlay(self, namespace: str, memory_budget=None) -> Path:
        return compact.compact_overlay(self.writer, namespace, memory_budget)  # budget: as for scan()

    def remove_overlay(self, namespace: str, mode: str = "error") -> dict:
        return remove.remove_overlay(self.writer, namespace, mode)

    def refresh_overlay_metadata(self, namespace: str) -> dict:
        return refresh.refresh_overlay_metadata(self.writer, namespace)

    def materialize(self, namespaces=None, keep_overlays=True, archive_overlays=False, drop_deleted=False):
        return materialize.materialize(self.writer, namespaces, keep_overlays, archive_overlays, drop_deleted)

    def dedupe(self, key: str, keep: str = "keep-first", batch_size: int = 65536, dry_run: bool = False):
        return dedupe.dedupe(self.writer, key, keep, batch_size, dry_run)

    def export(self, fmt: str, out_path, columns=None, include_deleted: bool = False):
        return export.export(self, fmt, out_path, columns=columns, include_deleted=include_deleted)

    def validate(self, strict: bool = False, registry_mode: str = "current"):
        return vd.validate(self, strict=strict, registry_mode=registry_mode)

    def garden_event_log(self, retain_last: int = 1000, write: bool = False, acknowledge_cursor_reset: bool = False,
                         reason: str = "", skip_invalid: bool = False):
        return garden.garden_event_log(self, retain_last=retain_last, write=write, reason=reason,
                                       acknowledge_cursor_reset=acknowledge_cursor_reset, skip_invalid=skip_invalid)

    def project_overlay(self, src: "Dataset | str", namespace: str, **kw):
        src = src if isinstance(src, Dataset) else Dataset(self.root, src)
        return project.project_overlay(src, self, namespace, **kw)


def merge(root, dest, src, **kw):
    """X9: merge dataset `src` into `dest` under `root` (names or Datasets)."""
    dest = dest if isinstance(dest, Dataset) else Dataset(root, dest)
    src = src if isinstance(src, Dataset) else Dataset(root, src)
    return merge_op.merge(dest.writer, src.writer, **kw)


def _name_from(root: Path, name_or_path) -> str:
    """A dataset id, or the id of the dataset folder (or its records.parquet) inside `root` (L10)."""
    cand = Path(str(name_or_path))
    if cand.name == "records.parquet":
        cand = cand.parent
    if not (cand.is_dir() and (cand / "meta.md").is_file()):
        return str(name_or_path)
    try:
        rel = cand.resolve().relative_to(root.resolve())
    except ValueError:
        raise SequencesError(f"{cand} is not inside the root {root}.",
                             hint="Pass the root that holds the dataset as `root`.",
                             cli_hint="Pass --root pointing at the datasets root.") from None
    first = (cand / "meta.md").read_text(encoding="utf-8").splitlines()[:1]
    name = rel.as_posix()
    if not first or first[0].strip() != f"name: {name}":
        raise SequencesError(f"{cand}/meta.md does not name dataset {name!r} (L10).",
                             hint="Open the dataset by its id instead.")
    return name
