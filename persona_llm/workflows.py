"""What a user runs, as library functions: `segment`, `write_personas`, `build`, `evaluate`, and the
workspace operations. The CLI, the benchmarks, the tests and the server call these; nothing here imports
typer or rich.

Where results go (`out`):
    a workspace           a new run is written into it and published when complete
    a new or empty folder becomes a workspace, then as above
    a run directory       refused, unless `force=True`, which replaces that run whole
    anything else         refused untouched (a user's files are never ours to write over)
The destination is checked (and the workspace locked) before any work starts, so a bad `--out` costs
nothing, and a run that fails or is killed leaves the published run exactly as it was. A run that fails
because too few rows were left still hands over its rejects: `rejects-<time>.csv` at the top of the
workspace (beside a forced single run: `<run>.rejects-<time>.csv`), named in the error.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from persona_llm.errors import ConfigError, PersonaLLMError, RunNotPublishedError, RunStoreError, TooFewRowsError
from persona_llm.runs.rundir import RunDir, write_rejects_csv
from persona_llm.runs.workspace import Workspace, resolve_run
from persona_llm.scale.settings import ScaleSettings

StageHook = Callable[[str, Literal["start", "end"], float], None]

CONFIG_TABLES = frozenset({"columns", "pipeline", "store", "scale"})
STORE_URL_ENV = "PERSONA_LLM_CHROMA_URL"


# -- configuration ------------------------------------------------------------------------------------


@dataclass
class Config:
    """A TOML config file: [columns] (ColumnMap table), [pipeline] (SegmentPipeline parameters), [store],
    [scale] (where the work runs: persona_llm.scale.ScaleSettings)."""

    columns: dict[str, Any] = field(default_factory=dict)
    pipeline: dict[str, Any] = field(default_factory=dict)
    store_url: str | None = None
    path: Path | None = None
    scale: ScaleSettings = field(default_factory=ScaleSettings)


def load_config(path: str | Path | None) -> Config:
    """Read a config file; misspelt tables or keys are errors naming the file, not silently ignored."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found") from exc
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    unknown = sorted(set(doc) - CONFIG_TABLES)
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {', '.join(unknown)}; use [columns], [pipeline], [store], [scale]")
    for table in CONFIG_TABLES & set(doc):
        if not isinstance(doc[table], dict):
            raise ConfigError(f"{path}: {table} must be a table: [{table}]")
    unknown = sorted(set(doc.get("store", {})) - {"url"})
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) in [store]: {', '.join(unknown)}; use url")
    return Config(
        columns=dict(doc.get("columns", {})), pipeline=dict(doc.get("pipeline", {})),
        store_url=doc.get("store", {}).get("url"), path=path,
        scale=ScaleSettings.from_table(dict(doc.get("scale", {})), source=str(path)),
    )  # fmt: skip


def column_map(config: Config, **flags: str | None) -> Any:
    """The ColumnMap from the config's [columns] with flags (user, text, id, attributes) winning."""
    from persona_llm.segment.ingest import ColumnMap

    table = dict(config.columns)
    table.update({k: v for k, v in flags.items() if v is not None})
    if not table.get("user") or not table.get("text"):
        raise ConfigError("say which columns hold the user id and the text: --user-column and --text-column")
    return ColumnMap.from_table(table, source=str(config.path or "command line"))


def make_pipeline(config: Config, overrides: dict[str, Any] | None = None, **runtime: Any) -> Any:
    """A SegmentPipeline from the config's [pipeline] table, overrides (None ignored) and runtime
    arguments (show_progress, stage_hook, executor)."""
    from persona_llm.segment.pipeline import SegmentPipeline

    params = dict(config.pipeline)
    params.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return SegmentPipeline(**runtime, **params)
    except TypeError as exc:
        where = "[pipeline]: " if config.pipeline else ""
        raise ConfigError(f"{where}unknown pipeline parameter: {exc}") from exc


def llm_settings(
    llm: str | None = None,
    llm_url: str | None = None,
    llm_model: str | None = None,
    *,
    api_key_env: str | None = None,
    threads: int | None = None,
    concurrency: int | None = None,
    **extra: Any,
) -> Any:
    """LLMSettings from explicit choices over the PERSONA_LLM_* environment variables (`extra`: any other
    LLMSettings field). An unknown backend name fails here, before any work, not after segmentation."""
    from persona_llm.llm.client import LLMSettings
    from persona_llm.llm.registry import get_backend

    settings = LLMSettings.from_env(
        backend=llm, base_url=llm_url, model=llm_model, api_key_env=api_key_env, n_threads=threads,
        concurrency=concurrency, **extra,
    )  # fmt: skip
    get_backend(settings.backend)
    return settings


def scale_settings(config: Config | None = None, **flags: Any) -> ScaleSettings:
    """The config's [scale] with flags (executor, ray_address, llm_urls...; None ignored) winning."""
    return (config or Config()).scale.with_overrides(**flags)


@contextlib.contextmanager
def open_executor(scale: ScaleSettings) -> Iterator[Any]:
    """The executor [scale] chooses for the block: None (this process: the default) or a RayExecutor,
    closed after (a Ray it started is stopped)."""
    from persona_llm.scale import open_executor as make

    executor = make(scale)
    try:
        yield executor
    finally:
        if executor is not None:
            executor.close()


def settings_for_scale(settings: Any, scale: ScaleSettings) -> Any:
    """The LLM settings with [scale] llm_urls applied: the first is the driver's endpoint when the settings
    name none. Several endpoints need the ray executor (the local one talks to one endpoint)."""
    if not scale.llm_urls:
        return settings
    if scale.executor != "ray":
        raise ConfigError("[scale] llm_urls spreads segments over several endpoints: it needs executor = \"ray\"")
    settings = settings if settings is not None else llm_settings()
    if settings.base_url is None:
        settings = settings.model_copy(update={"base_url": scale.llm_urls[0]})
    return settings


# -- where results go ---------------------------------------------------------------------------------


@dataclass
class Target:
    """An output checked and, for a workspace, locked: `run()` gives the run to write into."""

    path: Path
    workspace: Workspace | None
    force: bool

    @contextlib.contextmanager
    def run(self, *, parent: RunDir | None = None) -> Iterator[RunDir]:
        if self.workspace is not None:
            with self.workspace.new_run(parent=parent) as run:
                yield run
        else:
            with RunDir.staged(self.path, overwrite=self.force) as run:
                yield run

    def forgotten_users(self) -> frozenset[str]:
        """Users `persona-llm forget` removed from the workspace (hashes): new data must not bring them
        back, so the pipeline skips their rows as it reads them. Read under the workspace lock."""
        return self.workspace.forgotten_users() if self.workspace is not None else frozenset()

    def publish(self, run: RunDir) -> bool:
        """Publish `run` in the workspace (a forced single run is in place already)."""
        if self.workspace is None:
            return False
        self.workspace.publish(run.path.name)
        return True

    def failed_rejects_path(self) -> Path:
        """A new file for the rejects of a run that failed: outside every run, so no run is changed."""
        stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
        if self.workspace is not None:
            folder, stem = self.workspace.path, f"rejects-{stamp}"
        else:
            folder, stem = self.path.parent, f"{self.path.name}.rejects-{stamp}"
        path, n = folder / f"{stem}.csv", 1
        while path.exists():
            n += 1
            path = folder / f"{stem}.{n}.csv"
        return path


@contextlib.contextmanager
def rejects_kept_on_failure(target: Target) -> Iterator[None]:
    """When the block fails because too few rows were left, write the rejects of that attempt where the
    target says (`Target.failed_rejects_path`) and name the file in the error: bad rows are never lost,
    even when no run is written."""
    try:
        yield
    except TooFewRowsError as exc:
        if exc.rejects is None or not len(exc.rejects):
            raise
        path = target.failed_rejects_path()
        try:
            write_rejects_csv(path, exc.rejects)
        except OSError as err:
            raise TooFewRowsError(
                f"{exc.message}; the rejects could not be written to {path}: {err.strerror or err}",
                path=exc.path, rejects=exc.rejects,
            ) from exc  # fmt: skip
        raise TooFewRowsError(
            f"{exc.message}; each rejected row and its reason: {path}",
            path=exc.path, rejects=exc.rejects, rejects_path=path,
        ) from exc  # fmt: skip


@contextlib.contextmanager
def open_target(out: str | Path, *, force: bool = False) -> Iterator[Target]:
    """Check (and for a workspace lock) where results go, before any work; see the module docstring."""
    path = Path(out)
    if RunDir.is_run(path) and not Workspace.is_workspace(path):
        if not force:
            raise RunStoreError(
                f"{path}: is a run directory already; pass --force to replace it, or write to a new folder"
            )
        yield Target(path, None, force=True)
        return
    existed = path.exists()
    created = not Workspace.is_workspace(path)
    workspace = Workspace.open_or_create(path)
    try:
        with workspace.lock():
            yield Target(path, workspace, force=force)
    except BaseException:
        if created:
            _undo_new_workspace(workspace, existed)
        raise


def _undo_new_workspace(workspace: Workspace, existed: bool) -> None:
    """A workspace this call created, whose first run failed, is put back as it was (gone, or the empty
    folder it was), unless it now holds something for the user: a run, or the rejects of the attempt."""
    if workspace.run_names() or workspace.current_name() or any(workspace.path.glob("rejects-*.csv")):
        return
    shutil.rmtree(workspace.path, ignore_errors=True)
    if existed:
        workspace.path.mkdir(exist_ok=True)


# -- segment, personas, build -------------------------------------------------------------------------


@dataclass
class RunResult:
    """What a workflow made: the run, whether it is published, and (after segment) the fitted pipeline."""

    run: RunDir
    published: bool
    pipeline: Any = None
    personas: list[Any] = field(default_factory=list)
    writer: Any = None


def segment(
    input_path: str | Path,
    out: str | Path,
    *,
    columns: Any,
    config: Config | None = None,
    overrides: dict[str, Any] | None = None,
    store_url: str | None = None,
    max_rows: int | None = None,
    force: bool = False,
    show_progress: bool = False,
    stage_hook: StageHook | None = None,
    scale: ScaleSettings | None = None,
) -> RunResult:
    """Segment INPUT into a new run at `out` and publish it.

    A fit that finds no segment raises NoSegmentsError (which minimum was not met, what to change) and
    writes nothing: a run of unassigned users is no result to publish. `scale` (default: the config's
    [scale]) chooses where the embed stage runs."""
    config = config or Config()
    scale = scale or config.scale
    pipe = make_pipeline(config, overrides, show_progress=show_progress, stage_hook=stage_hook)
    store = _store(store_url or config.store_url)
    with open_executor(scale) as executor, open_target(out, force=force) as target:
        pipe.executor = executor
        pipe.forgotten_users = target.forgotten_users()
        with rejects_kept_on_failure(target), target.run() as run:
            pipe.fit_file(input_path, columns, max_rows=max_rows)
            pipe.require_segments()
            pipe.write(run, store=store)
        published = target.publish(run)
    return RunResult(run=run, published=published, pipeline=pipe)


def write_personas(
    target_path: str | Path,
    settings: Any = None,
    *,
    language: str = "auto",
    segment_ids: Sequence[int] | None = None,
    chat: Any = None,
    scale: ScaleSettings | None = None,
    **writer_params: Any,
) -> RunResult:
    """Write personas for a run. In a workspace the published run is copied into a new run, the personas
    are written there and it is published (the published run itself is never modified); a plain run
    directory is written in place. `scale` chooses where segments are written (default: here)."""
    scale = scale or ScaleSettings()
    settings = settings_for_scale(settings, scale)
    with open_executor(scale) as executor:
        return _write_personas(target_path, settings, language, segment_ids, chat, executor, writer_params)


def _write_personas(
    target_path: str | Path,
    settings: Any,
    language: str,
    segment_ids: Sequence[int] | None,
    chat: Any,
    executor: Any,
    writer_params: dict[str, Any],
) -> RunResult:
    from persona_llm.personas.writer import PersonaWriteError, PersonaWriter

    writer = PersonaWriter(settings, chat=chat, language=language, executor=executor, **writer_params)
    path = Path(target_path)
    if Workspace.is_workspace(path.parent.parent) and path.parent.name == "runs":
        # A workspace's runs are never changed in place: the published one must stay as readers saw it.
        raise RunStoreError(
            f"{path}: is a run of the workspace {path.parent.parent}; write personas to the workspace, which "
            "makes a new run from its published one"
        )
    if not Workspace.is_workspace(path):
        run = RunDir.open(path)
        personas = writer.write(run, segment_ids)
        return RunResult(run=run, published=False, personas=personas, writer=writer)
    workspace = Workspace.open(path)
    with workspace.lock():
        parent = workspace.current()
        failure: PersonaWriteError | None = None
        with workspace.new_run(parent=parent) as run:
            try:
                personas = writer.write(run, segment_ids)
            except PersonaWriteError as exc:  # keep the personas that were written; do not publish
                failure, personas = exc, run.load_personas()
        if failure is not None:
            raise _unpublished(failure, workspace, run)
        workspace.publish(run.path.name)
    return RunResult(run=run, published=True, personas=personas, writer=writer)


def build(
    input_path: str | Path,
    out: str | Path,
    *,
    columns: Any,
    settings: Any = None,
    config: Config | None = None,
    overrides: dict[str, Any] | None = None,
    store_url: str | None = None,
    max_rows: int | None = None,
    max_segments: int | None = None,
    language: str = "auto",
    force: bool = False,
    show_progress: bool = False,
    stage_hook: StageHook | None = None,
    before_personas: Callable[[Any], None] | None = None,
    chat: Any = None,
    scale: ScaleSettings | None = None,
    **writer_params: Any,
) -> RunResult:
    """Segment INPUT, write personas for the largest `max_segments` segments (all by default), and
    publish the run only when every persona was written. `scale` (default: the config's [scale]) chooses
    where embedding and persona writing run."""
    from persona_llm.personas.writer import PersonaWriteError, PersonaWriter

    config = config or Config()
    scale = scale or config.scale
    settings = settings_for_scale(settings, scale)
    pipe = make_pipeline(config, overrides, show_progress=show_progress, stage_hook=stage_hook)
    store = _store(store_url or config.store_url)
    writer = PersonaWriter(settings, chat=chat, language=language, **writer_params)
    failure: PersonaWriteError | None = None
    with open_executor(scale) as executor, open_target(out, force=force) as target:
        pipe.executor = writer.executor = executor
        pipe.forgotten_users = target.forgotten_users()
        with rejects_kept_on_failure(target), target.run() as run:
            pipe.fit_file(input_path, columns, max_rows=max_rows)
            pipe.require_segments()  # no segment, no persona: fail before writing anything
            pipe.write(run, store=store)
            if before_personas is not None:
                before_personas(pipe)
            ids = [s.segment_id for s in pipe.segments_.segments]  # numbered largest first
            if max_segments is not None:
                ids = ids[:max_segments]
            personas: list[Any] = []
            if ids:
                try:
                    personas = writer.write(run, ids)
                except PersonaWriteError as exc:
                    failure, personas = exc, run.load_personas()
        if failure is not None:
            if target.workspace is None:
                raise failure
            raise _unpublished(failure, target.workspace, run)
        published = target.publish(run)
    return RunResult(run=run, published=published, pipeline=pipe, personas=personas, writer=writer)


def _unpublished(failure: PersonaLLMError, workspace: Workspace, run: RunDir) -> RunNotPublishedError:
    return RunNotPublishedError(
        f"{failure}. The run {run.path.name} was kept but NOT published (the published run is unchanged); "
        f"publish it anyway with `persona-llm publish {workspace.path} {run.path.name}`",
        run_name=run.path.name,
    )


def _store(url: str | None) -> Any:
    url = url or os.environ.get(STORE_URL_ENV)
    if not url:
        return None
    from persona_llm.segment.store import ChromaStore

    return ChromaStore(url=url)


# -- evaluate -----------------------------------------------------------------------------------------


def evaluate(
    target_path: str | Path,
    *,
    labels: str | None = None,
    suite: Any = None,
    dataset: str | None = None,
    embedder: Any = "run",
    judge_settings: Any = None,
    chat_settings: Any = None,
    stability: bool = True,
    on_warning: Callable[[str], None] | None = None,
    briefs: Sequence[str | Path] = (),
) -> Any:
    """Evaluate a run (a workspace's published one, or a run directory); writes eval.json into it.

    `embedder`: "run" loads the model the run was built with, a name loads that model, an object is
    used as is, None skips the persona vector metrics. `judge_settings`: LLMSettings for the LLM judge
    (None: no judge). `chat_settings`: LLMSettings for the segment chat evals (chat, injection; None:
    skipped); the same settings as the judge's share one backend. `stability`: re-segment two
    subsamples with the run's recorded parameters. `briefs`: brief JSON files (`persona-llm brief
    --format json`) to check against the run.
    """
    from persona_llm.evaluation.brief_eval import load_briefs
    from persona_llm.evaluation.build import run_resegmenter
    from persona_llm.evaluation.runner import evaluate_run, run_embedder

    brief_list = load_briefs(briefs)  # a bad file fails here, before any work
    run = resolve_run(target_path)
    if isinstance(embedder, str):
        try:
            if embedder == "run":
                embedder = run_embedder(run)
            else:
                from persona_llm.segment.embed import get_embedder

                embedder = get_embedder(embedder)
        except Exception as exc:  # noqa: BLE001 - persona vector metrics are skipped, the rest still run
            if on_warning is not None:
                on_warning(f"no embedder ({exc}); persona vector metrics skipped")
            embedder = None
    segment_fn, no_segment_fn = None, "--no-stability"
    if stability:
        try:
            segment_fn = run_resegmenter(run)
        except PersonaLLMError as exc:  # stability is skipped with this reason; the rest runs
            no_segment_fn = f"cannot re-segment: {exc}"
    with contextlib.ExitStack() as stack:
        from persona_llm.llm.client import open_chat_model

        judge = stack.enter_context(open_chat_model(judge_settings)) if judge_settings is not None else None
        chat = None
        if chat_settings is not None:
            chat = judge if chat_settings == judge_settings else stack.enter_context(open_chat_model(chat_settings))
        return evaluate_run(
            run, labels, suite, embedder, judge, chat=chat, dataset=dataset, segment_fn=segment_fn,
            no_segment_fn_reason=no_segment_fn, briefs=brief_list,
        )  # fmt: skip


# -- workspace operations -----------------------------------------------------------------------------


def history(workspace: str | Path) -> list[Any]:
    return Workspace.open(workspace).history()


def publish(workspace: str | Path, name: str) -> RunDir:
    ws = Workspace.open(workspace)
    with ws.lock():
        return ws.publish(name)


def rollback(workspace: str | Path) -> RunDir:
    ws = Workspace.open(workspace)
    with ws.lock():
        return ws.rollback()


def gc(workspace: str | Path, keep: int) -> list[str]:
    """Remove old runs (and their collections on a store server) and leftovers of killed writers."""
    ws = Workspace.open(workspace)

    def drop_server_collections(run: RunDir) -> None:
        from persona_llm.segment.store import ChromaStore, store_for_run

        with contextlib.suppress(PersonaLLMError, OSError):
            store = store_for_run(run)
            if isinstance(store, ChromaStore) and store.url:  # a persistent store goes with its folder
                store.delete_run(run.run_id)

    with ws.lock():
        return ws.gc(keep, before_remove=drop_server_collections)
