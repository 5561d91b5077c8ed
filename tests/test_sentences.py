"""The one sentence splitter (schema/sentences.py) that summaries, statement checks, the narrative eval
and quotable units share."""

from __future__ import annotations

from persona_llm.schema.personas import summary_length_problem
from persona_llm.schema.sentences import UNIT_END, spans, split_sentences


def test_latin_sentences_end_at_a_mark_and_a_space_not_inside_numbers() -> None:
    text = "They rate it 3.5 stars. They want faster delivery! Do they switch? Yes."
    assert split_sentences(text) == ["They rate it 3.5 stars.", "They want faster delivery!", "Do they switch?", "Yes."]


def test_chinese_sentences_end_at_full_width_marks_without_a_space() -> None:
    assert split_sentences("他们每天喝咖啡。他们讨厌排队！为什么？") == ["他们每天喝咖啡。", "他们讨厌排队！", "为什么？"]


def test_debris_under_three_characters_is_not_a_sentence() -> None:
    assert split_sentences("Fine. !! ok") == ["Fine."]


def test_units_of_customer_texts_also_end_at_a_chinese_semicolon_and_spans_index_the_text() -> None:
    text = "豆子很新鲜；但是送货太慢。 I liked it."
    assert [text[a:b] for a, b in spans(text, UNIT_END)] == ["豆子很新鲜；", "但是送货太慢。", "I liked it."]
    assert split_sentences(text) == ["豆子很新鲜；但是送货太慢。", "I liked it."]


def test_summary_with_a_decimal_number_counts_its_real_sentences() -> None:
    # The old summary splitter cut at every full stop, so "3.5" made this four "sentences"; still valid.
    summary = (
        "These runners log about 3.5 runs a week and replace shoes when the cushioning goes. "
        "They compare insoles and jackets before long races in the rain."
    )
    assert summary_length_problem(summary) == ""
    assert "sentence" in summary_length_problem("One long sentence " + "word " * 30)
