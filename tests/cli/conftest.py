"""Subprocess helpers: run the installed `usr` console script on temp roots."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

USR = shutil.which("usr", path=str(Path(sys.executable).parent)) or shutil.which("usr") \
    or str(Path(sys.executable).parent / "usr")


class Usr:
    """`usr(*args)` runs the CLI with --root bound to a temp root; stdin is never a terminal."""

    def __init__(self, root: Path):
        self.root = root
        self.exe = USR

    def __call__(self, *args, root: Path | None | bool = True, cwd=None, env=None, input: str | None = None,
                 timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [USR]
        if root is True:
            cmd += ["--root", str(self.root)]
        elif root:
            cmd += ["--root", str(root)]
        full_env = {k: v for k, v in os.environ.items() if k != "USR_ROOT"}
        full_env.update(env or {})
        return subprocess.run(cmd + [str(a) for a in args], cwd=cwd, env=full_env, capture_output=True, text=True,
                              input=input, stdin=None if input is not None else subprocess.DEVNULL,
                              timeout=timeout)

    def ok(self, *args, **kw) -> subprocess.CompletedProcess:
        res = self(*args, **kw)
        assert res.returncode == 0, f"usr {' '.join(map(str, args))} -> {res.returncode}\n{res.stdout}\n{res.stderr}"
        return res

    def json(self, *args, **kw):
        res = self.ok(*args, **kw)
        lines = res.stdout.strip().splitlines()
        assert len(lines) == 1, f"expected one JSON line, got {res.stdout!r}"
        env = json.loads(lines[0])
        assert set(env) == {"usr_output_version", "data"} and env["usr_output_version"] == 1
        return env["data"]


@pytest.fixture
def usr(root) -> Usr:
    return Usr(root)


def _python(code: str, *args, cwd=None) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    return res


@pytest.fixture
def pyrun():
    """Run library code in a subprocess (e.g. write_overlay_part, which has no CLI command)."""
    return _python


SEQS = ["ACGTACGTAA", "CCGGTTAACG", "TTTTGGGGCC", "GATTACAGAT"]


def make_dataset(root: Path, name: str, seqs, namespaces: dict[str, str] | None = None) -> list[str]:
    """Fixture setup in-process through the library (the CLI under test runs in subprocesses)."""
    import pyarrow as pa

    from usr_core import Dataset, compute_id, parse_columns_spec, register_namespace
    from usr_core.registry import load_registry

    have = load_registry(root, required=False) or {}
    for ns, spec in (namespaces or {}).items():
        if ns not in have:
            register_namespace(root, ns, parse_columns_spec(spec))
    ds = Dataset(root, name)
    ds.init(source="tests")
    ds.import_rows(pa.table({"sequence": list(seqs)}), source="tests")
    return [compute_id("dna", s) for s in seqs]


@pytest.fixture
def demo(root) -> dict:
    """A dataset `demo` with 4 DNA records and a registered namespace `mock` (float64 score + label)."""
    ids = make_dataset(root, "demo", SEQS, {"mock": "mock__score:float64,mock__label:string"})
    return {"ids": ids, "seqs": SEQS, "dir": root / "demo"}


@pytest.fixture
def make_ds():
    """make_dataset(root, name, seqs, {ns: spec}) as a fixture."""
    return make_dataset
