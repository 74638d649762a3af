"""Root (C1) and dataset argument (C2) resolution."""
from __future__ import annotations

from pathlib import Path

import click

from ..errors import SequencesError
from ..layout import discover_datasets, normalize_dataset_id


class CliError(click.ClickException):
    """A one-line `ERROR:` with an optional `Hint:` and a chosen exit code."""

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int = 1):
        super().__init__(message)
        self.hint = hint
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        click.echo(f"ERROR: {self.message}", err=True)
        if self.hint:
            click.echo(f"Hint: {self.hint}", err=True)


class DatasetNotFound(CliError):
    """C5: dataset not found or ambiguous -> exit 1."""


def get_root() -> Path:
    """C1: --root, else $USR_ROOT; click already checked it is an existing directory."""
    ctx = click.get_current_context()
    root = (ctx.find_root().obj or {}).get("root")
    if root is None:
        raise click.UsageError("No root given: pass --root DIR or set USR_ROOT to an existing directory.")
    return Path(root)


def _records(root: Path, ds_id: str) -> bool:
    return (root / ds_id / "records.parquet").is_file()


def _from_path(root: Path, arg: str) -> str | None:
    """A dataset dir or its records.parquet; Dataset.open checks meta.md's `name: <id>` (L10)."""
    from .. import Dataset

    p = Path(arg).expanduser()
    if not p.exists():
        return None
    p = p.resolve()
    if p.is_file() and p.name == "records.parquet":
        p = p.parent
    if not p.is_dir():
        return None
    if not (p / "meta.md").is_file():
        raise DatasetNotFound(f"{arg!r} is not a USR dataset directory (no meta.md).",
                              hint="Pass a dataset id or the directory of a dataset under the root.")
    try:
        return Dataset.open(root, p).name
    except SequencesError as exc:
        raise DatasetNotFound(str(exc), hint=exc.hint) from None


def infer_from_cwd(root: Path) -> str | None:
    """C2: an omitted dataset argument is the dataset the working directory lies in."""
    try:
        rel = Path.cwd().resolve().relative_to(root.resolve())
    except ValueError:
        return None
    parts = rel.parts
    for depth in (2, 1):
        if len(parts) >= depth:
            cand = "/".join(parts[:depth])
            if _records(root, cand):
                return cand
    return None


def resolve_dataset(arg: str | None, *, must_exist: bool = True) -> str:
    """C2: id; bare name matching exactly one discovered X/name; path to a dataset dir or records.parquet."""
    root = get_root()
    if arg is None or str(arg).strip() == "":
        ds_id = infer_from_cwd(root)
        if ds_id is None:
            raise click.UsageError("Missing dataset argument (and the working directory is inside no dataset).")
        return ds_id
    arg = str(arg)
    try:
        ds_id = normalize_dataset_id(arg)
    except SequencesError:
        ds_id = None
    if ds_id is not None and (not must_exist or _records(root, ds_id)):
        return ds_id
    if ds_id is not None and "/" not in ds_id:
        matches = [d for d in discover_datasets(root) if d.split("/")[-1] == ds_id]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise DatasetNotFound(f"Dataset name {arg!r} is ambiguous: {', '.join(matches)}.",
                                  hint="Pass the full id, e.g. " + matches[0])
    found = _from_path(root, arg)
    if found is not None and _records(root, found):
        return found
    raise DatasetNotFound(f"Dataset {arg!r} not found under {root}.",
                          hint="Run `usr ls` to list datasets, or `usr init` to create one.")


def dataset(arg: str | None, *, must_exist: bool = True):
    ds_id = resolve_dataset(arg, must_exist=must_exist)
    from .. import Dataset

    return Dataset(get_root(), ds_id)


def command_line() -> str:
    """The command as typed, for meta.md notes."""
    import shlex
    import sys

    return shlex.join(["usr", *sys.argv[1:]])
