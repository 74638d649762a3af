"""What a read takes (O10, O11): the base columns, the overlay sources and their columns, the output."""
from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from .contract import TOMBSTONE_COLUMNS, TOMBSTONE_NS
from .errors import SchemaError, SequencesError, option_hint
from .layout import DatasetPaths
from .overlays.checks import check_sequence_keys, check_source
from .overlays.discovery import OverlaySource, discover_overlays, read_file_schema
from .registry.registry import Registry, load_registry


def not_initialized(paths: DatasetPaths) -> SequencesError:
    return SequencesError(f"Dataset not initialized: {paths.name!r} (no {paths.records}).",
                          hint=f"Create it with Dataset(root, {paths.name!r}).init(), or check the root.",
                          cli_hint=f"Create it with `usr init {paths.name}`, or check --root / USR_ROOT.")


def base_schema(paths: DatasetPaths) -> pa.Schema:
    if not paths.records.is_file():
        raise not_initialized(paths)
    return read_file_schema(paths.records, hint="The base table is corrupt; restore it from _snapshots/.")


@dataclass
class ReadPlan:
    paths: DatasetPaths
    base_names: list[str]
    out_columns: list[str]
    overlays: list[tuple[OverlaySource, list[str]]] = field(default_factory=list)  # (source, data columns to take)
    tombstones: OverlaySource | None = None
    include_deleted: bool = False
    o3_passed: set = field(default_factory=set)  # O3 results of this read (checks.check_sequence_keys)
    o3_unique_by_join: bool = False  # base key uniqueness (O3) is checked by the join's key index

    @property
    def key_columns(self) -> list[str]:
        """The base columns the overlays and tombstones are joined on, sorted."""
        keys = {"id" if src.key == "id" else "sequence" for src, _ in self.overlays}
        return sorted(keys | ({"id"} if self.tombstones is not None else set()))

    @property
    def base_read(self) -> list[str]:
        need = [c for c in self.base_names if c in self.out_columns]
        keys = self.key_columns
        return need + [c for c in self.base_names if c in keys and c not in need]


def _needed_namespaces(columns, include_overlays) -> set[str] | None:
    """The namespaces a read uses (None: all).  Overlay columns are `<ns>__<field>` (O5), so explicit
    columns name their namespaces; tombstones (`usr`) are always needed.  A read opens only the files
    of these namespaces, so an unreadable part elsewhere does not break it."""
    if isinstance(include_overlays, (list, tuple, set)):
        allowed = set(include_overlays)
    else:
        allowed = None if include_overlays else set()
    if columns is not None:
        named = {c.split("__", 1)[0] for c in columns if "__" in c}
        allowed = named if allowed is None else allowed & named
    return None if allowed is None else allowed | {TOMBSTONE_NS}


def plan_read(paths: DatasetPaths, columns=None, include_overlays=True, include_deleted=False,
              registry: Registry | None = None, unique_by_join: bool = False) -> ReadPlan:
    """`unique_by_join`: the caller joins every base row (a scan), so the join checks that sequence keys
    are unique over the base (O3) from the index it builds of them, instead of a read of the ids here."""
    schema = base_schema(paths)
    base_names = list(schema.names)
    sources = discover_overlays(paths, _needed_namespaces(columns, include_overlays))
    tomb = next((s for s in sources if s.namespace == TOMBSTONE_NS), None)
    others = [s for s in sources if s.namespace != TOMBSTONE_NS]
    if isinstance(include_overlays, (list, tuple, set)):
        wanted = set(include_overlays)
        others = [s for s in others if s.namespace in wanted]
    elif not include_overlays:
        others = []
    reg = None
    if others:
        reg = registry if registry is not None else load_registry(paths.root, required=True)
    for src in others + ([tomb] if tomb is not None else []):
        check_source(src, paths, reg)
    available = list(base_names)
    per_source = []
    for src in others:
        cols = src.data_columns()
        per_source.append((src, cols))
        available += [c for c in cols if c not in available]
    tomb_cols = list(TOMBSTONE_COLUMNS) if tomb is not None else []
    if columns is None:  # O10: tombstone columns stand where `usr` falls among the overlays (L8 name order)
        later = {id(s) for s in sources[sources.index(tomb) + 1:]} if tomb is not None else set()
        cut = next((available.index(c) for s, cols in per_source if id(s) in later for c in cols
                    if c not in base_names), len(available))
        out = available[:cut] + (tomb_cols if include_deleted else []) + available[cut:]
    else:
        out = list(dict.fromkeys(columns))
        hidden = [c for c in out if c in TOMBSTONE_COLUMNS]
        if hidden and not include_deleted:
            raise SchemaError(f"Columns {hidden} are tombstone columns (O11).",
                              **option_hint("Pass {}.", "include_deleted"))
        unknown = [c for c in out if c not in available and c not in TOMBSTONE_COLUMNS]
        if unknown:
            raise SchemaError(f"Unknown columns requested: {unknown} (O11).",
                              hint=f"Available: {', '.join(available)}.")
    plan = ReadPlan(paths, base_names, out, include_deleted=include_deleted, o3_unique_by_join=unique_by_join)
    plan.overlays = [(s, [c for c in cols if c in out]) for s, cols in per_source]
    plan.overlays = [(s, cols) for s, cols in plan.overlays if cols]
    plan.tombstones = tomb if (tomb is not None and (not include_deleted or any(c in out for c in tomb_cols))) else None
    for src, _ in plan.overlays:
        if src.key != "id":
            check_sequence_keys(paths, src.key, plan.o3_passed, unique=not unique_by_join)
    return plan
