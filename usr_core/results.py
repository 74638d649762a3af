"""Typed results of the write operations (what a transaction wrote)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class PartWritten:
    """O6/O7: one overlay part written (path None when no row was left to write)."""

    namespace: str
    path: Path | None
    rows: int
    created_at: str | None
    rows_missing: int = 0
    extra_metadata: dict[str, str] = field(default_factory=dict)
