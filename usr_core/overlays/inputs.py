"""Reading attach inputs (O5): parquet, csv, jsonl, json; JSON-in-string parsing; coercion to registry types."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from ..errors import SchemaError, option_hint
from ..registry.types import canonical_type, parse_type

SUPPORTED = (".parquet", ".csv", ".jsonl", ".json")


def read_input(path, key_col: str) -> pa.Table:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED:
        raise SchemaError(f"Unsupported attach input {path.name!r}.", hint="Use a .parquet, .csv, .jsonl or .json file.")
    if not path.is_file():
        raise FileNotFoundError(f"Attach input not found: {path}")
    try:
        if suffix == ".parquet":
            return pq.read_table(path)
        if suffix == ".csv":
            header = pacsv.open_csv(path).schema.names
            types = {name: pa.string() for name in header}
            return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=types,
                                                                             strings_can_be_null=True,
                                                                             null_values=[""]))
        if suffix == ".jsonl":
            return pajson.read_json(path)
        data = json.loads(path.read_text(encoding="utf-8"))
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        raise SchemaError(f"Cannot read {path}: {exc}", hint="Check the file's format and encoding.") from exc
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise SchemaError(f"{path} must hold a JSON array of objects.", hint="Use [{...}, {...}] or JSON lines.")
    return pa.Table.from_pylist(data)


def _parse_json_value(text, column: str, row: int):
    if text is None:
        return None
    s = text.strip()
    if not s.startswith(("[", "{")):
        return text
    try:
        return json.loads(s)
    except ValueError:
        if s.startswith("[") and "'" in s and '"' not in s:
            try:
                return json.loads(s.replace("'", '"'))
            except ValueError:
                pass
    raise SchemaError(f"Column {column} row {row}: value is not valid JSON: {s[:60]!r}",
                      **option_hint("Fix the value or pass {}.", "parse_json", False))


def coerce_column(col: pa.ChunkedArray | pa.Array, name: str, target_type: str, parse_json: bool) -> pa.Array:
    """O5 attach coercion to the registry type; SchemaError 'type mismatch' on failure."""
    target = parse_type(target_type)
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    try:
        if canonical_type(col.type) == target_type:
            return col.cast(target) if col.type != target else col
    except SchemaError:
        pass
    try:
        nested = pa.types.is_list(target) or pa.types.is_struct(target) or pa.types.is_fixed_size_list(target)
        if pa.types.is_null(col.type):
            return pa.nulls(len(col), target)
        if (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)) and nested:
            if not parse_json:
                raise SchemaError(f"type mismatch for {name}: strings cannot become {target_type} without JSON parsing",
                                  **option_hint("Pass {} or store real lists in parquet.", "parse_json"))
            values = [_parse_json_value(v, name, i + 1) for i, v in enumerate(col.to_pylist())]
            return pa.array(values, type=target)
        if pa.types.is_string(col.type) and pa.types.is_boolean(target):
            low = pc.utf8_lower(pc.utf8_trim_whitespace(col))
            return pc.cast(low, target)
        return pc.cast(col, target, safe=True)
    except SchemaError:
        raise
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError) as exc:
        raise SchemaError(f"type mismatch for {name}: cannot convert {col.type} to {target_type} ({exc})",
                          hint=f"Make the column's values valid {target_type}, or change the registry type.") from exc

