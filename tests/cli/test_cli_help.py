"""Every command and flag of C3 exists under its exact name; every --help works."""
from __future__ import annotations

import re

import pytest

GROUPS = ["ls", "info", "schema", "head", "get", "grep", "export", "validate", "events", "init", "import",
          "attach", "delete", "restore", "state", "materialize", "snapshot", "namespace", "maintenance"]

# command path -> flags C3 names for it (plus --format per C4)
FLAGS = {
    ("ls",): ["--format"],
    ("info",): ["--format"],
    ("schema",): ["--tree", "--format"],
    ("head",): ["-n", "--columns", "--include-deleted", "--format"],
    ("get",): ["--id", "--columns", "--include-deleted"],
    ("grep",): ["--pattern", "--limit", "--include-deleted"],
    ("export",): ["--fmt", "--out", "--columns", "--include-deleted"],
    ("validate",): ["--strict", "--registry-mode"],
    ("events", "tail"): ["--format", "--n", "--follow"],
    ("init",): ["--source", "--notes"],
    ("import",): ["--from", "--path", "--bio-type", "--alphabet"],
    ("attach",): ["--path", "--namespace", "--key", "--key-col", "--columns", "--allow-overwrite",
                  "--allow-missing", "--parse-json", "--no-parse-json", "--backend", "--note"],
    ("delete",): ["--id", "--id-file", "--reason", "--allow-missing"],
    ("restore",): ["--id", "--id-file", "--allow-missing"],
    ("state", "set"): ["--id", "--id-file", "--masked", "--unmasked", "--qc-status", "--split", "--supersedes",
                       "--lineage"],
    ("state", "clear"): ["--id", "--id-file"],
    ("state", "get"): ["--id", "--id-file", "--format"],
    ("materialize",): ["--namespaces", "--drop-overlays", "--archive-overlays", "--drop-deleted",
                       "--snapshot-before", "--yes"],
    ("snapshot",): [],
    ("namespace", "list"): [],
    ("namespace", "show"): [],
    ("namespace", "register"): ["--columns", "--owner", "--description", "--overwrite"],
    ("maintenance", "registry-freeze"): [],
    ("maintenance", "overlay-compact"): ["--namespace"],
    ("maintenance", "overlay-refresh-metadata"): ["--namespace"],
    ("maintenance", "overlay-remove"): ["--namespace", "--mode"],
    ("maintenance", "dedupe"): ["--key", "--keep", "--dry-run", "--yes"],
    ("maintenance", "merge"): ["--dest", "--src", "--require-same-columns", "--union-columns", "--if-duplicate",
                               "--coerce-overlap", "--carry-namespace", "--no-avoid-casefold-dups", "--dry-run"],
    ("maintenance", "event-log-garden"): ["--retain-last", "--write", "--acknowledge-cursor-reset", "--reason"],
    ("maintenance", "overlay-project"): ["--src", "--dest", "--namespace", "--src-join", "--dest-join",
                                         "--columns", "--no-overwrite", "--allow-missing", "--dry-run"],
}


def test_C3_usr_help_lists_every_command_group(usr):
    """[C3] `usr --help` lists every command group."""
    res = usr.ok("--help", root=False)
    listed = set(re.findall(r"^  ([a-z-]+)\s", res.stdout.split("Commands:")[1], re.M))
    assert set(GROUPS) <= listed, set(GROUPS) - listed


@pytest.mark.parametrize("path", sorted(FLAGS), ids=lambda p: "-".join(p))
def test_C3_every_command_help_names_its_flags(usr, path):
    """[C3] every command's --help works without a root and names the flags of C3 exactly."""
    res = usr.ok(*path, "--help", root=False)
    assert res.stdout.startswith("Usage: usr " + " ".join(path))
    for flag in FLAGS[path]:
        assert re.search(rf"(^|[\s,/]){re.escape(flag)}([\s,/=]|$)", res.stdout, re.M), (path, flag, res.stdout)


@pytest.mark.parametrize("group", ["events", "state", "namespace", "maintenance"])
def test_C3_subgroup_help_lists_subcommands(usr, group):
    """[C3] nested groups list their subcommands."""
    res = usr.ok(group, "--help", root=False)
    subs = {p[1] for p in FLAGS if p[0] == group}
    for sub in subs:
        assert re.search(rf"^  {re.escape(sub)}\s", res.stdout, re.M), (group, sub)
