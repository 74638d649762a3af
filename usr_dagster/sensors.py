"""The event-log sensor (G2): tails every dataset's `.events.log` and reports runless asset events, so a part
attached with the `usr` CLI marks downstream assets stale without recomputing anything.

Cursor: JSON {dataset: {"ino": inode, "off": byte offset, "ts": last event timestamp}}. Gardening (X11) replaces
the log (new inode, shorter file): the sensor then rereads it from 0 and skips events not newer than `ts`.
Events are collapsed per asset and tick (one materialization/observation each, carrying the count)."""

import json

from dagster import (AssetCheckEvaluation, AssetCheckKey, AssetMaterialization, AssetObservation, DefaultSensorStatus,
                     SensorEvaluationContext, SensorResult, SkipReason, sensor)

from usr_core import Dataset, SequencesError, discover_datasets, load_registry, registry_hash
from usr_core.inspect import EventCursor, files_fingerprint, tail_events

from .checks import DRIFT, drift_result
from .common import (is_reserved, namespace_key, namespace_version, overlay_files, overlay_namespaces, part_files,
                     records_key, records_version)
from .writer import column_lineage, column_schema

DATA_VERSION_TAG = "dagster/data_version"
# actions that change a namespace's content → runless materialization of <dataset>/<ns>
NS_MATERIALIZE = {"attach", "write_overlay_part", "create_overlay", "replace_overlay"}
# actions that touch a namespace's files without changing its merged view → observation
NS_OBSERVE = {"compact_overlay", "refresh_overlay_metadata", "remove_overlay", "archive_overlay"}
IGNORED = {"event_log_garden", "write_overlay_digest_ledger"}
MAX_BYTES_PER_TICK = 64 << 20
REGISTRY_CURSOR = "~registry_hash"  # not a dataset id: the registry hash seen at the last tick


def read_new_events(path, state: dict | None) -> tuple[list[dict], dict, list[str]]:
    """Complete lines after the cursor: (events, new cursor state, problems of skipped lines). Torn, non-JSON and
    non-object lines are skipped and reported; the cursor moves past them (usr_core.inspect.tail_events)."""
    tail = tail_events(path, EventCursor.from_dict(state), max_bytes=MAX_BYTES_PER_TICK)
    problems = [f"{path} byte {line.offset}: {line.problem}" for line in tail.skipped]
    return tail.events, tail.cursor.to_dict(), problems


def _mapping(value) -> dict:
    return value if isinstance(value, dict) else {}


def _namespace_of(ev: dict) -> str | None:
    args, art = _mapping(ev.get("args")), _mapping(ev.get("artifacts"))
    ns = args.get("namespace") or _mapping(art.get("overlay")).get("namespace")
    return ns if isinstance(ns, str) else None


def _from_dagster(ev: dict) -> bool:
    return _mapping(ev.get("actor")).get("tool") == "dagster"


def classify(ev: dict) -> tuple[str, str | None] | None:
    """('ns', namespace) | ('ns_observe', namespace) | ('records', None) | None (ignore)."""
    action = ev.get("action")
    if action in IGNORED:
        return None
    ns = _namespace_of(ev)
    if ns and not is_reserved(ns) and action in NS_MATERIALIZE:
        return None if _from_dagster(ev) else ("ns", ns)  # Dagster runs report their own writes
    if ns and not is_reserved(ns) and action in NS_OBSERVE:
        return None if _from_dagster(ev) else ("ns_observe", ns)
    return ("records", None)


def events_for_dataset(root, dataset: str, events: list[dict]) -> list:
    """Collapse one dataset's new events into asset events (one per asset)."""
    groups: dict[tuple, list[dict]] = {}
    for ev in events:
        kind = classify(ev)
        if kind is not None:
            groups.setdefault(kind, []).append(ev)
    if not groups:
        return []
    ds = Dataset(root, dataset)
    reg = load_registry(root, False) or {}
    out = []
    for (kind, ns), evs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        last = evs[-1]
        md = {"usr/events": len(evs), "usr/action": last.get("action", ""),
              "usr/event_timestamp": last.get("timestamp_utc", ""),
              "usr/actor": json.dumps(last.get("actor") or {}, sort_keys=True)}
        if kind == "records":
            tags = {DATA_VERSION_TAG: records_version(ds)} if ds.exists() else {}
            out.append(AssetObservation(asset_key=records_key(dataset), metadata=md, tags=tags))
            continue
        key = namespace_key(dataset, ns)
        if kind == "ns_observe":
            out.append(AssetObservation(asset_key=key, metadata=md))
            continue
        try:
            sources, version = overlay_files(ds, ns), namespace_version(ds, ns)
            md["usr/files_fingerprint"] = files_fingerprint(sources)
        except SequencesError as exc:  # a broken overlay: report the write, its checks say what is wrong
            sources, version = [], None
            md["usr/error"] = str(exc)[:500]
        cols = (reg.get(ns) or {}).get("columns")
        if cols:
            md["dagster/column_schema"] = column_schema(cols)
            md["dagster/column_lineage"] = column_lineage(dataset, cols, sources[0].key if sources else "id")
        if sources:
            md["dagster/uri"] = sources[0].path.resolve().as_uri()
            rows = _mapping(last.get("metrics")).get("rows_written", _mapping(last.get("fingerprint")).get("rows", 0))
            md["dagster/row_count"] = rows if isinstance(rows, int) else 0
            md["usr/part_count"] = len(part_files(sources))
        out.append(AssetMaterialization(asset_key=key, metadata=md,
                                        tags={DATA_VERSION_TAG: version} if version else None))
    return out


def describe(asset_events) -> str:
    """One line for the tick: which writes made outside Dagster were reported, which checks re-evaluated."""
    kinds = {AssetMaterialization: "materialization", AssetObservation: "observation"}
    writes = [e for e in asset_events if not isinstance(e, AssetCheckEvaluation)]
    items = [f"{e.asset_key.to_user_string()} ({kinds.get(type(e), 'event')}, "
             f"{(e.metadata.get('usr/action').value if e.metadata.get('usr/action') else '?')})" for e in writes]
    parts = [f"Reported {len(items)} write(s) made outside Dagster as runless asset events: " + ", ".join(items)
             ] if items else []
    checks = [e for e in asset_events if isinstance(e, AssetCheckEvaluation)]
    if checks:
        failed = sum(not e.passed for e in checks)
        parts.append(f"registry.yaml changed: re-evaluated {DRIFT} of {len(checks)} namespace(s), {failed} not passing")
    return "; ".join(parts)


def registry_drift_evaluations(root, datasets, known_checks) -> list[AssetCheckEvaluation]:
    """After a registry change (e.g. `usr namespace register`), the drift check of every namespace on disk, so the
    UI shows the registry as it is now without waiting for the scheduled check run."""
    reg, cur = load_registry(root, False) or {}, registry_hash(root)
    out = []
    for dataset in datasets:
        ds = Dataset(root, dataset)
        for ns in overlay_namespaces(ds):
            key = namespace_key(dataset, ns)
            if AssetCheckKey(key, DRIFT) not in known_checks:
                continue
            r = drift_result(key, ds, ns, reg, cur)
            out.append(AssetCheckEvaluation(asset_key=key, check_name=DRIFT, passed=r.passed, metadata=r.metadata,
                                            severity=r.severity, description=r.description))
    return out


def evaluate(root, cursor: str | None, known_keys=frozenset(), known_checks=frozenset()
             ) -> tuple[list, str, list[str], list[str]]:
    """One tick: (asset events and check evaluations, new cursor, keys seen that the loaded definitions lack,
    skipped-line problems)."""
    try:
        state = json.loads(cursor) if cursor else {}
    except ValueError:
        state = {}
    state = state if isinstance(state, dict) else {}
    asset_events, unknown, problems = [], [], []
    datasets = discover_datasets(root)
    for dataset in datasets:
        evs, state[dataset], bad = read_new_events(Dataset(root, dataset).events_path, state.get(dataset))
        problems.extend(bad)
        try:
            new = events_for_dataset(root, dataset, evs)
        except SequencesError as exc:
            problems.append(f"{dataset}: {exc}")
            continue
        asset_events.extend(new)
        unknown.extend(e.asset_key.to_user_string() for e in new
                       if known_keys and e.asset_key not in known_keys)
    seen, now = state.get(REGISTRY_CURSOR), registry_hash(root)
    state[REGISTRY_CURSOR] = now
    if seen is not None and seen != now and known_checks:
        asset_events.extend(registry_drift_evaluations(root, datasets, known_checks))
    return asset_events, json.dumps(state, sort_keys=True), sorted(set(unknown)), problems


def event_log_sensor(root, *, known_keys=frozenset(), known_checks=frozenset(), running: bool = False,
                     interval: int = 15):
    @sensor(name="usr_event_log_sensor", minimum_interval_seconds=interval,
            default_status=DefaultSensorStatus.RUNNING if running else DefaultSensorStatus.STOPPED,
            description="Tails every dataset's .events.log; reports writes made outside Dagster as runless "
                        "materializations/observations with data versions, and re-evaluates the registry drift "
                        "checks when registry.yaml changes.")
    def usr_event_log_sensor(context: SensorEvaluationContext):
        asset_events, cursor, unknown, problems = evaluate(root, context.cursor, frozenset(known_keys),
                                                           frozenset(known_checks))
        if unknown:
            context.log.info(f"New USR assets not in the loaded definitions: {', '.join(unknown)}. Reload the code "
                             "location (UI: Deployment > Reload) to see them in the asset graph.")
        skipped = ""
        if problems:
            context.log.warning(f"Skipped {len(problems)} unusable event-log line(s): " + "; ".join(problems[:10]))
            skipped = f" Skipped {len(problems)} unusable event-log line(s): {problems[0]}" + (
                " (more in the tick log)" if len(problems) > 1 else "")
        if not asset_events:
            return SensorResult(skip_reason=SkipReason(("No new USR events." + skipped).strip()), cursor=cursor)
        message = describe(asset_events) + "." + skipped
        context.log.info(message)
        return SensorResult(asset_events=asset_events, cursor=cursor, skip_reason=SkipReason(message))

    return usr_event_log_sensor
