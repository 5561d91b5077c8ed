"""The shared helpers in persona_llm/common/: text matching, demographics parsing, vector maths."""

from __future__ import annotations

import unicodedata

import pytest

from persona_llm.common import demographics as D
from persona_llm.common import textmatch as T

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
