"""`brief`: a campaign brief, a day-in-the-life narrative or a messaging matrix for a run's personas."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from persona_llm.cli.app import (
    ApiKeyEnvOption,
    LlmModelOption,
    LlmOption,
    LlmUrlOption,
    QuietOption,
    RunArgument,
    ThreadsOption,
    app,
    console,
    fail,
)
from persona_llm.errors import ConfigError, PersonaLLMError


@app.command("brief")
def brief_command(
    run: RunArgument,
    goal: str = typer.Option(..., "--goal", help='What the brief is for, e.g. "launch of the annual plan".'),
    persona: str | None = typer.Option(
        None, "--persona", help="Persona id or segment id (messaging: a comma-separated list or all; default all)."
    ),
    kind: str = typer.Option("campaign", "--kind", help="campaign, narrative or messaging."),
    channel: str | None = typer.Option(None, "--channel", help="The main channel, e.g. email."),
    fmt: str = typer.Option("md", "--format", "-f", help="md, html or json."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write to this new file instead of printing."),
    force: bool = typer.Option(False, "--force", help="Replace the file at --out."),
    language: str = typer.Option("auto", help="Brief language: auto (the persona's), en, zh, ..."),
    llm: LlmOption = None,
    llm_url: LlmUrlOption = None,
    llm_model: LlmModelOption = None,
    api_key_env: ApiKeyEnvOption = None,
    threads: ThreadsOption = None,
    quiet: QuietOption = False,
) -> None:
    """Write a brief from a run's personas and texts (a workspace's published run, or a run directory).
    Every claim cites texts of the persona's segment and is checked against them, quotes are verbatim,
    numbers are the run's. The run is only read: the brief is printed, or written to --out."""
    from persona_llm import workflows
    from persona_llm.briefs import BriefWriter, render_brief
    from persona_llm.briefs.render import FORMATS

    try:
        if fmt not in FORMATS:
            raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
        if out is not None and out.exists() and not (force and out.is_file()):
            why = "pass --force to replace it" if out.is_file() else "it is not a file"
            raise ConfigError(f"{out}: already exists; {why} (nothing was written)")
        if persona is None and kind != "messaging":
            raise ConfigError(f"--persona is required for a {kind} brief (see `persona-llm personas RUN`)")
        settings = workflows.llm_settings(llm, llm_url, llm_model, api_key_env=api_key_env, threads=threads)
        if not quiet:
            console.print(f"[bold]brief[/] {kind} · backend {settings.backend}; about a minute per persona on a 2-core CPU")
        writer = BriefWriter(settings, language=language)
        brief = writer.write(run, persona_id=persona or "all", goal=goal, kind=kind, channel=channel)
        text = render_brief(brief, fmt)
        if out is not None:
            from persona_llm.runs.rundir import atomic_write_text

            atomic_write_text(out, text)
    except PersonaLLMError as exc:
        fail(exc)
    if out is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    if not quiet:
        stats = writer.stats()
        where = f" · wrote {out}" if out is not None else ""
        console.print(
            f"{kind} brief {brief.brief_id} · confidence {brief.confidence} · {stats['calls']} call(s), "
            f"{stats['prompt_tokens']}+{stats['completion_tokens']} tokens, {stats['wall_seconds']:.0f} s{where}"
        )
