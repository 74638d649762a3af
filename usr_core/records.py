"""Ingest (S6-S9): validate, compute ids, check duplicates, append to records.parquet."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .contract import ARROW_SCHEMA, utcnow
from .errors import DuplicateIDError, SchemaError
from .identity import check_columns, compute_ids
from .layout import DatasetPaths


@dataclass
class AddSequencesResult:
    added: int
    skipped: int
    ids: list[str]


def to_table(rows) -> pa.Table:
    """Accept a pyarrow Table, a pandas DataFrame, a list of mappings or a list of strings."""
    if isinstance(rows, pa.Table):
        return rows
    if isinstance(rows, pa.RecordBatch):
        return pa.Table.from_batches([rows])
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):  # pandas
        return pa.Table.from_pandas(rows, preserve_index=False)
    rows = list(rows)
    if rows and all(isinstance(r, str) for r in rows):
        return pa.table({"sequence": pa.array(rows, pa.string())})
    if not all(isinstance(r, dict) for r in rows):
        raise SchemaError("Rows must be a table, a list of mappings or a list of sequence strings.",
                          hint="Pass e.g. [{'sequence': 'ACGT'}] or ['ACGT'].")
    return pa.Table.from_pylist(rows) if rows else pa.table({"sequence": pa.array([], pa.string())})


def _string_col(table: pa.Table, name: str) -> pa.Array:
    col = table[name].combine_chunks()
    return col if pa.types.is_string(col.type) else pc.cast(col, pa.string())


def _required_text(table: pa.Table, name: str, default: str) -> pa.Array:
    n = table.num_rows
    if name not in table.column_names:
        return pa.array([default.strip()] * n, pa.string()) if n else pa.array([], pa.string())
    col = pc.utf8_trim_whitespace(_string_col(table, name))
    empty = pc.fill_null(pc.equal(col, ""), True)
    if pc.any(empty).as_py():
        rows = [i + 1 for i in pc.indices_nonzero(empty).to_pylist()[:5]]
        raise SchemaError(f"Column {name} has empty values at rows {rows}.",
                          hint=f"Fill in {name} for every row or drop the column to use the default.")
    return col


def _repeat_ts(value: dt.datetime, n: int) -> pa.Array:
    ts_type = pa.timestamp("us", tz="UTC")
    us = pa.scalar(value, ts_type).value
    return pa.array(np.full(n, us, np.int64), ts_type)


def _created_at(table: pa.Table, created_at) -> pa.Array:
    n = table.num_rows
    ts_type = pa.timestamp("us", tz="UTC")
    if created_at is not None:
        if isinstance(created_at, str):
            created_at = dt.datetime.fromisoformat(created_at.replace("Z", "+00:00"))
        if created_at.tzinfo is None:
            created_at = created_at.replace(tzinfo=dt.timezone.utc)
        return _repeat_ts(created_at, n)
    if "created_at" in table.column_names:
        col = table["created_at"].combine_chunks()
        try:
            if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                col = pc.cast(pc.cast(col, pa.string()), pa.timestamp("us", tz="UTC"))
            elif pa.types.is_timestamp(col.type):
                col = col if col.type.tz else pc.assume_timezone(col, "UTC")
                col = pc.cast(col, ts_type)
            else:
                raise pa.ArrowInvalid(f"type {col.type}")
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise SchemaError(f"Column created_at cannot be read as a UTC timestamp: {exc}",
                              hint="Use ISO 8601 timestamps, e.g. 2024-01-01T00:00:00Z.") from exc
        if col.null_count:
            col = pc.fill_null(col, pa.scalar(utcnow(), ts_type))
        return col
    return _repeat_ts(utcnow(), n)


def prepare_rows(rows, *, bio_type: str, alphabet: str, source: str | None, created_at=None,
                 strict_id_check: bool = True) -> pa.Table:
    """S3-S7 over a whole batch, vectorised; returns a table with the S1 schema."""
    table = to_table(rows)
    if "sequence" not in table.column_names:
        raise SchemaError("Input has no 'sequence' column.", hint="Name the sequence column 'sequence'.")
    n = table.num_rows
    raw = _string_col(table, "sequence")
    seqs = pc.utf8_trim_whitespace(raw)
    bio = _required_text(table, "bio_type", bio_type or "")
    alpha = _required_text(table, "alphabet", alphabet or "")
    check_columns(bio, alpha, seqs)
    ids = compute_ids(bio, seqs)
    if "id" in table.column_names and strict_id_check:
        given = pc.utf8_trim_whitespace(_string_col(table, "id"))
        bad = pc.invert(pc.fill_null(pc.equal(given, ids), False))
        if pc.any(bad).as_py():
            rows_bad = [i + 1 for i in pc.indices_nonzero(bad).to_pylist()[:5]]
            raise SchemaError(f"id mismatch at rows {rows_bad}: ids must equal sha1(bio_type|sequence) (S4).",
                              hint="Drop the id column to let USR compute ids, or fix the ids.")
    if source:
        src = pa.array([source] * n, pa.string())
    elif "source" in table.column_names:
        src = pc.fill_null(_string_col(table, "source"), "")
    else:
        src = pa.array([""] * n, pa.string())
    out = pa.Table.from_arrays(
        [ids, bio, seqs, alpha, pc.cast(pc.utf8_length(seqs), pa.int32()), src, _created_at(table, created_at)],
        schema=ARROW_SCHEMA)
    check_batch_duplicates(out)
    return out


def check_batch_duplicates(table: pa.Table) -> None:
    """S7: duplicate ids within the batch, ≤5 groups (id, count, rows, sequence), count desc then id."""
    ids = table["id"].combine_chunks()
    counts = pc.value_counts(ids)
    dup = counts.filter(pc.greater(counts.field("counts"), 1))
    if not len(dup):
        return
    pairs = sorted(zip(dup.field("values").to_pylist(), dup.field("counts").to_pylist()), key=lambda p: (-p[1], p[0]))
    groups = []
    for did, cnt in pairs[:5]:
        rows = [i + 1 for i in pc.indices_nonzero(pc.equal(ids, did)).to_pylist()]
        groups.append({"id": did, "count": cnt, "rows": rows, "sequence": table["sequence"][rows[0] - 1].as_py()})
    desc = "; ".join(f"{g['id']} x{g['count']} rows {g['rows']}" for g in groups)
    raise DuplicateIDError(f"Duplicate ids in the input batch: {desc}", groups=groups,
                           hint="Remove the repeated sequences from the input.")


def existing_ids_mask(paths: DatasetPaths, ids: pa.Array) -> pa.Array:
    base_ids = pq.read_table(paths.records, columns=["id"])["id"]
    return pc.is_in(ids, value_set=base_ids.combine_chunks())
