"""Asset factories: `<dataset>/records` (observable), `<dataset>/<namespace>` (materializable or external)."""

import hashlib
import inspect
import re
from dataclasses import dataclass, field
from typing import Callable

import pyarrow.parquet as pq
from dagster import (AssetExecutionContext, AssetSpec, AutomationCondition, DataVersion, Field, ObserveResult,
                     asset, multi_observable_source_asset)

from usr_core import Dataset, ensure_registry_entries, namespace_contract_hash

from . import incremental as inc
from .common import (KINDS, RECORDS, dagster_actor, dagster_md, namespace_key, records_key, records_version,
                     safe_name)
from .resources import UsrResource
from .writer import arrow_type_string, column_lineage, column_schema, conform, namespace_result, to_arrow

RECORDS_CODE_VERSION = "usr-v1"


def _columns(namespace: str, columns) -> list[dict]:
    """Accept {'field' | 'ns__field': type}, [{'name','type'}] or [(name, type)]; names get the ns prefix."""
    if isinstance(columns, dict):
        items = list(columns.items())
    else:
        items = [(c["name"], c["type"]) if isinstance(c, dict) else tuple(c) for c in columns]
    out = []
    for name, typ in items:
        full = name if name.startswith(f"{namespace}__") else f"{namespace}__{name}"
        out.append({"name": full, "type": str(typ)})
    if not out:
        raise ValueError(f"Namespace {namespace!r} declares no columns.")
    return out


@dataclass(frozen=True)
class UsrNamespace:
    """A derived namespace: a plain function of a dataset's records returning `<ns>__<field>` columns + key."""

    name: str
    fn: Callable
    columns: list[dict]
    uses: tuple[str, ...] = ("sequence",)
    inputs: tuple[str, ...] = ()
    key: str = "id"
    owner: str | None = None
    description: str | None = None
    code_version: str | None = None
    datasets: Callable[[str], bool] | None = None
    tags: dict = field(default_factory=dict)
    incremental: bool = True
    replace_on_refresh: bool = True
    shards: int = 0  # >1: partitioned asset, one partition per stable id bucket (usr_dagster.shards)
    batch_size: int | None = None  # the function is called on batches of this many rows, parts written as it goes
    command: tuple[str, ...] | None = None  # computed by this command through Dagster Pipes (usr_pipes_namespace)

    def applies_to(self, dataset: str) -> bool:
        return self.datasets is None or bool(self.datasets(dataset))

    def registry_entry(self) -> dict:
        return {"columns": self.columns, "owner": self.owner, "description": self.description}

    def version(self) -> str:
        if self.code_version:
            return self.code_version
        try:
            src = inspect.getsource(self.fn)
        except (OSError, TypeError):
            src = self.fn.__qualname__
        blob = src + repr(self.columns) + repr(self.uses) + repr(self.inputs) + self.key
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def usr_namespace(name: str, *, columns, uses=("sequence",), inputs=(), key: str = "id", owner=None,
                  description=None, code_version=None, datasets=None, incremental: bool = True,
                  replace_on_refresh: bool = True, shards: int = 0, batch_size: int | None = None):
    """Decorator: `@usr_namespace("gc", columns={"fraction": "float64"})` on `def gc(records: pa.Table) -> pa.Table`.

    The function receives `id`, the `uses` base columns and the columns of the `inputs` namespaces (pyarrow
    Table, or pandas DataFrame when annotated so) and returns the key column (`id`, or `sequence` for sequence
    keys) plus the declared columns. `datasets` filters the datasets (list of ids or predicate).

    `incremental` (default True): a run computes only the rows without a value from the current code version
    (docs/dagster.md); False recomputes every visible row on every run. `replace_on_refresh` (default True): a
    full recomputation replaces the namespace's overlay (the view shows exactly the new output, NULLs included);
    False adds it as a part (newest-non-null-wins keeps older values where the new output is NULL).
    `shards` / `batch_size`: compute in slices (docs/dagster.md, "Shards, batches and Pipes")."""
    from .shards import check_slicing  # shards builds on this module

    check_slicing(name, shards, batch_size, key)
    pred = datasets
    if datasets is not None and not callable(datasets):
        allowed = set(datasets)
        pred = allowed.__contains__

    def deco(fn):
        return UsrNamespace(name=name, fn=fn, columns=_columns(name, columns), uses=tuple(uses),
                            inputs=tuple(inputs), key=key, owner=owner,
                            description=description or (inspect.getdoc(fn) or None), code_version=code_version,
                            datasets=pred, incremental=incremental, replace_on_refresh=replace_on_refresh,
                            shards=shards, batch_size=batch_size)

    return deco


def dagster_owners(owner: str | None) -> list[str]:
    """Registry owners are free text; Dagster wants an email or `team:<name>`."""
    if not owner:
        return []
    owner = owner.strip()
    if re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", owner) or (owner.startswith("team:") and len(owner) > 5):
        return [owner]
    team = re.sub(r"\s+", "_", owner.removeprefix("team:")) or "unknown"
    return [f"team:{team}"]


def _wants_pandas(fn) -> bool:
    params = list(inspect.signature(fn).parameters.values())
    if not params:
        raise TypeError(f"Namespace function {fn.__qualname__} must take the records table as its first argument.")
    ann = params[0].annotation
    text = ann if isinstance(ann, str) else f"{getattr(ann, '__module__', '')}.{getattr(ann, '__name__', '')}"
    return "DataFrame" in str(text)


def _definition_metadata(dataset: str, ns: str, key: str, columns: list[dict] | None, uri: str) -> dict:
    md = {"usr/dataset": dataset, "usr/namespace": ns, "usr/key": key}
    if columns:
        md.update(dagster_md(column_schema=column_schema(columns), table_name=f"{dataset}/{ns}",
                                   storage_kind="parquet"))
    md.update(dagster_md(uri=uri))
    return md


def records_asset(root, dataset: str, *, group: str | None = None):
    """Observable `<dataset>/records`: data version = content version of the visible records (G1)."""
    ds = Dataset(root, dataset)
    cols = [{"name": f.name, "type": _type_or_raw(f.type)} for f in pq.read_schema(ds.records_path)]
    spec = AssetSpec(
        key=records_key(dataset),
        description=f"Base records of USR dataset {dataset} ({ds.records_path}).",
        group_name=group or safe_name(dataset),
        kinds=set(KINDS),
        code_version=RECORDS_CODE_VERSION,
        owners=[],
        metadata=_definition_metadata(dataset, RECORDS, "id", cols, ds.records_path.resolve().as_uri()),
    )

    @multi_observable_source_asset(specs=[spec], name=f"observe_{safe_name(dataset)}_records")
    def _observe(context):
        d = Dataset(root, dataset)
        yield ObserveResult(asset_key=spec.key, data_version=DataVersion(records_version(d)),
                            metadata={**dagster_md(row_count=d.info().rows)})

    return _observe


def _type_or_raw(dt) -> str:
    try:
        return arrow_type_string(dt)
    except Exception:
        return str(dt)


def external_namespace_spec(root, dataset: str, ns: str, registry: dict, *, group: str | None = None) -> AssetSpec:
    """A namespace found on disk without a Dagster function (written by the CLI or other code)."""
    entry = registry.get(ns) or {}
    ds = Dataset(root, dataset)
    cols = entry.get("columns")
    contract = namespace_contract_hash(registry, ns) if entry else "unregistered"
    md = _definition_metadata(dataset, ns, "id", cols, ds.dir.resolve().as_uri())
    if cols:
        md.update(dagster_md(column_lineage=column_lineage(dataset, cols, "id", ())))
    return AssetSpec(key=namespace_key(dataset, ns), deps=[records_key(dataset)],
                     description=entry.get("description") or f"Namespace {ns} of {dataset} (written outside Dagster).",
                     group_name=group or safe_name(dataset), kinds=set(KINDS),
                     owners=dagster_owners(entry.get("owner")), code_version=contract[:12], metadata=md,
                     tags={"usr/origin": "external"})


def namespace_asset(root, dataset: str, spec: UsrNamespace, registry: dict, *, group: str | None = None,
                    automation_condition: AutomationCondition | None = None, pool: str | None = None):
    """Materializable `<dataset>/<ns>`: compute from the records, write one overlay part, report it."""
    key = namespace_key(dataset, spec.name)
    entry = registry.get(spec.name)
    cols = [dict(c) for c in entry["columns"]] if entry else spec.columns
    upstream = {namespace_key(dataset, i): [c["name"] for c in (registry.get(i) or {}).get("columns", [])]
                for i in spec.inputs}
    ds_dir = Dataset(root, dataset).dir
    md = _definition_metadata(dataset, spec.name, spec.key, cols, ds_dir.resolve().as_uri())
    md.update(dagster_md(column_lineage=column_lineage(dataset, cols, spec.key, spec.uses, upstream)))
    description = _with_lineage(spec.description, cols, spec.uses, spec.key, upstream)
    if spec.shards or spec.batch_size or spec.command:
        from .shards import sliced_asset

        return sliced_asset(root, dataset, spec, registry, group=group or safe_name(dataset), description=description,
                            metadata=md, owners=dagster_owners(spec.owner),
                            automation_condition=automation_condition, pool=pool)
    pandas_in = _wants_pandas(spec.fn)

    @asset(key=key, deps=[records_key(dataset), *upstream], description=description,
           group_name=group or safe_name(dataset), kinds=set(KINDS), owners=dagster_owners(spec.owner),
           code_version=spec.version(), metadata=md, automation_condition=automation_condition, pool=pool,
           tags={"usr/origin": "dagster", **spec.tags},
           config_schema={"full_refresh": Field(bool, default_value=False, description=(
               "Recompute every visible row and replace the namespace's overlay, even when nothing changed."))})
    def _materialize(context: AssetExecutionContext, usr: UsrResource):
        ds = usr.dataset(dataset)
        reg = ensure_registry_entries(usr.root, {spec.name: spec.registry_entry()})  # R11: idempotent
        ns_cols = [dict(c) for c in reg[spec.name]["columns"]]
        need = ["id", *[u for u in spec.uses if u != "id"]]
        up_cols = [c["name"] for i in spec.inputs for c in reg.get(i, {}).get("columns", [])]

        def compute(table):
            result = spec.fn(table.to_pandas() if pandas_in else table)
            return conform(to_arrow(result), spec.name, ns_cols, spec.key)

        book = inc.bookkeeping(ds, spec.version(), ns_cols, spec.inputs)
        last = context.instance.get_latest_materialization_event(key)
        last = last.asset_materialization if last is not None else None
        previous = None
        if last is not None and "usr/files_fingerprint" in last.metadata:
            previous = (last.metadata["usr/files_fingerprint"].value, (last.tags or {}).get("dagster/data_version"))
        out = inc.materialize(ds, spec.name, compute=compute, read_columns=need + up_cols, inputs=spec.inputs,
                              key=spec.key, book=book, full_refresh=bool(context.op_execution_context.op_config.get("full_refresh")),
                              incremental=spec.incremental, replace=spec.replace_on_refresh,
                              actor=dagster_actor(context.run.run_id, "asset"), log=context.log.info,
                              previous=previous, event_args={"dagster_run_id": context.run.run_id,
                                                             "dagster_asset": key.to_user_string()})
        return namespace_result(ds, dataset, spec.name, ns_cols, spec.key, out.written, out.version, uses=spec.uses,
                                upstream=upstream, extra={"usr/mode": out.mode, "usr/rows_computed": out.rows_input,
                                                          "usr/replaced": out.replaced,
                                                          "usr/files_fingerprint": out.fingerprint,
                                                          "usr/reasons": "; ".join(out.reasons) or "none"})

    return _materialize


def _with_lineage(description: str | None, columns: list[dict], uses, key: str, upstream: dict) -> str:
    """Column lineage rendered in the description: the open-source UI shows `dagster/column_lineage` only as raw
    metadata (the lineage view is a Dagster+ feature)."""
    join_col = "id" if key == "id" else "sequence"
    sources = [f"records.{c}" for c in dict.fromkeys([join_col, *uses])]
    sources += [f"{k.path[-1]}.{c}" for k, cols in upstream.items() for c in cols]
    lines = [f"- `{c['name']}` <- {', '.join(sources)}" for c in columns]
    return ((description or "").rstrip() + "\n\nColumn lineage:\n" + "\n".join(lines)).lstrip()
