"""build_usr_definitions: a USR root becomes a Dagster code location."""
from __future__ import annotations

from pathlib import Path

from dagster import (AssetSelection, AutomationCondition, AutomationConditionSensorDefinition,
                     DefaultScheduleStatus, DefaultSensorStatus, Definitions, FilesystemIOManager, ScheduleDefinition,
                     define_asset_job, in_process_executor)

from usr_core import Dataset, discover_datasets, load_registry

from .assets import UsrNamespace, external_namespace_spec, namespace_asset, records_asset
from .checks import dataset_check, namespace_checks
from .common import namespace_key, overlay_namespaces, records_key
from .io_manager import UsrIOManager
from .jobs import OP_IO, compaction_schedule, maintenance_jobs
from .resources import UsrResource
from .sensors import event_log_sensor
from .shards import shard_jobs


def build_usr_definitions(root, namespaces: list[UsrNamespace] | tuple = (), *, datasets=None,
                          part_threshold: int = 8, bytes_threshold: int = 0, compaction_cron: str = "0 3 * * *",
                          running: bool = False, automation_condition: AutomationCondition | None = None,
                          executor=in_process_executor, sensor_interval: int = 15,
                          checks_cron: str = "0 * * * *") -> Definitions:
    """Read registry.yaml and discover datasets/overlays under `root` (L3, L8).

    Assets: `<dataset>/records` (observable) for each dataset; `<dataset>/<ns>` for each namespace function
    that applies to the dataset (materializable) and for each other overlay found on disk (external).
    `running=True` starts the event sensor, the automation sensor, the compaction schedule and the checks schedule
    (`checks_cron`, hourly: every asset check on its own, against the registry and files as they are then).
    New datasets/namespaces appear when the code location reloads (definitions are read from disk at load)."""
    root = str(Path(root).resolve())
    reg = load_registry(root, False) or {}
    names = discover_datasets(root) if datasets is None else list(datasets)
    assets, checks, ns_keys = [], [], []
    sharded = {}  # partitioned namespace assets get a job per shard count (usr_shards_<n>)
    for dataset in names:
        assets.append(records_asset(root, dataset))
        checks.append(dataset_check(dataset))
        defined = set()
        for spec in namespaces:
            if spec.applies_to(dataset):
                assets.append(namespace_asset(root, dataset, spec, reg, automation_condition=automation_condition))
                defined.add(spec.name)
                if spec.shards:
                    sharded[namespace_key(dataset, spec.name)] = spec.shards
        on_disk = overlay_namespaces(Dataset(root, dataset))
        for ns in on_disk:
            if ns not in defined:
                assets.append(external_namespace_spec(root, dataset, ns, reg))
        for ns in sorted(defined | set(on_disk)):
            checks.append(namespace_checks(dataset, ns, part_threshold=part_threshold,
                                           bytes_threshold=bytes_threshold))
        ns_keys.extend(k for k in (namespace_key(dataset, ns) for ns in sorted(defined)) if k not in sharded)

    jobs = maintenance_jobs(names, part_threshold=part_threshold, bytes_threshold=bytes_threshold)
    if names:
        jobs.append(define_asset_job("usr_observe_records", selection=AssetSelection.assets(
            *[records_key(d) for d in names]), description="Observe every dataset's records (data versions, G1)."))
    jobs.extend(shard_jobs(sharded))
    if ns_keys:
        jobs.append(define_asset_job("usr_namespaces", selection=AssetSelection.assets(*ns_keys),
                                     description="Materialize every derived namespace of every dataset."))
    schedules = [compaction_schedule(jobs[0], compaction_cron, running)] if names else []
    if checks:
        check_job = define_asset_job("usr_checks", selection=AssetSelection.all_asset_checks(),
                                     description="Run every USR asset check (registry drift, compaction debt, keys, "
                                                 "schema, strict validation) against the files as they are now.")
        jobs.append(check_job)
        schedules.append(ScheduleDefinition(
            name="usr_checks_schedule", job=check_job, cron_schedule=checks_cron,
            default_status=DefaultScheduleStatus.RUNNING if running else DefaultScheduleStatus.STOPPED,
            description="Runs every USR asset check on its own, so the UI reflects registry and file changes made "
                        "outside Dagster."))
    known = {k for a in assets for k in (a.keys if hasattr(a, "keys") else [a.key])}
    check_keys = frozenset(k for c in checks for k in c.check_keys)
    sensors = [event_log_sensor(root, known_keys=frozenset(known), known_checks=check_keys, running=running,
                                interval=sensor_interval)]
    if automation_condition is not None:
        sensors.append(AutomationConditionSensorDefinition(
            "usr_automation_sensor", target=AssetSelection.all(),
            default_status=DefaultSensorStatus.RUNNING if running else DefaultSensorStatus.STOPPED))
    return Definitions(
        assets=assets, asset_checks=checks, jobs=jobs, schedules=schedules, sensors=sensors, executor=executor,
        resources={"usr": UsrResource(root=root), "io_manager": UsrIOManager(root=root),
                   OP_IO: FilesystemIOManager()},
    )
