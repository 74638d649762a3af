"""Issue 14 through the CLI: parts appended with `attach --as-part` (O6) and compacted (X2), `--out DIR/` (X10),
exit codes as the README documents them (C5; 5 = environment error), hints in CLI syntax, `namespace show`."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from testkit import private_tmpfs_works

from conftest import USR, make_dataset


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_O6_X2_attach_as_part_then_compact(usr, root, demo, tmp_path):
    """[O6][O9][X2] two `attach --as-part` runs write two parts (newest non-NULL wins), compaction folds them."""
    ids, seqs = demo["ids"], demo["seqs"]
    first = _write(tmp_path / "a.csv", "sequence,score,label\n" + "".join(f"{s},{i}.5,old{i}\n"
                                                                        for i, s in enumerate(seqs)))
    second = _write(tmp_path / "b.csv", f"sequence,score,label\n{seqs[0]},9.0,\n")  # NULL label: older value stays
    out = usr.ok("attach", "demo", "--path", first, "--namespace", "mock", "--key", "sequence", "--as-part").stdout
    assert "Appended 4 rows" in out and "part-" in out
    usr.ok("attach", "demo", "--path", second, "--namespace", "mock", "--key", "sequence", "--as-part")
    by_id = _write(tmp_path / "c.csv", f"id,score\n{ids[0]},1.0\n")
    res = usr("attach", "demo", "--path", by_id, "--namespace", "mock", "--key", "id", "--as-part")
    assert res.returncode == 2 and "--key sequence" in res.stderr  # all parts share one key (M3), CLI hint
    parts = sorted((demo["dir"] / "_derived" / "mock").glob("part-*.parquet"))
    assert len(parts) == 2
    events = usr.json("events", "tail", "demo", "--format", "json", "--n", "2")
    assert [e["action"] for e in events] == ["write_overlay_part"] * 2 and events[1]["args"]["input"] == str(second)

    def view():
        rows = usr.json("head", "demo", "--columns", "id,mock__score,mock__label", "--format", "json")
        return {r["id"]: (r["mock__score"], r["mock__label"]) for r in rows}

    before = view()
    assert before[ids[0]] == (9.0, "old0") and before[ids[1]] == (1.5, "old1")
    usr.ok("maintenance", "overlay-compact", "demo", "--namespace", "mock")
    assert (demo["dir"] / "_derived" / "mock.parquet").is_file() and not (demo["dir"] / "_derived" / "mock").exists()
    assert view() == before


def test_O6_as_part_refuses_compact_only_flags(usr, demo, tmp_path):
    """[O6][C5] --as-part with --allow-overwrite or --backend duckdb is a usage error naming the reason."""
    f = _write(tmp_path / "a.csv", f"id,score\n{demo['ids'][0]},1.0\n")
    res = usr("attach", "demo", "--path", f, "--namespace", "mock", "--as-part", "--allow-overwrite")
    assert res.returncode == 2 and "--allow-overwrite" in res.stderr
    res = usr("attach", "demo", "--path", f, "--namespace", "mock", "--as-part", "--backend", "duckdb")
    assert res.returncode == 2 and "--backend" in res.stderr


def test_X10_out_directory_forms(usr, root, demo, tmp_path):
    """[X10] `--out DIR/` (created) and an existing directory write <id>.<fmt> inside; other paths are the file."""
    usr.ok("export", "demo", "--fmt", "parquet", "--out", f"{tmp_path / 'new'}/")
    assert pq.read_table(tmp_path / "new" / "demo.parquet").num_rows == 4
    (tmp_path / "have").mkdir()
    usr.ok("export", "demo", "--fmt", "csv", "--out", tmp_path / "have")
    assert (tmp_path / "have" / "demo.csv").read_text().startswith("id,bio_type,")
    make_dataset(root, "grp/sub", ["ACGT"])
    usr.ok("export", "grp/sub", "--fmt", "jsonl", "--out", f"{tmp_path / 'have'}/")
    assert json.loads((tmp_path / "have" / "grp_sub.jsonl").read_text())["sequence"] == "ACGT"
    usr.ok("export", "demo", "--fmt", "csv", "--out", tmp_path / "plain.csv")
    assert (tmp_path / "plain.csv").is_file()
    (tmp_path / "file").write_text("x")
    res = usr("export", "demo", "--fmt", "csv", "--out", f"{tmp_path / 'file'}/")
    assert res.returncode in (2, 3, 4) and res.stderr.startswith("ERROR: ")  # a file where a folder is asked


def test_C5_init_existing_dataset_exits_3(usr, demo, tree_digest):
    """[C5][P2] `usr init` on an existing dataset -> 3 (file exists) with a hint; nothing changes."""
    before = tree_digest(demo["dir"])
    res = usr("init", "demo")
    assert res.returncode == 3 and "already exists" in res.stderr and "\nHint: " in res.stderr
    assert tree_digest(demo["dir"]) == before


@pytest.mark.parametrize("text", ['sequence,x\n"unterminated\n', "", "sequence,x\nACGT,1,2,3\n"])
def test_C5_csv_parse_error_exits_2_with_hint(usr, demo, tmp_path, tree_digest, text):
    """[C5][S6] a CSV the reader cannot parse -> exit 2 (not 1) with ERROR and Hint; nothing changes."""
    bad = _write(tmp_path / "bad.csv", text)
    before = tree_digest(demo["dir"])
    res = usr("import", "demo", "--from", "csv", "--path", bad)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("ERROR: ") and str(bad) in res.stderr and "\nHint: " in res.stderr
    assert tree_digest(demo["dir"]) == before


def test_S6_import_long_lines_and_fields(usr, demo, tmp_path):
    """[S6] lines longer than the reader's block and fields over 128 KiB import (CSV and JSONL)."""
    long = "ACGT" * 2_000_000  # 8 MB, past the 4 MiB block
    usr.ok("import", "demo", "--from", "csv", "--path", _write(tmp_path / "l.csv", f"sequence\n{long}\nGATTACA\n"))
    usr.ok("import", "demo", "--from", "jsonl",
           "--path", _write(tmp_path / "l.jsonl", json.dumps({"sequence": long + "A"}) + "\n"))
    assert usr.json("info", "demo", "--format", "json")["rows"] == 7


def test_C5_hints_use_cli_syntax(usr, demo, tmp_path):
    """[C5][O5][T2] hints printed by the CLI name flags (--allow-missing), never Python keywords."""
    f = _write(tmp_path / "a.csv", "id,score\n" + "f" * 40 + ",1.0\n")
    res = usr("attach", "demo", "--path", f, "--namespace", "mock")
    assert res.returncode == 2 and "--allow-missing" in res.stderr and "allow_missing=" not in res.stderr
    res = usr("delete", "demo", "--id", "f" * 40)
    assert res.returncode == 2 and "--allow-missing" in res.stderr and "allow_missing=" not in res.stderr
    res = usr("namespace", "register", "mock", "--columns", "mock__y:int64")
    assert res.returncode == 2 and "--overwrite" in res.stderr and "overwrite=True" not in res.stderr


def test_R12_namespace_show_labels_name(usr, demo):
    """[R12] `namespace show` prints `name:`, owner, description and column lines."""
    lines = usr.ok("namespace", "show", "mock").stdout.splitlines()
    assert lines[:3] == ["name: mock", "owner: ", "description: "]
    assert "  - mock__score: float64" in lines
    assert usr.json("namespace", "show", "mock", "--format", "json")["name"] == "mock"


@pytest.mark.skipif(not private_tmpfs_works(), reason="needs unshare -m and tmpfs mounts (root on Linux)")
def test_C5_disk_full_exits_5(root, tmp_path):
    """[C5] ENOSPC (export onto a 16 KiB tmpfs, mounted in a private mount namespace) -> exit 5 with a hint."""
    make_dataset(root, "big", ["".join("ACGT"[(i >> (2 * k)) & 3] for k in range(12)) for i in range(2000)],
                 {"mock": "mock__x:int64"})
    target = tmp_path / "small"
    target.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "USR_ROOT"}
    script = f'mount -t tmpfs -o size=16k tmpfs "{target}" && exec "{USR}" --root "{root}" export big --fmt csv ' \
             f'--out "{target}/"'
    res = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 5, res.stderr
    assert "No space left on device" in res.stderr and "\nHint: " in res.stderr


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root to drop privileges")
def test_C5_permission_denied_exits_5(tmp_path):
    """[C5] EACCES (an unprivileged user writing into a root it cannot write) -> exit 5 with a hint."""
    shared = Path(tempfile.mkdtemp(prefix="usr-eacces-"))
    try:
        os.chmod(shared, 0o755)
        ids = make_dataset(shared, "demo", ["ACGT"], {"mock": "mock__x:int64"})
        for p in [shared, *shared.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        env = {k: v for k, v in os.environ.items() if k != "USR_ROOT"}
        res = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", USR, "--root",
                              str(shared), "delete", "demo", "--id", ids[0]],
                             capture_output=True, text=True, env=env, timeout=120, cwd="/")
        assert res.returncode == 5, (res.returncode, res.stderr)
        assert res.stderr.startswith("ERROR: ") and "ermission denied" in res.stderr and "\nHint: " in res.stderr
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_O10_info_json_orders_tombstone_columns_like_export(usr, demo, tmp_path):
    """[O10][L8][C4] info --format json lists usr__deleted* before usr_state__* (name order), as export does."""
    ids = demo["ids"]
    usr.ok("delete", "demo", "--id", ids[0])
    usr.ok("state", "set", "demo", "--id", ids[1], "--qc-status", "pass")
    cols = usr.json("info", "demo", "--format", "json")["columns"]
    assert cols.index("usr__deleted") < cols.index("usr__deleted_reason") < cols.index("usr_state__qc_status")
    usr.ok("export", "demo", "--fmt", "csv", "--out", tmp_path / "all.csv", "--include-deleted")
    header = (tmp_path / "all.csv").read_text().splitlines()[0].split(",")
    assert header == cols
