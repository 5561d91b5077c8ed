"""`personas`, `show`, `write-personas` and `doctor`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from persona_llm.cli.app import (
    ApiKeyEnvOption,
    ExecutorOption,
    LlmModelOption,
    LlmOption,
    LlmUrlOption,
    LlmUrlsOption,
    QuietOption,
    RayAddressOption,
    RunArgument,
    ThreadsOption,
    WriterAgentOption,
    app,
    console,
    fail,
    out_console,
    url_list,
)
from persona_llm.errors import ConfigError, PersonaLLMError, RunNotPublishedError


def _personas(run: Path) -> list[Any]:
    from persona_llm.runs.workspace import resolve_run

    rundir = resolve_run(run)
    if not rundir.has_personas():
        raise ConfigError(f"{rundir.path}: no personas yet; write them with `persona-llm build` or `write-personas`")
    return rundir.load_personas()


def persona_progress(event: Any) -> None:
    """One plain line per persona on stderr (a PersonaProgress): readable in a terminal, a pipe or a log."""
    console.print(f"  {event.line()}", soft_wrap=True, markup=False, highlight=False)


def _summary_table(personas: list[Any], title: str) -> Table:
    table = Table(title=title, show_lines=False)
    for col in ("segment", "persona", "tagline", "users", "quotes", "supported", "confidence", "lang"):
        table.add_column(col, overflow="fold")
    for p in personas:
        removed = len(p.provenance.quotes_removed)
        table.add_row(
            str(p.segment_id), p.name, p.tagline, f"{p.user_count} ({p.share * 100:.1f}%)",
            f"{len(p.quotes)} ok, {removed} dropped",
            "-" if p.provenance.support_share is None else f"{p.provenance.support_share * 100:.0f}%",
            p.confidence, p.language,
        )  # fmt: skip
    return table


def personas_summary(personas: list[Any], writer: Any, run_path: Path) -> None:
    """The persona table and one line of what the writer did (after build and write-personas)."""
    out_console.print(_summary_table(personas, f"Personas of {run_path}"))
    stats = getattr(writer, "stats_", {})
    tps = stats.get("completion_tokens_per_second")
    console.print(
        f"{stats.get('personas', 0)} written in {stats.get('wall_seconds', 0):.0f}s · "
        f"{stats.get('calls', 0)} calls ({stats.get('cached_calls', 0)} cached) · "
        f"{tps if tps is not None else '-'} tokens/s · quotes {stats.get('quotes_kept', 0)} kept, "
        f"{stats.get('quotes_dropped_by_gate', 0)} dropped by the grounding gate · report {run_path / 'report.html'}"
    )


@app.command("personas")
def list_personas(
    run: RunArgument,
    as_json: bool = typer.Option(False, "--json", help="One JSON line per persona instead of a table."),
) -> None:
    """List the personas of a run."""
    try:
        personas = _personas(run)
    except PersonaLLMError as exc:
        fail(exc)
    if as_json:
        for p in personas:
            row = {"segment_id": p.segment_id, "persona_id": p.persona_id, "name": p.name,
                   "tagline": p.tagline, "users": p.user_count, "share": p.share}  # fmt: skip
            sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
        return
    out_console.print(_summary_table(personas, f"Personas of {run}"))


@app.command("show")
def show(
    run: RunArgument,
    segment_id: int = typer.Argument(..., help="The segment whose persona to show."),
    fmt: str = typer.Option("md", "--format", "-f", help="md or json."),
) -> None:
    """Print one persona as Markdown or JSON."""
    from persona_llm.personas.report import persona_markdown

    try:
        if fmt not in ("md", "json"):
            raise ConfigError(f"--format must be md or json, not {fmt!r}")
        match = [p for p in _personas(run) if p.segment_id == segment_id]
        if not match:
            raise ConfigError(f"no persona for segment {segment_id} in {run}")
    except PersonaLLMError as exc:
        fail(exc)
    if fmt == "json":
        sys.stdout.write(match[0].model_dump_json(indent=2) + "\n")
    else:
        sys.stdout.write(persona_markdown(match[0]) + "\n")


@app.command("write-personas")
def write_personas(
    run: RunArgument,
    llm: LlmOption = None,
    llm_url: LlmUrlOption = None,
    llm_model: LlmModelOption = None,
    api_key_env: ApiKeyEnvOption = None,
    language: str = typer.Option("auto", help="Persona language: auto (per segment), en, zh, ..."),
    segments: str | None = typer.Option(None, help="Comma-separated segment ids (default: all)."),
    threads: ThreadsOption = None,
    concurrency: int | None = typer.Option(None, help="Segments generated at the same time (per endpoint)."),
    agent: WriterAgentOption = None,
    executor: ExecutorOption = None,
    ray_address: RayAddressOption = None,
    llm_urls: LlmUrlsOption = None,
    quiet: QuietOption = False,
) -> None:
    """(Re)write personas. In a workspace: a new run with the published segmentation, published when
    every persona was written; a run directory is written in place."""
    from persona_llm import workflows

    try:
        ids = [int(s) for s in segments.split(",")] if segments else None
    except ValueError as exc:
        fail(ConfigError(f"--segments: {exc}"))
    try:
        settings = workflows.llm_settings(
            llm, llm_url, llm_model, api_key_env=api_key_env, threads=threads, concurrency=concurrency
        )
        if not quiet:
            console.print(f"[bold]personas[/] backend {settings.backend}; about a minute per segment on a 2-core CPU")
        scale = workflows.scale_settings(executor=executor, ray_address=ray_address, llm_urls=url_list(llm_urls))
        result = workflows.write_personas(
            run, settings, language=language, segment_ids=ids, progress=None if quiet else persona_progress,
            scale=scale, **({"agent": agent} if agent else {}),
        )  # fmt: skip
    except KeyError as exc:
        fail(ConfigError(str(exc).strip("'\"")))
    except RunNotPublishedError as exc:
        fail(exc, code=1)
    except PersonaLLMError as exc:
        fail(exc)
    if not quiet:
        personas_summary(result.personas, result.writer, result.run.path)
        if result.published:
            console.print(f"published run {result.run.path.name}")


@app.command("doctor")
def doctor(
    llm: LlmOption = None,
    llm_url: LlmUrlOption = None,
    llm_model: LlmModelOption = None,
    api_key_env: ApiKeyEnvOption = None,
    threads: ThreadsOption = None,
    as_json: bool = typer.Option(False, "--json", help="Print the checks as JSON."),
) -> None:
    """Check that the chosen LLM backend answers and supports structured output; say what is missing."""
    from persona_llm import workflows
    from persona_llm.llm.doctor import checks_as_json, diagnose

    try:
        settings = workflows.llm_settings(llm, llm_url, llm_model, api_key_env=api_key_env, threads=threads)
    except PersonaLLMError as exc:
        fail(exc)
    checks = diagnose(settings)
    if as_json:
        sys.stdout.write(checks_as_json(checks) + "\n")
    else:
        table = Table(title=f"LLM backend: {settings.backend}")
        for col in ("check", "ok", "detail", "fix"):
            table.add_column(col, overflow="fold")
        for c in checks:
            table.add_row(c.name, "[green]yes[/]" if c.ok else "[red]NO[/]", c.detail, c.fix)
        out_console.print(table)
    if not all(c.ok for c in checks):
        raise typer.Exit(code=1)
