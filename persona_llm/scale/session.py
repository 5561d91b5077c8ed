"""What the Ray workers' helpers need from the executor that owns the Ray session (RayExecutor)."""

from __future__ import annotations

from types import ModuleType
from typing import Protocol

from persona_llm.scale.settings import ScaleSettings


class RaySession(Protocol):
    """A joined or started Ray, and the settings that size the actors run on it."""

    settings: ScaleSettings

    def start(self) -> ModuleType:
        """Join or start Ray (once); the `ray` module."""
        ...

    def cluster_resources(self) -> dict[str, float]:
        """The cluster's resources ("CPU", "GPU", ...)."""
        ...
