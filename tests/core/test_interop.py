"""Interoperability: dataset roots written by another USR implementation read exactly as expected.

tests/fixtures/ is a copy of /work/shared/fixtures/ (see its README). Each test works on a private
copy of the root so that nothing (locks, auto-freeze) touches the checked-in fixture.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from testkit import FIXTURES, SHARED_FIXTURES, tree_digest
from usr_core import Dataset

EXPECTED = FIXTURES / "expected"


@pytest.fixture
def dna_multi(tmp_path) -> Dataset:
    dst = tmp_path / "dna_multi"
    shutil.copytree(FIXTURES / "dna_multi", dst)
    return Dataset(dst, "promoters")


def _cell_equal(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None  # NULL only equals NULL (never NaN)
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_cell_equal(x, y) for x, y in zip(a, b))
    return a == b


def assert_same_view(got: pa.Table, expected: pa.Table) -> None:
    """Column names, order and types equal; values equal sorted by id (NaN == NaN, NaN != NULL)."""
    assert got.schema.names == expected.schema.names
    assert [f.type for f in got.schema] == [f.type for f in expected.schema]
    assert got.num_rows == expected.num_rows
    g, e = got.sort_by("id"), expected.sort_by("id")
    for name in expected.column_names:
        gv, ev = g[name].to_pylist(), e[name].to_pylist()
        bad = [(i, x, y) for i, (x, y) in enumerate(zip(gv, ev)) if not _cell_equal(x, y)]
        assert not bad, f"column {name}: {len(bad)} cells differ, e.g. {bad[:3]}"


def test_fixture_copy_matches_shared():
    shared = SHARED_FIXTURES
    if not shared.is_dir():
        pytest.skip("shared fixtures not available")
    assert tree_digest(FIXTURES / "dna_multi") == tree_digest(shared / "dna_multi")
    for f in EXPECTED.iterdir():
        assert f.read_bytes() == (shared / "expected" / f.name).read_bytes()


@pytest.mark.parametrize("include_deleted,expected_file", [
    (False, "dna_multi.parquet"), (True, "dna_multi.include_deleted.parquet")])
def test_interop_read_table_and_scan(dna_multi, include_deleted, expected_file):
    """[O9] [O10] [T3] read_table() and scan() equal the other implementation's merged view."""
    expected = pq.read_table(EXPECTED / expected_file)
    assert_same_view(dna_multi.read_table(include_deleted=include_deleted), expected)
    batches = list(dna_multi.scan(include_deleted=include_deleted, batch_size=37))
    assert_same_view(pa.Table.from_batches(batches), expected)


@pytest.mark.parametrize("include_deleted,expected_file", [
    (False, "dna_multi.parquet"), (True, "dna_multi.include_deleted.parquet")])
def test_interop_head_is_base_order_prefix(dna_multi, include_deleted, expected_file):
    """[O12] head(n) = the first n visible base rows, each equal to the expected view's row."""
    expected = pq.read_table(EXPECTED / expected_file)
    base_ids = pq.read_table(dna_multi.records_path, columns=["id"])["id"].to_pylist()
    visible = set(expected["id"].to_pylist())
    for n in (1, 10, 250):
        head = dna_multi.head(n, include_deleted=include_deleted)
        want_ids = [i for i in base_ids if i in visible][:n]
        assert head["id"].to_pylist() == want_ids
        sub = expected.filter(pc.is_in(expected["id"], value_set=pa.array(want_ids)))
        assert_same_view(head, sub)


def test_interop_null_rules_pinned_cells(dna_multi):
    """[O9] the fixture holds a newer NaN that overrides, a newer NULL that does not, an empty list value."""
    got = dna_multi.read_table(include_deleted=True)
    scores = got["assay__score"]
    assert pc.sum(pc.is_nan(scores.drop_null())).as_py() >= 1
    profiles = [p for p in got["assay__profile"].to_pylist() if p is not None]
    assert [] in profiles


def test_interop_info(dna_multi):
    """[P2] info() equals what the other implementation reported (path aside)."""
    want = json.loads((EXPECTED / "dna_multi.info.json").read_text())["data"]
    info = dna_multi.info()
    assert info.name == want["name"]
    assert info.rows == want["rows"]
    assert info.columns == want["columns"]
    assert info.namespaces == want["namespaces"]
    assert Path(info.path) == dna_multi.records_path


def test_interop_reads_change_nothing(dna_multi):
    """[A3] readers take no lock and write nothing."""
    before = tree_digest(dna_multi.root, ignore_locks=False)
    dna_multi.read_table(include_deleted=True)
    dna_multi.head(5)
    dna_multi.info()
    dna_multi.list_overlays()
    assert tree_digest(dna_multi.root, ignore_locks=False) == before


def test_interop_tombstones_visible_count(dna_multi):
    """[T3] 6 records hidden, one restored (usr__deleted = false stays visible)."""
    full = dna_multi.read_table(include_deleted=True)
    assert pc.sum(pc.fill_null(full["usr__deleted"], False)).as_py() == 6
    assert pc.sum(pc.invert(pc.fill_null(full["usr__deleted"], True))).as_py() >= 1
    assert dna_multi.read_table().num_rows == 194
