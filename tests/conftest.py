"""Shared fixtures. Add new fixtures below; do not restructure existing ones."""
from __future__ import annotations

from pathlib import Path

import pytest

from testkit import tree_digest


@pytest.fixture(name="tree_digest")
def _tree_digest_fixture():
    """The tree_digest(path) helper, for tests that prefer a fixture over an import."""
    return tree_digest


@pytest.fixture
def root(tmp_path) -> Path:
    """An empty USR root directory (no registry yet)."""
    r = tmp_path / "root"
    r.mkdir()
    return r


SEQS = ("ACGT", "AACC", "GGTT", "TTAA", "CAGT", "GATC")


@pytest.fixture
def make_ds(root):
    """make_ds(name="demo", seqs=SEQS, namespaces={"mock": "mock__score:float64,mock__label:string"}) -> Dataset.

    Registers the namespaces (R10), inits the dataset and imports the sequences as dna/dna_4.
    """
    from usr_core import Dataset, load_registry, register_namespace

    def make(name: str = "demo", seqs=SEQS, namespaces=None, root_dir=None):
        r = Path(root_dir or root)
        namespaces = {"mock": "mock__score:float64,mock__label:string"} if namespaces is None else namespaces
        reg = load_registry(r, required=False) or {}
        for ns, spec in namespaces.items():
            if ns not in reg:
                register_namespace(r, ns, spec)
        if not namespaces and not reg:
            register_namespace(r, "mock", "mock__score:float64,mock__label:string")
        ds = Dataset(r, name)
        ds.init(source="test")
        if seqs:
            ds.import_rows([{"sequence": s} for s in seqs])
        return ds

    return make
