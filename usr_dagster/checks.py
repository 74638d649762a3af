"""Asset checks: per namespace (registry drift, compaction debt, key uniqueness, schema conformance) and per
dataset (strict validation, V1/V3)."""

import pyarrow.compute as pc
import pyarrow.parquet as pq
from dagster import (AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, asset_check,
                     multi_asset_check)

from usr_core import Dataset, SequencesError, load_registry, namespace_contract_hash, registry_hash

from .common import RESERVED, namespace_key, overlay_sources, records_key, safe_name
from .resources import UsrResource
from .writer import arrow_type_string

DRIFT, DEBT, KEYS, SCHEMA = "registry_drift", "compaction_debt", "key_uniqueness", "schema_conformance"


def drift_result(key, ds_dir, ns, reg: dict, cur_reg: str | None) -> AssetCheckResult:
    """V2 for one namespace: `namespace-current` (contract hash) must hold, `current` (registry hash) should."""
    sources = overlay_sources(ds_dir, ns)
    if not sources:
        return AssetCheckResult(asset_key=key, check_name=DRIFT, passed=True, metadata={"files": 0},
                                description="No overlay files yet.")
    cur_ns = namespace_contract_hash(reg, ns) if ns in reg and ns not in RESERVED else None
    bad_ns = [s.path.name for s in sources if cur_ns and s.contract_hash != cur_ns]
    stale = [s.path.name for s in sources if s.registry_hash != cur_reg]
    md = {"files": len(sources), "contract_mismatch": len(bad_ns), "registry_hash_stale": len(stale),
          "current_registry_hash": cur_reg or "", "current_contract_hash": cur_ns or ""}
    if ns not in reg and ns not in RESERVED:
        return AssetCheckResult(asset_key=key, check_name=DRIFT, passed=False, metadata=md,
                                description=f"Namespace {ns} is not in registry.yaml; register it.")
    if bad_ns:
        return AssetCheckResult(asset_key=key, check_name=DRIFT, passed=False, metadata=md,
                                description=f"{len(bad_ns)} file(s) were written under another contract of {ns} "
                                            "(validate --registry-mode namespace-current fails); rewrite them.")
    if stale:
        return AssetCheckResult(asset_key=key, check_name=DRIFT, passed=False, severity=AssetCheckSeverity.WARN,
                                metadata=md,
                                description=f"{len(stale)} file(s) carry an older registry hash: default validation "
                                            "fails, namespace-current passes. Compact or refresh the metadata.")
    return AssetCheckResult(asset_key=key, check_name=DRIFT, passed=True, metadata=md)


def debt_result(key, ds_dir, ns, part_threshold: int, bytes_threshold: int) -> AssetCheckResult:
    parts = [s for s in overlay_sources(ds_dir, ns) if s.path.parent.name == ns]
    size = sum(s.size_bytes for s in parts)
    over = len(parts) >= part_threshold or (bytes_threshold > 0 and size >= bytes_threshold)
    md = {"parts": len(parts), "part_bytes": size, "part_threshold": part_threshold,
          "bytes_threshold": bytes_threshold}
    return AssetCheckResult(asset_key=key, check_name=DEBT, passed=not over, severity=AssetCheckSeverity.WARN,
                            metadata=md, description=(f"{len(parts)} parts ({size} bytes) pass the compaction "
                                                      "threshold; the compaction job will fold them.")
                            if over else None)


def keys_result(key, ds_dir, ns) -> AssetCheckResult:
    """O8: keys unique within the compact file and within each part."""
    bad = {}
    for s in overlay_sources(ds_dir, ns):
        kcol = s.key or "id"
        col = pq.read_table(s.path, columns=[kcol]).column(kcol)
        dups = len(col) - len(pc.unique(col))
        if dups:
            bad[s.path.name] = dups
    return AssetCheckResult(asset_key=key, check_name=KEYS, passed=not bad,
                            metadata={"files_with_duplicates": len(bad), "duplicate_keys": sum(bad.values())},
                            description=f"Duplicate keys in {sorted(bad)}" if bad else None)


def schema_result(key, ds_dir, ns, reg: dict) -> AssetCheckResult:
    """O1/O11: data columns registered under ns with conforming types."""
    if ns in RESERVED:
        return AssetCheckResult(asset_key=key, check_name=SCHEMA, passed=True, description="Reserved namespace.")
    types = {c["name"]: c["type"] for c in (reg.get(ns) or {}).get("columns", [])}
    problems = []
    for s in overlay_sources(ds_dir, ns):
        for f in pq.read_schema(s.path):
            if f.name == (s.key or "id"):
                continue
            want = types.get(f.name)
            try:
                got = arrow_type_string(f.type)
            except Exception:
                got = str(f.type)
            if want is None:
                problems.append(f"{s.path.name}: {f.name} not registered")
            elif got != want:
                problems.append(f"{s.path.name}: {f.name} is {got}, registry says {want}")
    return AssetCheckResult(asset_key=key, check_name=SCHEMA, passed=not problems,
                            metadata={"problems": len(problems)},
                            description="; ".join(problems[:5]) if problems else None)


def namespace_checks(dataset: str, ns: str, *, part_threshold: int, bytes_threshold: int):
    key = namespace_key(dataset, ns)
    specs = [AssetCheckSpec(DRIFT, asset=key, description="Overlay hashes vs the current registry (V2)."),
             AssetCheckSpec(DEBT, asset=key, description="Part count/bytes vs the compaction threshold."),
             AssetCheckSpec(KEYS, asset=key, description="Keys unique per overlay file (O8)."),
             AssetCheckSpec(SCHEMA, asset=key, description="Columns registered with conforming types (O1).")]

    @multi_asset_check(specs=specs, name=f"check_{safe_name(dataset)}__{ns}")
    def _checks(context: AssetCheckExecutionContext, usr: UsrResource):
        ds = Dataset(usr.root, dataset)
        reg = load_registry(usr.root, False) or {}
        yield drift_result(key, ds.dir, ns, reg, registry_hash(usr.root))
        yield debt_result(key, ds.dir, ns, part_threshold, bytes_threshold)
        yield keys_result(key, ds.dir, ns)
        yield schema_result(key, ds.dir, ns, reg)

    return _checks


def dataset_check(dataset: str):
    @asset_check(asset=records_key(dataset), name="strict_validation",
                 description="validate(strict=True): essentials, overlays, materialized columns, every row (§10).")
    def _strict(usr: UsrResource) -> AssetCheckResult:
        try:
            Dataset(usr.root, dataset).validate(strict=True)
        except SequencesError as exc:
            return AssetCheckResult(passed=False, description=str(exc)[:2000],
                                    metadata={"error": type(exc).__name__})
        return AssetCheckResult(passed=True)

    return _strict
