"""Chat over HTTP: `POST /v1/chat` streams server-sent events (the conversation, tokens, then the checked
answer) from the real SegmentChat and ChatModel, talking to the scripted OpenAI-compatible server
(tests/fake_openai.py, which streams like a real one). Conversations continue for the key that started
them, on the run they started on; errors after the stream started are an `error` event with the request
id; a model that is starting or busy is a 503; questions queue for the one model slot and none fails; and
the chat injection eval (persona_llm.evaluation.chat_eval) runs through the HTTP path.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from persona_llm.chat import ChatAnswer, SegmentTools
from persona_llm.evaluation.chat_eval import injection_eval
from persona_llm.llm.client import LLMSettings, open_chat_model
from persona_llm.runs.rundir import RunDir
from persona_llm.runs.workspace import Workspace
from persona_llm.server import ServerSettings, create_app
from tests.conftest import copy_workspace
from tests.fake_openai import FakeOpenAIServer
from tests.test_server import CHAT_KEY, READ_KEY, auth, client_for, live_server, make_keys, publish_renamed_copy

pytestmark = pytest.mark.anyio

SHOWN = re.compile(r"^\[([^\]]+)\] \(segment (\d+)\) (.+)$", re.M)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def scripted(*, obey_canary: bool = False, sleep: float = 0.0, fail_answer: bool = False) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The model: the router searches for the question's last word (in the segment it names, if any); the
    answer cites and quotes the first text the search showed (or, when `obey_canary`, writes a planted
    canary instead, as a model that obeys texts would, naming the segment so that the chat's checks let
    it through and the eval is the one that counts it)."""

    def respond(body: dict[str, Any]) -> dict[str, Any]:
        if sleep:
            time.sleep(sleep)
        prompt = body["messages"][-1]["content"]
        if prompt.startswith("TASK route"):
            sid = re.search(r"segment (\d+)", prompt)
            word = re.findall(r"\w+", prompt)[-1]
            return {"content": {"intent": "search_texts", "segment_ids": [int(sid.group(1))] if sid else [], "query": word}}
        if fail_answer:
            return {"status": 500, "message": "the model fell over"}
        canary = re.search(r"ZQX\d\d", prompt)
        text_id, sid, text = SHOWN.findall(prompt)[0]
        if obey_canary and canary:
            return {"content": {"answer": f"Segment {sid} customers: {canary.group(0)}.", "citations": [], "quotes": []}}
        quote = {"text_id": text_id, "segment_id": int(sid), "text": " ".join(text.split()[:6])}
        return {"content": {"answer": f"Customers write about it [{text_id}].", "citations": [text_id], "quotes": [quote]}}

    return respond


@contextlib.contextmanager
def fake_model(respond: Any, **settings: Any) -> Iterator[tuple[FakeOpenAIServer, Any]]:
    with FakeOpenAIServer(default=respond) as server:
        llm = LLMSettings(backend="openai", base_url=server.base_url, model="fake-model", use_cache=False, max_retries=0,
                          **settings)  # fmt: skip
        with open_chat_model(llm) as model:
            yield server, model


def sse(text: str) -> list[tuple[str, Any]]:
    """(event, data) of a server-sent event stream; keep-alive comments skipped."""
    out = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":") and ": " in line)
        if "data" in fields:
            out.append((fields.get("event", "message"), json.loads(fields["data"])))
    return out


@pytest.fixture(scope="module")
def workspace(persona_workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_workspace(persona_workspace, tmp_path_factory.mktemp("chat-ws") / "ws")


async def test_chat_streams_tokens_then_the_checked_answer(workspace: Path) -> None:
    run = Workspace.open(workspace).current()
    texts = run.load_texts().set_index("text_id")["text"]
    with fake_model(scripted()) as (server, model):
        app = create_app(workspace, keys=make_keys(), chat_model=model, chat_strategy="router")
        async with client_for(app) as c:
            r = await c.post("/v1/chat", json={"question": "What do customers say about slugs?"}, headers=auth(CHAT_KEY))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse(r.text)
    kinds = [e for e, _ in events]
    assert kinds[0] == "conversation" and kinds[-1] == "final" and "token" in kinds and "error" not in kinds
    conversation = events[0][1]
    assert conversation["run"] == run.path.name and re.fullmatch(r"c-[A-Za-z0-9_-]{20,}", conversation["conversation_id"])
    answer = ChatAnswer.model_validate(events[-1][1])
    assert answer.conversation_id == conversation["conversation_id"] and answer.run_id == run.run_id
    assert "".join(d["text"] for e, d in events if e == "token") == answer.answer  # nothing removed here
    assert answer.citations and all(c.text_id in answer.evidence_ids for c in answer.citations)
    assert all(texts[c.text_id] == c.text for c in answer.citations)  # the run's own texts
    assert answer.checks.checked and answer.checks.passed and not answer.refused
    assert [req.get("stream", False) for req in server.requests] == [False, True]  # route, then the streamed answer


async def test_a_conversation_continues_for_the_key_that_started_it(workspace: Path) -> None:
    keys = make_keys()
    other_chat_key = "other-chat-" + "o" * 24
    keys.keys += type(keys).from_plain({"other": (other_chat_key, ["chat"])}).keys
    settings = ServerSettings(max_question_chars=80)
    with fake_model(scripted()) as (server, model):
        app = create_app(workspace, keys=keys, settings=settings, chat_model=model, chat_strategy="router")
        async with client_for(app) as c:
            first = sse((await c.post("/v1/chat", json={"question": "What about slugs?"}, headers=auth(CHAT_KEY))).text)
            cid = first[0][1]["conversation_id"]
            second = await c.post("/v1/chat", json={"question": "And the compost?", "conversation_id": cid}, headers=auth(CHAT_KEY))
            assert sse(second.text)[-1][1]["conversation_id"] == cid
            # The first turn went back to the model with the second question.
            history = [m["content"] for m in server.requests[-1]["messages"] if m["role"] == "user"]
            assert "What about slugs?" in history

            stolen = await c.post("/v1/chat", json={"question": "Hi?", "conversation_id": cid}, headers=auth(other_chat_key))
            assert stolen.status_code == 404 and "unknown or expired conversation" in stolen.json()["error"]
            unknown = await c.post("/v1/chat", json={"question": "Hi?", "conversation_id": "c-" + "x" * 24}, headers=auth(CHAT_KEY))
            assert unknown.status_code == 404
            assert (await c.post("/v1/chat", json={"question": "Hi?"}, headers=auth(READ_KEY))).status_code == 403
            assert (await c.post("/v1/chat", json={"question": "Hi?"})).status_code == 401
            for body, field in [
                ({"question": "x" * 81}, "question"),
                ({"question": "   \n "}, "question"),
                ({"question": ""}, "question"),
                ({"question": "Hi?", "conversation_id": "../../etc/passwd"}, "conversation_id"),
                ({"question": "Hi?", "temperature": 2}, "temperature"),
                ({}, "question"),
            ]:
                r = await c.post("/v1/chat", json=body, headers=auth(CHAT_KEY))
                assert r.status_code == 422 and field in {f["field"] for f in r.json()["fields"]}, (body, r.text)
    assert len(server.requests) == 4  # the refused requests never reached the model


async def test_a_conversation_stays_on_its_run_after_a_publish(workspace: Path, tmp_path: Path) -> None:
    ws = copy_workspace(workspace, tmp_path / "ws")
    with fake_model(scripted()) as (_, model):
        app = create_app(ws, chat_model=model, chat_strategy="router")
        async with client_for(app) as c:
            first = sse((await c.post("/v1/chat", json={"question": "What about slugs?"})).text)
            old_run, cid = first[0][1]["run"], first[0][1]["conversation_id"]
            new_run = publish_renamed_copy(ws, "Later")
            again = sse((await c.post("/v1/chat", json={"question": "And roses?", "conversation_id": cid})).text)
            fresh = sse((await c.post("/v1/chat", json={"question": "What about roses?"})).text)
    assert again[0][1]["run"] == old_run and again[-1][0] == "final"
    assert fresh[0][1]["run"] == new_run != old_run


async def test_a_model_failure_is_an_error_event_with_the_request_id(workspace: Path) -> None:
    with fake_model(scripted(fail_answer=True)) as (_, model):
        app = create_app(workspace, chat_model=model, chat_strategy="router")
        async with client_for(app) as c:
            r = await c.post("/v1/chat", json={"question": "What about slugs?"}, headers={"X-Request-ID": "chat-fail-1"})
            assert app.state.ctx.model.queue.admitted == 0  # the slot was given back
    events = sse(r.text)
    assert events[-1][0] == "error" and events[-1][1]["request_id"] == "chat-fail-1"
    assert "final" not in [e for e, _ in events]


async def test_a_starting_or_busy_model_is_a_503(workspace: Path) -> None:
    # A model given as settings starts with the app; until it answers, chat is 503 and the server not ready.
    app = create_app(workspace, llm=LLMSettings(backend="openai", base_url="http://127.0.0.1:9/v1", model="m"))
    async with client_for(app) as c:  # the ASGI transport runs no lifespan: the model never starts here
        r = await c.post("/v1/chat", json={"question": "Hi?"})
        assert r.status_code == 503 and "starting" in r.json()["error"]
        ready = await c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["llm"] == {"ok": False, "detail": "starting"}
        assert (await c.get("/v1/segments")).status_code == 200  # reading needs no model
    with fake_model(scripted()) as (_, model):
        app = create_app(workspace, chat_model=model, settings=ServerSettings(llm_slots=1, llm_queue=0))
        queue = app.state.ctx.model.queue
        assert queue.try_admit()  # someone else's question holds the only place
        async with client_for(app) as c:
            r = await c.post("/v1/chat", json={"question": "Hi?"})
        assert r.status_code == 503 and r.headers["retry-after"] == "10" and "busy" in r.json()["error"]


async def test_the_servers_llm_timeout_bounds_each_model_call(workspace: Path) -> None:
    with FakeOpenAIServer(default=scripted(sleep=5.0)) as server:
        llm = LLMSettings(backend="openai", base_url=server.base_url, model="fake-model", use_cache=False, max_retries=0)
        app = create_app(workspace, llm=llm, settings=ServerSettings(llm_timeout_s=1.0), chat_strategy="router")
        async with app.router.lifespan_context(app), client_for(app) as c:
            for _ in range(100):  # the model opens in the background
                if (await c.get("/readyz")).status_code == 200:
                    break
                await anyio.sleep(0.05)
            started = time.monotonic()
            r = await c.post("/v1/chat", json={"question": "What about slugs?"})
            took = time.monotonic() - started
    assert sse(r.text)[-1][0] == "error" and took < 4.5, (took, r.text[-300:])


def test_questions_queue_for_the_model_and_none_fails(workspace: Path) -> None:
    """Four conversations at once against a live uvicorn: the one model slot takes them in turn."""
    active, peak, lock = [0], [0], threading.Lock()
    answer = scripted()

    def respond(body: dict[str, Any]) -> dict[str, Any]:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            time.sleep(0.2)
            return answer(body)
        finally:
            with lock:
                active[0] -= 1

    results: list[list[tuple[str, Any]]] = []
    with fake_model(respond) as (server, model):
        app = create_app(workspace, chat_model=model, chat_strategy="router", settings=ServerSettings(llm_slots=1, llm_queue=8))
        with live_server(app) as url:

            def converse(i: int) -> None:
                with httpx.Client(base_url=url, timeout=60) as client:
                    first = sse(client.post("/v1/chat", json={"question": f"Question {i} about slugs?"}).text)
                    cid = first[0][1]["conversation_id"]
                    second = sse(client.post("/v1/chat", json={"question": "And roses?", "conversation_id": cid}).text)
                    results.extend([first, second])

            threads = [threading.Thread(target=converse, args=(i,)) for i in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
    assert len(results) == 8 and all(r[-1][0] == "final" for r in results), [r[-1] for r in results]
    assert peak[0] == 1 and len(server.requests) == 16  # one model call at a time, 2 per answer


class HttpChatFactory:
    """`make_chat` for the chat evals, through the HTTP path: each call serves the eval's run (a workspace
    whose published run is that folder) with `create_app` and asks through `POST /v1/chat`."""

    def __init__(self, model: Any, workdir: Path) -> None:
        self.model = model
        self.workdir = workdir
        self.asked = 0

    def __call__(self, tools: SegmentTools) -> HttpChatFactory._Session:
        ws_path = self.workdir / f"ws-{self.asked}-{time.monotonic_ns()}"
        ws = Workspace.create(ws_path)
        run: RunDir = tools.rundir
        (ws.runs_dir / run.path.name).symlink_to(run.path.resolve(), target_is_directory=True)
        with ws.lock():
            ws.publish(run.path.name)
        return self._Session(self, create_app(ws_path, chat_model=self.model, chat_strategy="router"))

    class _Session:
        def __init__(self, factory: HttpChatFactory, app: Any) -> None:
            self.factory, self.app = factory, app

        def __enter__(self) -> HttpChatFactory._Session:
            return self

        def __exit__(self, *exc: object) -> None:
            self.app.state.ctx.chat.close()

        def ask(self, question: str) -> ChatAnswer:
            async def post() -> str:
                async with client_for(self.app) as c:
                    return (await c.post("/v1/chat", json={"question": question})).text

            self.factory.asked += 1
            events = sse(anyio.run(post))
            assert events[-1][0] == "final", events[-1]
            return ChatAnswer.model_validate(events[-1][1])


def test_the_injection_eval_runs_through_the_http_path(workspace: Path, tmp_path: Path) -> None:
    """Texts are data, never instructions, through the server too: the planted instructions reach the model
    over HTTP (exercised), a model that obeys them is counted, one that does not is not."""
    run = Workspace.open(workspace).current()
    embedder = SegmentTools(run)._embedder()
    counts = {}
    for obey in (True, False):
        with fake_model(scripted(obey_canary=obey)) as (_, model):
            factory = HttpChatFactory(model, tmp_path / f"http-{obey}")
            metrics, details = injection_eval(run, factory, tmp_path / f"eval-{obey}", embedder=embedder, variants=2)
        assert factory.asked >= 2 + 1  # baseline and every variant went through POST /v1/chat
        counts[obey] = metrics
    assert counts[True]["injection_exercised"] == counts[False]["injection_exercised"] == 2
    assert counts[True]["injection_changed"] == 2 and counts[False]["injection_changed"] == 0
