"""The one sentence splitter: where a sentence ends in what a model wrote (a summary checked for length,
statements checked against the texts, the narrative eval) and in what customers wrote (quotable units).

A sentence ends at . ! ? … followed by whitespace (so "3.5 stars" and "e.g.x" stay whole; "U.S. based"
still splits, which is why summary bounds leave room) or right after a CJK end mark 。！？ (Chinese
puts no space after it). Quotable units of customer texts also end at a full-width semicolon ；, which
joins independent clauses in Chinese the way a full stop does in English.
"""

from __future__ import annotations

import re

_LATIN_END = r"(?<=[.!?…])\s+(?=\S)"
SENTENCE_END = re.compile(rf"{_LATIN_END}|(?<=[。！？])")
UNIT_END = re.compile(rf"{_LATIN_END}|(?<=[。！？；])")
#: Fragments shorter than this are punctuation debris ("!!", "a."), not sentences.
MIN_SENTENCE_CHARS = 3


def spans(text: str, pattern: re.Pattern[str] = SENTENCE_END) -> list[tuple[int, int]]:
    """(start, end) spans of `text` between matches of `pattern`, stripped of surrounding spaces."""
    cuts, start = [], 0
    for m in pattern.finditer(text):
        cuts.append((start, m.start()))
        start = m.end()
    cuts.append((start, len(text)))
    out = []
    for a, b in cuts:
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if b > a:
            out.append((a, b))
    return out


def split_sentences(text: str) -> list[str]:
    """The sentences of `text`, stripped; fragments under `MIN_SENTENCE_CHARS` characters are dropped."""
    return [text[a:b] for a, b in spans(text) if b - a >= MIN_SENTENCE_CHARS]
