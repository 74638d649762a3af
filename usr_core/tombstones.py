"""Tombstones (T1-T3) and record state (U1-U5): upserts into reserved compact overlays."""
from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .contract import STATE_COLUMNS, STATE_NS, TOMBSTONE_NS, TOMBSTONE_SCHEMA, utcnow
from .errors import SchemaError, option_hint
from .registry.types import parse_type

QC_STATUS = ("pass", "fail", "warn", "unknown")
SPLITS = ("train", "val", "test", "holdout")


def clean_ids(ids) -> list[str]:
    """T2: trimmed, empties dropped; none left or repeats → SchemaError."""
    if isinstance(ids, str):
        ids = [ids]
    out = [str(i).strip() for i in (ids or []) if i is not None and str(i).strip()]
    if not out:
        raise SchemaError("No ids given.", hint="Pass at least one record id.")
    if len(set(out)) != len(out):
        seen, rep = set(), []
        for i in out:
            if i in seen and i not in rep:
                rep.append(i)
            seen.add(i)
        raise SchemaError(f"Repeated ids: {rep[:5]}.", hint="Pass each id once.")
    return out


def check_ids_exist(paths, ids: list[str], allow_missing: bool) -> list[str]:
    base = pq.read_table(paths.records, columns=["id"], filters=pc.field("id").isin(ids))["id"]
    found = set(base.to_pylist())
    missing = [i for i in ids if i not in found]
    if missing and not allow_missing:
        raise SchemaError(f"{len(missing)} id(s) not found: {missing[:5]}",
                          **option_hint("Check the ids, or pass {} to skip them.", "allow_missing"))
    return [i for i in ids if i in found]


def tombstone_table(ids: list[str], deleted: bool, when, reason) -> pa.Table:
    n = len(ids)
    if deleted:
        when = when or utcnow()
        if isinstance(when, str):
            when = dt.datetime.fromisoformat(when.replace("Z", "+00:00"))
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.timezone.utc)
        at = pa.array([when] * n, pa.timestamp("us", tz="UTC"))
        rs = pa.array([reason] * n, pa.string())
    else:
        at = pa.nulls(n, pa.timestamp("us", tz="UTC"))
        rs = pa.nulls(n, pa.string())
    return pa.Table.from_arrays([pa.array(ids, pa.string()), pa.array([deleted] * n, pa.bool_()), at, rs],
                                schema=TOMBSTONE_SCHEMA)


def _text(name: str, value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SchemaError(f"usr_state__{name} must be non-empty text, got {value!r}.", hint=f"Give a {name} value.")
    return value.strip()


def state_values(masked=None, qc_status=None, split=None, supersedes=None, lineage=None) -> dict:
    """U3: validate the given fields; returns {column: value} for the given ones only."""
    vals = {}
    if masked is not None:
        if not isinstance(masked, bool):
            raise SchemaError(f"usr_state__masked must be a bool, got {masked!r}.", hint="Use True or False.")
        vals["usr_state__masked"] = masked
    if qc_status is not None:
        q = _text("qc_status", qc_status)
        if q not in QC_STATUS:
            raise SchemaError(f"usr_state__qc_status {q!r} is not allowed.", hint=f"Use one of: {', '.join(QC_STATUS)}.")
        vals["usr_state__qc_status"] = q
    if split is not None:
        s = _text("split", split)
        if s not in SPLITS:
            raise SchemaError(f"usr_state__split {s!r} is not allowed.", hint=f"Use one of: {', '.join(SPLITS)}.")
        vals["usr_state__split"] = s
    if supersedes is not None:
        vals["usr_state__supersedes"] = _text("supersedes", supersedes)
    if lineage is not None:
        items = [lineage] if isinstance(lineage, str) else list(lineage)
        items = [str(x).strip() for x in items if x is not None and str(x).strip()]
        if not items:
            raise SchemaError("usr_state__lineage must be a non-empty list of non-empty strings.",
                              hint="Give at least one lineage entry.")
        vals["usr_state__lineage"] = items
    if not vals:
        raise SchemaError("set_state needs at least one field.",
                          hint="Give masked, qc_status, split, supersedes or lineage.")
    return vals


def state_table(ids: list[str], vals: dict) -> pa.Table:
    types = dict(STATE_COLUMNS)
    arrays, names = [pa.array(ids, pa.string())], ["id"]
    for name, value in vals.items():
        arrays.append(pa.array([value] * len(ids), parse_type(types[name])))
        names.append(name)
    return pa.Table.from_arrays(arrays, names)


def clear_values() -> dict:
    return {"usr_state__masked": False, "usr_state__qc_status": None, "usr_state__split": None,
            "usr_state__supersedes": None, "usr_state__lineage": None}


def state_result(ids: list[str], merged: pa.Table) -> pa.Table:
    """U5: one row per requested id, in order; missing state → masked=false, NULLs."""
    pos = pc.index_in(pa.array(ids, pa.string()), value_set=merged["id"].combine_chunks())
    arrays, names = [pa.array(ids, pa.string())], ["id"]
    for name, typ in STATE_COLUMNS:
        dtype = parse_type(typ)
        col = merged[name].take(pos) if name in merged.column_names else pa.nulls(len(ids), dtype)
        if name == "usr_state__masked":
            col = pc.fill_null(col, False)
        arrays.append(col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col)
        names.append(name)
    return pa.Table.from_arrays(arrays, names)


__all__ = ["TOMBSTONE_NS", "STATE_NS", "clean_ids", "check_ids_exist", "tombstone_table", "state_values",
           "state_table", "clear_values", "state_result"]
