"""Segment chat's tools over a real run (the session's small published workspace): what each returns
agrees with the run's files, search by meaning finds the right segment's texts, and the LangChain tools
carry typed schemas and hand errors back to the model."""

from __future__ import annotations

from pathlib import Path

import pytest

from persona_llm.agents.definitions import load_agent
from persona_llm.chat import SegmentTools
from persona_llm.chat.records import SearchResult, SegmentList
from persona_llm.chat.tools import TOOL_NAMES, mention_pattern
from persona_llm.runs.workspace import resolve_run


@pytest.fixture(scope="module")
def tools(persona_workspace: Path) -> SegmentTools:
    return SegmentTools(persona_workspace)


def _topic_segment(tools: SegmentTools, topic: str) -> int:
    """The segment most of whose texts come from `topic` users (the fixture's user ids name their topic)."""
    texts = tools.texts[tools.texts["segment_id"] >= 0]
    share = texts.assign(hit=texts["user_id"].str.startswith(topic)).groupby("segment_id")["hit"].mean()
    return int(share.idxmax())


def test_list_segments_is_the_run_largest_first(tools: SegmentTools, persona_workspace: Path) -> None:
    segments = resolve_run(persona_workspace).load_segments()
    listed = tools.list_segments()
    assert [s.segment_id for s in listed.segments] == [
        s.segment_id for s in sorted(segments.segments, key=lambda s: (-s.size, s.segment_id))
    ]
    by_id = {s.segment_id: s for s in segments.segments}
    for o in listed.segments:
        assert (o.size, o.share, o.n_texts) == (by_id[o.segment_id].size, by_id[o.segment_id].share, by_id[o.segment_id].n_texts)
    facts = {(f.kind, f.segment_id): f.value for f in listed.facts()}
    first = listed.segments[0]
    assert facts[("users", first.segment_id)] == first.size
    assert facts[("share", first.segment_id)] == pytest.approx(first.share * 100)


def test_describe_and_persona_show_texts_of_their_segment(tools: SegmentTools) -> None:
    listed = tools.list_segments()
    sid = listed.segments[0].segment_id
    detail = tools.describe_segment(sid)
    assert detail.representatives and all(t.segment_id == sid for t in detail.texts())
    texts = tools.texts.set_index("text_id")
    for ref in detail.representatives:
        assert int(texts.loc[ref.text_id, "segment_id"]) == sid
    with_persona = [o.segment_id for o in listed.segments if o.persona_name]
    without = [o.segment_id for o in listed.segments if not o.persona_name]
    persona = tools.get_persona(with_persona[0])
    assert persona.persona is not None and persona.persona.quotes
    assert all(int(texts.loc[q.text_id, "segment_id"]) == with_persona[0] for q in persona.texts())
    if without:
        assert tools.get_persona(without[0]).persona is None


def test_unknown_segment_and_column_are_errors_naming_what_exists(tools: SegmentTools) -> None:
    with pytest.raises(ValueError, match="no segment 99.*segments are"):
        tools.describe_segment(99)
    sid = tools.list_segments().segments[0].segment_id
    with pytest.raises(ValueError, match="no attribute column 'shoe_size'.*plan"):
        tools.attribute_breakdown(sid, "shoe_size")
    plan = tools.attribute_breakdown(sid, "plan")
    assert [c.column for c in plan.columns] == ["plan"]
    assert abs(sum(v.share for v in plan.columns[0].values) - 1.0) < 0.02


def test_search_by_meaning_finds_the_topic_and_keeps_to_the_segment(tools: SegmentTools) -> None:
    coffee, garden = _topic_segment(tools, "coffee"), _topic_segment(tools, "garden")
    anywhere = tools.search_texts("espresso machine and coffee beans", k=5)
    assert isinstance(anywhere, SearchResult) and len(anywhere.hits) == 5
    users = tools.texts.set_index("text_id")["user_id"]
    assert sum(users[h.text_id].startswith("coffee") for h in anywhere.hits) >= 4
    scores = [h.score for h in anywhere.hits]
    assert scores == sorted(scores, reverse=True)
    assert len({h.text_id for h in anywhere.hits}) == 5  # the store's and the vectors' hits merged, each once
    within = tools.search_texts("espresso machine and coffee beans", segment_id=garden, k=4)
    assert within.hits and all(h.segment_id == garden for h in within.hits)
    assert coffee != garden


def test_count_mentions_agrees_with_a_plain_count(tools: SegmentTools) -> None:
    counted = tools.count_mentions("Grinder")
    texts = tools.texts[tools.texts["segment_id"] >= 0]
    plain = texts[texts["text"].str.lower().str.contains("grinder")].groupby("segment_id").size()
    assert {m.segment_id: m.texts_mentioning for m in counted.segments if m.texts_mentioning} == plain.to_dict()
    assert counted.segments[0].texts_mentioning == plain.max()
    assert counted.examples and all("grinder" in e.text.lower() for e in counted.examples)
    assert mention_pattern("run").search("I was running") and not mention_pattern("run").search("a rerun")
    assert mention_pattern("物流").search("这次物流太慢")


def test_langchain_tools_are_typed_and_return_their_records(tools: SegmentTools) -> None:
    lc_tools = {t.name: t for t in tools.as_langchain_tools()}
    assert set(lc_tools) == set(TOOL_NAMES) == set(load_agent("segment_chat").tools)
    assert lc_tools["search_texts"].args_schema.model_json_schema()["properties"]["segment_id"]
    message = lc_tools["list_segments"].invoke({"type": "tool_call", "name": "list_segments", "args": {}, "id": "c1"})
    assert isinstance(message.artifact, SegmentList)
    assert '"segments"' in message.content
    error = lc_tools["describe_segment"].invoke({"type": "tool_call", "name": "describe_segment", "args": {"segment_id": 99}, "id": "c2"})
    assert error.status == "error" and "no segment 99" in error.content
    # On its own from Python: the JSON the model would read.
    assert '"hits"' in lc_tools["search_texts"].invoke({"query": "slugs in the lettuce", "k": 2})
