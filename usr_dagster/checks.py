"""Asset checks: per namespace (registry drift, compaction debt, key uniqueness, schema conformance) and per
dataset (strict validation, V1/V3)."""

from dagster import (AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, AssetCheckSpec,
                     asset_check, multi_asset_check)

from usr_core import Dataset, SequencesError, load_registry, namespace_contract_hash, registry_hash

from .common import (is_reserved, namespace_key, overlay_files, overlay_problems, part_files, records_key,
                     safe_name)
from .resources import UsrResource

DRIFT, DEBT, KEYS, SCHEMA = "registry_drift", "compaction_debt", "key_uniqueness", "schema_conformance"


def _files_or_problem(key, check: str, ds, ns):
    try:
        return overlay_files(ds, ns), None
    except SequencesError as exc:
        return None, AssetCheckResult(asset_key=key, check_name=check, passed=False, description=str(exc)[:2000])


def drift_result(key, ds, ns, reg: dict, cur_reg: str | None) -> AssetCheckResult:
    """V2 for one namespace: `namespace-current` (contract hash) must hold, `current` (registry hash) should."""
    sources, failed = _files_or_problem(key, DRIFT, ds, ns)
    if failed:
        return failed
    if not sources:
        return AssetCheckResult(asset_key=key, check_name=DRIFT, passed=True, metadata={"files": 0},
                                description="No overlay files yet.")
    cur_ns = namespace_contract_hash(reg, ns) if ns in reg and not is_reserved(ns) else None
    bad_ns = [s.path.name for s in sources if cur_ns and s.contract_hash != cur_ns]
    stale = [s.path.name for s in sources if s.registry_hash != cur_reg]
    md = {"files": len(sources), "contract_mismatch": len(bad_ns), "registry_hash_stale": len(stale),
          "current_registry_hash": cur_reg or "", "current_contract_hash": cur_ns or ""}
    if ns not in reg and not is_reserved(ns):
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


def debt_result(key, ds, ns, part_threshold: int, bytes_threshold: int) -> AssetCheckResult:
    files, failed = _files_or_problem(key, DEBT, ds, ns)
    if failed:
        return failed
    parts = part_files(files)
    size = sum(s.size_bytes for s in parts)
    over = len(parts) >= part_threshold or (bytes_threshold > 0 and size >= bytes_threshold)
    md = {"parts": len(parts), "part_bytes": size, "part_threshold": part_threshold,
          "bytes_threshold": bytes_threshold}
    return AssetCheckResult(asset_key=key, check_name=DEBT, passed=not over, severity=AssetCheckSeverity.WARN,
                            metadata=md, description=(f"{len(parts)} parts ({size} bytes) pass the compaction "
                                                      "threshold; the compaction job will fold them.")
                            if over else None)


def keys_result(key, problems) -> AssetCheckResult:
    """O8: keys unique within each overlay file after the reader's normalisation (the reader's own check)."""
    bad = [p for p in problems if p.kind == "keys"]
    return AssetCheckResult(asset_key=key, check_name=KEYS, passed=not bad,
                            metadata={"files_with_duplicates": len(bad)},
                            description="; ".join(p.message for p in bad)[:2000] if bad else None)


def schema_result(key, problems) -> AssetCheckResult:
    """O1/O11 and everything else a reader would refuse: layout, metadata, registered columns, conforming types."""
    bad = [p for p in problems if p.kind != "keys"]
    return AssetCheckResult(asset_key=key, check_name=SCHEMA, passed=not bad, metadata={"problems": len(bad)},
                            description="; ".join(f"{p.message} Hint: {p.hint}" if p.hint else p.message
                                                  for p in bad[:5])[:2000] if bad else None)


def namespace_checks(dataset: str, ns: str, *, part_threshold: int, bytes_threshold: int):
    """The four checks of one namespace; each can run on its own (UI, the `usr_checks` job) and reads the registry
    and the files as they are when it runs."""
    key = namespace_key(dataset, ns)
    specs = [AssetCheckSpec(DRIFT, asset=key, description="Overlay hashes vs the current registry (V2)."),
             AssetCheckSpec(DEBT, asset=key, description="Part count/bytes vs the compaction threshold."),
             AssetCheckSpec(KEYS, asset=key, description="Keys unique per overlay file after normalisation (O8)."),
             AssetCheckSpec(SCHEMA, asset=key,
                            description="What a reader would refuse: layout, metadata, registered columns (O1, O11).")]

    @multi_asset_check(specs=specs, name=f"check_{safe_name(dataset)}__{safe_name(ns)}", can_subset=True)
    def _checks(context: AssetCheckExecutionContext, usr: UsrResource):
        selected = {k.name for k in context.selected_asset_check_keys}
        ds = Dataset(usr.root, dataset)
        if DRIFT in selected:
            yield drift_result(key, ds, ns, load_registry(usr.root, False) or {}, registry_hash(usr.root))
        if DEBT in selected:
            yield debt_result(key, ds, ns, part_threshold, bytes_threshold)
        if selected & {KEYS, SCHEMA}:
            problems = overlay_problems(ds, ns)
            if KEYS in selected:
                yield keys_result(key, problems)
            if SCHEMA in selected:
                yield schema_result(key, problems)

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
