"""Quote by reference: numbered sentences in the prompt, an enum of their ids in the schema, sentences
copied by the writer. Before it, the model copied quotes as text and the gate rejected most of them on
small models (12 of 14 on one blog persona); these tests pin the new path."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from persona_llm.common.textmatch import match_verbatim, normalize_ws
from persona_llm.personas.prompting import PromptText
from persona_llm.personas.quoting import mark_units, number_units, quotable_units, reference_draft_model
from tests.fake_openai import FakeOpenAIServer
from tests.test_persona_gates import SEGMENT_TEXTS, chat_for, draft_for, make_run_dir, segment_of, writer


def test_units_are_whole_sentences_or_clauses_the_gate_accepts() -> None:
    text = (
        "I am unhappy with delivery times. The grinder is great!  Ok. "
        "I ordered the beans on Monday, they arrived on Friday, the bag was torn open and half of the beans had spilled "
        "into the box, which made a mess of the kitchen counter when I opened it, and customer service never answered."
    )
    units = quotable_units(text)
    assert units[0] == "I am unhappy with delivery times."
    assert "The grinder is great!" in units
    assert "Ok." not in units  # too short to be evidence
    assert all(len(u.split()) <= 40 for u in units)  # the 50-word sentence comes as its clauses
    assert "and customer service never answered." in units
    for u in units:
        assert u in normalize_ws(text) and match_verbatim(u, normalize_ws(text)).span is not None


def test_chinese_units_end_at_sentence_marks() -> None:
    text = "宝宝用了这款纸尿裤以后再也没有红屁股了，晚上也不会漏。物流太慢了，等了一个星期奶粉才到。好。"
    assert quotable_units(text) == ["宝宝用了这款纸尿裤以后再也没有红屁股了，晚上也不会漏。", "物流太慢了，等了一个星期奶粉才到。"]


def test_a_sentence_cut_by_prompt_truncation_is_not_offered() -> None:
    text = "The first sentence is complete and long enough. The second one was cut off in the middle of"
    assert quotable_units(text, truncated=True) == ["The first sentence is complete and long enough."]


def test_units_are_numbered_and_marked_in_the_prompt_text() -> None:
    texts = [PromptText("id-a", "u1", "Shipping took nine days this time. The beans were stale already.", ref="t1"),
             PromptText("id-b", "u2", "Too short. But this sentence is long enough to quote.", ref="t2")]  # fmt: skip
    units = number_units(texts)
    assert [(u.ref, u.text_id) for u in units] == [("t1.1", "id-a"), ("t1.2", "id-a"), ("t2.1", "id-b")]
    assert mark_units(texts[1].text, units[2:]) == "Too short. [t2.1] But this sentence is long enough to quote."


def test_the_schema_allows_only_the_ids_shown_once_each() -> None:
    model = reference_draft_model(["t1.1", "t1.2", "t2.1", "t3.1"])
    schema = model.model_json_schema()
    assert schema["properties"]["quote_ids"]["items"]["enum"] == ["t1.1", "t1.2", "t2.1", "t3.1"]
    assert not {"quotes", "confidence", "keywords"} & set(schema["properties"])
    base = {k: v for k, v in draft_for(0).items() if k not in ("quotes", "confidence")}
    assert model.model_validate({**base, "quote_ids": ["t1.1", "t2.1", "t3.1"]})
    with pytest.raises(ValidationError):
        model.model_validate({**base, "quote_ids": ["t1.1", "t2.1", "t9.9"]})  # not shown
    # A repeated id is quoted once; too few different ids left is re-asked, saying so.
    once = model.model_validate({**base, "quote_ids": ["t1.1", "t2.1", "t1.1", "t3.1", "t2.1"]})
    assert once.quote_ids == ["t1.1", "t2.1", "t3.1"]  # type: ignore[attr-defined]
    with pytest.raises(ValidationError, match="repeat an id: give 3 different ids"):
        model.model_validate({**base, "quote_ids": ["t1.1", "t1.1", "t2.1"]})
    with pytest.raises(ValidationError, match="at least 3"):
        model.model_validate({**base, "quote_ids": ["t1.1", "t2.1"]})
    # Fewer sentences than MIN_QUOTES shown: as many as there are.
    assert reference_draft_model(["t1.1"]).model_validate({**base, "quote_ids": ["t1.1"]})


def _reply_by_reference(request: dict[str, Any], picks: slice = slice(0, 3)) -> dict[str, Any]:
    schema = request["response_format"]["json_schema"]["schema"]
    ids = schema["properties"]["quote_ids"]["items"]["enum"]
    draft = {k: v for k, v in draft_for(segment_of(request)).items() if k not in ("quotes", "confidence")}
    return {"content": json.dumps({**draft, "quote_ids": ids[picks]})}


def test_writer_copies_the_chosen_sentences_and_no_quote_is_rejected(tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path / "run")
    with FakeOpenAIServer(default=_reply_by_reference) as server:
        personas = writer(chat_for(server), quote_mode="auto").write(run_dir)  # auto: the fake enforces schemas
    user = server.requests[0]["messages"][1]["content"]
    assert re.search(r"\[t1\] \[t1\.1\] ", user)
    system = server.requests[0]["messages"][0]["content"]
    assert "quote_ids" in system and "character for character" not in system
    for p in personas:
        assert p.provenance.quote_mode == "reference"
        assert len(p.quotes) == 3 and p.provenance.quotes_removed == []
        sources = {u: texts for u, texts in SEGMENT_TEXTS[p.segment_id]["users"].items()}
        for q in p.quotes:
            k = int(q.text_id.rsplit("-t", 1)[1])
            assert q.text in normalize_ws(sources[q.user_id][k])  # verbatim in the text it cites
        assert p.provenance.attempts == 1
        # Not generated: the segment's own keywords (the model is not asked to restate them).
        assert p.keywords == SEGMENT_TEXTS[p.segment_id]["keywords"][:8]


def test_an_id_outside_the_enum_is_re_asked_not_kept(tmp_path: Path) -> None:
    """A backend that ignores the schema may return an id that was never shown: a validation error,
    re-asked with the error, never a quote."""
    run_dir = make_run_dir(tmp_path / "run")
    calls = {"n": 0}

    def reply(request: dict[str, Any]) -> dict[str, Any]:
        calls["n"] += 1
        out = _reply_by_reference(request)
        if calls["n"] == 1:
            body = json.loads(out["content"])
            body["quote_ids"] = ["t99.1", *body["quote_ids"][1:]]
            return {"content": json.dumps(body)}
        return out

    with FakeOpenAIServer(default=reply) as server:
        personas = writer(chat_for(server), quote_mode="reference").write(run_dir, [0])
    assert len(personas[0].quotes) == 3 and personas[0].provenance.attempts == 2
    assert "quote_ids.0" in server.requests[1]["messages"][-1]["content"]  # the re-ask names the bad field


def test_verbatim_mode_is_kept_for_backends_without_schema_decoding(tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path / "run")
    with FakeOpenAIServer(default=lambda r: {"content": json.dumps(draft_for(segment_of(r)))}) as server:
        chat = chat_for(server, structured="json_object")
        personas = writer(chat, quote_mode="auto").write(run_dir, [0])
    assert personas[0].provenance.quote_mode == "verbatim" and len(personas[0].quotes) == 3
    assert "character for character" in server.requests[0]["messages"][0]["content"]
