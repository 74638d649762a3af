"""Issue 13 item 7 through the real CLI: a hostile registry.yaml (a 1 KB alias bomb, merge keys, tags, deep
nesting, types past the grammar's bounds) gets a clear exit-2 answer from every command, fast, and changes
nothing on disk. Before: `namespace list`, `head`, `register` and `validate` ran 19-65 s, then MemoryError.

The time bound below (10 s per command, process start included) is only a generous guard against a hang; the
figure measured on the development machine is in docs/reliability.md.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testkit import tree_digest

USR = shutil.which("usr", path=str(Path(sys.executable).parent)) or str(Path(sys.executable).parent / "usr")
GUARD_S = 10.0


def _laughs(levels: int = 9, width: int = 9) -> str:
    lines = ["  l0: &l0 [lol]"]
    for i in range(1, levels):
        lines.append(f"  l{i}: &l{i} [{', '.join(['*l' + str(i - 1)] * width)}]")
    return "\n".join(lines)


MOCK = "  mock:\n    columns:\n    - name: mock__score\n      type: float64\n"
BOMB = f"bomb:\n{_laughs()}\nnamespaces:\n{MOCK}    description: *l8\n    owner: *l8\n"
FAMILY = {
    "merge-key": f"base: &b {{owner: alice}}\nnamespaces:\n{MOCK}    <<: *b\n",
    "tag": f"namespaces:\n{MOCK}    owner: !!binary aGk=\n",
    "deep": f"namespaces:\n{MOCK}    description: {'[' * 20000}{']' * 20000}\n",
    "nested-type": f"namespaces:\n  mock:\n    columns:\n    - name: mock__x\n      type: {'list<' * 3000}int8"
                   f"{'>' * 3000}\n",
    "fixed-size": "namespaces:\n  mock:\n    columns:\n    - name: mock__x\n      type: "
                  "fixed_size_list<int8>[999999999999]\n",
}


def _run(root: Path, *args) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if k != "USR_ROOT"}
    t0 = time.perf_counter()
    res = subprocess.run([USR, "--root", str(root), *map(str, args)], capture_output=True, text=True, env=env,
                         timeout=120, stdin=subprocess.DEVNULL)
    return res, time.perf_counter() - t0


@pytest.fixture
def hostile_root(make_ds, root, tmp_path):
    import pyarrow as pa

    ds = make_ds()
    ids = ds.read_table(columns=["id"])["id"].to_pylist()
    ds.write_overlay("mock", pa.table({"id": ids, "mock__score": [1.0] * len(ids),
                                       "mock__label": ["x"] * len(ids)}))
    csv = tmp_path / "in.csv"
    csv.write_text("sequence\nCCCC\n")
    attach = tmp_path / "attach.csv"
    attach.write_text(f"id,mock__score\n{ids[0]},2.0\n")
    return root, ds, csv, attach, ids


def _commands(csv, attach, ids):
    return [("namespace", "list"), ("namespace", "show", "mock"),
            ("namespace", "register", "other", "--columns", "other__x:int64"),
            ("head", "demo"), ("validate", "demo"), ("info", "demo"), ("schema", "demo"),
            ("import", "demo", "--from", "csv", "--path", csv),
            ("attach", "demo", "--path", attach, "--namespace", "mock", "--allow-overwrite"),
            ("delete", "demo", "--id", ids[1]), ("snapshot", "demo"),
            ("maintenance", "registry-freeze", "demo"), ("ls",)]


def test_R1_alias_bomb_every_command_answers_fast(hostile_root):
    """[R1] [C5] the billion-laughs registry: every command answers well within the guard with exit 2 and a
    message naming the alias (or succeeds without the registry, like `ls`), nothing changes on disk."""
    root, ds, csv, attach, ids = hostile_root
    (root / "registry.yaml").write_text(BOMB)
    assert len(BOMB) < 1500
    before = tree_digest(root)
    slowest = 0.0
    for args in _commands(csv, attach, ids):
        res, elapsed = _run(root, *args)
        slowest = max(slowest, elapsed)
        assert elapsed < GUARD_S, f"usr {' '.join(map(str, args))}: {elapsed:.1f}s"
        assert res.returncode in (0, 2), f"usr {' '.join(map(str, args))} -> {res.returncode}\n{res.stderr}"
        if res.returncode == 2:
            assert "alias" in res.stderr and "Traceback" not in res.stderr, res.stderr
        else:
            assert args == ("ls",), f"usr {' '.join(map(str, args))} ignored the registry\n{res.stdout}"
    assert tree_digest(root) == before
    print(f"slowest command under the alias bomb: {slowest:.2f}s")


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_R1_hostile_registry_family_exit_2(hostile_root, name):
    """[R1] [R6] merge keys, tags, deep nesting and out-of-bounds types: exit 2 with the problem named, fast."""
    root, ds, csv, attach, ids = hostile_root
    (root / "registry.yaml").write_text(FAMILY[name])
    before = tree_digest(root)
    for args in [("namespace", "list"), ("head", "demo"), ("delete", "demo", "--id", ids[1])]:
        res, elapsed = _run(root, *args)
        assert elapsed < GUARD_S
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert "registry.yaml" in res.stderr
    assert tree_digest(root) == before


def test_R10_register_refuses_out_of_bounds_types(hostile_root):
    """[R10] [R6] registration refuses a 3,000-deep list type and a 999999999999 fixed size (exit 2), so no
    such entry can reach the registry; head keeps working on the dataset with an overlay."""
    root, ds, csv, attach, ids = hostile_root
    before = (root / "registry.yaml").read_bytes()
    for typ in ("list<" * 3000 + "int8" + ">" * 3000, "fixed_size_list<int8>[999999999999]"):
        res, _ = _run(root, "namespace", "register", "evil", "--columns", f"evil__x:{typ}")
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert (root / "registry.yaml").read_bytes() == before
    res, _ = _run(root, "head", "demo")
    assert res.returncode == 0, res.stderr
