"""Dataset argument resolution (C2) and output formats (C4)."""
from __future__ import annotations

import json
import math

import pytest

from usr_core.identity import compute_id


@pytest.fixture
def grouped(root, make_ds):
    """Datasets `g1/alpha`, `g1/beta`, `g2/beta` (L3 two-level discovery)."""
    for ds in ("g1/alpha", "g1/beta", "g2/beta"):
        make_ds(root, ds, ["ACGT"], {"mock": "mock__x:int64"})
    return root


def test_C2_id_bare_name_and_paths(usr, grouped, tmp_path):
    """[C2] id, unique bare name, dataset dir and records.parquet path all resolve to the same dataset."""
    root = grouped
    for arg in ("g1/alpha", "alpha", root / "g1" / "alpha", root / "g1" / "alpha" / "records.parquet"):
        assert usr.json("info", arg, "--format", "json")["name"] == "g1/alpha", arg


def test_C2_C5_ambiguous_bare_name_exit_1(usr, grouped):
    """[C2][C5] a bare name matching two datasets is ambiguous -> exit 1 naming both."""
    res = usr("info", "beta")
    assert res.returncode == 1 and "g1/beta" in res.stderr and "g2/beta" in res.stderr


def test_C2_path_needs_meta_md(usr, grouped, tmp_path):
    """[C2][L10] a path is a dataset only if meta.md's first line names it."""
    meta = grouped / "g1" / "alpha" / "meta.md"
    meta.write_text("garbage\n" + meta.read_text())
    assert usr("info", grouped / "g1" / "alpha").returncode == 1
    stray = tmp_path / "stray"
    stray.mkdir()
    assert usr("info", stray).returncode == 1


def test_C2_infer_dataset_from_cwd(usr, grouped):
    """[C2] optional dataset arguments are inferred from the working directory inside the root."""
    cwd = grouped / "g2" / "beta"
    (cwd / "sub").mkdir()
    assert usr.json("info", "--format", "json", cwd=cwd / "sub")["name"] == "g2/beta"
    rid = compute_id("dna", "ACGT")
    assert "ACGT" in usr.ok("get", rid, cwd=cwd).stdout
    res = usr("info", cwd=grouped)  # the root itself is inside no dataset
    assert res.returncode == 2


def test_C4_json_envelope_one_compact_line(usr, grouped):
    """[C4] json = one compact line {"usr_output_version": 1, "data": ...} for ls, info, schema, state get."""
    for args in (("ls",), ("info", "g1/alpha"), ("schema", "g1/alpha"),
                 ("state", "get", "g1/alpha", "--id", compute_id("dna", "ACGT"))):
        res = usr.ok(*args, "--format", "json")
        line = res.stdout.strip()
        assert "\n" not in line and ": " not in line.split('"data":')[0]
        env = json.loads(line)
        assert list(env) == ["usr_output_version", "data"] and env["usr_output_version"] == 1
    ls = usr.json("ls", "--format", "json")
    assert [r["dataset"] for r in ls] == ["g1/alpha", "g1/beta", "g2/beta"]
    assert "T" in ls[0]["updated"]  # ISO datetime


def test_C4_nan_becomes_null(usr, grouped, tmp_path):
    """[C4] NaN is emitted as null in JSON output."""
    usr.ok("namespace", "register", "f", "--columns", "f__v:float64")
    p = tmp_path / "f.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": [compute_id("dna", "ACGT")], "v": [math.nan]}), p)
    usr.ok("attach", "g1/alpha", "--path", p, "--namespace", "f")
    res = usr.ok("head", "g1/alpha", "--format", "json")
    assert '"f__v":null' in res.stdout and "NaN" not in res.stdout


def test_C4_plain_when_not_a_terminal(usr, grouped):
    """[C4] --format rich / auto fall back to plain text when stdout is not a TTY; --no-rich is accepted."""
    plain = usr.ok("schema", "g1/alpha", "--format", "plain").stdout
    assert usr.ok("schema", "g1/alpha", "--format", "rich").stdout == plain
    assert usr.ok("schema", "g1/alpha").stdout == plain
    assert usr.ok("--no-rich", "schema", "g1/alpha").stdout == plain
    assert "┃" not in plain and plain.splitlines()[0].split() == ["name", "type", "nullable"]
