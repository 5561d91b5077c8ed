"""Many briefs in one call (`BriefWriter.write_many`, `persona-llm brief --all-personas`) with the local
executor: each is the brief a one-by-one `write` gives, they are written concurrently up to the LLM
settings' concurrency, a persona whose brief fails is reported with its reason while the others are
written, and --out DIR never writes over a file that is not ours.

The run is the shared `persona_workspace` (three segments, real MiniLM text vectors: the support check is
the real one); replies are scripted as in tests/test_briefs.py. The Ray executor: tests/test_ray_briefs.py.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from persona_llm.briefs import Brief, BriefWriter, NarrativeBrief, render_brief, select_each
from persona_llm.cli import app
from persona_llm.errors import ConfigError
from persona_llm.llm.client import LLMSettings
from persona_llm.personas.support import run_support_index
from persona_llm.runs.rundir import RunDir
from persona_llm.runs.workspace import resolve_run
from persona_llm.schema.briefs import parse_brief
from tests.fake_openai import FakeOpenAIServer
from tests.test_briefs import Reply, campaign, reply_with, shown, supported_insight
from tests.test_persona_gates import chat_for
from tests.test_run_store import tree_digest

GOAL = "launch of the annual plan"


def good_reply() -> Reply:
    return reply_with(lambda sid, texts: campaign([supported_insight(texts), supported_insight(texts, 1)]))


def failing_for(segment_id: int, reply: Reply) -> Reply:
    """`reply`, except that every request about `segment_id` gets a reply that is not JSON."""

    def step(request: dict[str, Any]) -> dict[str, Any]:
        return {"content": "Sorry, I cannot help with that."} if shown(request)[0] == segment_id else reply(request)

    return step


def comparable(brief: Brief | NarrativeBrief) -> dict[str, Any]:
    """A brief without what differs between two writes of the same drafts: when, and how fast."""
    data = brief.model_dump(mode="json")
    for key in ("generated_at", "seconds", "from_cache"):
        data["provenance"].pop(key)
    return data


@pytest.fixture(scope="module")
def run(persona_workspace: Path) -> RunDir:
    return resolve_run(persona_workspace)


@pytest.fixture(scope="module")
def run_embedder(run: RunDir) -> Any:
    """The run's own embedder, loaded once for the module (the writer would load it per write)."""
    _, embedder, _ = run_support_index(run)
    return embedder


def test_many_briefs_are_the_one_by_one_briefs_written_concurrently(
    run: RunDir, run_embedder: Any, persona_workspace: Path
) -> None:
    before = tree_digest(persona_workspace)
    inflight, most = [0], [0]
    lock = threading.Lock()
    reply = good_reply()

    def slow(request: dict[str, Any]) -> dict[str, Any]:  # counts the requests the server holds at once
        with lock:
            inflight[0] += 1
            most[0] = max(most[0], inflight[0])
        time.sleep(0.3)
        with lock:
            inflight[0] -= 1
        return reply(request)

    personas = run.load_personas()
    settings = LLMSettings(backend="openai", model="fake-model", concurrency=2)
    with FakeOpenAIServer(default=slow) as server:
        writer = BriefWriter(settings, chat=chat_for(server), support_embedder=run_embedder)
        one_by_one = {p.persona_id: writer.write(run, persona_id=p.persona_id, goal=GOAL) for p in personas}
        assert most[0] == 1
        seen: list[str] = []
        many_writer = BriefWriter(
            settings, chat=chat_for(server), support_embedder=run_embedder, progress=lambda o: seen.append(o.persona_id)
        )
        batch = many_writer.write_many(run, "all", goal=GOAL)
    assert most[0] == 2  # concurrent, and bounded by the settings' concurrency (3 personas, 2 at a time)
    assert [o.persona_id for o in batch.outcomes] == [p.persona_id for p in personas] and not batch.failures
    assert sorted(seen) == sorted(one_by_one)  # progress once per brief, as each finished
    assert {pid: comparable(b) for pid, b in batch.briefs.items()} == {
        pid: comparable(b) for pid, b in one_by_one.items()
    }
    assert all(isinstance(b, Brief) and b.audience_insights for b in batch.briefs.values())
    assert many_writer.stats()["calls"] == len(personas) == len(server.requests) // 2
    assert tree_digest(persona_workspace) == before  # briefs read the run, never write into it


def test_a_failing_persona_does_not_lose_the_others(run: RunDir, run_embedder: Any) -> None:
    """A persona whose model never gives a valid draft is a failure with its persona id and reason (its
    calls counted); the other personas' briefs are written, each through the same gates."""
    settings = LLMSettings(backend="openai", model="fake-model", concurrency=3, max_reasks=1)
    with FakeOpenAIServer(default=failing_for(1, good_reply())) as server:
        writer = BriefWriter(settings, chat=chat_for(server), support_embedder=run_embedder)
        batch = writer.write_many(run, ["2", "1", "0"], goal=GOAL, kind="campaign")
    by_segment = {o.segment_id: o for o in batch.outcomes}
    assert [o.segment_id for o in batch.outcomes] == [2, 1, 0]  # the order asked
    failed = by_segment[1]
    assert failed.brief is None and batch.failures == {failed.persona_id: failed.error}
    assert "valid" in failed.error.lower() and len(failed.records) == 2  # the first try and one re-ask
    assert sorted(b.audience.segment_id for b in batch.briefs.values()) == [0, 2]
    assert writer.stats()["calls"] == 2 + 2 and writer.stats()["invalid_outputs"] == 2


def test_which_personas_get_one_brief_each(run: RunDir) -> None:
    personas = run.load_personas()
    ids = [p.persona_id for p in personas]
    assert [p.persona_id for p in select_each(personas, "all", "narrative", "run")] == ids
    assert [p.persona_id for p in select_each(personas, ["2", f"{ids[0]},2"], "campaign", "run")] == [ids[2], ids[0]]
    with pytest.raises(ConfigError, match="messaging brief already covers several personas"):
        select_each(personas, "all", "messaging", "run")
    with pytest.raises(ConfigError, match="no persona 'p9-nope'"):
        BriefWriter(chat=None).write_many(run, ["0", "p9-nope"], goal=GOAL)  # before any model call
    with pytest.raises(ConfigError, match="no persona given"):
        select_each(personas, [" ", ""], "campaign", "run")


def test_cli_writes_one_file_per_persona_and_never_over_what_is_not_ours(
    persona_workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERSONA_LLM_CACHE_DIR", str(tmp_path / "cache"))  # replies scripted here, not cached by another run
    runner = CliRunner()
    out = tmp_path / "briefs"
    personas = resolve_run(persona_workspace).load_personas()
    with FakeOpenAIServer(default=failing_for(2, good_reply())) as server:
        flags = ["--llm", "openai", "--llm-url", server.base_url, "--llm-model", "fake-model", "--concurrency", "2"]
        args = ["brief", str(persona_workspace), "--goal", GOAL, "--kind", "campaign", *flags]
        result = runner.invoke(app, [*args, "--all-personas", "--format", "json", "--out", str(out)])
        # one persona failed: exit 1, named with its reason; the other two written, each a whole brief
        assert result.exit_code == 1, result.output
        failed = next(p.persona_id for p in personas if p.segment_id == 2)
        assert f"brief for {failed} (segment 2)" in result.output and "2 of 3 campaign brief(s) written" in result.output
        written = sorted(out.iterdir())
        assert [f.name for f in written] == sorted(f"{p.persona_id}.campaign.json" for p in personas if p.segment_id != 2)
        briefs = [parse_brief(f.read_text(encoding="utf-8")) for f in written]
        assert all(isinstance(b, Brief) for b in briefs) and not list(out.glob(".*tmp*"))
        calls = len(server.requests)

        # a file of the same name already there: refused before any model call, nothing written
        before = tree_digest(out)
        again = runner.invoke(app, [*args, "--all-personas", "--format", "json", "--out", str(out)])
        assert again.exit_code == 2 and "already exists (and 1 more); pass --force" in again.output
        assert tree_digest(out) == before and len(server.requests) == calls
        # a directory where a brief would go is not ours even with --force
        (out / f"{failed}.campaign.json").mkdir()
        forced = runner.invoke(app, [*args, "--all-personas", "--format", "json", "--out", str(out), "--force"])
        assert forced.exit_code == 2 and "it is not a file" in forced.output and len(server.requests) == calls
        # --out naming a file is not a directory of briefs
        clash = runner.invoke(app, [*args, "--all-personas", "--out", str(written[0])])
        assert clash.exit_code == 2 and "not a directory" in clash.output

        # two personas, no --out: JSON Lines on stdout, one whole brief per line, in the order finished
        printed = runner.invoke(app, [*args, "--persona", "0", "--persona", "1", "--format", "json", "-q"])
        assert printed.exit_code == 0, printed.output
        lines = printed.stdout.strip().splitlines()
        assert sorted(parse_brief(line).audience.segment_id for line in lines) == [0, 1]  # type: ignore[union-attr]
        assert json.loads(lines[0])["kind"] == "campaign"
        # spreading flags for a single brief say so instead of being ignored
        single = runner.invoke(app, [*args, "--persona", "0", "--executor", "ray"])
        assert single.exit_code == 2 and "--executor, --concurrency: spread several" in single.output
    html = runner.invoke(app, [*args, "--all-personas", "--format", "html"])
    assert html.exit_code == 2 and "needs --out DIR" in html.output
    assert render_brief(briefs[0], "json") == written[0].read_text(encoding="utf-8")
