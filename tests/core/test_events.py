"""Event log: E1-E8 (and A4, the event lock)."""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import stat

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from testkit import tree_digest
from usr_core import SchemaError, SequencesError, compute_id, registry_hash
from usr_core.events import MAX_EVENT_BYTES, REDACTED, redact

SEQS = ("ACGT", "AACC", "GGTT")
IDS = [compute_id("dna", s) for s in SEQS]
FIELDS = ["event_version", "timestamp_utc", "action", "dataset", "args", "metrics", "artifacts", "maintenance",
          "fingerprint", "registry_hash", "actor", "version"]


@pytest.fixture
def ds(make_ds):
    return make_ds(seqs=SEQS)


def _lines(ds) -> list[bytes]:
    return ds.events_path.read_bytes().splitlines(keepends=True)


def _events(ds) -> list[dict]:
    return [json.loads(line) for line in _lines(ds)]


def test_E1_E2_line_format_and_field_order(ds, root):
    """[E1] [E2] compact NDJSON lines, \\n-terminated, fields in order, TS timestamps."""
    ds.log_event("custom", args={"name": "grüße"})
    raw = _lines(ds)
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in raw)
    for line in raw:
        obj = json.loads(line)
        assert line == (json.dumps(obj, separators=(",", ":"), ensure_ascii=True) + "\n").encode()
        assert list(obj) == FIELDS
        assert obj["event_version"] == 1
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", obj["timestamp_utc"])
        assert obj["dataset"] == {"name": "demo", "root": str(root)}
        assert obj["registry_hash"] == registry_hash(root)
    assert b"\\u00fc" in raw[-1]  # non-ASCII escaped
    assert [e["action"] for e in _events(ds)][:3] == ["registry_freeze", "init", "import_rows"]


def test_E1_nan_forbidden(ds):
    """[E1] (div) NaN/Infinity are rejected; nothing appended."""
    before = ds.events_path.read_bytes()
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError):
            ds.log_event("custom", metrics={"x": bad})
    assert ds.events_path.read_bytes() == before


def test_E2_defaults_overlaid(ds):
    """[E2] metrics/artifacts: action defaults overlaid by supplied values; maintenance {} by default."""
    ds.log_event("tombstone", metrics={"extra": 1})
    e = _events(ds)[-1]
    assert e["metrics"] == {"rows": 0, "extra": 1}
    assert e["artifacts"] == {"overlay": {"namespace": "usr"}}
    assert e["maintenance"] == {}


def test_E3_actor_default_and_env(ds, monkeypatch):
    """[E3] default actor from USR_ACTOR_TOOL / USR_ACTOR_RUN_ID, host, pid."""
    monkeypatch.delenv("USR_ACTOR_TOOL", raising=False)
    monkeypatch.delenv("USR_ACTOR_RUN_ID", raising=False)
    ds.log_event("custom")
    assert _events(ds)[-1]["actor"] == {"tool": "usr", "run_id": f"usr-pid-{os.getpid()}",
                                        "host": socket.gethostname(), "pid": os.getpid()}
    monkeypatch.setenv("USR_ACTOR_TOOL", "dagster")
    monkeypatch.setenv("USR_ACTOR_RUN_ID", "run-42")
    ds.log_event("custom")
    actor = _events(ds)[-1]["actor"]
    assert actor["tool"] == "dagster" and actor["run_id"] == "run-42"


def test_E3_explicit_actor(ds):
    """[E3] explicit actor needs non-empty trimmed tool and run_id (ValueError), stored as given."""
    before = ds.events_path.read_bytes()
    for bad in ({"tool": " ", "run_id": "r"}, {"tool": "t"}, {"run_id": "r", "tool": None}):
        with pytest.raises(ValueError):
            ds.log_event("custom", actor=bad)
    with pytest.raises(ValueError):
        ds.tombstone([IDS[0]], actor={"tool": "t", "run_id": ""})
    assert ds.events_path.read_bytes() == before
    assert not (ds.dir / "_derived" / "usr.parquet").exists()
    actor = {"tool": "t", "run_id": "r1", "extra": [1, 2]}
    ds.tombstone([IDS[0]], actor=actor)
    assert _events(ds)[-1]["actor"] == actor


def test_E3_maintenance_actor_and_reason(ds):
    """[E3] gated operations use the maintenance actor; maintenance = {reason}."""
    actor = {"tool": "maint", "run_id": "m1"}
    with ds.maintenance(reason="cleanup", actor=actor):
        ds.log_event("custom")
    e = _events(ds)[-1]
    assert e["actor"] == actor and e["maintenance"] == {"reason": "cleanup"}


def test_E4_redaction_nested(ds):
    """[E4] sensitive keys (lowercase, - → _) redacted recursively; others kept."""
    args = {"API-Key": "k", "nested": {"db_password": "p", "ok": 1, "deep": [{"Auth": "a", "x": "y"}]},
            "sessionId": "s", "webhook_url": "w", "my_token": "t", "plain": "v", "Cookie": "c", "bearer": "b",
            "credentials": "c", "passwd": "p", "secret_sauce": "s", "apikey": "a"}
    ds.log_event("custom", args=args)
    got = _events(ds)[-1]["args"]
    assert got["plain"] == "v" and got["nested"]["ok"] == 1 and got["nested"]["deep"][0]["x"] == "y"
    for k in ("API-Key", "sessionId", "webhook_url", "my_token", "Cookie", "bearer", "credentials", "passwd",
              "secret_sauce", "apikey"):
        assert got[k] == REDACTED, k
    assert got["nested"]["db_password"] == REDACTED and got["nested"]["deep"][0]["Auth"] == REDACTED


def test_E4_redaction_cli_flags(ds):
    """[E4] in lists: --flag=v → --flag=***REDACTED***; the item after a sensitive --flag replaced."""
    argv = ["usr", "attach", "--api-token=abc", "--password", "hunter2", "--name", "x", "--auth-header", "h",
            "--note=ok"]
    ds.log_event("custom", args={"argv": argv})
    assert _events(ds)[-1]["args"]["argv"] == [
        "usr", "attach", f"--api-token={REDACTED}", "--password", REDACTED, "--name", "x", "--auth-header",
        REDACTED, "--note=ok"]
    assert redact({"list": [{"token": 1}]}) == {"list": [{"token": REDACTED}]}


def test_E5_fingerprint_targets(ds, monkeypatch):
    """[E5] {rows, cols, size_bytes}; target = overlay file (attach), new part (part write), else base."""
    monkeypatch.delenv("USR_EVENT_SHA256", raising=False)
    ds.write_overlay("mock", pa.table({"id": IDS[:2], "mock__score": [1.0, 2.0]}))
    e = _events(ds)[-1]
    path = ds.dir / "_derived" / "mock.parquet"
    md = pq.ParquetFile(path).metadata
    assert e["action"] == "attach"
    assert e["fingerprint"] == {"rows": 2, "cols": md.num_columns, "size_bytes": path.stat().st_size}
    ds.import_rows([{"sequence": "TTTT"}])
    e = _events(ds)[-1]
    assert e["fingerprint"] == {"rows": 4, "cols": 7, "size_bytes": ds.records_path.stat().st_size}


def test_E5_sha256_opt_in(make_ds, monkeypatch):
    """[E5] sha256 of the target only with USR_EVENT_SHA256=1."""
    monkeypatch.setenv("USR_EVENT_SHA256", "1")
    ds = make_ds(seqs=SEQS)
    ds.write_overlay_part("mock", pa.table({"id": IDS[:1], "mock__label": ["a"]}))
    e = _events(ds)[-1]
    part = next((ds.dir / "_derived" / "mock").glob("part-*.parquet"))
    assert e["fingerprint"]["sha256"] == hashlib.sha256(part.read_bytes()).hexdigest()
    assert e["fingerprint"]["rows"] == 1 and e["fingerprint"]["cols"] == 2
    monkeypatch.setenv("USR_EVENT_SHA256", "0")
    ds.log_event("custom")
    assert "sha256" not in _events(ds)[-1]["fingerprint"]


def test_E6_size_limit_exact(ds):
    """[E6] a line incl. newline of exactly 1 MiB is accepted, one byte more → ValueError."""
    ds.log_event("custom", args={"pad": ""})
    base_len = len(_lines(ds)[-1])
    pad = MAX_EVENT_BYTES - base_len
    ds.log_event("custom", args={"pad": "x" * pad})
    assert len(_lines(ds)[-1]) == MAX_EVENT_BYTES
    before = ds.events_path.read_bytes()
    with pytest.raises(ValueError):
        ds.log_event("custom", args={"pad": "x" * (pad + 1)})
    assert ds.events_path.read_bytes() == before


def test_E6_oversized_event_changes_nothing(ds, root):
    """[E6] (div) oversized events are detected before any data is written."""
    big = "x" * (MAX_EVENT_BYTES + 10)
    f = root.parent / "in.csv"
    f.write_text(f"id,score\n{IDS[0]},1\n")
    before = tree_digest(root)
    calls = [
        lambda: ds.attach(f, "mock", note=big),
        lambda: ds.attach(f, "mock", event_args={"blob": big}),
        lambda: ds.write_overlay_part("mock", pa.table({"id": IDS[:1], "mock__score": [1.0]}),
                                      event_args={"blob": big}),
        lambda: ds.create_overlay("mock", pa.table({"id": IDS[:1], "mock__score": [1.0]}), event_args={"blob": big}),
        lambda: ds.tombstone([IDS[0]], reason=big),
        lambda: ds.set_state([IDS[0]], supersedes=big),
        lambda: ds.import_rows([{"sequence": "GGGG"}], source=big),
        lambda: ds.add_sequences(["GGGG"], bio_type="dna", alphabet="dna_4", source=big),
    ]
    for call in calls:
        with pytest.raises(ValueError):
            call()
        assert tree_digest(root) == before


def test_E7_ingest_and_overlay_event_args(ds):
    """[E7] init/import_rows/attach/write_overlay_part args, metrics and artifacts."""
    ev = _events(ds)
    assert ev[1]["action"] == "init" and ev[1]["args"] == {"source": "test"}
    imp = ev[2]
    assert imp["args"] == {"n": 3, "source_param": None, "on_conflict": "error"}
    assert imp["metrics"] == {"rows_written": 3, "rows_skipped": 0}
    ds.write_overlay_part("mock", pa.table({"id": IDS[:2] + ["0" * 40], "mock__score": [1.0, 2.0, 3.0]}),
                          allow_missing=True, event_args={"run": "r1"})
    e = _events(ds)[-1]
    assert e["action"] == "write_overlay_part"
    assert e["args"] == {"namespace": "mock", "key": "id", "columns": ["mock__score"], "rows_incoming": 3,
                         "rows_matched": 2, "rows_written": 2, "rows_missing": 1, "allow_missing": True,
                         "run": "r1"}
    assert e["metrics"]["rows_written"] == 2 and e["metrics"]["rows_missing"] == 1
    assert e["artifacts"] == {"overlay": {"namespace": "mock", "key": "id"}}


def test_E7_attach_event(make_ds):
    """[E7] attach {namespace, key, rows_incoming, rows_matched, rows_missing, allow_overwrite, note} + event_args."""
    ds = make_ds(seqs=SEQS)
    f = ds.root.parent / "a.csv"
    f.write_text(f"id,label\n{IDS[0]},x\n{'0' * 40},y\n")
    assert ds.attach(f, "mock", allow_missing=True, note="n", event_args={"who": "me"}) == 1
    e = _events(ds)[-1]
    assert e["action"] == "attach"
    assert e["args"] == {"namespace": "mock", "key": "id", "rows_incoming": 2, "rows_matched": 1, "rows_missing": 1,
                         "allow_overwrite": False, "note": "n", "who": "me"}
    assert e["metrics"]["rows_matched"] == 1 and e["metrics"]["rows_missing"] == 1
    with pytest.raises(SchemaError):
        ds.attach(f, "mock", allow_missing=True, allow_overwrite=True, event_args={"note": "clash"})


def test_E8_symlinked_log_rejected(ds, root):
    """[E8] a symlinked .events.log is not followed; the link target is untouched."""
    target = root.parent / "elsewhere.log"
    target.write_bytes(ds.events_path.read_bytes())
    ds.events_path.unlink()
    ds.events_path.symlink_to(target)
    before = target.read_bytes()
    with pytest.raises(SequencesError):
        ds.log_event("custom")
    assert target.read_bytes() == before


def test_E8_symlinked_or_linked_lock_rejected(ds, root):
    """[E8] [A4] .events.lock must be a regular file with one link, not a symlink; mode 0600."""
    lock = ds.dir / ".events.lock"
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    lock.unlink()
    other = root.parent / "other.lock"
    other.write_text("")
    lock.symlink_to(other)
    before = ds.events_path.read_bytes()
    with pytest.raises(SequencesError):
        ds.log_event("custom")
    lock.unlink()
    os.link(other, lock)
    with pytest.raises(SequencesError):
        ds.log_event("custom")
    assert ds.events_path.read_bytes() == before
    lock.unlink()
    ds.log_event("custom")
    assert _events(ds)[-1]["action"] == "custom"


def test_E8_event_follows_data(ds):
    """[E8] events follow the data change they describe (fingerprint names the written part)."""
    ds.write_overlay_part("mock", pa.table({"id": IDS[:1], "mock__score": [1.0]}))
    part = next((ds.dir / "_derived" / "mock").glob("part-*.parquet"))
    assert _events(ds)[-1]["fingerprint"]["size_bytes"] == part.stat().st_size


def test_E8_append_only(ds):
    """[E8] [E1] every mutation appends; earlier lines unchanged."""
    before = ds.events_path.read_bytes()
    ds.tombstone([IDS[0]])
    after = ds.events_path.read_bytes()
    assert after.startswith(before) and after.count(b"\n") == before.count(b"\n") + 1


def test_E8_failed_append_truncates_to_prior_length(ds):
    """[E8] a write that fails midway (file size limit in a real process) is truncated back: no partial line."""
    import subprocess
    import sys
    from pathlib import Path
    code = ("import os, resource, signal, sys\nfrom usr_core import Dataset\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "ds = Dataset(sys.argv[1], 'demo')\n"
            "size = os.path.getsize(ds.events_path)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (size + 50, size + 50))\n"
            "try:\n    ds.log_event('custom', args={'pad': 'x' * 400})\n"
            "except OSError as exc:\n    print('failed', exc.errno)\n")
    before = ds.events_path.read_bytes()
    res = subprocess.run([sys.executable, "-c", code, str(ds.root)], capture_output=True, text=True, timeout=60,
                         cwd=str(Path(__file__).resolve().parents[2]))
    assert res.stdout.startswith("failed"), res.stderr
    assert ds.events_path.read_bytes() == before
    ds.log_event("custom")
    assert _events(ds)[-1]["action"] == "custom"


# ---------------------------------------------------------------- issue 13 items 5 and 6: torn and foreign lines

from usr_core.events import EventLine, iter_events, read_events  # noqa: E402


def test_E8_append_after_torn_line_starts_a_fresh_line(ds):
    """[E8] [E1] a log ending without a newline (a killed writer, an editor) does not swallow the next event:
    the append writes the newline first, so only the torn line is bad and every later event parses."""
    with open(ds.events_path, "ab") as fh:
        fh.write(b'{"event_version":1,"action":"tor')
    ds.log_event("custom", args={"after": "torn"})
    ds.tombstone([IDS[0]])
    raw = ds.events_path.read_bytes()
    assert raw.endswith(b"\n") and b'"action":"tor\n{' in raw
    lines = list(iter_events(ds.events_path))
    bad = [line for line in lines if line.problem]
    assert len(bad) == 1 and "not valid JSON" in bad[0].problem
    assert [line.event["action"] for line in lines if line.event][-2:] == ["custom", "tombstone"]
    assert read_events(ds.paths)[-1]["action"] == "tombstone"


def test_E8_garden_refuses_torn_line_unless_skip_invalid(ds, root):
    """[X11] [E8] a torn line: garden refuses by default (X11, root unchanged, the error names the byte offset
    and the way out); with skip_invalid=True it is reported (offset, why), never kept, and archived."""
    with open(ds.events_path, "ab") as fh:
        fh.write(b'{"event_version":1,"act')
    torn_at = ds.events_path.stat().st_size - len(b'{"event_version":1,"act')
    ds.log_event("custom")
    original = ds.events_path.read_bytes()
    before = tree_digest(root)
    with pytest.raises(SchemaError, match=f"byte {torn_at}") as err:
        ds.garden_event_log(retain_last=5, write=True, acknowledge_cursor_reset=True)
    assert "skip_invalid=True" in err.value.hint and "--skip-invalid" in err.value.cli_hint
    assert tree_digest(root) == before
    out = ds.garden_event_log(retain_last=5, write=True, acknowledge_cursor_reset=True, skip_invalid=True)
    assert [p["offset"] for p in out["lines_skipped"]] == [torn_at]
    kept = [json.loads(line) for line in _lines(ds)]  # every kept line parses
    assert kept[-1]["action"] == "event_log_garden" and kept[-1]["args"]["lines_skipped"] == 1
    assert open(out["archive_path"], "rb").read() == original


@pytest.mark.parametrize("bad", [b"123", b'["x"]', b"null", b'"text"', b"true", b"{not json",
                                 b'{"action":"attach","args":["--namespace","x"]}',
                                 b'{"action":"attach","artifacts":7}', b'{"args":{}}', b"\xff\xfe{}"])
def test_E1_non_object_lines_are_skipped_and_reported(ds, bad):
    """[E1] [E2] a line that is not an event object (or whose mappings are not mappings) is reported by
    iter_events with its offset and skipped by read_events and garden; the events around it survive."""
    with open(ds.events_path, "ab") as fh:
        fh.write(bad + b"\n")
    at = ds.events_path.stat().st_size - len(bad) - 1
    ds.log_event("custom")
    lines = list(iter_events(ds.events_path))
    problems = [line for line in lines if line.problem]
    assert [(p.offset, p.event) for p in problems] == [(at, None)]
    assert lines[-1].event["action"] == "custom" and lines[-1].end == ds.events_path.stat().st_size
    assert all(isinstance(e, dict) and isinstance(e.get("args", {}), dict) for e in read_events(ds.paths))
    with pytest.raises(SchemaError, match="refusing to garden"):
        ds.garden_event_log(retain_last=100, write=True, acknowledge_cursor_reset=True)
    out = ds.garden_event_log(retain_last=100, write=True, acknowledge_cursor_reset=True, skip_invalid=True)
    assert [p["offset"] for p in out["lines_skipped"]] == [at]


@pytest.mark.parametrize("field", ["args", "metrics", "artifacts", "maintenance"])
@pytest.mark.parametrize("value", [["--flag", "x"], ("a",), "text", 3])
def test_E2_non_mapping_args_rejected_before_writing(ds, root, field, value):
    """[E2] log_event(args=<list>) and friends: a clear ValueError, nothing appended (item 6: a list in args
    stopped the Dagster sensor for good)."""
    before = tree_digest(root)
    with pytest.raises(ValueError, match=f"{field} must be a mapping"):
        ds.log_event("custom", **{field: value})
    assert tree_digest(root) == before


def test_iter_events_offsets_and_partial_last_line(ds):
    """iter_events resumes at any `end`, never yields a partial last line, and bounds each call by max_bytes."""
    for i in range(5):
        ds.log_event("custom", args={"i": i})
    lines = list(iter_events(ds.events_path))
    assert all(isinstance(line, EventLine) and line.problem is None for line in lines)
    assert [line.offset for line in lines[1:]] == [line.end for line in lines[:-1]]
    mid = lines[3].end
    assert [line.event for line in iter_events(ds.events_path, mid)] == [line.event for line in lines[4:]]
    with open(ds.events_path, "ab") as fh:
        fh.write(b'{"event_version":1,"action":"half')  # an append in progress
    assert list(iter_events(ds.events_path, lines[-1].end)) == []
    first = list(iter_events(ds.events_path, 0, max_bytes=1))
    assert len(first) == 1 and first[0].end == lines[0].end
    assert list(iter_events(ds.dir / "missing.log")) == []
