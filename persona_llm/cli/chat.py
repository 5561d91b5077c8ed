"""`chat` (interactive, streamed) and `ask` (one question, for scripts) over `persona_llm.chat.SegmentChat`.

Exit codes: 0 answered (a refusal is an answer), 2 bad input or configuration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from persona_llm.cli.app import (
    LlmModelOption,
    LlmOption,
    LlmUrlOption,
    ThreadsOption,
    app,
    console,
    fail,
    llm_settings_or_fail,
    out_console,
)
from persona_llm.errors import PersonaLLMError

StrategyOption = Annotated[
    str,
    typer.Option(
        "--strategy",
        help="auto (tool calls when the backend declares them reliable, else router), router, or tools.",
    ),
]
MemoryOption = Annotated[
    str,
    typer.Option("--memory", help="Conversation memory: memory, sqlite (in the cache folder), or a SQLite file path."),
]
ConversationOption = Annotated[
    str | None, typer.Option("--conversation", help="Continue this conversation id (with --memory sqlite or a file).")
]
TargetArgument = Annotated[
    Path,
    typer.Argument(help="A workspace (its published run) or a run directory.", metavar="[WORKSPACE|RUN]"),
]

HELP = """Ask about the run's segments, personas and customer texts. Commands:
  /open N      show cited text N of the last answer in full (or /open TEXT_ID)
  /new         start a new conversation
  /quit        leave (Ctrl-D too)"""


def _segment_chat(target: Path, strategy: str, memory: str, llm: Any, llm_url: Any, llm_model: Any, threads: Any) -> Any:
    from persona_llm.chat import SegmentChat
    from persona_llm.runs.workspace import resolve_run

    if strategy not in ("auto", "router", "tools"):
        fail(PersonaLLMError(f"--strategy {strategy!r}: use auto, router or tools"))
    try:
        run = resolve_run(target)  # a bad path fails here, before a model server starts
    except PersonaLLMError as exc:
        fail(exc)
    settings = llm_settings_or_fail(llm=llm, llm_url=llm_url, llm_model=llm_model, threads=threads)
    return SegmentChat(run, settings=settings, strategy=strategy, memory=memory)  # type: ignore[arg-type]


def _print_sources(answer: Any) -> None:
    for i, c in enumerate(answer.citations, 1):
        snippet = " ".join(c.text.split())
        snippet = snippet[:100] + ("…" if len(snippet) > 100 else "")
        out_console.print(f"[dim][{i}] {escape(c.text_id)} (segment {c.segment_id}): {escape(snippet)}[/dim]", soft_wrap=True)
    for q in answer.quotes:
        out_console.print(f'[cyan]"{escape(q.text)}"[/cyan] [dim]({escape(q.text_id)}, segment {q.segment_id})[/dim]', soft_wrap=True)
    checks = answer.checks
    if checks.removed:
        out_console.print(f"[yellow]removed after checking:[/yellow] {escape('; '.join(r.reason for r in checks.removed))}", soft_wrap=True)
    first = f"first token {answer.first_token_seconds:.1f}s, " if answer.first_token_seconds is not None else ""
    status = "passed" if checks.passed else ("re-asked" if checks.reasked else "failed")
    out_console.print(f"[dim]{answer.strategy} · checks {status} · {first}{answer.seconds:.1f}s[/dim]")


@app.command("chat")
def chat_command(
    target: TargetArgument = Path("."),
    strategy: StrategyOption = "auto",
    memory: MemoryOption = "memory",
    conversation: ConversationOption = None,
    llm: LlmOption = None,
    llm_url: LlmUrlOption = None,
    llm_model: LlmModelOption = None,
    threads: ThreadsOption = None,
) -> None:
    """Chat about a run's segments and personas: answers stream, every answer is checked, citations can be opened."""
    import uuid

    from persona_llm.chat import FinalEvent, StatusEvent, TokenEvent

    chat = _segment_chat(target, strategy, memory, llm, llm_url, llm_model, threads)
    conversation_id = conversation or uuid.uuid4().hex[:12]
    last: Any = None
    try:
        console.print("[dim]starting the model…[/dim]")
        chat.open()
        console.print(f"[dim]{escape(str(chat.tools_.rundir.path))} · {chat.strategy_} strategy · conversation {conversation_id}[/dim]")
        console.print(f"[dim]{escape(HELP)}[/dim]")
        while True:
            try:
                question = input("\nyou> ").strip()
            except (EOFError, KeyboardInterrupt):
                break
            if not question:
                continue
            if question in ("/quit", "/exit"):
                break
            if question == "/help":
                out_console.print(escape(HELP))
                continue
            if question == "/new":
                conversation_id, last = uuid.uuid4().hex[:12], None
                out_console.print(f"[dim]new conversation {conversation_id}[/dim]")
                continue
            if question.startswith("/open"):
                _open_citation(last, question.removeprefix("/open").strip())
                continue
            streamed = ""
            out_console.print("[bold]assistant>[/bold] ", end="")
            for event in chat.stream(question, conversation_id):
                if isinstance(event, TokenEvent):
                    streamed += event.text
                    out_console.print(escape(event.text), end="", soft_wrap=True)
                elif isinstance(event, StatusEvent):
                    if streamed:
                        out_console.print()
                        streamed = ""
                    out_console.print(f"[dim]({escape(event.text)})[/dim]")
                elif isinstance(event, FinalEvent):
                    last = event.answer
                    if streamed.strip() != last.answer.strip():
                        # A re-ask or a removal changed it, or it was a refusal: show what was checked.
                        out_console.print(("\n" if streamed else "") + escape(last.answer), soft_wrap=True)
                    else:
                        out_console.print()
                    _print_sources(last)
    except PersonaLLMError as exc:
        fail(exc)
    finally:
        chat.close()


def _open_citation(answer: Any, which: str) -> None:
    if answer is None or not answer.citations:
        out_console.print("[dim]no citations in the last answer[/dim]")
        return
    chosen = None
    if which.isdigit() and 1 <= int(which) <= len(answer.citations):
        chosen = answer.citations[int(which) - 1]
    else:
        chosen = next((c for c in answer.citations if c.text_id == which), None)
    if chosen is None:
        out_console.print(f"[dim]no citation {escape(which)!s}; 1-{len(answer.citations)} or a text id[/dim]")
        return
    out_console.print(f"[bold]{escape(chosen.text_id)}[/bold] (segment {chosen.segment_id})")
    out_console.print(escape(chosen.text), soft_wrap=True)


@app.command("ask")
def ask_command(
    target: Annotated[Path, typer.Argument(help="A workspace (its published run) or a run directory.", metavar="RUN")],
    question: Annotated[str, typer.Argument(help="The question.")],
    as_json: bool = typer.Option(False, "--json", help="Print the checked answer as JSON (ChatAnswer)."),
    strategy: StrategyOption = "auto",
    memory: MemoryOption = "memory",
    conversation: ConversationOption = None,
    llm: LlmOption = None,
    llm_url: LlmUrlOption = None,
    llm_model: LlmModelOption = None,
    threads: ThreadsOption = None,
) -> None:
    """Ask one question about a run; the answer is checked before it is printed."""
    chat = _segment_chat(target, strategy, memory, llm, llm_url, llm_model, threads)
    try:
        with chat:
            answer = chat.ask(question, conversation)
    except PersonaLLMError as exc:
        fail(exc)
    if as_json:
        typer.echo(answer.model_dump_json(indent=2))
        return
    out_console.print(escape(answer.answer), soft_wrap=True)
    _print_sources(answer)
