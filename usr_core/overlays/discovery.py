"""Overlay discovery (L5, L7, L8, O9): which files make up each namespace's overlay, and in what order.

A namespace's overlay is a compact file `_derived/<ns>.parquet` or a parts directory
`_derived/<ns>/part-*.parquet` (L7: not both, except a finished compaction whose parts await deletion).
Reserved namespaces (tombstones `usr`, state `usr_state`) come only from their own compact file: a
file or folder that claims one by its metadata is refused (T1, U1), never obeyed.  Only footers are
read here.
"""
from __future__ import annotations

import enum
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..contract import (META_NAMESPACE_CONTRACT_HASH, META_OVERLAY_CREATED_AT, META_OVERLAY_KEY,
                        META_OVERLAY_NAMESPACE, META_REGISTRY_HASH, MUTATION_RESERVED_NAMESPACES, stamp)
from ..errors import SchemaError
from ..layout import PART_GLOB, DatasetPaths

META_COMPACTED_PARTS = "usr:compacted_parts"  # X2 crash recovery: part names folded into a compact file


class SourceKind(str, enum.Enum):
    COMPACT = "compact"  # _derived/<ns>.parquet
    PARTS = "parts"  # _derived/<ns>/part-*.parquet


def file_metadata(schema: pa.Schema) -> dict[str, str]:
    return {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in (schema.metadata or {}).items()}


def read_file_schema(path: Path,
                     hint: str = "The file is corrupt, truncated or unreadable; restore it or remove the overlay.",
                     ) -> pa.Schema:
    """The footer's schema; an unreadable file is a SchemaError with `hint`."""
    try:
        return pq.read_schema(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise SchemaError(f"Cannot read parquet file {path}: {exc}", hint=hint) from exc


@dataclass
class Part:
    path: Path
    schema: pa.Schema
    meta: dict[str, str]

    @property
    def created_at(self) -> str | None:
        return self.meta.get(META_OVERLAY_CREATED_AT)

    @property
    def rank(self) -> str:
        """O9: created_at + '\\x1f' + file name; greatest is newest."""
        return f"{self.created_at or ''}\x1f{self.path.name}"


def load_part(path: Path) -> Part:
    schema = read_file_schema(path)
    return Part(path, schema, file_metadata(schema))


@dataclass
class OverlaySource:
    """One namespace's overlay on disk: a compact file or a directory of parts."""

    namespace: str
    kind: SourceKind
    path: Path
    parts: list[Part] = field(default_factory=list)  # for compact: one entry, the file itself

    @property
    def first(self) -> Part:
        return self.parts[0]

    @property
    def key(self) -> str | None:
        return self.first.meta.get(META_OVERLAY_KEY)

    @property
    def created_at(self) -> str | None:
        return max((p.created_at or "" for p in self.parts), default=None) or None

    @property
    def registry_hash(self) -> str | None:
        return self.first.meta.get(META_REGISTRY_HASH)

    @property
    def contract_hash(self) -> str | None:
        return self.first.meta.get(META_NAMESPACE_CONTRACT_HASH)

    def newest_first(self) -> list[Part]:
        """O9: parts by rank, newest first."""
        return sorted(self.parts, key=lambda p: p.rank, reverse=True)

    def data_columns(self) -> list[str]:
        key = self.key
        seen: dict[str, None] = {}
        for p in self.parts:
            for name in p.schema.names:
                if name != key:
                    seen.setdefault(name, None)
        return list(seen)

    def column_type(self, name: str) -> pa.DataType | None:
        for p in self.parts:
            idx = p.schema.get_field_index(name)
            if idx >= 0:
                return p.schema.field(idx).type
        return None


def list_part_paths(parts_dir: Path) -> list[Path]:
    if not parts_dir.is_dir():
        return []
    return sorted(p for p in parts_dir.glob(PART_GLOB) if p.is_file())


def folded_by_compact(compact: Path, part_paths: list[Path]) -> bool:
    """The finished-compaction rule (docs/reliability.md): an interrupted compaction left its compact
    file and some of the parts it folded.  The compact file lists them in `usr:compacted_parts`; when
    every remaining part name is listed, the compaction finished and the parts only await deletion."""
    if not part_paths or not compact.is_file():
        return False
    try:
        folded = json.loads(load_part(compact).meta.get(META_COMPACTED_PARTS) or "null")
    except (SchemaError, ValueError):  # vanished (promoted) or unreadable: not a finished compaction
        return False
    return isinstance(folded, list) and {p.name for p in part_paths} <= set(map(str, folded))


def _claimed_namespace(first: Path, stem: str) -> str:
    """L8: the namespace of a file's metadata, else its stem (also when its footer is unreadable)."""
    try:
        return load_part(first).meta.get(META_OVERLAY_NAMESPACE) or stem
    except SchemaError:
        return stem


def _source_at(derived: Path, entry: Path, namespaces) -> OverlaySource | None:
    name = entry.name
    if entry.is_file() and name.endswith(".parquet") and not name.endswith(".tmp.parquet"):
        stem = name[: -len(".parquet")]
        if namespaces is not None and _claimed_namespace(entry, stem) not in namespaces:
            return None
        part = load_part(entry)
        return OverlaySource(part.meta.get(META_OVERLAY_NAMESPACE) or stem, SourceKind.COMPACT, entry, [part])
    if entry.is_dir():
        part_paths = list_part_paths(entry)
        if not part_paths or folded_by_compact(derived / f"{name}.parquet", part_paths):
            return None
        if namespaces is not None and _claimed_namespace(part_paths[0], name) not in namespaces:
            return None  # M3: a part overlay's namespace comes from its first part by name
        parts = [load_part(p) for p in part_paths]
        return OverlaySource(parts[0].meta.get(META_OVERLAY_NAMESPACE) or name, SourceKind.PARTS, entry, parts)
    return None


def check_reserved_source(src: OverlaySource, paths: DatasetPaths) -> None:
    """Only `_derived/usr.parquet` holds tombstones and only `_derived/usr_state.parquet` holds state
    (T1, U1): a reserved namespace claimed by any other file or folder is refused, never obeyed."""
    ns = src.namespace
    stem = src.path.name[: -len(".parquet")] if src.kind is SourceKind.COMPACT else src.path.name
    if ns in MUTATION_RESERVED_NAMESPACES and (src.kind is not SourceKind.COMPACT or stem != ns):
        raise SchemaError(f"{src.path} claims the reserved namespace {ns!r}; only {paths.compact_overlay(ns)} "
                          "may hold it (T1, U1).",
                          hint=f"Remove {src.path} (it was not written by USR), then read again.")
    if stem in MUTATION_RESERVED_NAMESPACES and ns != stem:
        raise SchemaError(f"{src.path} is the reserved {stem!r} file but says namespace {ns!r} (T1, U1).",
                          hint=f"Restore {src.path} from a backup or remove it.")


def discover_overlays(paths: DatasetPaths, namespaces=None) -> list[OverlaySource]:
    """L8 (sorted by name), enforcing L7 (one source per namespace) except for finished compactions.

    `namespaces` (None: all) limits the sources opened whole to those namespaces: of the others only
    one footer is read to learn their namespace, and an unreadable one counts under its file name."""
    derived = paths.derived
    if not derived.is_dir():
        return []
    found: dict[str, OverlaySource] = {}
    for entry in sorted(derived.iterdir(), key=lambda p: p.name):
        if entry.name.startswith("."):
            continue
        src = _source_at(derived, entry, namespaces)
        if src is None:
            continue
        check_reserved_source(src, paths)
        ns = src.namespace
        if ns in found:
            raise SchemaError(
                f"Namespace {ns!r} has both a compact overlay and overlay parts ({found[ns].path}, {src.path}) (L7).",
                hint=f"Remove one of them: delete {paths.compact_overlay(ns)} and rerun the compaction, "
                     "or remove the parts directory.")
        found[ns] = src
    return list(found.values())


def find_overlay(paths: DatasetPaths, ns: str) -> OverlaySource | None:
    compact, parts_dir = paths.compact_overlay(ns), paths.parts_dir(ns)
    has_compact = compact.is_file()
    part_paths = list_part_paths(parts_dir)
    if has_compact and part_paths and not folded_by_compact(compact, part_paths):
        raise SchemaError(f"Namespace {ns!r} has both {compact.name} and parts in {parts_dir} (L7).",
                          hint=f"Remove {compact} and rerun the compaction, or remove the parts directory.")
    if has_compact:
        src = OverlaySource(ns, SourceKind.COMPACT, compact, [load_part(compact)])
    elif part_paths:
        src = OverlaySource(ns, SourceKind.PARTS, parts_dir, [load_part(p) for p in part_paths])
    else:
        return None
    check_reserved_source(src, paths)
    return src


def new_part_name(when=None) -> str:
    """L5: part-<STAMP>-<HEX32>.parquet."""
    return f"part-{stamp(when)}-{uuid.uuid4().hex}.parquet"
