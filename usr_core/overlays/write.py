"""Overlay writes: compact attach / write_overlay (O5), part writes (O6), create_overlay (O7).

The checks and encodings of overlay writes, and the file steps; each step that publishes a file records
its before-image in the transaction's journal first.  The transactions themselves are in usr_core/ops/.
"""
from __future__ import annotations

import ctypes
import datetime as dt
import hashlib
import json
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..contract import MUTATION_RESERVED_NAMESPACES, REQUIRED_COLUMNS, ts
from ..errors import NamespaceError, SchemaError, TypeMismatchError
from ..errors import option_hint
from ..journal import Journal
from ..layout import DatasetPaths, check_namespace_name
from ..registry.registry import Registry
from ..registry.types import conforms, parse_type
from ..storage.atomic import crash_point, fsync_dir, write_bytes
from .checks import check_sequence_keys
from .discovery import load_part, new_part_name
from .encoding import cluster_by_key, encode_overlay_file, registry_metadata, write_overlay_file
from .inputs import coerce_column
from .keymatch import duplicate_keys, present_in
from .keys import normalize_keys, trimmed_fixed_width

ATTACH_ARG_KEYS = {"namespace", "key", "rows_incoming", "rows_matched", "rows_missing", "allow_overwrite", "note"}
PART_ARG_KEYS = {"namespace", "key", "columns", "rows_incoming", "rows_matched", "rows_written", "rows_missing",
                 "allow_missing"}
_MISSING_KEYS = ("", "nan", "none")


def check_writable_namespace(ns: str) -> None:
    if ns in MUTATION_RESERVED_NAMESPACES:
        raise NamespaceError(f"Namespace {ns!r} is reserved (U2); only the tombstone/state API writes it.",
                             hint="Use delete/restore or state set/clear, or choose another namespace.")
    check_namespace_name(ns)


def namespaced_columns(ns: str, names: list[str]) -> dict[str, str]:
    """O5: a name without '__' becomes <ns>__<name>; <ns>__x stays; other a__b → NamespaceError."""
    out = {}
    for name in names:
        if name in REQUIRED_COLUMNS:
            raise SchemaError(f"Column {name!r} is an essential column and cannot be an overlay column (O1).",
                              hint="Drop it from the overlay input.")
        if "__" not in name:
            out[name] = f"{ns}__{name}"
        elif name.startswith(f"{ns}__") and len(name) > len(ns) + 2:
            out[name] = name
        else:
            raise NamespaceError(f"Column {name!r} belongs to another namespace than {ns!r}.",
                                 hint=f"Name overlay columns {ns}__<field> or without a prefix.")
    return out


def check_event_args(event_args, reserved: set[str]) -> dict:
    event_args = dict(event_args or {})
    clash = sorted(set(event_args) & reserved)
    if clash:
        raise SchemaError(f"event_args may not override reserved keys {clash} (E7).", hint="Rename those keys.")
    try:
        json.dumps(event_args, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"event_args are not JSON-serialisable: {exc}", hint="Pass plain strings and numbers.") from exc
    return event_args


def check_extra_metadata(extra) -> dict[str, str]:
    """Caller key/values for a part's parquet metadata: strings, never in the contract's `usr:` space."""
    extra = dict(extra or {})
    for k, v in extra.items():
        if not isinstance(k, str) or not isinstance(v, str) or not k:
            raise SchemaError(f"extra_metadata must map non-empty strings to strings; got {k!r}: {v!r}.",
                              hint="Convert keys and values to str.")
        if k.startswith("usr:"):
            raise SchemaError(f"extra_metadata key {k!r} is in the reserved 'usr:' space (M2).",
                              hint="Use another prefix, e.g. 'dagster/...'.")
    return extra


def registered_types(reg: Registry, ns: str) -> dict[str, str]:
    if ns not in reg:
        raise SchemaError(f"Namespace {ns!r} is not registered.",
                          hint=f"Register it first: register_namespace(root, {ns!r}, '{ns}__field:type').",
                          cli_hint=f"Register it first: `usr namespace register {ns} --columns {ns}__field:type`.")
    return {c["name"]: c["type"] for c in reg[ns]["columns"]}


def _check_missing_keys(keys: pa.Array, raw: pa.Array) -> None:
    """`keys` = normalize_keys(raw) (trimmed, '' -> NULL); only 3-4 character keys can be nan/none."""
    bad = pc.is_null(keys)
    short = pc.fill_null(pc.less_equal(pc.binary_length(keys), 4), False)
    if pc.any(short).as_py():
        low = pc.utf8_lower(keys)
        bad = pc.or_(bad, pc.fill_null(pc.is_in(low, value_set=pa.array(_MISSING_KEYS)), False))
    if pc.any(bad).as_py():
        rows = [i + 1 for i in pc.indices_nonzero(bad).to_pylist()[:5]]
        raise SchemaError(f"Missing keys (empty, nan or none) at rows {rows} (O5).",
                          hint="Every overlay row needs a key; drop those rows.")


def check_duplicates(keys: pa.Array) -> None:
    dup = duplicate_keys(keys)
    if dup is None:
        counts = pc.value_counts(keys)
        dup = counts.filter(pc.greater(counts.field("counts"), 1)).field("values").to_pylist()[:5]
    if dup:
        raise SchemaError(f"Duplicate keys after normalisation: {dup} (O5/O6).",
                          hint="Each key may appear once per write; deduplicate the input.")


def match_base(paths: DatasetPaths, table: pa.Table, key: str, allow_missing: bool) -> tuple[pa.Table, int]:
    """Keep rows whose key is in the base; SchemaError for others unless allow_missing."""
    base_col = "id" if key == "id" else "sequence"
    if key != "id":
        check_sequence_keys(paths, key)
    keys = _one_chunk(table[key])
    mask = None
    if key == "id":
        with pq.ParquetFile(paths.records) as pf:
            groups = (_one_chunk(pf.read_row_group(i, columns=[base_col])[0]) for i in range(pf.num_row_groups))
            mask = present_in(keys, groups, pf.metadata.num_rows)
    if mask is None:
        base_keys = normalize_keys(pq.read_table(paths.records, columns=[base_col])[base_col], key)
        present = pc.is_in(keys, value_set=base_keys)
    else:
        present = pa.array(mask)
    missing = len(present) - pc.sum(present).as_py() if len(present) else 0
    if missing and not allow_missing:
        sample = keys.filter(pc.invert(present)).to_pylist()[:5]
        raise SchemaError(f"{missing} key(s) not found in dataset {paths.name!r}: {sample}",
                          **option_hint("Pass {} to drop them.", "allow_missing"))
    return (table.filter(present) if missing else table), missing


def _one_chunk(col: pa.ChunkedArray) -> pa.Array:
    return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()


def _normalise_key_column(table: pa.Table, key: str) -> pa.Table:
    raw = _one_chunk(table[key])
    if key != "sequence_ci" and trimmed_fixed_width(raw):
        keys = raw  # no NULL, empty, nan or none key, nothing to trim
    else:
        keys = normalize_keys(raw, key)
        _check_missing_keys(keys, raw)
    check_duplicates(keys)
    return table.set_column(table.column_names.index(key), key, keys)


# ---------------------------------------------------------------- compact writes (O5)

def upsert_compact(existing: pa.Table | None, incoming: pa.Table, key: str) -> pa.Table:
    """Union of keys; incoming columns replace stored cells (NULLs too); other cells kept."""
    if existing is None or existing.num_rows == 0 and not existing.num_columns > 1:
        return incoming
    ex_cols = [c for c in existing.column_names if c != key]
    new_cols = [c for c in incoming.column_names if c != key and c not in ex_cols]
    order = [key] + ex_cols + new_cols
    types = {f.name: f.type for f in existing.schema}
    types.update({f.name: f.type for f in incoming.schema})
    inc_keys = incoming[key].combine_chunks()
    ex_keys = existing[key].combine_chunks()
    rest = existing.filter(pc.invert(pc.is_in(ex_keys, value_set=inc_keys)))
    pos = pc.index_in(inc_keys, value_set=ex_keys)
    top, bottom = [], []
    for c in order:
        top.append(incoming[c].combine_chunks() if c in incoming.column_names else existing[c].take(pos).combine_chunks())
        bottom.append(rest[c].combine_chunks() if c in rest.column_names else pa.nulls(rest.num_rows, types[c]))
    a = pa.Table.from_arrays([x.cast(types[c]) for x, c in zip(top, order)], order)
    b = pa.Table.from_arrays([x.cast(types[c]) for x, c in zip(bottom, order)], order)
    return pa.concat_tables([b, a])


def _existing_compact(path: Path, table: pa.Table, key: str, allow_overwrite: bool) -> pa.Table | None:
    if not path.is_file():
        return None
    part = load_part(path)
    if part.meta.get("usr:overlay_key", key) != key:
        raise SchemaError(f"key mismatch: {path.name} is keyed by {part.meta.get('usr:overlay_key')!r}, "
                          f"not {key!r} (O5).", **option_hint("Attach with {}.", "key", part.meta.get("usr:overlay_key")))
    existing = pq.read_table(path)
    existing = existing.set_column(existing.column_names.index(key), key, normalize_keys(existing[key], key))
    check_duplicates(existing[key].combine_chunks())
    shared = [c for c in table.column_names if c != key and c in existing.column_names]
    if shared and not allow_overwrite:
        raise NamespaceError(f"Columns already exist in {path.name}: {shared}.",
                             **option_hint("Pass {} to replace them.", "allow_overwrite"))
    return existing


def write_compact(paths: DatasetPaths, ns: str, table: pa.Table, *, key: str, reg: Registry, journal: Journal,
                  allow_overwrite: bool, allow_missing: bool) -> tuple[int, int, int]:
    """The O5 upsert under the lock; returns (rows_written, rows_missing, rows_total)."""
    path = paths.compact_overlay(ns)
    meta = registry_metadata(ns, key, ts(), reg)

    def build(t: pa.Table) -> tuple[int, pa.Buffer]:
        result = upsert_compact(_existing_compact(path, t, key, allow_overwrite), t, key)
        return result.num_rows, encode_overlay_file(result, key, meta)

    with ThreadPoolExecutor(1) as pool:  # build the file while the keys are checked; used if all match
        guess = pool.submit(build, table)
        matched, missing = match_base(paths, table, key, allow_missing)
        total, data = build(matched) if missing else guess.result()
    journal.before_write(path)
    write_bytes(path, data, tmp=paths.compact_overlay_tmp(ns), label="compact")
    return matched.num_rows, missing, total


def conforming_column(col, name: str, registry_type: str) -> pa.Array:
    """O6/O5 without coercion: an all-NULL column gets the registry type, any other must conform already."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_null(arr.type):
        return pa.nulls(len(arr), parse_type(registry_type))
    if not conforms(arr.type, registry_type):
        raise TypeMismatchError(f"type mismatch for {name}: {arr.type} does not conform to {registry_type}.",
                                column=name, got=arr.type, expected=registry_type,
                                hint=f"Cast the column to {registry_type} before writing.")
    return arr


def prepare_attach_table(ns: str, table: pa.Table, *, key: str, key_col: str | None, columns, reg: Registry,
                         coerce: bool, parse_json: bool) -> pa.Table:
    key_col = key_col or ("sequence" if key != "id" else key)
    if key_col not in table.column_names:
        raise SchemaError(f"Key column {key_col!r} not in the input (columns: {table.column_names}).",
                          **option_hint("Pass {} to name the key column.", "key_col", "COLUMN"))
    data = list(columns) if columns else [c for c in table.column_names if c != key_col]
    unknown = [c for c in data if c not in table.column_names]
    if unknown:
        raise SchemaError(f"Columns not in the input: {unknown}.", hint=f"Input has: {table.column_names}.")
    renamed = namespaced_columns(ns, data)
    types = registered_types(reg, ns)
    arrays, names = [table[key_col].combine_chunks()], [key]
    for src_name, dest in renamed.items():
        if dest not in types:
            raise SchemaError(f"Column {dest} is not registered under namespace {ns!r}.",
                              hint=f"Add it to the entry: register_namespace(root, {ns!r}, columns, overwrite=True).",
                              cli_hint=f"Add it to the entry: `usr namespace register {ns} --overwrite --columns ...`.")
        col = table[src_name]
        if coerce:
            arr = coerce_column(col, dest, types[dest], parse_json)
        else:
            arr = conforming_column(col, dest, types[dest])
        arrays.append(arr)
        names.append(dest)
    if key_col != key and key in names[1:]:
        raise SchemaError(f"Input has both {key_col!r} and {key!r}.", hint="Drop one of them.")
    return _normalise_key_column(pa.Table.from_arrays(arrays, names), key)


# ---------------------------------------------------------------- part writes (O6, O7)

def prepare_part_table(ns: str, table: pa.Table, *, key: str, key_col: str | None, reg: Registry) -> pa.Table:
    if key_col and key_col != key:
        if key in table.column_names:
            raise SchemaError(f"Input has both {key_col!r} and {key!r}.", hint="Drop one of them.")
        if key_col not in table.column_names:
            raise SchemaError(f"Key column {key_col!r} not in the input.", hint="Check key_col.", cli_hint="Check --key-col.")
        table = table.rename_columns([key if c == key_col else c for c in table.column_names])
    if key not in table.column_names:
        raise SchemaError(f"Input has no key column {key!r}.", hint="Name the key column or pass key_col.")
    types = registered_types(reg, ns)
    arrays, names = [table[key].combine_chunks()], [key]
    for name in table.column_names:
        if name == key:
            continue
        if name in REQUIRED_COLUMNS:
            raise SchemaError(f"Column {name!r} is an essential column and cannot be written to an overlay (O1).",
                              hint="Drop it from the table.")
        if not name.startswith(f"{ns}__") or len(name) == len(ns) + 2:
            raise NamespaceError(f"Column {name!r} is not a {ns}__<field> column.",
                                 hint=f"Name every data column {ns}__<field>.")
        if name not in types:
            raise SchemaError(f"Column {name} is not registered under namespace {ns!r}.",
                              hint="Add it to the registry: register_namespace(root, ns, columns, overwrite=True).",
                              cli_hint="Add it to the registry: `usr namespace register NS --overwrite --columns ...`.")
        arr = conforming_column(table[name], name, types[name])
        arrays.append(arr)
        names.append(name)
    if len(names) == 1:
        raise SchemaError("The table has no data columns.", hint=f"Add {ns}__<field> columns.")
    return _normalise_key_column(pa.Table.from_arrays(arrays, names), key)


def promote_compact(paths: DatasetPaths, ns: str, journal: Journal, *, before: dt.datetime) -> Path | None:
    """O6.1: move an existing compact file unchanged into the parts directory under a new part name,
    one that sorts before the part stamped `before` that is written next."""
    compact = paths.compact_overlay(ns)
    if not compact.is_file():
        return None
    target = paths.parts_dir(ns) / new_part_name(before - dt.timedelta(microseconds=1))
    crash_point("promote:before-rename")
    journal.rename(compact, target)
    crash_point("promote:after-rename")
    return target


def match_and_encode(paths: DatasetPaths, table: pa.Table, key: str, allow_missing: bool,
                     meta: dict[str, str]) -> tuple[pa.Table, int, pa.Buffer | None]:
    """match_base, while a second thread encodes the part file; the bytes are only returned when
    every key matched (else the caller writes the filtered table).  Nothing touches the disk here."""
    with ThreadPoolExecutor(1) as pool:
        encoded = pool.submit(encode_overlay_file, table, key, meta)
        matched, missing = match_base(paths, table, key, allow_missing)
        return matched, missing, (None if missing else encoded.result())


def write_part_file(parts_dir: Path, table: pa.Table, meta: dict[str, str], encoded: pa.Buffer | None, *,
                    when: dt.datetime, journal: Journal) -> Path:
    """A new part named after its created_at `when` (L5)."""
    final = parts_dir / new_part_name(when)
    journal.before_write(final)
    tmp = final.with_name(final.name + ".tmp")
    if encoded is not None:
        write_bytes(final, encoded, tmp=tmp, label="part")
    else:
        write_overlay_file(final, table, table.column_names[0], meta, tmp=tmp, label="part")
    return final


def update_digest_ledger(parts_dir: Path, new_parts: list[Path], journal: Journal) -> None:
    """O6.3: an existing digest_ledger.json gets {name, path, digest} entries for new parts."""
    ledger = parts_dir / "digest_ledger.json"
    if not ledger.is_file():
        return
    data = json.loads(ledger.read_text(encoding="utf-8") or "[]")
    entries = data.get("entries", []) if isinstance(data, dict) else data
    for p in new_parts:
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        entries.append({"name": p.name, "path": str(p), "digest": f"sha256:{digest}"})
    payload = {**data, "entries": entries} if isinstance(data, dict) else entries
    journal.before_write(ledger)
    write_bytes(ledger, json.dumps(payload, indent=2).encode(), tmp=ledger.with_name("digest_ledger.json.tmp"))


def stage_create(paths: DatasetPaths, ns: str, table: pa.Table, meta: dict[str, str], journal: Journal) -> Path:
    """O7: stage a private parts directory, read it back and compare."""
    staging = paths.derived / f".{ns}.staging-{uuid.uuid4().hex}"
    journal.before_write(staging)
    staging.mkdir()
    part = staging / new_part_name()
    key = table.column_names[0]
    write_overlay_file(part, table, key, meta, tmp=part.with_name(part.name + ".tmp"), label="create")
    back = pq.read_table(part)
    if not back.equals(cluster_by_key(table, key).replace_schema_metadata(back.schema.metadata)):
        shutil.rmtree(staging, ignore_errors=True)
        raise SchemaError(f"Read-back of the staged overlay {ns!r} differs from the input.", hint="Retry the write.")
    fsync_dir(staging)
    return staging


def publish_noreplace(staging: Path, target: Path) -> None:
    """Atomic no-replace rename (renameat2 RENAME_NOREPLACE where available)."""
    if os.path.lexists(target) or os.path.lexists(str(target) + ".parquet"):
        raise FileExistsError(f"Overlay already exists: {target}")
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        AT_FDCWD, RENAME_NOREPLACE = -100, 1
        rc = libc.renameat2(AT_FDCWD, os.fsencode(staging), AT_FDCWD, os.fsencode(target), RENAME_NOREPLACE)
        if rc != 0:
            err = ctypes.get_errno()
            if err == 17:
                raise FileExistsError(f"Overlay already exists: {target}")
            raise OSError(err, os.strerror(err))
    except (AttributeError, OSError) as exc:
        if isinstance(exc, FileExistsError):
            raise
        os.rename(staging, target)  # no renameat2: the lexists check above under the dataset lock suffices
    fsync_dir(target.parent)
