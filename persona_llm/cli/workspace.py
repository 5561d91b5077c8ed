"""`history`, `publish`, `rollback` and `gc`: the versioned runs of a workspace."""

from __future__ import annotations

import json
import sys

import typer
from rich.table import Table

from persona_llm.cli.app import WorkspaceArgument, app, console, fail, out_console
from persona_llm.errors import PersonaLLMError


@app.command("history")
def history(
    workspace: WorkspaceArgument,
    as_json: bool = typer.Option(False, "--json", help="One JSON line per run."),
) -> None:
    """List the runs of a workspace, oldest first; the published one is marked."""
    from persona_llm import workflows

    try:
        runs = workflows.history(workspace)
    except PersonaLLMError as exc:
        fail(exc)
    if as_json:
        for r in runs:
            sys.stdout.write(json.dumps(r.__dict__) + "\n")
        return
    table = Table(title=f"runs of {workspace}")
    for col in ("", "run", "created", "segments", "personas", "published before"):
        table.add_column(col, overflow="fold")  # a run name is what `publish` takes: never cut it short
    for r in runs:
        table.add_row(
            "[bold green]current[/]" if r.current else "", r.name, r.created_at,
            "" if r.segments is None else str(r.segments), "yes" if r.has_personas else "no",
            "yes" if r.published else "",
        )  # fmt: skip
    out_console.print(table)


@app.command("publish")
def publish(
    workspace: WorkspaceArgument,
    run: str = typer.Argument(..., help="The run's name, as `history` lists it.", metavar="RUN_ID"),
) -> None:
    """Publish a run of the workspace (atomic: readers see the old run or the new one, never a mix)."""
    from persona_llm import workflows

    try:
        workflows.publish(workspace, run)
    except PersonaLLMError as exc:
        fail(exc)
    console.print(f"published run {run}")


@app.command("rollback")
def rollback(workspace: WorkspaceArgument) -> None:
    """Publish the run that was published before the current one."""
    from persona_llm import workflows

    try:
        run = workflows.rollback(workspace)
    except PersonaLLMError as exc:
        fail(exc)
    console.print(f"rolled back: published run {run.path.name}")


@app.command("gc")
def gc(
    workspace: WorkspaceArgument,
    keep: int = typer.Option(..., "--keep", help="How many of the newest runs to keep."),
) -> None:
    """Remove all but the newest --keep runs (the published one and the rollback target always stay)
    and whatever failed or killed writers left behind."""
    from persona_llm import workflows

    try:
        removed = workflows.gc(workspace, keep)
    except PersonaLLMError as exc:
        fail(exc)
    console.print(f"removed {len(removed)}: {', '.join(removed) or 'nothing'}")
