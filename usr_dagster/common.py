"""Shared helpers: asset keys, overlay files on disk (L5, L8), data versions (G1), actors (E3)."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
from dagster import AssetKey

RECORDS = "records"
KINDS = {"usr", "parquet"}
TOMBSTONE_NS = "usr"
STATE_NS = "usr_state"
RESERVED = frozenset({TOMBSTONE_NS, STATE_NS})
META_CREATED_AT = b"usr:overlay_created_at"
META_REGISTRY_HASH = b"usr:registry_hash"
META_CONTRACT_HASH = b"usr:namespace_contract_hash"
META_KEY = b"usr:overlay_key"


def records_key(dataset: str) -> AssetKey:
    return AssetKey([*dataset.split("/"), RECORDS])


def namespace_key(dataset: str, namespace: str) -> AssetKey:
    if namespace == RECORDS:
        raise ValueError(f"Namespace 'records' in dataset {dataset!r} collides with the records asset key; "
                         "rename the namespace.")
    return AssetKey([*dataset.split("/"), namespace])


def split_key(key: AssetKey) -> tuple[str, str]:
    """(dataset, namespace or 'records') of an asset key built above."""
    path = list(key.path)
    if len(path) < 2:
        raise ValueError(f"Asset key {key.to_user_string()} is not a USR key (<dataset>/<namespace|records>).")
    return "/".join(path[:-1]), path[-1]


def safe_name(text: str) -> str:
    """Dagster names (groups, ops, pools) allow [A-Za-z0-9_] only."""
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def dagster_actor(run_id: str | None, what: str = "dagster") -> dict:
    """E3 actor for writes made by Dagster; the event sensor skips these (the run reports them itself)."""
    return {"tool": "dagster", "run_id": run_id or "dagster-no-run", "component": what}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


@dataclass(frozen=True)
class SourceFile:
    """One overlay file: the compact file or one part (L5, L8)."""

    path: Path
    created_at: str
    registry_hash: str | None
    contract_hash: str | None
    key: str | None
    rows: int
    size_bytes: int

    @property
    def rank(self) -> str:
        # O9 order: created_at + "\x1f" + file name, greatest newest
        return f"{self.created_at}\x1f{self.path.name}"


def _meta(path: Path) -> SourceFile:
    pf = pq.ParquetFile(path)
    md = pf.schema_arrow.metadata or {}

    def get(k):
        v = md.get(k)
        return v.decode() if v is not None else None

    return SourceFile(path, get(META_CREATED_AT) or "", get(META_REGISTRY_HASH), get(META_CONTRACT_HASH),
                      get(META_KEY), pf.metadata.num_rows, path.stat().st_size)


def overlay_namespaces(dataset_dir: Path) -> list[str]:
    """Namespaces with a compact file or a parts directory under _derived/ (L8, names only)."""
    derived = Path(dataset_dir) / "_derived"
    found = set()
    if not derived.is_dir():
        return []
    for child in derived.iterdir():
        if child.name.startswith(".") or child.name.startswith("_"):
            continue
        if child.is_file() and child.suffix == ".parquet" and not child.name.endswith(".tmp.parquet"):
            found.add(child.stem)
        elif child.is_dir() and any(child.glob("part-*.parquet")):
            found.add(child.name)
    return sorted(found)


def overlay_sources(dataset_dir: Path, namespace: str) -> list[SourceFile]:
    """Compact file and/or parts of a namespace, newest first (O9 rank)."""
    derived = Path(dataset_dir) / "_derived"
    files = []
    compact = derived / f"{namespace}.parquet"
    if compact.is_file():
        files.append(compact)
    parts_dir = derived / namespace
    if parts_dir.is_dir():
        files.extend(p for p in parts_dir.glob("part-*.parquet") if p.is_file())
    return sorted((_meta(p) for p in files), key=lambda s: s.rank, reverse=True)


def namespace_version(dataset_dir: Path, namespace: str) -> str | None:
    """Data version of a namespace: digest of its newest source file (a new part, or the compact file)."""
    sources = overlay_sources(dataset_dir, namespace)
    return sha256_file(sources[0].path) if sources else None


def _stat_token(path: Path) -> str:
    if not path.is_file():
        return f"{path.name}:absent"
    st = path.stat()
    md = pq.ParquetFile(path).metadata
    return f"{path.name}:{md.num_rows}:{md.num_columns}:{st.st_size}:{st.st_mtime_ns}"


def records_version(dataset_dir: Path) -> str:
    """G1: base usr:registry_hash + fingerprints of records.parquet and of the reserved overlays that change the
    visible rows (tombstones, usr_state). Cheap: footers and stat only."""
    dataset_dir = Path(dataset_dir)
    records = dataset_dir / "records.parquet"
    md = (pq.read_schema(records).metadata or {}) if records.is_file() else {}
    parts = [(md.get(META_REGISTRY_HASH) or b"").decode(), _stat_token(records)]
    for ns in sorted(RESERVED):
        parts.extend(_stat_token(s.path) for s in overlay_sources(dataset_dir, ns))
    return "fp:" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:40]



def dagster_md(**values) -> dict:
    """Standard `dagster/*` metadata keys (column_schema, column_lineage, row_count, table_name, storage_kind, uri);
    None values are dropped."""
    return {f"dagster/{k}": v for k, v in values.items() if v is not None}
