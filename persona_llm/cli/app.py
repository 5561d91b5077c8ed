"""The Typer app every command registers on, the consoles, the shared options and the one error helper.

Errors a user can fix (bad input, bad configuration, unreachable backends, a locked workspace) print as
one unwrapped line and exit with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(
    help="Turn what customers write into evidence-backed marketing personas.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
#: Progress and errors (stderr; soft_wrap so a long error stays one line a script can grep).
console = Console(stderr=True, soft_wrap=True, highlight=False)
#: Results (stdout).
out_console = Console()


def fail(exc: Exception, code: int = 2) -> NoReturn:
    """Print `exc` as one line and exit. Messages quote TOML tables like [columns]: escaped, or rich
    would take them for markup and drop them."""
    console.print(f"[bold red]error:[/] {escape(str(exc))}")
    raise typer.Exit(code=code)


# -- options shared by every command that talks to an LLM ---------------------------------------------

LLM_HELP = "Generative backend: embedded (llama.cpp, CPU, default), vllm, or openai (any compatible URL)."
LlmOption = Annotated[str | None, typer.Option("--llm", help=LLM_HELP)]
LlmUrlOption = Annotated[str | None, typer.Option("--llm-url", help="Base URL (…/v1) of an OpenAI-compatible server.")]
LlmModelOption = Annotated[
    str | None, typer.Option("--llm-model", help="Model name (embedded: qwen-1.5b, qwen-0.5b; else the server's).")
]
ApiKeyEnvOption = Annotated[str | None, typer.Option("--api-key-env", help="Environment variable holding the API key.")]
ThreadsOption = Annotated[int | None, typer.Option("--threads", help="Embedded: llama.cpp threads (default: the free cores).")]
WriterAgentOption = Annotated[
    str | None,
    typer.Option(
        "--agent",
        help="Persona writer agent: a name in agents/ or a .toml path. persona_writer (default); "
        "persona_writer_hints: the model names only what the texts say about who the customers are and "
        "attribute columns become estimates by code.",
    ),
]
JudgeLlmOption = Annotated[str | None, typer.Option("--judge-llm", help="The judge's backend (default: as --llm).")]
JudgeLlmUrlOption = Annotated[str | None, typer.Option("--judge-llm-url", help="The judge's server URL.")]
JudgeLlmModelOption = Annotated[str | None, typer.Option("--judge-llm-model", help="The judge's model.")]

# -- where the work runs (persona_llm.scale) --------------------------------------------------------------

ExecutorOption = Annotated[
    str | None,
    typer.Option(
        "--executor",
        help="Where embedding, persona and brief writing run: local (this process, default) or ray "
        "(pip install 'persona-llm\\[cluster]'). Also \\[scale] executor in --config.",
    ),
]
RayAddressOption = Annotated[
    str | None,
    typer.Option("--ray-address", help="Ray cluster to join: auto (this node's), ray://HOST:10001 (default: start Ray here)."),
]
LlmUrlsOption = Annotated[
    str | None,
    typer.Option(
        "--llm-urls",
        help="Comma-separated OpenAI-compatible endpoints serving the same model (a vLLM server per GPU "
        "node); with --executor ray, segments (or briefs) are spread over them.",
    ),
]


def url_list(value: str | None) -> list[str] | None:
    """--llm-urls as a list (None when not given)."""
    return [u.strip() for u in value.split(",") if u.strip()] if value else None


ForceOption = Annotated[
    bool, typer.Option("--force", help="Replace the run directory at --out (only ever a persona-llm run).")
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q")]
RunArgument = Annotated[Path, typer.Argument(help="A workspace (its published run) or a run directory.", metavar="RUN")]
WorkspaceArgument = Annotated[Path, typer.Argument(help="A persona-llm workspace.", metavar="WORKSPACE")]


def llm_settings_or_fail(**options: Any) -> Any:
    from persona_llm.errors import PersonaLLMError
    from persona_llm.workflows import llm_settings

    try:
        return llm_settings(**options)
    except PersonaLLMError as exc:
        fail(exc)
