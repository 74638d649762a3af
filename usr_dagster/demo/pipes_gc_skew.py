"""External side of the demo's `gc_skew` namespace, launched by Dagster through Pipes. It imports usr_core and
pyarrow only (no dagster): the rows to compute, the part write and the report back are `pipes_main`'s job."""
import pyarrow as pa
import pyarrow.compute as pc

from usr_core.external import pipes_main


def gc_skew(records: pa.Table) -> pa.Table:
    seq = pc.utf8_upper(records.column("sequence"))
    g = pc.count_substring(seq, "G").cast(pa.float64())
    c = pc.count_substring(seq, "C").cast(pa.float64())
    total = pc.add(g, c)
    skew = pc.if_else(pc.greater(total, 0), pc.divide(pc.subtract(g, c), total), pa.scalar(None, pa.float64()))
    return pa.table({"id": records.column("id"), "gc_skew__skew": skew})


if __name__ == "__main__":
    pipes_main(gc_skew)
