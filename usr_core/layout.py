"""Every path inside a root and a dataset (L1-L10), dataset-id and namespace checks, discovery."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import NamespaceError, SequencesError
from .storage.confine import check_dataset_confined

NAMESPACE_RE = re.compile(r"^[a-z][a-z0-9_]*\Z")  # \Z: "$" would accept a trailing newline
PART_GLOB = "part-*.parquet"


def normalize_dataset_id(name) -> str:
    """L2: trim, reject empty / absolute / '.' or '..' segments / 'archived', collapse slashes."""
    raw = "" if name is None else str(name).strip()
    if not raw:
        raise SequencesError("Dataset id is empty.", hint="Name the dataset, e.g. 'demo' or 'group/demo'.")
    if raw.startswith("/") or raw.startswith("\\") or re.match(r"^[A-Za-z]:", raw):
        raise SequencesError(f"Dataset id {raw!r} is an absolute path.",
                             hint="Use a path relative to the root, e.g. 'group/demo'.")
    segments = [s for s in raw.split("/") if s != ""]
    if not segments:
        raise SequencesError(f"Dataset id {raw!r} is empty.", hint="Name the dataset, e.g. 'demo'.")
    for seg in segments:
        if seg in (".", "..") or "\\" in seg or "\x00" in seg:
            raise SequencesError(f"Dataset id {raw!r} has an invalid segment {seg!r}.",
                                 hint="Dataset ids may not contain '.', '..' or backslashes.")
    if segments[0] == "archived":
        raise SequencesError(f"Dataset id {raw!r} starts with the reserved name 'archived'.",
                             hint="Choose another top-level name.")
    return "/".join(segments)


def check_namespace_name(ns, *, allow_reserved: bool = False) -> str:
    """R4: ^[a-z][a-z0-9_]*$, no '__', not 'usr' (unless reserved names are allowed)."""
    if not isinstance(ns, str) or not NAMESPACE_RE.match(ns) or "__" in ns:
        raise NamespaceError(
            f"Invalid namespace {ns!r}.",
            hint="Namespaces match ^[a-z][a-z0-9_]*$ and contain no '__' (e.g. 'mock' or 'gc_stats').",
        )
    if ns == "usr" and not allow_reserved:
        raise NamespaceError("Namespace 'usr' is reserved for tombstones.", hint="Choose another namespace.")
    return ns


def registry_path(root: Path) -> Path:
    return Path(root) / "registry.yaml"


def registry_lock_path(root: Path) -> Path:
    return Path(root) / ".registry.lock"


@dataclass(frozen=True)
class DatasetPaths:
    root: Path
    name: str

    @property
    def dir(self) -> Path:
        return self.root / self.name

    @property
    def records(self) -> Path:
        return self.dir / "records.parquet"

    @property
    def records_tmp(self) -> Path:
        return self.dir / "records.tmp.parquet"

    @property
    def meta(self) -> Path:
        return self.dir / "meta.md"

    @property
    def events(self) -> Path:
        return self.dir / ".events.log"

    @property
    def events_lock(self) -> Path:
        return self.dir / ".events.lock"

    @property
    def events_archive(self) -> Path:
        return self.dir / ".events.archive"

    @property
    def lock(self) -> Path:
        return self.dir / ".usr.lock"

    @property
    def registry_dir(self) -> Path:
        return self.dir / "_registry"

    def freeze_file(self, registry_hash: str) -> Path:
        return self.registry_dir / f"registry.{registry_hash}.yaml"

    @property
    def snapshots(self) -> Path:
        return self.dir / "_snapshots"

    @property
    def derived(self) -> Path:
        return self.dir / "_derived"

    @property
    def archived_overlays(self) -> Path:
        return self.derived / "_archived"

    def compact_overlay(self, ns: str) -> Path:
        return self.derived / f"{ns}.parquet"

    def compact_overlay_tmp(self, ns: str) -> Path:
        return self.derived / f"{ns}.tmp.parquet"

    def parts_dir(self, ns: str) -> Path:
        return self.derived / ns

    def check_confined(self) -> None:
        """Refuse (UnsafePathError) a dataset directory leading out of the root or any layout entry that is a
        symbolic link (docs/reliability.md, issue 13 rule 1); the dataset lock runs the same check."""
        check_dataset_confined(self)


def dataset_paths(root, name) -> DatasetPaths:
    return DatasetPaths(Path(root), normalize_dataset_id(name))


def discover_datasets(root) -> list[str]:
    """L3: <root>/X with records.parquet is X, else each <root>/X/Y with one is X/Y; sorted."""
    root = Path(root)
    found: list[str] = []
    if not root.is_dir():
        return found
    for child in root.iterdir():
        if not child.is_dir() or child.name == "archived":
            continue
        if (child / "records.parquet").is_file():
            found.append(child.name)
            continue
        for grand in child.iterdir():
            if grand.is_dir() and (grand / "records.parquet").is_file():
                found.append(f"{child.name}/{grand.name}")
    return sorted(found)
