"""The one error hierarchy of USR (spec P1)."""
from __future__ import annotations

import errno as _errno
import os as _os


class SequencesError(Exception):
    """Base class of every USR error. `hint` tells the user how to fix it in Python terms; `cli_hint`, when
    given, is the same advice in `usr` command-line terms (the CLI prints it instead of `hint`)."""

    def __init__(self, message: str = "", *, hint: str | None = None, cli_hint: str | None = None):
        super().__init__(message)
        self.hint = hint
        self.cli_hint = cli_hint

    def __str__(self) -> str:  # message only; the CLI prints the hint on its own line
        return super().__str__()


def option_hint(template: str, option: str, value=True) -> dict[str, str]:
    """`hint`/`cli_hint` keyword arguments naming one option in both syntaxes, e.g.
    option_hint("Pass {} to drop them.", "allow_missing") -> allow_missing=True | --allow-missing."""
    flag = "--" + option.replace("_", "-")
    cli = flag if value is True else f"--no-{flag[2:]}" if value is False else f"{flag} {value}"
    return {"hint": template.format(f"{option}={value!r}"), "cli_hint": template.format(cli)}


class ValidationError(SequencesError):
    pass


class SchemaError(ValidationError):
    pass


class NamespaceError(ValidationError):
    pass


class AlphabetError(ValidationError):
    pass


class DuplicateIDError(ValidationError):
    def __init__(self, message: str = "", *, groups=None, casefold_groups=None, hint: str | None = None,
                 cli_hint: str | None = None):
        super().__init__(message, hint=hint, cli_hint=cli_hint)
        self.groups = list(groups or [])
        self.casefold_groups = list(casefold_groups or [])


class LockTimeoutError(SequencesError):
    def __init__(self, message: str = "", *, path=None, holder_pid: int | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.path = path
        self.holder_pid = holder_pid


class RegistryMismatchError(SchemaError):
    """V2: an overlay's stamped hash (`field`, e.g. usr:registry_hash) is not among the `allowed` ones."""

    def __init__(self, message: str = "", *, field: str = "", path=None, got: str | None = None,
                 allowed=(), hint: str | None = None):
        super().__init__(message, hint=hint)
        self.field = field
        self.path = path
        self.got = got
        self.allowed = list(allowed)


class TypeMismatchError(SchemaError):
    """O5/O6/O11: a column's type does not conform to its registered type."""

    def __init__(self, message: str = "", *, column: str = "", got=None, expected: str = "", hint: str | None = None):
        super().__init__(message, hint=hint)
        self.column = column
        self.got = got
        self.expected = expected


class ClockError(SequencesError):
    """A new stamp cannot be placed after the newest existing one (an overlay dated at the end of time)."""


class UnsafePathError(SequencesError):
    """A path USR would write, rename or delete is a symbolic link (or leads out of the root): refused."""

    def __init__(self, message: str = "", *, path=None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.path = path


class EnvironmentFailure(SequencesError):
    """The machine refused an operation (disk full, permission denied, read-only file system, too many open
    files). Nothing was changed; `errno` is the OS error number."""

    def __init__(self, message: str = "", *, errno: int | None = None, path=None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.errno = errno
        self.path = path


def environment_failure(exc: BaseException, what: str) -> "EnvironmentFailure | None":
    """`exc` as an EnvironmentFailure when the machine refused the operation (ENOSPC, EDQUOT, EACCES, EPERM,
    EROFS, EMFILE, ENFILE), else None. Use: `failure = environment_failure(exc, "Cannot write X")`, then
    `raise failure from exc` or a bare `raise` when it is None."""
    hints = {_errno.ENOSPC: "Free disk space (or raise the quota) and run the command again.",
             _errno.EDQUOT: "Free disk space (or raise the quota) and run the command again.",
             _errno.EACCES: "Give this user write permission on the root (or run as its owner).",
             _errno.EPERM: "Give this user write permission on the root (or run as its owner).",
             _errno.EROFS: "The file system is read-only; remount it read-write or use another root.",
             _errno.EMFILE: "Raise the open-file limit (ulimit -n) and run the command again.",
             _errno.ENFILE: "Raise the open-file limit (ulimit -n) and run the command again."}
    if isinstance(exc, EnvironmentFailure):
        return exc
    if not isinstance(exc, OSError):
        return None
    code = exc.errno
    if code is None:  # pyarrow raises OSError("... error: No space left on device") without an errno
        code = next((c for c in hints if _os.strerror(c) in str(exc)), None)
    if code not in hints:
        return None
    path = exc.filename
    return EnvironmentFailure(f"{what}: {_os.strerror(code)}" + (f" ({path})." if path else "."), errno=code,
                              path=path, hint=hints[code])
