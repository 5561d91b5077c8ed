"""Persona writing on Ray: each segment's persona is a call on a Ray actor that holds one connection to
one OpenAI-compatible endpoint (persona_llm.scale.ray_llm starts and feeds the actors).

The driver prepares the writer once (texts index, support index), puts it in Ray's object store, and
starts `concurrency` actors per endpoint; each actor loads the prompt templates (checked against the
driver's by hash), opens the run and runs `write_segment_outcome`, the same function the local threads
run. Outcomes come back as they finish; the driver keeps the gates' bookkeeping, distinctness and the
saved files, so a Ray run writes what a local run writes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from persona_llm.errors import ConfigError
from persona_llm.llm.base import LLMSettings
from persona_llm.llm.chat_model import ChatModel
from persona_llm.personas.prompting import PromptTemplates
from persona_llm.personas.writer import PersonaWriter, SegmentOutcome, write_segment_outcome
from persona_llm.runs.rundir import RunDir
from persona_llm.scale.ray_llm import ChatEndpoint, map_over_endpoints
from persona_llm.scale.session import RaySession
from persona_llm.schema.segments import Segment


class PersonaWorker:
    """A Ray actor: one prepared writer, one connection, the run; writes the segments it is handed."""

    def __init__(
        self,
        writer: PersonaWriter,
        prompt_version: str,
        prompt_sha256: str,
        run_path: str,
        settings: LLMSettings,
        endpoint: ChatEndpoint,
    ) -> None:
        self.templates = PromptTemplates.load(prompt_version)
        if self.templates.sha256 != prompt_sha256:
            raise ConfigError(
                f"prompt {prompt_version} differs on this node (sha256 {self.templates.sha256[:12]} vs "
                f"{prompt_sha256[:12]} on the driver): install the same persona-llm everywhere"
            )
        self.writer = writer
        self.run = RunDir.open(run_path)
        self.settings = settings
        self.chat = endpoint.connect(settings)

    def write(self, segment: Segment, different_from: list[dict[str, Any]]) -> SegmentOutcome:
        return write_segment_outcome(
            self.writer, self.chat, self.templates, self.run, segment, self.settings, different_from
        )


def write_segments_on_ray(
    executor: RaySession,
    writer: PersonaWriter,
    chat: ChatModel,
    templates: PromptTemplates,
    run: RunDir,
    segments: Sequence[Segment],
    settings: LLMSettings,
    different_from: dict[int, list[dict[str, Any]]],
) -> Iterator[SegmentOutcome]:
    """Outcomes of `segments` as Ray actors finish them (see the module docstring)."""
    writer_ref = executor.start().put(writer.for_worker())  # once: every actor reads the same prepared state
    return map_over_endpoints(
        executor, chat, settings, PersonaWorker,
        lambda endpoint: (writer_ref, templates.version, templates.sha256, str(run.path), settings, endpoint),
        segments,
        lambda actor, segment: actor.write.remote(segment, different_from.get(segment.segment_id, [])),
        "persona",
    )  # fmt: skip
