"""The `persona-llm` command line (Typer + rich).

Errors a user can fix (bad input, bad configuration, unreachable backends) print as one line and exit
with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from persona_llm.errors import ConfigError, PersonaLLMError

app = typer.Typer(
    help="Turn what customers write into evidence-backed marketing personas.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)
out_console = Console()


def _fail(exc: Exception) -> None:
    # Messages quote TOML tables like [columns]: escape them or rich takes them for markup and drops them.
    console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
    raise typer.Exit(code=2)


def _load_toml(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    import tomllib

    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found") from exc
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    # A misspelt table or key would otherwise be ignored and the run would quietly use defaults.
    unknown = sorted(set(doc) - CONFIG_TABLES)
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {', '.join(unknown)}; use [columns], [pipeline], [store]")
    for table in CONFIG_TABLES & set(doc):
        if not isinstance(doc[table], dict):
            raise ConfigError(f"{path}: {table} must be a table: [{table}]")
    unknown = sorted(set(doc.get("store", {})) - {"url"})
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) in [store]: {', '.join(unknown)}; use url")
    return doc


CONFIG_TABLES = frozenset({"columns", "pipeline", "store"})


def segment_options_to_pipeline(
    cfg: dict[str, Any], overrides: dict[str, Any], show_progress: bool, stage_hook: Any
) -> Any:
    from persona_llm.segment.pipeline import SegmentPipeline

    params = dict(cfg.get("pipeline", {}))
    params.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return SegmentPipeline(show_progress=show_progress, stage_hook=stage_hook, **params)
    except TypeError as exc:
        raise ConfigError(f"{'[pipeline]: ' if cfg.get('pipeline') else ''}unknown pipeline parameter: {exc}") from exc


def run_segment(
    input_path: Path,
    out: Path,
    *,
    user_column: str | None,
    text_column: str | None,
    id_column: str | None,
    attributes: str | None,
    config: Path | None,
    max_rows: int | None,
    store_url: str | None,
    overrides: dict[str, Any],
    quiet: bool = False,
) -> Any:
    """Segment a file into `out`; prints progress per stage and a summary table. Returns the pipeline."""
    from persona_llm.segment.ingest import ColumnMap
    from persona_llm.segment.store import ChromaStore

    cfg = _load_toml(config)
    table = dict(cfg.get("columns", {}))
    flags = {"user": user_column, "text": text_column, "id": id_column, "attributes": attributes}
    table.update({k: v for k, v in flags.items() if v is not None})  # flags win over the config file
    if not table.get("user") or not table.get("text"):
        raise ConfigError("say which columns hold the user id and the text: --user-column and --text-column")
    columns = ColumnMap.from_table(table, source=config or "command line")
    store_url = store_url or cfg.get("store", {}).get("url") or os.environ.get("PERSONA_LLM_CHROMA_URL")

    status = console.status("starting", spinner="dots") if not quiet else None
    t_start: dict[str, float] = {}

    def hook(stage: str, event: str, elapsed: float) -> None:
        if quiet:
            return
        if event == "start":
            t_start[stage] = time.perf_counter()
            if status is not None:
                status.update(f"[bold]{stage}[/] ...")
        else:
            console.print(f"  [green]✓[/] {stage:<9} {elapsed:7.2f} s")

    pipe = segment_options_to_pipeline(cfg, overrides, show_progress=not quiet, stage_hook=hook)
    if status is not None:
        status.start()
    try:
        pipe.fit_file(input_path, columns, max_rows=max_rows)
        store = ChromaStore(url=store_url) if store_url else None
        pipe.save(out, store=store)
    finally:
        if status is not None:
            status.stop()
    if not quiet:
        print_summary(pipe, out)
    return pipe


def print_summary(pipe: Any, out: Path) -> None:
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
        )
    if seg.n_users > seg.n_assigned:
        table.add_row("-1", str(seg.n_users - seg.n_assigned), f"{seg.noise_share:.1%}", "", "", "(unassigned)")
    out_console.print(table)
    q = seg.quality
    out_console.print(
        f"rows read {m.rows.read}, kept {m.rows.kept}, rejected {m.rows.rejected} "
        f"{dict(m.rows.rejected_by_stage)} · users {seg.n_users} · coverage {seg.coverage:.1%} "
        f"(HDBSCAN alone {1 - (q.get('noise_share_hdbscan') or 0):.1%}) · silhouette "
        f"{q.get('silhouette') if q.get('silhouette') is None else round(q['silhouette'], 3)}"
    )
    timing = " · ".join(f"{k} {v:.1f}s" for k, v in m.timings_s.items())
    out_console.print(f"timings: {timing} · peak RSS {m.peak_rss_mb:.0f} MB")
    out_console.print(f"wrote [bold]{out}[/]: assignments.csv segments.json manifest.json rejects.csv chroma/")


_COMMON_HELP = {
    "user_column": "Column holding the user (author, customer) id.",
    "text_column": "Column holding the text.",
    "id_column": "Column holding a unique text id (default: generated from the row number).",
    "attributes": "Comma-separated extra columns to summarise per segment (default: all other columns).",
    "config": "TOML config: \\[columns] user/text/id/attributes, \\[pipeline] parameters, \\[store] url.",
}


@app.command()
def segment(
    input_path: Path = typer.Argument(..., help="CSV, JSONL or Parquet file (gzip too).", metavar="INPUT"),
    out: Path = typer.Option(Path("runs/latest"), "--out", "-o", help="Run directory to write."),
    user_column: str | None = typer.Option(None, help=_COMMON_HELP["user_column"]),
    text_column: str | None = typer.Option(None, help=_COMMON_HELP["text_column"]),
    id_column: str | None = typer.Option(None, help=_COMMON_HELP["id_column"]),
    attributes: str | None = typer.Option(None, help=_COMMON_HELP["attributes"]),
    config: Path | None = typer.Option(None, help=_COMMON_HELP["config"]),
    embedder: str | None = typer.Option(None, help="minilm, e5-multilingual, auto, or a model path."),
    backend: str | None = typer.Option(None, help="Embedding backend: torch, onnx or onnx-int8."),
    reducer: str | None = typer.Option(None, help="auto (UMAP from 2000 users up), none, pca[:N] or umap[:N]."),
    min_texts: int | None = typer.Option(None, help="Minimum texts per user to segment them."),
    min_cluster_size: int | None = typer.Option(None, help="Smallest segment (default: ~1% of users)."),
    engine: str | None = typer.Option(None, help="auto, fast_hdbscan or hdbscan."),
    reassign: bool | None = typer.Option(None, "--reassign/--no-reassign", help="Reassign noise users."),
    seed: int | None = typer.Option(None, help="Random seed."),
    max_rows: int | None = typer.Option(None, help="Read at most this many rows."),
    store_url: str | None = typer.Option(None, help="Chroma server URL (default: persistent store in OUT/chroma)."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Segment users by what they write; write assignments, segments, manifest, rejects and a store."""
    overrides = {
        "embedder": embedder, "embedding_backend": backend, "reducer": reducer, "min_texts": min_texts,
        "min_cluster_size": min_cluster_size, "engine": engine, "reassign_outliers": reassign,
        "random_state": seed,
    }
    try:
        run_segment(
            input_path, out, user_column=user_column, text_column=text_column, id_column=id_column,
            attributes=attributes, config=config, max_rows=max_rows, store_url=store_url, overrides=overrides,
            quiet=quiet,
        )
    except PersonaLLMError as exc:
        _fail(exc)


@app.command()
def build(
    input_path: Path = typer.Argument(..., help="CSV, JSONL or Parquet file (gzip too).", metavar="INPUT"),
    out: Path = typer.Option(Path("runs/latest"), "--out", "-o", help="Run directory to write."),
    user_column: str | None = typer.Option(None, help=_COMMON_HELP["user_column"]),
    text_column: str | None = typer.Option(None, help=_COMMON_HELP["text_column"]),
    id_column: str | None = typer.Option(None, help=_COMMON_HELP["id_column"]),
    attributes: str | None = typer.Option(None, help=_COMMON_HELP["attributes"]),
    config: Path | None = typer.Option(None, help=_COMMON_HELP["config"]),
    min_texts: int | None = typer.Option(None, help="Minimum texts per user to segment them."),
    max_rows: int | None = typer.Option(None, help="Read at most this many rows."),
    store_url: str | None = typer.Option(None, help="Chroma server URL (default: persistent store in OUT/chroma)."),
    llm: str | None = typer.Option(None, help="embedded (default, CPU), vllm, or openai (any compatible URL)."),
    llm_url: str | None = typer.Option(None, help="Base URL of an OpenAI-compatible server."),
    llm_model: str | None = typer.Option(None, help="Model name on that server."),
    language: str = typer.Option("auto", help="Persona language: en, zh or auto (the segment's)."),
    max_segments: int | None = typer.Option(None, help="Write personas for the largest N segments only."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Segment INPUT, then write a persona per segment (personas.json, personas.md, report.html)."""
    from persona_llm.cli.personas import llm_settings_from_options, run_build_personas

    try:
        pipe = run_segment(
            input_path, out, user_column=user_column, text_column=text_column, id_column=id_column,
            attributes=attributes, config=config, max_rows=max_rows, store_url=store_url,
            overrides={"min_texts": min_texts}, quiet=quiet,
        )
        settings = llm_settings_from_options(llm=llm, llm_url=llm_url, llm_model=llm_model)
        seg_ids = [s.segment_id for s in pipe.segments_.segments]
        if max_segments is not None:
            seg_ids = seg_ids[:max_segments]  # segments are numbered largest first
        run_build_personas(out, settings, language=language, segment_ids=seg_ids, quiet=quiet)
    except PersonaLLMError as exc:
        _fail(exc)


@app.command("segments")
def list_segments(run_dir: Path = typer.Argument(..., help="A run directory.")) -> None:
    """Print the segments of a run as JSON lines (id, size, share, keywords)."""
    try:
        from persona_llm.schema.segments import SegmentSet

        path = run_dir / "segments.json"
        if not path.exists():
            raise ConfigError(f"{path}: not found; is {run_dir} a run directory?")
        seg = SegmentSet.model_validate_json(path.read_text(encoding="utf-8"))
    except PersonaLLMError as exc:
        _fail(exc)
        return
    for s in seg.segments:
        sys.stdout.write(json.dumps({
            "segment_id": s.segment_id, "size": s.size, "share": s.share,
            "keywords": [k.term for k in s.keywords],
        }, ensure_ascii=False) + "\n")


def _register_optional() -> None:
    # The persona and eval commands live next to the code they drive.
    import importlib

    for module in ("persona_llm.cli.personas", "persona_llm.cli.evaluate"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        mod.register(app)


_register_optional()


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
