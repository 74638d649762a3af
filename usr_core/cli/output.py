"""Output formats of the CLI (C4): auto | rich | plain | json, and quiet progress lines."""
from __future__ import annotations

import dataclasses
import datetime as _dt
import decimal
import json
import math
import sys
from pathlib import Path

import click

FORMATS = ("auto", "rich", "plain", "json")
OUTPUT_VERSION = 1


def format_option(f):
    return click.option("--format", "fmt", type=click.Choice(FORMATS, case_sensitive=False), default="auto",
                        show_default=True, help="Output format; json = one line {usr_output_version, data}.")(f)


def _rich_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("rich") is not None  # optional: never a dependency


def use_rich(fmt: str) -> bool:
    """Rich only when asked for (or auto without --no-rich), importable, and stdout is a terminal."""
    fmt = (fmt or "auto").lower()
    if fmt in ("plain", "json"):
        return False
    if fmt == "auto":
        ctx = click.get_current_context(silent=True)
        wanted = True if ctx is None else (ctx.find_root().obj or {}).get("rich", True)
        if not wanted:
            return False
    return _rich_available() and sys.stdout.isatty()


def is_json(fmt: str | None) -> bool:
    return (fmt or "").lower() == "json"


def jsonable(value):
    """NaN/Inf -> null, datetimes -> ISO strings, dataclasses/Arrow/pandas -> plain structures."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return jsonable(float(value))
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if hasattr(value, "_asdict"):
        return jsonable(value._asdict())
    rows = table_rows(value)
    if rows is not None:
        return [jsonable(r) for r in rows]
    if hasattr(value, "item"):  # numpy / pandas scalars
        try:
            return jsonable(value.item())
        except (ValueError, TypeError):
            pass
    if hasattr(value, "tolist"):
        return jsonable(value.tolist())
    return str(value)


def table_rows(value) -> list[dict] | None:
    """Row dicts of an Arrow table/batch or a pandas DataFrame; None for anything else."""
    if hasattr(value, "to_pylist") and hasattr(value, "schema"):
        return value.to_pylist()
    if hasattr(value, "to_dict") and hasattr(value, "columns") and hasattr(value, "iloc"):
        return value.to_dict("records")
    return None


def table_columns(value) -> list[str]:
    if hasattr(value, "schema") and hasattr(value, "column_names"):
        return list(value.column_names)
    return [str(c) for c in getattr(value, "columns", [])]


def emit_json(data) -> None:
    line = json.dumps({"usr_output_version": OUTPUT_VERSION, "data": jsonable(data)},
                      separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    click.echo(line)


def _cell(value, width: int | None) -> str:
    if value is None:
        text = ""
    elif isinstance(value, (dict, list, tuple)):
        text = json.dumps(jsonable(value), separators=(",", ":"), ensure_ascii=False)
    else:
        v = jsonable(value)
        text = "" if v is None else str(v)
    if width and len(text) > width:
        text = text[: width - 1] + "…"
    return text


def emit_table(rows: list[dict], columns: list[str], fmt: str, *, title: str | None = None,
               width: int | None = 48) -> None:
    """Rows as a rich table on a terminal, else aligned plain text (header line, two-space gaps)."""
    if use_rich(fmt):
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for c in columns:
            table.add_column(c, overflow="fold")
        for r in rows:
            table.add_row(*[_cell(r.get(c), None) for c in columns])
        Console().print(table)
        return
    cells = [[_cell(r.get(c), width) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    if title:
        click.echo(title)
    click.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip())
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def emit_mapping(data: dict, fmt: str, *, title: str | None = None) -> None:
    """key: value lines (lists joined by ', ')."""
    if use_rich(fmt):
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, show_header=False)
        table.add_column("field", style="bold")
        table.add_column("value", overflow="fold")
        for k, v in data.items():
            table.add_row(str(k), ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else _cell(v, None))
        Console().print(table)
        return
    for k, v in data.items():
        text = ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else _cell(v, None)
        click.echo(f"{k}: {text}")


def status(message: str, fmt: str | None = None) -> None:
    """Progress for long operations: one stderr line, only on an interactive terminal and never for json."""
    if is_json(fmt) or not sys.stderr.isatty():
        return
    click.echo(f"… {message}", err=True)
