"""init (L10) and ingest (S7-S9): rows appended to records.parquet, R14 inside the same transaction."""
from __future__ import annotations

from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from ..base import base_metadata, check_essentials, m1_metadata, rewrite_base, write_base_table
from ..contract import ARROW_SCHEMA, META_DATASET_CREATED_AT, META_REGISTRY_HASH, ts
from ..errors import SchemaError, SequencesError
from ..overlays.discovery import file_metadata
from ..records import AddSequencesResult, NewRows, validate_rows
from ..registry.registry import hash_registry
from ..storage.atomic import write_text
from ..txn import Transaction, Writer

ON_CONFLICT = ("error", "ignore")


def init(w: Writer, source: str = "", notes: str = "", actor=None) -> None:
    args = {"source": source}
    with w.transaction("init", args=args, actor=actor, exists=False) as txn:
        if w.exists():
            raise SequencesError(f"Dataset {w.name!r} already exists.", hint="Pick another name.")
        created = ts()
        text = (f"name: {w.name}\ncreated_at: {created}\nsource: {source}\nnotes: {notes}\n"
                f"schema: USR v1\n\n### Updates ({created[:10]})\n- {created}: initialized dataset.\n")
        txn.journal.before_write(txn.paths.meta)
        write_text(txn.paths.meta, text, label="meta")  # before records.parquet, the existence marker
        meta = m1_metadata({META_DATASET_CREATED_AT: created}, txn.registry_hash)
        write_base_table(txn.paths, ARROW_SCHEMA.empty_table(), meta, label="init", journal=txn.journal)
        txn.freeze()
        txn.event("init", args=args, metrics={"rows": 0})


def import_rows(w: Writer, rows, default_bio_type="dna", default_alphabet="dna_4", source=None,
                strict_id_check=True, actor=None) -> int:
    w.registry(required=True)
    w.require()
    with validate_rows(rows, bio_type=default_bio_type, alphabet=default_alphabet, source=source,
                       strict_id_check=strict_id_check) as new:
        args = {"n": new.num_rows, "source_param": source, "on_conflict": "error"}
        return _ingest(w, new, "error", args, actor, write_empty=True)


def add_sequences(w: Writer, rows, *, bio_type: str, alphabet: str, source: str = "", created_at=None,
                  on_conflict: str = "error", actor=None) -> AddSequencesResult:
    if on_conflict not in ON_CONFLICT:
        raise SchemaError(f"Unknown on_conflict {on_conflict!r}.", hint="Use 'error' or 'ignore'.")
    w.registry(required=True)
    w.require()
    with validate_rows(rows, bio_type=bio_type, alphabet=alphabet, source=source, created_at=created_at) as new:
        args = {"n": new.num_rows, "source_param": source, "on_conflict": on_conflict}
        added = _ingest(w, new, on_conflict, args, actor, write_empty=False)
    return AddSequencesResult(added, new.num_rows - added, new.ids())


class _SkipRows(Exception):
    """Some new ids already exist and on_conflict='ignore': the speculative append is discarded."""


def _ingest(w: Writer, new: NewRows, on_conflict: str, args: dict, actor, *, write_empty: bool) -> int:
    """S7-S9 and R14 in one transaction; returns rows written.  When R14 will not restamp the base, the new
    rows are encoded while their ids are still being hashed, and the id checks and the freeze run before
    that file is published (a failed check removes it)."""
    with w.transaction("import_rows", args=args, actor=actor) as txn:
        paths = txn.paths
        if new.num_rows and base_metadata(paths).get(META_REGISTRY_HASH) == txn.registry_hash:
            def checked():
                if new.kept(paths, on_conflict) is not None:
                    raise _SkipRows()
                txn.freeze()
            try:
                _append_rows(txn, new.chunks, before_publish=checked)
                return _ingested(txn, new.num_rows, new.num_rows, args)
            except _SkipRows:
                pass  # on_conflict="ignore" and some ids exist: rewrite without them
        keep = new.kept(paths, on_conflict)
        table = new.table() if keep is None else new.table().filter(keep)
        if not table.num_rows and not write_empty:
            return 0
        check_essentials(pq.read_schema(paths.records), paths.records)  # S9 before R14
        txn.freeze()
        if table.num_rows:
            _append_rows(txn, lambda: iter([table]))
        return _ingested(txn, table.num_rows, new.num_rows, args)


def _ingested(txn: Transaction, written: int, total: int, args: dict) -> int:
    txn.event("import_rows", args=args, metrics={"rows_written": written, "rows_skipped": total - written})
    return written


def _append_rows(txn: Transaction, new: Callable[[], Iterator[pa.Table]], before_publish=None) -> None:
    """S9: existing rows in order + the new S1 tables; extra materialized columns get NULL."""
    paths = txn.paths
    pf = pq.ParquetFile(paths.records)
    schema = pf.schema_arrow
    check_essentials(schema, paths.records)
    meta = m1_metadata(file_metadata(schema), hash_registry(txn.registry))
    out_schema = schema.remove_metadata()

    def batches():
        yield from pf.iter_batches(65536)
        for t in new():
            yield pa.Table.from_arrays([t[f.name] if f.name in t.column_names else pa.nulls(t.num_rows, f.type)
                                        for f in out_schema], schema=out_schema)

    rewrite_base(paths, out_schema, batches, meta, label="append", before_publish=before_publish, journal=txn.journal)
