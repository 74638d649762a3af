"""`usr` entry point: the root group (C1), command registration (C3) and exit codes (C5)."""
from __future__ import annotations

import errno
import os
import sys
import traceback

import click

from ..errors import DuplicateIDError, EnvironmentFailure, SequencesError, environment_failure
from . import maintenance_cmds, namespace_cmds, read_cmds, write_cmds

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_EXISTS, EXIT_MISSING, EXIT_ENVIRONMENT, EXIT_ABORT = 0, 1, 2, 3, 4, 5, 130


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", type=click.Path(exists=True, file_okay=False, dir_okay=True, resolve_path=True),
              envvar="USR_ROOT", show_envvar=True, help="USR root directory (holds registry.yaml and datasets).")
@click.option("--rich/--no-rich", "rich_", default=True, show_default=True,
              help="Allow rich tables on a terminal (only if the rich package is installed).")
@click.version_option(package_name="usr-dagster", prog_name="usr")
@click.pass_context
def cli(ctx: click.Context, root, rich_: bool) -> None:
    """USR: universal sequence records — datasets, overlays, registry and maintenance.

    Rule ids in messages and help, like (O5) or (X2), are explained in docs/format.md of the
    repository. Exit codes: 0 ok, 1 dataset not found / internal error, 2 contract or usage error,
    3 file exists, 4 file not found, 5 environment error (disk full, permission denied), 130 aborted.
    """
    ctx.obj = {"root": root, "rich": rich_}


for _module in (read_cmds, write_cmds, namespace_cmds, maintenance_cmds):
    for _cmd in _module.COMMANDS:
        cli.add_command(_cmd)


def _print_error(message: str, hint: str | None = None) -> None:
    click.echo(f"ERROR: {message}", err=True)
    if hint:
        click.echo(f"Hint: {hint}", err=True)


def _print_groups(exc: DuplicateIDError) -> None:
    for label, groups in (("Duplicate", exc.groups), ("Case-insensitive duplicate", exc.casefold_groups)):
        for g in groups or []:
            if isinstance(g, dict):
                text = ", ".join(f"{k}={v}" for k, v in g.items())
            elif isinstance(g, (list, tuple)):
                fields = ("id", "count", "rows", "sequence")
                text = ", ".join(f"{k}={v}" for k, v in zip(fields, g)) if len(g) <= 4 else repr(g)
            else:
                text = str(g)
            click.echo(f"  {label}: {text}", err=True)


def environment_failure_of(exc: BaseException) -> EnvironmentFailure | None:
    """The environment failure (disk full, permission denied, ...) behind `exc`, following its cause chain."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, EnvironmentFailure):
            return cur
        what = str(exc) if isinstance(exc, SequencesError) and str(exc) else "The command could not finish"
        failure = environment_failure(cur, what) if isinstance(cur, OSError) else None
        if failure is not None:
            return failure
        cur = cur.__cause__ or cur.__context__
    return None


def _environment_hint(failure: EnvironmentFailure) -> str | None:
    """A permission problem names the path it hit: the root, an input or an export target."""
    if failure.errno in (errno.EACCES, errno.EPERM) and failure.path:
        return (f"Check the permissions of {failure.path}: this user must be able to read it and write in its "
                "folder (or run as the owner, or choose another path).")
    return failure.cli_hint or failure.hint


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and map exceptions to exit codes (C5; 5 = environment error, see README)."""
    try:
        rv = cli.main(args=argv, prog_name="usr", standalone_mode=False)
        return rv if isinstance(rv, int) else EXIT_OK
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("Aborted.", err=True)
        return EXIT_ABORT
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:
        failure = environment_failure_of(exc)
        if failure is not None:
            _print_error(str(failure), _environment_hint(failure))
            return EXIT_ENVIRONMENT
        if isinstance(exc, SequencesError):
            _print_error(str(exc) or type(exc).__name__, exc.cli_hint or exc.hint)
            if isinstance(exc, DuplicateIDError):
                _print_groups(exc)
            return EXIT_USAGE
        if isinstance(exc, FileExistsError):
            _print_error(str(exc), "Remove the existing file or pick another destination.")
            return EXIT_EXISTS
        if isinstance(exc, FileNotFoundError):
            _print_error(str(exc), "Check the path.")
            return EXIT_MISSING
        if os.environ.get("USR_DEBUG"):  # internal error: one line unless USR_DEBUG asks for the traceback
            traceback.print_exc()
        _print_error(f"{type(exc).__name__}: {exc}", "Set USR_DEBUG=1 for a traceback.")
        return EXIT_INTERNAL


def main(argv: list[str] | None = None) -> None:
    """Console script `usr`."""
    sys.exit(run(argv))


if __name__ == "__main__":
    main()
