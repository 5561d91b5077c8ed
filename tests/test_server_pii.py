"""No PII the pipeline redacted comes back out through the server: a run built from customer texts full of
email addresses and phone numbers (the real pipeline, personas from the scripted server), then every read
endpoint, every text, and searches aimed at the PII, checked for the planted values and by the eval's
independent PII detector (persona_llm.evaluation.pii_check, which shares no rule with the redactor).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from persona_llm import workflows
from persona_llm.evaluation.pii_check import find_leaks
from persona_llm.llm.client import LLMSettings
from persona_llm.runs.workspace import Workspace
from persona_llm.server import ServerSettings, create_app
from tests.conftest import copy_workspace
from tests.fake_openai import FakeOpenAIServer
from tests.run_store_data import customer_texts
from tests.test_run_store import persona_reply
from tests.test_server import client_for

PHONES = ["+1 415 555 0142", "(415) 555-0199", "+44 20 7946 0958", "call 030 901820", "+86 138 0013 8000"]


def pii_frame() -> tuple[Any, list[str], list[str]]:
    """The run-store texts, each with an email address and a phone number of its writer added."""
    frame = customer_texts(users_per_topic=16, texts_per_user=3, seed=3)
    emails, phones = [], []
    for i, row in enumerate(frame.itertuples()):
        email = f"{row.user_id.replace('-', '.')}.{i}@example-mail.com"
        phone = PHONES[i % len(PHONES)]
        emails.append(email)
        phones.append(phone)
        frame.loc[row.Index, "text"] = f"{row.text} Write to me at {email} or phone {phone} any time."
    return frame, emails, phones


@pytest.fixture(scope="module")
def pii_workspace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], list[str]]:
    base = tmp_path_factory.mktemp("pii-ws")
    frame, emails, phones = pii_frame()
    frame.to_csv(base / "pii.csv", index=False)
    with FakeOpenAIServer(default=persona_reply("Private")) as server:
        settings = LLMSettings(backend="openai", base_url=server.base_url, model="fake-model", cache_dir=base / "llm")
        workflows.build(
            base / "pii.csv", base / "ws", columns=workflows.column_map(workflows.Config(), user="user_id", text="text"),
            settings=settings, max_segments=2,
        )  # fmt: skip
    return base / "ws", emails, phones


def digits(text: str) -> str:
    return re.sub(r"\D", "", text)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_no_redacted_pii_comes_back_through_any_endpoint(
    pii_workspace: tuple[Path, list[str], list[str]], anyio_backend: str
) -> None:
    workspace, emails, phones = pii_workspace
    run = Workspace.open(workspace).current()
    texts = run.load_texts()
    assert texts["text"].str.contains(r"\[EMAIL\]").all(), "the pipeline must have redacted every email"
    assert run.load_personas() and all(p.quotes for p in run.load_personas())

    bodies: dict[str, str] = {}

    async def get(url: str, **params: Any) -> httpx.Response:
        r = await c.get(url, params=params)
        assert r.status_code == 200, (url, r.text)
        bodies[f"{url} {params}"] = r.text
        return r

    unlimited = ServerSettings(rate_per_minute=1e6, rate_burst=10_000)
    async with client_for(create_app(workspace, settings=unlimited)) as c:
        await get("/v1/runs")
        await get("/v1/map")
        for seg in (await get("/v1/segments")).json()["segments"]:
            await get(f"/v1/segments/{seg['segment_id']}")
        for p in (await get("/v1/personas")).json()["personas"]:
            await get(f"/v1/personas/{p['persona_id']}")
            await get(f"/v1/personas/{p['persona_id']}", format="markdown")
        for text_id in texts["text_id"]:
            await get(f"/v1/texts/{text_id}")
        for q in ["email", "write to me", "example", "mail com", "phone", "415", "555", "0142", "call", "EMAIL",
                  "PHONE", emails[0], "coffee"]:  # fmt: skip
            found = await get("/v1/search", q=q, limit=50)
            if q in ("write to me", "coffee", "EMAIL", "PHONE"):
                assert found.json()["total"] > 0, q  # the texts are there, redacted
        assert (await get("/v1/search", q=emails[0].split("@")[0], limit=50)).json()["total"] == 0

    everything = "\n".join(bodies.values())
    assert "[EMAIL]" in everything and "[PHONE]" in everything  # the texts were served, redacted
    assert pii_found(bodies, emails, phones) == []


def pii_found(bodies: dict[str, str], emails: list[str], phones: list[str]) -> list[str]:
    """Each planted email (or its local part) or phone (by its digits) in a response, and whatever the
    independent detector finds: `where: what`."""
    found = []
    for where, body in bodies.items():
        found += [f"{where}: {e}" for e in emails if e in body or e.split("@")[0] in body]
        found += [f"{where}: {p}" for p in set(phones) if digits(p) in digits(body)]
        found += [f"{where}: {kind} {text}" for kind, text in find_leaks(body) if kind in ("email", "phone")]
    return found


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_check_finds_pii_a_text_would_leak(
    pii_workspace: tuple[Path, list[str], list[str]], anyio_backend: str, tmp_path: Path
) -> None:
    """The check above can fail: a run whose stored text still held its email and phone is caught."""
    workspace, emails, phones = pii_workspace
    copy = copy_workspace(workspace, tmp_path / "ws")
    run = Workspace.open(copy).current()
    frame = run.load_texts()
    frame.loc[0, "text"] = f"unredacted: mail {emails[0]} or phone {phones[0]}"
    run.save_texts(frame)
    async with client_for(create_app(copy)) as c:
        body = (await c.get(f"/v1/texts/{frame.loc[0, 'text_id']}")).text
    found = pii_found({"text": body}, emails, phones)
    assert any(emails[0] in f for f in found) and any(phones[0] in f for f in found)
    assert any(": email " in f for f in found) and any(": phone " in f for f in found)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_no_redacted_pii_comes_back_through_chat(
    pii_workspace: tuple[Path, list[str], list[str]], anyio_backend: str
) -> None:
    """A model that repeats whole texts and a question that asks for the contact details: the stream holds
    the redacted texts ([EMAIL], [PHONE]) and none of the planted values."""
    from tests.test_server_chat import SHOWN, fake_model, sse

    workspace, emails, phones = pii_workspace

    def parrot(body: dict[str, Any]) -> dict[str, Any]:
        prompt = body["messages"][-1]["content"]
        if prompt.startswith("TASK route"):
            return {"content": {"intent": "search_texts", "segment_ids": [], "query": "email phone write to me"}}
        shown = SHOWN.findall(prompt)
        text_id, sid, text = shown[0]
        return {"content": {"answer": f"They wrote: {text} [{text_id}]", "citations": [t for t, _, _ in shown[:3]],
                            "quotes": [{"text_id": text_id, "segment_id": int(sid), "text": text[:120]}]}}  # fmt: skip

    with fake_model(parrot) as (server, model):
        app = create_app(workspace, chat_model=model, chat_strategy="router")
        async with client_for(app) as c:
            r = await c.post("/v1/chat", json={"question": "What email addresses and phone numbers did customers leave?"})
    events = sse(r.text)
    assert events[-1][0] == "final", events[-1]
    final = events[-1][1]
    assert final["citations"] and "[EMAIL]" in r.text  # the texts came back, redacted
    assert any("[EMAIL]" in m["content"] for m in server.requests[-1]["messages"])  # and went to the model so
    assert pii_found({"chat": r.text}, emails, phones) == []
    assert all(pii_found({"prompt": json.dumps(req)}, emails, phones) == [] for req in server.requests)
