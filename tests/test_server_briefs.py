"""Briefs over HTTP and the model behind the server: `POST /v1/briefs` returns the BriefWriter's validated,
gated brief (JSON, Markdown or HTML) from the real writer and ChatModel against the scripted
OpenAI-compatible server; a wrong persona or field is a 422 before any model time is spent; a model that
is starting, busy, failing or too slow is a 503 or a 502, never a 500; requests take the model slot in
turn."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from persona_llm.briefs import parse_brief
from persona_llm.common.textmatch import is_verbatim
from persona_llm.llm.client import LLMSettings, open_chat_model
from persona_llm.runs.workspace import Workspace
from persona_llm.server import ServerSettings, create_app
from tests.fake_openai import FakeOpenAIServer
from tests.test_briefs import campaign, reply_with, supported_insight
from tests.test_server import CHAT_KEY, READ_KEY, auth, client_for, live_server, make_keys

pytestmark = pytest.mark.anyio

GOAL = "launch of the annual plan"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_campaign(sid: int, texts: list[tuple[str, str]]) -> dict[str, Any]:
    return campaign([supported_insight(texts)])


@contextlib.contextmanager
def fake_model(reply: Any = None, **settings: Any) -> Iterator[tuple[FakeOpenAIServer, Any]]:
    with FakeOpenAIServer(default=reply or reply_with(make_campaign)) as server:
        llm = LLMSettings(backend="openai", base_url=server.base_url, model="fake-model", use_cache=False, max_retries=0,
                          **settings)  # fmt: skip
        with open_chat_model(llm) as model:
            yield server, model


async def test_a_campaign_brief_over_http(persona_workspace: Path) -> None:
    run = Workspace.open(persona_workspace).current()
    persona = run.load_personas()[0]
    texts = run.load_texts().set_index("text_id")
    with fake_model() as (server, model):
        app = create_app(persona_workspace, keys=make_keys(), chat_model=model)
        async with client_for(app) as c:
            body = {"persona_id": persona.persona_id, "goal": f"  {GOAL} ", "channel": "email"}
            r = await c.post("/v1/briefs", json=body, headers=auth(CHAT_KEY))
            assert r.status_code == 200, r.text
            brief = parse_brief(r.json()["brief"])
            md = await c.post("/v1/briefs", json={**body, "format": "md"}, headers=auth(CHAT_KEY))
            html = await c.post("/v1/briefs", json={**body, "format": "html"}, headers=auth(CHAT_KEY))
            assert (await c.post("/v1/briefs", json=body, headers=auth(READ_KEY))).status_code == 403
            assert (await c.get("/v1/info")).json()["features"] == ["chat", "briefs"]
    assert r.json()["run"] == run.path.name
    assert brief.kind == "campaign" and brief.goal == GOAL and brief.audience.persona_id == persona.persona_id
    assert (brief.audience.user_count, brief.audience.share) == (persona.user_count, persona.share)
    assert brief.proof_points and all(
        is_verbatim(q.text, texts.loc[q.text_id, "text"]) and int(texts.loc[q.text_id, "segment_id"]) == persona.segment_id
        for q in brief.proof_points
    )
    assert md.headers["content-type"].startswith("text/markdown") and brief.key_message in md.text
    assert html.headers["content-type"].startswith("text/html") and "<script" not in html.text
    assert len(server.requests) == 3  # one model call per brief


async def test_bad_brief_requests_are_422s_before_any_model_call(persona_workspace: Path) -> None:
    persona = Workspace.open(persona_workspace).current().load_personas()[0]
    with fake_model() as (server, model):
        app = create_app(persona_workspace, chat_model=model)
        async with client_for(app) as c:
            for body, field in [
                ({"persona_id": "nobody", "goal": GOAL}, "persona_id"),
                ({"persona_id": "all", "goal": GOAL, "kind": "campaign"}, "persona_id"),  # all: messaging only
                ({"persona_id": persona.persona_id, "goal": "   "}, "goal"),
                ({"persona_id": persona.persona_id, "goal": "x" * 301}, "goal"),
                ({"persona_id": persona.persona_id, "goal": GOAL, "channel": "c" * 61}, "channel"),
                ({"persona_id": persona.persona_id, "goal": GOAL, "kind": "poem"}, "kind"),
                ({"persona_id": persona.persona_id, "goal": GOAL, "format": "pdf"}, "format"),
                ({"persona_id": persona.persona_id, "goal": GOAL, "model": "gpt"}, "model"),
                ({"goal": GOAL}, "persona_id"),
            ]:
                r = await c.post("/v1/briefs", json=body)
                assert r.status_code == 422, (body, r.text)
                assert field in {f["field"] for f in r.json()["fields"]}, (body, r.json())
            unknown_run = await c.post("/v1/briefs", json={"persona_id": persona.persona_id, "goal": GOAL, "run": "old"})
            assert unknown_run.status_code == 404
    assert server.requests == []


async def test_a_starting_busy_failing_or_slow_model_is_503_or_502_never_500(persona_workspace: Path) -> None:
    persona_id = Workspace.open(persona_workspace).current().load_personas()[0].persona_id
    body = {"persona_id": persona_id, "goal": GOAL}
    # Given as settings, the model starts with the app (lifespan); until it answers: 503, not ready.
    app = create_app(persona_workspace, llm=LLMSettings(backend="openai", base_url="http://127.0.0.1:9/v1", model="m"))
    async with client_for(app) as c:  # the ASGI transport runs no lifespan: this model never starts
        r = await c.post("/v1/briefs", json=body)
        assert r.status_code == 503 and "starting" in r.json()["error"] and r.headers["retry-after"] == "10"
        ready = await c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["llm"] == {"ok": False, "detail": "starting"}
        assert (await c.get("/v1/segments")).status_code == 200  # reading needs no model
    # Busy: the one slot taken and no room to wait.
    with fake_model() as (server, model):
        app = create_app(persona_workspace, chat_model=model, settings=ServerSettings(llm_slots=1, llm_queue=0))
        assert app.state.ctx.model.queue.try_admit()
        async with client_for(app) as c:
            r = await c.post("/v1/briefs", json=body)
        assert r.status_code == 503 and "busy" in r.json()["error"] and server.requests == []
    # The model answers with an error: 502 (the fault is upstream), the slot is given back.
    with fake_model({"status": 500, "message": "out of memory"}) as (_, model):
        app = create_app(persona_workspace, chat_model=model)
        async with client_for(app) as c:
            r = await c.post("/v1/briefs", json=body, headers={"X-Request-ID": "brief-502"})
        assert r.status_code == 502 and r.json()["request_id"] == "brief-502"
        assert app.state.ctx.model.queue.admitted == 0
    # Too slow: the server's llm_timeout_s bounds each call of a model it opened from settings.
    with FakeOpenAIServer(default={"sleep": 5.0, "content": "{}"}) as slow:
        llm = LLMSettings(backend="openai", base_url=slow.base_url, model="fake-model", use_cache=False, max_retries=0)
        app = create_app(persona_workspace, llm=llm, settings=ServerSettings(llm_timeout_s=1.0))
        async with app.router.lifespan_context(app), client_for(app) as c:
            for _ in range(100):  # the model opens in the background
                if (await c.get("/readyz")).status_code == 200:
                    break
                await anyio.sleep(0.05)
            started = time.monotonic()
            r = await c.post("/v1/briefs", json=body)
            took = time.monotonic() - started
        assert r.status_code == 502 and took < 4.5, (took, r.text)


def test_briefs_take_the_model_slot_in_turn_and_none_fails(persona_workspace: Path) -> None:
    persona_id = Workspace.open(persona_workspace).current().load_personas()[0].persona_id
    active, peak, lock = [0], [0], threading.Lock()
    reply = reply_with(make_campaign)

    def slow_reply(request: dict[str, Any]) -> dict[str, Any]:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            time.sleep(0.3)
            return reply(request)
        finally:
            with lock:
                active[0] -= 1

    codes: list[int] = []
    with fake_model(slow_reply) as (server, model):
        app = create_app(persona_workspace, chat_model=model, settings=ServerSettings(llm_slots=1, llm_queue=4))
        with live_server(app) as url:

            def ask() -> None:
                with httpx.Client(base_url=url, timeout=120) as client:
                    codes.append(client.post("/v1/briefs", json={"persona_id": persona_id, "goal": GOAL}).status_code)

            threads = [threading.Thread(target=ask) for _ in range(3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
    assert codes == [200, 200, 200] and peak[0] == 1 and len(server.requests) == 3
