"""`usr namespace list | show | register` (R10, R12)."""
from __future__ import annotations

import click

from ..registry import load_registry, parse_columns_spec, register_namespace
from .output import emit_json, is_json
from .resolve import CliError, get_root

json_option = click.option("--format", "fmt", type=click.Choice(["plain", "json"], case_sensitive=False),
                           default="plain", show_default=True)


@click.group("namespace")
def namespace_group() -> None:
    """The namespace registry (registry.yaml)."""


@namespace_group.command("list")
@json_option
def list_cmd(fmt) -> None:
    """`ns: col1, col2` per namespace, sorted (R12)."""
    reg = load_registry(get_root(), required=False) or {}
    if is_json(fmt):
        emit_json({ns: reg[ns] for ns in sorted(reg)})
        return
    for ns in sorted(reg):
        click.echo(f"{ns}: {', '.join(c['name'] for c in reg[ns]['columns'])}")


@namespace_group.command("show")
@click.argument("name")
@json_option
def show_cmd(name, fmt) -> None:
    """Name, owner, description and `  - col: type` lines; unknown namespace -> exit 1 (R12, C5)."""
    reg = load_registry(get_root(), required=False) or {}
    if name not in reg:
        raise CliError(f"Namespace {name!r} is not registered.",
                       hint="Run `usr namespace list`, or register it with `usr namespace register`.")
    entry = reg[name]
    if is_json(fmt):
        emit_json({"name": name, **entry})
        return
    click.echo(f"name: {name}")
    click.echo(f"owner: {entry.get('owner') or ''}")
    click.echo(f"description: {entry.get('description') or ''}")
    click.echo("columns:")
    for c in entry["columns"]:
        click.echo(f"  - {c['name']}: {c['type']}")


@namespace_group.command("register")
@click.argument("name")
@click.option("--columns", "spec", required=True,
              help="name:type items, e.g. 'mock__score:float64,mock__s:struct<a:int64,b:string>' (R7).")
@click.option("--owner", help="Owner of the namespace.")
@click.option("--description", help="What the namespace holds.")
@click.option("--overwrite", is_flag=True, help="Replace an existing entry wholesale.")
def register_cmd(name, spec, owner, description, overwrite) -> None:
    """Register a namespace and its columns (R10)."""
    reg = register_namespace(get_root(), name, parse_columns_spec(spec), owner=owner, description=description,
                             overwrite=overwrite)
    cols = reg[name]["columns"]
    click.echo(f"Registered namespace {name}: {', '.join(c['name'] + ':' + c['type'] for c in cols)}")


COMMANDS = [namespace_group]
