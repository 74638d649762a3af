"""Read-only inspection of a dataset for tools built on usr_core (the Dagster layer uses only this).

- `overlay_files(ds, ns)`: the files of a namespace's overlay (kind, O9 rank, key, hashes, rows, caller metadata);
- `overlay_problems(ds, ns)`: what a reader of the namespace would raise, found with the reader's own checks;
- `namespace_version(ds, ns)` / `records_version(ds)`: content versions that change only when what readers see
  changes (never because a file was rewritten, compacted or restamped with the same content);
- `rows_missing_from(ds, files, ...)`: the visible records that have no row in the given overlay files;
- `tail_events(path, cursor)`: new event-log lines after a cursor, torn and non-object lines reported, not fatal.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import content
from . import read as rd
from .contract import (META_NAMESPACE_CONTRACT_HASH, META_OVERLAY_KEY, META_REGISTRY_HASH,
                       MUTATION_RESERVED_NAMESPACES, TOMBSTONE_NS)
from .errors import SequencesError
from .events import iter_events
from .overlays.checks import check_source, duplicate_part_keys
from .overlays.discovery import OverlaySource, SourceKind, discover_overlays, find_overlay
from .overlays.keymatch import present_in
from .overlays.kernel import namespace_view
from .overlays.keys import normalize_keys
from .registry.registry import load_registry

DIGEST_ROWS = 1 << 16  # rows per slice of the canonical encoding (a constant: part of the version's definition)


def is_reserved(namespace: str) -> bool:
    """Namespaces that hold the dataset's own state (tombstones, record state), not derived data."""
    return namespace in MUTATION_RESERVED_NAMESPACES


# ----------------------------------------------------------------------------------------- overlay files
@dataclass(frozen=True)
class OverlayFile:
    """One file of a namespace's overlay: the compact file or one part."""

    namespace: str
    path: Path
    kind: str  # "compact" | "part"
    rank: str  # O9 order key: greatest is newest
    key: str | None
    created_at: str | None
    registry_hash: str | None
    contract_hash: str | None
    rows: int
    size_bytes: int
    extra: dict[str, str] = field(default_factory=dict)  # caller metadata (keys outside the contract's)

    def digest(self) -> str:
        """sha256 of the file's bytes."""
        h = hashlib.sha256()
        with open(self.path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return "sha256:" + h.hexdigest()


def _caller_metadata(meta: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in meta.items() if not k.startswith(("usr:", "ARROW:")) and k != "pandas"}


def _files_of(src: OverlaySource) -> list[OverlayFile]:
    kind = "compact" if src.kind == SourceKind.COMPACT else "part"
    out = []
    for p in src.parts:
        out.append(OverlayFile(src.namespace, p.path, kind, p.rank, p.meta.get(META_OVERLAY_KEY), p.created_at,
                               p.meta.get(META_REGISTRY_HASH), p.meta.get(META_NAMESPACE_CONTRACT_HASH),
                               pq.read_metadata(p.path).num_rows, p.path.stat().st_size,
                               _caller_metadata(p.meta)))
    return sorted(out, key=lambda f: f.rank, reverse=True)


def overlay_files(ds, namespace: str) -> list[OverlayFile]:
    """The files readers merge for `namespace`, newest first (O9); [] when it has no overlay.
    Raises the reader's SchemaError when the layout is broken (L7) or a footer is unreadable."""
    def build() -> list[OverlayFile]:  # footers are read under the retry too: a compaction may remove the parts
        src = find_overlay(ds.paths, namespace)
        return _files_of(src) if src is not None else []

    return rd.consistent(ds.paths, build)


def overlay_namespaces(ds, *, include_reserved: bool = False) -> list[str]:
    """Namespaces with an overlay on disk (L8), sorted; reserved ones only when asked."""
    try:
        names = [s.namespace for s in rd.consistent(ds.paths, lambda: discover_overlays(ds.paths))]
    except SequencesError:  # a broken overlay still has a name: list what is there, checks report the rest
        derived = ds.paths.derived
        names = sorted({e.name[: -len(".parquet")] if e.name.endswith(".parquet") else e.name
                        for e in (derived.iterdir() if derived.is_dir() else [])
                        if not e.name.startswith(".") and not e.name.endswith(".tmp.parquet")
                        and (e.is_dir() or e.name.endswith(".parquet"))})
    return sorted(n for n in names if include_reserved or not is_reserved(n))


# ------------------------------------------------------------------------------------------- problems
@dataclass(frozen=True)
class Problem:
    """Something a reader of the namespace would raise. `kind`: layout | keys | schema | metadata."""

    kind: str
    message: str
    hint: str | None = None
    path: Path | None = None


def _problem(kind: str, exc: SequencesError, path: Path | None = None) -> Problem:
    return Problem(kind, str(exc), getattr(exc, "hint", None), path)


def overlay_problems(ds, namespace: str) -> list[Problem]:
    """What a reader of the namespace would raise, found with the reader's own checks (overlays.checks): the
    layout (L7), unreadable footers, the reserved-file rule, key and created_at metadata, one type per column,
    conformance to the current registry (O11), and duplicate normalised keys (O8) in each file."""
    try:
        src = rd.consistent(ds.paths, lambda: find_overlay(ds.paths, namespace))
    except SequencesError as exc:
        return [_problem("layout", exc)]
    if src is None:
        return []
    problems: list[Problem] = []
    try:
        check_source(src, ds.paths, load_registry(ds.root, required=False))
    except SequencesError as exc:
        problems.append(_problem("schema", exc, src.path))
        if src.key is None:
            return problems
    for part in src.parts:
        try:
            found = duplicate_part_keys(OverlaySource(src.namespace, src.kind, part.path, [part]))
        except SequencesError as exc:
            problems.append(_problem("metadata", exc, part.path))
            continue
        if found is not None:
            path, dups = found
            problems.append(Problem("keys", f"Overlay {path} has duplicate keys after normalisation (O8): {dups}",
                                    "Each key may appear once per overlay file; rewrite or remove that file.", path))
    return problems


# ------------------------------------------------------------------------------------ content versions
def table_digest(table: pa.Table) -> str:
    """A digest of a table's logical content (names, types, values and NULLs, in row order), independent of
    chunking, file layout and metadata: slices of a fixed row count encoded as plain uncompressed parquet."""
    h = hashlib.sha256()
    h.update(repr([(f.name, str(f.type)) for f in table.schema]).encode())
    table = table.replace_schema_metadata(None)
    for start in range(0, table.num_rows, DIGEST_ROWS):
        sink = pa.BufferOutputStream()
        pq.write_table(table.slice(start, DIGEST_ROWS).combine_chunks(), sink, compression="none",
                       use_dictionary=False, write_statistics=False, store_schema=False,
                       row_group_size=DIGEST_ROWS)
        h.update(sink.getvalue())
    return "sha256:" + h.hexdigest()


def namespace_version(ds, namespace: str) -> str | None:
    """Content version of a namespace: what readers see of it, one row per key (newest non-NULL value per column,
    O9), rows without any value left out, as an order-independent digest (usr_core.content). Compaction, promotion,
    metadata refresh, restamps and writes that change no visible value keep it. None without an overlay."""
    def build():
        src = find_overlay(ds.paths, namespace)
        if src is None:
            return None
        if len(src.parts) == 1 and src.key:  # one file: its rows are the view (the merge would only dedupe keys)
            table = pq.read_table(src.first.path).replace_schema_metadata(None)
            return src.key, table.set_column(table.column_names.index(src.key), src.key,
                                             normalize_keys(table.column(src.key), src.key))
        return src.key, namespace_view(src)

    found = rd.consistent(ds.paths, build)
    if found is None:
        return None
    key, view = found
    return content.format_version(*content.table_sums(view, key))


def version_of_rows(table: pa.Table, key: str = "id", base: str | None = None) -> str | None:
    """The content version of a namespace made of `base` (a version, or None for an empty namespace) plus the rows
    of `table` (key + data columns, as written), for keys that had no value before. None if `base` is not a
    content version."""
    table = table.set_column(table.column_names.index(key), key, normalize_keys(table.column(key), key))
    return content.add_rows(base or content.format_version(0, 0, 0), table, key)


def files_fingerprint(files: list[OverlayFile]) -> str:
    """Identity of exactly these overlay files (names, sizes, stamps, rows): equal fingerprints, equal content."""
    blob = json.dumps([[f.path.name, f.size_bytes, f.created_at, f.rows] for f in files])
    return "files:" + hashlib.sha256(blob.encode()).hexdigest()[:32]


class BaseDigests:
    """Content digests of records.parquet files, keyed by file identity (path, inode, size, mtime_ns), so a
    rewrite of the base (ingest, restamp, materialize) is never served a stale digest. It lives as long as its
    owner (a Dagster code location keeps one for its process) and holds at most `limit` entries."""

    def __init__(self, limit: int = 64):
        self.limit = limit
        self._digests: dict[tuple, str] = {}

    def digest(self, path: Path) -> str:
        st = os.stat(path)
        ident = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
        if ident not in self._digests:
            if len(self._digests) >= self.limit:
                self._digests.pop(next(iter(self._digests)))
            self._digests[ident] = table_digest(pq.read_table(path))
        return self._digests[ident]


def records_version(ds, digests: BaseDigests | None = None) -> str:
    """Content version of the visible records: the base table's content (rows, columns, values; not its file
    metadata, so a registry restamp keeps it) and the content of the tombstone and record-state overlays.
    Changes when rows are added, tombstoned, restored, their state changes or overlays are materialized.
    `digests` remembers base digests across calls (hashing a 1M-row base takes about 2 s)."""
    base = (digests or BaseDigests(limit=1)).digest(ds.records_path)
    parts = [base]
    for ns in sorted(MUTATION_RESERVED_NAMESPACES):
        parts.append(f"{ns}={namespace_version(ds, ns)}")
    return "sha256:" + hashlib.sha256("|".join(parts).encode()).hexdigest()


# ------------------------------------------------------------------------------------- pending rows
def overlay_keys(files: list[OverlayFile]) -> pa.ChunkedArray:
    """The normalised keys (O2) of the given overlay files."""
    chunks = []
    for f in files:
        key = f.key or "id"
        col = pq.read_table(f.path, columns=[key]).column(key)
        chunks.append(normalize_keys(col, key))
    return pa.chunked_array(chunks, pa.string())


def rows_missing_from(ds, files: list[OverlayFile], *, key: str = "id", columns: list[str],
                      include_overlays=False) -> pa.Table:
    """The visible records (tombstoned rows hidden) whose key has no row in `files`, with `columns` (`id` first,
    and `sequence` for sequence keys). The key columns are read first; when few rows are missing and no overlay
    column is asked for, only the base row groups holding them are read."""
    key_col = "id" if key == "id" else "sequence"
    cols = list(dict.fromkeys(["id", *([key_col] if key != "id" else []), *columns]))
    if not files:
        return ds.read_table(columns=cols, include_overlays=include_overlays)
    # without tombstones the visible rows are the base rows, in order: read the keys straight from the base
    in_base = not overlay_files(ds, TOMBSTONE_NS)
    key_cols = list(dict.fromkeys(["id", key_col]))
    keys = (pq.read_table(ds.records_path, columns=key_cols) if in_base
            else ds.read_table(columns=key_cols, include_overlays=False))
    base_keys = keys.column("id") if key == "id" else normalize_keys(keys.column(key_col), key)
    done = [c for f in files for c in overlay_keys([f]).chunks]
    base_arr = base_keys.combine_chunks() if isinstance(base_keys, pa.ChunkedArray) else base_keys
    hit = present_in(base_arr, done, sum(len(c) for c in done))
    if hit is None:
        hit = pc.fill_null(pc.is_in(base_arr, value_set=pa.chunked_array(done, pa.string()).combine_chunks()),
                           False).to_numpy(zero_copy_only=False)
    at = np.flatnonzero(~hit)
    wanted = keys.column("id").combine_chunks().take(pa.array(at))
    if len(wanted) == 0:
        return rd.output_schema(ds.paths, cols, include_overlays).empty_table()
    if include_overlays or len(wanted) * 10 > keys.num_rows:
        table = ds.read_table(columns=cols, include_overlays=include_overlays)
        return table if len(wanted) == keys.num_rows else table.filter(pc.is_in(table.column("id"), value_set=wanted))
    picked = _base_rows(ds, wanted, at if in_base else None, cols)
    if picked is None:
        table = ds.read_table(columns=cols, include_overlays=False)
        return table.filter(pc.is_in(table.column("id"), value_set=wanted))
    return picked


def _base_rows(ds, ids: pa.Array, at: np.ndarray | None, columns: list[str]) -> pa.Table | None:
    """The base rows with these ids (at base positions `at` when known), reading only the row groups that hold
    them; None if the base changed meanwhile (the caller falls back to a full read)."""
    try:
        pf = pq.ParquetFile(ds.records_path)
        if at is None:
            pos = pc.index_in(pf.read(columns=["id"]).column("id"), value_set=ids)
            at = np.flatnonzero(pc.is_valid(pos).to_numpy(zero_copy_only=False))
        md = pf.metadata
        starts = np.cumsum([0] + [md.row_group(i).num_rows for i in range(md.num_row_groups)])
        groups = np.unique(np.searchsorted(starts, at, side="right") - 1)
        table = pf.read_row_groups(groups.tolist(), columns=columns)
        local = np.concatenate([np.arange(starts[g], starts[g + 1]) for g in groups]) if len(groups) else at
        out = table.take(pa.array(np.searchsorted(local, at)))
    except (OSError, pa.ArrowException):
        return None
    if len(at) != len(ids) or not pc.all(pc.is_in(out.column("id"), value_set=ids)).as_py():
        return None
    return out.select(columns)


# --------------------------------------------------------------------------------------- event tail
@dataclass(frozen=True)
class EventCursor:
    """Where a tail stopped: the log's inode, the byte offset after the last complete line, the newest event
    timestamp seen (gardening replaces the log: the tail then rereads it and skips events not newer)."""

    ino: int | None = None
    off: int = 0
    ts: str | None = None

    def to_dict(self) -> dict:
        return {"ino": self.ino, "off": self.off, "ts": self.ts}

    @classmethod
    def from_dict(cls, data) -> "EventCursor":
        if not isinstance(data, dict):
            return cls()
        ino, off, ts = data.get("ino"), data.get("off"), data.get("ts")
        return cls(ino if isinstance(ino, int) else None, off if isinstance(off, int) and off >= 0 else 0,
                   ts if isinstance(ts, str) else None)


@dataclass(frozen=True)
class TailedLine:
    offset: int
    raw: str
    event: dict | None
    problem: str | None = None


@dataclass(frozen=True)
class EventTail:
    lines: list[TailedLine]
    cursor: EventCursor

    @property
    def events(self) -> list[dict]:
        return [line.event for line in self.lines if line.event is not None]

    @property
    def skipped(self) -> list[TailedLine]:
        return [line for line in self.lines if line.event is None]


def tail_events(path, cursor: EventCursor | None = None, *, max_bytes: int | None = 64 << 20) -> EventTail:
    """The complete lines of an event log after `cursor` (a partial last line waits for the next call). Lines
    that are torn, not JSON, or not an event object are returned with `problem` set instead of stopping the tail;
    the cursor always moves past them."""
    cursor = cursor or EventCursor()
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return EventTail([], cursor)
    off, since = cursor.off, None
    if cursor.ino not in (None, st.st_ino) or st.st_size < off:
        off, since = 0, cursor.ts  # gardened or replaced: reread, skip what was seen
    lines, end, newest = [], off, cursor.ts
    with open(path, "rb") as fh:
        for item in iter_events(path, off, max_bytes=max_bytes):
            fh.seek(item.offset)
            raw = fh.read(item.end - item.offset).decode("utf-8", "replace").rstrip("\n")
            end = item.end
            ev = item.event
            stamp = str(ev.get("timestamp_utc", "")) if ev is not None else None
            if ev is not None and since and stamp <= since:
                continue
            if stamp and (newest is None or stamp > newest):
                newest = stamp
            lines.append(TailedLine(item.offset, raw, ev, item.problem))
    return EventTail(lines, EventCursor(st.st_ino, end, newest))


def cursor_json(cursors: dict[str, EventCursor]) -> str:
    return json.dumps({k: v.to_dict() for k, v in cursors.items()}, sort_keys=True)
