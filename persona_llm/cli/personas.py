"""Persona commands: `personas` (list), `show` (one persona), `write-personas` (generate for a run),
`doctor` (check the LLM backend), and `run_build_personas` for the `build` command in cli.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from persona_llm.errors import ConfigError, PersonaLLMError

console = Console(stderr=True)
out_console = Console()

LLM_HELP = "Generative backend: embedded (llama.cpp, CPU, default), vllm, or openai (any compatible URL)."


def llm_settings_from_options(
    llm: str | None = None,
    llm_url: str | None = None,
    llm_model: str | None = None,
    api_key_env: str | None = None,
    threads: int | None = None,
    concurrency: int | None = None,
    **extra: Any,
) -> Any:
    """LLMSettings from CLI options over PERSONA_LLM_* environment variables (for `build` too)."""
    from persona_llm.llm.client import LLMSettings

    return LLMSettings.from_env(
        backend=llm, base_url=llm_url, model=llm_model, api_key_env=api_key_env, n_threads=threads,
        concurrency=concurrency, **extra,
    )  # fmt: skip


def _fail(exc: Exception) -> None:
    # Messages quote TOML tables like [columns]: escape them or rich takes them for markup and drops them.
    console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
    raise typer.Exit(code=2)


def _load(run_dir: Path) -> list[Any]:
    from persona_llm.personas.writer import PERSONAS_FILE
    from persona_llm.schema.personas import load_personas

    path = run_dir / PERSONAS_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: not found; write personas with `persona-llm build` or `write-personas`")
    return load_personas(path)


def _summary_table(personas: list[Any], title: str) -> Table:
    table = Table(title=title, show_lines=False)
    for col in ("segment", "persona", "tagline", "users", "quotes", "confidence", "lang"):
        table.add_column(col, overflow="fold")
    for p in personas:
        removed = len(p.provenance.quotes_removed)
        table.add_row(
            str(p.segment_id), p.name, p.tagline, f"{p.user_count} ({p.share * 100:.1f}%)",
            f"{len(p.quotes)} ok, {removed} dropped", p.confidence, p.language,
        )  # fmt: skip
    return table


def run_build_personas(
    run_dir: Path,
    llm_settings: Any,
    language: str = "auto",
    segment_ids: list[int] | None = None,
    quiet: bool = False,
    **writer_params: Any,
) -> list[Any]:
    """Write personas for a segmented run directory and print a summary (called by `build`)."""
    from persona_llm.personas.writer import PersonaWriter

    writer = PersonaWriter(llm_settings, language=language, **writer_params)
    if not quiet:
        console.print(f"[bold]personas[/] backend {llm_settings.backend}; about a minute per segment on a 2-core CPU")
    personas = writer.write(run_dir, segment_ids)
    if not quiet:
        stats = getattr(writer, "stats_", {})
        out_console.print(_summary_table(personas, f"Personas of {run_dir}"))
        tps = stats.get("completion_tokens_per_second")
        console.print(
            f"{stats.get('personas', 0)} written in {stats.get('wall_seconds', 0):.0f}s · "
            f"{stats.get('calls', 0)} calls ({stats.get('cached_calls', 0)} cached) · "
            f"{tps if tps is not None else '-'} tokens/s · quotes {stats.get('quotes_kept', 0)} kept, "
            f"{stats.get('quotes_dropped_by_gate', 0)} dropped by the grounding gate · report {run_dir / 'report.html'}"
        )
    return personas


def register(app: typer.Typer) -> None:
    @app.command("personas")
    def list_personas(
        run_dir: Path = typer.Argument(..., help="A run directory with personas.json."),
        as_json: bool = typer.Option(False, "--json", help="One JSON line per persona instead of a table."),
    ) -> None:
        """List the personas of a run."""
        try:
            personas = _load(run_dir)
        except PersonaLLMError as exc:
            _fail(exc)
            return
        if as_json:
            for p in personas:
                row = {"segment_id": p.segment_id, "persona_id": p.persona_id, "name": p.name,
                       "tagline": p.tagline, "users": p.user_count, "share": p.share}  # fmt: skip
                sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
            return
        out_console.print(_summary_table(personas, f"Personas of {run_dir}"))

    @app.command("show")
    def show(
        run_dir: Path = typer.Argument(..., help="A run directory with personas.json."),
        segment_id: int = typer.Argument(..., help="The segment whose persona to show."),
        fmt: str = typer.Option("md", "--format", "-f", help="md or json."),
    ) -> None:
        """Print one persona as Markdown or JSON."""
        from persona_llm.personas.report import persona_markdown

        try:
            if fmt not in ("md", "json"):
                raise ConfigError(f"--format must be md or json, not {fmt!r}")
            match = [p for p in _load(run_dir) if p.segment_id == segment_id]
            if not match:
                raise ConfigError(f"no persona for segment {segment_id} in {run_dir}")
        except PersonaLLMError as exc:
            _fail(exc)
            return
        if fmt == "json":
            sys.stdout.write(match[0].model_dump_json(indent=2) + "\n")
        else:
            sys.stdout.write(persona_markdown(match[0]) + "\n")

    @app.command("write-personas")
    def write_personas_cmd(
        run_dir: Path = typer.Argument(..., help="A run directory written by `segment`."),
        llm: str | None = typer.Option(None, "--llm", help=LLM_HELP),
        llm_url: str | None = typer.Option(None, "--llm-url", help="Base URL (…/v1) for vllm or openai."),
        llm_model: str | None = typer.Option(None, "--llm-model", help="Model name (embedded: qwen-1.5b, qwen-0.5b)."),
        api_key_env: str | None = typer.Option(None, help="Environment variable holding the API key."),
        language: str = typer.Option("auto", help="Persona language: auto (per segment), en, zh, ..."),
        segments: str | None = typer.Option(None, help="Comma-separated segment ids (default: all)."),
        threads: int | None = typer.Option(None, help="Embedded: llama.cpp threads (default: the free cores)."),
        concurrency: int | None = typer.Option(None, help="Segments generated at the same time."),
        quiet: bool = typer.Option(False, "--quiet", "-q"),
    ) -> None:
        """(Re)write the personas of a segmented run: personas.json, personas.md, report.html, store."""
        try:
            settings = llm_settings_from_options(llm, llm_url, llm_model, api_key_env, threads, concurrency)
            ids = [int(s) for s in segments.split(",")] if segments else None
            run_build_personas(run_dir, settings, language, ids, quiet=quiet)
        except ValueError as exc:
            _fail(ConfigError(f"--segments: {exc}"))
        except KeyError as exc:
            _fail(ConfigError(str(exc).strip("'\"")))
        except PersonaLLMError as exc:
            _fail(exc)

    @app.command("doctor")
    def doctor(
        llm: str | None = typer.Option(None, "--llm", help=LLM_HELP),
        llm_url: str | None = typer.Option(None, "--llm-url", help="Base URL (…/v1) for vllm or openai."),
        llm_model: str | None = typer.Option(None, "--llm-model", help="Model name."),
        api_key_env: str | None = typer.Option(None, help="Environment variable holding the API key."),
        threads: int | None = typer.Option(None, help="Embedded: llama.cpp threads."),
        as_json: bool = typer.Option(False, "--json", help="Print the checks as JSON."),
    ) -> None:
        """Check that the chosen LLM backend answers and supports structured output; say what is missing."""
        from persona_llm.llm.doctor import checks_as_json, diagnose

        try:
            settings = llm_settings_from_options(llm, llm_url, llm_model, api_key_env, threads)
        except PersonaLLMError as exc:
            _fail(exc)
            return
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
