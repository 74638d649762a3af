"""The remaining commands of C3 on a real dataset: read, write and maintenance paths."""
from __future__ import annotations

import json

import pyarrow.parquet as pq


def test_C3_T2_delete_restore_with_id_file(usr, demo, tmp_path):
    """[C3][T2][T3] delete by --id-file hides rows; --include-deleted shows them; restore brings them back."""
    f = tmp_path / "ids.txt"
    f.write_text(f"{demo['ids'][0]}\n\n{demo['ids'][1]}\n")
    usr.ok("delete", "demo", "--id-file", f, "--reason", "bad")
    assert len(usr.json("head", "demo", "--format", "json")) == 2
    rows = usr.json("head", "demo", "--format", "json", "--include-deleted")
    assert len(rows) == 4 and sum(bool(r["usr__deleted"]) for r in rows) == 2
    usr.ok("restore", "demo", "--id", f"{demo['ids'][0]},{demo['ids'][1]}")
    assert len(usr.json("head", "demo", "--format", "json")) == 4


def test_C3_T2_C5_delete_unknown_id_exit_2_allow_missing_ok(usr, demo):
    """[C3][T2][C5] unknown ids fail (exit 2) unless --allow-missing."""
    assert usr("delete", "demo", "--id", "f" * 40).returncode == 2
    usr.ok("delete", "demo", "--id", f"{'f' * 40},{demo['ids'][0]}", "--allow-missing")


def test_C3_U3_U4_state_set_clear_get(usr, demo):
    """[C3][U3][U4][U5] state set / clear / get through the CLI."""
    rid = demo["ids"][2]
    usr.ok("state", "set", "demo", "--id", rid, "--masked", "--lineage", "a", "--lineage", "b")
    row = usr.json("state", "get", "demo", "--id", rid, "--format", "json")[0]
    assert row["usr_state__masked"] is True and row["usr_state__lineage"] == ["a", "b"]
    usr.ok("state", "clear", "demo", "--id", rid)
    row = usr.json("state", "get", "demo", "--id", rid, "--format", "json")[0]
    assert row["usr_state__masked"] is False and row["usr_state__lineage"] is None
    assert usr("state", "set", "demo", "--id", rid, "--qc-status", "great").returncode == 2
    plain = usr.ok("state", "get", "demo", "--id", rid).stdout
    assert rid in plain


def test_C3_grep_case_insensitive(usr, demo):
    """[C3] grep matches sequence case-insensitively and honours --limit."""
    rows = usr.json("grep", "demo", "--pattern", "gatt", "--format", "json")
    assert [r["sequence"] for r in rows] == ["GATTACAGAT"]
    assert len(usr.json("grep", "demo", "--pattern", ".", "--limit", "2", "--format", "json")) == 2


def test_C3_get_columns_and_head_columns(usr, demo):
    """[C3] --columns restricts get/head output."""
    row = usr.json("get", "demo", demo["ids"][0], "--columns", "id,length", "--format", "json")
    assert row == {"id": demo["ids"][0], "length": 10}
    rows = usr.json("head", "demo", "-n", "2", "--columns", "sequence", "--format", "json")
    assert rows == [{"sequence": s} for s in demo["seqs"][:2]]


def test_C3_X7_snapshot_adds_meta_note(usr, demo):
    """[C3][X7] snapshot writes _snapshots/records-<S>.parquet and a meta.md note."""
    before = set((demo["dir"] / "_snapshots").glob("records-*.parquet"))
    usr.ok("snapshot", "demo")
    assert len(set((demo["dir"] / "_snapshots").glob("records-*.parquet")) - before) == 1
    assert "usr --root" in (demo["dir"] / "meta.md").read_text().split("Snapshot saved")[-1]


def test_C3_X3_overlay_remove_modes(usr, demo, tmp_path):
    """[C3][X3] overlay-remove archive / delete / error modes."""
    t = tmp_path / "m.csv"
    t.write_text("id,score\n" + f"{demo['ids'][0]},1.0\n")
    usr.ok("attach", "demo", "--path", t, "--namespace", "mock")
    usr.ok("maintenance", "overlay-remove", "demo", "--namespace", "mock", "--mode", "archive")
    derived = demo["dir"] / "_derived"
    assert not (derived / "mock.parquet").exists()
    assert list((derived / "_archived").glob("mock-*"))
    usr.ok("maintenance", "overlay-remove", "demo", "--namespace", "mock", "--mode", "delete")
    assert usr("maintenance", "overlay-remove", "demo", "--namespace", "mock").returncode == 2
    assert usr("maintenance", "overlay-remove", "demo", "--namespace", "usr").returncode == 2


def test_C3_X8_dedupe_dry_run_and_yes(usr, demo, tmp_path):
    """[C3][X8] dedupe --dry-run counts without writing; --yes rewrites (sequence_ci key)."""
    csv = tmp_path / "lower.csv"
    csv.write_text("sequence\nacgtacgtaa\n")
    usr.ok("import", "demo", "--from", "csv", "--path", csv)
    before = (demo["dir"] / "records.parquet").read_bytes()
    stats = usr.json("maintenance", "dedupe", "demo", "--key", "sequence_ci", "--dry-run", "--format", "json")
    assert stats["rows_dropped"] == 1 and (demo["dir"] / "records.parquet").read_bytes() == before
    usr.ok("maintenance", "dedupe", "demo", "--key", "sequence_ci", "--keep", "keep-first", "--yes")
    assert pq.read_metadata(demo["dir"] / "records.parquet").num_rows == 4


def test_C3_X9_merge_union_and_dry_run(usr, demo, tmp_path):
    """[C3][X9] merge --union-columns; --dry-run writes nothing; a meta.md note records the merge."""
    usr.ok("init", "other")
    csv = tmp_path / "o.csv"
    csv.write_text("sequence\nAAAATTTTCC\nACGTACGTAA\n")
    usr.ok("import", "other", "--from", "csv", "--path", csv)
    before = (demo["dir"] / "records.parquet").read_bytes()
    preview = usr.json("maintenance", "merge", "--dest", "demo", "--src", "other", "--union-columns",
                       "--if-duplicate", "skip", "--dry-run", "--format", "json")
    assert isinstance(preview, dict)
    assert (demo["dir"] / "records.parquet").read_bytes() == before
    res = usr("maintenance", "merge", "--dest", "demo", "--src", "other", "--union-columns")
    assert res.returncode == 2 and "already exist" in res.stderr  # --if-duplicate error (default)
    assert (demo["dir"] / "records.parquet").read_bytes() == before
    assert usr("maintenance", "merge", "--dest", "demo", "--src", "other").returncode == 2  # no columns mode
    usr.ok("maintenance", "merge", "--dest", "demo", "--src", "other", "--require-same-columns",
           "--if-duplicate", "skip")
    assert pq.read_metadata(demo["dir"] / "records.parquet").num_rows == 5
    assert "maintenance merge --dest demo" in (demo["dir"] / "meta.md").read_text()
    ev = usr.json("events", "tail", "demo", "--format", "json", "--n", "1")[0]
    assert ev["action"] == "merge_datasets" and ev["maintenance"]["reason"] == "cli: usr maintenance merge"


def test_C3_X11_event_log_garden(usr, demo):
    """[C3][X11] dry run reports, --write keeps the last N lines and archives the log."""
    log = demo["dir"] / ".events.log"
    n_before = len(log.read_text().splitlines())
    usr.ok("maintenance", "event-log-garden", "demo", "--retain-last", "1")
    assert len(log.read_text().splitlines()) == n_before
    usr.ok("maintenance", "event-log-garden", "demo", "--retain-last", "1", "--write", "--acknowledge-cursor-reset")
    lines = log.read_text().splitlines()
    assert len(lines) <= 2 and json.loads(lines[-1])["action"] == "event_log_garden"
    assert list((demo["dir"] / ".events.archive").glob("events-*.jsonl"))


def test_C3_X12_overlay_project(usr, demo, tmp_path):
    """[C3][X12] overlay-project copies one namespace from src's view onto dest."""
    usr.ok("init", "copy")
    csv = tmp_path / "s.csv"
    csv.write_text("sequence\n" + "\n".join(demo["seqs"]) + "\n")
    usr.ok("import", "copy", "--from", "csv", "--path", csv)
    t = tmp_path / "m.csv"
    t.write_text("id,score\n" + "".join(f"{i},{n}.5\n" for n, i in enumerate(demo["ids"])))
    usr.ok("attach", "demo", "--path", t, "--namespace", "mock")
    usr.ok("maintenance", "overlay-project", "--src", "demo", "--dest", "copy", "--namespace", "mock")
    rows = usr.json("head", "copy", "--format", "json", "--columns", "id,mock__score")
    assert sorted(r["mock__score"] for r in rows) == [0.5, 1.5, 2.5, 3.5]


def test_C3_X6_materialize_drop_and_archive_exclusive(usr, demo):
    """[C3][X6] --drop-overlays and --archive-overlays together are a usage error."""
    res = usr("materialize", "demo", "--yes", "--drop-overlays", "--archive-overlays")
    assert res.returncode == 2


def test_C3_C4_events_tail_follow_prints_and_stops(usr, demo):
    """[C3] events tail --follow prints existing events then keeps running until stopped."""
    import subprocess
    import time

    proc = subprocess.Popen([usr.exe, "--root", str(usr.root), "events", "tail", "demo", "--n", "1", "--follow"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        usr.ok("snapshot", "demo")
        time.sleep(1.5)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    actions = [json.loads(x)["action"] for x in out.splitlines()]
    assert actions[0] == "import_rows" and "snapshot" in actions
