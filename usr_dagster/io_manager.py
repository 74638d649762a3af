"""UsrIOManager: downstream assets read the merged view (O10); tables returned by assets become overlay parts."""

import typing

from dagster import ConfigurableIOManager, InputContext, OutputContext
from pydantic import Field

from usr_core import Dataset

from .common import RECORDS, dagster_actor, namespace_version, split_key
from .writer import conform, namespace_result, registry_columns, to_arrow


def _target(context) -> tuple[str, str]:
    """(dataset, namespace|'records') from the asset's definition metadata, else from its key."""
    out = context.upstream_output if isinstance(context, InputContext) else context
    md = (out.definition_metadata if out is not None else None) or {}
    ds, ns = md.get("usr/dataset"), md.get("usr/namespace")
    if ds and ns:
        return _raw(ds), _raw(ns)
    return split_key(context.asset_key)


def _raw(value):
    return getattr(value, "value", value)


def _wants_pandas(context: InputContext) -> bool:
    try:
        tt = context.dagster_type.typing_type
    except Exception:
        return False
    if tt is typing.Any or tt is None:
        return False
    name = f"{getattr(tt, '__module__', '')}.{getattr(tt, '__name__', '')}"
    return name.startswith("pandas") and name.endswith("DataFrame")


class UsrIOManager(ConfigurableIOManager):
    """Loads `<dataset>/records` (base + all overlays) or `<dataset>/<ns>` (id + the namespace's columns).

    Input metadata (AssetIn(metadata=...)): `columns` (list of column names), `include_deleted` (bool),
    `include_overlays` (records only: True/False/list of namespaces). The input annotation picks the type:
    `pandas.DataFrame` → DataFrame, anything else → `pyarrow.Table`.
    An asset that returns a table through this manager writes it as an overlay part of its namespace.
    """

    root: str = Field(description="USR root directory (holds registry.yaml).")

    def load_input(self, context: InputContext):
        dataset, ns = _target(context)
        ds = Dataset(self.root, dataset)
        md = context.definition_metadata or {}
        columns = md.get("columns")
        include_deleted = bool(md.get("include_deleted", False))
        if ns == RECORDS:
            include_overlays = md.get("include_overlays", True)
        else:
            include_overlays = [ns]
            if columns is None:
                cols = registry_columns(self.root, ns) or []
                columns = ["id", *[c["name"] for c in cols]] if cols else None
        table = ds.read_table(columns=list(columns) if columns else None, include_overlays=include_overlays,
                              include_deleted=include_deleted)
        return table.to_pandas() if _wants_pandas(context) else table

    def handle_output(self, context: OutputContext, obj) -> None:
        if obj is None:
            return
        dataset, ns = _target(context)
        if ns == RECORDS:
            raise ValueError(f"UsrIOManager does not write {dataset}/records; ingest with Dataset.import_rows or "
                             "`usr import`, then observe the records asset.")
        cols = registry_columns(self.root, ns)
        if cols is None:
            raise ValueError(f"Namespace {ns!r} is not registered in {self.root}/registry.yaml; register it "
                             f"(`usr namespace register {ns} --columns ...`) or use the usr_namespace factory.")
        md = context.definition_metadata or {}
        key = _raw(md.get("usr/key", "id"))
        table = conform(to_arrow(obj), ns, cols, key)
        ds = Dataset(self.root, dataset)
        written = ds.write_part(ns, table, key=key, actor=dagster_actor(context.run_id, "io_manager"),
                                event_args={"dagster_run_id": context.run_id,
                                            "dagster_asset": context.asset_key.to_user_string()})
        result = namespace_result(ds, dataset, ns, cols, key, written, namespace_version(ds, ns))
        context.add_output_metadata(dict(result.metadata or {}))
