"""Key slots of a merge without probe keys (namespace views, compaction), for equal-width keys (ids).

Every part row gets the slot of its key, slots numbered in key order: one stable sort of the keys'
first 8 bytes (parts we write are sorted runs already, so the sort merges them), equal neighbours
confirmed on every byte.  Cheaper than hashing the strings into a dictionary, and the view comes out
in key order (what a clustered compact file needs).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from .keys import fixed_words


def array_chunks(a) -> list[pa.Array]:
    """The chunks of a ChunkedArray, or [the array]."""
    return a.chunks if isinstance(a, pa.ChunkedArray) else [a]


def _differ(words: np.ndarray, order: np.ndarray, same: np.ndarray) -> np.ndarray:
    """Neighbours (in `order`) whose words after the first differ (only looked at when some share it)."""
    differ = np.zeros(len(same), bool)
    for j in range(1, words.shape[1] if same.any() else 1):  # one word column at a time: no 2-D gathers
        column = np.take(words[:, j], order)
        differ |= column[1:] != column[:-1]
    return differ


def sorted_slots(keys: list) -> tuple[pa.Array, list[np.ndarray]] | None:
    """(distinct keys in byte order, each input's slots), or None when the keys are not all non-NULL
    and of one width (a multiple of 8 bytes): the caller then encodes them as a dictionary."""
    chunks = [c for k in keys for c in array_chunks(k) if len(c)]
    mats = [fixed_words(c, None) for c in chunks]
    if not mats or any(m is None for m in mats) or len({m.shape[1] for m in mats}) > 1:
        return None
    words = np.concatenate(mats) if len(mats) > 1 else mats[0]
    width = words.shape[1]
    prefix = words[:, 0].byteswap()
    order = np.argsort(prefix, kind="stable")  # stable: the newest part's row first
    prefix = prefix[order]
    same = prefix[1:] == prefix[:-1]
    differ = _differ(words, order, same)
    clash = same & differ
    if clash.any():  # distinct keys share their first 8 bytes (hex ids: a few per million): sort those
        group = np.cumsum(np.concatenate([[True], ~same]))  # runs of one prefix
        rows = np.flatnonzero(np.isin(group, group[1:][clash]))
        sub = order[rows]
        sub_keys = [words[sub, j].byteswap() for j in range(width - 1, 0, -1)] + [group[rows]]
        order[rows] = sub[np.lexsort(sub_keys)]  # stable: equal keys keep newest first
        inside = np.flatnonzero(np.diff(rows) == 1)  # neighbour pairs within those runs: compare again
        resorted = np.take(words, order[rows], axis=0)
        differ[rows[inside]] = (resorted[inside + 1] != resorted[inside]).any(axis=1)
    same &= ~differ
    new = np.concatenate([[True], ~same])
    slot_of_sorted = np.cumsum(new) - 1
    slots = np.empty(len(words), np.int64)
    slots[order] = slot_of_sorted
    first = np.take(words, order[new], axis=0)  # the distinct keys' bytes, in key order
    nbytes = 8 * width
    offsets = np.arange(0, (len(first) + 1) * nbytes, nbytes, dtype=np.int32)
    distinct = pa.StringArray.from_buffers(len(first), pa.py_buffer(offsets), pa.py_buffer(first))
    bounds = np.cumsum([0] + [len(k) for k in keys])
    return distinct, [slots[bounds[i]:bounds[i + 1]] for i in range(len(keys))]
