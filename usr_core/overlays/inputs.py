"""Reading attach inputs (O5): parquet, csv, jsonl, json; JSON-in-string parsing; coercion to registry types."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from ..errors import SchemaError, environment_failure, option_hint
from ..registry.types import canonical_type, parse_type

SUPPORTED = (".parquet", ".csv", ".jsonl", ".json")

# Inputs of any size that fit the machine (issue 13 item 8): the reader's block starts at FIRST_BLOCK and
# grows x16 (up to the file size) whenever one line or object is larger than a block.
FIRST_BLOCK = 4 << 20
MAX_BLOCK = 2**31 - 1  # the readers' block size is an int32
# A header this wide is a mistake, and parsing 10^6 columns takes minutes: refused before reading the rows.
MAX_INPUT_COLUMNS = 10_000
_HEADER_PROBE = 1 << 20


def _input_error(path: Path, fmt: str, exc: BaseException) -> Exception:
    failure = environment_failure(exc, f"Cannot read {path}")
    if failure is not None:
        return failure
    shape = {"csv": "a header line naming its columns", "jsonl": "one JSON object per line"}.get(fmt, "")
    return SchemaError(f"Cannot parse {path} as {fmt.upper()}: {exc}",
                       hint=f"Check that {path.name} is UTF-8 {fmt.upper()} with {shape}; nothing was changed.")


def check_csv_header(path) -> None:
    """Refuse an empty CSV file and a header wider than MAX_INPUT_COLUMNS (counted on the raw first line), before
    any parsing (SchemaError; EnvironmentFailure when the file cannot be read)."""
    path = Path(path)
    try:
        _check_csv_header(path)
    except OSError as exc:
        raise _input_error(path, "csv", exc) from exc


def _check_csv_header(path: Path) -> None:
    with open(path, "rb") as fh:
        head = fh.read(_HEADER_PROBE)
        if not head.strip():
            raise SchemaError(f"{path} is empty.", hint="A CSV input needs a header line naming its columns "
                                                        "(e.g. `id,mock__score`) and one line per row.")
        commas = head.split(b"\n", 1)[0].count(b",")
        while b"\n" not in head and commas < MAX_INPUT_COLUMNS:
            chunk = fh.read(_HEADER_PROBE)
            if not chunk:
                break
            head = chunk
            commas += chunk.split(b"\n", 1)[0].count(b",")
    if commas >= MAX_INPUT_COLUMNS:  # commas inside quoted names only lower the true count
        raise SchemaError(f"{path} has more than {MAX_INPUT_COLUMNS} columns in its header line.",
                          hint="Keep only the columns you need (the key and the namespace's columns), e.g. with "
                               "`cut -d, -f...`; nothing was changed.")


def _growing_block(path: Path, fmt: str, read):
    """read(block_size) with the block grown x16 while a line/object straddles two blocks."""
    size, block = path.stat().st_size, FIRST_BLOCK
    while True:
        try:
            return read(block)
        except (pa.ArrowInvalid, UnicodeDecodeError, OSError) as exc:
            if "straddl" in str(exc) and block <= size and block < MAX_BLOCK:
                block = min(block * 16, size + 1, MAX_BLOCK)
                continue
            if "straddl" in str(exc):
                raise SchemaError(f"{path} has a line or object over {MAX_BLOCK} bytes, more than the reader "
                                  "handles.", hint="Split the value or use a parquet input; nothing was changed.")
            raise _input_error(path, fmt, exc) from exc


def read_csv(path, *, column_types: dict | None = None, all_strings: bool = False, null_values=None,
             strings_can_be_null: bool = True) -> pa.Table:
    """A CSV file of any size as an Arrow table: clear SchemaError for an empty file, a too-wide header or a parse
    error; EnvironmentFailure for disk/permission errors. `all_strings` reads every column as string."""
    path = Path(path)
    check_csv_header(path)

    def read(block: int) -> pa.Table:
        ropts = pacsv.ReadOptions(block_size=block)
        types = dict(column_types or {})
        if all_strings:
            types = {name: pa.string() for name in pacsv.open_csv(path, read_options=ropts).schema.names}
        copts = pacsv.ConvertOptions(column_types=types, strings_can_be_null=strings_can_be_null,
                                     **({"null_values": null_values} if null_values is not None else {}))
        return pacsv.read_csv(path, read_options=ropts, convert_options=copts)

    return _growing_block(path, "csv", read)


def read_jsonl(path) -> pa.Table:
    """A JSON-lines file of any size (objects larger than a block grow the block)."""
    path = Path(path)
    return _growing_block(path, "jsonl", lambda block: pajson.read_json(
        path, read_options=pajson.ReadOptions(block_size=block)))


def read_input(path, key_col: str) -> pa.Table:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED:
        raise SchemaError(f"Unsupported attach input {path.name!r}.", hint="Use a .parquet, .csv, .jsonl or .json file.")
    if not path.is_file():
        raise FileNotFoundError(f"Attach input not found: {path}")
    if suffix == ".csv":
        return read_csv(path, all_strings=True, null_values=[""])
    if suffix == ".jsonl":
        return read_jsonl(path)
    try:
        if suffix == ".parquet":
            return pq.read_table(path)
        data = json.loads(path.read_text(encoding="utf-8"))
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        raise _input_error(path, suffix[1:], exc) from exc
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

