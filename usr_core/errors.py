"""The one error hierarchy of USR (spec P1)."""
from __future__ import annotations


class SequencesError(Exception):
    """Base class of every USR error. `hint` tells the user how to fix it."""

    def __init__(self, message: str = "", *, hint: str | None = None):
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:  # message only; the CLI prints the hint on its own line
        return super().__str__()


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
