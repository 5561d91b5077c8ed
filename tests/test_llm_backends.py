"""Backends without a real model: the registry that `open_chat_model` looks names up in, the built-in
backends against a scripted OpenAI-compatible server, the local-server life cycle (start, wait, retry,
time out, stop) on stand-in servers, and vLLM's process handling on a stand-in command."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import BaseModel

from persona_llm.errors import BackendError, ConfigError
from persona_llm.llm import registry
from persona_llm.llm.base import Capabilities, Check, LLMSettings, http_status
from persona_llm.llm.client import ChatModel, open_chat_model
from persona_llm.llm.doctor import diagnose
from persona_llm.llm.local_server import LocalServer
from persona_llm.llm.vllm import VLLMServer
from tests.fake_openai import FakeOpenAIServer


class Pet(BaseModel):
    name: str


@pytest.fixture
def own_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backends registered by a test are gone after it."""
    monkeypatch.setattr(registry, "_backends", dict(registry._backends))


class FakeBackend:
    """A backend whose factory hands out a ChatModel on a scripted server and notes what happened."""

    def __init__(self, server: FakeOpenAIServer | None = None) -> None:
        self.server = server
        self.events: list[str] = []

    @contextmanager
    def open(self, settings: LLMSettings) -> Iterator[ChatModel]:
        self.events.append("open")
        assert self.server is not None
        capabilities = Capabilities(json_object=True, max_context=2048)
        try:
            yield ChatModel.from_settings(
                settings, base_url=self.server.base_url, model="pet-model", capabilities=capabilities
            )
        finally:
            self.events.append("closed")


# -- the registry ---------------------------------------------------------------------------------------


def test_a_registered_backend_is_what_open_chat_model_opens(own_registry: None) -> None:
    with FakeOpenAIServer([{"content": {"name": "Tom"}}]) as server:
        fake = FakeBackend(server)
        registry.register_backend("pets", fake.open, capabilities=Capabilities(json_object=True))
        assert "pets" in registry.backend_names()
        with open_chat_model(LLMSettings(backend="pets", use_cache=False)) as chat:
            assert fake.events == ["open"]
            assert chat.model_id == "pets:pet-model" and chat.capabilities.max_context == 2048
            assert chat.generate_structured([{"role": "user", "content": "A pet."}], Pet).value.name == "Tom"
        assert fake.events == ["open", "closed"]
    assert server.requests[0]["response_format"] == {"type": "json_object"}


def test_unknown_backend_names_the_registered_ones(own_registry: None) -> None:
    registry.register_backend("pets", FakeBackend().open, capabilities=Capabilities())
    with (
        pytest.raises(ConfigError, match="unknown LLM backend 'nonsense'; registered: embedded, openai, pets, vllm"),
        open_chat_model(LLMSettings(backend="nonsense")),
    ):
        pass
    [check] = diagnose(LLMSettings(backend="nonsense"))
    assert check.name == "backend" and not check.ok and check.fix == "choose one of: embedded, openai, pets, vllm"


def test_declared_capabilities_are_checked_before_the_backend_opens(own_registry: None) -> None:
    fake = FakeBackend()
    registry.register_backend("json-mode-only", fake.open, capabilities=Capabilities(json_object=True))
    with (
        pytest.raises(BackendError, match="JSON-schema"),
        open_chat_model(LLMSettings(backend="json-mode-only", structured="json_schema")),
    ):
        pass
    assert fake.events == []  # refused before anything started


def test_a_name_is_registered_once_unless_replaced(own_registry: None) -> None:
    with pytest.raises(ConfigError, match="'openai' is already registered"):
        registry.register_backend("openai", FakeBackend().open, capabilities=Capabilities())
    replacement = FakeBackend().open
    registry.register_backend("openai", replacement, capabilities=Capabilities(), replace=True)
    assert registry.get_backend("openai").open == replacement


def test_doctor_runs_the_backends_own_preflight_checks(own_registry: None) -> None:
    fake = FakeBackend()

    def preflight(settings: LLMSettings) -> list[Check]:
        return [Check("pet food", False, "no food for " + str(settings.model), "buy some")]

    registry.register_backend("pets", fake.open, capabilities=Capabilities(), preflight=preflight)
    assert diagnose(LLMSettings(backend="pets", model="Tom")) == [
        Check("pet food", False, "no food for Tom", "buy some")
    ]
    assert fake.events == []  # a failed preflight starts nothing


# -- the built-in backends that need no model of their own ---------------------------------------------


def test_openai_backend_on_any_compatible_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with FakeOpenAIServer() as server:
        settings = LLMSettings(backend="openai", base_url=server.base_url, model="fake-model")
        with open_chat_model(settings) as chat:
            assert chat.model_id == "openai:fake-model" and chat.base_url == server.base_url
            assert chat.capabilities == Capabilities(json_schema=True, json_object=True, max_context=8192, tool_calls=True)
        with open_chat_model(settings.model_copy(update={"max_context": 32768})) as chat:
            assert chat.capabilities.max_context == 32768
    with (
        pytest.raises(ConfigError, match="needs a model name"),
        open_chat_model(LLMSettings(backend="openai", base_url="http://127.0.0.1:9/v1")),
    ):
        pass


def test_vllm_backend_on_a_running_server_asks_it_for_model_and_tokenizer() -> None:
    with (
        FakeOpenAIServer(model="served-model") as server,
        open_chat_model(LLMSettings(backend="vllm", base_url=server.base_url)) as chat,
    ):
        assert chat.model_id == "vllm:served-model"
        assert chat.capabilities == Capabilities(json_schema=True, json_object=True, tokenize=True, max_context=4096)
        assert chat.count_tokens("three words here") == 3 and server.tokenize_calls == 1
    with pytest.raises(ConfigError, match="needs base_url .* or model"), open_chat_model(LLMSettings(backend="vllm")):
        pass


class ThreadServer(LocalServer):
    """An HTTP server in a thread whose /health says 503 for the first `loading_polls` requests."""

    kind = "stand-in"
    poll_interval_s = 0.02

    def __init__(self, *, loading_polls: int = 0, failing_launches: int = 0, startup_timeout_s: float = 5.0):
        super().__init__(startup_timeout_s=startup_timeout_s)
        self.loading_polls = loading_polls
        self.failing_launches = failing_launches
        self.launched_ports: list[int] = []
        self.health_polls = 0
        self.shutdowns = 0
        self.died = False
        self._httpd: ThreadingHTTPServer | None = None

    def _launch(self, port: int) -> None:
        self.launched_ports.append(port)
        if len(self.launched_ports) <= self.failing_launches:
            raise OSError(f"port {port} taken")
        owner = self

        class Health(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                owner.health_polls += 1
                self.send_response(503 if owner.health_polls <= owner.loading_polls else 200)
                self.end_headers()

        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Health)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def _check_alive(self) -> None:
        if self.died:
            raise BackendError("the stand-in died")

    def _shutdown(self) -> None:
        self.shutdowns += 1
        assert self._httpd is not None
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd = None


def test_local_server_waits_until_healthy_and_stops() -> None:
    server = ThreadServer(loading_polls=3)
    with server:
        root = server.root_url
        assert server.base_url == f"{root}/v1" and root.startswith("http://127.0.0.1:")
        assert server.health_polls == 4  # three 503s while "loading", then the 200 that ended the wait
        assert server.startup_seconds_ is not None and server.start() == server.base_url  # no second launch
        assert len(server.launched_ports) == 1
    assert server.shutdowns == 1 and server.port_ is None
    assert http_status(f"{root}/health", timeout=1.0) is None  # nothing listens any more
    with pytest.raises(BackendError, match="stand-in server is not running"):
        _ = server.base_url
    server.stop()  # stopping a stopped server does nothing
    assert server.shutdowns == 1


def test_local_server_retries_a_launch_on_a_new_port() -> None:
    with ThreadServer(failing_launches=2) as server:
        assert len(server.launched_ports) == 3 and server.port_ == server.launched_ports[-1]
    failing = ThreadServer(failing_launches=3)
    with pytest.raises(BackendError, match="could not start the stand-in server: port .* taken"):
        failing.start()
    assert failing.port_ is None and failing.shutdowns == 0


def test_local_server_gives_up_after_the_timeout_and_stops_the_server() -> None:
    server = ThreadServer(loading_polls=10**6, startup_timeout_s=0.3)
    started = time.perf_counter()
    with pytest.raises(BackendError, match="did not become ready within"):
        server.start()
    assert time.perf_counter() - started < 3
    assert server.shutdowns == 1 and server.port_ is None


def test_local_server_stops_waiting_when_the_server_dies() -> None:
    server = ThreadServer(loading_polls=10**6, startup_timeout_s=30)
    server.died = True
    started = time.perf_counter()
    with pytest.raises(BackendError, match="the stand-in died"):
        server.start()
    assert time.perf_counter() - started < 3  # not the 30 s timeout
    assert server.shutdowns == 1 and server.port_ is None


# -- vLLM's process handling, on a stand-in command instead of vLLM -----------------------------------

STAND_IN = """
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class Health(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

if sys.argv[2] == "crash":
    sys.exit(3)
HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
"""


class StandInVLLM(VLLMServer):
    poll_interval_s = 0.05

    def __init__(self, behaviour: str, log_path: Path | None = None) -> None:
        super().__init__("stand-in-model", startup_timeout_s=30, log_path=log_path)
        self.behaviour = behaviour

    def command(self, port: int) -> list[str]:
        return [sys.executable, "-c", STAND_IN, str(port), self.behaviour]

    def _prepare(self) -> None:
        """vLLM itself is not needed for the stand-in."""
        return None


def test_vllm_server_process_is_started_and_terminated(tmp_path: Path) -> None:
    with StandInVLLM("serve", log_path=tmp_path / "vllm.log") as server:
        process = server.process_
        assert process is not None and process.poll() is None
        assert http_status(f"{server.root_url}/health") == 200
    assert process.poll() is not None  # terminated, not left running
    assert server.process_ is None and server.port_ is None


def test_vllm_server_that_exits_is_reported_at_once() -> None:
    server = StandInVLLM("crash")
    started = time.perf_counter()
    with pytest.raises(BackendError, match="vLLM exited with code 3"):
        server.start()
    assert time.perf_counter() - started < 20  # not the 30 s timeout
    assert server.port_ is None and server.process_ is None


def test_vllm_server_needs_vllm_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real_find_spec(name, *a)
    )
    with pytest.raises(BackendError, match="pip install vllm"):
        VLLMServer("some/model").start()


def test_embedded_server_takes_cores_that_come_free_between_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Started while another process held a core (1 free thread), the server restarts with 2 once both
    are free, back to 1 when a core is taken again, and the ChatModel follows it to its new address; a
    user-set count is never changed."""
    from persona_llm.llm import embedded

    free = {"now": 1}
    monkeypatch.setattr(embedded, "free_threads", lambda limit=8: free["now"])

    class StandIn(embedded.EmbeddedServer):
        def __init__(self, **kw: object) -> None:
            super().__init__(**kw)  # type: ignore[arg-type]
            self.inner = ThreadServer()
            self.launched_with: list[int] = []

        def _prepare(self) -> None:
            self.threads_ = self.n_threads or embedded.free_threads()

        def _launch(self, port: int) -> None:
            assert self.threads_ is not None
            self.launched_with.append(self.threads_)
            self.inner._launch(port)

        def _ready(self) -> bool:
            return True

        def _shutdown(self) -> None:
            self.inner._shutdown()

    server = StandIn()
    with server:
        chat = ChatModel(base_url=server.base_url, model="m")
        chat.before_task = lambda: server.retune() and chat.rebase(server.base_url)  # type: ignore[func-returns-value]
        chat.prepare_for_task()
        assert server.launched_with == [1]  # nothing freed up yet: no restart
        free["now"] = 2
        old_url = chat.base_url
        chat.prepare_for_task()
        assert server.launched_with == [1, 2] and server.threads_ == 2
        assert chat.base_url == server.base_url and (chat.base_url != old_url or len(server.inner.launched_ports) == 2)
        assert server.restarts_[0]["from"] == 1 and server.restarts_[0]["to"] == 2
        free["now"] = 1
        chat.prepare_for_task()  # another process took a core: 2 threads on 1 free core would collapse
        assert server.launched_with == [1, 2, 1]
        chat.prepare_for_task()  # unchanged: no restart
        assert server.launched_with == [1, 2, 1]

    fixed = StandIn(n_threads=1)
    with fixed:
        free["now"] = 2
        assert fixed.retune() is False and fixed.launched_with == [1]


def test_busy_cores_leaves_out_our_own_work() -> None:
    """Our process hosts the llama.cpp server and embeds between personas: its own CPU time must not read
    as another process competing for the cores."""
    from persona_llm.llm import embedded

    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(i * i for i in range(1000))

    worker = threading.Thread(target=spin, daemon=True)
    worker.start()
    try:
        with_self = embedded.busy_cores(0.5, exclude_self=False)
        without_self = embedded.busy_cores(0.5)
    finally:
        stop.set()
        worker.join()
    assert with_self - without_self > 0.5  # the spinning thread is about one core, all ours
