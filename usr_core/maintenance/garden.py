"""event-log-garden (X11): archive `.events.log` and keep its last lines."""
from __future__ import annotations

import hashlib
import uuid

from .. import events as ev
from ..contract import ts
from ..errors import SchemaError
from ..journal import Journal
from ..storage.atomic import write_bytes
from ..storage.locks import file_lock


def _split(data: bytes) -> tuple[list[bytes], list[dict]]:
    """(good lines, problems): torn, non-JSON and non-object lines are left out and reported with their offset.
    Under the event lock a last line without its newline is torn for good (no append is in progress)."""
    good, problems, pos = [], [], 0
    for raw in data.splitlines(keepends=True):
        start, pos = pos, pos + len(raw)
        if not raw.strip():
            continue
        event, problem = ev.parse_event_line(raw)
        if problem is None:
            good.append(raw if raw.endswith(b"\n") else raw + b"\n")
        else:
            problems.append({"offset": start, "problem": problem})
    return good, problems


def _refuse(paths, problems: list[dict]) -> SchemaError:
    where = ", ".join(f"byte {p['offset']}: {p['problem']}" for p in problems[:3])
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return SchemaError(f"{paths.events} holds {len(problems)} line(s) that are not event objects ({where}{more}); "
                       "refusing to garden (X11).",
                       hint="Repair or remove those lines, or pass skip_invalid=True to drop them (the archive "
                            "keeps every byte); nothing was changed.",
                       cli_hint="Repair or remove those lines, or pass --skip-invalid to drop them (the archive "
                                "keeps every byte); nothing was changed.")


def garden_event_log(ds, retain_last: int = 1000, write: bool = False, acknowledge_cursor_reset: bool = False,
                     reason: str = "", skip_invalid: bool = False) -> dict:
    """X11. Lines that are not event objects (torn, non-JSON, non-object) make a write refuse, as the contract
    says, unless skip_invalid=True: then they are left out of the kept log, reported under `lines_skipped` and
    kept in the archive, which holds every byte of the old log."""
    ds.writer.require()
    if not isinstance(retain_last, int) or isinstance(retain_last, bool) or retain_last < 1:
        raise ValueError(f"retain_last must be an integer >= 1, got {retain_last!r}.")
    paths = ds.paths
    if not write:
        lines, problems = _split(paths.events.read_bytes()) if paths.events.is_file() else ([], [])
        total = len(lines) + len(problems)
        kept = min(len(lines), retain_last)
        return {"write": False, "lines_total": total, "lines_retained": kept,
                "lines_removed": total - kept, "archive_path": None}
    if not acknowledge_cursor_reset:
        raise ValueError("Writing the gardened log resets byte offsets of log consumers; "
                         "pass acknowledge_cursor_reset=True (--acknowledge-cursor-reset).")
    ev.check_log_files(paths)
    with ds.lock(), file_lock(paths.events_lock, what="event lock"):
        data = paths.events.read_bytes() if paths.events.is_file() else b""
        lines, problems = _split(data)  # X11: bad lines are never kept; the archive holds every byte
        if problems and not skip_invalid:
            raise _refuse(paths, problems)
        kept = lines[-retain_last:]
        digest = hashlib.sha256(data).hexdigest()
        stamp = ts().replace(":", "").replace(".", "")
        archive = paths.events_archive / f"events-{stamp}-{digest[:12]}.jsonl"
        args = {"retain_last": retain_last, "lines_before": len(lines), "lines_after": len(kept) + 1,
                "lines_removed": len(lines) - len(kept), "lines_skipped": len(problems),
                "archive_path": str(archive), "reason": reason}
        # the event is part of the atomically written new log: appending it would need the event lock again
        line = ev.build_event(paths, "event_log_garden", args=args,
                              metrics={"lines_before": len(lines), "lines_removed": len(lines) - len(kept)},
                              maintenance={"reason": reason} if reason else {}, registry_hash=ds.writer.registry_hash())
        # a failed log write takes the archive back, so the root is unchanged; the log itself is replaced in one
        # rename (no before-image: a hard link to it would make it a two-link file, which E8 refuses)
        with Journal().scope() as journal:
            journal.before_write(archive)
            write_bytes(archive, data, tmp=archive.with_name(archive.name + ".tmp"), label="garden-archive")
            write_bytes(paths.events, b"".join(kept) + line,
                        tmp=paths.dir / f".events.{uuid.uuid4().hex[:8]}.log", label="garden")
    result = {"write": True, "lines_total": len(lines), "lines_retained": len(kept),
              "lines_removed": len(lines) - len(kept), "archive_path": str(archive)}
    return {**result, "lines_skipped": problems} if skip_invalid else result
