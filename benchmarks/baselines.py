"""Hand-written baselines over the same files: the newest-non-null-wins merge (O9) of one part
overlay, LEFT JOINed to records.parquet, minus tombstones (T3) — once in DuckDB, once in pyarrow.

They read the layout of spec §1/§3 directly and skip every check usr_core makes (registry
conformance, key normalisation, O3), which is what makes them the figure to beat.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

CREATED_AT = b"usr:overlay_created_at"


def ranked_parts(ds_dir: Path, ns: str) -> list[Path]:
    """Part files oldest first: rank string = created_at + '\\x1f' + file name (O9)."""
    parts = [p for p in (Path(ds_dir) / "_derived" / ns).glob("part-*.parquet")]
    def rank(p: Path) -> str:
        meta = pq.read_schema(p).metadata or {}
        return meta[CREATED_AT].decode() + "\x1f" + p.name
    return sorted(parts, key=rank)


def _deleted_path(ds_dir: Path) -> Path | None:
    p = Path(ds_dir) / "_derived" / "usr.parquet"
    return p if p.exists() else None


def _data_columns(parts: list[Path], key: str) -> list[str]:
    cols: list[str] = []
    for p in parts:
        cols += [c for c in pq.read_schema(p).names if c != key and c not in cols]
    return cols


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def duckdb_merged_sql(ds_dir: Path, ns: str, key: str = "id", columns: list[str] | None = None) -> str:
    """`columns`: base columns and overlay columns (names as in the merged view) to return, instead of all;
    only those overlay columns are merged."""
    ds_dir = Path(ds_dir)
    parts = ranked_parts(ds_dir, ns)
    data = _data_columns(parts, key)
    if columns is not None:
        data = [c for c in data if c in columns]
    files = "[" + ", ".join(_sql_str(str(p)) for p in parts) + "]"
    ranks = ", ".join(f"({_sql_str(str(p))}, {i})" for i, p in enumerate(parts))
    aggs = ", ".join(f'arg_max("{c}", r) FILTER (WHERE "{c}" IS NOT NULL) AS "{c}"' for c in data)
    base_key = "id" if key == "id" else "sequence"
    out = ["b.*"] + [f'v."{c}"' for c in data] if columns is None else \
        [f'v."{c}"' if c in data else f'b."{c}"' for c in columns]
    sql = f"""
    WITH p AS (SELECT * FROM read_parquet({files}, filename=true, union_by_name=true)),
    rk AS (SELECT * FROM (VALUES {ranks}) AS rk(filename, r)),
    v AS (SELECT p."{key}" AS k, {aggs} FROM p JOIN rk USING (filename) GROUP BY p."{key}")
    SELECT {", ".join(out)}
    FROM read_parquet({_sql_str(str(ds_dir / "records.parquet"))}) b
    LEFT JOIN v ON b."{base_key}" = v.k"""
    dead = _deleted_path(ds_dir)
    if dead is not None:
        sql += f"""
    WHERE b.id NOT IN (SELECT id FROM read_parquet({_sql_str(str(dead))}) WHERE usr__deleted)"""
    return sql


def duckdb_merged_read(ds_dir: Path, ns: str, key: str = "id", batch_rows: int = 65536,
                       columns: list[str] | None = None) -> int:
    """Stream the merged view (or its `columns`) as Arrow record batches; returns the row count."""
    import duckdb

    con = duckdb.connect()
    reader = con.sql(duckdb_merged_sql(ds_dir, ns, key, columns)).to_arrow_reader(batch_rows)
    rows = 0
    for batch in reader:
        rows += batch.num_rows
    con.close()
    return rows


def pyarrow_overlay_view(parts: list[Path], key: str) -> pa.Table:
    """One row per key: per column, the value of the newest part where it is non-NULL.

    Rows are concatenated oldest part first, so the greatest row position wins; the per-column
    position of the newest non-NULL cell is a threaded `max` aggregation, then one `take`."""
    t = pa.concat_tables([pq.read_table(p) for p in parts], promote_options="default")
    data = [c for c in t.column_names if c != key]
    pos = pa.array(np.arange(t.num_rows, dtype=np.int64))
    cols = {key: t[key]}
    for c in data:
        cols[f"_p{c}"] = pc.if_else(pc.is_valid(t[c]), pos, pa.scalar(None, pa.int64()))
    g = pa.table(cols).group_by(key).aggregate([(f"_p{c}", "max") for c in data])
    view = {key: g[key]}
    for c in data:
        view[c] = t[c].take(g[f"_p{c}_max"])
    return pa.table(view)


def pyarrow_merged_read(ds_dir: Path, ns: str, key: str = "id") -> int:
    return pyarrow_merged_table(ds_dir, ns, key).num_rows


def pyarrow_merged_table(ds_dir: Path, ns: str, key: str = "id") -> pa.Table:
    ds_dir = Path(ds_dir)
    view = pyarrow_overlay_view(ranked_parts(ds_dir, ns), key)
    base = pq.read_table(ds_dir / "records.parquet")
    dead = _deleted_path(ds_dir)
    if dead is not None:
        ts = pq.read_table(dead, columns=["id", "usr__deleted"])
        gone = ts.filter(pc.equal(ts["usr__deleted"], True))["id"]
        base = base.filter(pc.invert(pc.is_in(base["id"], value_set=gone.combine_chunks())))
    base_key = "id" if key == "id" else "sequence"
    # Acero joins reject list payloads, so join key + row positions only and gather afterwards
    left = pa.table({"k": base[base_key], "_b": np.arange(base.num_rows, dtype=np.int64)})
    right = pa.table({"k": view[key], "_v": np.arange(view.num_rows, dtype=np.int64)})
    j = left.join(right, keys="k", join_type="left outer")
    out = base.take(j["_b"])
    for c in view.column_names:
        if c != key:
            out = out.append_column(c, view[c].take(j["_v"]))
    return out


def pyarrow_compact(parts: list[Path], key: str, out: Path) -> int:
    """Baseline for compaction: collapse the parts (O9) and write one zstd file."""
    view = pyarrow_overlay_view(parts, key)
    pq.write_table(view, out, compression="zstd")
    return view.num_rows


def duckdb_compact(parts: list[Path], key: str, out: Path) -> int:
    import duckdb

    data = _data_columns(parts, key)
    files = "[" + ", ".join(_sql_str(str(p)) for p in parts) + "]"
    ranks = ", ".join(f"({_sql_str(str(p))}, {i})" for i, p in enumerate(parts))
    aggs = ", ".join(f'arg_max("{c}", r) FILTER (WHERE "{c}" IS NOT NULL) AS "{c}"' for c in data)
    con = duckdb.connect()
    con.execute(f"""COPY (
      WITH p AS (SELECT * FROM read_parquet({files}, filename=true, union_by_name=true)),
      rk AS (SELECT * FROM (VALUES {ranks}) AS rk(filename, r))
      SELECT p."{key}", {aggs} FROM p JOIN rk USING (filename) GROUP BY p."{key}"
    ) TO {_sql_str(str(out))} (FORMAT parquet, COMPRESSION zstd)""")
    rows = pq.read_metadata(out).num_rows
    con.close()
    return rows
