"""validate (V1-V3): schema, overlays against a registry mode, strict base columns, streamed row checks."""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .base import check_essentials
from .contract import (ARROW_SCHEMA, META_NAMESPACE_CONTRACT_HASH, META_REGISTRY_HASH, RESERVED_NAMESPACES,
                       TOMBSTONE_NS)
from .errors import DuplicateIDError, NamespaceError, RegistryMismatchError, SchemaError, SequencesError
from .identity import PY_WHITESPACE, check_columns, compute_ids
from .overlays.checks import (check_conformance, check_sequence_keys, check_source, check_tombstone_schema,
                              duplicate_part_keys, future_parts, require_key)
from .overlays.discovery import OverlaySource, discover_overlays, file_metadata
from .read import base_schema
from .registry.registry import hash_registry, load_frozen, load_registry, namespace_contract_hash
from .registry.types import canonical_type

MODES = ("current", "frozen", "either", "namespace-current", "namespace-frozen", "namespace-either")


@dataclass
class Candidate:
    label: str  # "current" | "frozen"
    registry: dict
    hash: str


def _frozen(ds, base_meta: dict, required: bool) -> Candidate | None:
    h = base_meta.get(META_REGISTRY_HASH)
    if not h:
        if required:
            raise SchemaError(f"Base {ds.records_path} has no usr:registry_hash metadata; "
                              "run registry-freeze to record the frozen registry.",
                              hint="Freeze the registry first: ds.freeze_registry() inside ds.maintenance().",
                              cli_hint=f"Freeze the registry first: `usr maintenance registry-freeze {ds.name}`.")
        return None
    path = ds.paths.freeze_file(h)
    if not path.is_file():
        if required:
            raise SchemaError(f"Frozen registry {path} not found; run registry-freeze.",
                              hint="Freeze the registry first: ds.freeze_registry() inside ds.maintenance().",
                              cli_hint=f"Freeze the registry first: `usr maintenance registry-freeze {ds.name}`.")
        return None
    return Candidate("frozen", load_frozen(path), h)


def candidates(ds, mode: str, base_meta: dict) -> list[Candidate]:
    kind = mode.split("-")[-1]
    out = []
    if kind in ("current", "either"):
        reg = load_registry(ds.root, required=True)
        out.append(Candidate("current", reg, hash_registry(reg)))
    if kind in ("frozen", "either"):
        frozen = _frozen(ds, base_meta, required=kind == "frozen")
        if frozen is not None:
            out.append(frozen)
    return out


def _overlay_against(src: OverlaySource, cand: Candidate, namespace_mode: bool) -> SchemaError | None:
    """None when the overlay passes V2 against `cand`, else the failure."""
    ns = src.namespace
    if namespace_mode:
        if ns in RESERVED_NAMESPACES:
            return None
        field = META_NAMESPACE_CONTRACT_HASH
        if ns not in cand.registry:
            return SchemaError(f"Overlay {src.path}: namespace {ns!r} is not in the {cand.label} registry")
        allowed = namespace_contract_hash(cand.registry, ns)
    else:
        field, allowed = META_REGISTRY_HASH, cand.hash
    got = src.first.meta.get(field)
    if not got:
        return SchemaError(f"Overlay missing {field} metadata ({src.path})")
    if got != allowed:
        return _mismatch(src, field, got, [allowed])
    if ns not in RESERVED_NAMESPACES:
        try:
            check_conformance(src, cand.registry)
        except SchemaError as exc:
            return exc
    return None


def _mismatch(src: OverlaySource, field: str, got: str, allowed: list[str]) -> RegistryMismatchError:
    return RegistryMismatchError(f"Overlay {field} mismatch for {src.path}: {got} not in [{', '.join(allowed)}]",
                                 field=field, path=src.path, got=got, allowed=allowed)


def check_overlay(src: OverlaySource, cands: list[Candidate], namespace_mode: bool) -> None:
    """V2: key metadata, then the hash check, then conformance (`usr` skips conformance)."""
    require_key(src, "V2")
    failures = [_overlay_against(src, c, namespace_mode) for c in cands]
    if any(exc is None for exc in failures):
        return
    mismatches = [e for e in failures if isinstance(e, RegistryMismatchError)]
    if len(mismatches) == len(failures) > 1:
        exc = _mismatch(src, mismatches[0].field, mismatches[0].got, [a for e in mismatches for a in e.allowed])
    else:
        exc = next((e for e in failures if not isinstance(e, RegistryMismatchError)), failures[0])
    exc.hint = ("Refresh the overlay (usr maintenance overlay-refresh-metadata), compact its parts, "
                "or validate with --registry-mode namespace-current if only other namespaces changed.")
    raise exc


def check_as_reader(ds, src: OverlaySource) -> None:
    """The checks a read makes on this overlay's files (overlays.checks.check_source: reserved files,
    key, created_at stamps, one type per column, T1), plus what a read finds only while merging: keys
    repeated within a part (O8) and O3 for sequence keys.  Parts dated in the future fail too: they
    would outrank every later write (O9)."""
    check_source(src, ds.paths, None)
    dup = duplicate_part_keys(src)
    if dup is not None:
        raise SchemaError(f"Overlay {dup[0]} has duplicate keys: {dup[1]} (O8).",
                          hint="Each key may appear once per overlay file; remove or rewrite that file.")
    future = future_parts(src)
    if future:
        raise SchemaError(f"Overlay {src.namespace!r} has parts dated in the future: {[str(p) for p in future]} "
                          "(O9: they outrank every later write).",
                          hint="Check the writer's clock; rewrite the values in a new part and remove those parts.")
    if src.key not in ("id", None):
        check_sequence_keys(ds.paths, src.key)


def _strict_reason(groups: dict, cand: Candidate, base_hash, namespace_mode: bool) -> str | None:
    if not namespace_mode and base_hash != cand.hash:
        return f"{cand.label}: base usr:registry_hash {base_hash} != {cand.hash}"
    for ns, cols in groups.items():
        if ns not in cand.registry:
            return f"{cand.label}: namespace {ns!r} not registered"
        registered = {c["name"]: c["type"] for c in cand.registry[ns]["columns"]}
        for name, dt in cols:
            if name not in registered:
                return f"{cand.label}: column {name} not registered under {ns!r}"
            try:
                canon = canonical_type(dt)
            except SequencesError as exc:
                return f"{cand.label}: column {name}: {exc}"
            if canon != registered[name]:
                return f"{cand.label}: column {name} is {canon}, registry says {registered[name]}"
    return None


def check_strict(schema: pa.Schema, base_meta: dict, cands: list[Candidate], namespace_mode: bool) -> None:
    """V3."""
    groups: dict[str, list] = {}
    for f in schema:
        if f.name in ARROW_SCHEMA.names:
            continue
        ns = f.name.split("__", 1)[0]
        if ns != TOMBSTONE_NS:
            groups.setdefault(ns, []).append((f.name, f.type))
    reasons = [_strict_reason(groups, c, base_meta.get(META_REGISTRY_HASH), namespace_mode) for c in cands]
    if not cands or all(r is not None for r in reasons):
        raise SchemaError("Materialized base columns failed strict registry validation: " + "; ".join(
            r for r in reasons if r), hint="Register the materialized columns, or run registry-freeze after an edit.")


def _with_offset(exc: SequencesError, offset: int) -> SequencesError:
    if offset == 0:
        return exc
    return type(exc)(f"{exc} (row numbers counted from base row {offset + 1})", hint=exc.hint)


def check_rows(ds, batch_size: int = 65536) -> None:
    """V1.6, streamed: ids non-empty, S5, length, id == S4; then id uniqueness over the id column."""
    pf = pq.ParquetFile(ds.records_path)
    offset = 0
    for batch in pf.iter_batches(batch_size=batch_size, columns=["id", "bio_type", "sequence", "alphabet", "length"]):
        ids, bts, seqs, als, lens = (batch.column(i) for i in range(5))
        empty = pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(ids)), 0), True)
        if pc.any(empty).as_py():
            raise SchemaError(f"Empty id at base rows {_rows(empty, offset)}.", hint="Recompute ids (S4).")
        try:
            check_columns(bts, als, seqs)
        except SequencesError as exc:
            raise _with_offset(exc, offset) from None
        norm_len = pc.utf8_length(pc.utf8_trim(seqs, PY_WHITESPACE)).cast(pa.int32())
        bad = pc.fill_null(pc.not_equal(lens, norm_len), True)
        if pc.any(bad).as_py():
            raise SchemaError(f"length does not match the sequence at base rows {_rows(bad, offset)}.",
                              hint="length must count the code points of the trimmed sequence (S1).")
        bad = pc.fill_null(pc.not_equal(ids, compute_ids(bts, seqs)), True)
        if pc.any(bad).as_py():
            raise SchemaError(f"id does not match sha1(bio_type|sequence) at base rows {_rows(bad, offset)}.",
                              hint="Ids are content-derived (S4); re-import the affected rows.")
        offset += batch.num_rows
    ids = pq.read_table(ds.records_path, columns=["id"])["id"]
    counts = pc.value_counts(ids.combine_chunks())
    dup = counts.filter(pc.greater(counts.field("counts"), 1))
    if len(dup):
        pairs = sorted(zip(dup.field("values").to_pylist(), dup.field("counts").to_pylist()),
                       key=lambda p: (-p[1], p[0]))
        raise DuplicateIDError(f"{len(dup)} duplicate id(s) in {ds.records_path}: "
                               + ", ".join(f"{i} x{c}" for i, c in pairs[:5]),
                               groups=[{"id": i, "count": c} for i, c in pairs[:5]],
                               hint="Drop the duplicates: ds.dedupe(key='id') inside ds.maintenance().",
                               cli_hint="Drop the duplicates: `usr maintenance dedupe DS --key id`.")


def _rows(mask, offset: int) -> str:
    return ", ".join(str(i + 1 + offset) for i in pc.indices_nonzero(mask).to_pylist()[:5])


def validate(ds, strict: bool = False, registry_mode: str = "current") -> None:
    if registry_mode not in MODES:
        raise SchemaError(f"Unknown registry mode {registry_mode!r}.", hint=f"Use one of: {', '.join(MODES)}.")
    schema = base_schema(ds.paths)  # not initialized -> SequencesError; unreadable footer -> SchemaError
    base_meta = file_metadata(schema)
    check_essentials(schema, ds.records_path)  # V1.1
    for f in schema:  # V1.2
        if f.name in ARROW_SCHEMA.names:
            continue
        ns, sep, fld = f.name.partition("__")
        if not sep or not ns or not fld:
            raise NamespaceError(f"Base column {f.name!r} is not an essential column nor <namespace>__<field>.",
                                 hint="Rename or drop it; extra base columns come only from materialize.")
    sources = discover_overlays(ds.paths)
    for src in sources:  # V1.3
        if src.namespace == TOMBSTONE_NS:
            check_tombstone_schema(src)
    namespace_mode = registry_mode.startswith("namespace-")
    cands = candidates(ds, registry_mode, base_meta)
    for src in sources:  # V1.4
        check_overlay(src, cands, namespace_mode)
        check_as_reader(ds, src)
    if strict:  # V1.5
        check_strict(schema, base_meta, cands, namespace_mode)
    check_rows(ds)  # V1.6
