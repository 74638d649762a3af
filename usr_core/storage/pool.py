"""numpy arrays backed by Arrow's memory pool.

The pool keeps freed pages, while each fresh numpy array of megabytes page-faults on first touch
(costly in a new process)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

_ARANGE_BLOCK = 1 << 12


def pool_array(n: int, dtype) -> np.ndarray:
    """An uninitialised numpy array of n items in Arrow's memory pool."""
    dtype = np.dtype(dtype)
    return np.frombuffer(pa.allocate_buffer(max(n, 1) * dtype.itemsize), dtype)[:n]


def pool_arange(n: int, dtype=np.int64, step: int = 1) -> np.ndarray:
    """np.arange(n) * step in the pool, filled in one pass (block starts + one small block's offsets)."""
    out = pool_array(n, dtype)
    k = _ARANGE_BLOCK
    full = n - n % k
    if full:
        starts = np.arange(0, full, k, dtype=out.dtype)
        starts *= out.dtype.type(step)
        np.add(starts[:, None], np.arange(k, dtype=out.dtype) * out.dtype.type(step), out=out[:full].reshape(-1, k))
    out[full:] = np.arange(full, n, dtype=out.dtype) * out.dtype.type(step)
    return out


def one_array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """`values` as one Array: a ChunkedArray's only chunk as it is (ChunkedArray.combine_chunks copies
    even a single chunk: 200 MB of sequences cost ~90 ms), several chunks concatenated."""
    if isinstance(values, pa.ChunkedArray):
        return values.chunk(0) if values.num_chunks == 1 else values.combine_chunks()
    return values
