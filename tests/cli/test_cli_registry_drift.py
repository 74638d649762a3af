"""Registry-drift story (issue 3, item 4) through the CLI: V2 modes, X4 refresh, X2 compact."""
from __future__ import annotations

import pytest

from usr_core.identity import compute_id

SEQS = ["ACGTACGTAA", "CCGGTTAACG", "TTTTGGGGCC"]

PARTS_CODE = """
import sys
import pyarrow as pa
from usr_core import Dataset
root, ids = sys.argv[1], sys.argv[2].split(",")
ds = Dataset(root, "demo")
ds.write_overlay_part("a", pa.table({"id": ids[:2], "a__x": pa.array([1, 2], pa.int64())}))
ds.write_overlay_part("a", pa.table({"id": ids[1:], "a__x": pa.array([5, 6], pa.int64())}))
"""


@pytest.fixture
def drifted(usr, root, tmp_path):
    usr.ok("namespace", "register", "a", "--columns", "a__x:int64")
    usr.ok("namespace", "register", "b", "--columns", "b__y:string")
    usr.ok("init", "demo")
    seqs = tmp_path / "seqs.csv"
    seqs.write_text("sequence\n" + "\n".join(SEQS) + "\n")
    usr.ok("import", "demo", "--from", "csv", "--path", seqs)
    return [compute_id("dna", s) for s in SEQS]


def _edit_other_namespace(usr):
    usr.ok("namespace", "register", "b", "--columns", "b__y:string,b__z:int64", "--overwrite")


def test_V2_X4_C5_registry_drift_refresh(usr, drifted, tmp_path):
    """[V2][X4][C5] attach, edit another namespace: default validation fails with the hash mismatch (exit 2),
    --registry-mode namespace-current passes, overlay-refresh-metadata makes default validation pass."""
    ids = drifted
    table = tmp_path / "a.csv"
    table.write_text("id,x\n" + "\n".join(f"{i},{n}" for n, i in enumerate(ids)) + "\n")
    usr.ok("attach", "demo", "--path", table, "--namespace", "a")
    usr.ok("validate", "demo", "--strict")

    _edit_other_namespace(usr)
    res = usr("validate", "demo")
    assert res.returncode == 2
    assert res.stderr.startswith("ERROR: Overlay usr:registry_hash mismatch for ")
    assert "a.parquet" in res.stderr
    assert usr.ok("validate", "demo", "--registry-mode", "namespace-current").stdout.strip() == \
        "OK: validation passed."

    usr.ok("maintenance", "overlay-refresh-metadata", "demo", "--namespace", "a")
    assert usr.ok("validate", "demo").stdout.strip() == "OK: validation passed."


def test_V2_X2_C5_registry_drift_compact(usr, root, drifted, pyrun):
    """[V2][X2] parts written before a registry edit fail default validation; compaction restamps them."""
    pyrun(PARTS_CODE, root, ",".join(drifted))
    usr.ok("validate", "demo")
    _edit_other_namespace(usr)
    res = usr("validate", "demo")
    assert res.returncode == 2 and "usr:registry_hash mismatch" in res.stderr
    usr.ok("validate", "demo", "--registry-mode", "namespace-current")
    usr.ok("maintenance", "overlay-compact", "demo", "--namespace", "a")
    assert usr.ok("validate", "demo").stdout.strip() == "OK: validation passed."


def test_V2_C5_unknown_registry_mode_exit_2(usr, drifted):
    """[V2][C5] an unknown registry mode -> SchemaError, exit 2."""
    res = usr("validate", "demo", "--registry-mode", "bogus")
    assert res.returncode == 2 and res.stderr.startswith("ERROR: ")


def test_X1_X5_registry_freeze_via_cli(usr, root, drifted):
    """[X5][X1] registry-freeze runs in the gate, writes the freeze file of the current hash."""
    from usr_core.registry import registry_hash

    _edit_other_namespace(usr)
    res = usr.ok("maintenance", "registry-freeze", "demo")
    h = registry_hash(root)
    assert (root / "demo" / "_registry" / f"registry.{h}.yaml").is_file()
    assert h in res.stdout
    ev = usr.json("events", "tail", "demo", "--format", "json", "--n", "1")[0]
    assert ev["action"] == "registry_freeze" and ev["maintenance"]["reason"] == "cli: usr maintenance registry-freeze"
