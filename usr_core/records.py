"""Ingest (S6-S9): validate, compute ids, check duplicates, append to records.parquet."""
from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .overlays.keys import HASH_MIX
from .storage.pool import pool_array
from .contract import ARROW_SCHEMA, utcnow
from .errors import DuplicateIDError, SchemaError
from .identity import (check_columns, compute_ids, edges_may_be_space, offsets_and_data,
                       string_chunks)
from .layout import DatasetPaths


class AddSequencesResult:
    """Rows added and skipped, and the id of every input row; `ids` becomes a list on first access
    (a million Python strings cost ~0.3 s and ~100 MB that most callers never use)."""

    def __init__(self, added: int, skipped: int, ids):
        self.added, self.skipped, self._ids = added, skipped, ids

    @property
    def ids(self) -> list[str]:
        if not isinstance(self._ids, list):
            self._ids = self._ids.to_pylist()
        return self._ids

    def _asdict(self) -> dict:
        return {"added": self.added, "skipped": self.skipped, "ids": self.ids}

    def __eq__(self, other) -> bool:
        return isinstance(other, AddSequencesResult) and self._asdict() == other._asdict()

    def __repr__(self) -> str:
        return f"AddSequencesResult(added={self.added}, skipped={self.skipped}, ids=<{len(self._ids)} ids>)"


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


def _string_col(table: pa.Table, name: str) -> pa.ChunkedArray:
    col = table[name]  # chunks kept: combining would copy the whole sequence column
    return col if pa.types.is_string(col.type) else pc.cast(col, pa.string())


def _repeat(value: str, n: int) -> pa.Array:
    return pa.repeat(pa.scalar(value, pa.string()), n)


def _required_text(table: pa.Table, name: str, default: str) -> pa.Array:
    if name not in table.column_names:
        return _repeat(default.strip(), table.num_rows)
    col = pc.utf8_trim_whitespace(_string_col(table, name))
    empty = pc.fill_null(pc.equal(col, ""), True)
    if pc.any(empty).as_py():
        rows = [i + 1 for i in pc.indices_nonzero(empty).to_pylist()[:5]]
        raise SchemaError(f"Column {name} has empty values at rows {rows}.",
                          hint=f"Fill in {name} for every row or drop the column to use the default.")
    return col


def _repeat_ts(value: dt.datetime, n: int) -> pa.Array:
    return pa.repeat(pa.scalar(value, pa.timestamp("us", tz="UTC")), n)


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


ID_STEPS = (65536, 131072, 262144)  # rows per id chunk handed to the writer: small first, then fewer handoffs


class NewRows:
    """Validated ingest rows (S3, S5, S6) whose S4 ids are hashed on a worker thread, chunk by chunk, so a
    base rewrite can encode earlier chunks meanwhile (sha1 holds the GIL, parquet encoding releases it).
    Use as a context manager: leaving it early cancels the hashing still queued."""

    def __init__(self, body: pa.Table, given_ids: pa.ChunkedArray | None):
        self.body, self.num_rows, self._given = body, body.num_rows, given_ids
        self._bounds, start = [], 0  # (first row, rows) of each id chunk
        while start < self.num_rows:
            rows = min(ID_STEPS[min(len(self._bounds), len(ID_STEPS) - 1)], self.num_rows - start)
            self._bounds.append((start, rows))
            start += rows
        pool = ThreadPoolExecutor(1, thread_name_prefix="usr-ids")
        bio, seqs = body["bio_type"], body["sequence"]
        hexed = pool_array(40 * self.num_rows, np.uint8)  # allocated here: the worker thread would not reuse the pool
        # normalized: validate_rows trimmed the bio_types and let only ASCII letters through in sequences
        self._parts = [pool.submit(compute_ids, bio.slice(s, k), seqs.slice(s, k), normalized=True,
                                   out=hexed[40 * s:40 * (s + k)]) for s, k in self._bounds]
        pool.shutdown(wait=False)  # the queued chunks still run; the thread ends after the last
        self._kept: tuple | None = None

    def __enter__(self) -> "NewRows":
        return self

    def __exit__(self, *exc) -> None:
        for part in self._parts:
            part.cancel()

    def ids(self) -> pa.ChunkedArray:
        return pa.chunked_array([part.result() for part in self._parts], pa.string())

    def table(self) -> pa.Table:
        return pa.Table.from_arrays([self.ids(), *self.body.columns], schema=ARROW_SCHEMA)

    def chunks(self) -> Iterator[pa.Table]:
        """S1 tables in input order, each as soon as its ids exist.  The writer encodes a whole chunk in one
        GIL-free call; per-batch calls would wait for the hashing thread to hand back the GIL each time."""
        for (start, rows), part in zip(self._bounds, self._parts):
            yield pa.Table.from_arrays([part.result(), *self.body.slice(start, rows).columns], schema=ARROW_SCHEMA)

    def kept(self, paths: DatasetPaths, on_conflict: str) -> pa.Array | None:
        """S6 id column, S7, S8 against `paths` (None: no base yet), i.e. the checks that need every id.
        Returns the mask of rows to write, None for all (memoised)."""
        if self._kept is None:
            ids = self.ids()
            if self._given is not None:
                bad = pc.invert(pc.fill_null(pc.equal(self._given, ids), False))
                if pc.any(bad).as_py():
                    rows_bad = [i + 1 for i in pc.indices_nonzero(bad).to_pylist()[:5]]
                    raise SchemaError(f"id mismatch at rows {rows_bad}: ids must equal sha1(bio_type|sequence) "
                                      "(S4).", hint="Drop the id column to let USR compute ids, or fix the ids.")
            check_batch_duplicates(self.table())
            dup = existing_ids_mask(paths, ids) if paths is not None else None
            if dup is None or not pc.any(dup).as_py():
                self._kept = (None,)
            elif on_conflict == "error":
                raise existing_duplicates(ids, dup)
            else:
                self._kept = (pc.invert(dup),)
        return self._kept[0]


def validate_rows(rows, *, bio_type: str, alphabet: str, source: str | None, created_at=None,
                  strict_id_check: bool = True) -> NewRows:
    """S3, S5, S6 over a whole batch, vectorised; the ids follow on a worker thread (NewRows)."""
    table = to_table(rows)
    if "sequence" not in table.column_names:
        raise SchemaError("Input has no 'sequence' column.", hint="Name the sequence column 'sequence'.")
    n = table.num_rows
    raw = _string_col(table, "sequence")
    seqs = pc.utf8_trim_whitespace(raw) if edges_may_be_space(raw) else raw
    bio = _required_text(table, "bio_type", bio_type or "")
    alpha = _required_text(table, "alphabet", alphabet or "")
    check_columns(bio, alpha, seqs)
    given = None
    if "id" in table.column_names and strict_id_check:
        given = pc.utf8_trim_whitespace(_string_col(table, "id"))
    if source:
        src = _repeat(source, n)
    elif "source" in table.column_names:
        src = pc.fill_null(_string_col(table, "source"), "")
    else:
        src = _repeat("", n)
    length = pc.cast(pc.binary_length(seqs), pa.int32())  # == code points: check_columns allows ASCII letters only
    body = pa.Table.from_arrays([bio, seqs, alpha, length, src, _created_at(table, created_at)],
                                schema=pa.schema(list(ARROW_SCHEMA)[1:]))
    return NewRows(body, given)


def check_batch_duplicates(table: pa.Table) -> None:
    """S7: duplicate ids within the batch, ≤5 groups (id, count, rows, sequence), count desc then id."""
    if not ids_may_repeat(table["id"]):
        return
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


def ids_may_repeat(ids: pa.ChunkedArray) -> bool:
    """Cheap pre-check for S4 ids (40 hex chars each): 64-bit keys from the first 16 chars; only equal keys
    can be equal ids, so a False answer is exact and a True one goes to the exact (slower) check."""
    keys, pos = np.empty(len(ids), np.uint64), 0
    for chunk in string_chunks(ids):
        offs, data = offsets_and_data(chunk)
        if chunk.null_count or offs[-1] - offs[0] != 40 * len(chunk) or (np.diff(offs) != 40).any():
            return True
        words = np.frombuffer(data, np.uint64, 5 * len(chunk), int(offs[0])).reshape(-1, 5)
        np.multiply(words[:, 1], HASH_MIX, out=keys[pos:pos + len(chunk)])
        keys[pos:pos + len(chunk)] ^= words[:, 0]
        pos += len(chunk)
    keys.sort()
    return bool((keys[1:] == keys[:-1]).any())


def existing_ids_mask(paths: DatasetPaths, ids) -> pa.Array:
    base_ids = pq.read_table(paths.records, columns=["id"])["id"]
    return pc.is_in(ids, value_set=base_ids.combine_chunks())


def existing_duplicates(ids, dup) -> DuplicateIDError:
    """S8 with on_conflict='error': ≤5 of the ids that already exist."""
    found = ids.filter(dup).to_pylist()
    return DuplicateIDError(f"{len(found)} id(s) already exist in the dataset: {found[:5]}",
                            groups=[{"id": i, "count": 2} for i in found[:5]],
                            hint="Use add_sequences(on_conflict='ignore') to skip existing records.")
