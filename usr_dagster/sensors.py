"""The event-log sensor (G2): tails every dataset's `.events.log` and reports runless asset events, so a part
attached with the `usr` CLI marks downstream assets stale without recomputing anything.

Cursor: JSON {dataset: {"ino": inode, "off": byte offset, "ts": last event timestamp}}. Gardening (X11) replaces
the log (new inode, shorter file): the sensor then rereads it from 0 and skips events not newer than `ts`.
Events are collapsed per asset and tick (one materialization/observation each, carrying the count)."""

import json
import os
from pathlib import Path

from dagster import (AssetMaterialization, AssetObservation, DefaultSensorStatus, SensorEvaluationContext,
                     SensorResult, SkipReason, sensor)

from usr_core import Dataset, discover_datasets, load_registry

from .common import (RESERVED, namespace_key, namespace_version, overlay_sources, records_key, records_version)
from .writer import column_lineage, column_schema

DATA_VERSION_TAG = "dagster/data_version"
# actions that change a namespace's content → runless materialization of <dataset>/<ns>
NS_MATERIALIZE = {"attach", "write_overlay_part", "create_overlay"}
# actions that touch a namespace's files without changing its merged view → observation
NS_OBSERVE = {"compact_overlay", "refresh_overlay_metadata", "remove_overlay", "archive_overlay"}
IGNORED = {"event_log_garden", "write_overlay_digest_ledger"}
MAX_BYTES_PER_TICK = 64 << 20


def read_new_events(path: Path, state: dict | None) -> tuple[list[dict], dict]:
    """Complete lines after the cursor; returns (events, new state). Handles gardening and partial lines."""
    state = dict(state or {})
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return [], state
    off, since = state.get("off", 0), None
    if state.get("ino") not in (None, st.st_ino) or st.st_size < off:
        off, since = 0, state.get("ts")  # gardened or replaced: reread, skip what we saw
    events = []
    with open(path, "rb") as fh:
        fh.seek(off)
        data = fh.read(MAX_BYTES_PER_TICK)
    end = data.rfind(b"\n") + 1  # a partial last line waits for the next tick
    for line in data[:end].splitlines():
        if not line.strip():
            continue
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if since and str(ev.get("timestamp_utc", "")) <= since:
            continue
        events.append(ev)
    state.update(ino=st.st_ino, off=off + end)
    if events:
        state["ts"] = max(str(e.get("timestamp_utc", "")) for e in events)
    return events, state


def _namespace_of(ev: dict) -> str | None:
    args, art = ev.get("args") or {}, ev.get("artifacts") or {}
    ns = args.get("namespace") or (art.get("overlay") or {}).get("namespace")
    return ns if isinstance(ns, str) else None


def _from_dagster(ev: dict) -> bool:
    return (ev.get("actor") or {}).get("tool") == "dagster"


def classify(ev: dict) -> tuple[str, str | None] | None:
    """('ns', namespace) | ('ns_observe', namespace) | ('records', None) | None (ignore)."""
    action = ev.get("action")
    if action in IGNORED:
        return None
    ns = _namespace_of(ev)
    if ns and ns not in RESERVED and action in NS_MATERIALIZE:
        return None if _from_dagster(ev) else ("ns", ns)  # Dagster runs report their own writes
    if ns and ns not in RESERVED and action in NS_OBSERVE:
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
            tags = {DATA_VERSION_TAG: records_version(ds.dir)} if ds.exists() else {}
            out.append(AssetObservation(asset_key=records_key(dataset), metadata=md, tags=tags))
            continue
        key = namespace_key(dataset, ns)
        if kind == "ns_observe":
            out.append(AssetObservation(asset_key=key, metadata=md))
            continue
        version = namespace_version(ds.dir, ns)
        sources = overlay_sources(ds.dir, ns)
        cols = (reg.get(ns) or {}).get("columns")
        if cols:
            md["dagster/column_schema"] = column_schema(cols)
            md["dagster/column_lineage"] = column_lineage(dataset, cols, sources[0].key if sources else "id")
        if sources:
            md["dagster/uri"] = sources[0].path.resolve().as_uri()
            md["dagster/row_count"] = (last.get("metrics") or {}).get("rows_written",
                                                                      (last.get("fingerprint") or {}).get("rows", 0))
            md["usr/part_count"] = sum(1 for s in sources if s.path.parent.name == ns)
        out.append(AssetMaterialization(asset_key=key, metadata=md,
                                        tags={DATA_VERSION_TAG: version} if version else None))
    return out


def evaluate(root, cursor: str | None, known_keys=frozenset()) -> tuple[list, str, list[str]]:
    """One tick: (asset events, new cursor, keys seen that the loaded definitions lack)."""
    state = json.loads(cursor) if cursor else {}
    asset_events, unknown = [], []
    for dataset in discover_datasets(root):
        evs, state[dataset] = read_new_events(Dataset(root, dataset).events_path, state.get(dataset))
        new = events_for_dataset(root, dataset, evs)
        asset_events.extend(new)
        unknown.extend(e.asset_key.to_user_string() for e in new
                       if known_keys and e.asset_key not in known_keys)
    return asset_events, json.dumps(state, sort_keys=True), sorted(set(unknown))


def event_log_sensor(root, *, known_keys=frozenset(), running: bool = False, interval: int = 15):
    @sensor(name="usr_event_log_sensor", minimum_interval_seconds=interval,
            default_status=DefaultSensorStatus.RUNNING if running else DefaultSensorStatus.STOPPED,
            description="Tails every dataset's .events.log; reports writes made outside Dagster as runless "
                        "materializations/observations with data versions.")
    def usr_event_log_sensor(context: SensorEvaluationContext):
        asset_events, cursor, unknown = evaluate(root, context.cursor, frozenset(known_keys))
        if unknown:
            context.log.info(f"New USR assets not in the loaded definitions: {', '.join(unknown)}. Reload the code "
                             "location (UI: Deployment > Reload) to see them in the asset graph.")
        if not asset_events:
            return SensorResult(skip_reason=SkipReason("No new USR events."), cursor=cursor)
        return SensorResult(asset_events=asset_events, cursor=cursor)

    return usr_event_log_sensor
