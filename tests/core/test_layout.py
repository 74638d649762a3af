"""Root and dataset layout (L1-L5), dataset ids, namespace names (R4), discovery, timestamps (M4)."""
from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from testkit import FIXTURES

from usr_core.contract import snapshot_stamp, stamp, ts
from usr_core.errors import NamespaceError, SequencesError
from usr_core.layout import (DatasetPaths, check_namespace_name, dataset_paths, discover_datasets,
                             normalize_dataset_id, registry_lock_path, registry_path)


def _make_dataset(root: Path, name: str) -> None:
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "records.parquet").write_bytes(b"PAR1")


# --- L2 dataset ids ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw,want", [
    ("demo", "demo"), ("  demo\t", "demo"), ("group/demo", "group/demo"), ("a//b/", "a/b"), ("a/b/c", "a/b/c"),
    ("demo/", "demo"), ("x/archived", "x/archived"), ("Archived", "Archived"), ("a.b-c_d", "a.b-c_d"),
    (".hidden", ".hidden"), ("...", "..."),
])
def test_L2_normalisation(raw, want):
    """[L2] trim and collapse to canonical form (a//b/ -> a/b); 'archived' only reserved as first segment."""
    assert normalize_dataset_id(raw) == want
    assert normalize_dataset_id(want) == want  # idempotent


@pytest.mark.parametrize("raw,fragment", [
    ("", "empty"), ("   ", "empty"), (None, "empty"), ("/", "absolute"), ("//", "absolute"),
    ("/abs/demo", "absolute"), ("\\demo", "absolute"), ("C:/data", "absolute"),
    (".", "invalid segment"), ("..", "invalid segment"), ("./demo", "invalid segment"), ("a/./b", "invalid segment"),
    ("../demo", "invalid segment"), ("a/../../etc", "invalid segment"), ("a/..", "invalid segment"),
    ("a\\..\\b", "invalid segment"), ("a/b\x00", "invalid segment"),
    ("archived", "archived"), ("archived/demo", "archived"), (" archived//x", "archived"),
])
def test_L1_L2_rejections(raw, fragment):
    """[L1][L2] empty, absolute, '.'/'..' segments (path traversal), first segment 'archived' -> SequencesError."""
    with pytest.raises(SequencesError, match=fragment) as ei:
        normalize_dataset_id(raw)
    assert ei.value.hint


def test_L2_dataset_paths_normalises_and_rejects(root):
    """[L2] dataset_paths applies L2 and never escapes the root."""
    p = dataset_paths(root, "grp//demo/")
    assert p.name == "grp/demo" and p.dir == root / "grp" / "demo"
    for bad in ("../x", "/etc", "archived/x", ""):
        with pytest.raises(SequencesError):
            dataset_paths(root, bad)


# --- L1 / L4 / L5 paths -----------------------------------------------------------------------------------------

def test_L1_root_files(root):
    """[L1][A5] registry.yaml and the registry lock live directly in the root."""
    assert registry_path(root) == root / "registry.yaml"
    assert registry_lock_path(root) == root / ".registry.lock"


def test_L4_dataset_directory_entries(root):
    """[L4] every entry of the dataset directory table."""
    p = dataset_paths(root, "grp/demo")
    d = root / "grp" / "demo"
    assert isinstance(p, DatasetPaths) and p.root == root
    assert p.dir == d
    assert p.records == d / "records.parquet"
    assert p.meta == d / "meta.md"
    assert p.events == d / ".events.log"
    assert p.events_lock == d / ".events.lock"
    assert p.lock == d / ".usr.lock"
    assert p.registry_dir == d / "_registry"
    h = "a" * 64
    assert p.freeze_file(h) == d / "_registry" / f"registry.{h}.yaml"
    assert p.snapshots == d / "_snapshots"
    assert p.derived == d / "_derived"
    assert p.compact_overlay("mock") == d / "_derived" / "mock.parquet"
    assert p.parts_dir("mock") == d / "_derived" / "mock"
    assert p.archived_overlays == d / "_derived" / "_archived"
    assert p.events_archive == d / ".events.archive"


def test_L9_transient_names(root):
    """[L9] temp names of the base and of compact overlays."""
    p = dataset_paths(root, "demo")
    assert p.records_tmp == root / "demo" / "records.tmp.parquet"
    assert p.compact_overlay_tmp("mock") == root / "demo" / "_derived" / "mock.tmp.parquet"


def test_L5_parts_listing(root):
    """[L5] readers accept any part-*.parquet directly in _derived/<ns>/, sorted by name; nothing else."""
    from usr_core.overlays.discovery import list_part_paths

    p = dataset_paths(root, "demo")
    assert list_part_paths(p.parts_dir("mock")) == []  # no directory yet
    d = p.parts_dir("mock")
    d.mkdir(parents=True)
    names = ["part-20250102T000000000000Z-" + "b" * 32 + ".parquet",
             "part-20250101T000000000000Z-" + "f" * 32 + ".parquet",
             "part-legacy.parquet"]
    for n in names:
        (d / n).write_bytes(b"PAR1")
    (d / "part-x.parquet.tmp").write_bytes(b"")  # L9 temp
    (d / "digest_ledger.json").write_text("{}")
    (d / "other.parquet").write_bytes(b"PAR1")
    (d / "part-dir.parquet").mkdir()
    (d / "sub").mkdir()
    (d / "sub" / "part-deep.parquet").write_bytes(b"PAR1")
    assert [x.name for x in list_part_paths(p.parts_dir("mock"))] == sorted(names)


def test_M4_L4_L5_timestamp_formats():
    """[M4][L4][L5] TS, STAMP (22 chars) and the snapshot stamp S (no Z), all UTC."""
    when = dt.datetime(2025, 3, 4, 5, 6, 7, 89, tzinfo=dt.timezone.utc)
    assert ts(when) == "2025-03-04T05:06:07.000089Z"
    assert stamp(when) == "20250304T050607000089Z" and len(stamp(when)) == 22
    assert snapshot_stamp(when) == "20250304T050607000089"
    other_tz = when.astimezone(dt.timezone(dt.timedelta(hours=-7)))
    assert ts(other_tz) == ts(when)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", ts())
    assert re.fullmatch(r"\d{8}T\d{6}\d{6}Z", stamp())


# --- L3 discovery -------------------------------------------------------------------------------------------------

def test_L3_discovery_two_levels_sorted(root):
    """[L1][L3] X or X/Y with records.parquet, sorted; archived skipped; deeper ids not listed."""
    for name in ("zeta", "alpha", "grp/b", "grp/a", "other/x", "deep/one/two", "archived/old", "archived"):
        if name != "archived":
            _make_dataset(root, name)
    (root / "archived" / "records.parquet").write_bytes(b"PAR1")  # even a base at the top of archived
    (root / "empty").mkdir()
    (root / "grp" / "notes.txt").write_text("x")
    (root / "grp" / "nobase").mkdir()
    (root / "grp" / "fake").mkdir()
    (root / "grp" / "fake" / "records.parquet").mkdir()  # a directory, not a file
    (root / "registry.yaml").write_text("namespaces: {}\n")
    assert discover_datasets(root) == ["alpha", "grp/a", "grp/b", "other/x", "zeta"]


def test_L3_dataset_shadows_its_subdirectories(root):
    """[L3] <root>/X holding records.parquet is X; X/Y below it is not listed."""
    _make_dataset(root, "x")
    _make_dataset(root, "x/y")
    assert discover_datasets(root) == ["x"]


def test_L3_missing_or_empty_root(root, tmp_path):
    """[L3] an empty or absent root has no datasets."""
    assert discover_datasets(root) == []
    assert discover_datasets(tmp_path / "nope") == []


def test_L3_discovery_on_fixture_root(tree_digest):
    """[L3] the interoperability fixture root lists exactly its dataset, without touching it."""
    fx = (FIXTURES / "dna_multi")
    before = tree_digest(fx)
    assert discover_datasets(fx) == ["promoters"]
    assert tree_digest(fx) == before


# --- R4 namespace names ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ns", ["mock", "gc_stats", "a", "a1", "a_", "x9_y", "usr_state", "usrx"])
def test_R4_valid_namespace_names(ns):
    """[R4] ^[a-z][a-z0-9_]*$ without '__'."""
    assert check_namespace_name(ns) == ns


@pytest.mark.parametrize("ns", ["", "Mock", "1a", "_a", "a__b", "a___", "a-b", "a b", "a.b", "mock\n", "é",
                                None, 3, "usr"])
def test_R4_invalid_namespace_names(ns):
    """[R4] regex, '__' and reserved 'usr' -> NamespaceError with a hint."""
    with pytest.raises(NamespaceError) as ei:
        check_namespace_name(ns)
    assert ei.value.hint


def test_R4_usr_allowed_only_when_reserved_names_are():
    """[R4] 'usr' passes only for internal callers that allow reserved names."""
    assert check_namespace_name("usr", allow_reserved=True) == "usr"
    with pytest.raises(NamespaceError, match="reserved"):
        check_namespace_name("usr")


def test_L4_check_confined_refuses_links_in_the_layout(root, tmp_path):
    """[L4] [L2] DatasetPaths.check_confined: the dataset directory must resolve inside the root and no layout
    entry may be a symbolic link (issue 13 item 1); user files beside the layout are not the library's."""
    from usr_core.errors import UnsafePathError

    p = dataset_paths(root, "demo")
    (p.derived / "mock").mkdir(parents=True)
    p.check_confined()
    outside = tmp_path / "outside"
    outside.mkdir()
    (p.dir / "notes-link.txt").symlink_to(outside / "notes.txt")  # not a layout entry: left alone
    p.check_confined()
    for rel in ("_snapshots", "_derived/gc", "_derived/mock/part-x.parquet", "meta.md", ".events.archive"):
        link = p.dir / rel
        link.symlink_to(outside, target_is_directory=True)
        with pytest.raises(UnsafePathError, match="symbolic link"):
            p.check_confined()
        link.unlink()
    other = dataset_paths(root, "elsewhere")
    (root / "elsewhere").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="outside the root"):
        other.check_confined()
