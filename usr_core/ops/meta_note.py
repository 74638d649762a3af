"""L10: a note appended to meta.md (human notes: no event, but the dataset lock and an atomic write)."""
from __future__ import annotations

from ..contract import ts
from ..storage.atomic import write_text
from ..txn import Writer


def append_meta_note(w: Writer, title: str, code_block: str | None = None) -> None:
    w.require()
    with w.lock():
        meta = w.paths.meta
        text = meta.read_text(encoding="utf-8") if meta.is_file() else f"name: {w.name}\n"
        if not text.endswith("\n"):
            text += "\n"
        text += f"- {ts()}: {title}\n"
        if code_block:
            text += f"```bash\n{code_block}\n```\n"
        write_text(meta, text, label="meta")
