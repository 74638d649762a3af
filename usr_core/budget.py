"""The memory budget of a read (issue 15): how much join state a scan may hold, and its estimate.

A scan joins overlays onto base rows.  Its state is the base key column(s) with their hash index,
the merged columns, and the parts in flight (their keys, key-to-row maps and data columns), all
proportional to N.  Sequence keys are matched in place (overlays.varkeys), so their state has a
lower peak factor than ids'.  When
the estimate fits the budget, the scan holds it once and streams base batches past it.  When it does
not, the scan cuts the key space into ranges (key prefixes) and joins one range at a time (rangescan);
rows come in base order either way.

The budget comes from the `memory_budget` argument, else the USR_MEMORY_BUDGET environment variable
(bytes, or a number with KB/MB/GB/KiB/MiB/GiB), else DEFAULT_BUDGET.
"""
from __future__ import annotations

import math
import os
import re

import pyarrow.parquet as pq

from .errors import SchemaError

ENV_VAR = "USR_MEMORY_BUDGET"
DEFAULT_BUDGET = 1 << 30
MIN_BUDGET = 16 << 20
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "t": 10**12, "tb": 10**12, "tib": 1 << 40}
# index bytes per base key: ids (keymatch.KeyIndex: hash, row, bucket); sequences (varkeys.VarKeyIndex:
# hash, row, bucket start)
_INDEX_BYTES_PER_KEY = {"id": 24, "sequence": 32}
_POSITION_BYTES = 8  # a part row's probe row (int64)
_PARTS_IN_FLIGHT = 2  # overlays.kernel.joined_columns: one part read while the previous one is merged


def parse_budget(value) -> int:
    """Bytes from an int or a text like '512MB' / '1 GiB' (SchemaError naming the fix otherwise)."""
    if isinstance(value, bool):
        value = None
    if isinstance(value, int):
        number = value
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
        unit = m.group(2).lower() if m else None
        if m is None or unit not in _UNITS:
            raise SchemaError(f"Memory budget {value!r} is not a size.",
                              hint=f"Give bytes or a number with a unit, e.g. 512MB or 2GiB (argument memory_budget "
                                   f"or {ENV_VAR}).")
        number = int(float(m.group(1)) * _UNITS[unit])
    if number < MIN_BUDGET:
        raise SchemaError(f"Memory budget {value!r} is below the minimum of {MIN_BUDGET >> 20} MiB.",
                          hint=f"Give at least {MIN_BUDGET >> 20}MiB.")
    return number


def memory_budget(value=None) -> int:
    """The budget of one read: `value`, else $USR_MEMORY_BUDGET, else DEFAULT_BUDGET (bytes)."""
    if value is not None:
        return parse_budget(value)
    env = os.environ.get(ENV_VAR, "").strip()
    return parse_budget(env) if env else DEFAULT_BUDGET


def row_group_bytes(md, names: set[str]) -> list[int]:
    """Per row group, the uncompressed bytes of the named columns in a parquet footer (close to their
    Arrow size)."""
    return [sum(rg.column(j).total_uncompressed_size for j in range(rg.num_columns)
                if rg.column(j).path_in_schema.split(".")[0] in names)
            for rg in (md.row_group(i) for i in range(md.num_row_groups))]


def _column_bytes(md, names: set[str]) -> int:
    return sum(row_group_bytes(md, names))


def _key_column(key: str) -> str:
    return "id" if key == "id" else "sequence"


def estimate_join_bytes(plan, base_md) -> int:
    """Bytes a whole-dataset join of `plan` holds at once (see the module docstring), scaled so that
    peak_bytes() is the expected peak: per key kind the base keys and their index; per overlay its merged
    columns aligned to base rows and the parts in flight (one read while the previous is merged), each
    with its key strings, data and row map.  Sequence-keyed state counts SEQUENCE_PEAK_FACTOR times."""
    n = base_md.num_rows
    state = {"id": 0, "sequence": 0}
    for k in {_key_column(s.key) for s, _ in plan.overlays} | ({"id"} if plan.tombstones is not None else set()):
        state[k] += _column_bytes(base_md, {k}) + n * _INDEX_BYTES_PER_KEY[k]
    sources = list(plan.overlays) + ([(plan.tombstones, ["usr__deleted"])] if plan.tombstones is not None else [])
    for src, cols in sources:
        widest = largest = 0
        for part in src.parts:
            md = pq.read_metadata(part.path)
            data = _column_bytes(md, set(cols))
            keys = _column_bytes(md, {src.key})
            largest = max(largest, keys + data + md.num_rows * _POSITION_BYTES)
            widest = max(widest, data / max(md.num_rows, 1))
        state[_key_column(src.key)] += _PARTS_IN_FLIGHT * largest + int(n * widest)
    return state["id"] + int(state["sequence"] * SEQUENCE_PEAK_FACTOR / PEAK_FACTOR)


# Peak resident memory over the sum above (read-ahead apart).  First calibrated at 5M rows, 3 overlapping
# parts, when every part was held (2.9x for a full scan, 3.1x for a projection); after the streamed join,
# at 1M rows, 10 parts of 500k, base order, fresh process, interpreter included: 706 MiB measured for 3
# float columns against 731 estimated (256 MiB read-ahead), 943 against 1069 with a list<float64>[8]
# column, 361 against 647 for a projection.  Key columns are copied to be matched, parquet decoding
# holds pages, the allocator keeps freed pages.
PEAK_FACTOR = 3.0
# Sequence keys (overlays.varkeys) are matched in place: the base keys are held once and a part's keys
# only while it is mapped.  1M rows of 100-300 nt, 10 parts of 500k, fresh process, interpreter included:
# 837-862 MiB measured against 1020 estimated (tombstones and read-ahead included), 795-863 against 820
# without tombstones.
SEQUENCE_PEAK_FACTOR = 1.2


def peak_bytes(join_estimate: int, read_ahead: int) -> int:
    """Expected peak of a whole-dataset scan (base order)."""
    return int(join_estimate * PEAK_FACTOR) + read_ahead


def range_count(join_estimate: int, budget: int, at_once: int = 1) -> int:
    """Key ranges that bring the share of the join of `at_once` ranges (rangescan) to about half the budget."""
    return max(2, math.ceil(join_estimate * PEAK_FACTOR * at_once / (budget / 2)))
