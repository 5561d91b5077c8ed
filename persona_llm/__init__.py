"""persona-llm: evidence-backed marketing personas from what customers write."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "SegmentPipeline"]


def __getattr__(name: str) -> object:
    # Lazy: `import persona_llm` stays fast and the CLI starts without loading torch.
    if name == "SegmentPipeline":
        from persona_llm.pipeline import SegmentPipeline

        return SegmentPipeline
    raise AttributeError(name)
