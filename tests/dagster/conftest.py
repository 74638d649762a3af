"""Fixtures for the Dagster layer: real USR roots in temp dirs (usr_core writes them), real instances."""
from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("dagster")

from dagster_helpers import make_root  # noqa: E402


@pytest.fixture
def usr_root(tmp_path) -> Path:
    """Two datasets (a two-level id and a flat one), demo namespaces registered, no overlays yet."""
    return make_root(tmp_path / "root", {"grp/alpha": 80, "beta": 50})
