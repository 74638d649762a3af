"""Synthetic data for the benchmarks: random DNA records and overlay part tables.

Only table builders live here; writing them into a dataset goes through usr_core's public API
(see `benchmarks.build`).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

N_COLS = 3          # float64 data columns per part
LIST_LEN = 8        # values per list<float64> cell
NULL_FRACTION = 0.10
PART_FRACTION = 0.50


def random_sequences(n: int, seed: int, lo: int = 100, hi: int = 300) -> pa.StringArray:
    """n random ACGT strings of length lo..hi, built straight from Arrow buffers (no Python loop)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(lo, hi + 1, n, dtype=np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    data = np.frombuffer(b"ACGT", dtype=np.uint8)[rng.integers(0, 4, int(offsets[-1]), dtype=np.uint8)]
    arr = pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))
    return arr.cast(pa.string())


def sequences_table(n: int, seed: int = 1) -> pa.Table:
    return pa.table({"sequence": random_sequences(n, seed)})


def _nullable(values: np.ndarray, rng: np.random.Generator) -> pa.Array:
    return pa.array(values, mask=rng.random(len(values)) < NULL_FRACTION)


def _list_column(n: int, rng: np.random.Generator) -> pa.Array:
    offsets = pa.array(np.arange(0, (n + 1) * LIST_LEN, LIST_LEN, dtype=np.int32))
    values = pa.array(rng.random(n * LIST_LEN))
    return pa.ListArray.from_arrays(offsets, values, mask=pa.array(rng.random(n) < NULL_FRACTION))


def part_tables(keys: pa.Array, ns: str, k: int, seed: int, *, key: str = "id",
                with_list: bool = False) -> list[pa.Table]:
    """k part tables, each a random 50% of `keys`, N_COLS float64 columns with 10% NULLs each
    (plus one list<float64> column if `with_list`)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(k):
        idx = np.flatnonzero(rng.random(len(keys)) < PART_FRACTION)
        out.append(overlay_table(keys.take(pa.array(idx)), ns, rng, key=key, with_list=with_list))
    return out


def overlay_table(keys: pa.Array, ns: str, rng: np.random.Generator, *, key: str = "id",
                  with_list: bool = False) -> pa.Table:
    cols = {key: keys}
    for c in range(N_COLS):
        cols[f"{ns}__c{c}"] = _nullable(rng.random(len(keys)), rng)
    if with_list:
        cols[f"{ns}__vec"] = _list_column(len(keys), rng)
    return pa.table(cols)


def registry_columns(ns: str, *, with_list: bool = False) -> list[dict]:
    cols = [{"name": f"{ns}__c{c}", "type": "float64"} for c in range(N_COLS)]
    if with_list:
        cols.append({"name": f"{ns}__vec", "type": "list<float64>"})
    return cols


def tombstone_ids(ids: pa.Array, fraction: float = 0.01, seed: int = 7) -> list[str]:
    rng = np.random.default_rng(seed)
    idx = np.flatnonzero(rng.random(len(ids)) < fraction)
    return ids.take(pa.array(idx)).to_pylist()



def sample(keys: pa.Array, m: int, seed: int) -> pa.Array:
    rng = np.random.default_rng(seed)
    return keys.take(pa.array(np.sort(rng.choice(len(keys), m, replace=False))))
