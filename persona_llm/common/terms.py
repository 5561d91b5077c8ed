"""Content words of a text, as the lexical support checks read them.

One rule for every check that asks "does this statement use the words of its evidence": the eval's
narrative support (`persona_llm.evaluation.narrative`) and the chat's grounded-words check
(`persona_llm.chat.checks`). Words are lower-cased, 3+ letters, not stop words, and compared by their
first `STEM` letters so "programmer"/"programming" meet; Chinese and Japanese text is read as
character bigrams (no word segmenter needed, and a bigram rarely crosses two unrelated texts).
"""

from __future__ import annotations

import re

STEM = 5
_WORD = re.compile(r"[^\W\d_]{3,}", re.UNICODE)
_CJK_RUN = re.compile(r"[\u3040-\u30ff\u3400-\u9fff]+")
# Words that say nothing about a segment (English function words and persona boilerplate).
_STOP_WORDS = """the and for are but not you all any can had her was one our out has have him his how its may new now
    old see two way who boy did get let put say she too use they them their there then than this that with
    from what when where which while will would could should about after again also been before being
    between both each few more most other some such only own same just into over under very your yours
    who whom these those were here does doing because until against through during above below off once
    further like want wants need needs people persona customers customer users user segment often usually
    always really much many make makes made good great best better love loves enjoy enjoys value values
    interested interest interests goal goals pain point points looking look looks care cares"""
STOP = frozenset(_STOP_WORDS.split())
CJK_STOP = frozenset({"他们", "她们", "我们", "一个", "这个", "非常", "喜欢", "希望", "关注", "关心", "用户", "客户"})


def content_terms(text: str) -> set[str]:
    """A text's content words (first `STEM` letters) and CJK character bigrams."""
    terms = {w[:STEM] for w in (m.casefold() for m in _WORD.findall(text)) if w not in STOP and not _CJK_RUN.fullmatch(w)}
    for run in _CJK_RUN.findall(text):
        terms.update(b for b in (run[i : i + 2] for i in range(len(run) - 1)) if b not in CJK_STOP)
    return terms
