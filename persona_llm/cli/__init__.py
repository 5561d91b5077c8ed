"""The `persona-llm` command line: a thin layer over `persona_llm.workflows`.

    app.py        the Typer app, consoles, shared options (--llm, --llm-url, --llm-model...), the error helper
    segment.py    segment, build, segments
    personas.py   personas, show, write-personas, doctor
    evaluate.py   eval, eval-suite
    workspace.py  history, publish, rollback, gc
    briefs.py     brief
    chat.py       chat, ask
    refresh.py    refresh, forget
    serve.py      serve, api-key
"""

from persona_llm.cli import briefs, chat, evaluate, personas, refresh, segment, serve, workspace
from persona_llm.cli.app import app

__all__ = ["app", "briefs", "chat", "evaluate", "personas", "refresh", "segment", "serve", "workspace"]


def main() -> None:  # pragma: no cover - console entry point
    app()
