"""Security (issue 6 §5): safe YAML only, secrets redacted in events (E4), nothing written outside the root."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pytest

import crash_ops
from testkit import tree_digest
from usr_core import Dataset, NamespaceError, SequencesError, register_namespace

REPO = Path(__file__).resolve().parents[2]
PYTHON_TAGS = ["!!python/object/apply:os.system ['touch {m}']", "!!python/object/new:os.system ['touch {m}']",
               "!!python/name:os.system", "!!python/module:os", "!!python/object/apply:subprocess.call [[touch, {m}]]"]


def _yaml_importers() -> list[str]:
    """Modules of the shipped packages that import yaml (by their syntax tree, not their text)."""
    import ast

    found = []
    for pkg in ("usr_core", "usr_dagster", "scripts", "benchmarks"):
        for path in sorted((REPO / pkg).rglob("*.py")) if (REPO / pkg).is_dir() else []:
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                if any(n == "yaml" or n.startswith("yaml.") for n in names):
                    found.append(str(path.relative_to(REPO)))
    return sorted(set(found))


def test_yaml_is_only_loaded_with_safe_loaders():
    """[R1] YAML is parsed in one module only, with a safe loader: the module's loader class is a SafeLoader
    (checked on the live object), and every loader entry point refuses python tags without running them."""
    import yaml

    from usr_core.registry import registry as reg_mod

    assert _yaml_importers() == ["usr_core/registry/registry.py"]
    assert issubclass(reg_mod._SafeLoader, (yaml.SafeLoader, getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
    assert not issubclass(reg_mod._SafeLoader, (yaml.FullLoader, yaml.UnsafeLoader))


@pytest.mark.parametrize("tag", PYTHON_TAGS)
@pytest.mark.parametrize("where", ["top", "description", "type", "key"])
def test_R1_python_tags_refused_by_every_yaml_entry_point(root, tmp_path, tag, where):
    """[R1] a python tag anywhere in registry.yaml or a freeze file: SchemaError from load_registry,
    load_frozen and the CLI, and nothing runs."""
    import subprocess
    import sys

    from usr_core.errors import SchemaError
    from usr_core.registry.registry import load_frozen, load_registry

    marker = tmp_path / "pwned"
    value = tag.format(m=marker)
    col = "    columns:\n    - name: mock__a\n      type: {t}\n"
    text = {"top": f"x: {value}\nnamespaces: {{}}\n",
            "description": "namespaces:\n  mock:\n" + col.format(t="int64") + f"    description: {value}\n",
            "type": "namespaces:\n  mock:\n" + col.format(t=value),
            "key": f"namespaces:\n  ? {value}\n  : {{}}\n"}[where]
    (root / "registry.yaml").write_text(text)
    frozen = tmp_path / "registry.f.yaml"
    frozen.write_text(text)
    for load in (lambda: load_registry(root), lambda: load_frozen(frozen)):
        with pytest.raises(SchemaError):
            load()
    if where == "description":  # one real CLI run per tag
        res = subprocess.run([sys.executable, "-m", "usr_core.cli.main", "--root", str(root), "namespace", "list"],
                             capture_output=True, text=True, timeout=60, cwd=str(REPO))
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert not marker.exists()


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
