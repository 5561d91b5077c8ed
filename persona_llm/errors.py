"""Errors a user can act on: each names the file, row and field where it can."""

from __future__ import annotations

from pathlib import Path
from typing import Any


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


class TooFewRowsError(InputError):
    """Too few rows (or users) were left to segment once the bad ones were rejected.

    `rejects` is the rejects frame (persona_llm/schema/frames.py) of the failed attempt: each rejected row
    with its stage, field and reason, so a run that fails keeps them. `rejects_path` is where they were
    written (the workflows write them beside the runs), or None.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        rejects: Any = None,
        rejects_path: Path | None = None,
    ) -> None:
        super().__init__(message, path=path)
        self.rejects = rejects
        self.rejects_path = rejects_path


class NoSegmentsError(InputError):
    """Clustering put no user in a segment, so there is nothing to describe or write personas for."""


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
