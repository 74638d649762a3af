"""The event ledger `.events.log` (E1-E8)."""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import socket
from pathlib import Path

import pyarrow.parquet as pq

from .contract import USR_EVENT_VERSION, ts
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


_VERSION: list[str] = []


def _package_version() -> str:
    if not _VERSION:
        _VERSION.append(_find_version())
    return _VERSION[0]


def _find_version() -> str:
    """The installed usr-dagster version, first from its PEP 376 `.dist-info` directory name: importing
    importlib.metadata costs tens of milliseconds, as much as a whole small overlay write."""
    import sys

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
        "version": _package_version(),
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
    """E8 before any data change: the log and its lock, when present, are regular files, not links."""
    import stat

    from .errors import SequencesError

    for path in (paths.events, paths.events_lock):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            raise SequencesError(f"Event log file {path} is not a regular file with one link (a symbolic or hard link?).",
                                 hint="Replace it with the real file; USR never follows links for its event log.")


def append_line(paths: DatasetPaths, data: bytes) -> None:
    """E8: locked, O_APPEND, whole line, fsync, inode check, truncate back on failure."""
    with file_lock(paths.events_lock, what="event lock"):
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(paths.events, flags, 0o644)
        except OSError as exc:
            from .errors import SequencesError

            raise SequencesError(f"Cannot open event log {paths.events}: {exc}",
                                 hint="The event log must be a regular file, not a symbolic link.") from exc
        try:
            st = os.fstat(fd)
            prior = st.st_size
            try:
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                os.fsync(fd)
                now = os.stat(paths.events, follow_symlinks=False)
                if (now.st_ino, now.st_dev) != (st.st_ino, st.st_dev):
                    raise OSError("event log was replaced while appending")
            except BaseException:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, prior)
                raise
        finally:
            os.close(fd)


def read_events(paths: DatasetPaths) -> list[dict]:
    if not paths.events.is_file():
        return []
    out = []
    with open(paths.events, "rb") as fh:
        for line in fh:
            line = line.strip()
            if line:
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
    return out
