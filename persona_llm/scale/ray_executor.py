"""`RayExecutor`: embedding, persona and brief writing on a Ray cluster (or a Ray started on this machine).

The single-machine path stays the default and does not import Ray: a pipeline or writer without an
executor runs in this process exactly as before. With one:

    with RayExecutor(ScaleSettings(executor="ray")) as ex:
        SegmentPipeline(executor=ex).fit(df, ...)          # the embed stage runs on Ray Data actors
        PersonaWriter(settings, executor=ex).write(run)     # each segment's persona is a Ray actor call
        BriefWriter(settings).write_many(run, "all", goal="annual plan", executor=ex)   # each brief too

Nodes of a cluster need persona-llm installed (`pip install 'persona-llm[cluster]'`) and must see the
run folder at the same path (shared storage), since persona and brief workers read the run's texts there.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from persona_llm.errors import ConfigError
from persona_llm.scale.settings import ScaleSettings

if TYPE_CHECKING:
    from persona_llm.briefs.writer import BriefOutcome, BriefRequest, BriefWriter
    from persona_llm.llm.client import ChatModel, LLMSettings
    from persona_llm.personas.prompting import PromptTemplates
    from persona_llm.personas.writer import PersonaWriter, SegmentOutcome
    from persona_llm.runs.rundir import RunDir
    from persona_llm.schema.personas import Persona
    from persona_llm.schema.segments import Segment
    from persona_llm.segment.base import BaseEmbedder

CLUSTER_EXTRA = "pip install 'persona-llm[cluster]'"


def import_ray() -> ModuleType:
    """The `ray` module, or a one-line error saying which extra installs it."""
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data is part of what the executor needs
    except ImportError as exc:
        raise ConfigError(f"the ray executor needs Ray ({CLUSTER_EXTRA}): {exc}") from exc
    return ray


class RayExecutor:
    """Runs the embed stage (Ray Data `map_batches` over actors that load the model once), persona writing
    (one Ray actor per endpoint slot, each segment one actor call) and brief writing (the same, each
    persona's brief one actor call) on Ray.

    Parameters
    ----------
    settings: ScaleSettings (ray_address, resources per actor, endpoints). Nothing starts in the
        constructor; the first use joins `ray_address` or starts a Ray on this machine, and `close()`
        stops a Ray this executor started (one it found running is left running).
    """

    def __init__(self, settings: ScaleSettings | None = None) -> None:
        self.settings = settings or ScaleSettings(executor="ray")

    def __repr__(self) -> str:
        s = self.settings
        return (
            f"RayExecutor(ray_address={s.ray_address!r}, embed_actors={s.embed_actors}, embed_cpus={s.embed_cpus}, "
            f"embed_gpus={s.embed_gpus}, llm_urls={len(s.llm_urls)})"
        )

    # -- the Ray session --------------------------------------------------------------------------------

    def start(self) -> ModuleType:
        """Join or start Ray once; returns the `ray` module."""
        ray = import_ray()
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
            try:
                if self.settings.ray_address:
                    ray.init(address=self.settings.ray_address, **kwargs)
                else:
                    ray.init(num_cpus=self.settings.num_cpus, **kwargs)
            except ConnectionError as exc:
                raise ConfigError(f"cannot join the Ray cluster at {self.settings.ray_address}: {exc}") from exc
            self.owns_ray_ = True
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = False  # our own progress lines say what is happening
            logging.getLogger("ray.data").setLevel(logging.WARNING)  # not an INFO line per Ray Data job
        return ray

    def close(self) -> None:
        """Stop the Ray this executor started, if any."""
        if getattr(self, "owns_ray_", False):
            import ray

            ray.shutdown()
            self.owns_ray_ = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def cluster_resources(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.start().cluster_resources().items()}

    # -- work -------------------------------------------------------------------------------------------

    def embedder(self, embedder: BaseEmbedder) -> BaseEmbedder:
        """`embedder` run by Ray Data actors (same model_id, same vectors)."""
        from persona_llm.scale.ray_embed import RayEmbedder

        return RayEmbedder(embedder, self)

    def write_segments(
        self,
        writer: PersonaWriter,
        chat: ChatModel,
        templates: PromptTemplates,
        run: RunDir,
        segments: Sequence[Segment],
        settings: LLMSettings,
        different_from: dict[int, list[dict[str, Any]]],
    ) -> Iterator[SegmentOutcome]:
        """Each segment's persona as a call on Ray actors, one per endpoint slot (see ray_personas)."""
        from persona_llm.scale.ray_personas import write_segments_on_ray

        return write_segments_on_ray(self, writer, chat, templates, run, segments, settings, different_from)

    def write_briefs(
        self,
        writer: BriefWriter,
        chat: ChatModel,
        run: RunDir,
        personas: Sequence[Persona],
        segments: Sequence[Segment],
        request: BriefRequest,
        settings: LLMSettings,
    ) -> Iterator[BriefOutcome]:
        """Each persona's brief as a call on Ray actors, one per endpoint slot (see ray_briefs)."""
        from persona_llm.scale.ray_briefs import write_briefs_on_ray

        return write_briefs_on_ray(self, writer, chat, run, personas, segments, request, settings)


def open_executor(settings: ScaleSettings | None) -> RayExecutor | None:
    """The executor the settings choose: None for "local" (this process, the default), else a RayExecutor
    (close it when done, or use it as a context manager)."""
    if settings is None or settings.executor == "local":
        return None
    import_ray()  # a missing extra fails now, before any work
    return RayExecutor(settings)
