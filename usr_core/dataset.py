"""`Dataset`: the thin facade over the contract's modules (spec §13 P2)."""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import events as ev
from . import read as rd
from .base import auto_freeze, base_metadata, check_essentials, m1_metadata, rewrite_base, write_base_table
from .contract import (ARROW_SCHEMA, META_DATASET_CREATED_AT, META_OVERLAY_CREATED_AT, META_REGISTRY_HASH, STATE_NS, TOMBSTONE_NS, ts)
from .errors import SchemaError, SequencesError
from .layout import DatasetPaths, dataset_paths, normalize_dataset_id
from .overlays import write as ow
from .overlays.discovery import discover_overlays, file_metadata, find_overlay
from .overlays.encoding import overlay_metadata
from .overlays.inputs import read_input
from .maintenance.compact import finish_pending_compaction
from .overlays.keys import check_key_name
from .records import AddSequencesResult, NewRows, validate_rows
from .results import PartWritten
from .registry.registry import hash_registry, load_registry, namespace_contract_hash
from .storage.atomic import write_text
from .storage.locks import file_lock
from . import tombstones as tb


@dataclass
class DatasetInfo:
    name: str
    path: str
    rows: int
    columns: list[str]
    namespaces: list[str]


@dataclass
class OverlayInfo:
    namespace: str
    key: str | None
    created_at: str | None
    path: str
    columns: list[str]
    fingerprint: dict


@dataclass
class Manifest:
    name: str
    path: str
    metadata: dict
    fingerprint: dict
    overlays: list[OverlayInfo]
    snapshots: list[str]
    events: dict


class WriteSession:
    """P2 write_session(): the dataset lock held once for a batch of mutations."""

    def __init__(self, ds: "Dataset"):
        self._ds = ds

    def init(self, **kw):
        return self._ds.init(**kw)

    def init_if_missing(self, **kw) -> bool:
        if self._ds.exists():
            return False
        self._ds.init(**kw)
        return True

    def import_rows(self, rows, **kw):
        return self._ds.import_rows(rows, **kw)

    def add_sequences(self, rows, **kw):
        return self._ds.add_sequences(rows, **kw)

    def write_overlay(self, ns, table, **kw):
        return self._ds.write_overlay(ns, table, **kw)

    def write_overlay_part(self, ns, table, **kw):
        return self._ds.write_overlay_part(ns, table, **kw)


class Dataset:
    def __init__(self, root, name, *, lock_timeout: float | None = None):
        self.root = Path(root)
        self.name = normalize_dataset_id(name)
        self.paths: DatasetPaths = dataset_paths(self.root, self.name)
        self.lock_timeout = lock_timeout
        self._locked = 0
        self._lock_owner: int | None = None  # thread holding the lock: re-entry is per thread only
        self._maintenance: dict | None = None
        self.last_part_path: Path | None = None  # the part written by this object's last part write
        self._maintenance_actor = None

    # ------------------------------------------------------------------ paths and opening
    @classmethod
    def open(cls, root, name_or_path, **kw) -> "Dataset":
        root = Path(root)
        cand = Path(str(name_or_path))
        if cand.name == "records.parquet":
            cand = cand.parent
        if cand.is_dir() and (cand / "meta.md").is_file():
            try:
                rel = cand.resolve().relative_to(root.resolve())
            except ValueError:
                raise SequencesError(f"{cand} is not inside the root {root}.",
                                     hint="Pass --root pointing at the datasets root.") from None
            first = (cand / "meta.md").read_text(encoding="utf-8").splitlines()[:1]
            name = rel.as_posix()
            if not first or first[0].strip() != f"name: {name}":
                raise SequencesError(f"{cand}/meta.md does not name dataset {name!r} (L10).",
                                     hint="Open the dataset by its id instead.")
            return cls(root, name, **kw)
        return cls(root, str(name_or_path), **kw)

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
        return self.paths.records.is_file()

    def __repr__(self) -> str:
        return f"Dataset(root={str(self.root)!r}, name={self.name!r})"

    def _require(self) -> None:
        rd.base_schema(self.paths)  # not initialized → SequencesError; unreadable footer → SchemaError

    # ------------------------------------------------------------------ locking, freeze, events
    @contextlib.contextmanager
    def lock(self, timeout: float | None = None) -> Iterator[None]:
        """A3: the dataset write lock (re-used when already held by this object in this thread)."""
        if self._locked and self._lock_owner == threading.get_ident():
            self._locked += 1
            try:
                yield
            finally:
                self._locked -= 1
            return
        self._check_inside_root()
        self.paths.dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self.paths.lock, timeout if timeout is not None else self.lock_timeout, what="dataset lock"):
            self._locked, self._lock_owner = 1, threading.get_ident()
            try:
                yield
            finally:
                self._locked, self._lock_owner = 0, None

    def _check_inside_root(self) -> None:
        root, target = self.root.resolve(), self.paths.dir.resolve()
        if not target.is_relative_to(root) or target == root:
            raise SequencesError(f"Dataset directory {self.paths.dir} resolves to {target}, outside the root {root}.",
                                 hint="Remove the symbolic link; datasets must live inside the root.")

    @contextlib.contextmanager
    def write_session(self, timeout: float | None = None) -> Iterator[WriteSession]:
        with self.lock(timeout):
            yield WriteSession(self)

    @contextlib.contextmanager
    def maintenance(self, reason: str = "", *, actor=None) -> Iterator["Dataset"]:
        """X1: the gate for maintenance-only operations."""
        prev = (self._maintenance, self._maintenance_actor)
        self._maintenance = {"reason": reason}
        self._maintenance_actor = ev.check_actor(actor) if actor is not None else None
        try:
            yield self
        finally:
            self._maintenance, self._maintenance_actor = prev

    def _require_gate(self, op: str) -> dict:
        if self._maintenance is None:
            raise SchemaError(f"{op} is a maintenance-only operation (X1).",
                              hint="Run it inside `with ds.maintenance(reason=...):` or via `usr maintenance`.")
        return self._maintenance

    def _registry(self, required: bool = True):
        return load_registry(self.root, required=required)

    def _hash(self) -> str | None:
        reg = self._registry(required=False)
        return hash_registry(reg) if reg is not None else None

    def log_event(self, action: str, *, args=None, metrics=None, artifacts=None, maintenance=None,
                  target_path=None, actor=None) -> None:
        if maintenance is None and self._maintenance is not None:
            maintenance = self._maintenance
        if actor is None and self._maintenance_actor is not None:
            actor = self._maintenance_actor
        line = ev.build_event(self.paths, action, args=args, metrics=metrics, artifacts=artifacts,
                              maintenance=maintenance, target_path=target_path, actor=actor,
                              registry_hash=self._hash())
        ev.append_line(self.paths, line)

    def _precheck_event(self, action: str, args=None, actor=None) -> None:
        """E6 (div): build the event before mutating so size/serialisation errors change nothing."""
        ev.check_log_files(self.paths)
        ev.build_event(self.paths, action, args=args, actor=actor, target_path=False)

    def _freeze(self, reg=None, actor=None) -> None:
        """R14 inside the lock; logs `registry_freeze` when something changed."""
        args, changed = auto_freeze(self.paths, reg)
        if changed:
            self.log_event("registry_freeze", args={"registry_hash": args["registry_hash"],
                                                    "snapshot": args["snapshot"], "auto": True},
                           metrics={"updated": int(args["restamped"])}, actor=actor, maintenance={})

    # ------------------------------------------------------------------ init and ingest
    def init(self, source: str = "", notes: str = "", actor=None) -> None:
        reg = self._registry(required=True)
        self._precheck_event("init", {"source": source}, actor)
        with self.lock():
            if self.exists():
                raise SequencesError(f"Dataset {self.name!r} already exists.", hint="Pick another name.")
            created = ts()
            text = (f"name: {self.name}\ncreated_at: {created}\nsource: {source}\nnotes: {notes}\n"
                    f"schema: USR v1\n\n### Updates ({created[:10]})\n- {created}: initialized dataset.\n")
            write_text(self.paths.meta, text, label="meta")  # before records.parquet, the existence marker
            meta = m1_metadata({META_DATASET_CREATED_AT: created}, hash_registry(reg))
            write_base_table(self.paths, ARROW_SCHEMA.empty_table(), meta, label="init")
            self._freeze(reg, actor)
            self.log_event("init", args={"source": source}, metrics={"rows": 0}, actor=actor)

    def _append_rows(self, new: Callable[[], Iterator[pa.Table]], before_publish=None) -> None:
        """S9: existing rows in order + the new S1 tables; extra materialized columns get NULL."""
        pf = pq.ParquetFile(self.paths.records)
        schema = pf.schema_arrow
        check_essentials(schema, self.paths.records)
        meta = m1_metadata(file_metadata(schema), self._hash())
        out_schema = schema.remove_metadata()

        def batches():
            yield from pf.iter_batches(65536)
            for t in new():
                yield pa.Table.from_arrays([t[f.name] if f.name in t.column_names else pa.nulls(t.num_rows, f.type)
                                            for f in out_schema], schema=out_schema)

        rewrite_base(self.paths, out_schema, batches, meta, label="append", before_publish=before_publish)

    def _ingest(self, new: NewRows, reg, on_conflict: str, args: dict, actor, *, write_empty: bool) -> int:
        """S7-S9 and R14 under the lock; returns rows written.  When R14 will not restamp the base, the new
        rows are encoded while their ids are still being hashed, and the id checks and the freeze run before
        that file is published (a failed check removes it)."""
        self._require()
        if new.num_rows and base_metadata(self.paths).get(META_REGISTRY_HASH) == hash_registry(reg):
            def checked():
                if new.kept(self.paths, on_conflict) is not None:
                    raise _SkipRows()
                self._freeze(reg, actor)
            try:
                self._append_rows(new.chunks, before_publish=checked)
                return self._ingested(new.num_rows, new.num_rows, args, actor)
            except _SkipRows:
                pass  # on_conflict="ignore" and some ids exist: rewrite without them
        keep = new.kept(self.paths, on_conflict)
        table = new.table() if keep is None else new.table().filter(keep)
        if not table.num_rows and not write_empty:
            return 0
        check_essentials(pq.read_schema(self.paths.records), self.paths.records)  # S9 before R14
        self._freeze(reg, actor)
        if table.num_rows:
            self._append_rows(lambda: iter([table]))
        return self._ingested(table.num_rows, new.num_rows, args, actor)

    def _ingested(self, written: int, total: int, args: dict, actor) -> int:
        self.log_event("import_rows", args=args, metrics={"rows_written": written, "rows_skipped": total - written},
                       actor=actor)
        return written

    def import_rows(self, rows, default_bio_type: str = "dna", default_alphabet: str = "dna_4", source=None,
                    strict_id_check: bool = True, actor=None) -> int:
        reg = self._registry(required=True)
        self._require()
        with validate_rows(rows, bio_type=default_bio_type, alphabet=default_alphabet, source=source,
                           strict_id_check=strict_id_check) as new:
            args = {"n": new.num_rows, "source_param": source, "on_conflict": "error"}
            self._precheck_event("import_rows", args, actor)
            with self.lock():
                return self._ingest(new, reg, "error", args, actor, write_empty=True)

    def add_sequences(self, rows, *, bio_type: str, alphabet: str, source: str = "", created_at=None,
                      on_conflict: str = "error", actor=None) -> AddSequencesResult:
        if on_conflict not in ("error", "ignore"):
            raise SchemaError(f"Unknown on_conflict {on_conflict!r}.", hint="Use 'error' or 'ignore'.")
        reg = self._registry(required=True)
        self._require()
        with validate_rows(rows, bio_type=bio_type, alphabet=alphabet, source=source, created_at=created_at) as new:
            args = {"n": new.num_rows, "source_param": source, "on_conflict": on_conflict}
            self._precheck_event("import_rows", args, actor)
            with self.lock():
                added = self._ingest(new, reg, on_conflict, args, actor, write_empty=False)
        return AddSequencesResult(added, new.num_rows - added, new.ids())

    # ------------------------------------------------------------------ overlay writes
    def _overlay_preconditions(self, namespace: str, key: str) -> None:
        self._require()
        ow.check_writable_namespace(namespace)
        check_key_name(key)

    def _require_no_parts(self, ns: str) -> None:
        """O5: compact writes need no parts dir (parts already folded by a finished compaction don't count)."""
        src = rd.consistent(self.paths, lambda: find_overlay(self.paths, ns))  # pre-lock calls race compactions
        if src is not None and src.kind == "parts":
            raise SchemaError(f"Overlay parts already exist for {ns!r}; compact first (O5).",
                              hint=f"Run `usr maintenance overlay-compact {self.name} --namespace {ns}`.")

    def attach(self, path, namespace, *, key="id", key_col=None, columns=None, allow_overwrite=False,
               allow_missing=False, parse_json=True, backend="pyarrow", note="", actor=None, event_args=None) -> int:
        """O5 compact attach from a file."""
        if backend not in ("pyarrow", "duckdb"):
            raise SchemaError(f"Unknown backend {backend!r}.", hint="Use 'pyarrow' or 'duckdb'.")
        self._overlay_preconditions(namespace, key)
        self._require_no_parts(namespace)
        reg = self._registry(required=True)
        ow.registered_types(reg, namespace)
        extra = ow.check_event_args(event_args, ow.ATTACH_ARG_KEYS)
        raw = read_input(path, key_col or ("sequence" if key != "id" else key))
        table = ow.prepare_attach_table(namespace, raw, key=key, key_col=key_col, columns=columns, reg=reg,
                                        coerce=True, parse_json=parse_json)
        return self._compact_write(namespace, table, key, reg, allow_overwrite, allow_missing, note, actor, extra)

    def write_overlay(self, ns, table, *, key="id", overwrite=False, allow_missing=False, actor=None) -> int:
        """O5 compact write from a table (schema must already conform)."""
        self._overlay_preconditions(ns, key)
        self._require_no_parts(ns)
        reg = self._registry(required=True)
        ow.registered_types(reg, ns)
        from .records import to_table

        table = ow.prepare_attach_table(ns, to_table(table), key=key, key_col=key, columns=None, reg=reg,
                                        coerce=False, parse_json=False)
        return self._compact_write(ns, table, key, reg, overwrite, allow_missing, "", actor, {})

    def _compact_write(self, ns, table, key, reg, allow_overwrite, allow_missing, note, actor, extra) -> int:
        if table.num_columns < 2:
            return 0
        args = {"namespace": ns, "key": key, "rows_incoming": table.num_rows, "rows_matched": table.num_rows,
                "rows_missing": 0, "allow_overwrite": allow_overwrite, "note": note, **extra}
        self._precheck_event("attach", args, actor)
        with self.lock():
            self._require()
            finish_pending_compaction(self.paths, ns)
            self._require_no_parts(ns)
            written, missing, _total = ow.write_compact(self, ns, table, key=key, reg=reg,
                                                        allow_overwrite=allow_overwrite, allow_missing=allow_missing)
            self._freeze(reg, actor)
            args.update(rows_matched=written, rows_missing=missing)
            self.log_event("attach", args=args, metrics={"rows_incoming": table.num_rows, "rows_matched": written,
                                                         "rows_missing": missing},
                           artifacts={"overlay": {"namespace": ns, "key": key}},
                           target_path=self.paths.compact_overlay(ns), actor=actor)
        return written

    def write_overlay_part(self, ns, table, *, key="id", key_col=None, allow_missing=False, actor=None,
                           event_args=None) -> int:
        """O6; returns the rows written."""
        return self.write_part(ns, table, key=key, key_col=key_col, allow_missing=allow_missing, actor=actor,
                               event_args=event_args).rows

    def write_part(self, namespace, table, *, key="id", key_col=None, allow_missing=False, actor=None,
                   event_args=None, extra_metadata=None) -> PartWritten:
        """O6; returns what was written (`extra_metadata`: more parquet key/values, not `usr:`)."""
        return self._part_write(namespace, table, key=key, key_col=key_col, allow_missing=allow_missing,
                                actor=actor, event_args=event_args, create=False, extra_metadata=extra_metadata)

    def create_overlay(self, ns, table, *, key="id", key_col=None, allow_missing=False, actor=None,
                       event_args=None) -> int:
        """O7: create-only part overlay."""
        return self._part_write(ns, table, key=key, key_col=key_col, allow_missing=allow_missing, actor=actor,
                                event_args=event_args, create=True).rows

    def _part_write(self, ns, table, *, key, key_col, allow_missing, actor, event_args, create,
                    extra_metadata=None) -> PartWritten:
        from .records import to_table

        self._overlay_preconditions(ns, key)
        extra_meta = ow.check_extra_metadata(extra_metadata)
        if create:
            self._check_create_target(ns)
        reg = self._registry(required=True)
        extra = ow.check_event_args(event_args, ow.PART_ARG_KEYS)
        table = ow.prepare_part_table(ns, to_table(table), key=key, key_col=key_col, reg=reg)
        cols = table.column_names[1:]
        args = {"namespace": ns, "key": key, "columns": cols, "rows_incoming": table.num_rows,
                "rows_matched": table.num_rows, "rows_written": table.num_rows, "rows_missing": 0,
                "allow_missing": allow_missing, **extra}
        self._precheck_event("write_overlay_part", args, actor)
        with self.lock():
            self._require()
            if create:
                self._check_create_target(ns)
            else:  # under the lock: a compaction or promotion cannot change the listing meanwhile
                find_overlay(self.paths, ns)  # L7
                ow.check_part_key(self, ns, key)
            incoming = table.num_rows
            meta = {**extra_meta, **overlay_metadata(ns, key, ts(), hash_registry(reg), namespace_contract_hash(reg, ns))}
            if create:
                table, missing, encoded = *ow.match_base(self, table, key, allow_missing), None
            else:
                table, missing, encoded = ow.match_and_encode(self, table, key, allow_missing, meta)
            if table.num_rows == 0:
                return PartWritten(ns, None, 0, None, missing, extra_meta)
            self._freeze(reg, actor)
            args.update(rows_matched=table.num_rows, rows_written=table.num_rows, rows_missing=missing)
            metrics = {"rows_incoming": incoming, "rows_written": table.num_rows, "rows_missing": missing}
            artifacts = {"overlay": {"namespace": ns, "key": key}}
            if create:
                staging = ow.stage_create(self, ns, table, meta)
                target = self.paths.parts_dir(ns)
                ow.publish_noreplace(staging, target)
                part = next(iter(ow.list_part_paths(target)))
                self.last_part_path = part
                try:
                    self.log_event("write_overlay_part", args=args, metrics=metrics, artifacts=artifacts,
                                   target_path=part, actor=actor)
                except BaseException:
                    import shutil

                    shutil.rmtree(target, ignore_errors=True)
                    raise
                return PartWritten(ns, part, table.num_rows, meta[META_OVERLAY_CREATED_AT], missing, extra_meta)
            finish_pending_compaction(self.paths, ns)
            ow.promote_compact(self, ns)
            part = ow.write_part_file(self.paths.parts_dir(ns), table, meta, encoded)
            self.last_part_path = part
            ow.update_digest_ledger(self.paths.parts_dir(ns), [part])
            self.log_event("write_overlay_part", args=args, metrics=metrics, artifacts=artifacts,
                           target_path=part, actor=actor)
        return PartWritten(ns, part, table.num_rows, meta[META_OVERLAY_CREATED_AT], missing, extra_meta)

    def _check_create_target(self, ns: str) -> None:
        for p in (self.paths.parts_dir(ns), self.paths.compact_overlay(ns)):
            if p.exists() or p.is_symlink():
                raise FileExistsError(f"Overlay {ns!r} already exists at {p} (O7 create-only).")

    # ------------------------------------------------------------------ tombstones and state
    def _reserved_upsert(self, ns: str, table: pa.Table, action: str, args: dict, actor) -> int:
        reg = self._registry(required=True)
        self._precheck_event(action, args, actor)
        with self.lock():
            self._require()
            self._freeze(reg, actor)
            written, _missing, _total = ow.write_compact(self, ns, table, key="id", reg=reg, allow_overwrite=True,
                                                         allow_missing=True)
            self.log_event(action, args=args, metrics={"rows": written}, actor=actor)
        return written

    def tombstone(self, ids, reason=None, deleted_at=None, allow_missing=False, actor=None) -> int:
        self._require()
        ids = tb.check_ids_exist(self.paths, tb.clean_ids(ids), allow_missing)
        table = tb.tombstone_table(ids, True, deleted_at, reason)
        args = {"rows": len(ids), "reason": reason, "allow_missing": allow_missing}
        return self._reserved_upsert(TOMBSTONE_NS, table, "tombstone", args, actor) if ids else 0

    def restore(self, ids, allow_missing=False, actor=None) -> int:
        self._require()
        ids = tb.check_ids_exist(self.paths, tb.clean_ids(ids), allow_missing)
        table = tb.tombstone_table(ids, False, None, None)
        args = {"rows": len(ids), "allow_missing": allow_missing}
        return self._reserved_upsert(TOMBSTONE_NS, table, "restore", args, actor) if ids else 0

    def set_state(self, ids, masked=None, qc_status=None, split=None, supersedes=None, lineage=None,
                  allow_missing=False, actor=None) -> int:
        self._require()
        vals = tb.state_values(masked, qc_status, split, supersedes, lineage)
        ids = tb.check_ids_exist(self.paths, tb.clean_ids(ids), allow_missing)
        args = {"rows": len(ids), "masked": masked, "qc_status": vals.get("usr_state__qc_status"),
                "split": vals.get("usr_state__split"), "supersedes": vals.get("usr_state__supersedes"),
                "lineage_count": len(vals.get("usr_state__lineage") or []), "allow_missing": allow_missing}
        return self._reserved_upsert(STATE_NS, tb.state_table(ids, vals), "state_set", args, actor) if ids else 0

    def clear_state(self, ids, allow_missing=False, actor=None) -> int:
        self._require()
        ids = tb.check_ids_exist(self.paths, tb.clean_ids(ids), allow_missing)
        args = {"rows": len(ids), "allow_missing": allow_missing}
        table = tb.state_table(ids, tb.clear_values())
        return self._reserved_upsert(STATE_NS, table, "state_clear", args, actor) if ids else 0

    def get_state(self, ids, allow_missing=False) -> pa.Table:
        self._require()
        ids = tb.clean_ids(ids)
        tb.check_ids_exist(self.paths, ids, allow_missing)
        only_state = [STATE_NS]  # other overlays need not conform to read the state
        names = [c for c in rd.output_schema(self.paths, include_overlays=only_state).names
                 if c.startswith("usr_state__")]
        merged = rd.get_rows(self.paths, ids, columns=["id"] + names, include_deleted=True,
                             include_overlays=only_state)
        return tb.state_result(ids, merged)

    # ------------------------------------------------------------------ reads
    def scan(self, *, columns=None, include_overlays=True, include_deleted=False,
             batch_size: int = 65536) -> Iterator[pa.RecordBatch]:
        self._require()
        return rd.scan(self.paths, columns=columns, include_overlays=include_overlays,
                       include_deleted=include_deleted, batch_size=batch_size)

    def read_table(self, *, columns=None, include_overlays=True, include_deleted=False) -> pa.Table:
        self._require()
        return rd.read_table(self.paths, columns=columns, include_overlays=include_overlays,
                             include_deleted=include_deleted)

    def head(self, n: int = 10, columns=None, *, include_derived=True, include_deleted=False) -> pa.Table:
        self._require()
        return rd.head(self.paths, n, columns=columns, include_overlays=include_derived,
                       include_deleted=include_deleted)

    def get(self, id, columns=None, *, include_deleted=False) -> pa.Table:
        self._require()
        return rd.get_rows(self.paths, [str(id).strip()], columns=columns, include_deleted=include_deleted)

    def grep(self, pattern: str, limit: int = 20, *, include_deleted=False) -> pa.Table:
        self._require()
        out, got = [], 0
        for batch in rd.scan(self.paths, columns=["id", "sequence", "length"], include_overlays=False,
                             include_deleted=include_deleted):
            t = pa.Table.from_batches([batch])
            t = t.filter(pc.match_substring_regex(t["sequence"], pattern, ignore_case=True))
            out.append(t)
            got += t.num_rows
            if got >= limit:
                break
        if not out:
            return pa.table({"id": pa.array([], pa.string()), "sequence": pa.array([], pa.string()),
                             "length": pa.array([], pa.int32())})
        return pa.concat_tables(out).slice(0, limit)

    def schema(self) -> pa.Schema:
        self._require()
        return rd.output_schema(self.paths)

    def list_overlays(self) -> list[OverlayInfo]:
        self._require()
        return rd.consistent(self.paths, self._list_overlays)

    def _list_overlays(self) -> list[OverlayInfo]:
        out = []
        for src in discover_overlays(self.paths):
            target = src.path if src.kind == "compact" else src.parts[-1].path
            out.append(OverlayInfo(src.namespace, src.key, src.created_at, str(src.path), src.data_columns(),
                                   ev.fingerprint(target)))
        return out

    def info(self) -> DatasetInfo:
        self._require()
        def build() -> DatasetInfo:
            rows = pq.ParquetFile(self.paths.records).metadata.num_rows
            cols = list(rd.output_schema(self.paths, include_deleted=True).names)
            nss = [s.namespace for s in discover_overlays(self.paths)]
            return DatasetInfo(self.name, str(self.paths.records), rows, cols, nss)

        return rd.consistent(self.paths, build)

    def manifest(self, include_events: bool = False) -> Manifest:
        self._require()
        events = {"count": len(ev.read_events(self.paths))}
        if include_events:
            events["events"] = ev.read_events(self.paths)
        snaps = sorted(p.name for p in self.paths.snapshots.glob("records-*.parquet"))
        return rd.consistent(self.paths, lambda: Manifest(
            self.name, str(self.dir), base_metadata(self.paths), ev.fingerprint(self.paths.records),
            self._list_overlays(), snaps, events))

    def append_meta_note(self, title: str, code_block: str | None = None) -> None:
        self._require()
        with self.lock():
            text = self.paths.meta.read_text(encoding="utf-8") if self.paths.meta.is_file() else f"name: {self.name}\n"
            if not text.endswith("\n"):
                text += "\n"
            text += f"- {ts()}: {title}\n"
            if code_block:
                text += f"```bash\n{code_block}\n```\n"
            write_text(self.paths.meta, text, label="meta")

    # ------------------------------------------------------------------ maintenance (spec §6, §10)
    def snapshot(self, actor=None):
        from .maintenance import ops

        return ops.snapshot(self, actor=actor)

    def freeze_registry(self):
        from .maintenance import ops

        return ops.freeze_registry(self)

    def compact_overlay(self, namespace: str):
        from .maintenance import compact

        return compact.compact_overlay(self, namespace)

    def remove_overlay(self, namespace: str, mode: str = "error"):
        from .maintenance import ops

        return ops.remove_overlay(self, namespace, mode=mode)

    def refresh_overlay_metadata(self, namespace: str):
        from .maintenance import ops

        return ops.refresh_overlay_metadata(self, namespace)

    def materialize(self, namespaces=None, keep_overlays=True, archive_overlays=False, drop_deleted=False):
        from .maintenance import materialize

        return materialize.materialize(self, namespaces, keep_overlays=keep_overlays,
                                       archive_overlays=archive_overlays, drop_deleted=drop_deleted)

    def dedupe(self, key: str, keep: str = "keep-first", batch_size: int = 65536, dry_run: bool = False):
        from .maintenance import dedupe

        return dedupe.dedupe(self, key, keep=keep, batch_size=batch_size, dry_run=dry_run)

    def export(self, fmt: str, out_path, columns=None, include_deleted: bool = False):
        from .maintenance import export

        return export.export(self, fmt, out_path, columns=columns, include_deleted=include_deleted)

    def validate(self, strict: bool = False, registry_mode: str = "current"):
        from . import validate

        return validate.validate(self, strict=strict, registry_mode=registry_mode)

    def garden_event_log(self, retain_last: int = 1000, write: bool = False, acknowledge_cursor_reset: bool = False,
                         reason: str = ""):
        from .maintenance import garden

        return garden.garden_event_log(self, retain_last=retain_last, write=write,
                                       acknowledge_cursor_reset=acknowledge_cursor_reset, reason=reason)

    def project_overlay(self, src: "Dataset", namespace: str, **kw):
        from .maintenance import project

        return project.project_overlay(src, self, namespace, **kw)


class _SkipRows(Exception):
    """Some new ids already exist and on_conflict='ignore': the speculative append is discarded."""
