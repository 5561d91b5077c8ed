"""`refresh` and `forget`: keep a workspace up to date with new data, and take users out of it.

Exit codes for schedulers (cron): 0 published (or a dry run), 3 nothing changed, 4 a gate failed (the
previous run stays published), 5 locked by another writer, 2 bad input or configuration.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from persona_llm.cli.app import (
    LlmModelOption,
    LlmOption,
    LlmUrlOption,
    QuietOption,
    WorkspaceArgument,
    app,
    console,
    fail,
    llm_settings_or_fail,
)
from persona_llm.cli.personas import persona_progress
from persona_llm.cli.segment import AttributesOption, ConfigOption, IdColumnOption, TextColumnOption, UserColumnOption
from persona_llm.errors import PersonaLLMError, WorkspaceLockedError

NewDataArgument = Annotated[
    Path, typer.Argument(help="New rows (CSV, JSONL or Parquet), or the full data with --snapshot.", metavar="NEW_DATA")
]


def _exit(code: int) -> None:
    if code:
        raise typer.Exit(code=code)


@app.command("refresh")
def refresh(
    workspace: WorkspaceArgument,
    new_data: NewDataArgument,
    user_column: UserColumnOption = None,
    text_column: TextColumnOption = None,
    id_column: IdColumnOption = None,
    attributes: AttributesOption = None,
    config: ConfigOption = None,
    mode: str = typer.Option("auto", help="auto (assign; re-cluster past the drift thresholds), assign or recluster."),
    snapshot: bool = typer.Option(False, "--snapshot", help="NEW_DATA is the full data: users and texts it lacks are removed."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would change; write and publish nothing."),
    persona_threshold: float = typer.Option(0.2, help="A segment whose membership changed less than this keeps its persona."),
    llm: LlmOption = None,
    llm_url: LlmUrlOption = None,
    llm_model: LlmModelOption = None,
    as_json: bool = typer.Option(False, "--json", help="Print a one-line JSON summary on stdout (for schedulers)."),
    quiet: QuietOption = False,
) -> None:
    """Refresh the published run with new data: stable segment and persona ids, only changed personas
    regenerated, a diff (refresh.json, refresh.md, report.html), published only when every gate passes."""
    from persona_llm.refresh import EXIT_LOCKED
    from persona_llm.refresh import refresh as run_refresh
    from persona_llm.workflows import column_map, load_config

    settings = llm_settings_or_fail(llm=llm, llm_url=llm_url, llm_model=llm_model)
    say = (lambda line: None) if quiet else (lambda line: console.print(line, markup=False, highlight=False))
    try:
        cfg = load_config(config)
        columns = column_map(cfg, user=user_column, text=text_column, id=id_column, attributes=attributes)
        result = run_refresh(
            workspace, new_data, columns=columns, mode=mode, snapshot=snapshot, dry_run=dry_run,  # type: ignore[arg-type]
            settings=settings, persona_threshold=persona_threshold, progress=say,
            persona_progress=None if quiet else persona_progress,
        )  # fmt: skip
    except WorkspaceLockedError as exc:
        if as_json:
            sys.stdout.write(json.dumps({"status": "locked", "exit_code": EXIT_LOCKED, "reason": str(exc)}) + "\n")
        fail(exc, code=EXIT_LOCKED)
    except PersonaLLMError as exc:
        fail(exc)
    if as_json:
        sys.stdout.write(json.dumps(result.summary(), ensure_ascii=False) + "\n")
    elif not quiet:
        from persona_llm.personas.report import refresh_markdown

        sys.stdout.write(refresh_markdown(result.diff))
    if not quiet:
        where = f"run {result.run.path.name}" if result.run is not None else "no run written"
        console.print(f"{result.status} ({where}){': ' + result.diff.reason if result.diff.reason else ''}", markup=False)
    _exit(result.exit_code)


@app.command("forget")
def forget(
    workspace: WorkspaceArgument,
    user: list[str] = typer.Option(..., "--user", help="A user id to forget (repeat for several)."),
    as_json: bool = typer.Option(False, "--json", help="Print a one-line JSON summary on stdout."),
) -> None:
    """Remove users from every run of the workspace (texts, vectors, store records, quotes, keywords only
    they wrote) and from the caches, and make sure no later build, segment or refresh brings them back."""
    from persona_llm.refresh import EXIT_LOCKED
    from persona_llm.refresh import forget as run_forget

    try:
        report = run_forget(workspace, user)
    except WorkspaceLockedError as exc:
        fail(exc, code=EXIT_LOCKED)
    except PersonaLLMError as exc:
        fail(exc)
    if as_json:
        sys.stdout.write(json.dumps(report.summary()) + "\n")
        return
    console.print(
        f"forgot {report.users} user(s) ({report.users_found} found): {report.texts_removed} texts, "
        f"{report.quotes_removed} quotes ({len(report.personas_flagged)} personas re-verified and flagged), "
        f"{report.store_records_removed} store records, {report.cached_vectors_removed} cached vectors, "
        f"{report.cached_replies_removed} cached replies, keywords of {report.segments_rekeyworded} segments found again "
        f"without them ({report.keywords_dropped} only they wrote); runs rewritten: {', '.join(report.runs_rewritten) or 'none'}",
        markup=False,
    )
