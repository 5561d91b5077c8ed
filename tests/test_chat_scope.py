"""The chat's scope rule (persona_llm.chat.scope): questions in our own words, each with the verdict it
must get, and the labelled sets in evals/cases (written by two helpers who never saw the rule): the
rule must never refuse an in-scope question there, and must keep refusing what it was measured to."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from persona_llm.chat.scope import question_scope, run_references, scope_cues

CASES = Path(__file__).resolve().parents[1] / "evals" / "cases"


@pytest.mark.parametrize(
    ("question", "verdict"),
    [
        ("Which segment is the largest?", "in"),
        ("What do people in segment 2 say about delivery?", "in"),
        ("Do any reviewers mention the World Cup?", "in"),  # a world topic, asked about the texts
        ("What are their main pain points?", "in"),  # a follow-up names the data with a pronoun
        ("哪个群体最常提到价格？", "in"),
        ("hockey?", "undecided"),  # no cue, no reference: the router decides
        ("How do I segment a market in general?", "undecided"),  # both: the router decides
        ("Who won the football World Cup in 2018?", "out"),
        ("Write a Python function that reverses a string.", "out"),
        ("帮我写一首关于秋天的诗。", "out"),
        ("What's the capital of Australia?", "out"),
        ("What is 17 times 23?", "out"),
        ("明天北京天气怎么样？", "out"),
    ],
)
def test_verdicts_on_our_own_questions(question: str, verdict: str) -> None:
    assert question_scope(question).verdict == verdict


def test_words_match_whole_and_the_runs_columns_count() -> None:
    assert run_references("Is this useful for posting?") == ["posting"]  # "useful" is not "user"
    assert run_references("What is the median income?") == []
    assert run_references("What is the median income?", ["income"]) == ["income"]
    assert run_references("segment 3 vs segment 4")[-2:] == ["segment 3", "segment 4"]
    assert scope_cues("Write me a haiku about rain") == ["writing task"]
    assert scope_cues("写一封给老板的请假邮件") == ["writing task"]


def _labelled(name: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in (CASES / name).read_text(encoding="utf-8").splitlines() if line.strip()]


# Floors about 0.05 under what the rule refused when measured (2026-11-30): set a 52/70 (0.74, after the
# rule was changed on it), set b 37/60 (0.62, looked at once, after the change).
@pytest.mark.parametrize(("name", "min_refused"), [("chat_scope_a.jsonl", 0.70), ("chat_scope_b.jsonl", 0.55)])
def test_labelled_sets_no_in_scope_refusal_and_a_refusal_floor(name: str, min_refused: float) -> None:
    rows = _labelled(name)
    verdicts = [(r["in_scope"], question_scope(str(r["question"])).verdict) for r in rows]
    wrongly_refused = [r["question"] for r, (ins, v) in zip(rows, verdicts, strict=True) if ins and v == "out"]
    assert wrongly_refused == []
    oos = [v for ins, v in verdicts if not ins]
    assert sum(v == "out" for v in oos) / len(oos) >= min_refused
