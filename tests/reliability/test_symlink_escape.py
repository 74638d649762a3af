"""Issue 13 item 1: with any file or folder of the layout symlinked out of the root, no `usr` command writes,
creates or deletes anything outside the root (docs/reliability.md, rule 1).

Every path of the layout (L1, L4) is turned, in turn, into a link to a copy outside the root; then real `usr`
subprocesses run the mutating commands. The outside tree must stay byte-identical (names, bytes, modes), every
mutation that would go through the link is refused with exit 2 naming the link, and nothing is written inside
the root either (the refusal comes before the first write). The quick variant runs, for each path, the commands
that write or delete there; the slow variant runs every command against every path.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

ROOT_BIN = Path(sys.executable).parent
USR = shutil.which("usr", path=str(ROOT_BIN)) or str(ROOT_BIN / "usr")
SEQS = ["ACGT", "AACC", "GGTT", "TTAA", "CAGT", "GATC"]


def tree_state(path: Path) -> dict:
    """name -> (kind, mode, sha256 or link target) for everything under `path` (links not followed)."""
    out = {}
    if not os.path.lexists(path):
        return out
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(path))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", st.st_mode)
            elif name.endswith(".lock"):  # lock files hold their last holder's pid by design (A3)
                out[rel] = ("lock", st.st_mode)
            else:
                out[rel] = ("file", st.st_mode, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def _build(root: Path) -> None:
    """A dataset with every kind of layout entry (L4): parts, compact, tombstones, state, snapshots, freeze
    files, archived overlays, gardened logs."""
    from usr_core import Dataset, register_namespace
    from usr_core.identity import compute_id

    register_namespace(root, "mock", "mock__score:float64,mock__label:string")
    register_namespace(root, "gc", "gc__frac:float64")
    register_namespace(root, "old", "old__x:int64")
    ds = Dataset(root, "demo")
    ds.init(source="test")
    ds.import_rows([{"sequence": s} for s in SEQS])
    ids = [compute_id("dna", s) for s in SEQS]
    ds.write_overlay("mock", pa.table({"id": ids, "mock__score": [float(i) for i in range(6)],
                                       "mock__label": list("abcdef")}))
    ds.write_overlay_part("gc", pa.table({"id": ids[:3], "gc__frac": [0.1, 0.2, 0.3]}))
    ds.write_overlay_part("gc", pa.table({"id": ids[3:], "gc__frac": [0.4, 0.5, 0.6]}))
    ds.write_overlay("old", pa.table({"id": ids, "old__x": list(range(6))}))
    ds.tombstone([ids[5]], reason="bad")
    ds.set_state([ids[4]], masked=True)
    ds.snapshot()
    with ds.maintenance(reason="setup"):
        ds.remove_overlay("old", mode="archive")
    ds.garden_event_log(retain_last=50, write=True, acknowledge_cursor_reset=True)
    ds.log_event("custom")


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("symlink_template")
    root = base / "root"
    root.mkdir()
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_symlink_escape as t; " \
           f"from pathlib import Path; t._build(Path(sys.argv[1]))"
    res = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, timeout=120,
                         cwd=str(Path(__file__).resolve().parents[2]))
    assert res.returncode == 0, res.stderr
    (base / "input.csv").write_text("sequence\nCCCC\nGGGG\n")
    ids = _ids()
    (base / "attach.csv").write_text("id,mock__score\n" + "\n".join(f"{i},9.5" for i in ids[:2]) + "\n")
    (base / "ids.txt").write_text(ids[0] + "\n")
    return base


def _ids() -> list[str]:
    from usr_core.identity import compute_id

    return [compute_id("dna", s) for s in SEQS]


def _first(root: Path, pattern: str) -> str:
    hits = sorted(root.glob(pattern))
    assert hits, pattern
    return str(hits[0].relative_to(root))


# every path of the layout, relative to the root (globs resolved against the template)
LAYOUT = ["registry.yaml", "demo", "demo/records.parquet", "demo/meta.md", "demo/.events.log", "demo/.events.lock",
          "demo/.usr.lock", "demo/_registry", "demo/_registry/registry.*.yaml", "demo/_snapshots",
          "demo/_snapshots/records-*.parquet", "demo/_derived", "demo/_derived/mock.parquet", "demo/_derived/gc",
          "demo/_derived/gc/part-*.parquet", "demo/_derived/usr.parquet", "demo/_derived/usr_state*",
          "demo/_derived/_archived", "demo/_derived/_archived/*", "demo/.events.archive",
          "demo/.events.archive/events-*.jsonl"]


def _commands(base: Path) -> dict[str, list[str]]:
    ids = _ids()
    return {
        "import": ["import", "demo", "--from", "csv", "--path", str(base / "input.csv")],
        "attach": ["attach", "demo", "--path", str(base / "attach.csv"), "--namespace", "mock", "--allow-overwrite"],
        "delete": ["delete", "demo", "--id", ids[1]],
        "restore": ["restore", "demo", "--id", ids[5]],
        "state": ["state", "set", "demo", "--id", ids[2], "--masked"],
        "snapshot": ["snapshot", "demo"],
        "compact": ["maintenance", "overlay-compact", "demo", "--namespace", "gc"],
        "freeze": ["maintenance", "registry-freeze", "demo"],
        "garden": ["maintenance", "event-log-garden", "demo", "--retain-last", "2", "--write",
                   "--acknowledge-cursor-reset"],
        "remove": ["maintenance", "overlay-remove", "demo", "--namespace", "mock", "--mode", "archive"],
        "materialize": ["materialize", "demo", "--yes", "--namespaces", "mock", "--archive-overlays"],
        "register": ["namespace", "register", "extra", "--columns", "extra__v:int64"],
        "init": ["init", "demo2"],
    }


# the commands that write or delete at each path (the quick variant); the slow variant runs all of them
NATURAL = {
    "registry.yaml": ["register", "import"], "demo": ["import", "delete"], "demo/records.parquet": ["import"],
    "demo/meta.md": ["import"], "demo/.events.log": ["delete", "garden"], "demo/.events.lock": ["delete"],
    "demo/.usr.lock": ["delete"], "demo/_registry": ["freeze", "import"],
    "demo/_registry/registry.*.yaml": ["freeze"], "demo/_snapshots": ["snapshot", "import"],
    "demo/_snapshots/records-*.parquet": ["snapshot"], "demo/_derived": ["attach", "delete"],
    "demo/_derived/mock.parquet": ["attach", "remove"], "demo/_derived/gc": ["compact"],
    "demo/_derived/gc/part-*.parquet": ["compact"], "demo/_derived/usr.parquet": ["delete", "restore"],
    "demo/_derived/usr_state*": ["state"], "demo/_derived/_archived": ["remove"],
    "demo/_derived/_archived/*": ["materialize"], "demo/.events.archive": ["garden"],
    "demo/.events.archive/events-*.jsonl": ["garden"],
}


def _run(root: Path, args: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "USR_ROOT"}
    return subprocess.run([USR, "--root", str(root), *args], capture_output=True, text=True, timeout=120, env=env,
                          stdin=subprocess.DEVNULL)


def _scenario(template: Path, tmp_path: Path, pattern: str) -> tuple[Path, Path, str]:
    """Copy the template, move the layout entry `pattern` outside the root and link it back."""
    shutil.copytree(template, tmp_path / "w", symlinks=True)
    base = tmp_path / "w"
    root, outside = base / "root", base / "outside"
    outside.mkdir()
    rel = _first(root, pattern)
    inside = root / rel
    away = outside / Path(rel).name
    shutil.move(str(inside), str(away))
    inside.symlink_to(away, target_is_directory=away.is_dir())
    return root, outside, rel


def _check(root: Path, outside: Path, rel: str, name: str, args: list[str]) -> None:
    before_out, before_root = tree_state(outside), tree_state(root)
    res = _run(root, args)
    assert tree_state(outside) == before_out, f"{name} changed files outside the root via {rel}\n{res.stderr}"
    assert res.returncode in (0, 2), f"{name} with {rel} linked out: exit {res.returncode}\n{res.stderr}"
    if res.returncode == 2:
        assert "symbolic link" in res.stderr or "outside the root" in res.stderr, res.stderr
        assert tree_state(root) == before_root, f"{name} was refused but changed the root\n{res.stderr}"


@pytest.mark.parametrize("pattern", LAYOUT)
def test_L4_symlinked_layout_entry_never_written_through(template, tmp_path, pattern):
    """[L4] [A1] issue 13 item 1: the commands that write or delete at `pattern` refuse the link (exit 2, the
    link named) and change nothing inside or outside the root."""
    root, outside, rel = _scenario(template, tmp_path, pattern)
    commands = _commands(tmp_path / "w")
    refused = 0
    for name in NATURAL[pattern]:
        before = tree_state(outside)
        res = _run(root, commands[name])
        assert tree_state(outside) == before, f"{name} changed files outside the root via {rel}\n{res.stderr}"
        if pattern != "registry.yaml" or name == "register":
            assert res.returncode == 2, f"{name} with {rel} linked out: exit {res.returncode}\n{res.stderr}"
            assert rel.split("/")[-1] in res.stderr and ("symbolic link" in res.stderr
                                                         or "outside the root" in res.stderr), res.stderr
            refused += 1
    assert refused


@pytest.mark.slow
@pytest.mark.parametrize("pattern", LAYOUT)
def test_L4_symlinked_layout_entry_every_command(template, tmp_path, pattern):
    """[L4] [A1] issue 13 item 1, the full matrix: every mutating command against every linked path; the outside
    tree stays byte-identical, exits are 0 or 2, and a refused command leaves the root unchanged."""
    root, outside, rel = _scenario(template, tmp_path, pattern)
    for name, args in _commands(tmp_path / "w").items():
        _check(root, outside, rel, name, args)


def test_L6_snapshot_pruning_never_deletes_foreign_files(template, tmp_path):
    """[L6] issue 13 item 1: `_snapshots` linked to a folder holding files named like snapshots: six imports
    are refused and every foreign file survives (before: the pruning deleted three of them, exit 0)."""
    root, outside, rel = _scenario(template, tmp_path, "demo/_snapshots")
    for i in range(8):
        (outside / "_snapshots" / f"records-2020010{i}T000000000000.parquet").write_bytes(b"foreign %d" % i)
    before = tree_state(outside)
    for _ in range(6):
        res = _run(root, _commands(tmp_path / "w")["import"])
        assert res.returncode == 2 and "_snapshots" in res.stderr, res.stderr
    assert tree_state(outside) == before


def test_L10_meta_md_linked_to_private_file_is_not_copied(template, tmp_path):
    """[L10] issue 13 item 1: meta.md linked to a 0600 file outside: import refuses; the root gets no copy of
    that file's content and the file keeps its bytes and mode."""
    root, outside, rel = _scenario(template, tmp_path, "demo/meta.md")
    secret = outside / "meta.md"
    secret.write_text("name: demo\nprivate key material\n")
    secret.chmod(0o600)
    res = _run(root, _commands(tmp_path / "w")["import"])
    assert res.returncode == 2 and "meta.md" in res.stderr, res.stderr
    assert (root / "demo" / "meta.md").is_symlink()
    assert oct(secret.stat().st_mode & 0o777) == oct(0o600)


def test_A1_primitives_refuse_links_inside_a_layout(tmp_path):
    """[A1] the storage primitives themselves (used by every writer) refuse a linked target or folder inside a
    USR layout, and leave paths outside any layout (an export target) alone."""
    from usr_core.errors import UnsafePathError
    from usr_core.storage.atomic import copy_file, make_dirs, remove_file, remove_tree, rename_path, write_bytes

    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "demo").mkdir(parents=True)
    outside.mkdir()
    (root / "registry.yaml").write_text("namespaces: {}\n")
    (root / "demo" / ".usr.lock").write_text("")
    (outside / "victim").write_text("keep")
    (root / "demo" / "_snapshots").symlink_to(outside, target_is_directory=True)
    (root / "demo" / "meta.md").symlink_to(outside / "victim")
    before = tree_state(outside)
    calls = [lambda: write_bytes(root / "demo" / "_snapshots" / "records-1.parquet", b"x"),
             lambda: write_bytes(root / "demo" / "meta.md", b"x"),
             lambda: remove_file(root / "demo" / "_snapshots" / "victim"),
             lambda: remove_file(root / "demo" / "meta.md"),
             lambda: remove_tree(root / "demo" / "_snapshots"),
             lambda: rename_path(root / "demo" / "_snapshots" / "victim", root / "demo" / "stolen"),
             lambda: make_dirs(root / "demo" / "_snapshots" / "sub"),
             lambda: copy_file(root / "demo" / "meta.md", root / "demo" / "copy.md")]
    for call in calls:
        with pytest.raises(UnsafePathError) as ei:
            call()
        assert ei.value.hint and "symbolic link" in str(ei.value)
    assert tree_state(outside) == before
    export = tmp_path / "linked_out"
    export.symlink_to(outside, target_is_directory=True)
    write_bytes(export / "export.csv", b"a\n")  # not a USR layout: a user's own destination
    assert (outside / "export.csv").read_bytes() == b"a\n"


@pytest.mark.parametrize("temp", ["demo/meta.md.tmp", "demo/records.tmp.parquet", "registry.yaml.tmp"])
def test_A1_temp_name_hard_linked_outside_is_not_written_through(template, tmp_path, temp):
    """[A1] [L9] a temp name planted as a hard link to a file outside the root: writers replace the name, never
    write into the linked file (a symlink there is refused by the lock check)."""
    shutil.copytree(template, tmp_path / "w", symlinks=True)
    base = tmp_path / "w"
    root, outside = base / "root", base / "outside"
    outside.mkdir()
    victim = outside / "victim"
    victim.write_bytes(b"precious")
    os.link(victim, root / temp)
    commands = _commands(base)
    for name in ("import", "register", "snapshot"):
        res = _run(root, commands[name])
        assert res.returncode == 0, res.stderr
    assert victim.read_bytes() == b"precious"
