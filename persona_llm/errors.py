"""Errors a user can act on: each names the file, row and field where it can."""

from __future__ import annotations


class PersonaLLMError(Exception):
    """Base class; the CLI prints these as one line instead of a traceback."""


class InputError(PersonaLLMError):
    """Bad input data: names the file and, where known, the row and column."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        self.path = path
        self.row = row
        self.column = column
        where = []
        if path is not None:
            where.append(str(path))
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        prefix = ": ".join([", ".join(where)]) if where else ""
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.message = message


class ConfigError(PersonaLLMError):
    """A parameter or configuration file is wrong."""


class BackendError(PersonaLLMError):
    """A model, store or server could not be reached or lacks a needed capability."""


class RunStoreError(PersonaLLMError):
    """A run or workspace cannot be written or read as asked (not ours, not writable, nothing published)."""


class WorkspaceLockedError(RunStoreError):
    """Another live process is writing to the workspace."""

    def __init__(self, message: str, *, pid: int | None) -> None:
        super().__init__(message)
        self.pid = pid


class RunNotPublishedError(RunStoreError):
    """A run was written but not published, because a step failed; it stays in the workspace."""

    def __init__(self, message: str, *, run_name: str) -> None:
        super().__init__(message)
        self.run_name = run_name
