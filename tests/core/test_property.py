"""Property test: random part writes, compact writes, promotions, compactions, tombstones and restores
against a tiny in-memory model of the contract; every read must equal the model.

Model of one namespace `mock` (columns score, label) over a fixed set of ids:
- part write (O6, O9): per column, a non-NULL input cell replaces the merged value, NULL keeps it; a part
  write onto a compact overlay promotes it first (the view is unchanged by the promotion itself);
- compact write (O5, write_overlay(overwrite=True)): input cells replace stored cells *including NULLs*;
  rejected with SchemaError while parts exist (L7/O5) and then changes nothing;
- compaction (X2) changes nothing visible;
- tombstone / restore (T2, T3): hide / show rows.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usr_core import Dataset, SchemaError, compute_id, register_namespace

SEQS = ("ACGT", "AACC", "GGTT", "TTAA")
IDS = [compute_id("dna", s) for s in SEQS]
COLS = {"mock__score": pa.float64(), "mock__label": pa.string()}
VALUES = {"mock__score": [None, 0.0, 1.5, -2.0, float("nan")], "mock__label": [None, "a", "b", ""]}


@st.composite
def write_op(draw, kind):
    cols = draw(st.lists(st.sampled_from(sorted(COLS)), min_size=1, max_size=2, unique=True))
    idx = draw(st.lists(st.integers(0, len(IDS) - 1), min_size=1, max_size=len(IDS), unique=True))
    rows = {i: {c: draw(st.sampled_from(VALUES[c])) for c in cols} for i in idx}
    return (kind, cols, rows)


@st.composite
def id_op(draw, kind):
    idx = draw(st.lists(st.integers(0, len(IDS) - 1), min_size=1, max_size=len(IDS), unique=True))
    return (kind, idx)


OPS = st.one_of(write_op("part"), write_op("compact"), id_op("tombstone"), id_op("restore"),
                st.just(("compaction",)))


class Model:
    def __init__(self):
        self.cells: dict[str, dict[str, object]] = {i: {} for i in IDS}
        self.cols: list[str] = []
        self.mode: str | None = None  # None | "compact" | "parts"
        self.deleted: set[str] = set()

    def _see(self, cols):
        self.cols += [c for c in cols if c not in self.cols]

    def part(self, cols, rows):
        self._see(cols)
        for i, vals in rows.items():
            for c, v in vals.items():
                if v is not None:
                    self.cells[IDS[i]][c] = v
        self.mode = "parts"

    def compact(self, cols, rows) -> bool:
        if self.mode == "parts":
            return False
        self._see(cols)
        for i, vals in rows.items():
            for c, v in vals.items():
                self.cells[IDS[i]][c] = v
        self.mode = "compact"
        return True

    def compaction(self):
        if self.mode == "parts":
            self.mode = "compact"

    def expected(self, include_deleted: bool) -> dict[str, dict]:
        out = {}
        for i in IDS:
            if i in self.deleted and not include_deleted:
                continue
            out[i] = {c: self.cells[i].get(c) for c in self.cols}
        return out


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b and type(a) is type(b)


def _table(cols, rows) -> pa.Table:
    order = sorted(rows)
    data = {"id": pa.array([IDS[i] for i in order], pa.string())}
    for c in cols:
        data[c] = pa.array([rows[i][c] for i in order], COLS[c])
    return pa.table(data)


def _check(ds: Dataset, model: Model, step, both: bool = False) -> None:
    for include_deleted in ((False, True) if both else (True,)):
        got = ds.read_table(include_deleted=include_deleted)
        want = model.expected(include_deleted)
        assert sorted(got["id"].to_pylist()) == sorted(want), (step, include_deleted)
        data_cols = [c for c in got.column_names if c.startswith("mock__")]
        assert data_cols == model.cols, (step, data_cols, model.cols)
        for row in got.to_pylist():
            exp = want[row["id"]]
            for c in model.cols:
                assert _same(row[c], exp[c]), (step, row["id"], c, row[c], exp[c])
            if include_deleted and "usr__deleted" in row:
                assert bool(row["usr__deleted"]) == (row["id"] in model.deleted)
    visible = [i for i in IDS if i not in model.deleted]
    head = ds.head(2)
    assert head["id"].to_pylist() == visible[:2]
    want = model.expected(False)
    for row in head.to_pylist():  # head joins per batch with filtered views: same values as a full read
        assert all(_same(row[c], want[row["id"]][c]) for c in model.cols), (step, row)


@pytest.fixture(scope="module")
def prop_ds():
    """One dataset for all examples; each example starts by removing every overlay (_derived/)."""
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # tmpfs: fsync is free
    with tempfile.TemporaryDirectory(prefix="usr-prop-", dir=shm) as d:
        register_namespace(d, "mock", ",".join(f"{c}:{'float64' if c.endswith('score') else 'string'}"
                                              for c in sorted(COLS)))
        ds = Dataset(Path(d), "prop")
        ds.init()
        ds.import_rows([{"sequence": s} for s in SEQS])
        yield ds


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(ops=st.lists(OPS, min_size=1, max_size=7))
def test_O9_O5_T3_property_reads_equal_model(prop_ds, ops):
    """[O5] [O6] [O9] [T2] [T3] random write sequences read exactly as the contract's model says."""
    ds = prop_ds
    shutil.rmtree(ds.dir / "_derived", ignore_errors=True)
    model = Model()
    for step, op in enumerate(ops):
        kind = op[0]
        if kind == "part":
            assert ds.write_overlay_part("mock", _table(op[1], op[2])) == len(op[2])
            model.part(op[1], op[2])
        elif kind == "compact":
            if model.mode == "parts":
                with pytest.raises(SchemaError):
                    ds.write_overlay("mock", _table(op[1], op[2]), overwrite=True)
            else:
                assert ds.write_overlay("mock", _table(op[1], op[2]), overwrite=True) == len(op[2])
            model.compact(op[1], op[2])
        elif kind == "compaction":
            if model.mode == "parts":
                with ds.maintenance(reason="property test"):
                    ds.compact_overlay("mock")
            model.compaction()
        elif kind == "tombstone":
            assert ds.tombstone([IDS[i] for i in op[1]]) == len(op[1])
            model.deleted |= {IDS[i] for i in op[1]}
        else:
            assert ds.restore([IDS[i] for i in op[1]]) == len(op[1])
            model.deleted -= {IDS[i] for i in op[1]}
        _check(ds, model, (step, op), both=step == len(ops) - 1)
