"""Namespaces computed in slices: shards (a partitioned asset, one partition per stable hash bucket of `id`),
batches (the function called on bounded record batches, parts written as it goes) and external compute through
Dagster Pipes. The row selection and writes are usr_core's (`usr_core.external`), so a Dagster step, a Celery
worker and a Pipes subprocess on another node do exactly the same thing."""
from collections import defaultdict

from dagster import (AssetExecutionContext, AssetSelection, DataVersion, Field, MaterializeResult,
                     PipesSubprocessClient, StaticPartitionsDefinition, asset, define_asset_job)

from usr_core import ensure_registry_entries, load_registry
from usr_core.external import compute_namespace

from . import incremental as inc
from .common import dagster_actor, dagster_md, namespace_key, records_key
from .resources import UsrResource
from .writer import column_lineage, column_schema


def check_slicing(name: str, shards: int, batch_size: int | None, key: str) -> None:
    """Clear errors for impossible slicing options, at declaration time."""
    if not isinstance(shards, int) or isinstance(shards, bool) or shards < 0 or shards == 1 or shards > 4096:
        raise ValueError(f"Namespace {name!r}: shards={shards!r} must be an integer from 2 to 4096 (0: not sharded).")
    if batch_size is not None and (not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1):
        raise ValueError(f"Namespace {name!r}: batch_size={batch_size!r} must be a positive integer (None: one call).")
    if (shards or batch_size) and key != "id":
        raise ValueError(f"Namespace {name!r}: shards and batch_size need key='id' (got key={key!r}); compute a "
                         "sequence-keyed namespace in one call.")


def shard_keys(shards: int) -> list[str]:
    """Partition keys of a sharded namespace: "0".."n-1", zero-padded so they sort in the UI."""
    width = len(str(shards - 1))
    return [f"{i:0{width}d}" for i in range(shards)]


def shards_partitions(shards: int) -> StaticPartitionsDefinition:
    return StaticPartitionsDefinition(shard_keys(shards))


def sliced_asset(root, dataset: str, spec, registry: dict, *, group: str, description: str, metadata: dict,
                 owners: list[str], automation_condition=None, pool=None):
    """The asset of a namespace with `shards`, `batch_size` or `command` (see usr_namespace)."""
    key = namespace_key(dataset, spec.name)
    upstream = [namespace_key(dataset, i) for i in spec.inputs]
    partitions = shards_partitions(spec.shards) if spec.shards else None
    wants_pandas = spec.fn is not None and _wants_pandas(spec.fn)

    @asset(key=key, deps=[records_key(dataset), *upstream], description=description, group_name=group,
           kinds={"usr", "parquet"}, owners=owners, code_version=spec.version(), metadata=metadata,
           automation_condition=automation_condition, pool=pool, partitions_def=partitions,
           tags={"usr/origin": "pipes" if spec.command else "dagster", **spec.tags},
           config_schema={"full_refresh": Field(bool, default_value=False, description=(
               "Recompute every visible row of the shard (parts: newest value wins), even when nothing changed."))})
    def _materialize(context: AssetExecutionContext, usr: UsrResource):
        ds = usr.dataset(dataset)
        if spec.fn is not None or spec.command:
            ensure_registry_entries(usr.root, {spec.name: spec.registry_entry()})  # R11: idempotent
        reg = load_registry(usr.root, True)
        ns_cols = [dict(c) for c in reg[spec.name]["columns"]]
        read = [*[u for u in spec.uses if u != "id"], *[c["name"] for i in spec.inputs
                                                        for c in reg.get(i, {}).get("columns", [])]]
        book = inc.bookkeeping(ds, spec.version(), ns_cols, spec.inputs)
        shard = int(context.partition_key) if partitions else None
        full = bool(context.op_execution_context.op_config.get("full_refresh")) or not spec.incremental
        run_id = context.run.run_id
        common = {"shard": shard, "shards": spec.shards or 1, "batch_size": spec.batch_size, "full_refresh": full}
        if spec.command:
            extras = {"root": str(usr.root), "dataset": dataset, "namespace": spec.name, "columns": read,
                      "bookkeeping": book, "inputs": list(spec.inputs), "run_id": run_id,
                      "asset": key.to_user_string(), **common}
            return PipesSubprocessClient().run(command=list(spec.command), context=context,
                                               extras=extras).get_materialize_result()

        def compute(table):
            return spec.fn(table.to_pandas() if wants_pandas else table)

        done = compute_namespace(ds, spec.name, compute, columns=read, bookkeeping=book, inputs=spec.inputs,
                                 actor=dagster_actor(run_id, "asset"), log=context.log.info,
                                 event_args={"dagster_run_id": run_id, "dagster_asset": key.to_user_string()},
                                 **common)
        md = {**dagster_md(column_schema=column_schema(ns_cols),
                           column_lineage=column_lineage(dataset, ns_cols, "id", spec.uses)),
              "usr/rows_computed": done.rows_input, "usr/rows_written": done.rows_written,
              "usr/parts_written": len(done.parts), "usr/mode": "full_refresh" if full else "incremental",
              "usr/part_paths": "\n".join(str(p.path) for p in done.parts if p.path is not None)}
        if shard is not None:
            md["usr/shard"] = f"{shard}/{spec.shards}"
        return MaterializeResult(metadata=md, data_version=DataVersion(done.version) if done.version else None)

    return _materialize


def _wants_pandas(fn) -> bool:
    from .assets import _wants_pandas as wants  # assets imports this module lazily: no cycle at import time

    return wants(fn)


def shard_jobs(sharded: dict) -> list:
    """One job per shard count (`usr_shards_<n>`): a job's assets share one partitions definition, so a backfill
    from the UI (Materialize → all partitions) launches one run per shard, run concurrently by the run queue."""
    by_count = defaultdict(list)
    for akey, n in sharded.items():
        by_count[n].append(akey)
    jobs = []
    for n, keys in sorted(by_count.items()):
        jobs.append(define_asset_job(
            f"usr_shards_{n}", selection=AssetSelection.assets(*keys).without_checks(),
            description=f"Materialize the namespaces declared with shards={n}: one run per shard (partition). "
                        "The namespace checks are not run per shard: they run in usr_checks, on their own."))
    return jobs
