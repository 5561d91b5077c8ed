"""`persona-llm ask` and `persona-llm chat` against the scripted OpenAI-compatible server (streaming over
SSE, as a real server does): JSON for scripts, streamed tokens, citations that can be opened, one-line
errors for a bad target."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from persona_llm.cli import app
from tests.fake_openai import FakeOpenAIServer

runner = CliRunner()


def _respond(body: dict[str, Any]) -> dict[str, Any]:
    prompt = body["messages"][-1]["content"]
    if prompt.startswith("TASK route"):
        return {"content": {"intent": "search_texts", "segment_ids": [], "query": "slugs in the lettuce"}}
    text_id, sid, text = re.findall(r"^\[([^\]]+)\] \(segment (\d+)\) (.+)$", prompt, re.M)[0]
    quote = " ".join(text.split()[:6])
    return {"content": {"answer": f"Gardeners write about slugs [{text_id}].", "citations": [text_id], "quotes": [{"text_id": text_id, "segment_id": int(sid), "text": quote}]}}


def _llm_options(server: FakeOpenAIServer) -> list[str]:
    return ["--llm", "openai", "--llm-url", server.base_url, "--llm-model", "fake-model", "--strategy", "router"]


def test_ask_prints_the_checked_answer_as_json(persona_workspace: Path) -> None:
    with FakeOpenAIServer(default=_respond) as server:
        result = runner.invoke(app, ["ask", str(persona_workspace), "What do customers say about slugs?", "--json", *_llm_options(server)])
        assert result.exit_code == 0, result.output
        answer = json.loads(result.stdout)
        assert answer["answer"].startswith("Gardeners write about slugs") and answer["checks"]["passed"]
        assert answer["citations"][0]["text_id"] in answer["evidence_ids"] and answer["quotes"]
        assert [r.get("stream", False) for r in server.requests] == [False, True]  # the answer streams
        assert server.requests[1]["response_format"]["type"] == "json_schema"


def test_chat_streams_and_opens_citations(persona_workspace: Path) -> None:
    with FakeOpenAIServer(default=_respond) as server:
        result = runner.invoke(
            app, ["chat", str(persona_workspace), *_llm_options(server)], input="What do customers say about slugs?\n/open 1\n/open zz\n/quit\n"
        )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Gardeners write about slugs" in out and "checks passed" in out
    cited = re.search(r"\[1\] (\S+) \(segment \d+\)", out)
    assert cited, out
    assert out.count(cited.group(1)) >= 3  # listed, then opened in full (and in the answer)
    assert "no citation zz" in out


def test_bad_target_is_one_line_before_any_model_starts(tmp_path: Path) -> None:
    result = runner.invoke(app, ["ask", str(tmp_path / "nope"), "hello?", "--llm", "openai", "--llm-url", "http://127.0.0.1:9/v1", "--llm-model", "m"])
    assert result.exit_code == 2 and "not found" in result.output and len(result.output.strip().splitlines()) == 1
