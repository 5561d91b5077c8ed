"""The HTTP server over a real published workspace (tests/conftest.py `persona_workspace`, copied before
anything publishes): every read endpoint against the run's own files, API keys and scopes, rate limits,
request ids, 422s naming the field, 409 for a second writer, a newly published run served without a
restart, and the `serve` command on a free loopback port.

Requests go through httpx's ASGI transport (no socket) except where a live uvicorn is the point.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from persona_llm import workflows
from persona_llm.errors import ConfigError
from persona_llm.personas.report import persona_markdown
from persona_llm.runs.rundir import MANIFEST
from persona_llm.runs.workspace import Workspace
from persona_llm.server import ApiKeys, ServerSettings, create_app
from persona_llm.server.auth import hash_key, key_entry, new_key
from persona_llm.server.limits import RateLimiter
from persona_llm.server.requests import RequestIdFilter
from persona_llm.server.settings import is_loopback
from tests.conftest import copy_workspace
from tests.fake_openai import FakeOpenAIServer

ROOT = Path(__file__).resolve().parents[1]

READ_KEY = "read-key-" + "r" * 24
CHAT_KEY = "chat-key-" + "c" * 24
ADMIN_KEY = "admin-key-" + "a" * 24


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_keys() -> ApiKeys:
    return ApiKeys.from_plain(
        {"reader": (READ_KEY, ["read"]), "chatter": (CHAT_KEY, ["read", "chat"]), "ops": (ADMIN_KEY, ["read", "admin"])}
    )


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@contextlib.asynccontextmanager
async def client_for(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@contextlib.contextmanager
def live_server(app: Any) -> Iterator[str]:
    """The app under a real uvicorn on a free loopback port, in a thread; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def publish_renamed_copy(workspace: Path, prefix: str) -> str:
    """A new run: the published one with its personas renamed `<prefix> <segment>`, published the way
    `persona-llm publish` does it (from outside the server). Returns its name."""
    ws = Workspace.open(workspace)
    with ws.lock():
        parent = ws.current()
        with ws.new_run(parent=parent) as run:
            run.save_personas([p.model_copy(update={"name": f"{prefix} {p.segment_id}"}) for p in parent.load_personas()])
    workflows.publish(workspace, run.path.name)
    return run.path.name


@pytest.fixture(scope="module")
def workspace(persona_workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy: tests in this module publish and roll back."""
    return copy_workspace(persona_workspace, tmp_path_factory.mktemp("server-ws") / "ws")


@pytest.fixture(scope="module")
def open_app(persona_workspace: Path) -> Any:
    """No keys (loopback use), read-only tests over the shared workspace."""
    return create_app(persona_workspace)


# -- read endpoints against the run's own files ---------------------------------------------------------


@pytest.mark.anyio
async def test_read_endpoints_serve_the_published_run(open_app: Any, persona_workspace: Path) -> None:
    run = Workspace.open(persona_workspace).current()
    segments, personas = run.load_segments(), run.load_personas()
    async with client_for(open_app) as c:
        info = (await c.get("/v1/info")).json()
        assert info["current_run"] == run.path.name and info["auth"] == "none (loopback only)"

        listed = (await c.get("/v1/runs")).json()
        assert [r["name"] for r in listed["runs"] if r["current"]] == [run.path.name]

        body = (await c.get("/v1/segments")).json()
        assert [s["segment_id"] for s in body["segments"]] == [s.segment_id for s in segments.segments]
        assert body["segments"][0]["keywords"] == [k.term for k in segments.segments[0].keywords[:10]]
        with_persona = {s["segment_id"]: s["persona"]["name"] for s in body["segments"] if s["persona"]}
        assert with_persona == {p.segment_id: p.name for p in personas}

        seg = segments.segments[1]
        detail = (await c.get(f"/v1/segments/{seg.segment_id}")).json()
        assert detail["segment"]["keywords"] == json.loads(seg.model_dump_json())["keywords"]
        assert [r["text_id"] for r in detail["segment"]["representatives"]] == seg.representative_text_ids
        assert set(detail["segment"]["attributes"]) == set(seg.attributes) and "plan" in seg.attributes

        plist = (await c.get("/v1/personas")).json()["personas"]
        assert [(p["persona_id"], p["name"]) for p in plist] == [(p.persona_id, p.name) for p in personas]
        assert plist[0]["quotes"] == [q.model_dump() for q in personas[0].quotes] and plist[0]["quotes"]

        one = (await c.get(f"/v1/personas/{personas[0].persona_id}")).json()
        assert one["persona"] == json.loads(personas[0].model_dump_json())
        md = await c.get(f"/v1/personas/{personas[0].persona_id}", params={"format": "markdown"})
        assert md.headers["content-type"].startswith("text/markdown") and md.text == persona_markdown(personas[0])

        quote = personas[0].quotes[0]
        text = (await c.get(f"/v1/texts/{quote.text_id}")).json()["text"]
        assert quote.text in text["text"] and text["segment_id"] == personas[0].segment_id

        points = (await c.get("/v1/map")).json()
        assert points["n_users"] == len(run.load_assignments()) == len(points["points"])
        assert all(0 <= x <= 1 and 0 <= y <= 1 for x, y, _ in points["points"])
        assert (await c.get("/v1/eval")).status_code == 404  # this run was never evaluated


@pytest.mark.anyio
async def test_search_finds_every_word_and_honours_the_segment_filter(open_app: Any, persona_workspace: Path) -> None:
    texts = Workspace.open(persona_workspace).current().load_texts()

    def expected(frame: Any) -> set[str]:
        low = frame["text"].str.lower()
        return set(frame[low.str.contains(r"\bespresso") & low.str.contains(r"\bmachine")]["text_id"])

    by_segment = {int(s): expected(texts[texts["segment_id"] == s]) for s in sorted(set(texts["segment_id"])) if s != -1}
    # a segment with some of the matches, else one with none: either way the filter must leave some out
    seg = next((s for s, h in by_segment.items() if 0 < len(h) < len(expected(texts))), None)
    seg = seg if seg is not None else next(s for s, h in by_segment.items() if not h)
    async with client_for(open_app) as c:
        everywhere = (await c.get("/v1/search", params={"q": "Espresso MACHINE", "limit": 50})).json()
        inside = (await c.get("/v1/search", params={"q": "espresso machine", "segment_id": seg, "limit": 50})).json()
        prefix = (await c.get("/v1/search", params={"q": "seedling", "limit": 1})).json()
        nothing = (await c.get("/v1/search", params={"q": "!!!"})).json()

    assert {h["text_id"] for h in everywhere["hits"]} == expected(texts) and everywhere["total"] == len(expected(texts))
    assert {h["text_id"] for h in inside["hits"]} == by_segment[seg] and inside["total"] == len(by_segment[seg])
    assert all(h["segment_id"] == seg for h in inside["hits"]) and inside["total"] < everywhere["total"]
    assert [h["score"] for h in everywhere["hits"]] == sorted((h["score"] for h in everywhere["hits"]), reverse=True)
    assert prefix["total"] > 1 and len(prefix["hits"]) == 1 and "seedlings" in prefix["hits"][0]["text"]
    assert nothing["total"] == 0 and nothing["hits"] == []


@pytest.mark.anyio
async def test_bad_input_is_a_422_naming_the_field_never_a_500(open_app: Any) -> None:
    cases = [
        ("GET", "/v1/segments/abc", None, "segment_id"),
        ("GET", "/v1/search", None, "q"),
        ("GET", "/v1/search?q=coffee&limit=0", None, "limit"),
        ("GET", "/v1/search?q=coffee&segment_id=one", None, "segment_id"),
        ("GET", "/v1/search?q=" + "coffee " * 40, None, "q"),
        ("GET", "/v1/personas/p0?format=xml", None, "format"),
        ("POST", "/v1/admin/publish", {}, "run"),
        ("POST", "/v1/admin/publish", {"run": "x", "force": True}, "force"),
        ("POST", "/v1/admin/publish", {"run": ""}, "run"),
        ("POST", "/v1/admin/publish", ["not", "an", "object"], "body"),
    ]
    async with client_for(open_app) as c:
        for method, url, body, field in cases:
            r = await c.request(method, url, json=body)
            assert r.status_code == 422, (url, r.text)
            payload = r.json()
            assert field in {f["field"] for f in payload["fields"]}, (url, payload)
            assert payload["request_id"] == r.headers["x-request-id"]
        broken = await c.post("/v1/admin/publish", content=b'{"run": ', headers={"content-type": "application/json"})
        assert broken.status_code == 422
        # Well-formed but unknown: 404 with a message that names it and no server path.
        for url in ("/v1/segments/99999999999999999999", "/v1/personas/nobody", "/v1/texts/%E2%9C%93",
                    "/v1/segments?run=no-such-run", "/v1/search?q=coffee&segment_id=-7"):  # fmt: skip
            r = await c.get(url)
            assert r.status_code == 404, (url, r.text)
            assert "/tmp" not in r.json()["error"] and str(Path.home()) not in r.json()["error"]
        too_big = await c.post("/v1/admin/publish", json={"run": "x" * 100_000})
        assert too_big.status_code == 413


@pytest.mark.anyio
async def test_nothing_published_is_a_503_and_not_ready(tmp_path: Path) -> None:
    Workspace.create(tmp_path / "empty")
    app = create_app(tmp_path / "empty")
    async with client_for(app) as c:
        assert (await c.get("/healthz")).json() == {"status": "ok"}
        ready = await c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["run"]["ok"] is False
        r = await c.get("/v1/segments")
        assert r.status_code == 503 and "no run is published" in r.json()["error"]
        assert (await c.get("/v1/info")).json()["current_run"] is None


@pytest.mark.anyio
async def test_readyz_checks_the_store_the_run_was_written_to(workspace: Path, tmp_path: Path) -> None:
    async with client_for(create_app(workspace)) as c:
        ready = await c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"]["store"]["ok"], ready.text
        assert "embedded store" in ready.json()["checks"]["store"]["detail"]
    # A run whose records live on a store server that does not answer: not ready, and says why.
    copy = copy_workspace(workspace, tmp_path / "ws")
    run = Workspace.open(copy).current()
    manifest = json.loads(run.file(MANIFEST).read_text())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    manifest["store"] = {"kind": "http", "location": f"http://127.0.0.1:{closed_port}", "collections_prefix": "persona_llm_"}
    run.file(MANIFEST).write_text(json.dumps(manifest))
    async with client_for(create_app(copy)) as c:
        ready = await c.get("/readyz")
        assert ready.status_code == 503 and not ready.json()["checks"]["store"]["ok"]
        assert "store does not answer" in ready.json()["checks"]["store"]["detail"]


@pytest.mark.anyio
async def test_openapi_describes_the_versioned_api(open_app: Any) -> None:
    async with client_for(open_app) as c:
        schema = (await c.get("/openapi.json")).json()
        assert (await c.get("/docs")).status_code == 200
    for path in ("/v1/segments", "/v1/segments/{segment_id}", "/v1/personas/{persona_id}", "/v1/search",
                 "/v1/texts/{text_id}", "/v1/admin/publish", "/v1/admin/rollback", "/healthz", "/readyz"):  # fmt: skip
        assert path in schema["paths"], path
    assert {"HTTPBearer", "APIKeyHeader"} <= set(schema["components"]["securitySchemes"])


# -- keys, scopes, limits, request ids --------------------------------------------------------------------


@pytest.mark.anyio
async def test_keys_and_scopes(persona_workspace: Path) -> None:
    app = create_app(persona_workspace, keys=make_keys())
    async with client_for(app) as c:
        missing = await c.get("/v1/segments")
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert (await c.get("/v1/segments", headers=auth(READ_KEY + "x"))).status_code == 401
        assert (await c.get("/v1/segments", headers=auth(READ_KEY[:-1]))).status_code == 401
        assert (await c.get("/v1/segments", headers=auth(READ_KEY))).status_code == 200
        assert (await c.get("/v1/segments", headers={"X-API-Key": CHAT_KEY})).status_code == 200
        forbidden = await c.post("/v1/admin/rollback", headers=auth(READ_KEY))
        assert forbidden.status_code == 403 and "admin" in forbidden.json()["error"]
        assert (await c.post("/v1/admin/rollback", headers=auth(CHAT_KEY))).status_code == 403
        # Probes, the page and the info line need no key; the info says keys are on.
        assert (await c.get("/healthz")).status_code == 200 and (await c.get("/")).status_code == 200
        assert (await c.get("/v1/info")).json()["auth"] == "api-key"


def test_keys_are_stored_hashed_and_compared_in_constant_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = new_key()
    path = tmp_path / "keys.toml"
    path.write_text(key_entry("dash", key, ["read", "chat"]))
    assert key not in path.read_text() and "hmac-sha256:" in path.read_text()
    keys = ApiKeys.from_file(path)
    assert keys.identify(key) is not None and keys.identify(key).scopes == {"read", "chat"}  # type: ignore[union-attr]
    assert keys.identify(key[:-1]) is None and keys.identify("") is None and keys.identify(None) is None
    # Every configured key is compared, with hmac.compare_digest, whichever one matches.
    many = ApiKeys.from_plain({f"k{i}": (f"key-number-{i:02d}-" + "x" * 20, ["read"]) for i in range(5)})
    calls: list[int] = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    assert many.identify("key-number-00-" + "x" * 20).name == "k0"  # type: ignore[union-attr]
    assert len(calls) == 5
    # The digest is HMAC-SHA256 of the key under the stored salt: a reviewer can recompute it.
    _, salt, digest = re.search(r'hash = "([^"]+)"', path.read_text()).group(1).split(":")  # type: ignore[union-attr]
    assert hmac.new(bytes.fromhex(salt), key.encode(), hashlib.sha256).hexdigest() == digest


@pytest.mark.parametrize(
    "text, message",
    [
        ('[[key]]\nname = "a"\nscopes = ["read"]\n', "hash is missing"),
        ('[[key]]\nname = "a"\nscopes = ["write"]\nhash = "' + hash_key("k" * 20) + '"\n', "scopes must be"),
        ('[[key]]\nname = "a"\nscopes = ["read"]\nhash = "sha1:abcd"\n', "hash must look like"),
        ('[[key]]\nname = "a b"\nscopes = ["read"]\n', "key name"),
        ('[[key]]\nname = "a"\nscopes = ["read"]\nhash = "x"\nkey = "plain"\n', "unknown field(s) key"),
        ("[keys]\n", "unknown table(s) keys"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_a_bad_key_file_is_one_line_naming_the_entry(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "keys.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        ApiKeys.from_file(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_keys_from_the_environment() -> None:
    keys = ApiKeys.configured(environ={"PERSONA_LLM_API_KEYS": f"dash:read:{READ_KEY}; ops:read+admin:{ADMIN_KEY}"})
    assert keys.identify(ADMIN_KEY).scopes == {"read", "admin"}  # type: ignore[union-attr]
    assert keys.identify(READ_KEY).name == "dash"  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="at least 20 characters"):
        ApiKeys.configured(environ={"PERSONA_LLM_API_KEYS": "dash:read:short"})
    with pytest.raises(ConfigError, match="NAME:SCOPE"):
        ApiKeys.configured(environ={"PERSONA_LLM_API_KEYS": "just-a-key-without-name-and-scopes"})


def test_without_keys_only_loopback_may_be_bound() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert is_loopback(host)
        ServerSettings(host=host).check_bind(has_keys=False)
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.org"):
        with pytest.raises(ConfigError, match="without API keys"):
            ServerSettings(host=host).check_bind(has_keys=False)
        ServerSettings(host=host).check_bind(has_keys=True)
    with pytest.raises(ConfigError, match="without API keys"):
        create_app(ROOT, settings=ServerSettings(host="0.0.0.0"))


def test_the_rate_limiter_refills_at_its_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(60, 2, clock=lambda: now[0])
    assert limiter.take("a") == 0 and limiter.take("a") == 0
    assert limiter.take("a") == pytest.approx(1.0)  # one token per second at 60/minute
    assert limiter.take("b") == 0  # keys do not share a bucket
    now[0] += 1.0
    assert limiter.take("a") == 0 and limiter.take("a") > 0
    now[0] += 100.0  # a long pause refills to the burst, not beyond
    assert [limiter.take("a") for _ in range(3)][:2] == [0, 0] and limiter.take("a") > 0


@pytest.mark.anyio
async def test_a_key_over_its_rate_gets_429_with_retry_after(persona_workspace: Path) -> None:
    app = create_app(persona_workspace, keys=make_keys(), settings=ServerSettings(rate_per_minute=6, rate_burst=3))
    async with client_for(app) as c:
        codes = [(await c.get("/v1/segments", headers=auth(READ_KEY))).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        limited = await c.get("/v1/segments", headers=auth(READ_KEY))
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert (await c.get("/v1/segments", headers=auth(CHAT_KEY))).status_code == 200  # another key
        assert (await c.get("/healthz")).status_code == 200  # probes are not limited


@pytest.mark.anyio
async def test_request_ids_reach_the_response_the_error_body_and_the_log(workspace: Path) -> None:
    app = create_app(workspace)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("persona_llm.server")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        async with client_for(app) as c:
            given = await c.get("/v1/segments", headers={"X-Request-ID": "dash-1234"})
            assert given.headers["x-request-id"] == "dash-1234"
            odd = await c.get("/v1/segments", headers={"X-Request-ID": "a b\tc" * 30})
            assert re.fullmatch(r"[0-9a-f]{32}", odd.headers["x-request-id"])
            missing = await c.get("/v1/segments/12345")
            assert missing.json()["request_id"] == missing.headers["x-request-id"]
            runs = Workspace.open(workspace).run_names()
            published = await c.post("/v1/admin/publish", json={"run": runs[0]})
            assert published.status_code == 200
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    rid = published.headers["x-request-id"]
    # The handler's own line (written in a worker thread) and the access line both carry the id.
    assert any(r.getMessage().startswith("published ") and r.request_id == rid for r in records)  # type: ignore[attr-defined]
    assert any("POST /v1/admin/publish 200" in r.getMessage() and r.request_id == rid for r in records)  # type: ignore[attr-defined]
    assert any("GET /v1/segments 200" in r.getMessage() and r.request_id == "dash-1234" for r in records)  # type: ignore[attr-defined]


# -- publishing while serving -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_newly_published_run_is_served_without_a_restart(workspace: Path) -> None:
    app = create_app(workspace, keys=make_keys())
    async with client_for(app) as c:
        before = (await c.get("/v1/personas", headers=auth(READ_KEY))).json()
        # Published from outside the server, as `persona-llm publish` or a refresh job would.
        name = publish_renamed_copy(workspace, "Second")
        after = (await c.get("/v1/personas", headers=auth(READ_KEY))).json()
        assert after["run"] == name != before["run"]
        assert {p["name"] for p in after["personas"]} == {f"Second {p['segment_id']}" for p in before["personas"]}
        assert (await c.get("/v1/info")).json()["current_run"] == name
        # The older run stays readable by name.
        old = (await c.get("/v1/personas", params={"run": before["run"]}, headers=auth(READ_KEY))).json()
        assert [p["name"] for p in old["personas"]] == [p["name"] for p in before["personas"]]

        back = await c.post("/v1/admin/rollback", headers=auth(ADMIN_KEY))
        assert back.status_code == 200 and back.json() == {"published": before["run"], "previous": name, "action": "rollback"}
        assert (await c.get("/v1/personas", headers=auth(READ_KEY))).json()["run"] == before["run"]

        again = await c.post("/v1/admin/publish", json={"run": name}, headers=auth(ADMIN_KEY))
        assert again.status_code == 200 and again.json()["published"] == name
        assert (await c.get("/v1/segments", headers=auth(READ_KEY))).json()["run"] == name
        assert (await c.post("/v1/admin/publish", json={"run": "nope"}, headers=auth(ADMIN_KEY))).status_code == 404
        assert Workspace.open(workspace).publish_log()[-1]["run"] == name


@pytest.mark.anyio
async def test_a_second_writer_gets_409_and_nothing_changes(workspace: Path) -> None:
    app = create_app(workspace)
    ws = Workspace.open(workspace)
    current, other = ws.current_name(), next(n for n in ws.run_names() if n != ws.current_name())
    holder = Workspace.open(workspace)  # another writer (a build, a refresh, the CLI)
    async with client_for(app) as c:
        with holder.lock():
            for r in (await c.post("/v1/admin/publish", json={"run": other}), await c.post("/v1/admin/rollback")):
                assert r.status_code == 409 and f"pid {os.getpid()}" in r.json()["error"]
        assert ws.current_name() == current
        assert (await c.post("/v1/admin/publish", json={"run": other})).status_code == 200  # lock released


@pytest.mark.anyio
async def test_rollback_with_nothing_earlier_is_a_409(persona_workspace: Path, tmp_path: Path) -> None:
    copy = copy_workspace(persona_workspace, tmp_path / "ws")
    async with client_for(create_app(copy)) as c:
        r = await c.post("/v1/admin/rollback")
        assert r.status_code == 409 and "no earlier published run" in r.json()["error"]
        assert str(tmp_path) not in r.json()["error"]


# -- a live uvicorn ------------------------------------------------------------------------------------------


def test_live_uvicorn_serves_concurrent_readers_through_a_publish(workspace: Path) -> None:
    app = create_app(workspace, settings=ServerSettings(rate_per_minute=100_000, rate_burst=10_000))
    failures: list[str] = []
    seen: set[str] = set()
    stop = threading.Event()
    with live_server(app) as url:

        def reader() -> None:
            with httpx.Client(base_url=url, timeout=10) as client:
                while not stop.is_set():
                    r = client.get("/v1/personas")
                    if r.status_code != 200:
                        failures.append(r.text)
                    else:
                        seen.add(r.json()["run"])

        threads = [threading.Thread(target=reader) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        name = publish_renamed_copy(workspace, "Third")
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(timeout=10)
        with httpx.Client(base_url=url) as client:
            assert client.get("/v1/personas").json()["run"] == name
    assert failures == [] and name in seen and len(seen) >= 2


def test_serve_command_listens_on_loopback_and_says_there_are_no_keys(persona_workspace: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PERSONA_LLM_API_KEYS": "",
           "PERSONA_LLM_API_KEYS_FILE": ""}  # fmt: skip
    cmd = [sys.executable, "-c", "from persona_llm.cli import app; app()", "serve", str(persona_workspace)]
    with FakeOpenAIServer(default={"content": "unused"}) as model:
        llm = ["--llm", "openai", "--llm-url", model.base_url, "--llm-model", "fake-model"]
        proc = subprocess.Popen([*cmd, "--port", str(port), *llm], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env, cwd=ROOT)  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                        break
                assert time.monotonic() < deadline, "serve did not become ready"
                time.sleep(0.2)
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz").json()["checks"]
            assert ready["llm"]["ok"] and "fake-model" in ready["llm"]["detail"] and ready["store"]["ok"]
            assert httpx.get(f"http://127.0.0.1:{port}/v1/info").json()["features"] == ["chat", "briefs"]
            r = httpx.get(f"http://127.0.0.1:{port}/v1/segments", headers={"X-Request-ID": "cli-check"})
            assert r.status_code == 200 and r.json()["segments"]
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=20)
    assert "no API keys configured" in err and "127.0.0.1 (loopback) only" in err
    assert "[cli-check]" in err and "GET /v1/segments 200" in err  # the access line with the request id
    # Beyond loopback without keys: refused before anything starts.
    refused = subprocess.run([*cmd, "--host", "0.0.0.0", "--no-llm"], capture_output=True, text=True, env=env,
                             cwd=ROOT, timeout=60)  # fmt: skip
    assert refused.returncode == 2 and "refusing to listen on 0.0.0.0 without API keys" in refused.stderr


def test_api_key_command_appends_a_hashed_entry(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from persona_llm.cli import app

    path = tmp_path / "keys.toml"
    first = CliRunner().invoke(app, ["api-key", "dash", "--scopes", "read,chat", "--keys", str(path)])
    second = CliRunner().invoke(app, ["api-key", "ops", "--scopes", "admin", "--keys", str(path)])
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    key = first.stdout.strip().splitlines()[0]
    keys = ApiKeys.from_file(path)
    assert keys.identify(key).name == "dash" and key not in path.read_text()  # type: ignore[union-attr]
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    dup = CliRunner().invoke(app, ["api-key", "dash", "--keys", str(path)])
    assert dup.exit_code == 2 and "already" in dup.output
    bad = CliRunner().invoke(app, ["api-key", "x", "--scopes", "write"])
    assert bad.exit_code == 2 and "scopes must be" in bad.output
