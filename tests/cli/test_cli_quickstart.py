"""The operator's quickstart end to end with the installed `usr` command (issue 3, item 2)."""
from __future__ import annotations

import csv
import json

import pyarrow.parquet as pq

from usr_core.identity import compute_id

SEQS = ["ACGTACGTAA", "CCGGTTAACG", "TTTTGGGGCC", "GATTACAGAT", "GGGGAAAACC"]

PARTS_CODE = """
import sys
import pyarrow as pa
from usr_core import Dataset
root, ids = sys.argv[1], sys.argv[2].split(",")
ds = Dataset(root, "demo")
ds.write_overlay_part("pt", pa.table({"id": ids[:3], "pt__x": pa.array([1, 2, 3], pa.int64()),
                                      "pt__note": ["a", "b", "c"]}))
ds.write_overlay_part("pt", pa.table({"id": ids[1:3], "pt__x": pa.array([20, None], pa.int64()),
                                      "pt__note": [None, "c2"]}))
"""


def test_C1_C3_C4_C5_quickstart_end_to_end(usr, root, tmp_path, pyrun):
    """[C1][C3][C4][C5][R7][R12][L10][T3][U5][X6][X2][O9][X10][V1][V3] register, init, import, attach x2, delete, state, materialize,
    info, head json, schema, export csv/jsonl/parquet, validate --strict, overlay-compact, events tail json."""
    ids = [compute_id("dna", s) for s in SEQS]

    # registry: struct<...> and list<float64> columns survive the CLI's depth-0 comma split (R7)
    usr.ok("namespace", "register", "mock", "--columns",
           "mock__score:float64,mock__feat:struct<gc:float64,label:string>,mock__profile:list<float64>",
           "--owner", "alice", "--description", "mock scores")
    usr.ok("namespace", "register", "tags", "--columns", "tags__tag:string")
    usr.ok("namespace", "register", "pt", "--columns", "pt__x:int64,pt__note:string")
    show = usr.ok("namespace", "show", "mock").stdout
    assert "owner: alice" in show and "  - mock__feat: struct<gc:float64,label:string>" in show
    assert "  - mock__profile: list<float64>" in show
    listed = usr.ok("namespace", "list").stdout.splitlines()
    assert "mock: mock__score, mock__feat, mock__profile" in listed
    assert listed == sorted(listed) and any(x.startswith("usr_state: ") for x in listed)

    usr.ok("init", "demo", "--source", "quickstart", "--notes", "cli test")
    ddir = root / "demo"
    assert (ddir / "records.parquet").is_file()
    assert (ddir / "meta.md").read_text().splitlines()[0] == "name: demo"

    seqs_csv = tmp_path / "seqs.csv"
    seqs_csv.write_text("sequence\n" + "\n".join(SEQS) + "\n")
    out = usr.ok("import", "demo", "--from", "csv", "--path", seqs_csv).stdout
    assert "5" in out

    mock_csv = tmp_path / "mock.csv"
    with mock_csv.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "score", "feat", "profile"])
        for i, rid in enumerate(ids):
            w.writerow([rid, 0.5 + i, json.dumps({"gc": 0.1 * i, "label": f"l{i}"}), json.dumps([i, i + 0.5])])
    usr.ok("attach", "demo", "--path", mock_csv, "--namespace", "mock", "--key", "id")
    tags = tmp_path / "tags.jsonl"
    tags.write_text("".join(json.dumps({"sequence": s, "tag": f"t{i}"}) + "\n" for i, s in enumerate(SEQS)))
    usr.ok("attach", "demo", "--path", tags, "--namespace", "tags", "--key", "sequence")

    usr.ok("delete", "demo", "--id", ids[4], "--reason", "quickstart")
    usr.ok("state", "set", "demo", "--id", f"{ids[0]},{ids[1]}", "--qc-status", "pass", "--split", "train")
    state = usr.json("state", "get", "demo", "--id", ids[0], "--id", ids[2], "--format", "json")
    assert [r["id"] for r in state] == [ids[0], ids[2]]
    assert state[0]["usr_state__qc_status"] == "pass" and state[1]["usr_state__masked"] is False

    usr.ok("materialize", "demo", "--yes", "--snapshot-before")
    assert len(list((ddir / "_snapshots").glob("records-*.parquet"))) >= 2
    base = pq.read_schema(ddir / "records.parquet").names
    assert {"mock__score", "mock__feat", "mock__profile", "tags__tag"} <= set(base)
    assert "usr_state__qc_status" not in base  # X6: usr_state is not folded by default

    info = usr.json("info", "demo", "--format", "json")
    assert info["name"] == "demo" and info["rows"] == 5
    assert {"mock", "tags", "usr"} <= set(info["namespaces"])
    plain = usr.ok("info", "demo").stdout
    assert "demo" in plain and "rows: 5" in plain

    rows = usr.json("head", "demo", "--format", "json", "-n", "10")
    assert len(rows) == 4 and ids[4] not in {r["id"] for r in rows}  # T3: tombstoned row hidden
    by_id = {r["id"]: r for r in rows}
    assert by_id[ids[1]]["mock__score"] == 1.5
    assert by_id[ids[1]]["mock__feat"] == {"gc": 0.1, "label": "l1"}
    assert by_id[ids[1]]["mock__profile"] == [1.0, 1.5]
    assert by_id[ids[3]]["tags__tag"] == "t3"
    assert by_id[ids[0]]["usr_state__split"] == "train"
    assert by_id[ids[0]]["created_at"].startswith("20")  # C4: ISO datetimes

    schema_out = usr.ok("schema", "demo").stdout
    assert "mock__feat" in schema_out and "struct<gc:float64,label:string>" in schema_out
    fields = usr.json("schema", "demo", "--format", "json")["fields"]
    assert fields[0] == {"name": "id", "type": "string", "nullable": True}
    tree = usr.ok("schema", "demo", "--tree").stdout
    assert "  gc: float64" in tree

    exports = tmp_path / "exports"
    exports.mkdir()
    for fmt in ("csv", "jsonl", "parquet"):
        usr.ok("export", "demo", "--fmt", fmt, "--out", exports)
    with (exports / "demo.csv").open() as fh:
        csv_rows = list(csv.DictReader(fh))
    assert len(csv_rows) == 4 and json.loads(csv_rows[0]["mock__profile"]) is not None
    jl = [json.loads(x) for x in (exports / "demo.jsonl").read_text().splitlines()]
    assert len(jl) == 4 and all(r["created_at"].endswith("Z") for r in jl)  # X10: TS timestamps
    assert pq.read_table(exports / "demo.parquet").num_rows == 4

    assert usr.ok("validate", "demo", "--strict").stdout.strip() == "OK: validation passed."

    # overlay-compact on a namespace written as parts (O6), newest non-null wins (O9, X2)
    pyrun(PARTS_CODE, root, ",".join(ids))
    assert len(list((ddir / "_derived" / "pt").glob("part-*.parquet"))) == 2
    usr.ok("maintenance", "overlay-compact", "demo", "--namespace", "pt")
    assert (ddir / "_derived" / "pt.parquet").is_file() and not (ddir / "_derived" / "pt").exists()
    compact = pq.read_table(ddir / "_derived" / "pt.parquet").to_pylist()
    assert len(compact) == 3
    got = {r["id"]: (r["pt__x"], r["pt__note"]) for r in usr.json("head", "demo", "--format", "json")}
    assert got[ids[0]] == (1, "a") and got[ids[1]] == (20, "b") and got[ids[2]] == (3, "c2")
    assert usr.ok("validate", "demo", "--strict").returncode == 0

    events = usr.json("events", "tail", "demo", "--format", "json", "--n", "100")
    actions = [e["action"] for e in events]
    for action in ("init", "import_rows", "attach", "tombstone", "state_set", "snapshot", "materialize",
                   "write_overlay_part", "compact_overlay"):
        assert action in actions, (action, actions)
    compact_ev = [e for e in events if e["action"] == "compact_overlay"][-1]
    assert compact_ev["maintenance"]["reason"] == "cli: usr maintenance overlay-compact"
    assert len(usr.json("events", "tail", "demo", "--format", "json", "--n", "2")) == 2
    raw = usr.ok("events", "tail", "demo", "--n", "3").stdout.splitlines()
    assert len(raw) == 3 and json.loads(raw[-1])["action"] == "compact_overlay"

    # C3: import/attach/materialize add meta.md notes with the command line
    meta = (ddir / "meta.md").read_text()
    for cmd in ("usr --root", "import demo --from csv", "attach demo", "materialize demo --yes"):
        assert cmd in meta, cmd
    assert "```bash" in meta

    ls_rows = usr.json("ls", "--format", "json")
    assert [r["dataset"] for r in ls_rows] == ["demo"]
    assert set(ls_rows[0]) == {"dataset", "rows", "cols", "size_bytes", "updated"} and ls_rows[0]["rows"] == 5
