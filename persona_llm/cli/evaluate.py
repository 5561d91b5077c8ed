"""`persona-llm eval RUN_DIR [--labels COL] [--suite FILE]`: metric table, eval.json, exit 1 on a miss.

The main CLI calls `register(app)`; exit codes: 0 ok, 1 a suite threshold missed, 2 bad input/config.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from persona_llm.errors import PersonaLLMError


def _default_embedder(run_dir: Path, name: str | None) -> Any:
    """The embedder named by --embedder, else the one the run was built with (its manifest)."""
    from persona_llm.evaluation.runner import run_embedder
    from persona_llm.segment.embed import get_embedder

    return get_embedder(name) if name else run_embedder(run_dir)


def register(app: typer.Typer) -> None:
    """Add the `eval` command to `app`."""

    @app.command("eval")
    def eval_command(
        run_dir: Path = typer.Argument(..., help="a run directory written by `persona-llm segment`"),
        labels: str | None = typer.Option(
            None, "--labels", help="user label column to score segments against"
        ),
        suite: Path | None = typer.Option(None, "--suite", help="suite TOML: metric groups and thresholds"),
        dataset: str | None = typer.Option(
            None, "--dataset", help="the suite data set this run was built from"
        ),
        embed: bool = typer.Option(True, "--embed/--no-embed", help="load the embedder for persona metrics"),
        embedder_name: str | None = typer.Option(
            None, "--embedder", help="embedder name (default: the run's)"
        ),
        judge: bool = typer.Option(False, "--judge/--no-judge", help="score claims with the LLM judge"),
        judge_backend: str | None = typer.Option(
            None, "--judge-backend", help="embedded, vllm or openai (default: PERSONA_LLM_BACKEND)"
        ),
        judge_model: str | None = typer.Option(
            None, "--judge-model", help="judge model (default: PERSONA_LLM_MODEL)"
        ),
        judge_url: str | None = typer.Option(
            None, "--judge-url", help="OpenAI-compatible base URL of the judge"
        ),
        as_json: bool = typer.Option(False, "--json", help="print eval.json instead of the table"),
        stability: bool = typer.Option(
            True, "--stability/--no-stability", help="re-segment two 90% subsamples (uses the embedding cache)"
        ),
    ) -> None:
        """Evaluate a run: segmentation, grounding, claims, distinctness, identification, stability, privacy."""
        from persona_llm.evaluation.runner import evaluate_run, format_value, summary_rows
        from persona_llm.evaluation.suite import load_suite

        console = Console()
        err = Console(stderr=True, soft_wrap=True, highlight=False)
        try:
            suite_obj = load_suite(suite) if suite is not None else None
            embedder = None
            if embed:
                try:
                    embedder = _default_embedder(run_dir, embedder_name)
                except Exception as exc:  # noqa: BLE001 - persona metrics are skipped, the rest still run
                    err.print(
                        f"[yellow]warning:[/yellow] no embedder ({escape(str(exc))}); --no-embed to silence"
                    )
            with ExitStack() as stack:
                chat = None
                if judge:
                    from persona_llm.llm.client import LLMSettings, open_chat_model

                    settings = LLMSettings.from_env(
                        backend=judge_backend, model=judge_model, base_url=judge_url
                    )
                    chat = stack.enter_context(open_chat_model(settings))
                segment_fn, no_segment_fn = None, "--no-stability"
                if stability:
                    from persona_llm.evaluation.build import run_resegmenter

                    try:
                        segment_fn = run_resegmenter(run_dir)
                    except PersonaLLMError as exc:  # stability is skipped with this reason; the rest runs
                        no_segment_fn = f"cannot re-segment: {exc}"
                report = evaluate_run(
                    run_dir, labels, suite_obj, embedder, chat, dataset=dataset, segment_fn=segment_fn,
                    no_segment_fn_reason=no_segment_fn,
                )
        except PersonaLLMError as exc:
            err.print(f"[red]error:[/red] {escape(str(exc))}")
            raise typer.Exit(2) from exc

        if as_json:
            typer.echo(report.model_dump_json(indent=2))
        else:
            title = f"eval {report.run_id}" + (f" · suite {report.suite}" if report.suite else "")
            table = Table(title=escape(title))
            for col in ("group", "metric", "value", "threshold", ""):
                table.add_column(col, justify="right" if col == "value" else "left")
            for row in summary_rows(report, suite_obj):
                status = {"FAIL": "[red]FAIL[/red]", "ok": "[green]ok[/green]"}.get(row["status"], "")
                table.add_row(
                    row["group"], row["metric"], format_value(row["value"]), row["threshold"], status
                )
            console.print(table)
            for group, why in report.skipped.items():
                console.print(f"[dim]not run: {group}: {escape(why)}[/dim]", soft_wrap=True)
            for note in report.notes:
                console.print(f"[dim]note: {escape(note)}[/dim]", soft_wrap=True)
            for c in report.details.get("contradictions", [])[:10]:
                line = (
                    f"{c['persona_id']}: {c['field']} {c['claim']!r}, segment majority {c['column']} = "
                    f"{', '.join(c['majority'])} ({c['majority_share']:.0%})"
                )
                console.print(f"[yellow]contradiction[/yellow] {escape(line)}", soft_wrap=True)
            console.print(f"wrote {escape(str(Path(run_dir) / 'eval.json'))}", soft_wrap=True)
        if report.failures:
            for f in report.failures:
                err.print(f"[red]FAIL[/red] {escape(f.message)}")
            raise typer.Exit(1)

    @app.command("eval-suite")
    def eval_suite_command(
        suite: Path = typer.Argument(..., help="suite TOML, e.g. evals/suites/ci.toml"),
        workdir: Path = typer.Option(Path("runs/evals"), "--workdir", help="where the suite's runs are built"),
        personas: bool = typer.Option(True, "--personas/--no-personas", help="write personas with the LLM"),
        max_personas: int | None = typer.Option(
            None, "--max-personas", help="personas for the largest N segments (default: the suite's option)"
        ),
        backend: str | None = typer.Option(
            None, "--llm", help="embedded, vllm or openai (default: PERSONA_LLM_BACKEND or embedded)"
        ),
        model: str | None = typer.Option(None, "--model", help="LLM model (default: the backend's)"),
        base_url: str | None = typer.Option(None, "--base-url", help="OpenAI-compatible server URL"),
        data_dir: Path | None = typer.Option(None, "--data-dir", help="shared data dir (default: the suite's)"),
    ) -> None:
        """Build runs from the suite's shared data sets with the real pipeline, evaluate them, check thresholds."""
        from persona_llm.evaluation.build import SuiteBuilder
        from persona_llm.evaluation.runner import format_value, run_suite, summary_rows
        from persona_llm.evaluation.suite import load_suite

        console = Console()
        err = Console(stderr=True, soft_wrap=True, highlight=False)
        try:
            suite_obj = load_suite(suite)
            with ExitStack() as stack:
                writer = None
                if personas:
                    from persona_llm.llm.client import LLMSettings, open_chat_model
                    from persona_llm.personas.writer import PersonaWriter

                    settings = LLMSettings.from_env(backend=backend, model=model, base_url=base_url)
                    chat = stack.enter_context(open_chat_model(settings))
                    writer = PersonaWriter(settings, chat=chat)
                builder = SuiteBuilder(
                    writer=writer,
                    max_personas=max_personas if max_personas is not None else suite_obj.options.max_personas,
                )
                result = run_suite(
                    suite_obj, workdir, builder.build, segment_fn=builder.resegment, data_dir=data_dir
                )
        except PersonaLLMError as exc:
            err.print(f"[red]error:[/red] {escape(str(exc))}")
            raise typer.Exit(2) from exc
        for report in result.reports:
            table = Table(title=escape(f"suite {result.suite} · {report.dataset}"))
            for col in ("group", "metric", "value", "threshold", ""):
                table.add_column(col, justify="right" if col == "value" else "left")
            for row in summary_rows(report, suite_obj):
                status = {"FAIL": "[red]FAIL[/red]", "ok": "[green]ok[/green]"}.get(row["status"], "")
                table.add_row(row["group"], row["metric"], format_value(row["value"]), row["threshold"], status)
            console.print(table)
            for note in report.notes:
                console.print(f"[dim]note: {escape(note)}[/dim]", soft_wrap=True)
        for dataset, failure in result.failures:
            err.print(f"[red]FAIL[/red] {escape(dataset)}: {escape(failure.message)}")
        if not result.passed:
            raise typer.Exit(1)

