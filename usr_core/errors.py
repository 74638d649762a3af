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
