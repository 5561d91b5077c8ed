"""`eval` (one run) and `eval-suite` (build runs from shared data, evaluate, check thresholds).

Exit codes: 0 ok, 1 a suite threshold missed, 2 bad input/config.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from persona_llm.cli.app import (
    JudgeLlmModelOption,
    JudgeLlmOption,
    JudgeLlmUrlOption,
    LlmModelOption,
    LlmOption,
    LlmUrlOption,
    RunArgument,
    app,
    console,
    fail,
    out_console,
)
from persona_llm.errors import PersonaLLMError


def _metric_table(title: str, report: Any, suite: Any) -> Table:
    from persona_llm.evaluation.runner import format_value, summary_rows

    table = Table(title=escape(title))
    for col in ("group", "metric", "value", "threshold", ""):
        table.add_column(col, justify="right" if col == "value" else "left")
    for row in summary_rows(report, suite):
        status = {"FAIL": "[red]FAIL[/red]", "ok": "[green]ok[/green]"}.get(row["status"], "")
        table.add_row(row["group"], row["metric"], format_value(row["value"]), row["threshold"], status)
    return table


@app.command("eval")
def eval_command(
    run: RunArgument,
    labels: str | None = typer.Option(None, "--labels", help="user label column to score segments against"),
    suite: Path | None = typer.Option(None, "--suite", help="suite TOML: metric groups and thresholds"),
    dataset: str | None = typer.Option(None, "--dataset", help="the suite data set this run was built from"),
    embed: bool = typer.Option(True, "--embed/--no-embed", help="load the embedder for persona metrics"),
    embedder_name: str | None = typer.Option(None, "--embedder", help="embedder name (default: the run's)"),
    judge: bool = typer.Option(False, "--judge/--no-judge", help="score claims with the LLM judge"),
    judge_llm: JudgeLlmOption = None,
    judge_llm_url: JudgeLlmUrlOption = None,
    judge_llm_model: JudgeLlmModelOption = None,
    chat: bool = typer.Option(
        False, "--chat/--no-chat", help="ask the segment chat the run's question set and planted injections (LLM; slow)"
    ),
    llm: LlmOption = None,
    llm_url: LlmUrlOption = None,
    llm_model: LlmModelOption = None,
    as_json: bool = typer.Option(False, "--json", help="print eval.json instead of the table"),
    stability: bool = typer.Option(
        True, "--stability/--no-stability", help="re-segment two 90% subsamples (uses the embedding cache)"
    ),
    brief: list[Path] = typer.Option(  # noqa: B008 - typer reads the default at definition time
        [], "--brief", help="a brief JSON file (persona-llm brief --format json) to check; repeatable"
    ),
) -> None:
    """Evaluate a run: segmentation, grounding, claims, distinctness, identification, stability, privacy,
    and the grounding (and, with --judge, usefulness) of briefs given with --brief."""
    from persona_llm import workflows
    from persona_llm.evaluation.suite import load_suite

    def warn(message: str) -> None:
        console.print(f"[yellow]warning:[/yellow] {escape(message)}; --no-embed to silence")

    try:
        suite_obj = load_suite(suite) if suite is not None else None
        judge_settings = workflows.llm_settings(judge_llm, judge_llm_url, judge_llm_model) if judge else None
        chat_settings = workflows.llm_settings(llm, llm_url, llm_model) if chat else None
        report = workflows.evaluate(
            run, labels=labels, suite=suite_obj, dataset=dataset,
            embedder=(embedder_name or "run") if embed else None, judge_settings=judge_settings,
            chat_settings=chat_settings, stability=stability, on_warning=warn, briefs=brief,
        )  # fmt: skip
    except PersonaLLMError as exc:
        fail(exc)
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
    else:
        title = f"eval {report.run_id}" + (f" · suite {report.suite}" if report.suite else "")
        out_console.print(_metric_table(title, report, suite_obj))
        for group, why in report.skipped.items():
            out_console.print(f"[dim]not run: {group}: {escape(why)}[/dim]", soft_wrap=True)
        for note in report.notes:
            out_console.print(f"[dim]note: {escape(note)}[/dim]", soft_wrap=True)
        for c in report.details.get("contradictions", [])[:10]:
            line = (
                f"{c['persona_id']}: {c['field']} {c['claim']!r}, segment majority {c['column']} = "
                f"{', '.join(c['majority'])} ({c['majority_share']:.0%})"
            )
            out_console.print(f"[yellow]contradiction[/yellow] {escape(line)}", soft_wrap=True)
        out_console.print(f"wrote {escape(report.run_dir)}/eval.json", soft_wrap=True)
    if report.failures:
        for f in report.failures:
            console.print(f"[red]FAIL[/red] {escape(f.message)}")
        raise typer.Exit(1)


@app.command("eval-suite")
def eval_suite_command(
    suite: Path = typer.Argument(..., help="suite TOML, e.g. evals/suites/ci.toml"),
    workdir: Path = typer.Option(Path("runs/evals"), "--workdir", help="where the suite's runs are built"),
    personas: bool = typer.Option(True, "--personas/--no-personas", help="write personas with the LLM"),
    max_personas: int | None = typer.Option(
        None,
        "--max-personas",
        help="personas for every data set's largest N segments (default: the data set's max_personas, else the suite's option)",
    ),
    llm: LlmOption = None,
    llm_url: LlmUrlOption = None,
    llm_model: LlmModelOption = None,
    data_dir: Path | None = typer.Option(None, "--data-dir", help="shared data dir (default: the suite's)"),
    only_datasets: list[str] | None = typer.Option(
        None, "--dataset", help="only this data set of the suite (name or source; repeatable)"
    ),
) -> None:
    """Build runs from the suite's shared data sets with the real pipeline, evaluate them, check thresholds."""
    from persona_llm import workflows
    from persona_llm.evaluation.build import SuiteBuilder
    from persona_llm.evaluation.runner import run_suite
    from persona_llm.evaluation.suite import load_suite

    try:
        suite_obj = load_suite(suite)
        if only_datasets:
            suite_obj = suite_obj.only(only_datasets)
        if max_personas is not None:  # the command line's bound wins over each data set's own
            suite_obj = suite_obj.model_copy(
                update={"datasets": [d.model_copy(update={"max_personas": None}) for d in suite_obj.datasets]}
            )
        with ExitStack() as stack:
            writer = None
            if personas:
                from persona_llm.llm.client import open_chat_model
                from persona_llm.personas.writer import PersonaWriter

                settings = workflows.llm_settings(llm, llm_url, llm_model)
                chat = stack.enter_context(open_chat_model(settings))
                writer = PersonaWriter(settings, chat=chat)
            builder = SuiteBuilder(
                writer=writer,
                max_personas=max_personas if max_personas is not None else suite_obj.options.max_personas,
            )
            # The chat groups reuse the persona writer's model (a suite without personas cannot chat).
            wants_chat = suite_obj.enabled("chat") or suite_obj.enabled("injection")
            chat_model = writer.chat if writer is not None and wants_chat else None
            result = run_suite(
                suite_obj, workdir, builder.build, segment_fn=builder.resegment, data_dir=data_dir, chat=chat_model
            )
    except PersonaLLMError as exc:
        fail(exc)
    for report in result.reports:
        out_console.print(_metric_table(f"suite {result.suite} · {report.dataset}", report, suite_obj))
        for note in report.notes:
            out_console.print(f"[dim]note: {escape(note)}[/dim]", soft_wrap=True)
    for dataset, failure in result.failures:
        console.print(f"[red]FAIL[/red] {escape(dataset)}: {escape(failure.message)}")
    if not result.passed:
        raise typer.Exit(1)
