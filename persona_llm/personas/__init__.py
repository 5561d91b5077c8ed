"""Persona writing: segments in, evidence-backed personas out (prompts, gates, writer, report).

The Persona records live in persona_llm/schema/personas.py and are re-exported here, eagerly (cheap);
the writer is imported on first use, so reading personas does
not import the LLM client.
"""

from typing import Any

from persona_llm.schema.personas import (
    DemographicEstimate,
    Demographics,
    Persona,
    PersonaDraft,
    Provenance,
    Quote,
    export_json_schema,
    load_personas,
)

__all__ = [
    "DemographicEstimate",
    "Demographics",
    "Persona",
    "PersonaDraft",
    "PersonaWriter",
    "Provenance",
    "Quote",
    "export_json_schema",
    "load_personas",
    "write_personas",
]


def __getattr__(name: str) -> Any:
    if name in ("PersonaWriter", "write_personas"):
        from persona_llm.personas import writer

        return getattr(writer, name)
    raise AttributeError(name)
