"""The event ledger `.events.log` (E1-E8)."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import socket
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow.parquet as pq

from .contract import USR_EVENT_VERSION, ts
from .errors import SequencesError, UnsafePathError, environment_failure
from .layout import DatasetPaths
from .storage.locks import file_lock

MAX_EVENT_BYTES = 1_048_576
REDACTED = "***REDACTED***"
_SENSITIVE = ("secret", "token", "password", "passwd", "api_key", "apikey", "webhook", "auth", "credential",
              "bearer", "cookie", "session")

# action defaults for metrics / artifacts (E2: supplied values are overlaid on these)
_DEFAULTS = {
    "init": ({"rows": 0}, {"overlays": []}),
    "import_rows": ({"rows_written": 0, "rows_skipped": 0}, {"base": {}}),
    "attach": ({"rows_incoming": 0, "rows_matched": 0, "rows_missing": 0}, {"overlay": {}}),
    "write_overlay_part": ({"rows_incoming": 0, "rows_written": 0, "rows_missing": 0}, {"overlay": {}}),
    "tombstone": ({"rows": 0}, {"overlay": {"namespace": "usr"}}),
    "restore": ({"rows": 0}, {"overlay": {"namespace": "usr"}}),
    "state_set": ({"rows": 0}, {"overlay": {"namespace": "usr_state"}}),
    "state_clear": ({"rows": 0}, {"overlay": {"namespace": "usr_state"}}),
    "snapshot": ({"rows": 0}, {"snapshot": {}}),
    "registry_freeze": ({"updated": 0}, {"registry_snapshot": ""}),
}


def _find_version() -> str:
    """The installed usr-dagster version, first from its PEP 376 `.dist-info` directory name: importing
    importlib.metadata costs tens of milliseconds, as much as a whole small overlay write."""
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.startswith("usr_dagster-") and name.endswith(".dist-info"):
                return name[len("usr_dagster-"):-len(".dist-info")]
    try:
        from importlib.metadata import version

        return version("usr-dagster")
    except Exception:
        return "0.1.0"


# E2 `version`: read once when this module is imported (lifetime: the process; an upgrade needs a new process)
PACKAGE_VERSION: str = _find_version()


def _is_sensitive(key: str) -> bool:
    k = str(key).lower().replace("-", "_")
    return any(s in k for s in _SENSITIVE)


def redact(value):
    """E4: recursive redaction of sensitive keys and sensitive --flags in lists."""
    if isinstance(value, dict):
        return {k: (REDACTED if _is_sensitive(k) else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        out, redact_next = [], False
        for item in value:
            if redact_next:
                out.append(REDACTED)
                redact_next = False
                continue
            if isinstance(item, str) and item.startswith("--"):
                flag, eq, _ = item[2:].partition("=")
                if _is_sensitive(flag):
                    if eq:
                        out.append(f"--{flag}={REDACTED}")
                    else:
                        out.append(item)
                        redact_next = True
                    continue
            out.append(redact(item))
        return out
    return value


def default_actor() -> dict:
    """E3."""
    pid = os.getpid()
    return {"tool": os.environ.get("USR_ACTOR_TOOL") or "usr",
            "run_id": os.environ.get("USR_ACTOR_RUN_ID") or f"usr-pid-{pid}",
            "host": socket.gethostname(), "pid": pid}


def check_actor(actor) -> dict:
    if actor is None:
        return default_actor()
    if not isinstance(actor, dict):
        raise ValueError("actor must be a mapping with non-empty 'tool' and 'run_id'.")
    for key in ("tool", "run_id"):
        if not str(actor.get(key) or "").strip():
            raise ValueError(f"actor needs a non-empty {key!r}.")
    return dict(actor)


def fingerprint(path: Path | None) -> dict:
    """E5: {rows, cols, size_bytes} (+ sha256 when USR_EVENT_SHA256=1)."""
    if not path or not Path(path).is_file():
        return {}
    path = Path(path)
    md = pq.ParquetFile(path).metadata
    fp = {"rows": md.num_rows, "cols": md.num_columns, "size_bytes": path.stat().st_size}
    if os.environ.get("USR_EVENT_SHA256") == "1":
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        fp["sha256"] = h.hexdigest()
    return fp


def _clean(obj):
    """Make args JSON-safe: paths → str, tuples → lists; NaN/Infinity rejected later by allow_nan=False."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_clean(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ValueError("Event values may not be NaN or Infinity (E1).")
    return obj


def build_event(paths: DatasetPaths, action: str, *, args=None, metrics=None, artifacts=None, maintenance=None,
                target_path=None, actor=None, registry_hash=None) -> bytes:
    """Build and size-check one encoded event line (E1, E2, E6) without writing anything."""
    if not isinstance(action, str) or not action.strip():
        raise ValueError(f"Event action must be a non-empty string, got {action!r}.")
    for field, value in (("args", args), ("metrics", metrics), ("artifacts", artifacts), ("maintenance", maintenance)):
        if value is not None and not isinstance(value, dict):
            raise ValueError(f"Event {field} must be a mapping (E2), got {type(value).__name__}: {value!r:.80}. "
                             f"Wrap it, e.g. {field}={{'items': [...]}}; nothing was written.")
    dm, da = _DEFAULTS.get(action, ({}, {}))
    event = {
        "event_version": USR_EVENT_VERSION,
        "timestamp_utc": ts(),
        "action": action,
        "dataset": {"name": paths.name, "root": str(paths.root)},
        "args": redact(_clean(args or {})),
        "metrics": {**dm, **_clean(metrics or {})},
        "artifacts": {**da, **_clean(artifacts or {})},
        "maintenance": _clean(maintenance or {}),
        "fingerprint": fingerprint(target_path if target_path is not None else paths.records),
        "registry_hash": registry_hash,
        "actor": check_actor(actor),
        "version": PACKAGE_VERSION,
    }
    try:
        line = json.dumps(event, separators=(",", ":"), ensure_ascii=True, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Event {action!r} is not JSON-serialisable: {exc}") from exc
    data = line.encode("utf-8")
    if len(data) > MAX_EVENT_BYTES:
        raise ValueError(f"Event {action!r} is {len(data)} bytes; the limit is {MAX_EVENT_BYTES} (E6). "
                         "Shorten its args (e.g. a long note or event_args).")
    return data


def check_log_files(paths: DatasetPaths) -> None:
    """E8 before any data change: the log and its lock, when present, are regular files, not links, and the log
    opens for appending (else EnvironmentFailure: a mutation must not change data it cannot log)."""
    for path in (paths.events, paths.events_lock):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePathError(f"Event log file {path} is a symbolic link; USR never writes through links.",
                                  path=path, hint="Replace the link with the real file (or remove it); nothing was "
                                                  "changed.")
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            raise UnsafePathError(f"Event log file {path} is not a regular file with one link (a hard link?).",
                                  path=path, hint="Replace it with a copy of the file; nothing was changed.")
        if path == paths.events:  # it must take an append (a read-only log, a read-only disk) before any change
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)))
            except OSError as exc:
                failure = environment_failure(exc, f"Cannot open the event log {path} for appending")
                if failure is None:
                    raise
                failure.hint = f"{failure.hint} Nothing was changed."
                raise failure from exc


def append_line(paths: DatasetPaths, data: bytes) -> None:
    """E8: locked, O_APPEND, whole line, fsync, inode check, truncate back on failure.

    The line always starts on a fresh line: when the log ends without a newline (a torn line left by a killed
    writer or an editor), a newline is written first, so the torn line stays one bad line that readers skip."""
    check_log_files(paths)
    with file_lock(paths.events_lock, what="event lock"):
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(paths.events, flags, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePathError(f"Event log {paths.events} is a symbolic link; refusing to follow it.",
                                      hint="Replace the link with the real file (or remove it).") from exc
            failure = environment_failure(exc, f"Cannot open the event log {paths.events}")
            if failure is None:
                raise
            raise failure from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                raise UnsafePathError(f"Event log {paths.events} is not a regular file with one link.",
                                      hint="Replace it with the real file; USR never follows links for its event log.")
            prior = st.st_size
            if prior and os.pread(fd, 1, prior - 1) != b"\n":
                data = b"\n" + data
            try:
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                os.fsync(fd)
                now = os.stat(paths.events, follow_symlinks=False)
                if (now.st_ino, now.st_dev) != (st.st_ino, st.st_dev):
                    raise SequencesError(f"Event log {paths.events} was replaced while appending; the line was "
                                         "taken back.", hint="Run the command again.")
            except BaseException:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, prior)
                raise
        except OSError as exc:
            failure = environment_failure(exc, f"Cannot append to the event log {paths.events}")
            if failure is None:
                raise
            raise failure from exc
        finally:
            os.close(fd)


# ---------------------------------------------------------------------------------------------- reading

_OBJECT_FIELDS = ("dataset", "args", "metrics", "artifacts", "maintenance", "fingerprint", "actor")


@dataclass(frozen=True)
class EventLine:
    """One complete line of an event log.

    `event` is the parsed event (a JSON object whose E2 mapping fields are mappings or absent), or None when the
    line is unusable; then `problem` says why (torn line, invalid JSON, not an object, a field of the wrong shape).
    `offset` is where the line starts and `end` where the next one starts: a consumer that stores `end` as its
    cursor resumes exactly after this line."""

    offset: int
    end: int
    event: dict | None
    problem: str | None = None

    @property
    def line_text(self) -> str:  # for messages: "<path> byte <offset>: <problem>"
        return f"byte {self.offset}: {self.problem}" if self.problem else f"byte {self.offset}"


def parse_event_line(raw: bytes) -> tuple[dict | None, str | None]:
    """(event, None) for a usable E1/E2 line, else (None, problem)."""
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"not valid JSON ({str(exc)[:80]}); a torn or edited line?"
    if not isinstance(obj, dict):
        return None, f"a JSON {type(obj).__name__ if obj is not None else 'null'}, not an event object"
    for key in _OBJECT_FIELDS:
        if obj.get(key) is not None and not isinstance(obj[key], dict):
            return None, f"field {key!r} is a {type(obj[key]).__name__}, not an object"
    if not isinstance(obj.get("action"), str):
        return None, "field 'action' is missing or not a string"
    return obj, None


def iter_events(path, offset: int = 0, *, max_bytes: int | None = None) -> Iterator[EventLine]:
    """Yield every complete line of the event log at `path` from byte `offset`, in order, as EventLine.

    Good lines carry `event`; torn, non-JSON and non-object lines carry `problem` instead and never raise, so a
    consumer (the Dagster sensor, `usr events tail`, garden) can skip and report them and keep its cursor moving.
    A last line without its newline is not yielded: it may be an append in progress (a later append starts on a
    fresh line, so a line torn for good is yielded as a problem once something follows it). Blank lines are skipped.
    `max_bytes` bounds how much is read in this call (lines past it wait for the next call; a single line longer
    than `max_bytes` is still read whole). A missing log yields nothing. Offsets are byte offsets in the file."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return
    with fh:
        fh.seek(offset)
        pos, budget = offset, max_bytes
        while budget is None or budget > 0:
            raw = fh.readline()
            if not raw.endswith(b"\n"):
                return  # end of file, or a partial last line
            start, pos = pos, pos + len(raw)
            if budget is not None:
                budget -= len(raw)
            if not raw.strip():
                continue
            event, problem = parse_event_line(raw)
            yield EventLine(start, pos, event, problem)


def read_events(paths: DatasetPaths) -> list[dict]:
    """Every usable event of the dataset's log (bad lines skipped; see iter_events to report them)."""
    return [line.event for line in iter_events(paths.events) if line.event is not None]
