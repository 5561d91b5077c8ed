"""Brief writing on Ray: each persona's brief is a call on a Ray actor that holds one connection to one
OpenAI-compatible endpoint (persona_llm.scale.ray_llm starts and feeds the actors, as for personas).

The driver prepares the brief writer once (texts index, support index, median cohesion) and puts it in
Ray's object store; each actor loads the kind's agent (its templates checked against the driver's by
hash), opens the run and runs `write_brief_outcome`, the same function the local threads run, so a brief
written on Ray is the brief a local write gives.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from persona_llm.briefs.writer import BriefOutcome, BriefRequest, BriefWriter, write_brief_outcome
from persona_llm.errors import ConfigError
from persona_llm.llm.base import LLMSettings
from persona_llm.llm.chat_model import ChatModel
from persona_llm.runs.rundir import RunDir
from persona_llm.scale.ray_llm import ChatEndpoint, map_over_endpoints
from persona_llm.scale.session import RaySession
from persona_llm.schema.personas import Persona
from persona_llm.schema.segments import Segment


class BriefWorker:
    """A Ray actor: one prepared brief writer, one connection, the run; writes the briefs it is handed."""

    def __init__(
        self,
        writer: BriefWriter,
        request: BriefRequest,
        prompt_sha256: str,
        run_path: str,
        settings: LLMSettings,
        endpoint: ChatEndpoint,
    ) -> None:
        writer.agent_ = writer.load_agent(request.kind)
        templates = writer.agent_.templates
        if templates.sha256 != prompt_sha256:
            raise ConfigError(
                f"prompt {templates.version} differs on this node (sha256 {templates.sha256[:12]} vs "
                f"{prompt_sha256[:12]} on the driver): install the same persona-llm everywhere"
            )
        self.writer = writer
        self.request = request
        self.run = RunDir.open(run_path)
        self.settings = settings
        self.chat = endpoint.connect(settings)

    def write(self, persona: Persona, segment: Segment) -> BriefOutcome:
        return write_brief_outcome(self.writer, self.chat, self.run, persona, segment, self.request, self.settings)


def write_briefs_on_ray(
    executor: RaySession,
    writer: BriefWriter,
    chat: ChatModel,
    run: RunDir,
    personas: Sequence[Persona],
    segments: Sequence[Segment],
    request: BriefRequest,
    settings: LLMSettings,
) -> Iterator[BriefOutcome]:
    """Outcomes of the personas' briefs as Ray actors finish them (see the module docstring)."""
    writer_ref = executor.start().put(writer.for_worker())  # once: every actor reads the same prepared state
    sha = writer.agent_.templates.sha256
    return map_over_endpoints(
        executor, chat, settings, BriefWorker,
        lambda endpoint: (writer_ref, request, sha, str(run.path), settings, endpoint),
        list(zip(personas, segments, strict=True)),
        lambda actor, pair: actor.write.remote(*pair),
        "brief",
    )  # fmt: skip
