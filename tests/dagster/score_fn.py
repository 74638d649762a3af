"""The test namespace function (Dagster-free, so the Pipes script imports it without dagster)."""
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def score_table(records: pa.Table) -> pa.Table:
    """GC count, a CPU-bound digest of each sequence (USR_TEST_WORK rounds of a byte-wise hash, deterministic)
    and a value that is NULL for even GC counts. USR_TEST_SLEEP: seconds to sleep per call."""
    if float(os.environ.get("USR_TEST_SLEEP", "0")):
        time.sleep(float(os.environ["USR_TEST_SLEEP"]))
    work = int(os.environ.get("USR_TEST_WORK", "0"))
    digest = []
    for s in records.column("sequence").to_pylist():
        h = 0
        for _ in range(work):
            for ch in s[:64]:
                h = (h * 31 + ord(ch)) & 0xFFFFFFFF
        digest.append(h)
    gc = pc.add(pc.count_substring(records.column("sequence"), "G"),
                pc.count_substring(records.column("sequence"), "C"))
    return pa.table({"id": records.column("id"), "score__gc": gc.cast(pa.int64()),
                     "score__digest": pa.array(digest, pa.int64()),
                     "score__odd": pa.array(np.ones(len(gc)), mask=np.asarray(gc) % 2 == 0)})
