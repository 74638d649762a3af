"""Root resolution (C1) and exit codes (C5): ERROR/Hint lines, nothing on disk changes on failure."""
from __future__ import annotations


def test_C1_root_from_env_when_no_flag(usr, root):
    """[C1] $USR_ROOT is the root when --root is absent."""
    usr.ok("namespace", "register", "mock", "--columns", "mock__x:int64")
    res = usr.ok("namespace", "list", root=False, env={"USR_ROOT": str(root)})
    assert "mock: mock__x" in res.stdout


def test_C1_root_flag_wins_over_env(usr, root, tmp_path):
    """[C1] --root takes precedence over $USR_ROOT."""
    other = tmp_path / "other"
    other.mkdir()
    usr.ok("namespace", "register", "mock", "--columns", "mock__x:int64")
    res = usr.ok("--root", root, "namespace", "list", root=False, env={"USR_ROOT": str(other)})
    assert "mock" in res.stdout


def test_C1_C5_missing_or_nonexistent_root_is_usage_error(usr, tmp_path):
    """[C1][C5] no root, a missing directory or a file as root -> usage error, exit 2."""
    assert usr("ls", root=False).returncode == 2
    res = usr("ls", root=tmp_path / "nope")
    assert res.returncode == 2 and "does not exist" in res.stderr
    f = tmp_path / "file"
    f.write_text("x")
    assert usr("ls", root=f).returncode == 2
    res = usr("ls", root=False, env={"USR_ROOT": str(tmp_path / "nope")})
    assert res.returncode == 2


def test_C5_unknown_dataset_exit_1(usr, root):
    """[C5] dataset not found -> exit 1 with ERROR and Hint lines."""
    res = usr("info", "nosuch")
    assert res.returncode == 1
    assert res.stderr.startswith("ERROR: ") and "nosuch" in res.stderr and "\nHint: " in res.stderr


def test_C5_unknown_namespace_in_show_exit_1(usr):
    """[C5][R12] `namespace show` of an unknown namespace -> exit 1."""
    usr.ok("namespace", "register", "mock", "--columns", "mock__x:int64")
    assert usr("namespace", "show", "nosuch").returncode == 1


def test_C5_sequences_error_exit_2_with_hint_and_no_change(usr, root, tree_digest):
    """[C5][R10] a SequencesError -> exit 2, `ERROR:` + `Hint:` lines, registry untouched."""
    usr.ok("namespace", "register", "mock", "--columns", "mock__x:int64")
    before = tree_digest(root)
    res = usr("namespace", "register", "mock", "--columns", "mock__y:int64")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert lines[0].startswith("ERROR: ") and "already registered" in lines[0]
    assert lines[1].startswith("Hint: ")
    assert tree_digest(root) == before


def test_C5_usage_errors_exit_2(usr, demo):
    """[C5] wrong flags / bad choices are usage errors (exit 2)."""
    assert usr("head", "demo", "--no-such-flag").returncode == 2
    assert usr("export", "demo", "--fmt", "xml", "--out", demo["dir"].parent).returncode == 2
    assert usr("delete", "demo").returncode == 2  # neither --id nor --id-file


def test_C5_X10_unsupported_export_format_changes_nothing(usr, root, demo, tmp_path, tree_digest):
    """[C5][X10] unsupported export format -> exit 2, nothing written."""
    out = tmp_path / "out"
    out.mkdir()
    before = tree_digest(root)
    assert usr("export", "demo", "--fmt", "xlsx", "--out", out).returncode == 2
    assert list(out.iterdir()) == [] and tree_digest(root) == before


def test_C5_duplicate_ids_exit_2_with_groups(usr, demo, tmp_path, tree_digest):
    """[C5][S7] DuplicateIDError -> exit 2, ERROR line and the duplicate groups."""
    csv = tmp_path / "dups.csv"
    csv.write_text("sequence\nAAAACCCC\nAAAACCCC\n")
    before = tree_digest(demo["dir"])
    res = usr("import", "demo", "--from", "csv", "--path", csv)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("ERROR: ")
    assert "AAAACCCC" in res.stderr or "count=2" in res.stderr
    assert tree_digest(demo["dir"]) == before


def test_C5_missing_input_file_exit_4(usr, demo, tmp_path):
    """[C5] FileNotFoundError (missing --path) -> exit 4."""
    res = usr("import", "demo", "--from", "csv", "--path", tmp_path / "missing.csv")
    assert res.returncode == 4, res.stderr
    assert res.stderr.startswith("ERROR: ")
    res = usr("attach", "demo", "--path", tmp_path / "missing.csv", "--namespace", "mock")
    assert res.returncode == 4, res.stderr


def test_C5_aborted_prompt_exit_130_without_tty(usr, demo, tree_digest):
    """[C5][C3] materialize/dedupe without --yes and without a terminal abort with 130; nothing changes."""
    before = tree_digest(demo["dir"])
    res = usr("materialize", "demo")
    assert res.returncode == 130, res.stderr
    assert "--yes" in res.stderr
    res = usr("maintenance", "dedupe", "demo", "--key", "id")
    assert res.returncode == 130
    assert tree_digest(demo["dir"]) == before


def test_C5_get_not_found_exit_0(usr, demo):
    """[C5][C3] `get` of an unknown id prints `Not found.` and exits 0."""
    res = usr.ok("get", "demo", "0" * 40)
    assert res.stdout.strip() == "Not found."
    res = usr.ok("get", "demo", "--id", demo["ids"][0])
    assert demo["seqs"][0] in res.stdout


def test_C5_registry_required_exit_2(usr, root):
    """[C5][R2] init without registry.yaml -> exit 2 naming the registry."""
    res = usr("init", "demo")
    assert res.returncode == 2
    assert "egistry" in res.stderr
    assert not (root / "demo" / "records.parquet").exists()


def test_C5_event_log_garden_write_needs_acknowledgement(usr, demo):
    """[C5][X11] --write without --acknowledge-cursor-reset is refused (exit 2), log untouched."""
    log = demo["dir"] / ".events.log"
    before = log.read_bytes()
    assert usr("maintenance", "event-log-garden", "demo", "--write").returncode == 2
    assert log.read_bytes() == before


MAPPING_CODE = """
import sys, click
from usr_core.cli import main as m
from usr_core.errors import DuplicateIDError, LockTimeoutError

RAISE = {
    "exists": lambda: FileExistsError("target exists"),
    "missing": lambda: FileNotFoundError("no such file"),
    "lock": lambda: LockTimeoutError("dataset lock busy", hint="retry later"),
    "dup": lambda: DuplicateIDError("2 duplicate ids", groups=[("abc", 2, [1, 2], "ACGT")]),
    "other": lambda: RuntimeError("boom"),
    "interrupt": lambda: KeyboardInterrupt(),
}

@m.cli.command("raise")
@click.argument("kind")
def raise_cmd(kind):
    raise RAISE[kind]()

m.main(["raise", sys.argv[1]])
"""


def test_C5_exception_to_exit_code_mapping(usr):
    """[C5] FileExistsError -> 3, FileNotFoundError -> 4, SequencesError -> 2 (with Hint and duplicate groups),
    interrupt -> 130, anything else -> 1; always one `ERROR:` line first."""
    import subprocess
    import sys

    expected = {"exists": 3, "missing": 4, "lock": 2, "dup": 2, "other": 1, "interrupt": 130}
    for kind, code in expected.items():
        res = subprocess.run([sys.executable, "-c", MAPPING_CODE, kind], capture_output=True, text=True, timeout=60)
        assert res.returncode == code, (kind, res.returncode, res.stderr)
        if kind != "interrupt":
            assert res.stderr.startswith("ERROR: "), (kind, res.stderr)
    res = subprocess.run([sys.executable, "-c", MAPPING_CODE, "dup"], capture_output=True, text=True, timeout=60)
    assert "id=abc, count=2" in res.stderr
    res = subprocess.run([sys.executable, "-c", MAPPING_CODE, "lock"], capture_output=True, text=True, timeout=60)
    assert res.stderr.splitlines()[1] == "Hint: retry later"
