"""SegmentChat with LangChain fake chat models over a real run: routing, the tools each route runs, the
answer streamed out of its JSON, checks with one re-ask and then removal, refusals, unreadable replies,
the tool-calling strategy through create_agent, and conversation memory in memory and SQLite."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from persona_llm.chat import FinalEvent, SegmentChat, SegmentTools, StatusEvent, TokenEvent
from persona_llm.llm.base import Capabilities
from persona_llm.llm.chat_model import ChatModel
from tests.chat_fakes import ScriptedChat, last_user_text, tool_call


@pytest.fixture(scope="module")
def tools(persona_workspace: Path) -> SegmentTools:
    return SegmentTools(persona_workspace)


def _chat(tools: SegmentTools, llm: Any, **kwargs: Any) -> SegmentChat:
    return SegmentChat(tools.rundir, llm=llm, tools=tools, **kwargs)


def _route(intent: str, ids: list[int] | None = None, query: str = "") -> dict[str, Any]:
    return {"intent": intent, "segment_ids": ids or [], "query": query}


def _answer(text: str, citations: list[str] | None = None, quotes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"answer": text, "citations": citations or [], "quotes": quotes or []}


def _shown_texts(prompt: str) -> list[tuple[str, int, str]]:
    """(id, segment, text) of the texts an answer prompt shows."""
    return [(m[1], int(m[2]), m[3]) for m in re.finditer(r"^\[([^\]]+)\] \(segment (\d+)\) (.+)$", prompt, re.M)]


def test_router_answers_from_the_tools_and_streams(tools: SegmentTools) -> None:
    largest = tools.list_segments().segments[0]
    text = f"Segment {largest.segment_id} is the largest, with {largest.size} users ({largest.share * 100:.1f}% of users)."
    llm = ScriptedChat(script=[_route("list_segments"), _answer(text)])
    with _chat(tools, llm) as chat:
        events = list(chat.stream("Which segment is the largest?"))
    tokens = "".join(e.text for e in events if isinstance(e, TokenEvent))
    answer = events[-1].answer  # type: ignore[union-attr]
    assert isinstance(events[-1], FinalEvent) and tokens == text == answer.answer
    assert any(isinstance(e, StatusEvent) and "list_segments" in e.text for e in events)
    assert answer.checks.passed and not answer.checks.reasked and answer.checks.checked == ["citations", "quotes", "numbers", "segments", "grounded words", "about the data"]
    assert (answer.strategy, answer.route.intent, answer.tools_called) == ("router", "list_segments", ["list_segments"])  # type: ignore[union-attr]
    assert answer.first_token_seconds is not None and answer.seconds >= answer.first_token_seconds
    route_call, answer_call = llm.calls
    assert route_call["kwargs"]["response_format"]["json_schema"]["name"] == "Route"
    assert answer_call["kwargs"]["response_format"]["json_schema"]["name"] == "DraftAnswer"
    # One system prompt for both steps: the server reuses its KV cache for the second call.
    assert route_call["messages"][0].content == answer_call["messages"][0].content
    assert f"Segment {largest.segment_id}: {largest.size} users" in last_user_text(answer_call["messages"])
    assert "Which segment is the largest?" in last_user_text(route_call["messages"])


def test_a_wrong_share_is_reasked_and_corrected(tools: SegmentTools) -> None:
    seg = tools.list_segments().segments[-1]
    right = f"{seg.share * 100:.1f}%"
    llm = ScriptedChat(
        script=[_route("describe_segment", [seg.segment_id]), _answer("It holds 97.5% of users."), _answer(f"It holds {right} of users.")]
    )
    with _chat(tools, llm) as chat:
        answer = chat.ask(f"What share of users is in segment {seg.segment_id}?")
    assert answer.answer == f"It holds {right} of users."
    assert answer.checks.reasked and not answer.checks.passed and not answer.checks.removed
    assert "97.5%" in answer.checks.problems[0]
    reask = last_user_text(llm.calls[2]["messages"])
    assert "It has these problems" in reask and "97.5%" in reask


def test_what_fails_twice_is_removed_and_the_answer_says_so(tools: SegmentTools) -> None:
    seg = tools.list_segments().segments[0]
    wrong = _answer(f"Segment {seg.segment_id} is about many things. It holds 97.5% of users.")
    llm = ScriptedChat(script=[_route("describe_segment", [seg.segment_id]), wrong, wrong])
    with _chat(tools, llm) as chat:
        answer = chat.ask(f"Tell me about segment {seg.segment_id}")
    assert "97.5%" not in answer.answer and "is about many things" in answer.answer
    assert "Removed after checking: 1 sentence" in answer.answer
    assert [r.kind for r in answer.checks.removed] == ["sentence"] and len(answer.checks.problems) == 2


def test_quotes_are_verbatim_from_texts_the_tools_returned(tools: SegmentTools) -> None:
    garden = tools.count_mentions("slugs").segments[0].segment_id

    def respond(messages: list[Any]) -> dict[str, Any]:
        prompt = last_user_text(messages)
        shown = _shown_texts(prompt)
        text_id, sid, text = shown[0]
        quote = {"text_id": text_id, "segment_id": sid, "text": " ".join(text.split()[:7])}
        if "It has these problems" in prompt:
            return _answer("Gardeners write about their beds.", [text_id], [quote])
        other = next(r for r in tools.texts.itertuples() if r.segment_id != garden)
        invented = {"text_id": other.text_id, "segment_id": garden, "text": str(other.text)[:40]}
        return _answer("Gardeners write about their beds.", [text_id, "no-such-id"], [quote, invented])

    llm = ScriptedChat(script=[_route("search_texts", [garden], "slugs")], respond=respond)
    with _chat(tools, llm) as chat:
        answer = chat.ask(f"What do customers in segment {garden} say about slugs?")
    assert answer.checks.reasked and answer.checks.passed is False and not answer.checks.removed
    problems = " | ".join(answer.checks.problems)
    assert "no-such-id" in problems and "not among the texts" in problems
    texts = tools.texts.set_index("text_id")
    assert answer.quotes and answer.citations
    for quote in answer.quotes:
        assert quote.segment_id == garden == int(texts.loc[quote.text_id, "segment_id"])
        assert quote.text in " ".join(str(texts.loc[quote.text_id, "text"]).split())
    assert all(c.segment_id == garden and c.text == texts.loc[c.text_id, "text"] for c in answer.citations)
    assert set(answer.evidence_ids) >= {c.text_id for c in answer.citations}
    # Asked what customers say: the schema required a quote.
    assert llm.calls[1]["kwargs"]["response_format"]["json_schema"]["schema"]["properties"]["quotes"]["minItems"] == 1


def test_a_clear_out_of_scope_question_is_refused_before_any_model_call(tools: SegmentTools) -> None:
    llm = ScriptedChat(script=[])
    with _chat(tools, llm) as chat:
        english = chat.ask("Write me a poem about the sea.")
        chinese = chat.ask("帮我写一首关于大海的诗。")
        world = chat.ask("Who won the football World Cup in 2018?")
    assert llm.calls == []  # the question's own words decided: no router, no tools, no answer step
    assert english.refused and english.answer.startswith("I can only answer questions") and not english.tools_called
    assert chinese.refused and chinese.answer.startswith("我只能回答")
    assert world.refused and world.scope.verdict == "out" and world.scope.cues == ["world fact"]  # type: ignore[union-attr]


def test_the_router_decides_what_the_words_leave_open(tools: SegmentTools) -> None:
    llm = ScriptedChat(script=[_route("out_of_scope")])
    with _chat(tools, llm) as chat:
        answer = chat.ask("Tell me about the sea.")
    assert len(llm.calls) == 1 and answer.refused and answer.route.intent == "out_of_scope"  # type: ignore[union-attr]
    assert answer.scope.verdict == "undecided"  # type: ignore[union-attr]


def test_a_question_about_the_run_is_not_refused_on_the_routers_word(tools: SegmentTools) -> None:
    # The router refuses a question that names the customers and carries no cue of another task: its
    # refusal is overruled, every segment's texts are searched, and the answer is checked as usual.
    llm = ScriptedChat(script=[_route("out_of_scope"), _answer("No text in the tool results mentions the sea.")])
    with _chat(tools, llm) as chat:
        answer = chat.ask("What do customers say about the sea?")
    assert not answer.refused and answer.scope.verdict == "in"  # type: ignore[union-attr]
    assert answer.route.intent == "search_texts" and answer.tools_called == ["search_texts"]  # type: ignore[union-attr]
    assert len(llm.calls) == 2 and "sea" in last_user_text(llm.calls[1]["messages"])


def test_unreadable_replies_fall_back_and_never_pass_as_answers(tools: SegmentTools) -> None:
    llm = ScriptedChat(script=["I think you want the segments!", "not json", '{"answer": "cut off'])
    with _chat(tools, llm) as chat:
        answer = chat.ask("slugs in the garden")
    assert answer.route.intent == "search_texts" and answer.tools_called == ["search_texts"]  # type: ignore[union-attr]
    assert not answer.checks.passed and "not valid JSON" in answer.checks.problems[0]
    assert answer.answer.startswith("I could not write an answer") and not answer.citations


def test_tools_strategy_runs_create_agent_with_the_same_tools(tools: SegmentTools) -> None:
    mentions = tools.count_mentions("grinder")
    top, example = mentions.segments[0], mentions.examples[0]
    good = _answer(
        f"Segment {top.segment_id} talks most about grinder: {top.texts_mentioning} of its texts mention it.", [example.text_id]
    )
    unseen = next(r.text_id for r in tools.texts.itertuples() if r.text_id not in {e.text_id for e in mentions.examples})
    llm = ScriptedChat(
        script=[
            tool_call("count_mentions", {"term": "grinder"}, "c1"),
            tool_call("DraftAnswer", {**good, "citations": [example.text_id, unseen]}, "c2"),
            good,  # the re-ask goes through the schema-constrained answer step
        ]
    )
    with _chat(tools, llm, strategy="tools") as chat:
        events = list(chat.stream("Which segment talks most about grinder?"))
    answer = events[-1].answer  # type: ignore[union-attr]
    assert answer.strategy == "tools" and answer.tools_called == ["count_mentions"] and answer.route is None
    assert example.text_id in answer.evidence_ids and unseen not in answer.evidence_ids
    assert answer.checks.reasked and unseen in answer.checks.problems[0]
    assert answer.answer == good["answer"] and [c.text_id for c in answer.citations] == [example.text_id]
    assert "".join(e.text for e in events if isinstance(e, TokenEvent)).startswith(f"Segment {top.segment_id} talks most")


def test_auto_strategy_follows_the_backends_tool_call_flag(tools: SegmentTools) -> None:
    def model(flag: bool) -> ChatModel:
        return ChatModel(base_url="http://127.0.0.1:9/v1", model="m", capabilities=Capabilities(json_schema=True, tool_calls=flag))

    assert _chat(tools, ScriptedChat(), chat=model(True)).open().strategy_ == "tools"
    assert _chat(tools, ScriptedChat(), chat=model(False)).open().strategy_ == "router"
    assert _chat(tools, ScriptedChat(), chat=model(True), strategy="router").open().strategy_ == "router"


def test_conversations_are_kept_in_sqlite_and_bounded(tools: SegmentTools, tmp_path: Path) -> None:
    store = tmp_path / "conversations.sqlite"
    largest = tools.list_segments().segments[0]
    first = ScriptedChat(script=[_route("list_segments"), _answer(f"Segment {largest.segment_id} is the largest.")])
    with _chat(tools, first, memory=store) as chat:
        chat.ask("Which segment is the largest?", "c1")
    second = ScriptedChat(script=[_route("get_persona", [largest.segment_id]), _answer("Its persona is listed above.")])
    with _chat(tools, second, memory=store) as chat:  # a new process would see the same
        chat.ask("And its persona?", "c1")
        assert [role for role, _ in chat.history("c1")] == ["user", "assistant", "user", "assistant"]
        assert chat.history("other") == []
    routed = [m.content for m in second.calls[0]["messages"]]
    assert "Which segment is the largest?" in routed and f"Segment {largest.segment_id} is the largest." in routed

    small = ScriptedChat(respond=lambda m: _route("list_segments") if "TASK route" in last_user_text(m) else _answer("See the segments above."))
    with _chat(tools, small, max_history_tokens=60) as chat:
        for i in range(4):
            chat.ask(f"question number {i} " + "about the segments " * 5, "c2")
    last_route = [m.content for m in small.calls[-2]["messages"]]
    assert not any("question number 0" in str(c) for c in last_route)  # old turns fell out of the budget
    assert any("question number 2" in str(c) for c in last_route)


def test_a_reply_cut_at_the_token_limit_is_asked_again_over_http(tools: SegmentTools) -> None:
    """Through ChatOpenAI and a real HTTP stream: the openai client raises at finish_reason "length"
    when a response_format is set; that is a re-ask for a shorter answer, not a failed turn."""
    from tests.fake_openai import FakeOpenAIServer

    largest = tools.list_segments().segments[0]
    text = f"Segment {largest.segment_id} is the largest."
    script = [
        {"content": _route("list_segments")},
        {"content": '{"answer": "Segment 0 is the largest, and it', "finish_reason": "length"},
        {"content": _answer(text)},
    ]
    with FakeOpenAIServer(script) as server:
        model = ChatModel(base_url=server.base_url, model="fake-model", capabilities=Capabilities(json_schema=True, json_object=True))
        with SegmentChat(tools.rundir, chat=model, tools=tools) as chat:
            answer = chat.ask("Which segment is the largest?")
        assert answer.answer == text and answer.strategy == "router"
        assert "not a valid answer object" in server.requests[2]["messages"][-1]["content"]
        assert server.requests[1]["max_completion_tokens"] == 600 and server.requests[0]["max_completion_tokens"] == 120
