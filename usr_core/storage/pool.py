"""numpy arrays backed by Arrow's memory pool.

The pool keeps freed pages, while each fresh numpy array of megabytes page-faults on first touch
(costly in a new process)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa


def pool_array(n: int, dtype) -> np.ndarray:
    """An uninitialised numpy array of n items in Arrow's memory pool."""
    dtype = np.dtype(dtype)
    return np.frombuffer(pa.allocate_buffer(max(n, 1) * dtype.itemsize), dtype)[:n]


def pool_arange(n: int, dtype=np.int64, step: int = 1) -> np.ndarray:
    out = pool_array(n, dtype)
    if n:
        out[0] = 0
        out[1:] = step
        np.cumsum(out, out=out)
    return out
