"""Descriptions of a dataset for people and tools: info, list_overlays, manifest, grep (reads only)."""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import events as ev
from . import read as rd
from .base import base_metadata
from .layout import DatasetPaths
from .overlays.discovery import SourceKind, discover_overlays


@dataclass
class DatasetInfo:
    name: str
    path: str
    rows: int
    columns: list[str]
    namespaces: list[str]


@dataclass
class OverlayInfo:
    namespace: str
    key: str | None
    created_at: str | None
    path: str
    columns: list[str]
    fingerprint: dict


@dataclass
class Manifest:
    name: str
    path: str
    metadata: dict
    fingerprint: dict
    overlays: list[OverlayInfo]
    snapshots: list[str]
    events: dict


def _overlays(paths: DatasetPaths) -> list[OverlayInfo]:
    out = []
    for src in discover_overlays(paths):
        target = src.path if src.kind == SourceKind.COMPACT else src.parts[-1].path
        out.append(OverlayInfo(src.namespace, src.key, src.created_at, str(src.path), src.data_columns(),
                               ev.fingerprint(target)))
    return out


def list_overlays(paths: DatasetPaths) -> list[OverlayInfo]:
    return rd.consistent(paths, lambda: _overlays(paths))


def info(paths: DatasetPaths) -> DatasetInfo:
    def build() -> DatasetInfo:
        rows = pq.ParquetFile(paths.records).metadata.num_rows
        cols = list(rd.output_schema(paths, include_deleted=True).names)
        nss = [s.namespace for s in discover_overlays(paths)]
        return DatasetInfo(paths.name, str(paths.records), rows, cols, nss)

    return rd.consistent(paths, build)


def manifest(paths: DatasetPaths, include_events: bool = False) -> Manifest:
    events = ev.read_events(paths)
    summary = {"count": len(events)}
    if include_events:
        summary["events"] = events
    snaps = sorted(p.name for p in paths.snapshots.glob("records-*.parquet"))
    return rd.consistent(paths, lambda: Manifest(paths.name, str(paths.dir), base_metadata(paths),
                                                 ev.fingerprint(paths.records), _overlays(paths), snaps, summary))


def grep(paths: DatasetPaths, pattern: str, limit: int = 20, *, include_deleted=False) -> pa.Table:
    out, got = [], 0
    for batch in rd.scan(paths, columns=["id", "sequence", "length"], include_overlays=False,
                         include_deleted=include_deleted):
        t = pa.Table.from_batches([batch])
        t = t.filter(pc.match_substring_regex(t["sequence"], pattern, ignore_case=True))
        out.append(t)
        got += t.num_rows
        if got >= limit:
            break
    if not out:
        return pa.table({"id": pa.array([], pa.string()), "sequence": pa.array([], pa.string()),
                         "length": pa.array([], pa.int32())})
    return pa.concat_tables(out).slice(0, limit)
