"""event-log-garden (X11): archive `.events.log` and keep its last lines."""
from __future__ import annotations

import hashlib
import json
import uuid

from .. import events as ev
from ..contract import ts
from ..errors import SchemaError
from ..storage.atomic import write_bytes
from ..storage.locks import file_lock


def _lines(data: bytes) -> list[bytes]:
    return [ln + b"\n" for ln in data.split(b"\n") if ln.strip()]


def garden_event_log(ds, retain_last: int = 1000, write: bool = False, acknowledge_cursor_reset: bool = False,
                     reason: str = "") -> dict:
    ds._require()
    if not isinstance(retain_last, int) or isinstance(retain_last, bool) or retain_last < 1:
        raise ValueError(f"retain_last must be an integer >= 1, got {retain_last!r}.")
    paths = ds.paths
    if not write:
        lines = _lines(paths.events.read_bytes()) if paths.events.is_file() else []
        kept = min(len(lines), retain_last)
        return {"write": False, "lines_total": len(lines), "lines_retained": kept,
                "lines_removed": len(lines) - kept, "archive_path": None}
    if not acknowledge_cursor_reset:
        raise ValueError("Writing the gardened log resets byte offsets of log consumers; "
                         "pass acknowledge_cursor_reset=True (--acknowledge-cursor-reset).")
    with ds.lock(), file_lock(paths.events_lock, what="event lock"):
        data = paths.events.read_bytes() if paths.events.is_file() else b""
        lines = _lines(data)
        for i, line in enumerate(lines, 1):
            try:
                json.loads(line)
            except ValueError:
                raise SchemaError(f"{paths.events} line {i} is not valid JSON; refusing to garden (X11).",
                                  hint="Repair or remove that line first; nothing was changed.") from None
        kept = lines[-retain_last:]
        digest = hashlib.sha256(data).hexdigest()
        stamp = ts().replace(":", "").replace(".", "")
        archive = paths.events_archive / f"events-{stamp}-{digest[:12]}.jsonl"
        args = {"retain_last": retain_last, "lines_before": len(lines), "lines_after": len(kept) + 1,
                "lines_removed": len(lines) - len(kept), "archive_path": str(archive), "reason": reason}
        # the event is part of the atomically written new log: appending it would need the event lock again
        line = ev.build_event(paths, "event_log_garden", args=args,
                              metrics={"lines_before": len(lines), "lines_removed": len(lines) - len(kept)},
                              maintenance={"reason": reason} if reason else {}, registry_hash=ds._hash())
        write_bytes(archive, data, tmp=archive.with_name(archive.name + ".tmp"), label="garden-archive")
        write_bytes(paths.events, b"".join(kept) + line,
                    tmp=paths.dir / f".events.{uuid.uuid4().hex[:8]}.log", label="garden")
    return {"write": True, "lines_total": len(lines), "lines_retained": len(kept),
            "lines_removed": len(lines) - len(kept), "archive_path": str(archive)}
