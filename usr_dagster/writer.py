"""Writing a namespace part through usr_core and describing it for Dagster (MaterializeResult metadata)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from dagster import (DataVersion, MaterializeResult, TableColumn, TableColumnDep, TableColumnLineage,
                     TableSchema)

from usr_core import Dataset, load_registry, namespace_contract_hash, registry_hash

from usr_core import canonical_type, parse_type

from .common import dagster_md, namespace_version, overlay_sources, records_key, sha256_file

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


@dataclass(frozen=True)
class PartWrite:
    rows: int
    part: Path | None
    digest: str | None
    registry_hash: str | None
    contract_hash: str | None
    part_count: int


def write_part(ds: Dataset, namespace: str, table: pa.Table, *, key: str, actor: dict,
               event_args: dict | None = None) -> PartWrite:
    """write_overlay_part (auto-freeze and the event included), then find the new part on disk."""
    rows = ds.write_overlay_part(namespace, table, key=key, actor=actor, event_args=event_args or {})
    sources = overlay_sources(ds.dir, namespace)
    part = ds.last_part_path if rows else None
    new = [s for s in sources if part is not None and s.path == part]
    return PartWrite(rows=rows, part=part, digest=sha256_file(part) if part else None,
                     registry_hash=new[0].registry_hash if new else registry_hash(ds.root),
                     contract_hash=new[0].contract_hash if new else None,
                     part_count=sum(1 for s in sources if s.path.parent.name == namespace))


def namespace_result(ds: Dataset, dataset: str, namespace: str, columns: list[dict], key: str, written: PartWrite,
                     uses=(), upstream: dict | None = None, extra: dict | None = None) -> MaterializeResult:
    reg = load_registry(ds.root, False) or {}
    contract = written.contract_hash or (namespace_contract_hash(reg, namespace) if namespace in reg else None)
    version = written.digest or namespace_version(ds.dir, namespace)
    meta = {
        **dagster_md(column_schema=column_schema(columns), row_count=written.rows,
                           column_lineage=column_lineage(dataset, columns, key, uses, upstream)),
        "usr/rows_written": written.rows,
        "usr/part_count": written.part_count,
        "usr/registry_hash": written.registry_hash or "",
        "usr/namespace_contract_hash": contract or "",
        **(extra or {}),
    }
    if written.part is not None:
        meta.update(dagster_md(uri=written.part.resolve().as_uri()))
        meta["usr/part_path"] = str(written.part)
        meta["usr/part_digest"] = written.digest
    return MaterializeResult(metadata=meta, data_version=DataVersion(version) if version else None)


def registry_columns(root, namespace: str) -> list[dict] | None:
    reg = load_registry(root, False) or {}
    entry = reg.get(namespace)
    return [dict(c) for c in entry["columns"]] if entry else None


def arrow_type_string(dt: pa.DataType) -> str:
    return canonical_type(dt)

