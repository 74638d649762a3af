"""overlays.winners.take_rows: Arrow's take, with equal-length lists of fixed-width values (embeddings)
gathered by one numpy take; every other shape falls back to Arrow (O9 winners and ranged scans use it)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from usr_core.overlays.winners import take_rows


def _lists(typ: pa.DataType, n: int, width: int, rng) -> pa.Array:
    if pa.types.is_string(typ.value_type):
        return pa.array([[str(i)] * width for i in range(n)], typ)
    ints = pa.array([list(rng.integers(0, 100, width)) for _ in range(n)], pa.list_(pa.int64()))
    return ints.cast(pa.large_list(typ.value_type) if pa.types.is_large_list(typ) else typ)


@pytest.mark.parametrize("typ", [pa.list_(pa.float32()), pa.large_list(pa.float64()), pa.list_(pa.int64()),
                                 pa.list_(pa.timestamp("us", tz="UTC")), pa.list_(pa.string())])
def test_O9_take_rows_equals_arrow_take(typ):
    """[O9] whole and sliced arrays, repeated indices, rows made NULL: the same array as Arrow's take."""
    rng = np.random.default_rng(3)
    arr = _lists(typ, 60, 5, rng)
    for a in (arr, arr.slice(7, 30), arr.slice(59, 1)):
        idx = rng.integers(0, len(a), 45)
        nulls = rng.random(45) < 0.3
        assert take_rows(a, idx).equals(a.take(pa.array(idx)))
        assert take_rows(a, idx, nulls).equals(a.take(pa.array(idx, mask=nulls)))
        assert take_rows(a, idx[:0]).equals(a.take(pa.array(idx[:0])))


@pytest.mark.parametrize("arr", [
    pa.array([[1.0], [2.0, 3.0], [4.0]], pa.list_(pa.float32())),  # unequal lengths
    pa.array([[1.0, 2.0], None, [4.0, 5.0]], pa.list_(pa.float32())),  # a NULL list
    pa.array([[1.0, None], [2.0, 3.0], [4.0, 5.0]], pa.list_(pa.float32())),  # a NULL value
    pa.array([[], [], []], pa.list_(pa.float32())),  # empty lists
    pa.array([1.5, None, 3.5]),  # not a list
])
def test_O9_take_rows_falls_back_to_arrow_for_other_shapes(arr):
    idx = np.array([2, 0, 1, 1])
    nulls = np.array([False, True, False, False])
    assert take_rows(arr, idx).equals(arr.take(pa.array(idx)))
    assert take_rows(arr, idx, nulls).equals(arr.take(pa.array(idx, mask=nulls)))


@pytest.mark.parametrize("arr", [
    pa.array([f"{i:040x}" for i in range(50)]),  # ids: equal-length strings, gathered by numpy
    pa.array([f"{i:040x}" for i in range(50)]).slice(9, 20),
    pa.array(["a", "bb", "a"] * 10),  # unequal lengths
    pa.array(["ab", None, "cd"] * 10),  # a NULL string
])
def test_O9_take_rows_of_strings_equals_arrow_take(arr):
    rng = np.random.default_rng(4)
    idx = rng.integers(0, len(arr), 33)
    nulls = rng.random(33) < 0.3
    got = take_rows(arr, idx)
    assert got.equals(arr.take(pa.array(idx))) and got.validate(full=True) is None
    assert take_rows(arr, idx, nulls).equals(arr.take(pa.array(idx, mask=nulls)))

