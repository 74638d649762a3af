"""`usr maintenance ...` (C3, spec §6). Gated operations run inside `ds.maintenance(reason=...)` (X1)."""
from __future__ import annotations

import click

from .output import emit_json, jsonable, status
from .resolve import command_line, dataset, get_root, resolve_dataset
from .write_cmds import allow_missing_option, confirm_or_abort

reason_option = click.option("--reason", help="Maintenance reason recorded in the event (default: the command).")
namespace_option = click.option("--namespace", required=True, help="Namespace of the overlay.")
json_option = click.option("--format", "fmt", type=click.Choice(["plain", "json"], case_sensitive=False),
                           default="plain", show_default=True)


def _reason(reason: str | None, sub: str) -> str:
    return reason or f"cli: usr maintenance {sub}"


def _report(result, fmt: str, plain: str) -> None:
    if fmt.lower() == "json":
        emit_json(result)
        return
    click.echo(plain)
    data = jsonable(result)
    if isinstance(data, dict):
        for k, v in data.items():
            click.echo(f"  {k}: {v}")


@click.group("maintenance")
def maintenance_group() -> None:
    """Maintenance operations: compaction, freeze, removal, dedupe, merge, log gardening."""


@maintenance_group.command("registry-freeze")
@click.argument("ds")
@reason_option
def registry_freeze_cmd(ds, reason) -> None:
    """Write the freeze file of the current registry and restamp the base (X5)."""
    d = dataset(ds)
    with d.maintenance(reason=_reason(reason, "registry-freeze")):
        path = d.freeze_registry()
    click.echo(f"Registry frozen: {path}")


@maintenance_group.command("overlay-compact")
@click.argument("ds")
@namespace_option
@reason_option
def overlay_compact_cmd(ds, namespace, reason) -> None:
    """Collapse an overlay's parts into _derived/<ns>.parquet (X2, newest non-null wins)."""
    d = dataset(ds)
    status(f"compacting {namespace} in {d.name}")
    with d.maintenance(reason=_reason(reason, "overlay-compact")):
        d.compact_overlay(namespace)
    click.echo(f"Compacted overlay {namespace} of {d.name}.")


@maintenance_group.command("overlay-refresh-metadata")
@click.argument("ds")
@namespace_option
@reason_option
def overlay_refresh_cmd(ds, namespace, reason) -> None:
    """Restamp a compact overlay with the current registry hashes (X4)."""
    d = dataset(ds)
    with d.maintenance(reason=_reason(reason, "overlay-refresh-metadata")):
        d.refresh_overlay_metadata(namespace)
    click.echo(f"Refreshed metadata of overlay {namespace} of {d.name}.")


@maintenance_group.command("overlay-remove")
@click.argument("ds")
@namespace_option
@click.option("--mode", type=click.Choice(["error", "delete", "archive"]), default="error", show_default=True,
              help="error: remove, fail if absent; delete: remove if present; archive: move to _derived/_archived/.")
@json_option
def overlay_remove_cmd(ds, namespace, mode, fmt) -> None:
    """Remove or archive an overlay (X3)."""
    d = dataset(ds)
    result = d.remove_overlay(namespace, mode=mode)
    _report(result, fmt, f"overlay-remove {namespace} ({mode}) on {d.name}:")


@maintenance_group.command("dedupe")
@click.argument("ds")
@click.option("--key", required=True, type=click.Choice(["id", "sequence", "sequence_norm", "sequence_ci"]),
              help="What makes two rows duplicates.")
@click.option("--keep", type=click.Choice(["keep-first", "keep-last"]), default="keep-first", show_default=True)
@click.option("--dry-run", is_flag=True, help="Only count duplicates.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@reason_option
@json_option
def dedupe_cmd(ds, key, keep, dry_run, yes, reason, fmt) -> None:
    """Drop duplicate base rows (X8)."""
    d = dataset(ds)
    if not dry_run:
        confirm_or_abort(f"Rewrite {d.records_path} without duplicate rows by {key} ({keep})?", yes)
    status(f"deduplicating {d.name} by {key}", fmt)
    with d.maintenance(reason=_reason(reason, "dedupe")):
        stats = d.dedupe(key=key, keep=keep, dry_run=dry_run)
    _report(stats, fmt, f"dedupe {d.name}{' (dry run)' if dry_run else ''}:")


@maintenance_group.command("merge")
@click.option("--dest", required=True, help="Destination dataset.")
@click.option("--src", required=True, help="Source dataset (its base rows only).")
@click.option("--require-same-columns", "columns_mode", flag_value="require-same", help="Same columns and types.")
@click.option("--union-columns", "columns_mode", flag_value="union", help="Union of columns (absent = NULL).")
@click.option("--if-duplicate", type=click.Choice(["error", "skip", "prefer-dest", "prefer-src"]), default="error",
              show_default=True, help="Policy for src ids already in dest.")
@click.option("--coerce-overlap", type=click.Choice(["none", "to-dest"]), default="none", show_default=True)
@click.option("--carry-namespace", "carry", multiple=True, help="Copy this src overlay for surviving rows; repeatable.")
@click.option("--avoid-casefold-dups/--no-avoid-casefold-dups", default=True, show_default=True,
              help="Drop src rows equal to a dest row up to case.")
@click.option("--dry-run", is_flag=True, help="Only count.")
@reason_option
@json_option
def merge_cmd(dest, src, columns_mode, if_duplicate, coerce_overlap, carry, avoid_casefold_dups, dry_run, reason,
              fmt) -> None:
    """Merge the base rows of SRC into DEST (X9)."""
    from .. import merge

    if columns_mode is None:
        raise click.UsageError("Pass --require-same-columns or --union-columns.")
    root = get_root()
    dest_id, src_id = resolve_dataset(dest), resolve_dataset(src)
    d = dataset(dest_id)
    status(f"merging {src_id} into {dest_id}", fmt)
    # merge opens the maintenance gate on dest itself (X1) with this reason
    preview = merge(root, dest_id, src_id, columns_mode=columns_mode, duplicate_policy=if_duplicate,
                    coerce_overlap=coerce_overlap, avoid_casefold_dups=avoid_casefold_dups,
                    carry_namespaces=list(carry), dry_run=dry_run, reason=_reason(reason, "merge"))
    if not dry_run:
        d.append_meta_note(f"Merged {src_id} into {dest_id}", command_line())
    _report(preview, fmt, f"merge {src_id} -> {dest_id}{' (dry run)' if dry_run else ''}:")


@maintenance_group.command("event-log-garden")
@click.argument("ds")
@click.option("--retain-last", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--write", is_flag=True, help="Archive the log and keep only the last lines (default: dry run).")
@click.option("--acknowledge-cursor-reset", is_flag=True,
              help="Confirm that offset-based log consumers must reseed (required with --write).")
@click.option("--skip-invalid", is_flag=True,
              help="Drop lines that are not event objects (torn, not JSON) instead of refusing; the archive keeps them.")
@reason_option
@json_option
def event_log_garden_cmd(ds, retain_last, write, acknowledge_cursor_reset, skip_invalid, reason, fmt) -> None:
    """Archive .events.log and keep its last lines (X11)."""
    if write and not acknowledge_cursor_reset:
        raise click.UsageError("--write needs --acknowledge-cursor-reset (log consumers tracking offsets must reseed).")
    d = dataset(ds)
    result = d.garden_event_log(retain_last=retain_last, write=write,
                                acknowledge_cursor_reset=acknowledge_cursor_reset, skip_invalid=skip_invalid,
                                reason=_reason(reason, "event-log-garden"))
    _report(result, fmt, f"event-log-garden {d.name}{'' if write else ' (dry run)'}:")


@maintenance_group.command("overlay-project")
@click.option("--src", required=True, help="Source dataset (its merged read view).")
@click.option("--dest", required=True, help="Destination dataset.")
@namespace_option
@click.option("--src-join", default="id", show_default=True, help="Join column in the source view.")
@click.option("--dest-join", default="id", show_default=True, help="Join column in the destination.")
@click.option("--columns", help="Comma-separated namespace columns to project (default: all).")
@click.option("--no-overwrite", is_flag=True, help="Fail instead of replacing existing columns.")
@allow_missing_option
@click.option("--dry-run", is_flag=True, help="Only count.")
@json_option
def overlay_project_cmd(src, dest, namespace, src_join, dest_join, columns, no_overwrite, allow_missing, dry_run,
                        fmt) -> None:
    """Copy one namespace from SRC's read view onto DEST as a compact overlay (X12)."""
    src_id, dest_id = resolve_dataset(src), resolve_dataset(dest)
    d = dataset(dest_id)
    cols = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    result = d.project_overlay(src_id, namespace, src_join=src_join, dest_join=dest_join, columns=cols,
                               overwrite=not no_overwrite, allow_missing=allow_missing, dry_run=dry_run)
    _report(result, fmt, f"overlay-project {namespace}: {src_id} -> {dest_id}{' (dry run)' if dry_run else ''}:")


COMMANDS = [maintenance_group]
