"""Checks on overlay sources before their data is read: O3, O8, O11, T1, M4 stamps, reserved files.

Readers (read.py, compaction, materialize) and `validate` call the same functions, so validate
fails exactly when a read would.
"""
from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..contract import RESERVED_NAMESPACES, TOMBSTONE_NS, TOMBSTONE_SCHEMA, utcnow
from ..errors import SchemaError
from ..layout import DatasetPaths
from ..registry.registry import Registry
from ..registry.types import conforms
from .discovery import OverlaySource
from .keymatch import duplicate_keys
from .keys import check_key_name, normalize_keys

_TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def require_key(src: OverlaySource, rule: str = "O11") -> str:
    """The overlay's key (metadata `usr:overlay_key`, M2/M3): present, supported, a column of every part."""
    key = src.key
    if not key:
        raise SchemaError(f"Overlay missing usr:overlay_key metadata ({src.path}) ({rule}).",
                          hint="Run overlay-refresh-metadata (compact file), or rewrite the overlay with USR.")
    check_key_name(key)
    for part in src.parts:
        if part.schema.get_field_index(key) < 0:
            raise SchemaError(f"Overlay {part.path} has no key column {key!r} ({rule}).",
                              hint="Rewrite the part with USR, or remove it.")
    return key


def parse_created_at(value: str, path: Path) -> _dt.datetime:
    """M4 stamp of an overlay file (YYYY-MM-DDTHH:MM:SS.ffffffZ, UTC).  O9 ranks parts by this text,
    so anything else (garbage, a local time without Z, fewer digits) would rank arbitrarily: refused."""
    try:
        if not _TS.fullmatch(value):
            raise ValueError(value)
        return _dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=_dt.timezone.utc)
    except ValueError:
        raise SchemaError(f"Overlay file {path} has an unparseable usr:overlay_created_at {value!r} (M4, O9); "
                          "expected UTC YYYY-MM-DDTHH:MM:SS.ffffffZ.",
                          hint="Restamp it with overlay-refresh-metadata (compact file), rewrite the part "
                               "with USR, or remove it.") from None


def check_created_at(src: OverlaySource) -> None:
    """O8: every part carries a parseable created_at."""
    for part in src.parts:
        if part.created_at is None:
            raise SchemaError(f"Overlay {part.path} is missing required created_at metadata (O8).",
                              hint="Run overlay-refresh-metadata on it, or remove the part.")
        parse_created_at(part.created_at, part.path)


def future_parts(src: OverlaySource, slack: _dt.timedelta = _dt.timedelta(minutes=5)) -> list[Path]:
    """Parts dated after now (+ slack for clock skew between writers): they outrank every later write."""
    limit = utcnow() + slack
    return [p.path for p in src.parts if p.created_at and parse_created_at(p.created_at, p.path) > limit]


def check_tombstone_schema(src: OverlaySource) -> None:
    """T1 columns and types."""
    types = {f.name: f.type for f in src.first.schema}
    for f in TOMBSTONE_SCHEMA:
        if types.get(f.name) != f.type:
            got = types.get(f.name, "missing")
            raise SchemaError(f"Tombstone overlay {src.path}: column {f.name} is {got}, expected {f.type} (T1).",
                              hint="Restore _derived/usr.parquet from a backup or rewrite it with delete/restore.")


def unify_types(src: OverlaySource, columns: list[str]) -> dict[str, pa.DataType]:
    """O8: the one type of each column over all parts (parts may hold any subset of the columns)."""
    types: dict[str, pa.DataType] = {}
    for part in src.parts:
        for name in columns:
            idx = part.schema.get_field_index(name)
            if idx < 0:
                continue
            t = part.schema.field(idx).type
            if name in types and types[name] != t:
                raise SchemaError(f"Overlay {src.namespace!r}: column {name} has type {types[name]} in one part and "
                                  f"{t} in {part.path.name} (O8).",
                                  hint="Rewrite the odd part with the registered type, or remove it.")
            types[name] = t
    return types


def check_conformance(src: OverlaySource, reg: Registry) -> None:
    """O11: every data column of every part registered under the overlay's namespace with a conforming type."""
    require_key(src, "O11")
    if src.namespace not in reg:
        raise SchemaError(f"Overlay {src.path} belongs to unregistered namespace {src.namespace!r} (O11).",
                          hint=f"Register it: register_namespace(root, {src.namespace!r}, columns).",
                          cli_hint=f"Register it: `usr namespace register {src.namespace} --columns ...`.")
    registered = {c["name"]: c["type"] for c in reg[src.namespace]["columns"]}
    for part in src.parts:
        for f in part.schema:
            if f.name == src.key:
                continue
            if f.name not in registered:
                raise SchemaError(f"Overlay {part.path}: column {f.name} is not registered under {src.namespace!r} "
                                  "(O11).", hint="Add the column to the registry or remove it from the overlay.")
            if not conforms(f.type, registered[f.name]):
                raise SchemaError(f"Overlay {part.path}: column {f.name} has type {f.type}, registry says "
                                  f"{registered[f.name]} (O11).",
                                  hint="Rewrite the overlay with the registered type or update the registry.")


def check_source(src: OverlaySource, paths: DatasetPaths, reg: Registry | None) -> None:
    """Everything a reader checks on an overlay before reading its rows (discovery already applied the
    reserved-file rule): key metadata (O11), created_at (O8, M4), one type per column (O8), T1 for tombstones, and conformance
    to `reg` for the other namespaces (O11; `reg` None skips it)."""
    require_key(src)
    check_created_at(src)
    unify_types(src, src.data_columns())
    if src.namespace == TOMBSTONE_NS:
        check_tombstone_schema(src)
    elif reg is not None and src.namespace not in RESERVED_NAMESPACES:
        check_conformance(src, reg)


def duplicate_part_keys(src: OverlaySource) -> tuple[Path, list] | None:
    """O8: (part, some repeated keys) for the first part whose normalised keys repeat, else None.
    Reads only the key column of each part."""
    key = require_key(src)
    for part in src.parts:
        keys = normalize_keys(pq.read_table(part.path, columns=[key])[key], key)
        dups = duplicate_keys(keys)
        if dups is None:
            vc = pc.value_counts(keys.drop_null())
            dups = vc.filter(pc.greater(vc.field("counts"), 1)).field("values").to_pylist()[:5]
        if dups:
            return part.path, dups
    return None


# ---------------------------------------------------------------- O3 on the base

def _distinct_from_stats(pf: pq.ParquetFile, column: str) -> set | None:
    """The distinct min/max values of a string column over all row groups; None without statistics."""
    idx = pf.schema_arrow.get_field_index(column)
    values: set = set()
    for i in range(pf.metadata.num_row_groups):
        st = pf.metadata.row_group(i).column(idx).statistics
        if st is None or not st.has_min_max or st.null_count:
            return None
        values.update((st.min, st.max))
    return values


def _distinct(pf: pq.ParquetFile, column: str) -> list:
    values = _distinct_from_stats(pf, column)
    if values is None or len(values) > 1:  # min/max are real values: > 1 means several, else read to be sure
        values = set(pc.unique(pf.read(columns=[column])[column]).to_pylist())
    return sorted(v.decode() if isinstance(v, bytes) else v for v in values)


def _all_distinct(keys: pa.Array) -> bool:
    dups = duplicate_keys(keys)  # equal-width keys (ids): sorted hashes, no string hash table
    return not dups if dups is not None else len(pc.unique(keys)) == len(keys)


def keys_not_unique(paths: DatasetPaths, key: str) -> SchemaError:
    return SchemaError(f"Key {key!r} is not unique over the base of {paths.name!r} (O3).",
                       hint="Use key 'id', or dedupe the dataset first.")


def check_sequence_keys(paths: DatasetPaths, key: str, passed: set | None = None, unique: bool = True) -> None:
    """O3 on the base: one bio_type, dna_4 for sequence_ci, unique normalised keys.

    bio_type and alphabet come from row-group statistics when present.  With one bio_type, stored
    sequences (already normalised, S3) are unique exactly when the ids are (S4), so `sequence` keys
    check the id column; `sequence_ci` folds case and checks the sequences themselves.  unique=False
    leaves uniqueness to the caller (a scan's join finds repeated base keys in its key index, which it
    builds anyway: keys_not_unique).  `passed` (owned by one read plan) remembers base states that
    passed, so one read checks a key once."""
    st = paths.records.stat()
    memo = (str(paths.records), st.st_ino, st.st_mtime_ns, st.st_size, key, unique)
    if passed is not None and memo in passed:
        return
    pf = pq.ParquetFile(paths.records)
    bio_types = _distinct(pf, "bio_type")
    if len(bio_types) > 1:
        raise SchemaError(f"Sequence-keyed overlays need one bio_type in {paths.name!r}; found {bio_types} (O3).",
                          hint="Use key 'id' instead.")
    if key == "sequence_ci" and pf.metadata.num_rows and _distinct(pf, "alphabet") != ["dna_4"]:
        raise SchemaError("Key sequence_ci needs every record's alphabet to be dna_4 (O3).",
                          hint="Use key 'sequence' or 'id'.")
    column = "sequence" if key == "sequence_ci" else "id"
    if unique and not _all_distinct(normalize_keys(pf.read(columns=[column])[column],
                                                   key if column == "sequence" else "id")):
        raise keys_not_unique(paths, key)
    if passed is not None:
        passed.add(memo)
