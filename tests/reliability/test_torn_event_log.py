"""Issue 13 items 5 and 6 through the real CLI: a torn or foreign line in `.events.log` no longer poisons the next
event, `usr events tail` and `usr maintenance event-log-garden` skip and report it, and every later event parses.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

USR = shutil.which("usr", path=str(Path(sys.executable).parent)) or str(Path(sys.executable).parent / "usr")

BAD_LINES = {
    "torn": b'{"event_version":1,"timestamp_utc":"2026-01-01T00:00:00.000000Z","action":"attach","ar',
    "number": b"123",
    "list": b'["x"]',
    "null": b"null",
    "args-list": b'{"event_version":1,"action":"attach","args":["--namespace","mock"]}',
    "binary": b"\xff\xfe\x00garbage",
}


def usr(root: Path, *args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "USR_ROOT"}
    return subprocess.run([USR, "--root", str(root), *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=120, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_E1_E8_bad_log_line_is_skipped_and_reported_by_every_reader(make_ds, root, kind):
    """[E1] [E8] [X11] a bad line at the end of the log (no newline for the torn one): the next mutation still
    logs a parseable event on its own line; `events tail --format json` reports the bad line and returns the
    events; garden keeps working and reports it (before: the glued line made garden refuse the whole log)."""
    ds = make_ds()
    bad = BAD_LINES[kind]
    with open(ds.events_path, "ab") as fh:
        fh.write(bad if kind == "torn" else bad + b"\n")
    ids = ds.read_table(columns=["id"])["id"].to_pylist()
    res = usr(root, "delete", "demo", "--id", ids[0])
    assert res.returncode == 0, res.stderr
    raw = ds.events_path.read_bytes()
    last = raw.splitlines()[-1]
    assert json.loads(last)["action"] == "tombstone" and raw.endswith(b"\n")

    res = usr(root, "events", "tail", "demo", "--format", "json", "--n", "3")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)["data"]
    assert data[-1]["action"] == "tombstone"
    reported = [e for e in data if isinstance(e, dict) and "invalid_line" in e]
    assert len(reported) == 1 and reported[0]["problem"]

    res = usr(root, "maintenance", "event-log-garden", "demo", "--retain-last", "100", "--write",
              "--acknowledge-cursor-reset")
    assert res.returncode == 2 and "--skip-invalid" in res.stderr, res.stderr  # X11: refused, nothing changed
    res = usr(root, "maintenance", "event-log-garden", "demo", "--retain-last", "100", "--write",
              "--acknowledge-cursor-reset", "--skip-invalid")
    assert res.returncode == 0, res.stderr
    kept = ds.events_path.read_bytes().splitlines()
    assert all(isinstance(json.loads(line), dict) for line in kept)
    assert json.loads(kept[-1])["args"]["lines_skipped"] == 1
    archive = next((ds.dir / ".events.archive").glob("events-*.jsonl"))
    assert bad in archive.read_bytes()


def test_X11_garden_failing_log_write_leaves_root_unchanged(make_ds, root):
    """[X11] [A1] a garden whose new log cannot be published (killed at the rename, in a real process) or fails
    there leaves the root byte-identical: the archive it wrote first is taken back."""
    from testkit import tree_digest

    ds = make_ds()
    before = tree_digest(root)
    code = ("import sys\nfrom usr_core import Dataset\n"
            "import usr_core.storage.atomic as a\n"
            "real = a.publish\n"
            "def publish(tmp, final, label='write'):\n"
            "    if label == 'garden':\n"
            "        raise OSError(28, 'No space left on device')\n"
            "    return real(tmp, final, label)\n"
            "a.publish = publish\n"
            "try:\n    Dataset(sys.argv[1], 'demo').garden_event_log(retain_last=1, write=True, "
            "acknowledge_cursor_reset=True)\n"
            "except Exception as exc:\n    print(type(exc).__name__)\n")
    res = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, timeout=120,
                         cwd=str(Path(__file__).resolve().parents[2]))
    assert res.stdout.strip() == "EnvironmentFailure", res.stderr
    assert tree_digest(root) == before
