"""Strategist briefs with a scripted OpenAI-compatible server: parsing, the gates (citations that exist and
belong to the segment, quotes verbatim, claims supported by the texts, numbers the run's), the three kinds,
rendering, the CLI, and that a brief never changes the run it reads.

The run is the shared `persona_workspace` (coffee, garden and running segments; tests/conftest.py) with the
real MiniLM text vectors, so the support check here is the real one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from persona_llm.briefs import BriefWriter, render_brief
from persona_llm.briefs.gates import RunNumbers, audience_number_problems, numbers_in
from persona_llm.cli import app
from persona_llm.common.textmatch import is_verbatim
from persona_llm.errors import ConfigError
from persona_llm.llm.client import ChatModel
from persona_llm.personas.support import run_support_index
from persona_llm.runs.rundir import RunDir
from persona_llm.runs.workspace import resolve_run
from persona_llm.schema.briefs import Brief, CampaignDraft, MessagingMatrix, NarrativeBrief, parse_brief
from tests.fake_openai import FakeOpenAIServer
from tests.test_persona_gates import chat_for
from tests.test_run_store import tree_digest

Reply = Callable[[dict[str, Any]], dict[str, Any]]


# -- scripted replies ---------------------------------------------------------------------------------


def shown(request: dict[str, Any]) -> tuple[int, list[tuple[str, str]], list[str], dict[str, Any]]:
    """(segment id, [(short id, text as shown)], the quote enum (or []), the response schema) of a request."""
    user = next(m["content"] for m in request["messages"] if m["role"] == "user")
    sid = int(re.search(r"Segment (\d+) of", user).group(1))  # type: ignore[union-attr]
    inside = user.split("<texts>")[1].split("</texts>")[0]
    texts = re.findall(r"^\[(t\d+)\] (.+)$", inside, flags=re.M)
    schema = (request.get("response_format") or {}).get("json_schema", {}).get("schema", {})
    quote_ids = schema.get("properties", {}).get("quote_ids", {}).get("items", {}).get("enum", [])
    return sid, texts, quote_ids, schema


def clean(text: str) -> str:
    """A shown text without its sentence markers ("[t1.2] ")."""
    return re.sub(r"\[t\d+\.\d+\] ", "", text)


def first_sentence(text: str) -> str:
    return clean(text).split(",")[0].split(".")[0]


def campaign(insights: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    draft = {
        "objective": "Get coffee lovers to take the annual plan before the spring launch ends.",
        "insights": insights,
        "key_message": "Fresh beans every month, for a year, at one price.",
        "offers": ["A free grinder cleaning kit with the annual plan"],
        "channel_plan": [{"channel": "email", "action": "Send the launch offer on Monday morning."}],
        "tone": "warm and practical",
        "do": ["Talk about taste and freshness"],
        "dont": ["Promise delivery dates we cannot keep"],
        "objections": [{"objection": "Deliveries of the beans arrive late", "answer": "Tracked shipping on every bag."}],
        "measure": ["annual plan sign-ups"],
    }
    draft.update(extra)
    return draft


def reply_with(make: Callable[[int, list[tuple[str, str]]], dict[str, Any]], n_quotes: int = 2) -> Reply:
    """A reply built from what the request shows: `make(segment id, texts)` gives the draft; quotes are the
    first `n_quotes` sentence ids of the enum (reference mode) or the first texts' first clauses."""

    def reply(request: dict[str, Any]) -> dict[str, Any]:
        sid, texts, quote_ids, _ = shown(request)
        draft = make(sid, texts)
        if quote_ids:
            draft["quote_ids"] = quote_ids[:n_quotes]
        else:
            draft["quotes"] = [{"text_id": ref, "text": first_sentence(text)} for ref, text in texts[:n_quotes]]
        return {"content": json.dumps(draft)}

    return reply


UNSUPPORTED = "They trade cryptocurrency and follow the stock market every single day."


def supported_insight(texts: list[tuple[str, str]], k: int = 0) -> dict[str, Any]:
    """An insight that is one of the segment's own sentences, citing its text: supported by construction."""
    ref, text = texts[k]
    return {"text": first_sentence(text) + ".", "text_ids": [ref]}


# -- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(persona_workspace: Path) -> RunDir:
    return resolve_run(persona_workspace)


@pytest.fixture(scope="module")
def run_embedder(run: RunDir) -> Any:
    """The run's own embedder, loaded once for the module (the writer would load it per write)."""
    _, embedder, _ = run_support_index(run)
    return embedder


def writer(chat: ChatModel, embedder: Any, **kw: Any) -> BriefWriter:
    return BriefWriter(chat=chat, support_embedder=embedder, **kw)


def persona_of(run: RunDir, segment_id: int) -> Any:
    return next(p for p in run.load_personas() if p.segment_id == segment_id)


# -- campaign -----------------------------------------------------------------------------------------


def test_campaign_brief_keeps_what_the_texts_show_and_records_what_they_do_not(
    run: RunDir, run_embedder: Any, persona_workspace: Path
) -> None:
    before = tree_digest(persona_workspace)
    repeated = ["Talk about taste and freshness", "talk about taste and  freshness"]  # a small model repeats items
    make = lambda sid, texts: campaign(  # noqa: E731
        [supported_insight(texts), {"text": UNSUPPORTED, "text_ids": [texts[1][0]]}], do=repeated
    )
    with FakeOpenAIServer(default=reply_with(make)) as server:
        persona = persona_of(run, 0)
        brief = writer(chat_for(server), run_embedder).write(
            persona_workspace, persona_id=persona.persona_id, goal="launch of the annual plan", channel="email"
        )
        request = server.requests[0]
    assert isinstance(brief, Brief) and brief.kind == "campaign" and brief.goal == "launch of the annual plan"
    # The system message is the agent's role, then the rules; the schema's text ids are an enum of the texts shown.
    assert request["messages"][0]["content"].startswith("You are a marketing strategist. You write a campaign brief")
    schema = request["response_format"]["json_schema"]["schema"]
    claim = schema["$defs"]["CitedClaimFromTexts"]["properties"]["text_ids"]["items"]
    assert claim["enum"][0] == "t1" and "quote_ids" in schema["properties"]
    # Audience numbers are the run's, not the model's.
    segment = run.load_segments().get(0)
    a = brief.audience
    assert (a.segment_id, a.user_count, a.share, a.n_texts) == (0, segment.size, segment.share, segment.n_texts)
    assert a.persona_id == persona.persona_id
    # The supported insight is kept with a real text id of segment 0; the made-up one is removed, recorded.
    texts = run.load_texts().set_index("text_id")
    assert [s.text for s in brief.audience_insights] and UNSUPPORTED not in [s.text for s in brief.audience_insights]
    for s in brief.audience_insights:
        assert s.text_ids and all(int(texts.loc[t, "segment_id"]) == 0 for t in s.text_ids)
    removed = {r.text: r.reason for r in brief.provenance.statements_removed}
    assert removed[UNSUPPORTED] == "unsupported"
    # Proof points are sentences of segment 0, verbatim.
    assert len(brief.proof_points) == 2
    for q in brief.proof_points:
        assert is_verbatim(q.text, texts.loc[q.text_id, "text"]) and int(texts.loc[q.text_id, "segment_id"]) == 0
    assert brief.do == repeated[:1] and "1 repeated item(s) dropped" in brief.provenance.warnings
    # Confidence from evidence, capped by the persona's (the scripted personas are low).
    assert brief.confidence == "low" and "capped at the persona's confidence" in brief.provenance.confidence_basis
    assert brief.provenance.agent == "brief_writer" and brief.provenance.prompt_version == "brief/campaign/v1"
    # Rendering: Markdown and HTML show the evidence; JSON parses back to the same brief.
    md, html = render_brief(brief, "md"), render_brief(brief, "html")
    assert "Proof points (verbatim)" in md and brief.proof_points[0].text in md and UNSUPPORTED in md
    assert "<script" not in html and brief.key_message in html and "unsupported" in html
    assert parse_brief(render_brief(brief, "json")) == brief
    with pytest.raises(ConfigError, match="--format"):
        render_brief(brief, "pdf")
    assert tree_digest(persona_workspace) == before  # a brief reads the run, never writes into it


def test_citations_must_exist_and_belong_to_the_segment(run: RunDir, run_embedder: Any, persona_workspace: Path) -> None:
    """Quotes copied as text and free-text ids (backends without schema decoding): a claim citing a text of
    another segment or a text that does not exist loses the citation, and with no citation left, itself;
    a paraphrased "quote" is dropped by the persona quote gate."""
    other = run.segment_texts(1)["text_id"].iloc[0]
    paraphrase = "I really love the berry notes of light roast coffee beans"

    def make(sid: int, texts: list[tuple[str, str]]) -> dict[str, Any]:
        good = supported_insight(texts)
        return campaign([
            {**good, "text_ids": [good["text_ids"][0], other, "t99"]},
            {"text": first_sentence(texts[1][1]) + ".", "text_ids": [other]},
        ])  # fmt: skip

    def reply(request: dict[str, Any]) -> dict[str, Any]:
        sid, texts, _, _ = shown(request)
        draft = make(sid, texts)
        draft["quotes"] = [
            {"text_id": texts[0][0], "text": first_sentence(texts[0][1])},
            {"text_id": texts[1][0], "text": paraphrase},
        ]
        return {"content": json.dumps(draft)}

    with FakeOpenAIServer(default=reply) as server:
        brief = writer(chat_for(server), run_embedder, quote_mode="verbatim").write(
            run, persona_id="0", goal="launch of the annual plan"
        )
        schema_shown = server.requests[0]["messages"][0]["content"]
    assert isinstance(brief, Brief) and brief.provenance.quote_mode == "verbatim"
    assert "JSON Schema" not in schema_shown  # this backend enforces the schema: not repeated in the prompt
    reasons = {(c.text_id, c.reason) for c in brief.provenance.citations_removed}
    assert (other, "not_in_segment") in reasons and ("t99", "unknown_text") in reasons
    kept = brief.audience_insights
    assert len(kept) == 1 and other not in kept[0].text_ids and "t99" not in kept[0].text_ids
    assert [r.reason for r in brief.provenance.statements_removed] == ["no_valid_citation"]
    assert [q.reason for q in brief.provenance.quotes_removed] == ["not_verbatim"]
    assert len(brief.proof_points) == 1 and brief.provenance.quotes_proposed == 2


def test_a_backend_without_schema_decoding_gets_the_schema_in_the_prompt(run: RunDir, run_embedder: Any) -> None:
    """JSON mode only: the schema is shown in the system message, quotes are copied as text (and gated)."""
    from persona_llm.llm.client import Capabilities

    make = lambda sid, texts: campaign([supported_insight(texts)])  # noqa: E731
    with FakeOpenAIServer(default=reply_with(make)) as server:
        chat = ChatModel(base_url=server.base_url, model="fake-model", max_retries=0,
                         capabilities=Capabilities(json_schema=False, json_object=True, tokenize=True))  # fmt: skip
        brief = writer(chat, run_embedder).write(run, persona_id="0", goal="annual plan")
        request = server.requests[0]
    assert request["response_format"] == {"type": "json_object"}
    assert "The JSON object must follow this JSON Schema" in request["messages"][0]["content"]
    assert isinstance(brief, Brief) and brief.provenance.quote_mode == "verbatim" and len(brief.proof_points) == 2


def test_audience_numbers_must_be_the_runs(run: RunDir, run_embedder: Any) -> None:
    """A share or count of customers that is not the run's is re-asked with the run's numbers; any other
    number in a claim must be in the run or in the texts it cites, or the claim goes."""
    segment = run.load_segments().get(0)
    calls: list[int] = []

    def make(sid: int, texts: list[tuple[str, str]]) -> dict[str, Any]:
        calls.append(sid)
        good = supported_insight(texts)
        stray = {"text": first_sentence(texts[2][1]) + ", 47 cups a week.", "text_ids": [texts[2][0]]}
        key = "Join the 73% of customers who love fresh beans." if len(calls) == 1 else "Fresh beans every month."
        return campaign([good, stray], key_message=key)

    with FakeOpenAIServer(default=reply_with(make)) as server:
        brief = writer(chat_for(server), run_embedder).write(run, persona_id="0", goal="launch of the annual plan")
        reask = server.requests[1]["messages"][-1]["content"]
    assert len(calls) == 2 and '"73% of customers"' in reask
    assert f"{segment.size} customers ({segment.share * 100:.1f}% of all)" in reask
    assert isinstance(brief, Brief) and "73%" not in brief.key_message
    number_removals = [r for r in brief.provenance.statements_removed if r.reason == "number_not_in_run"]
    assert len(number_removals) == 1 and "47" in number_removals[0].detail
    assert brief.provenance.numbers_checked >= 1


def test_number_rules() -> None:
    from persona_llm.schema.segments import CategoricalSummary, CategoryShare, Segment, SegmentQuality

    segment = Segment(
        segment_id=2, size=120, share=1 / 3, n_texts=300, keywords=[], representative_text_ids=[],
        representatives=[], quality=SegmentQuality(mean_probability=0.9, cohesion=0.5),
        attributes={"plan": CategoricalSummary(count=110, top=[CategoryShare(value="plus", share=0.62, overall_share=0.5)])},
    )  # fmt: skip
    numbers = RunNumbers.of(segment, n_segments=6)
    assert numbers.allows(33, 0, True) and numbers.allows(33.3, 1, True) and not numbers.allows(34, 0, True)
    assert numbers.allows(62, 0, True) and numbers.allows(120, 0, False) and not numbers.allows(150, 0, False)
    assert [(w, v, p) for w, v, _, p in numbers_in("From 1,250 posts, 33.3% say t3 is 5km")] == [
        ("1,250", 1250.0, False),
        ("33.3%", 33.3, True),
    ]

    draft = CampaignDraft.model_validate(
        campaign(
            [{"text": "Most of them, 62% of the segment, pay for plus.", "text_ids": ["t1"]}],
            key_message="Made for 150 customers like you, 33% of all and 45 percent of our users.",
            offers=["20% off the first month"],  # an offer, not a claim about the audience
        )
    )
    problems = audience_number_problems(draft, numbers)
    assert len(problems) == 2
    assert any('"150 customers"' in p for p in problems) and any('"45 percent of our users"' in p for p in problems)


# -- narrative and messaging --------------------------------------------------------------------------


def test_narrative_keeps_the_sentences_its_texts_tell(run: RunDir, run_embedder: Any) -> None:
    def make(sid: int, texts: list[tuple[str, str]]) -> dict[str, Any]:
        story = [supported_insight(texts, k) for k in range(3)]
        story.insert(1, {"text": UNSUPPORTED, "text_ids": [texts[0][0]]})
        return {"title": "A morning with fresh beans", "story": story, "takeaways": ["Lead with freshness."]}

    with FakeOpenAIServer(default=reply_with(make, n_quotes=1)) as server:
        brief = writer(chat_for(server), run_embedder).write(run, persona_id="0", goal="annual plan", kind="narrative")
        system = server.requests[0]["messages"][0]["content"]
    assert isinstance(brief, NarrativeBrief) and brief.provenance.agent == "narrative_writer"
    assert system.startswith("You are a marketing strategist. You tell one ordinary day")
    # Every sentence was checked; the made-up one is removed, every kept one is supported and cites segment 0.
    checks = {c.text: c for c in brief.provenance.statements}
    assert len(checks) == 4 and brief.story and UNSUPPORTED not in [s.text for s in brief.story]
    assert {(r.text, r.reason) for r in brief.provenance.statements_removed} >= {(UNSUPPORTED, "unsupported")}
    assert all(checks[s.text].supported for s in brief.story)
    texts = run.load_texts().set_index("text_id")
    assert all(int(texts.loc[t, "segment_id"]) == 0 for s in brief.story for t in s.text_ids)
    assert len(brief.quotes) == 1 and "A day in their life" in render_brief(brief, "md")


def test_messaging_matrix_checks_each_row_against_its_own_segment(run: RunDir, run_embedder: Any) -> None:
    """One row per persona, each written from and checked against its own segment's texts: a row whose
    insight cites another segment's text loses the insight, not the row."""
    foreign = run.segment_texts(0)["text_id"].iloc[0]

    def reply(request: dict[str, Any]) -> dict[str, Any]:
        sid, texts, quote_ids, _ = shown(request)
        insight = supported_insight(texts)
        if sid == 2:
            insight = {**insight, "text_ids": [foreign]}
        row = {"insight": insight, "message": f"A plan made for segment {sid}.", "channel": "email",
               "call_to_action": "Start the annual plan", "quotes": [{"text_id": texts[0][0], "text": first_sentence(texts[0][1])}]}  # fmt: skip
        return {"content": json.dumps(row)}

    with FakeOpenAIServer(default=reply) as server:
        matrix = writer(chat_for(server), run_embedder, quote_mode="verbatim").write(
            run, persona_id="all", goal="annual plan", kind="messaging"
        )
        # One call per persona, and one re-ask for the row whose only claim failed its gates.
        asked = [shown(r)[0] for r in server.requests]
        assert sorted(asked) == [0, 1, 2, 2]
    assert isinstance(matrix, MessagingMatrix) and [r.audience.segment_id for r in matrix.rows] == [0, 1, 2]
    texts = run.load_texts().set_index("text_id")
    for row in matrix.rows:
        assert row.proof_point is not None and int(texts.loc[row.proof_point.text_id, "segment_id"]) == row.audience.segment_id
        if row.insight is not None:
            assert all(int(texts.loc[t, "segment_id"]) == row.audience.segment_id for t in row.insight.text_ids)
    by_segment = {r.audience.segment_id: r for r in matrix.rows}
    assert by_segment[2].insight is None and by_segment[2].confidence == "low"
    assert [c.reason for c in by_segment[2].provenance.citations_removed] == ["not_in_segment"]
    md = render_brief(matrix, "md")
    assert md.count("\n| ") >= 4 and "none passed the gates" in md
    assert parse_brief(render_brief(matrix, "json")) == matrix


def test_which_personas_a_brief_may_address(run: RunDir) -> None:
    w = BriefWriter(chat=None)
    with pytest.raises(ConfigError, match="no persona 'p9-nope'.*p0-"):
        w.write(run, persona_id="p9-nope", goal="x")
    with pytest.raises(ConfigError, match="--kind messaging"):
        w.write(run, persona_id="all", goal="x")
    with pytest.raises(ConfigError, match="one persona, not 2"):
        w.write(run, persona_id="0,1", goal="x")
    with pytest.raises(ConfigError, match="--goal"):
        w.write(run, persona_id="0", goal="   ")
    with pytest.raises(ConfigError, match="--kind"):
        w.write(run, persona_id="0", goal="x", kind="poster")


# -- CLI ----------------------------------------------------------------------------------------------


def test_cli_writes_the_brief_to_out_and_refuses_to_overwrite(persona_workspace: Path, tmp_path: Path) -> None:
    make = lambda sid, texts: campaign([supported_insight(texts)])  # noqa: E731
    runner = CliRunner()
    out = tmp_path / "brief.json"
    with FakeOpenAIServer(default=reply_with(make)) as server:
        flags = ["--llm", "openai", "--llm-url", server.base_url, "--llm-model", "fake-model"]
        args = ["brief", str(persona_workspace), "--persona", "0", "--goal", "launch of the annual plan", *flags]
        result = runner.invoke(app, [*args, "--format", "json", "--out", str(out)])
        assert result.exit_code == 0, result.output
        brief = parse_brief(out.read_text(encoding="utf-8"))
        assert isinstance(brief, Brief) and brief.audience.segment_id == 0
        again = runner.invoke(app, [*args, "--out", str(out)])
        assert again.exit_code == 2 and "already exists" in again.output
        printed = runner.invoke(app, [*args, "--kind", "campaign", "--format", "md"])
        assert printed.exit_code == 0 and "# Campaign brief: launch of the annual plan" in printed.stdout
    bad = runner.invoke(app, ["brief", str(persona_workspace), "--goal", "x", "--format", "pdf"])
    assert bad.exit_code == 2 and "--format" in bad.output
