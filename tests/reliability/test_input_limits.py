"""Issue 13 item 8 (inputs and the machine's limits): CSV/JSONL inputs past the readers' defaults import and attach,
hostile ones get a clear exit-2 error, and disk-full / permission errors are typed environment errors (exit 5)
with nothing changed on disk. Real files, real `usr` subprocesses.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

from testkit import tree_digest
from usr_core import Dataset, SchemaError, compute_id
from usr_core.errors import EnvironmentFailure
from usr_core.overlays.inputs import FIRST_BLOCK, MAX_INPUT_COLUMNS, read_csv, read_input, read_jsonl

USR = shutil.which("usr", path=str(Path(sys.executable).parent)) or str(Path(sys.executable).parent / "usr")
REPO = Path(__file__).resolve().parents[2]


def usr(root: Path, *args, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "USR_ROOT"}
    return subprocess.run([USR, "--root", str(root), *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=600, stdin=subprocess.DEVNULL, **kw)


def _seq(n: int, seed: int = 0) -> str:
    import random

    return "".join(random.Random(seed).choices("ACGT", k=n))


@pytest.fixture
def demo(make_ds):
    return make_ds()


# ---------------------------------------------------------------- clear errors for hostile inputs

@pytest.mark.parametrize("content,words", [
    (b"", "is empty"), (b"\n\n  \n", "is empty"),
    (b"id,mock__score\n1,2,3\n", "Expected 2 columns"),
    (b"id,mock__score\n\xff\xfe,1\n", "UTF8"),
    (b'id,mock__score\n"unterminated,1\n', "CSV"),
])
def test_O5_bad_csv_attach_is_exit_2_with_hint(demo, root, tmp_path, content, words):
    """[O5] [C5] empty, ragged, non-UTF-8 and unterminated CSV inputs: exit 2, the problem and a hint named, nothing
    changed (before: the reader's words and exit 1 for the empty file)."""
    src = tmp_path / "in.csv"
    src.write_bytes(content)
    before = tree_digest(root)
    res = usr(root, "attach", "demo", "--path", src, "--namespace", "mock", "--allow-missing")
    assert res.returncode == 2, res.stderr
    assert words in res.stderr and "Hint:" in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert tree_digest(root) == before


def test_S6_empty_csv_import_is_exit_2(demo, root, tmp_path):
    """[S6] [C5] importing an empty CSV file: exit 2 naming the file, nothing changed."""
    src = tmp_path / "empty.csv"
    src.write_bytes(b"")
    before = tree_digest(root)
    res = usr(root, "import", "demo", "--from", "csv", "--path", src)
    assert res.returncode == 2 and "empty" in res.stderr.lower() and "Traceback" not in res.stderr, res.stderr
    assert tree_digest(root) == before


def test_O5_header_of_a_million_columns_is_refused_at_once(demo, root, tmp_path):
    """[O5] a header of 10^6 columns: a clear error before the rows are parsed (parsing them took minutes)."""
    src = tmp_path / "wide.csv"
    n = 10**6
    src.write_text(",".join(f"c{i}" for i in range(n)) + "\n" + ",".join("1" for _ in range(n)) + "\n")
    before = tree_digest(root)
    res = usr(root, "attach", "demo", "--path", src, "--namespace", "mock", "--allow-missing")
    assert res.returncode == 2 and f"more than {MAX_INPUT_COLUMNS} columns" in res.stderr, res.stderr
    assert tree_digest(root) == before
    with pytest.raises(SchemaError, match="columns"):
        read_csv(src)


# ---------------------------------------------------------------- inputs past the readers' defaults work

def test_O5_field_over_block_size_attaches(demo, tmp_path):
    """[O5] a field over 128 KiB and one larger than the first reader block (5 MB) attach (the block grows)."""
    ids = demo.read_table(columns=["id"])["id"].to_pylist()
    for size in (200 << 10, FIRST_BLOCK + (1 << 20)):
        src = tmp_path / f"long{size}.csv"
        src.write_text(f"id,mock__label\n{ids[0]},{'x' * size}\n{ids[1]},short\n")
        demo.attach(src, "mock", allow_overwrite=True, allow_missing=True)
        got = dict(zip(*demo.read_table(columns=["id", "mock__label"]).to_pydict().values()))
        assert len(got[ids[0]]) == size and got[ids[1]] == "short"


def test_O5_jsonl_object_over_block_size_attaches(demo, tmp_path):
    """[O5] a JSON-lines object larger than the reader's block attaches."""
    ids = demo.read_table(columns=["id"])["id"].to_pylist()
    src = tmp_path / "long.jsonl"
    src.write_text(json.dumps({"id": ids[0], "mock__label": "y" * (FIRST_BLOCK + 100)}) + "\n")
    assert read_jsonl(src).num_rows == 1
    demo.attach(src, "mock", allow_overwrite=True, allow_missing=True)


def test_O5_ten_megabase_sequence_attached_by_sequence_key(make_ds, root, tmp_path):
    """[O5] [S6] a 10 MB sequence imported, then attached by `--key sequence` through the CLI (both fail with
    'straddling object' before)."""
    make_ds(seqs=["ACGT"])
    seq = _seq(10 << 20)
    src = tmp_path / "big.csv"
    src.write_text(f"sequence\n{seq}\n")
    res = usr(root, "import", "demo", "--from", "csv", "--path", src)
    assert res.returncode == 0, res.stderr
    att = tmp_path / "att.csv"
    att.write_text(f"sequence,mock__score\n{seq},7.5\nACGT,1.0\n")
    res = usr(root, "attach", "demo", "--path", att, "--namespace", "mock", "--key", "sequence")
    assert res.returncode == 0, res.stderr
    table = Dataset(root, "demo").read_table(columns=["id", "mock__score"])
    got = dict(zip(table["id"].to_pylist(), table["mock__score"].to_pylist()))
    assert got[compute_id("dna", seq)] == 7.5 and got[compute_id("dna", "ACGT")] == 1.0


@pytest.mark.slow
def test_S6_hundred_megabyte_line_imports(make_ds, root, tmp_path):
    """[S6] a CSV line of 100 MB (one sequence) imports through the CLI."""
    make_ds(seqs=["ACGT"])
    seq = _seq(100 << 20, seed=3)
    src = tmp_path / "huge.csv"
    src.write_text(f"sequence\n{seq}\n")
    res = usr(root, "import", "demo", "--from", "csv", "--path", src)
    assert res.returncode == 0, res.stderr
    assert Dataset(root, "demo").get(compute_id("dna", seq), columns=["length"])["length"].to_pylist() == [len(seq)]


def test_O5_read_input_keeps_strings_and_header_only(tmp_path):
    """[O5] CSV attach inputs are read as strings (coercion to the registry type comes later); a header-only file
    gives zero rows."""
    src = tmp_path / "h.csv"
    src.write_text("id,mock__score\n")
    t = read_input(src, "id")
    assert t.num_rows == 0 and t.schema.types == [pa.string(), pa.string()]
    src.write_text("id,mock__score\n007,1.50\n")
    assert read_input(src, "id").to_pylist() == [{"id": "007", "mock__score": "1.50"}]


# ---------------------------------------------------------------- the machine's limits: typed errors, nothing changed

DRIVER = textwrap.dedent("""
    import json, os, shutil, subprocess, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    from testkit import tree_digest
    src, mnt = Path(sys.argv[1]), Path(sys.argv[2])
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
    root = mnt / "root"
    shutil.copytree(src / "root", root)
    filler = mnt / "filler"
    with open(filler, "wb") as fh:  # fill the file system, then give back a little room
        try:
            while True:
                fh.write(b"x" * 65536)
                fh.flush()
        except OSError:
            pass
    os.truncate(filler, max(0, os.path.getsize(filler) - 24 * 1024))
    out = {}
    for name, args in json.loads(sys.argv[4]).items():
        before = tree_digest(root)
        res = subprocess.run([sys.argv[5], "--root", str(root), *args], capture_output=True, text=True)
        out[name] = {"rc": res.returncode, "err": res.stderr[-2000:], "same": tree_digest(root) == before}
    api = {}
    try:
        from usr_core import Dataset
        import random
        Dataset(root, "demo").import_rows([{"sequence": "".join(random.Random(5).choices("ACGT", k=400000))}])
        api["raised"] = None
    except Exception as exc:
        api["raised"] = type(exc).__name__
        api["errno"] = getattr(exc, "errno", None)
    out["api"] = api
    print(json.dumps(out))
""")


def _unshare_ok() -> bool:
    if not shutil.which("unshare"):
        return False
    res = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt 2>/dev/null || "
                          "mount -t tmpfs -o size=1m tmpfs /tmp"], capture_output=True)
    return res.returncode == 0


@pytest.mark.skipif(not _unshare_ok(), reason="needs user+mount namespaces (unshare -rm) to mount a small tmpfs")
def test_A1_disk_full_is_an_environment_error_and_changes_nothing(demo, root, tmp_path):
    """[A1] [C5] disk full (a real 4 MB tmpfs, in a private mount namespace): import and attach exit 5 naming the
    device's error, the root is byte-identical; the library raises EnvironmentFailure (errno ENOSPC)."""
    import errno

    ids = demo.read_table(columns=["id"])["id"].to_pylist()
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(root, work / "root")
    big = tmp_path / "big.csv"
    big.write_text("sequence\n" + "\n".join(_seq(2000, seed=i) for i in range(400)) + "\n")
    att = tmp_path / "att.csv"
    att.write_text("id,mock__label\n" + "\n".join(f"{i},{_seq(20000, seed=n)}" for n, i in enumerate(ids)) + "\n")
    cmds = {"import": ["import", "demo", "--from", "csv", "--path", str(big)],
            "attach": ["attach", "demo", "--path", str(att), "--namespace", "mock", "--allow-overwrite"]}
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    res = subprocess.run(["unshare", "-rm", sys.executable, "-c", DRIVER, str(work), str(mnt),
                          str(REPO / "tests"), json.dumps(cmds), USR], capture_output=True, text=True, timeout=600,
                         cwd=str(REPO))
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for name in cmds:
        assert out[name]["rc"] == 5, out
        assert "No space left on device" in out[name]["err"] and "Traceback" not in out[name]["err"]
        assert out[name]["same"], f"{name} changed the root on ENOSPC"
    assert out["api"] == {"raised": "EnvironmentFailure", "errno": errno.ENOSPC}


def _without_root_powers() -> list[str]:
    """A command prefix under which permissions bind: as root, drop the capabilities that bypass them."""
    if os.getuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: file permissions cannot be made to apply")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--"]


def test_A3_permission_denied_is_an_environment_error(demo, root, tmp_path):
    """[A3] [C5] a root the user may not write: import and delete exit 5 with a permission hint, nothing changed;
    the library raises EnvironmentFailure (EACCES). As root, the commands run without the capabilities that
    bypass file permissions."""
    import tempfile

    ids = demo.read_table(columns=["id"])["id"].to_pylist()
    base = Path(tempfile.mkdtemp(prefix="usr-eacces-", dir="/tmp"))
    try:
        base.chmod(0o755)
        shutil.copytree(root, base / "root")
        src = base / "in.csv"
        src.write_text("sequence\nCCCC\n")
        ro = base / "root"
        for p in [ro, *ro.rglob("*")]:
            p.chmod(0o555 if p.is_dir() else 0o444)
        before = tree_digest(ro)
        for args in (["import", "demo", "--from", "csv", "--path", src], ["delete", "demo", "--id", ids[0]]):
            env = {k: v for k, v in os.environ.items() if k != "USR_ROOT"}
            res = subprocess.run([*_without_root_powers(), USR, "--root", str(ro), *map(str, args)],
                                 capture_output=True, text=True, env=env, timeout=600, stdin=subprocess.DEVNULL)
            assert res.returncode == 5, res.stderr
            assert "ermission denied" in res.stderr and "Traceback" not in res.stderr, res.stderr
        assert tree_digest(ro) == before
        code = ("import sys\nfrom usr_core import Dataset\nfrom usr_core.errors import EnvironmentFailure\n"
                "try:\n    Dataset(sys.argv[1], 'demo').tombstone([sys.argv[2]])\n"
                "except EnvironmentFailure as exc:\n    print('env', exc.errno)\n")
        res = subprocess.run([*_without_root_powers(), sys.executable, "-c", code, str(ro), ids[0]],
                             capture_output=True, text=True, cwd=str(REPO), timeout=120)
        assert res.stdout.strip() == "env 13", res.stderr
        assert tree_digest(ro) == before
    finally:
        for p in [base, *base.rglob("*")]:
            if p.is_dir():
                p.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


def test_S6_import_header_of_a_million_columns_is_refused_at_once(demo, root, tmp_path):
    """[S6] [C5] importing a CSV whose header has 10^6 columns: exit 2 at once, nothing changed."""
    src = tmp_path / "wide.csv"
    n = 10**6
    src.write_text("sequence," + ",".join(f"c{i}" for i in range(n)) + "\nACGT," + ",".join("1" * n) + "\n")
    before = tree_digest(root)
    res = usr(root, "import", "demo", "--from", "csv", "--path", src)
    assert res.returncode == 2 and f"more than {MAX_INPUT_COLUMNS} columns" in res.stderr, res.stderr
    assert tree_digest(root) == before
