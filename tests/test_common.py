"""The shared helpers in persona_llm/common/: text matching, demographics parsing, vector maths."""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest

from persona_llm.common import demographics as D
from persona_llm.common import textmatch as T
from persona_llm.common import vectors as V

# ---------------------------------------------------------------------------------------------------
# Text matching
# ---------------------------------------------------------------------------------------------------


def test_normalize_ws_applies_nfc_and_collapses_whitespace() -> None:
    nfd = unicodedata.normalize("NFD", "  café \n\t crème ")
    assert T.normalize_ws(nfd) == unicodedata.normalize("NFC", "café crème")
    assert T.normalize_ws("") == ""


def test_find_verbatim_returns_the_sources_own_span() -> None:
    source = T.normalize_ws('He said “never again” and meant it.')
    assert T.find_verbatim('said "never again"', source) == "said “never again”"
    assert T.find_verbatim("said never again", source) is None
    assert T.find_verbatim("", source) is None


def test_is_verbatim_is_case_sensitive_and_rejects_empty_quotes() -> None:
    assert T.is_verbatim("skate deck every summer", "my skate\n deck every summer")
    assert not T.is_verbatim("Skate deck every summer", "my skate deck every summer")
    assert not T.is_verbatim("  ", "anything")


@pytest.mark.parametrize(
    ("quote", "source", "span", "problem"),
    [
        ("happy with it", "I am unhappy with it.", None, "cuts_word"),
        ("happy with it", "I am not happy with it.", None, "drops_negation"),
        ("happy with it", "I am hardly happy with it.", None, "drops_negation"),
        ("happy with it", "I wasn't happy with it.", None, "drops_negation"),
        ("happy with it", "Not happy with it at first, now happy with it.", "happy with it", None),
        ("happy with it", "I am happy with it.", "happy with it", None),
        ("happy with it", "No. Happy with it? Yes.", None, "not_found"),  # case-sensitive as before
        ("I am happy", "I am happy with it.", "I am happy", None),
        ("thing special", "nothing special", None, "cuts_word"),
        ("满意", "不满意", None, "drops_negation"),
        ("满意", "不太满意", None, "drops_negation"),
        ("满意", "非常满意", None, "cuts_word"),  # 非常 is "very", not a negation; still half a clause
        ("很满意", "质量不错，很满意。", "很满意", None),
        ("很满意", "没有", None, "not_found"),
    ],
)
def test_match_verbatim_needs_word_boundaries_and_keeps_negations(
    quote: str, source: str, span: str | None, problem: str | None
) -> None:
    match = T.match_verbatim(T.normalize_ws(quote), T.normalize_ws(source))
    assert (match.span, match.problem) == (span, problem)


def test_source_text_normalises_once() -> None:
    src = T.SourceText("a  b\nc", "u1", 0, text_id="t1")
    assert src.normalized == "a b c" and src.normalized is src.normalized


def test_name_key_ignores_case_accents_and_spacing() -> None:
    assert T.name_key("  Zoë   the Barista ") == T.name_key("zoe the barista")
    assert T.name_key("Anna") != T.name_key("Anne")


# ---------------------------------------------------------------------------------------------------
# Demographics
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "intervals"),
    [
        ("23-27", [(23, 27)]),
        ("13–17", [(13, 17)]),
        ("20s", [(20, 29)]),
        ("late 20s", [(26, 29)]),
        ("thirties", [(30, 39)]),
        ("20多岁", [(20, 29)]),
        ("30几岁", [(30, 39)]),
        ("25岁", [(25, 25)]),
        ("30+", [(30, 100)]),
        ("over 40", [(40, 100)]),
        ("under 18", [(0, 17)]),
        ("aged 25", [(25, 25)]),
        ("teenagers", [(13, 18)]),
        ("青少年", [(13, 18)]),
        ("retirees", [(60, 100)]),
        ("80后", []),  # a birth decade, not an age
        ("digital natives", []),
        # "I am N" is an age where the clause ends after the number, not before a unit or a score
        ("I'm 38 and I work as a nurse", [(38, 38)]),
        ("I am 71, a retired postman", [(71, 71), (60, 100)]),
        ("I am 5 minutes away", []),
        ("I'm 2 for 2 this season", []),
        ("I am 100% sure", []),
    ],
)
def test_parse_age_intervals(text: str, intervals: list[tuple[float, float]]) -> None:
    assert D.parse_age_intervals(text) == intervals


def test_fits_age_with_tolerance() -> None:
    assert D.fits_age(36, [(20, 29), (30, 39)])
    assert not D.fits_age(30.5, [(20, 29)])
    assert D.fits_age(30.5, [(20, 29)], tolerance=2)
    assert not D.fits_age(30, [])


@pytest.mark.parametrize(
    ("text", "gender"),
    [
        ("female", "female"),
        ("Mostly women (62%)", "female"),
        ("F", "female"),
        ("m", "male"),
        ("guys", "male"),
        ("男性", "male"),
        ("女", "female"),
        ("men and women", None),  # both
        ("I'm a barista", None),  # one-letter codes only as a whole value
        ("nerds", None),
    ],
)
def test_gender_of(text: str, gender: str | None) -> None:
    assert D.gender_of(text) == gender


def test_genders_in_does_not_read_male_inside_female() -> None:
    assert D.genders_in("female") == {"female"}
    assert D.genders_in("males and females") == {"female", "male"}


def test_gender_value_needs_the_whole_value() -> None:
    assert D.gender_value(" Women ") == "female" and D.gender_value("M") == "male"
    assert D.gender_value("Isle of Man") is None


# ---------------------------------------------------------------------------------------------------
# Vectors
# ---------------------------------------------------------------------------------------------------


def test_normalize_rows_keeps_zero_rows_and_dtype() -> None:
    v = np.array([[3, 4], [0, 0]], dtype=np.float32)
    out = V.normalize_rows(v)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0, 0]])
    assert V.normalize_rows([[1, 1]]).dtype == np.float64
    assert V.normalize_rows(v, dtype=np.float64).dtype == np.float64


def test_cosine() -> None:
    assert V.cosine([1, 0], [2, 0]) == pytest.approx(1.0)
    assert V.cosine([1, 0], [0, 3]) == pytest.approx(0.0)
    assert V.cosine([1, 1], [-1, -1]) == pytest.approx(-1.0)
    assert V.cosine([0, 0], [1, 0]) == 0.0


def test_pairwise_cosine_matrix() -> None:
    v = np.array([[2, 0], [1, 1], [0, 5]], dtype=np.float32)
    sims = V.pairwise_cosine(v)
    assert sims.shape == (3, 3) and sims.dtype == np.float64
    np.testing.assert_allclose(np.diag(sims), 1.0)
    np.testing.assert_allclose(sims, sims.T)
    assert sims[0, 1] == pytest.approx(V.cosine(v[0], v[1])) == pytest.approx(np.sqrt(0.5))
    assert sims[0, 2] == pytest.approx(0.0)


def test_segment_centroids_are_normalised_means_of_unit_vectors() -> None:
    unit = V.normalize_rows(np.array([[1, 0], [0, 1], [1, 0], [0, 1], [1, 1]], dtype=np.float32))
    labels = np.array([0, 0, 1, 1, -1])
    cents = V.segment_centroids(unit, labels)
    assert cents.shape == (2, 2) and cents.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(cents, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(cents[0], [np.sqrt(0.5), np.sqrt(0.5)], rtol=1e-6)  # noise row ignored
    assert V.segment_centroids(unit, np.full(5, -1)).shape == (0, 2)


def test_cosine_silhouette_separates_clear_clusters_and_needs_two() -> None:
    rng = np.random.default_rng(0)
    a = np.array([1.0, 0, 0]) + rng.normal(scale=0.05, size=(20, 3))
    b = np.array([0, 1.0, 0]) + rng.normal(scale=0.05, size=(20, 3))
    x = np.vstack([a, b])
    labels = np.array([0] * 20 + [1] * 20)
    score = V.cosine_silhouette(x, labels)
    assert score is not None and score > 0.8
    sampled = V.cosine_silhouette(x, labels, sample_size=10, seed=1)
    assert sampled is not None and sampled > 0.8
    assert V.cosine_silhouette(x, np.zeros(40, dtype=int)) is None  # one segment
    assert V.cosine_silhouette(x[:2], np.array([0, 1])) is None  # every user its own segment
    assert V.cosine_silhouette(x, np.full(40, -1)) is None  # all noise


def test_mentions_takes_whole_words_and_columns_take_exact_names() -> None:
    assert not D.mentions("Rural Mexico", "CO") and D.mentions("Colombia (CO)", "CO")
    assert not D.mentions("prefer not to say", "f")
    assert D.mentions("non-profit workers", "Non-Profit") and D.mentions("rural   mexico", "Rural Mexico")
    assert not D.mentions("New Yorkers", "New York") and D.mentions("上海白领", "上海")
    assert D.attribute_columns("age_group", ["page_views", "message_count", "Age"]) == ["Age"]
    assert D.attribute_columns("age_group", ["page_views", "message_count"]) == []
    assert D.attribute_columns("location", ["State", "country"]) == ["country", "State"]


@pytest.mark.parametrize(
    ("field", "claim", "text", "supported"),
    [
        ("gender", "women", "As a mother I ...", True),
        ("gender", "women", "As a father I ...", False),
        ("age_group", "30s", "I am 34 years old", True),
        ("age_group", "30s", "I am 54 years old", False),
        ("occupation", "mostly baristas", "I work as a barista", True),
        ("occupation", "baristas", "I love espresso", False),
        ("location", "上海", "我在上海工作", True),
    ],
)
def test_text_supports_needs_the_claim_named(field: str, claim: str, text: str, supported: bool) -> None:
    assert D.text_supports(field, claim, text) is supported
