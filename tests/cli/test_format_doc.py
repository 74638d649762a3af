"""docs/format.md explains every rule id our errors and help texts cite (issue 14): a clone can look up `(O5)`."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import click
from click.testing import CliRunner

from usr_core.cli.main import cli

REPO = Path(__file__).resolve().parents[2]
FORMAT_DOC = REPO / "docs" / "format.md"
# "(O5)", "(S6-S9)", "(T1, U1)", "(O5/O6)", "[M4]": a rule citation in parentheses or brackets
CITATION = re.compile(r"[(\[]([A-Z]{1,2}\d+(?:\s*(?:-|–|,|/)\s*[A-Z]{1,2}\d+)*)[)\]]")
RULE = re.compile(r"([A-Z]{1,2})(\d+)")


def rule_ids(text: str) -> set[str]:
    """Every rule id cited in `text`; a range S6-S9 stands for S6, S7, S8, S9."""
    ids: set[str] = set()
    for group in CITATION.findall(text):
        for part in re.split(r"\s*(?:,|/)\s*", group):
            ends = [RULE.fullmatch(p.strip()) for p in re.split(r"\s*(?:-|–)\s*", part)]
            if len(ends) == 2 and ends[0] and ends[1] and ends[0][1] == ends[1][1]:
                ids |= {f"{ends[0][1]}{n}" for n in range(int(ends[0][2]), int(ends[1][2]) + 1)}
            else:
                ids |= {m[0] for m in ends if m}
    return ids


def source_strings(package: Path) -> dict[str, set[str]]:
    """Rule ids in the string literals (messages, hints, help, docstrings, f-string text) of a package."""
    found: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for rid in rule_ids(node.value):
                    found.setdefault(rid, set()).add(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def help_texts() -> dict[str, str]:
    """`usr ... --help` of every command and group, rendered by click in process."""
    runner, out = CliRunner(), {}

    def walk(cmd: click.Command, path: list[str]) -> None:
        res = runner.invoke(cli, [*path, "--help"])
        assert res.exit_code == 0, (path, res.output)
        out[" ".join(["usr", *path])] = res.output
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])

    walk(cli, [])
    return out


def documented() -> set[str]:
    return {m[0] for m in RULE.finditer(FORMAT_DOC.read_text(encoding="utf-8"))}


def test_rule_id_parser_expands_ranges_and_lists():
    assert rule_ids("bad (S6-S9) and (T1, U1) or (O5/O6) [M4] (div) (UTF8)") == {
        "S6", "S7", "S8", "S9", "T1", "U1", "O5", "O6", "M4"}


def test_every_rule_id_in_source_strings_is_documented():
    """Rule ids in any string literal of usr_core and usr_dagster (errors, hints, help) appear in format.md."""
    have = documented()
    cited = {**source_strings(REPO / "usr_core")}
    for rid, where in source_strings(REPO / "usr_dagster").items():
        cited.setdefault(rid, set()).update(where)
    assert {"O5", "X2", "S6", "S9"} <= set(cited)  # the ids the issue met in errors and help
    missing = {rid: sorted(where)[:3] for rid, where in cited.items() if rid not in have}
    assert not missing, f"rule ids cited in source but not explained in docs/format.md: {missing}"


def test_every_rule_id_in_help_output_is_documented():
    """Rule ids in `usr --help` and every command's --help appear in format.md; the root help points to it."""
    texts = help_texts()
    assert len(texts) > 30 and "docs/format.md" in texts["usr"]
    have = documented()
    missing = {rid: cmd for cmd, text in texts.items() for rid in rule_ids(text) if rid not in have}
    assert not missing, missing


def test_readme_points_to_the_format_doc_not_outside_the_clone():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "docs/format.md" in readme and "../shared" not in readme and "usr-contract" not in readme
