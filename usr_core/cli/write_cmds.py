"""Write commands (C3): init, import, attach, delete, restore, state, materialize, snapshot."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import SchemaError
from ..overlays.inputs import check_csv_header, read_input
from ..overlays.write import prepare_attach_table
from ..registry import load_registry
from .output import emit_json, emit_table, format_option, is_json, jsonable, status, table_rows
from .resolve import CliError, command_line, dataset


def confirm_or_abort(question: str, yes: bool) -> None:
    """`--yes` skips the prompt; without it a non-interactive stdin aborts (exit 130) instead of guessing."""
    if yes:
        return
    if not sys.stdin.isatty():
        click.echo("ERROR: confirmation needed but stdin is not a terminal.", err=True)
        click.echo("Hint: pass --yes to confirm non-interactively.", err=True)
        raise click.exceptions.Abort()
    click.confirm(question, abort=True)


def ids_options(f):
    f = click.option("--id-file", "id_file", type=click.Path(dir_okay=False, path_type=Path),
                     help="File with one id per line.")(f)
    f = click.option("--id", "ids", multiple=True, help="Record id(s); repeatable, comma-separated.")(f)
    return f


def collect_ids(ids: tuple[str, ...], id_file: Path | None) -> list[str]:
    out = [part.strip() for item in ids for part in item.split(",") if part.strip()]
    if id_file is not None:
        out += [line.strip() for line in id_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not ids and id_file is None:
        raise click.UsageError("Pass --id ID (repeatable, comma-separated) or --id-file FILE.")
    return out


allow_missing_option = click.option("--allow-missing", is_flag=True, help="Ignore ids/keys not in the dataset.")


@click.command("init")
@click.argument("ds")
@click.option("--source", default="", help="Provenance recorded in meta.md and the init event.")
@click.option("--notes", default="", help="Free-text notes for meta.md.")
def init_cmd(ds, source, notes) -> None:
    """Create an empty dataset (registry.yaml required); an existing dataset -> exit 3."""
    d = dataset(ds, must_exist=False)
    if d.records_path.exists():
        raise CliError(f"Dataset {d.name} already exists at {d.dir}.", exit_code=3,
                       hint=f"Add rows with `usr import {d.name} ...`, or pick another name.")
    d.init(source=source, notes=notes)
    click.echo(f"Initialized dataset {d.name} at {d.dir}")


IDENTITY_TEXT_COLUMNS = ("id", "bio_type", "sequence", "alphabet", "source")


def _read_input(path: Path, fmt: str):
    """CSV/JSONL -> Arrow table; identity columns are read as strings so nothing is reinterpreted. Lines longer
    than the reader's block grow the block (up to the file size) instead of failing."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson

    if not path.is_file():
        raise FileNotFoundError(f"Input not found: {path}")
    if fmt == "csv":
        check_csv_header(path)  # empty file or a header too wide to parse: a clear error first
    size, block = path.stat().st_size, 1 << 22
    while True:
        try:
            if fmt == "csv":
                return pacsv.read_csv(path, read_options=pacsv.ReadOptions(block_size=block),
                                      convert_options=pacsv.ConvertOptions(
                                          column_types={c: pa.string() for c in IDENTITY_TEXT_COLUMNS},
                                          strings_can_be_null=False))
            return pajson.read_json(path, read_options=pajson.ReadOptions(block_size=block))
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            if "straddl" in str(exc) and block <= size:
                block = min(block * 16, size + 1, 2**31 - 1)
                continue
            shape = "a header line and a `sequence` column" if fmt == "csv" else "one JSON object per line"
            raise SchemaError(f"Cannot parse {path} as {fmt.upper()}: {exc}",
                              hint=f"Check that {path.name} is UTF-8 {fmt.upper()} with {shape}.") from exc


@click.command("import")
@click.argument("ds")
@click.option("--from", "from_", required=True, type=click.Choice(["csv", "jsonl"], case_sensitive=False),
              help="Input format.")
@click.option("--path", "path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Input file with a `sequence` column (optional bio_type, alphabet, id, created_at). The "
                   "records' `source` is set to this path: a `source` column in the file is replaced (S6).")
@click.option("--bio-type", default="dna", show_default=True, help="Default bio_type for rows without one.")
@click.option("--alphabet", default="dna_4", show_default=True, help="Default alphabet for rows without one.")
def import_cmd(ds, from_, path, bio_type, alphabet) -> None:
    """Import sequences into a dataset (S6-S9); source = the input path."""
    d = dataset(ds)
    status(f"reading {path}")
    table = _read_input(path, from_.lower())
    status(f"importing {table.num_rows} rows into {d.name}")
    n = d.import_rows(table, default_bio_type=bio_type, default_alphabet=alphabet, source=str(path))
    d.append_meta_note(f"Imported {n} records from {path}", command_line())
    click.echo(f"Imported {n} records into {d.name}.")


@click.command("attach")
@click.argument("ds")
@click.option("--path", "path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Input table: .parquet, .csv, .jsonl or .json.")
@click.option("--namespace", required=True, help="Registered namespace.")
@click.option("--key", default="id", show_default=True, help="id | sequence | sequence_norm | sequence_ci.")
@click.option("--key-col", help="Input column holding the key (default: sequence for sequence keys, else the key).")
@click.option("--columns", help="Comma-separated input columns to attach (default: all but the key column).")
@click.option("--as-part", is_flag=True,
              help="Append the columns as a new overlay part (O6) instead of rewriting the compact overlay (O5): "
                   "parallel-safe, newest non-NULL value wins; `usr maintenance overlay-compact` folds parts.")
@click.option("--allow-overwrite", is_flag=True, help="Replace existing columns of the compact overlay.")
@allow_missing_option
@click.option("--parse-json/--no-parse-json", default=True, show_default=True,
              help="Parse strings starting with [ or { as JSON.")
@click.option("--backend", type=click.Choice(["pyarrow", "duckdb"]), default="pyarrow", show_default=True)
@click.option("--note", default="", help="Free-text note for the attach event.")
def attach_cmd(ds, path, namespace, key, key_col, columns, as_part, allow_overwrite, allow_missing, parse_json,
               backend, note) -> None:
    """Attach columns to a dataset: the compact overlay of a namespace (O5), or with --as-part a new part (O6)."""
    d = dataset(ds)
    cols = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    if as_part:
        if allow_overwrite:
            raise click.UsageError("--as-part needs no --allow-overwrite: a part's non-NULL values always win over "
                                   "older ones (O9).")
        if backend != "pyarrow":
            raise click.UsageError("--as-part reads the input with pyarrow; drop --backend duckdb.")
        status(f"appending {path} as a part of {namespace} to {d.name}")
        written = _write_part(d, path, namespace, key, key_col, cols, allow_missing, parse_json, note)
        where = f": {written.path.name}" if written.path is not None else " (no rows matched, nothing written)"
        d.append_meta_note(f"Appended a part of namespace {namespace} ({written.rows} rows) from {path}",
                           command_line())
        click.echo(f"Appended {written.rows} rows to {d.name} as a part of namespace {namespace}{where}.")
        return
    status(f"attaching {path} as {namespace} to {d.name}")
    n = d.attach(path, namespace, key=key, key_col=key_col, columns=cols, allow_overwrite=allow_overwrite,
                 allow_missing=allow_missing, parse_json=parse_json, backend=backend, note=note)
    d.append_meta_note(f"Attached namespace {namespace} ({n} rows) from {path}", command_line())
    click.echo(f"Attached {n} rows to {d.name} as namespace {namespace}.")


def _write_part(d, path: Path, namespace: str, key: str, key_col, cols, allow_missing: bool, parse_json: bool,
                note: str):
    """The attach input read and coerced to the registry types exactly as attach does, then `Dataset.write_part`."""
    raw = read_input(path, key_col or ("sequence" if key != "id" else key))
    table = prepare_attach_table(namespace, raw, key=key, key_col=key_col, columns=cols,
                                 reg=load_registry(d.root, required=True), coerce=True, parse_json=parse_json)
    event_args = {"input": str(path), **({"note": note} if note else {})}
    return d.write_part(namespace, table, key=key, allow_missing=allow_missing, event_args=event_args)


@click.command("delete")
@click.argument("ds", required=False)
@ids_options
@click.option("--reason", help="Why the records are deleted.")
@allow_missing_option
def delete_cmd(ds, ids, id_file, reason, allow_missing) -> None:
    """Tombstone records (T2); they disappear from reads."""
    d = dataset(ds)
    n = d.tombstone(collect_ids(ids, id_file), reason=reason, allow_missing=allow_missing)
    click.echo(f"Deleted {n} record(s) in {d.name}.")


@click.command("restore")
@click.argument("ds", required=False)
@ids_options
@allow_missing_option
def restore_cmd(ds, ids, id_file, allow_missing) -> None:
    """Restore tombstoned records (T2)."""
    d = dataset(ds)
    n = d.restore(collect_ids(ids, id_file), allow_missing=allow_missing)
    click.echo(f"Restored {n} record(s) in {d.name}.")


@click.group("state")
def state_group() -> None:
    """Record state (usr_state): masked, qc_status, split, supersedes, lineage."""


@state_group.command("set")
@click.argument("ds", required=False)
@ids_options
@click.option("--masked/--unmasked", default=None, help="Mask or unmask the records.")
@click.option("--qc-status", help="pass | fail | warn | unknown")
@click.option("--split", help="train | val | test | holdout")
@click.option("--supersedes", help="Id (or text) this record supersedes.")
@click.option("--lineage", multiple=True, help="Lineage entry; repeatable.")
@allow_missing_option
def state_set_cmd(ds, ids, id_file, masked, qc_status, split, supersedes, lineage, allow_missing) -> None:
    """Upsert the given state fields for records (U3)."""
    d = dataset(ds)
    n = d.set_state(collect_ids(ids, id_file), masked=masked, qc_status=qc_status, split=split,
                    supersedes=supersedes, lineage=list(lineage) or None, allow_missing=allow_missing)
    click.echo(f"Updated state of {n} record(s) in {d.name}.")


@state_group.command("clear")
@click.argument("ds", required=False)
@ids_options
@allow_missing_option
def state_clear_cmd(ds, ids, id_file, allow_missing) -> None:
    """Reset state of records to unmasked / empty (U4)."""
    d = dataset(ds)
    n = d.clear_state(collect_ids(ids, id_file), allow_missing=allow_missing)
    click.echo(f"Cleared state of {n} record(s) in {d.name}.")


@state_group.command("get")
@click.argument("ds", required=False)
@ids_options
@allow_missing_option
@format_option
def state_get_cmd(ds, ids, id_file, allow_missing, fmt) -> None:
    """State of records, one row per id in request order (U5)."""
    result = dataset(ds).get_state(collect_ids(ids, id_file), allow_missing=allow_missing)
    rows = table_rows(result)
    rows = jsonable(result) if rows is None else rows
    if is_json(fmt):
        emit_json(rows)
    else:
        cols = list(rows[0].keys()) if rows else ["id"]
        emit_table(rows, cols, fmt)


@click.command("materialize")
@click.argument("ds", required=False)
@click.option("--namespaces", help="Comma-separated namespaces (default: all but usr and usr_state).")
@click.option("--drop-overlays", is_flag=True, help="Delete the materialized overlays afterwards.")
@click.option("--archive-overlays", is_flag=True, help="Move the materialized overlays to _derived/_archived/.")
@click.option("--drop-deleted", is_flag=True, help="Physically remove tombstoned rows.")
@click.option("--snapshot-before", is_flag=True, help="Snapshot records.parquet first.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--reason", help="Maintenance reason (default: the command).")
def materialize_cmd(ds, namespaces, drop_overlays, archive_overlays, drop_deleted, snapshot_before, yes,
                    reason) -> None:
    """Fold overlays into records.parquet (X6); maintenance-gated."""
    if drop_overlays and archive_overlays:
        raise click.UsageError("--drop-overlays and --archive-overlays are mutually exclusive.")
    d = dataset(ds)
    ns = [n.strip() for n in namespaces.split(",") if n.strip()] if namespaces else None
    confirm_or_abort(f"Materialize {', '.join(ns) if ns else 'all overlays'} into {d.records_path}?", yes)
    if snapshot_before:
        d.snapshot()
    status(f"materializing {d.name}")
    with d.maintenance(reason=reason or "cli: usr materialize"):
        d.materialize(namespaces=ns, keep_overlays=not drop_overlays, archive_overlays=archive_overlays,
                      drop_deleted=drop_deleted)
    d.append_meta_note(f"Materialized {', '.join(ns) if ns else 'overlays'}", command_line())
    click.echo(f"Materialized {d.name}.")


@click.command("snapshot")
@click.argument("ds", required=False)
def snapshot_cmd(ds) -> None:
    """Copy records.parquet to _snapshots/ (X7)."""
    d = dataset(ds)
    result = d.snapshot()
    d.append_meta_note("Snapshot saved", command_line())
    click.echo(f"Snapshot saved{': ' + str(result) if result else ''}")


COMMANDS = [init_cmd, import_cmd, attach_cmd, delete_cmd, restore_cmd, state_group, materialize_cmd, snapshot_cmd]
