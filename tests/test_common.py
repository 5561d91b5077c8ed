"""The shared helpers in persona_llm/common/: text matching, demographics parsing, vector maths."""

from __future__ import annotations

import unicodedata

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
