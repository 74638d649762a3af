"""Hints speak the caller's language (issue 14): the API's `hint` names keyword arguments (allow_missing=True),
the CLI prints `cli_hint` with flags (--allow-missing) when the two differ."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from usr_core import Dataset, SchemaError
from usr_core.errors import option_hint

REPO = Path(__file__).resolve().parents[2]
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]+")
KEYWORD = re.compile(r"\b[a-z_]+=(True|False)\b")


def _text(node: ast.expr) -> str:
    """The literal text of a string or f-string expression (formatted parts left out)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(_text(v) for v in node.values if isinstance(v, ast.Constant))
    if isinstance(node, ast.BinOp):
        return _text(node.left) + _text(node.right)
    return ""


def library_hints() -> list[tuple[str, str, str | None]]:
    """(where, hint text, cli_hint text or None) of every call passing hint= in usr_core outside the CLI."""
    found = []
    for path in sorted((REPO / "usr_core").rglob("*.py")):
        if "cli" in path.relative_to(REPO / "usr_core").parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            kw = {k.arg: k.value for k in node.keywords if k.arg}
            if "hint" in kw:
                cli = _text(kw["cli_hint"]) if "cli_hint" in kw else None
                found.append((f"{path.relative_to(REPO)}:{node.lineno}", _text(kw["hint"]), cli))
    return found


def test_C5_option_hint_renders_both_syntaxes():
    assert option_hint("Pass {} to drop them.", "allow_missing") == {
        "hint": "Pass allow_missing=True to drop them.", "cli_hint": "Pass --allow-missing to drop them."}
    assert option_hint("Use {}.", "parse_json", False)["cli_hint"] == "Use --no-parse-json."
    assert option_hint("Use {}.", "key", "sequence") == {"hint": "Use key='sequence'.", "cli_hint": "Use --key sequence."}


def test_C5_library_hints_with_flags_carry_a_cli_form():
    """A library hint never shows a --flag or a keyword=True unless a cli_hint carries the CLI form beside it."""
    hints = library_hints()
    assert len(hints) > 50
    wrong = [(where, hint) for where, hint, cli in hints if cli is None and (FLAG.search(hint) or " / --" in hint)]
    assert not wrong, wrong
    mixed = [(where, hint) for where, hint, cli in hints if FLAG.search(hint) and KEYWORD.search(hint)]
    assert not mixed, mixed


def test_C5_api_error_hint_in_python_syntax(root, demo):
    """[T2][O5] the same error: `hint` in Python syntax for the API, `cli_hint` with the flag for the CLI."""
    ds = Dataset(root, "demo")
    with pytest.raises(SchemaError) as ei:
        ds.tombstone(["f" * 40])
    assert "allow_missing=True" in ei.value.hint and "--" not in ei.value.hint
    assert "--allow-missing" in ei.value.cli_hint
