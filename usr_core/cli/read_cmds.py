"""Read commands (C3): ls, info, schema, head, get, grep, export, validate, events tail."""
from __future__ import annotations

import datetime as _dt
import os
import re
import time
from collections import deque
from pathlib import Path

import click

from ..events import parse_event_line
from ..inspect import EventCursor, tail_events
from ..layout import discover_datasets
from .output import (emit_json, emit_mapping, emit_table, format_option, is_json, jsonable, status, table_columns,
                     table_rows, use_rich)
from .resolve import dataset, get_root

ID_RE = re.compile(r"^[0-9a-f]{40}$")


def _columns(value: str | None) -> list[str] | None:
    if not value:
        return None
    cols = [c.strip() for c in value.split(",") if c.strip()]
    return cols or None


include_deleted_option = click.option("--include-deleted", is_flag=True,
                                      help="Include tombstoned rows (and the usr__deleted* columns).")


@click.command("ls")
@format_option
def ls_cmd(fmt: str) -> None:
    """List datasets under the root (L3)."""
    import pyarrow.parquet as pq

    root = get_root()
    rows = []
    for ds_id in discover_datasets(root):
        path = root / ds_id / "records.parquet"
        md = pq.ParquetFile(path).metadata
        st = path.stat()
        rows.append({"dataset": ds_id, "rows": md.num_rows, "cols": len(md.schema.to_arrow_schema()),
                     "size_bytes": st.st_size,
                     "updated": _dt.datetime.fromtimestamp(st.st_mtime, _dt.timezone.utc)})
    if is_json(fmt):
        emit_json(rows)
    elif not rows:
        click.echo(f"No datasets under {root}.")
    else:
        emit_table(rows, ["dataset", "rows", "cols", "size_bytes", "updated"], fmt)


@click.command("info")
@click.argument("ds", required=False)
@format_option
def info_cmd(ds: str | None, fmt: str) -> None:
    """Summary of a dataset: rows (incl. deleted), columns, namespaces."""
    info = dataset(ds).info()
    data = jsonable(info)
    if is_json(fmt):
        emit_json(data)
    else:
        emit_mapping(data, fmt, title=data.get("name"))


def _type_name(dt) -> str:
    from ..registry.types import canonical_type

    try:
        return canonical_type(dt)
    except Exception:  # types outside the registry grammar still print
        return str(dt)


def _tree_lines(name: str, dt, indent: int) -> list[str]:
    import pyarrow as pa

    pad = "  " * indent
    lines = [f"{pad}{name}: {_type_name(dt)}"]
    if pa.types.is_struct(dt):
        for i in range(dt.num_fields):
            lines += _tree_lines(dt.field(i).name, dt.field(i).type, indent + 1)
    elif pa.types.is_list(dt) or pa.types.is_large_list(dt) or pa.types.is_fixed_size_list(dt):
        lines += _tree_lines("item", dt.value_type, indent + 1)
    return lines


@click.command("schema")
@click.argument("ds", required=False)
@click.option("--tree", is_flag=True, help="Show nested struct/list types as a tree.")
@format_option
def schema_cmd(ds: str | None, tree: bool, fmt: str) -> None:
    """Merged Arrow schema (base + overlays)."""
    schema = dataset(ds).schema()
    fields = [{"name": f.name, "type": _type_name(f.type), "nullable": f.nullable} for f in schema]
    if is_json(fmt):
        emit_json({"fields": fields})
    elif tree:
        lines = []
        for f in schema:
            lines += _tree_lines(f.name, f.type, 0)
        if use_rich(fmt):
            from rich.console import Console
            from rich.tree import Tree

            t = Tree("schema")
            stack = [(-1, t)]
            for line in lines:
                depth = (len(line) - len(line.lstrip(" "))) // 2
                while stack[-1][0] >= depth:
                    stack.pop()
                stack.append((depth, stack[-1][1].add(line.strip())))
            Console().print(t)
        else:
            for line in lines:
                click.echo(line)
    else:
        emit_table(fields, ["name", "type", "nullable"], fmt, width=None)


def _emit_rows(table, fmt: str) -> None:
    rows = table_rows(table)
    if is_json(fmt):
        emit_json(rows)
    else:
        emit_table(rows, table_columns(table), fmt)


@click.command("head")
@click.argument("ds", required=False)
@click.option("-n", "n", type=int, default=10, show_default=True, help="Number of rows.")
@click.option("--columns", help="Comma-separated columns to show.")
@include_deleted_option
@format_option
def head_cmd(ds, n, columns, include_deleted, fmt) -> None:
    """First N visible rows in base order (overlays joined)."""
    table = dataset(ds).head(n, _columns(columns), include_deleted=include_deleted)
    _emit_rows(table, fmt)


@click.command("get")
@click.argument("ds", required=False)
@click.argument("record_id", metavar="[ID]", required=False)
@click.option("--id", "id_opt", help="Record id (instead of the positional ID).")
@click.option("--columns", help="Comma-separated columns to show.")
@include_deleted_option
@format_option
def get_cmd(ds, record_id, id_opt, columns, include_deleted, fmt) -> None:
    """One record by id; prints `Not found.` (exit 0) when absent."""
    if record_id is None and id_opt is None and ds is not None and ID_RE.match(ds):
        ds, record_id = None, ds  # `usr get <id>` inside a dataset directory
    rid = id_opt or record_id
    if not rid:
        raise click.UsageError("Missing record id: pass ID or --id.")
    result = dataset(ds).get(rid.strip(), _columns(columns), include_deleted=include_deleted)
    rows = table_rows(result) if result is not None else None
    if rows is None and isinstance(result, dict):
        rows = [result]
    if not rows:
        if is_json(fmt):
            emit_json(None)
        else:
            click.echo("Not found.")
        return
    if is_json(fmt):
        emit_json(rows[0])
    else:
        emit_mapping(rows[0], fmt)


@click.command("grep")
@click.argument("ds")
@click.option("--pattern", required=True, help="Regular expression, case-insensitive, on sequence.")
@click.option("--limit", type=int, default=20, show_default=True)
@include_deleted_option
@format_option
def grep_cmd(ds, pattern, limit, include_deleted, fmt) -> None:
    """Records whose sequence matches a regular expression."""
    try:
        re.compile(pattern)
    except re.error as exc:
        raise click.BadParameter(f"invalid regular expression: {exc}", param_hint="--pattern") from None
    _emit_rows(dataset(ds).grep(pattern, limit=limit, include_deleted=include_deleted), fmt)


@click.command("export")
@click.argument("ds", required=False)
@click.option("--fmt", "out_fmt", required=True, type=click.Choice(["csv", "jsonl", "parquet"], case_sensitive=False),
              help="Export format.")
@click.option("--out", "out", required=True, type=click.Path(),
              help="Output file; a path ending in / or an existing directory gets <id with / as _>.<fmt> inside "
                   "(created if missing).")
@click.option("--columns", help="Comma-separated columns to export.")
@include_deleted_option
def export_cmd(ds, out_fmt, out, columns, include_deleted) -> None:
    """Export the merged view (X10) to csv, jsonl or parquet."""
    d = dataset(ds)
    out_fmt = out_fmt.lower()
    target = export_target(out, d.name, out_fmt)
    status(f"exporting {d.name} to {target}")
    d.export(out_fmt, target, columns=_columns(columns), include_deleted=include_deleted)
    click.echo(f"Exported {d.name} to {target}")


def export_target(out: str, name: str, fmt: str) -> Path:
    """X10: `DIR/` or an existing directory means `<DIR>/<id, "/" -> "_">.<fmt>`; anything else is the file."""
    path = Path(out).expanduser()
    if out.endswith(("/", os.sep)) or path.is_dir():
        return path / f"{name.replace('/', '_')}.{fmt}"
    return path


@click.command("validate")
@click.argument("ds", required=False)
@click.option("--strict", is_flag=True, help="Also check materialized base columns against the registry (V3).")
@click.option("--registry-mode", default="current", show_default=True,
              help="current | frozen | either | namespace-current | namespace-frozen | namespace-either (V2).")
def validate_cmd(ds, strict, registry_mode) -> None:
    """Validate a dataset (V1-V3); exit 2 with the first failure."""
    d = dataset(ds)
    status(f"validating {d.name}")
    d.validate(strict=strict, registry_mode=registry_mode)
    click.echo("OK: validation passed.")


def _tail_lines(path: Path, n: int) -> tuple[list[str], int]:
    if not path.exists():
        return [], 0
    with path.open("rb") as fh:
        lines = deque((line for line in fh), maxlen=max(n, 0))
        end = fh.tell()
    return [b.decode("utf-8", "replace").rstrip("\n") for b in lines], end


def _print_events(lines: list[str], fmt: str) -> None:
    if not lines:
        return
    if fmt == "json":
        events = []
        for line in lines:  # torn / non-object lines are reported, not fatal (issue 13 items 5, 6)
            event, problem = parse_event_line(line.encode("utf-8"))
            events.append(event if problem is None else {"invalid_line": line, "problem": problem})
        emit_json(events)
    else:
        for line in lines:
            click.echo(line)


@click.group("events")
def events_group() -> None:
    """The dataset event log (.events.log)."""


@events_group.command("tail")
@click.argument("ds", required=False)
@click.option("--format", "fmt", type=click.Choice(["json", "raw"], case_sensitive=False), default="raw",
              show_default=True, help="raw = log lines as stored; json = {usr_output_version, data: [events]}.")
@click.option("--n", "n", type=int, default=10, show_default=True, help="Number of events.")
@click.option("--follow", is_flag=True, help="Keep printing new events (Ctrl-C to stop).")
def events_tail_cmd(ds, fmt, n, follow) -> None:
    """Last N events; --follow polls for new ones."""
    d = dataset(ds)
    fmt = fmt.lower()
    path = Path(d.events_path)
    lines, offset = _tail_lines(path, n)
    if fmt == "json" and not follow:
        lines = [x for x in lines if x.strip()]
        if lines:
            _print_events(lines, fmt)
        else:
            emit_json([])
        return
    _print_events(lines, fmt)
    if not follow:
        return
    # the tail the Dagster sensor uses: partial lines wait, gardening (X11) is followed, bad lines are shown, not fatal
    cursor = EventCursor(path.stat().st_ino if path.exists() else None, offset)
    try:
        while True:
            time.sleep(0.5)
            tail = tail_events(path, cursor)
            cursor = tail.cursor
            _print_events([line.raw for line in tail.lines], fmt)
    except KeyboardInterrupt:
        return


COMMANDS = [ls_cmd, info_cmd, schema_cmd, head_cmd, get_cmd, grep_cmd, export_cmd, validate_cmd, events_group]
