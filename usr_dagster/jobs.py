"""Maintenance as jobs (G4): compaction, registry freeze, materialize; one op per dataset in a per-dataset pool, so
maintenance of one dataset never runs twice at once (pool limit 1 in dagster.yaml; the dataset lock A3 backs it)."""

from dagster import (AssetObservation, DefaultScheduleStatus, Field, OpExecutionContext, Out, ScheduleDefinition, job,
                     op)

from usr_core import Dataset, SequencesError

from .common import (dagster_actor, namespace_key, overlay_files, overlay_namespaces, part_files, records_key,
                     records_version, safe_name)

DATA_VERSION_TAG = "dagster/data_version"  # dagster's tag for data versions on runless/op-logged events
MAINTENANCE_TAG = "usr/maintenance"
OP_IO = "usr_op_io"  # op results (lists of namespaces, paths) go to the filesystem IO manager, not to UsrIOManager


def pool_name(dataset: str) -> str:
    return f"usr_maintenance__{safe_name(dataset)}"


def _observe_records(context: OpExecutionContext, ds: Dataset, dataset: str, action: str) -> None:
    context.log_event(AssetObservation(asset_key=records_key(dataset), metadata={"usr/action": action},
                                       tags={DATA_VERSION_TAG: records_version(ds)}))


def compaction_plan(ds: Dataset, part_threshold: int, bytes_threshold: int) -> list[tuple[str, int, int, str]]:
    """Every namespace with an overlay: (namespace, parts, part bytes, why it is compacted or skipped).
    A namespace is compacted when its part count (or bytes, when bytes_threshold > 0) passes the threshold."""
    plan = []
    for ns in overlay_namespaces(ds):
        try:
            parts = part_files(overlay_files(ds, ns))
        except SequencesError as exc:
            plan.append((ns, 0, 0, f"skipped: unreadable overlay ({exc})"))
            continue
        size = sum(s.size_bytes for s in parts)
        if not parts:
            why = "skipped: no parts (already one compact file)"
        elif len(parts) >= part_threshold:
            why = f"compact: {len(parts)} parts >= threshold {part_threshold}"
        elif bytes_threshold > 0 and size >= bytes_threshold:
            why = f"compact: {size} part bytes >= byte threshold {bytes_threshold}"
        else:
            why = f"skipped: {len(parts)} part(s) < threshold {part_threshold}" + (
                f", {size} bytes < byte threshold {bytes_threshold}" if bytes_threshold > 0 else "")
        plan.append((ns, len(parts), size, why))
    return plan


def _compact_op(dataset: str, part_threshold: int, bytes_threshold: int):
    @op(name=f"compact__{safe_name(dataset)}", pool=pool_name(dataset), required_resource_keys={"usr"},
        out=Out(io_manager_key=OP_IO),
        config_schema={"part_threshold": Field(int, default_value=part_threshold),
                       "bytes_threshold": Field(int, default_value=bytes_threshold,
                                                description="0 disables the byte threshold")},
        description=f"Compact every namespace of {dataset} whose parts pass the threshold (X2).")
    def _compact(context: OpExecutionContext) -> list:
        ds = context.resources.usr.dataset(dataset)
        cfg = context.op_config
        done = []
        plan = compaction_plan(ds, cfg["part_threshold"], cfg["bytes_threshold"])
        if not plan:
            context.log.info(f"{dataset}: nothing to compact (no namespace has an overlay)")
        for ns, n_parts, size, why in plan:
            context.log.info(f"{dataset}/{ns}: {why}")
            if not why.startswith("compact"):
                continue
            with ds.maintenance(reason=f"dagster compaction ({n_parts} parts)",
                                actor=dagster_actor(context.run_id, "compaction")):
                ds.compact_overlay(ns)
            context.log.info(f"{dataset}/{ns}: compacted {n_parts} parts ({size} bytes) into one file")
            # same merged view, new file: an observation, not a materialization
            context.log_event(AssetObservation(asset_key=namespace_key(dataset, ns),
                                               metadata={"usr/action": "compact_overlay", "usr/parts_before": n_parts,
                                                         "usr/part_bytes_before": size}))
            done.append(ns)
        if done:
            _observe_records(context, ds, dataset, "compact_overlay")
        return done

    return _compact


def _freeze_op(dataset: str):
    @op(name=f"freeze_registry__{safe_name(dataset)}", pool=pool_name(dataset), required_resource_keys={"usr"},
        out=Out(io_manager_key=OP_IO),
        description=f"registry-freeze {dataset} (X5): freeze file + restamp records with the current hash.")
    def _freeze(context: OpExecutionContext) -> str:
        ds = context.resources.usr.dataset(dataset)
        with ds.maintenance(reason="dagster registry-freeze", actor=dagster_actor(context.run_id, "freeze")):
            path = ds.freeze_registry()
        _observe_records(context, ds, dataset, "registry_freeze")
        return str(path)

    return _freeze


def _materialize_op(dataset: str):
    @op(name=f"materialize__{safe_name(dataset)}", pool=pool_name(dataset), required_resource_keys={"usr"},
        out=Out(io_manager_key=OP_IO),
        config_schema={"namespaces": Field([str], is_required=False, description="default: all but usr/usr_state"),
                       "drop_deleted": Field(bool, default_value=False),
                       "archive_overlays": Field(bool, default_value=False),
                       "keep_overlays": Field(bool, default_value=True)},
        description=f"materialize {dataset} (X6): fold overlays into records.parquet.")
    def _materialize(context: OpExecutionContext) -> list:
        ds = context.resources.usr.dataset(dataset)
        cfg = context.op_config
        selected = cfg.get("namespaces")
        before = overlay_namespaces(ds)
        with ds.maintenance(reason="dagster materialize", actor=dagster_actor(context.run_id, "materialize")):
            ds.materialize(namespaces=selected, keep_overlays=cfg["keep_overlays"],
                           archive_overlays=cfg["archive_overlays"], drop_deleted=cfg["drop_deleted"])
        folded = [ns for ns in before if selected is None or ns in selected]
        for ns in folded:
            context.log_event(AssetObservation(asset_key=namespace_key(dataset, ns),
                                               metadata={"usr/action": "materialize"}))
        _observe_records(context, ds, dataset, "materialize")
        return folded

    return _materialize


def maintenance_jobs(datasets: list[str], *, part_threshold: int = 8, bytes_threshold: int = 0):
    """The three maintenance jobs over `datasets` (empty list → no jobs)."""
    if not datasets:
        return []
    compact_ops = [_compact_op(d, part_threshold, bytes_threshold) for d in datasets]
    freeze_ops = [_freeze_op(d) for d in datasets]
    mat_ops = [_materialize_op(d) for d in datasets]

    @job(name="usr_compaction", tags={MAINTENANCE_TAG: "compaction"},
         description="Compact namespaces whose part count/bytes pass the threshold (X2), per dataset.")
    def usr_compaction():
        for o in compact_ops:
            o()

    @job(name="usr_registry_freeze", tags={MAINTENANCE_TAG: "freeze"},
         description="Freeze the current registry into every dataset (X5).")
    def usr_registry_freeze():
        for o in freeze_ops:
            o()

    @job(name="usr_materialize", tags={MAINTENANCE_TAG: "materialize"},
         description="Fold overlays into each dataset's records.parquet (X6). Configure per dataset op.")
    def usr_materialize():
        for o in mat_ops:
            o()

    return [usr_compaction, usr_registry_freeze, usr_materialize]


def compaction_schedule(compaction_job, cron: str = "0 3 * * *", running: bool = False) -> ScheduleDefinition:
    return ScheduleDefinition(name="usr_compaction_schedule", job=compaction_job, cron_schedule=cron,
                              default_status=(DefaultScheduleStatus.RUNNING if running
                                              else DefaultScheduleStatus.STOPPED),
                              description="Daily compaction of namespaces over the part threshold.")
