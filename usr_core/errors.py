"""The one error hierarchy of USR (spec P1)."""
from __future__ import annotations


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
    def __init__(self, message: str = "", *, groups=None, casefold_groups=None, hint: str | None = None):
        super().__init__(message, hint=hint)
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
