"""Briefs on Ray (`persona-llm brief --executor ray --llm-urls A,B`, i.e. `write_many` with a RayExecutor):
the briefs the local executor gives, requests spread over both endpoints, and a persona whose brief fails
reported with its reason while the others are written.

One Ray write for the module (its actors load the support embedder: that is the cost); Ray is the
session's one local Ray (`ray_session` in tests/conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("ray", reason="the cluster extra (pip install 'persona-llm[cluster]') is not installed")

from persona_llm.briefs import BriefWriter, NarrativeBrief  # noqa: E402
from persona_llm.cli import app  # noqa: E402
from persona_llm.llm.client import LLMSettings  # noqa: E402
from persona_llm.runs.workspace import resolve_run  # noqa: E402
from persona_llm.schema.briefs import parse_brief  # noqa: E402
from tests.fake_openai import FakeOpenAIServer  # noqa: E402
from tests.test_brief_many import GOAL, comparable, failing_for  # noqa: E402
from tests.test_briefs import reply_with, shown, supported_insight  # noqa: E402

NARRATIVE = reply_with(
    lambda sid, texts: {
        "title": "A morning with the plan",
        "story": [supported_insight(texts, k) for k in range(3)],
        "takeaways": ["Lead with what they already do."],
    },
    n_quotes=1,
)


def test_briefs_written_on_ray_over_two_endpoints_equal_local_ones(
    ray_session: None, persona_workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERSONA_LLM_CACHE_DIR", str(tmp_path / "cache"))  # the driver's; workers: ray_session's
    run = resolve_run(persona_workspace)
    personas = run.load_personas()
    failing = next(p.persona_id for p in personas if p.segment_id == 0)
    out = tmp_path / "briefs"
    with (
        FakeOpenAIServer(default=failing_for(0, NARRATIVE)) as first,
        FakeOpenAIServer(default=failing_for(0, NARRATIVE)) as second,
    ):
        settings = LLMSettings(backend="openai", base_url=first.base_url, model="fake-model", use_cache=False)
        local = BriefWriter(settings).write_many(run, "all", goal=GOAL, kind="narrative")
        local_calls = len(first.requests)
        first.requests.clear()
        result = CliRunner().invoke(app, [
            "brief", str(persona_workspace), "--goal", GOAL, "--all-personas", "--kind", "narrative",
            "--format", "json", "--out", str(out), "--llm", "openai", "--llm-model", "fake-model",
            "--executor", "ray", "--llm-urls", f"{first.base_url},{second.base_url}",
        ])  # fmt: skip
    # the failing persona is named with its reason; the others are written, exit status 1
    assert result.exit_code == 1, result.output
    assert "executor ray (2 endpoint(s))" in result.output
    assert f"brief for {failing} (segment 0): openai:fake-model: no valid" in result.output
    assert list(local.failures) == [failing]
    # spread over both endpoints; the same calls as locally (3 attempts for the failing one, 1 for each other)
    assert first.requests and second.requests
    assert len(first.requests) + len(second.requests) == local_calls == 3 + 2
    assert sorted({shown(r)[0] for r in [*first.requests, *second.requests]}) == [0, 1, 2]
    # the briefs are the local ones
    written = {f.name: parse_brief(f.read_text(encoding="utf-8")) for f in out.iterdir()}
    assert sorted(written) == sorted(f"{pid}.narrative.json" for pid in local.briefs)
    for pid, brief in local.briefs.items():
        on_ray = written[f"{pid}.narrative.json"]
        assert isinstance(on_ray, NarrativeBrief) and on_ray.story
        assert comparable(on_ray) == comparable(brief)
