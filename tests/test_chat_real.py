"""Segment chat end to end with the real embedded model (llama.cpp, Qwen2.5-Coder-1.5B) on the session's
small workspace: a quote question and an out-of-scope one, through the default strategy. Checks must run, what is shown must hold up to the independent citation check, and the
out-of-scope question must be refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from persona_llm.chat import FinalEvent, SegmentChat, TokenEvent
from persona_llm.chat.checks import CHECKS
from persona_llm.evaluation.chat_eval import citation_check, texts_by_id
from persona_llm.runs.workspace import resolve_run

pytestmark = pytest.mark.slow


def test_real_model_answers_are_checked_and_cite_real_texts(embedded_chat: Any, persona_workspace: Path) -> None:
    run = resolve_run(persona_workspace)
    texts = texts_by_id(run)
    largest = max(run.load_segments().segments, key=lambda s: s.size)
    # Two questions keep this test near a minute on a quiet 2-core machine: a computed one that needs
    # tools, citations, a quote and the checks, and one that must be refused.
    questions = [
        f"Give me a quote from segment {largest.segment_id} about what they buy.",
        "What will the weather be like in Paris tomorrow?",
    ]
    answers = []
    with SegmentChat(run, chat=embedded_chat) as chat:
        assert chat.strategy_ == "router"  # llama.cpp + the 1.5B model declare no reliable tool calls
        for question in questions:
            events = list(chat.stream(question))
            final = events[-1]
            assert isinstance(final, FinalEvent)
            answer = final.answer
            answers.append(answer)
            print(f"\n{question}\n-> {answer.answer}\n   checks={answer.checks.model_dump()} {answer.seconds:.1f}s")
            if not answer.refused:
                assert any(isinstance(e, TokenEvent) for e in events) and answer.first_token_seconds is not None
    quoted, out_of_scope = answers
    assert not quoted.refused and quoted.checks.checked == list(CHECKS)
    valid, total, problems = citation_check(quoted, texts)
    assert valid == total, problems
    assert quoted.tools_called and quoted.evidence_ids and quoted.quotes  # the schema asked for a quote
    assert all(texts[q.text_id][0] == q.segment_id == largest.segment_id for q in quoted.quotes)
    assert out_of_scope.refused and not out_of_scope.tools_called
