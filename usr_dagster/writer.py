"""Writing a namespace part through usr_core and describing it for Dagster (MaterializeResult metadata)."""
from __future__ import annotations

import pyarrow as pa
from dagster import (DataVersion, MaterializeResult, TableColumn, TableColumnDep, TableColumnLineage,
                     TableSchema)

from usr_core import Dataset, PartWritten, canonical_type, load_registry, namespace_contract_hash, parse_type
from usr_core.registry import hash_registry

from .common import dagster_md, overlay_files, part_files, records_key

SEQUENCE_KEYS = ("sequence", "sequence_norm", "sequence_ci")


def to_arrow(obj) -> pa.Table:
    if isinstance(obj, pa.Table):
        return obj
    if isinstance(obj, pa.RecordBatch):
        return pa.Table.from_batches([obj])
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover
        pd = None
    if pd is not None and isinstance(obj, pd.DataFrame):
        return pa.Table.from_pandas(obj, preserve_index=False)
    raise TypeError(f"A namespace function must return a pyarrow Table or a pandas DataFrame, got "
                    f"{type(obj).__name__}.")


def conform(table: pa.Table, namespace: str, columns: list[dict], key: str) -> pa.Table:
    """Keep the key + registered columns, cast each to its registry type (pandas gives int64/double/list<double>)."""
    key_col = "sequence" if key in SEQUENCE_KEYS and key not in table.column_names else key
    if key_col not in table.column_names:
        raise ValueError(f"Namespace {namespace!r}: the function's result has no key column {key!r} "
                         f"(columns: {table.column_names}). Return the key with the data columns.")
    out = {key: table.column(key_col).cast(pa.string())}  # O6: the key column is named after the key
    missing = [c["name"] for c in columns if c["name"] not in table.column_names]
    if missing:
        raise ValueError(f"Namespace {namespace!r}: the function's result lacks registered columns {missing}. "
                         f"Return every column declared in the namespace, named <ns>__<field>.")
    for c in columns:
        target = parse_type(c["type"])
        col = table.column(c["name"])
        if col.type != target:
            try:
                col = col.cast(target)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise ValueError(f"Column {c['name']} ({col.type}) cannot be cast to its registry type "
                                 f"{c['type']}: {exc}") from exc
        out[c["name"]] = col
    return pa.table(out)


def column_schema(columns: list[dict], description: dict | None = None) -> TableSchema:
    description = description or {}
    return TableSchema(columns=[TableColumn(name=c["name"], type=c["type"], description=description.get(c["name"]))
                                for c in columns])


def column_lineage(dataset: str, columns: list[dict], key: str, uses=(), upstream: dict | None = None):
    """Each namespace column depends on the base join column, the base columns the function used, and the
    columns of upstream namespaces it read ({AssetKey: [column, ...]})."""
    join_col = "id" if key == "id" else "sequence"
    base = [join_col, *[u for u in uses if u != join_col]]
    deps = [TableColumnDep(asset_key=records_key(dataset), column_name=b) for b in base]
    for akey, cols in (upstream or {}).items():
        deps.extend(TableColumnDep(asset_key=akey, column_name=c) for c in cols)
    return TableColumnLineage(deps_by_column={c["name"]: deps for c in columns})


def namespace_result(ds: Dataset, dataset: str, namespace: str, columns: list[dict], key: str,
                     written: PartWritten | None, version: str | None, uses=(), upstream: dict | None = None,
                     extra: dict | None = None) -> MaterializeResult:
    """The MaterializeResult of a namespace write: data version = content version of the namespace (what readers
    see), so a run that changes no visible value reports the version it had."""
    loaded = load_registry(ds.root, False)
    reg = loaded or {}
    files = overlay_files(ds, namespace)
    meta = {
        **dagster_md(column_schema=column_schema(columns),
                     column_lineage=column_lineage(dataset, columns, key, uses, upstream)),
        "usr/rows_written": written.rows if written is not None else 0,
        "usr/part_count": len(part_files(files)),
        "usr/registry_hash": hash_registry(loaded) if loaded is not None else "",
        "usr/namespace_contract_hash": (namespace_contract_hash(reg, namespace) if namespace in reg else "") or "",
        **(extra or {}),
    }
    if written is not None and written.path is not None:
        meta.update(dagster_md(uri=written.path.resolve().as_uri(), row_count=written.rows))
        meta["usr/part_path"] = str(written.path)
    return MaterializeResult(metadata=meta, data_version=DataVersion(version) if version else None)


def registry_columns(root, namespace: str) -> list[dict] | None:
    reg = load_registry(root, False) or {}
    entry = reg.get(namespace)
    return [dict(c) for c in entry["columns"]] if entry else None


def arrow_type_string(dt: pa.DataType) -> str:
    return canonical_type(dt)

