"""persona-llm: evidence-backed marketing personas from what customers write.

The folders read like the design, bottom layer first:
    schema/      the records a run holds (segments, personas, manifest, frame columns)
    common/      helpers that must agree everywhere (text matching, demographics, vectors)
    runs/        the run store: one run directory type, workspaces of versioned runs, atomic publish
    segment/     the segment stages (ingest, clean, embed, users, reduce, cluster, describe, store)
                 and the pipeline that chains them
    llm/         OpenAI-compatible chat backends (embedded llama.cpp, vLLM, any URL)
    agents/      agent definitions (role, prompt, tools, output schema) read from agents/*.toml
    personas/    persona writing: prompts, gates, writer, report
    evaluation/  metrics, suites and the eval runner
    workflows.py segment / write_personas / build / evaluate as library functions
    server/      the HTTP API and web page over a workspace (FastAPI)
    cli/         the `persona-llm` command line over the workflows
"""

from __future__ import annotations

import importlib.metadata

try:  # pyproject.toml is the one source of the version
    __version__ = importlib.metadata.version("persona-llm")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    __version__ = "0+unknown"

__all__ = ["__version__"]
