"""export (X10): the merged read view (O10, all overlays) as csv, jsonl or parquet, streamed."""
from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .. import read as rd
from ..contract import PARQUET_COMPRESSION, ts
from ..errors import SequencesError
from ..storage.atomic import atomic_path

FORMATS = ("csv", "jsonl", "parquet")
_TS_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # on timestamp[us] arrow prints the microseconds with %S


def _is_nested(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
            or pa.types.is_struct(t) or pa.types.is_map(t))


def _ts_strings(col: pa.Array) -> pa.Array:
    if col.type.tz is None:
        col = pc.assume_timezone(col, "UTC")
    col = col.cast(pa.timestamp("us", tz="UTC"), safe=False)
    return pc.strftime(col, format=_TS_FORMAT)


def _plain(value):
    """Python value → JSON-safe value: datetimes as TS, NaN/Infinity as null."""
    if isinstance(value, dt.datetime):
        return ts(value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc))
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _csv_column(col: pa.Array) -> pa.Array:
    if pa.types.is_timestamp(col.type):
        return _ts_strings(col)
    if _is_nested(col.type):
        return pa.array([None if v is None else json.dumps(_plain(v), ensure_ascii=False, allow_nan=False)
                         for v in col.to_pylist()], pa.string())
    return col


def _csv_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([(f.name, pa.string() if pa.types.is_timestamp(f.type) or _is_nested(f.type) else f.type)
                      for f in schema])


def check_format(fmt) -> str:
    f = str(fmt or "").strip().lower()
    if f not in FORMATS:
        raise SequencesError(f"Unsupported export format {fmt!r}.", hint=f"Use one of: {', '.join(FORMATS)}.")
    return f


def export(ds, fmt: str, out_path, columns=None, include_deleted: bool = False) -> Path:
    fmt = check_format(fmt)  # before touching disk
    ds._require()
    out = Path(out_path)
    schema = rd.output_schema(ds.paths, columns, True, include_deleted)
    batches = rd.scan(ds.paths, columns=columns, include_overlays=True, include_deleted=include_deleted)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, out.with_name(out.name + ".tmp"), label="export") as tmp:
        if fmt == "parquet":
            with pq.ParquetWriter(tmp, schema, compression=PARQUET_COMPRESSION) as writer:
                for b in batches:
                    writer.write_batch(b.cast(schema) if b.schema != schema else b)
        elif fmt == "csv":
            cschema = _csv_schema(schema)
            with pacsv.CSVWriter(tmp, cschema) as writer:
                for b in batches:
                    writer.write_batch(pa.RecordBatch.from_arrays([_csv_column(c) for c in b.columns],
                                                                  schema=cschema))
        else:
            with open(tmp, "w", encoding="utf-8") as fh:
                for b in batches:
                    for row in b.to_pylist():
                        fh.write(json.dumps(_plain(row), ensure_ascii=False, allow_nan=False,
                                            separators=(",", ":")) + "\n")
    return out
