"""Security (issue 6 §5): safe YAML only, secrets redacted in events (E4), nothing written outside the root."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pyarrow as pa
import pytest

import crash_ops
from testkit import tree_digest
from usr_core import Dataset, NamespaceError, SequencesError, register_namespace

REPO = Path(__file__).resolve().parents[2]
UNSAFE_YAML = re.compile(r"yaml\.(full_load|full_load_all|unsafe_load|unsafe_load_all)\s*\(|"
                         r"yaml\.(Unsafe|Full)?Loader\b|yaml\.C?(Unsafe|Full)?Loader\b")
YAML_LOAD = re.compile(r"yaml\.load(_all)?\s*\(")
SAFE_LOADER_ARG = re.compile(r"Loader\s*=\s*(yaml\.)?(C?SafeLoader|_SafeLoader)\b")
SAFE_ALIAS = re.compile(r"^_SafeLoader\s*=\s*getattr\(yaml,\s*\"CSafeLoader\",\s*yaml\.SafeLoader\)")


def test_yaml_is_only_loaded_with_safe_loaders():
    """Registry, freeze files and metadata YAML go through yaml.safe_load only [R1]."""
    offenders = []
    for pkg in ("usr_core", "usr_dagster", "scripts", "benchmarks"):
        for path in sorted((REPO / pkg).rglob("*.py")) if (REPO / pkg).is_dir() else []:
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                bad = UNSAFE_YAML.search(line) or (YAML_LOAD.search(line) and not SAFE_LOADER_ARG.search(line))
                if "_SafeLoader" in line and line.startswith("_SafeLoader") and not SAFE_ALIAS.search(line):
                    bad = True
                if bad:
                    offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not offenders, offenders
    uses = [p for p in (REPO / "usr_core").rglob("*.py")
            if re.search(r"yaml\.safe_load\(|Loader=_SafeLoader", p.read_text(encoding="utf-8"))]
    assert uses, "expected the registry to be read with yaml.safe_load"


def test_registry_python_tags_are_not_executed(root, tmp_path):
    marker = tmp_path / "pwned"
    (root / "registry.yaml").write_text(f"feat: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(SequencesError):
        Dataset(root, "demo").init()
    assert not marker.exists()


SECRET = "s3cr3t-value"


def _events_text(ds) -> str:
    return ds.events_path.read_text(encoding="utf-8")


def test_E4_secrets_redacted_in_nested_args_and_cli_flags(root):
    crash_ops.base_setup(root)
    ds = Dataset(root, "demo")
    ds.log_event("note", args={
        "token": SECRET,
        "nested": {"api_key": SECRET, "deeper": [{"password": SECRET, "fine": "visible-1"}]},
        "argv": ["usr", "attach", "--token", SECRET, f"--webhook-url={SECRET}", "--Auth-Header", SECRET,
                 "--name", "visible-2"],
        "cmd": {"flags": ["--client-secret", SECRET]},
    }, metrics={"n": 1})
    ids = crash_ops._ids(root)
    ds.write_overlay_part("feat", pa.table({"id": ids[:1], "feat__label": ["a"]}),
                          event_args={"run": {"bearer_token": SECRET, "cookie": SECRET}, "label": "visible-3"})
    text = _events_text(ds)
    assert SECRET not in text
    for visible in ("visible-1", "visible-2", "visible-3"):
        assert visible in text
    last = [json.loads(line) for line in text.splitlines()][-2]
    assert last["args"]["argv"][3] == "***REDACTED***"
    assert last["args"]["argv"][4] == "--webhook-url=***REDACTED***"


BAD_IDS = ["../evil", "a/../../evil", "/tmp/evil", "..", "x/..", "a\\..\\evil", "x\x00y", "archived/x", "./.",
           " ../evil ", "a//..//evil"]
BAD_NAMESPACES = ["../evil", "evil/x", "..", "Evil", "a__b", "usr", "x\n", "x/../../evil", "", "9x", "a.b"]


@pytest.mark.parametrize("name", BAD_IDS)
def test_no_write_outside_root_for_bad_dataset_ids(root, tmp_path, name):
    crash_ops.register_base(root)
    before = tree_digest(tmp_path)
    with pytest.raises(SequencesError):
        Dataset(root, name).init()
    assert tree_digest(tmp_path) == before


@pytest.mark.parametrize("ns", BAD_NAMESPACES)
def test_no_write_outside_root_for_bad_namespaces(root, tmp_path, ns):
    crash_ops.base_setup(root)
    ds = Dataset(root, "demo")
    ids = crash_ops._ids(root)
    before = tree_digest(tmp_path)
    for call in (lambda: register_namespace(root, ns, f"{ns}__x:int64"),
                 lambda: ds.write_overlay(ns, pa.table({"id": ids[:1], f"{ns}__x": [1]})),
                 lambda: ds.write_overlay_part(ns, pa.table({"id": ids[:1], f"{ns}__x": [1]})),
                 lambda: ds.create_overlay(ns, pa.table({"id": ids[:1], f"{ns}__x": [1]}))):
        with pytest.raises((NamespaceError, SequencesError)):
            call()
    assert tree_digest(tmp_path) == before


def test_symlinked_dataset_dir_cannot_lead_outside_root(root, tmp_path):
    crash_ops.register_base(root)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, root / "linked")
    with pytest.raises(SequencesError):
        Dataset(root, "linked").init()
    assert list(outside.iterdir()) == []


def test_demo_webserver_binds_localhost():
    offenders = []
    for path in list((REPO / "usr_dagster").rglob("*.py")) + list((REPO / "scripts").glob("*")):
        if path.is_file() and "0.0.0.0" in path.read_text(encoding="utf-8", errors="replace"):
            offenders.append(str(path.relative_to(REPO)))
    assert not offenders, offenders
    run_demo = REPO / "scripts" / "run_demo.sh"
    if run_demo.exists():
        assert "127.0.0.1" in run_demo.read_text()
