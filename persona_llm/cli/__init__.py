"""The `persona-llm` command line."""

from persona_llm.cli.segment import app, main

__all__ = ["app", "main"]
