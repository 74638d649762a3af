"""export (X10): the merged read view (O10, all overlays) as csv, jsonl or parquet, streamed."""
from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
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
    encoded = pc.dictionary_encode(col)  # an ingest stamps one instant per batch: format each value once
    if len(encoded.dictionary) * 2 < len(col):
        return pc.take(_ts_strings(encoded.dictionary), encoded.indices)
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


# CSV cells (X10, issue 14): readers such as pandas.read_csv and DuckDB's read_csv must get the types back.
# floats always carry a '.', 'e', 'NaN' or 'inf' (106.0, not 106: an integral float column must not read back as
# int); NaN is `NaN` and NULL an empty cell, so the two stay apart; booleans `True`/`False` as pandas writes them;
# text is quoted only when it must be (a delimiter, quote or line break inside, or the empty string, which
# would otherwise read as NULL); nested values are JSON, timestamps TS.
_NEEDS_QUOTES = r'[",\r\n]|^$'


def _quoted(text: pa.Array) -> pa.Array:
    needs = pc.fill_null(pc.match_substring_regex(text, _NEEDS_QUOTES), False)
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(text, '"', '""'), '"', "")
    return pc.if_else(needs, quoted, text)


def _float_text(col: pa.Array) -> pa.Array:
    if pa.types.is_float16(col.type):
        col = col.cast(pa.float32())
    text = col.cast(pa.string())
    text = pc.replace_substring_regex(text, r"^(-?[0-9]+)$", r"\1.0")
    return pc.if_else(pc.fill_null(pc.is_nan(col), False), pa.scalar("NaN"), text)


def _list_json(col: pa.Array) -> pa.Array | None:
    """JSON text of a list of numbers or booleans built by Arrow kernels (the common derived-column case);
    None for other element types."""
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)):
        return None
    values, vt = pc.list_flatten(col), col.type.value_type
    if pa.types.is_floating(vt):
        finite = pc.fill_null(pc.is_finite(values), False)
        text = pc.if_else(finite, _float_text(values), pa.scalar("null"))
    elif pa.types.is_integer(vt):
        text = values.cast(pa.string())
    elif pa.types.is_boolean(vt):
        text = pc.if_else(values, pa.scalar("true"), pa.scalar("false"))
    else:
        return None
    lengths = pc.fill_null(pc.list_value_length(col), 0).to_numpy(zero_copy_only=False)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int32), pa.int32())
    lists = pa.ListArray.from_arrays(offsets, pc.fill_null(text, "null"), mask=col.is_null())
    return pc.binary_join_element_wise("[", pc.binary_join(lists, ","), "]", "")


def _python_json(col: pa.Array) -> pa.Array:
    """JSON text per value through Python's json (the general case: structs, lists of text, binary)."""
    return pa.array([None if v is None else json.dumps(_plain(v), ensure_ascii=False, allow_nan=False,
                                                       separators=(",", ":"))
                     for v in col.to_pylist()], pa.string())


def _nested_json(col: pa.Array) -> pa.Array:
    fast = _list_json(col)
    return fast if fast is not None else _python_json(col)


def _json_string(text: pa.Array) -> pa.Array:
    """JSON string literals, escaped as json.dumps(ensure_ascii=False) does; control characters are rare and
    take the Python path."""
    if pc.any(pc.match_substring_regex(text, r"[\x00-\x1f]")).as_py():
        return _python_json(text)
    escaped = pc.replace_substring(pc.replace_substring(text, "\\", "\\\\"), '"', '\\"')
    return pc.binary_join_element_wise('"', escaped, '"', "")


def _json_cells(col: pa.Array) -> pa.Array:
    """One column as JSON values (JSONL export); NULL, NaN and infinities are `null`."""
    t = col.type
    if pa.types.is_timestamp(t):
        text = _json_string(_ts_strings(col))
    elif _is_nested(t):
        text = _nested_json(col)
    elif pa.types.is_boolean(t):
        text = pc.if_else(col, pa.scalar("true"), pa.scalar("false"))
    elif pa.types.is_floating(t):
        text = pc.if_else(pc.fill_null(pc.is_finite(col), False), _float_text(col), pa.scalar("null"))
    elif pa.types.is_integer(t):
        text = col.cast(pa.string())
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        text = _json_string(col)
    else:
        text = _python_json(col)
    return pc.fill_null(text, "null")


def _csv_cells(col: pa.Array) -> pa.Array:
    """One column as CSV cell text; NULL stays NULL (written as an empty cell)."""
    t = col.type
    if pa.types.is_timestamp(t):
        return _ts_strings(col)
    if _is_nested(t):
        return _quoted(_nested_json(col))
    if pa.types.is_boolean(t):
        return pc.if_else(col, pa.scalar("True"), pa.scalar("False"))
    if pa.types.is_floating(t):
        return _float_text(col)
    if pa.types.is_integer(t):
        return col.cast(pa.string())
    if pa.types.is_null(t):
        return pa.nulls(len(col), pa.string())
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return _quoted(pa.array([None if v is None else _plain(v) for v in col.to_pylist()], pa.string()))
    return _quoted(col.cast(pa.string()))


def _lines(columns: list[pa.Array], open_: str = "", close: str = "") -> pa.Buffer:
    """Rows as `open_ + cells joined by ',' + close + newline`, joined column-wise by Arrow kernels (no per-row
    Python); NULL cells are empty."""
    if not columns or len(columns[0]) == 0:
        return pa.py_buffer(b"")
    comma, head, tail, nothing = (pa.scalar(x, pa.large_string()) for x in (",", open_, close + "\n", ""))
    lines = pc.binary_join_element_wise(*[c.cast(pa.large_string()) for c in columns], comma,
                                        null_handling="replace", null_replacement="")
    lines = pc.binary_join_element_wise(head, lines, tail, nothing)
    _validity, offsets, data = lines.buffers()
    pos = np.frombuffer(offsets, dtype=np.int64)
    start, stop = int(pos[lines.offset]), int(pos[lines.offset + len(lines)])
    return data.slice(start, stop - start)


def _csv_header(names: list[str]) -> pa.Buffer:
    return _lines([_quoted(pa.array([n], pa.string())) for n in names])


def _jsonl_lines(batch: pa.RecordBatch) -> pa.Buffer:
    keyed = [pc.binary_join_element_wise(json.dumps(name, ensure_ascii=False) + ":", _json_cells(col), "")
             for name, col in zip(batch.schema.names, batch.columns)]
    return _lines(keyed, "{", "}")


def check_format(fmt) -> str:
    f = str(fmt or "").strip().lower()
    if f not in FORMATS:
        raise SequencesError(f"Unsupported export format {fmt!r}.", hint=f"Use one of: {', '.join(FORMATS)}.")
    return f


def export(ds, fmt: str, out_path, columns=None, include_deleted: bool = False) -> Path:
    fmt = check_format(fmt)  # before touching disk
    ds.writer.require()
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
            with open(tmp, "wb") as fh:
                fh.write(_csv_header(schema.names))
                for b in batches:
                    fh.write(_lines([_csv_cells(c) for c in b.columns]))
        else:
            with open(tmp, "wb") as fh:
                for b in batches:
                    fh.write(_jsonl_lines(b))
    return out
