"""`usr` entry point: the root group (C1), command registration (C3) and exit codes (C5)."""
from __future__ import annotations

import os
import sys
import traceback

import click

from ..errors import DuplicateIDError, SequencesError
from . import maintenance_cmds, namespace_cmds, read_cmds, write_cmds

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_EXISTS, EXIT_MISSING, EXIT_ABORT = 0, 1, 2, 3, 4, 130


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", type=click.Path(exists=True, file_okay=False, dir_okay=True, resolve_path=True),
              envvar="USR_ROOT", show_envvar=True, help="USR root directory (holds registry.yaml and datasets).")
@click.option("--rich/--no-rich", "rich_", default=True, show_default=True,
              help="Allow rich tables on a terminal (only if the rich package is installed).")
@click.version_option(package_name="usr-dagster", prog_name="usr")
@click.pass_context
def cli(ctx: click.Context, root, rich_: bool) -> None:
    """USR: universal sequence records — datasets, overlays, registry and maintenance."""
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


def main(argv: list[str] | None = None) -> None:
    """Console script `usr`; maps exceptions to the exit codes of C5."""
    try:
        rv = cli.main(args=argv, prog_name="usr", standalone_mode=False)
        code = rv if isinstance(rv, int) else EXIT_OK
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        code = EXIT_ABORT
    except KeyboardInterrupt:
        click.echo("Aborted.", err=True)
        code = EXIT_ABORT
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except SequencesError as exc:
        _print_error(str(exc) or type(exc).__name__, getattr(exc, "hint", None))
        if isinstance(exc, DuplicateIDError):
            _print_groups(exc)
        code = EXIT_USAGE
    except FileExistsError as exc:
        _print_error(str(exc), "Remove the existing file or pick another destination.")
        code = EXIT_EXISTS
    except FileNotFoundError as exc:
        _print_error(str(exc), "Check the path.")
        code = EXIT_MISSING
    except BrokenPipeError:
        code = EXIT_OK
    except Exception as exc:  # internal error: one line unless USR_DEBUG asks for the traceback
        if os.environ.get("USR_DEBUG"):
            traceback.print_exc()
        _print_error(f"{type(exc).__name__}: {exc}", "Set USR_DEBUG=1 for a traceback.")
        code = EXIT_INTERNAL
    sys.exit(code)


if __name__ == "__main__":
    main()
