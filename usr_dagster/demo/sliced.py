"""Demo namespaces computed in slices (issue 12): `cpg` is sharded (4 partitions: launch a backfill of the shards
from the UI) and `gc_skew` is computed by an external script through Dagster Pipes (pipes_gc_skew.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from ..assets import usr_namespace
from ..pipes import usr_pipes_namespace
from .namespaces import OWNER

PIPES_SCRIPT = Path(__file__).with_name("pipes_gc_skew.py")


@usr_namespace("cpg", columns={"count": "int64", "obs_exp": "float64"}, owner=OWNER, shards=4)
def cpg(records: pa.Table) -> pa.Table:
    """CpG dinucleotides: count and observed/expected ratio (count * length / (C * G)); 4 shards of the ids."""
    seq = pc.utf8_upper(records.column("sequence"))
    n_cg = pc.count_substring(seq, "CG").cast(pa.int64())
    c, g = pc.count_substring(seq, "C").cast(pa.float64()), pc.count_substring(seq, "G").cast(pa.float64())
    expected = pc.divide(pc.multiply(c, g), pc.utf8_length(seq).cast(pa.float64()))
    ratio = pc.if_else(pc.greater(expected, 0), pc.divide(n_cg.cast(pa.float64()), expected), pa.scalar(None, pa.float64()))
    return pa.table({"id": records.column("id"), "cpg__count": n_cg, "cpg__obs_exp": ratio})


gc_skew = usr_pipes_namespace(
    "gc_skew", columns={"skew": "float64"}, command=[sys.executable, str(PIPES_SCRIPT)], owner=OWNER,
    description="GC skew (G - C) / (G + C) of each sequence, computed in another process through Dagster Pipes "
                "(usr_dagster/demo/pipes_gc_skew.py; the same script runs in a container or on an HPC node).")

SLICED_NAMESPACES = [cpg, gc_skew]
