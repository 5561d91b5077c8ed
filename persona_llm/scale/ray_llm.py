"""LLM work on Ray: units of work (a segment's persona, a persona's brief) spread over Ray actors, each
holding one connection to one OpenAI-compatible endpoint (a vLLM server per GPU node, or the server this
machine started). The one scheduler of the ray executor: ray_personas and ray_briefs say what a worker
does with a unit; this module checks the endpoints, starts the actors, hands out the units and stops them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from persona_llm.errors import BackendError, ConfigError
from persona_llm.llm.base import Capabilities, LLMSettings
from persona_llm.llm.chat_model import ChatModel
from persona_llm.llm.client import open_chat_model
from persona_llm.scale.session import RaySession

#: Backends that start their own server (which a worker must not start again): a worker connects to
#: the one the driver started, so this works on one machine only, and extra endpoints are refused.
_SERVER_STARTING = frozenset({"embedded"})

Unit = TypeVar("Unit")


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


def map_over_endpoints(
    session: RaySession,
    chat: ChatModel,
    settings: LLMSettings,
    worker: type,
    worker_args: Callable[[ChatEndpoint], tuple[Any, ...]],
    units: Sequence[Unit],
    call: Callable[[Any, Unit], Any],
    what: str,
) -> Iterator[Any]:
    """What `call(actor, unit)` returns for each unit, as actors finish them (any order).

    Actors of class `worker` are started with `worker(*worker_args(endpoint))`: `settings.concurrency` per
    endpoint (the driver's own and every other URL of the session's `llm_urls`), taken round-robin over
    the endpoints so that a few units still reach every endpoint, and no more actors than units. `what`
    names the work in errors ("persona", "brief"). The actors are stopped when the iterator ends."""
    ray = session.start()
    from ray.util.actor_pool import ActorPool

    found = endpoints(chat, settings, session.settings.llm_urls)
    slots = [endpoint for _ in range(settings.concurrency) for endpoint in found][: max(1, len(units))]
    options: dict[str, Any] = {"num_cpus": session.settings.writer_cpus}
    key = settings.api_key()
    if key != "not-needed":  # workers on other nodes do not share the driver's environment
        options["runtime_env"] = {"env_vars": {settings.api_key_env: key}}
    worker_class = ray.remote(worker).options(**options)
    actors = [worker_class.remote(*worker_args(endpoint)) for endpoint in slots]
    try:
        yield from ActorPool(actors).map_unordered(call, list(units))
    except ray.exceptions.RayActorError as exc:  # a worker that could not start (or died): say why, in one line
        raise BackendError(f"a Ray {what} worker failed: {' '.join(str(exc).split())[:500]}") from exc
    finally:
        for actor in actors:
            ray.kill(actor)
