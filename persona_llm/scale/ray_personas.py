"""Persona writing on Ray: each segment's persona is a call on a Ray actor that holds one connection to
one OpenAI-compatible endpoint (a vLLM server per GPU node, or the server this machine started).

The driver prepares the writer once (texts index, support index), puts it in Ray's object store, and
starts `concurrency` actors per endpoint; each actor loads the prompt templates (checked against the
driver's by hash), opens the run and runs `write_segment_outcome`, the same function the local threads
run. Outcomes come back as they finish; the driver keeps the gates' bookkeeping, distinctness and the
saved files, so a Ray run writes what a local run writes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from persona_llm.errors import BackendError, ConfigError
from persona_llm.llm.base import Capabilities, LLMSettings
from persona_llm.llm.chat_model import ChatModel
from persona_llm.llm.client import open_chat_model
from persona_llm.personas.prompting import PromptTemplates
from persona_llm.personas.writer import PersonaWriter, SegmentOutcome, write_segment_outcome
from persona_llm.runs.rundir import RunDir
from persona_llm.scale.session import RaySession
from persona_llm.schema.segments import Segment

#: Backends that start their own server (which a worker must not start again): a worker connects to
#: the one the driver started, so this works on one machine only, and extra endpoints are refused.
_SERVER_STARTING = frozenset({"embedded"})


@dataclass(frozen=True)
class ChatEndpoint:
    """How a worker connects to a model the driver has checked: URL, served model, capabilities."""

    base_url: str
    model: str
    capabilities: Capabilities

    @classmethod
    def of(cls, chat: ChatModel) -> ChatEndpoint:
        return cls(chat.base_url, chat.model, chat.capabilities)

    def connect(self, settings: LLMSettings) -> ChatModel:
        return ChatModel.from_settings(settings, base_url=self.base_url, model=self.model, capabilities=self.capabilities)


def endpoints(chat: ChatModel, settings: LLMSettings, urls: Sequence[str]) -> list[ChatEndpoint]:
    """The driver's own endpoint plus every other URL of `urls`, each opened once here through its
    backend (which checks it answers and reads its model and context) before any worker starts."""
    found = [ChatEndpoint.of(chat)]
    others = [u for u in dict.fromkeys(urls) if u.rstrip("/") != chat.base_url]
    if others and settings.backend in _SERVER_STARTING:
        raise ConfigError(
            f"llm_urls needs a backend that connects to servers (vllm or openai), not {settings.backend!r}"
        )
    for url in others:
        with open_chat_model(settings.model_copy(update={"base_url": url})) as other:
            if other.model != chat.model:
                raise ConfigError(f"{url} serves {other.model!r}, not {chat.model!r} like {chat.base_url}")
            found.append(ChatEndpoint.of(other))
    return found


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
    ray = executor.start()
    from ray.util.actor_pool import ActorPool

    slots = [e for e in endpoints(chat, settings, executor.settings.llm_urls) for _ in range(settings.concurrency)]
    slots = slots[: max(1, len(segments))]
    writer_ref = ray.put(writer.for_worker())  # once: every actor reads the same prepared state
    options: dict[str, Any] = {"num_cpus": executor.settings.writer_cpus}
    key = settings.api_key()
    if key != "not-needed":  # workers on other nodes do not share the driver's environment
        options["runtime_env"] = {"env_vars": {settings.api_key_env: key}}
    worker_class = ray.remote(PersonaWorker).options(**options)
    actors = [
        worker_class.remote(writer_ref, templates.version, templates.sha256, str(run.path), settings, endpoint)
        for endpoint in slots
    ]
    try:
        pool = ActorPool(actors)
        yield from pool.map_unordered(
            lambda actor, segment: actor.write.remote(segment, different_from.get(segment.segment_id, [])),
            list(segments),
        )
    except ray.exceptions.RayActorError as exc:  # a worker that could not start (or died): say why, in one line
        raise BackendError(f"a Ray persona worker failed: {' '.join(str(exc).split())[:500]}") from exc
    finally:
        for actor in actors:
            ray.kill(actor)
