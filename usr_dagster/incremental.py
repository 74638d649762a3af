"""Incremental materialization of a namespace, with bookkeeping kept on disk beside the data.

Each part written by a namespace asset carries three caller key/values in its parquet metadata (other USR
readers ignore them; compaction keeps them when every folded file agrees):

- `dagster/code_version`: the namespace's code version that computed the rows;
- `dagster/columns`: a digest of the declared columns (names and types);
- `dagster/inputs`: the content versions of the upstream namespaces the rows were computed from.

A run is a **full refresh** when a file of the namespace was computed with another code version, other columns
or other upstream data, or when run config asks for one: every visible row is recomputed and the overlay is
replaced (`usr_core.replace.replace_overlay`), so readers see exactly the new output, NULLs included. Otherwise
it is **incremental**: only the visible rows without a row in a file of the current bookkeeping are computed
(new records, rows never computed, rows only written by other tools), and they become one new part; with no
such row the function is not called and nothing is written. Because the bookkeeping lives in the files, it
survives the loss of the Dagster instance.
"""
from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa

from usr_core import PartWritten
from usr_core.inspect import (OverlayFile, files_fingerprint, namespace_version, overlay_files, overlay_keys,
                              rows_missing_from, version_of_rows)
from usr_core.replace import replace_overlay

CODE_KEY = "dagster/code_version"
COLUMNS_KEY = "dagster/columns"
INPUTS_KEY = "dagster/inputs"


def columns_digest(columns: list[dict]) -> str:
    blob = json.dumps([[c["name"], c["type"]] for c in columns], separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def bookkeeping(ds, code_version: str, columns: list[dict], inputs) -> dict[str, str]:
    """The key/values a part computed now carries (upstream content versions read now)."""
    versions = {ns: namespace_version(ds, ns) or "" for ns in sorted(inputs)}
    return {CODE_KEY: code_version, COLUMNS_KEY: columns_digest(columns),
            INPUTS_KEY: json.dumps(versions, sort_keys=True, separators=(",", ":"))}


@dataclass
class Plan:
    full: bool
    reasons: list[str]
    computed: list[OverlayFile]  # files whose rows count as computed by the current bookkeeping
    book: dict[str, str]
    files: list[OverlayFile] = field(default_factory=list)


def _why_stale(f: OverlayFile, book: dict[str, str]) -> list[str]:
    why = []
    if f.extra.get(CODE_KEY) != book[CODE_KEY]:
        why.append(f"code version changed ({f.extra.get(CODE_KEY)} -> {book[CODE_KEY]})")
    if f.extra.get(COLUMNS_KEY) != book[COLUMNS_KEY]:
        why.append("declared columns changed")
    if f.extra.get(INPUTS_KEY) != book[INPUTS_KEY]:
        old, new = json.loads(f.extra.get(INPUTS_KEY) or "{}"), json.loads(book[INPUTS_KEY])
        changed = sorted(ns for ns in set(old) | set(new) if old.get(ns) != new.get(ns))
        why.append(f"upstream data changed ({', '.join(changed) or 'inputs'})")
    return why


def plan(ds, namespace: str, book: dict[str, str], *, full_refresh: bool = False, incremental: bool = True) -> Plan:
    files = overlay_files(ds, namespace)
    ours = [f for f in files if CODE_KEY in f.extra]
    reasons = ["run config asks for a full refresh"] if full_refresh else []
    if not incremental:
        reasons.append("the namespace is not incremental")
    for f in ours:
        for why in _why_stale(f, book):
            if why not in reasons:
                reasons.append(why)
    computed = [f for f in ours if not _why_stale(f, book)]
    return Plan(bool(reasons), reasons, [] if reasons else computed, book, files)


@dataclass
class Outcome:
    mode: str  # "incremental" | "full_refresh"
    reasons: list[str]
    rows_input: int  # rows the function was called with (0: not called)
    written: PartWritten | None
    replaced: bool
    version: str | None
    fingerprint: str  # identity of the namespace's files after the run (keys the version for the next run)


def materialize(ds, namespace: str, *, compute, read_columns: list[str], inputs, key: str, book: dict[str, str],
                full_refresh: bool = False, incremental: bool = True, replace: bool = True, actor=None,
                event_args=None, log=None, previous: tuple[str, str] | None = None) -> Outcome:
    """Plan, read the rows to compute, call `compute(table) -> pa.Table` (conformed), write, and return what
    happened. `replace=False` writes a full recomputation as a part (newest-non-null) instead of replacing.
    `previous` = (files fingerprint, content version) reported by the last run: when the files are still exactly
    those, the version is reused (nothing written) or extended by the rows added (no reread)."""
    p = plan(ds, namespace, book, full_refresh=full_refresh, incremental=incremental)
    include = list(inputs) or False
    if p.full:
        table = ds.read_table(columns=_with_key(read_columns, key), include_overlays=include)
    else:
        table = rows_missing_from(ds, p.computed, key=key, columns=read_columns, include_overlays=include)
    mode = "full_refresh" if p.full else "incremental"
    if log:
        why = f" ({'; '.join(p.reasons)})" if p.reasons else ""
        log(f"{ds.name}/{namespace}: {mode}{why}: {table.num_rows} row(s) to compute")
    known = previous[1] if previous and previous[0] == files_fingerprint(p.files) else None
    if not p.files:
        known = version_of_rows(pa.table({key: pa.array([], pa.string())}), key)
    written, replaced, version, earlier = None, False, None, None
    if table.num_rows or (p.full and replace and p.files):
        with ThreadPoolExecutor(1) as pool:  # the data version's work runs beside the compute and the write
            keys_before = pool.submit(_earlier_keys, p, key, table.num_rows) if p.full and not replace else None
            out = compute(table) if table.num_rows else None
            if p.full and replace:
                out = out if out is not None else _empty_like(ds, namespace, key)
                if out is not None:
                    after = pool.submit(version_of_rows, out, key)
                    written = replace_overlay(ds, namespace, out, key=key, actor=actor, event_args=event_args,
                                              extra_metadata=book)
                    replaced = True
                    if written.rows == out.num_rows:
                        version = after.result()
            elif out is not None and out.num_rows:
                after = pool.submit(_version_after_part, out, key, known, p, keys_before)
                written = ds.write_part(namespace, out, key=key, actor=actor, event_args=event_args,
                                        extra_metadata=book)
                version, earlier = after.result()
                if written.rows != out.num_rows:
                    version = None
    elif known:
        version = known
    files = overlay_files(ds, namespace)
    if earlier is not None and not _covers(files, written, earlier):
        version = None
    if version is None or not _only_ours(files, [] if replaced else p.files, written):
        version = namespace_version(ds, namespace)  # someone else wrote meanwhile, or no usable previous version
    return Outcome(mode, p.reasons, table.num_rows, written, replaced, version, files_fingerprint(files))


def _earlier_keys(p: Plan, key: str, rows: int) -> list[pa.ChunkedArray] | None:
    """The keys of each earlier file, when a full recomputation of `rows` rows may hide them all (read while the
    function computes); a file with the current columns digest holds the declared columns, as the rows written do."""
    if not p.files or any((f.key or "id") != key or f.extra.get(COLUMNS_KEY) != p.book[COLUMNS_KEY] or f.rows != rows
                          for f in p.files):
        return None
    try:
        return [overlay_keys([f]) for f in p.files]
    except (OSError, pa.ArrowException):  # an earlier file went away meanwhile (compaction): read the version
        return None


def _version_after_part(out: pa.Table, key: str, known: str | None, p: Plan, keys_before):
    """(content version once `out` is written as the newest part, keys of the earlier files it must cover) told
    from `out` alone, while the part is written; (None, None) when it cannot be (the version is then read back)."""
    # every earlier file is ours and current (or there is none), so the rows written had no value before: add them
    if known and (not p.files or (not p.full and p.computed == p.files)):
        return version_of_rows(out, key, known), None
    # a full recomputation written as a part: when it has a value in every cell and a row for every key of the
    # earlier files, newest-non-null-wins shows exactly its rows (O9), whatever those files held
    earlier = keys_before.result() if keys_before is not None else None
    if earlier is None or any(out.column(c).null_count for c in out.column_names if c != key):
        return None, None
    return version_of_rows(out, key), earlier


def _covers(files: list[OverlayFile], written: PartWritten, earlier: list[pa.ChunkedArray]) -> bool:
    """Every earlier file holds exactly the keys of the part written (in the same order: both are clustered alike
    by the write); anything else counts as not covered, and the caller reads the version back."""
    part = [f for f in files if f.path == written.path]
    if not part:
        return False
    keys = overlay_keys(part)
    return all(len(k) == len(keys) and k.equals(keys) for k in earlier)


def _only_ours(files, before, written) -> bool:
    """The files now are those planned on plus the one written (a promoted compact file keeps its content)."""
    def ident(fs):
        return sorted((f.size_bytes, f.created_at, f.rows) for f in fs)
    if written is None:
        return ident(files) == ident(before)
    return (any(f.path == written.path for f in files)
            and ident([f for f in files if f.path != written.path]) == ident(before))


def _with_key(columns: list[str], key: str) -> list[str]:
    extra = ["sequence"] if key != "id" else []
    return list(dict.fromkeys(["id", *extra, *columns]))


def _empty_like(ds, namespace: str, key: str) -> pa.Table | None:
    """A zero-row table of the namespace's registered columns (a full refresh over no visible row)."""
    from usr_core import load_registry, parse_type

    entry = (load_registry(ds.root, False) or {}).get(namespace)
    if not entry:
        return None
    return pa.table({key: pa.array([], pa.string()),
                     **{c["name"]: pa.array([], parse_type(c["type"])) for c in entry["columns"]}})
