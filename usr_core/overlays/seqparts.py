"""Reading a sequence-keyed part for a read join: its row groups in chunks, on two threads, each chunk's
keys matched to probe rows (varkeys) as soon as they are decoded, then dropped.

A part's key strings are most of what it holds (500k keys of 100-300 nt: 100 MB beside 12 MB of three
float columns), and decoding them is most of a read's work.  Chunk by chunk, only two chunks' keys are
held at once instead of the whole part's, and both cores decode and match instead of one decoding while
the other waits.  Keys that match no probe row are kept for the caller's O8 check (NULL keys aside).
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .discovery import Part
from .keys import normalize_keys
from .varkeys import VarKeyIndex

CHUNK_ROWS = 1 << 16  # most rows of one chunk of row groups (a chunk ends at the row group that reaches it)
WORKERS = 2  # chunk threads (one file each)


def row_group_chunks(md: pq.FileMetaData, rows: int | None = None) -> list[list[int]]:
    """Consecutive row groups, about `rows` rows a chunk (default: CHUNK_ROWS, or a WORKERS-th of a
    smaller part, so that both threads get a share of it)."""
    if rows is None:
        rows = max(1, min(CHUNK_ROWS, -(-md.num_rows // WORKERS)))
    chunks, current, n = [], [], 0
    for i in range(md.num_row_groups):
        current.append(i)
        n += md.row_group(i).num_rows
        if n >= rows:
            chunks.append(current)
            current, n = [], 0
    return chunks + ([current] if current else [])


@dataclass
class MatchedPart:
    data: pa.Table  # the part's data columns (its key column dropped)
    pos: np.ndarray  # each row's probe row, -1: none
    missed: pa.Array | pa.ChunkedArray  # the normalised non-NULL keys of the rows with no probe row
    read_bytes: int  # what decoding allocated, keys included


def read_matched(part: Part, key: str, columns: list[str], index: VarKeyIndex) -> MatchedPart:
    """The part's `columns` (those it has) and each row's probe row in `index`, chunk by chunk."""
    wanted = [key] + [c for c in columns if part.schema.get_field_index(c) >= 0]
    files = [pq.ParquetFile(part.path, pre_buffer=False)]
    mine = threading.local()  # a worker's own file (one ParquetFile is not read by two threads at once)
    spare = files[:1]

    def chunk(groups: list[int]) -> tuple[pa.Table, np.ndarray, list[pa.Array], int]:
        if not hasattr(mine, "file"):
            mine.file = spare.pop()
        t = mine.file.read_row_groups(groups, columns=wanted)
        keys = normalize_keys(t[key], key, combine=False)
        pos = index.positions(keys)
        miss = pos < 0
        missed = keys.filter(pa.array(miss)).drop_null() if miss.any() else None
        chunks = [] if missed is None else missed.chunks if isinstance(missed, pa.ChunkedArray) else [missed]
        return t.drop_columns([key]), pos, chunks, t.nbytes

    try:
        groups = row_group_chunks(files[0].metadata)
        schema = files[0].schema_arrow
        for _ in range(min(WORKERS, len(groups)) - 1):  # one file per thread that will read
            files.append(pq.ParquetFile(part.path, pre_buffer=False))
            spare.append(files[-1])
        if len(groups) < 2:
            done = [chunk(g) for g in groups]
        else:
            with ThreadPoolExecutor(WORKERS) as pool:
                done = list(pool.map(chunk, groups))
    finally:
        for f in files:
            f.close()
    data = pa.concat_tables([d[0] for d in done]) if done else \
        pa.schema([schema.field(c) for c in wanted[1:]]).empty_table()
    pos = np.concatenate([d[1] for d in done]) if done else np.empty(0, np.int64)
    missed = pa.chunked_array([c for d in done for c in d[2]], pa.string())
    return MatchedPart(data, pos, missed, sum(d[3] for d in done))
