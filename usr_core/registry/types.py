"""The registry type grammar (R6) <-> Arrow types, and column specs (R7)."""
from __future__ import annotations

import re

import pyarrow as pa

from ..errors import SchemaError

_SCALARS = {
    "string": pa.string(), "bool": pa.bool_(),
    "int8": pa.int8(), "int16": pa.int16(), "int32": pa.int32(), "int64": pa.int64(),
    "uint8": pa.uint8(), "uint16": pa.uint16(), "uint32": pa.uint32(), "uint64": pa.uint64(),
    "float16": pa.float16(), "float32": pa.float32(), "float64": pa.float64(),
}
_UNITS = ("s", "ms", "us", "ns")
_HINT = ("Types: string, bool, int8..int64, uint8..uint64, float16/32/64, list<T>, "
         "fixed_size_list<T>[N], struct<name:T,...>, timestamp[UNIT] or timestamp[UNIT, TZ].")


def split_depth0(text: str, sep: str = ",") -> list[str]:
    """Split at `sep` characters outside <...> and [...]."""
    out, depth, cur = [], 0, []
    for ch in text:
        if ch in "<[":
            depth += 1
        elif ch in ">]":
            depth -= 1
        if ch == sep and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


# Bounds of the grammar (issue 13 item 7): checked before parsing, so no input reaches a RecursionError,
# an OverflowError or a type too large to build.
MAX_TYPE_CHARS = 4096
MAX_TYPE_DEPTH = 32
MAX_FIXED_SIZE = 2**31 - 1  # Arrow's fixed_size_list size is an int32


def _check_bounds(text: str) -> None:
    if len(text) > MAX_TYPE_CHARS:
        raise SchemaError(f"Unsupported type of {len(text)} characters (limit {MAX_TYPE_CHARS}): {text[:60]!r}...",
                          hint=_HINT)
    depth = deepest = 0
    for ch in text:
        if ch in "<[":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ">]":
            depth -= 1
            if depth < 0:
                break
    if deepest > MAX_TYPE_DEPTH:
        raise SchemaError(f"Unsupported type {text[:60]!r}...: nested {deepest} levels deep (limit "
                          f"{MAX_TYPE_DEPTH}).", hint=_HINT)
    if depth != 0:
        raise SchemaError(f"Unsupported type {text[:80]!r}: unbalanced <> or [].", hint=_HINT)


def parse_type(text: str) -> pa.DataType:
    """R6 type string -> Arrow type; SchemaError on anything outside the grammar or its bounds."""
    if not isinstance(text, str):
        raise SchemaError(f"Unsupported type {text!r}: a type is a string.", hint=_HINT)
    _check_bounds(text)
    return _parse(text)


def _parse(text: str) -> pa.DataType:
    s = (text or "").strip()
    if s in _SCALARS:
        return _SCALARS[s]
    m = re.fullmatch(r"list<(.+)>", s)
    if m:
        return pa.list_(_parse(m.group(1)))
    m = re.fullmatch(r"fixed_size_list<(.+)>\[\s*(\d+)\s*\]", s)
    if m:
        digits = m.group(2)
        n = int(digits) if len(digits) <= 12 else MAX_FIXED_SIZE + 1
        if not 0 < n <= MAX_FIXED_SIZE:
            raise SchemaError(f"Unsupported type {text[:80]!r}: fixed_size_list size must be 1..{MAX_FIXED_SIZE}.",
                              hint=_HINT)
        return pa.list_(_parse(m.group(1)), n)
    m = re.fullmatch(r"struct<(.+)>", s)
    if m:
        fields = []
        for item in split_depth0(m.group(1)):
            name, sep, typ = item.partition(":")
            if not sep or not name.strip() or not typ.strip():
                raise SchemaError(f"Unsupported type {text!r}: struct fields are name:type.", hint=_HINT)
            fields.append(pa.field(name.strip(), _parse(typ)))
        return pa.struct(fields)
    m = re.fullmatch(r"timestamp\[\s*([a-z]+)\s*(?:,\s*(\S(?:.*?\S)?)\s*)?\]", s)
    if m and m.group(1) in _UNITS:
        return pa.timestamp(m.group(1), tz=m.group(2))
    raise SchemaError(f"Unsupported type {text!r}.", hint=_HINT)


def canonical_type(dt: pa.DataType) -> str:
    """Reverse mapping of R6; SchemaError for types outside the grammar."""
    for name, t in _SCALARS.items():
        if dt == t:
            return name
    if pa.types.is_large_string(dt) or pa.types.is_string_view(dt):
        return "string"
    if pa.types.is_fixed_size_list(dt):
        return f"fixed_size_list<{canonical_type(dt.value_type)}>[{dt.list_size}]"
    if pa.types.is_list(dt) or pa.types.is_large_list(dt) or pa.types.is_list_view(dt):
        return f"list<{canonical_type(dt.value_type)}>"
    if pa.types.is_struct(dt) and dt.num_fields:
        inner = ",".join(f"{dt.field(i).name}:{canonical_type(dt.field(i).type)}" for i in range(dt.num_fields))
        return f"struct<{inner}>"
    if pa.types.is_timestamp(dt):
        return f"timestamp[{dt.unit}, {dt.tz}]" if dt.tz else f"timestamp[{dt.unit}]"
    raise SchemaError(f"Unsupported Arrow type {dt}.", hint=_HINT)


def canonicalize_type_string(text: str) -> str:
    return canonical_type(parse_type(text))


def conforms(dt: pa.DataType, registry_type: str) -> bool:
    try:
        return canonical_type(dt) == registry_type
    except SchemaError:
        return False


def parse_columns_spec(spec: str) -> list[dict]:
    """R7: 'name:type' items separated by depth-0 commas; returns [{'name', 'type'}] canonical."""
    out = []
    for item in split_depth0(spec or ""):
        item = item.strip()
        if not item:
            continue
        name, sep, typ = item.partition(":")
        if not sep or not name.strip() or not typ.strip():
            raise SchemaError(f"Invalid column spec {item!r}. Use name:type.",
                              hint="E.g. mock__score:float64,mock__s:struct<a:int64,b:string>")
        out.append({"name": name.strip(), "type": canonicalize_type_string(typ)})
    return out
