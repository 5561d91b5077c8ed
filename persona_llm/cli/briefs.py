"""`brief`: a campaign brief, a day-in-the-life narrative or a messaging matrix for a run's personas;
with several personas (or --all-personas), one campaign or narrative brief each, written concurrently
(threads, or Ray actors over --llm-urls with --executor ray)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

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
    app,
    console,
    fail,
    url_list,
)
from persona_llm.errors import ConfigError, PersonaLLMError


@app.command("brief")
def brief_command(
    run: RunArgument,
    goal: str = typer.Option(..., "--goal", help='What the brief is for, e.g. "launch of the annual plan".'),
    persona: list[str] | None = typer.Option(
        None,
        "--persona",
        help="Persona id or segment id. Repeat it (or comma-separate) for one campaign or narrative brief "
        "each, or for the rows of a messaging matrix (messaging default: all).",
    ),
    all_personas: bool = typer.Option(
        False, "--all-personas", help="One brief per persona of the run (messaging: one matrix of all)."
    ),
    kind: str = typer.Option("campaign", "--kind", help="campaign, narrative or messaging."),
    channel: str | None = typer.Option(None, "--channel", help="The main channel, e.g. email."),
    fmt: str = typer.Option("md", "--format", "-f", help="md, html or json."),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Write to this new file instead of printing; several briefs: into this directory, one new file "
        "per persona (PERSONA_ID.KIND.FORMAT).",
    ),
    force: bool = typer.Option(False, "--force", help="Replace the file(s) at --out."),
    language: str = typer.Option("auto", help="Brief language: auto (the persona's), en, zh, ..."),
    llm: LlmOption = None,
    llm_url: LlmUrlOption = None,
    llm_model: LlmModelOption = None,
    api_key_env: ApiKeyEnvOption = None,
    threads: ThreadsOption = None,
    concurrency: int | None = typer.Option(
        None, help="Several briefs: how many are written at the same time (per endpoint)."
    ),
    executor: ExecutorOption = None,
    ray_address: RayAddressOption = None,
    llm_urls: LlmUrlsOption = None,
    quiet: QuietOption = False,
) -> None:
    """Write a brief from a run's personas and texts (a workspace's published run, or a run directory).
    Every claim cites texts of the persona's segment and is checked against them, quotes are verbatim,
    numbers are the run's. The run is only read: the brief is printed, or written to --out.
    Several personas: each brief passes the same gates; one that fails is reported with its persona id
    and reason, the others are written (exit status 1 when any failed)."""
    from persona_llm import workflows
    from persona_llm.briefs import SINGLE_AUDIENCE_KINDS, BriefWriter, render_brief
    from persona_llm.briefs.render import FORMATS

    tokens = [t.strip() for value in persona or [] for t in value.split(",") if t.strip()]
    several = kind in SINGLE_AUDIENCE_KINDS and (all_personas or len(tokens) > 1)
    try:
        if fmt not in FORMATS:
            raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
        if all_personas and tokens:
            raise ConfigError("give --persona or --all-personas, not both")
        spread = {"--executor": executor, "--ray-address": ray_address, "--llm-urls": llm_urls, "--concurrency": concurrency}
        if not several and any(v is not None for v in spread.values()):
            given = ", ".join(k for k, v in spread.items() if v is not None)
            raise ConfigError(
                f"{given}: spread several campaign or narrative briefs (--persona ID --persona ID, or "
                "--all-personas); this asks for one brief"
            )
        if not several and tokens == [] and not all_personas and kind != "messaging":
            raise ConfigError(
                f"--persona is required for a {kind} brief (see `persona-llm personas RUN`), or --all-personas for one each"
            )
        settings = workflows.llm_settings(
            llm, llm_url, llm_model, api_key_env=api_key_env, threads=threads, concurrency=concurrency
        )
        if several:
            scale = workflows.scale_settings(executor=executor, ray_address=ray_address, llm_urls=url_list(llm_urls))
            code = _write_several(
                run, "all" if all_personas else tokens, goal=goal, kind=kind, channel=channel, fmt=fmt, out=out,
                force=force, language=language, settings=workflows.settings_for_scale(settings, scale), scale=scale,
                quiet=quiet,
            )  # fmt: skip
            raise typer.Exit(code=code)
        if out is not None and out.exists() and not (force and out.is_file()):
            why = "pass --force to replace it" if out.is_file() else "it is not a file"
            raise ConfigError(f"{out}: already exists; {why} (nothing was written)")
        if not quiet:
            console.print(f"[bold]brief[/] {kind} · backend {settings.backend}; about a minute per persona on a 2-core CPU")
        writer = BriefWriter(settings, language=language)
        persona_id = "all" if all_personas or not tokens else ",".join(tokens)
        brief = writer.write(run, persona_id=persona_id, goal=goal, kind=kind, channel=channel)
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


def brief_file_name(persona_id: str, kind: str, fmt: str) -> str:
    """The file one persona's brief is written to under --out: PERSONA_ID.KIND.FORMAT (anything but
    letters, digits, '-' and '_' in the id becomes '_', so a name never leaves the directory)."""
    return f"{re.sub(r'[^A-Za-z0-9_-]', '_', persona_id)}.{kind}.{fmt}"


def _write_several(
    run: Path,
    persona_ids: list[str] | str,
    *,
    goal: str,
    kind: str,
    channel: str | None,
    fmt: str,
    out: Path | None,
    force: bool,
    language: str,
    settings: Any,
    scale: Any,
    quiet: bool,
) -> int:
    """One brief per persona, each printed (JSON: one line each) or written to its own new file under
    `out` as it finishes; failures are reported with the persona id and reason. Exit status: 0 all
    written, 1 some failed (the others written)."""
    from persona_llm import workflows
    from persona_llm.briefs import BriefOutcome, BriefWriter, render_brief, select_each
    from persona_llm.runs.rundir import atomic_write_text
    from persona_llm.runs.workspace import resolve_run

    rundir = resolve_run(run)
    chosen = select_each(rundir.load_personas(), persona_ids, kind, str(rundir.path))
    targets: dict[str, Path] = {}
    if out is not None:  # every file is checked before any model call: nothing is written over what is not ours
        if out.exists() and not out.is_dir():
            raise ConfigError(f"{out}: not a directory; several briefs go into a directory, one file per persona (nothing was written)")
        targets = {p.persona_id: out / brief_file_name(p.persona_id, kind, fmt) for p in chosen}
        taken = [t for t in targets.values() if t.exists() and not (force and t.is_file())]
        if taken:
            why = "pass --force to replace it" if taken[0].is_file() else "it is not a file"
            more = f" (and {len(taken) - 1} more)" if len(taken) > 1 else ""
            raise ConfigError(f"{taken[0]}: already exists{more}; {why} (nothing was written)")
    elif fmt == "html":
        raise ConfigError("--format html for several briefs needs --out DIR (one page per persona)")
    if not quiet:
        where = f"ray ({len(scale.llm_urls) or 1} endpoint(s))" if scale.executor == "ray" else "local"
        console.print(
            f"[bold]briefs[/] {len(chosen)} {kind} brief(s) · backend {settings.backend} · executor {where}, "
            f"{settings.concurrency} at a time per endpoint"
        )
    not_written: dict[str, str] = {}

    def written(outcome: BriefOutcome) -> None:  # called as each brief finishes: a crash later keeps these
        pid = outcome.persona_id
        if outcome.brief is None:
            console.print(f"[bold red]failed:[/] brief for {pid} (segment {outcome.segment_id}): {escape(outcome.error)}")
            return
        where = ""
        if out is not None:
            target = targets[pid]
            if target.exists() and not force:  # appeared while the briefs were written: not ours to replace
                not_written[pid] = f"{target} appeared meanwhile; not replaced"
                console.print(f"[bold red]failed:[/] brief for {pid}: {escape(not_written[pid])}")
                return
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(target, render_brief(outcome.brief, fmt))
            where = f" · wrote {target}"
        elif fmt == "json":
            sys.stdout.write(outcome.brief.model_dump_json() + "\n")  # JSON Lines: one brief per line
        else:
            sys.stdout.write(render_brief(outcome.brief, fmt).rstrip("\n") + "\n\n")
        if not quiet:
            console.print(
                f"{kind} brief {outcome.brief.brief_id} for {pid} (segment {outcome.segment_id}) · confidence "
                f"{outcome.brief.confidence} · {outcome.seconds:.0f} s{where}"
            )

    writer = BriefWriter(settings, language=language, progress=written)
    with workflows.open_executor(scale) as ray_or_none:
        batch = writer.write_many(
            rundir, [p.persona_id for p in chosen], goal=goal, kind=kind, channel=channel, executor=ray_or_none
        )
    failed = {**batch.failures, **not_written}
    if not quiet or failed:
        stats = writer.stats()
        console.print(
            f"{len(batch.outcomes) - len(failed)} of {len(batch.outcomes)} {kind} brief(s) written"
            + (f", {len(failed)} failed: {', '.join(failed)}" if failed else "")
            + f" · {stats['calls']} call(s), {stats['prompt_tokens']}+{stats['completion_tokens']} tokens, "
            f"{stats['wall_seconds']:.0f} s"
        )
    return 1 if failed else 0
