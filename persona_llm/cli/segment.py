"""`segment`, `build` and `segments`: make a run from an input file, list a run's segments."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from persona_llm.cli.app import (
    ExecutorOption,
    ForceOption,
    LlmModelOption,
    LlmOption,
    LlmUrlOption,
    LlmUrlsOption,
    QuietOption,
    RayAddressOption,
    RunArgument,
    WriterAgentOption,
    app,
    console,
    fail,
    out_console,
    url_list,
)
from persona_llm.cli.personas import persona_progress, personas_summary
from persona_llm.errors import PersonaLLMError, RunNotPublishedError

# The options every command that reads an input file takes (segment, build).
InputArgument = Annotated[Path, typer.Argument(help="CSV, JSONL or Parquet file (gzip too).", metavar="INPUT")]
OutOption = Annotated[
    Path,
    typer.Option("--out", "-o", help="Workspace to write a new run into and publish (a new or empty folder becomes one)."),
]
UserColumnOption = Annotated[str | None, typer.Option(help="Column holding the user (author, customer) id.")]
TextColumnOption = Annotated[str | None, typer.Option(help="Column holding the text.")]
IdColumnOption = Annotated[
    str | None, typer.Option(help="Column holding a unique text id (default: generated from the row number).")
]
AttributesOption = Annotated[
    str | None,
    typer.Option(help="Comma-separated extra columns to summarise per segment (default: all other columns)."),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        help="TOML config: \\[columns] user/text/id/attributes, \\[pipeline] parameters, \\[store] url, "
        "\\[scale] executor."
    ),
]
MinTextsOption = Annotated[int | None, typer.Option(help="Minimum texts per user to segment them.")]
MaxRowsOption = Annotated[int | None, typer.Option(help="Read at most this many rows.")]
StoreUrlOption = Annotated[
    str | None, typer.Option(help="Chroma server URL (default: a persistent store inside the run).")
]
DEFAULT_OUT = Path("runs/latest")


class _Progress:
    """One line per finished stage on stderr, and a spinner meanwhile (interactive terminals only)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.status: Any = None if quiet or not console.is_terminal else console.status("starting", spinner="dots")

    def hook(self, stage: str, event: str, elapsed: float) -> None:
        if self.quiet:
            return
        if event == "start":
            if self.status is not None:
                self.status.update(f"[bold]{stage}[/] ...")
        else:
            console.print(f"  [green]✓[/] {stage:<9} {elapsed:7.2f} s")

    def __enter__(self) -> _Progress:
        if self.status is not None:
            self.status.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.status is not None:
            self.status.stop()


def _inputs(config: Path | None, **flags: str | None) -> tuple[Any, Any]:
    from persona_llm.workflows import column_map, load_config

    cfg = load_config(config)
    return cfg, column_map(cfg, **flags)


def print_segment_summary(pipe: Any, run_path: Path | None, published: bool) -> None:
    seg = pipe.segments_
    m = pipe.manifest_
    table = Table(title=f"{len(seg.segments)} segments · run {seg.run_id}", show_lines=False)
    for col in ("segment", "users", "share", "texts", "cohesion"):
        table.add_column(col, justify="right")
    table.add_column("top keywords")
    for s in seg.segments:
        table.add_row(
            str(s.segment_id), str(s.size), f"{s.share:.1%}", str(s.n_texts), f"{s.quality.cohesion:.2f}",
            ", ".join(k.term for k in s.keywords[:6]),
        )  # fmt: skip
    if seg.n_users > seg.n_assigned:
        table.add_row("-1", str(seg.n_users - seg.n_assigned), f"{seg.noise_share:.1%}", "", "", "(unassigned)")
    out_console.print(table)
    q = seg.quality
    silhouette = q.get("silhouette")
    forgotten = f", of forgotten users {m.rows.of_forgotten_users} (skipped)" if m.rows.of_forgotten_users else ""
    out_console.print(
        f"rows read {m.rows.read}, kept {m.rows.kept}, rejected {m.rows.rejected} "
        f"{dict(m.rows.rejected_by_stage)}{forgotten} · users {seg.n_users} · coverage {seg.coverage:.1%} "
        f"(HDBSCAN alone {1 - (q.get('noise_share_hdbscan') or 0):.1%}) · silhouette "
        f"{silhouette if silhouette is None else round(silhouette, 3)}"
    )
    timing = " · ".join(f"{k} {v:.1f}s" for k, v in m.timings_s.items())
    out_console.print(f"timings: {timing} · peak RSS {m.peak_rss_mb:.0f} MB")
    if run_path is not None:  # None: the run is still being written (build goes on to personas)
        out_console.print(f"wrote [bold]{run_path}[/]{' (published)' if published else ''}")


@app.command()
def segment(
    input_path: InputArgument,
    out: OutOption = DEFAULT_OUT,
    user_column: UserColumnOption = None,
    text_column: TextColumnOption = None,
    id_column: IdColumnOption = None,
    attributes: AttributesOption = None,
    config: ConfigOption = None,
    embedder: str | None = typer.Option(
        None, help="minilm, minilm-static (fast tier), e5-multilingual, auto, or a model path."
    ),
    backend: str | None = typer.Option(None, help="Embedding backend: torch, onnx or onnx-int8."),
    reducer: str | None = typer.Option(None, help="auto (UMAP from 2000 users up), none, pca[:N] or umap[:N]."),
    min_texts: MinTextsOption = None,
    min_cluster_size: int | None = typer.Option(None, help="Smallest segment (default: ~1% of users)."),
    engine: str | None = typer.Option(None, help="auto, fast_hdbscan or hdbscan."),
    reassign: bool | None = typer.Option(None, "--reassign/--no-reassign", help="Reassign noise users."),
    fit_sample: str | None = typer.Option(
        None, help="auto (a 20,000-user sample above 50,000 users), none, or a number of users to fit on."
    ),
    seed: int | None = typer.Option(None, help="Random seed."),
    max_rows: MaxRowsOption = None,
    store_url: StoreUrlOption = None,
    executor: ExecutorOption = None,
    ray_address: RayAddressOption = None,
    force: ForceOption = False,
    quiet: QuietOption = False,
) -> None:
    """Segment users by what they write into a new run of the workspace --out, and publish it."""
    from persona_llm import workflows
    from persona_llm.segment.sample_fit import parse_fit_sample

    overrides = {
        "embedder": embedder, "embedding_backend": backend, "reducer": reducer, "min_texts": min_texts,
        "min_cluster_size": min_cluster_size, "engine": engine, "reassign_outliers": reassign,
        "random_state": seed,
    }  # fmt: skip
    try:
        if fit_sample is not None:
            overrides["fit_sample"] = parse_fit_sample(fit_sample)
        cfg, columns = _inputs(config, user=user_column, text=text_column, id=id_column, attributes=attributes)
        scale = workflows.scale_settings(cfg, executor=executor, ray_address=ray_address)
        with _Progress(quiet) as progress:
            result = workflows.segment(
                input_path, out, columns=columns, config=cfg, overrides=overrides, store_url=store_url,
                max_rows=max_rows, force=force, show_progress=not quiet, stage_hook=progress.hook, scale=scale,
            )  # fmt: skip
    except PersonaLLMError as exc:
        fail(exc)
    if not quiet:
        print_segment_summary(result.pipeline, result.run.path, result.published)


@app.command()
def build(
    input_path: InputArgument,
    out: OutOption = DEFAULT_OUT,
    user_column: UserColumnOption = None,
    text_column: TextColumnOption = None,
    id_column: IdColumnOption = None,
    attributes: AttributesOption = None,
    config: ConfigOption = None,
    min_texts: MinTextsOption = None,
    max_rows: MaxRowsOption = None,
    store_url: StoreUrlOption = None,
    llm: LlmOption = None,
    llm_url: LlmUrlOption = None,
    llm_model: LlmModelOption = None,
    language: str = typer.Option("auto", help="Persona language: en, zh or auto (the segment's)."),
    max_segments: int | None = typer.Option(None, help="Write personas for the largest N segments only."),
    agent: WriterAgentOption = None,
    executor: ExecutorOption = None,
    ray_address: RayAddressOption = None,
    llm_urls: LlmUrlsOption = None,
    force: ForceOption = False,
    quiet: QuietOption = False,
) -> None:
    """Segment INPUT, write a persona per segment, and publish the run when every persona was written."""
    from persona_llm import workflows

    def announce(pipe: Any) -> None:
        if not quiet:
            print_segment_summary(pipe, None, published=False)
            console.print(f"[bold]personas[/] backend {settings.backend}; about a minute per segment on a 2-core CPU")

    try:
        cfg, columns = _inputs(config, user=user_column, text=text_column, id=id_column, attributes=attributes)
        settings = workflows.llm_settings(llm, llm_url, llm_model)
        scale = workflows.scale_settings(cfg, executor=executor, ray_address=ray_address, llm_urls=url_list(llm_urls))
        with _Progress(quiet) as progress:
            result = workflows.build(
                input_path, out, columns=columns, settings=settings, config=cfg,
                overrides={"min_texts": min_texts}, store_url=store_url, max_rows=max_rows,
                max_segments=max_segments, language=language, force=force, show_progress=not quiet,
                stage_hook=progress.hook, before_personas=announce, progress=None if quiet else persona_progress,
                scale=scale, **({"agent": agent} if agent else {}),
            )  # fmt: skip
    except RunNotPublishedError as exc:
        fail(exc, code=1)
    except PersonaLLMError as exc:
        fail(exc)
    if not quiet:
        personas_summary(result.personas, result.writer, result.run.path)
        console.print(f"published run {result.run.path.name}" if result.published else f"wrote {result.run.path}")


@app.command("segments")
def list_segments(run: RunArgument) -> None:
    """Print the segments of a run as JSON lines (id, size, share, keywords)."""
    from persona_llm.runs.workspace import resolve_run

    try:
        segment_set = resolve_run(run).load_segments()
    except PersonaLLMError as exc:
        fail(exc)
    for s in segment_set.segments:
        row = {"segment_id": s.segment_id, "size": s.size, "share": s.share, "keywords": [k.term for k in s.keywords]}
        sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
