"""Text matching shared by the quote gate (personas/gates.py) and the grounding eval (evaluation/metrics.py).

A quote the gate keeps must be one the eval verifies, and the other way round, so both match through
the functions here and nowhere else:

* `normalize_ws`: Unicode NFC, then every whitespace run becomes one space, ends stripped. NFC is the
  stricter-correct choice: "é" as one code point and as "e" + combining accent are the same text to a
  reader, and texts from different systems mix both forms, so a quote must not fail (or pass) on the
  encoding alone. Before this module the gate skipped NFC while the eval applied it.
* `match_verbatim` / `find_verbatim` / `is_verbatim`: the quote occurs in the source after that
  normalisation, case-sensitively, with quote marks folded (" ' “ ” « » ... all match each other). Small models writing
  JSON swap " for ' and straight for curly marks; the gate then keeps the source's own span, so a kept
  quote is the source's text. Nothing else is loosened: a different word, a different case or a missing
  piece is not verbatim.
* Where a quote may start and end: a substring is not enough, because a fragment can say the opposite of
  its source ("happy with delivery times" out of "unhappy with delivery times", "like this product at all"
  out of "I do not like this product at all"). So `match_verbatim` accepts an occurrence only if
  - it starts and ends at a word boundary: the characters on either side of each end are not both part
    of one word (letters and digits of a script that spaces its words, joined by ' or -, so "n't" or
    "non-" cannot be cut off). Chinese and Japanese have no spaces, so there a quote must start and end
    at the edge of a run of CJK characters: the text's start or end, punctuation, a space or a change of
    script. In practice that is a clause ("物流太慢了" out of "物流太慢了，等了一个星期"), never half a
    word ("满意" out of "不满意");
  - it does not drop a negation that governs it: the word just before it (only spaces between) is not a
    negator ("not", "no", "never", "hardly", "without", any "...n't", a few of other languages: "nicht",
    "pas", "nunca"...), and the Chinese text right before it is not a negator (不 没 别 非 未 无 莫 勿 甭,
    or 没有 / 不太 / 不是 ...: "不满意", "没有问题", "不太满意"; 非常 "very" is not one).
  The first occurrence that passes is the match; a quote that occurs only in ways that fail is reported
  with the reason (`cuts_word`, `drops_negation`), which the gate records.

Cleaning a model's draft (quote marks or ellipses wrapped around it) is the gate's business, not matching.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

_WS = re.compile(r"\s+")

# One mark for every quote mark; str.maketrans maps one character to one, so offsets survive folding.
_QUOTE_MARKS = str.maketrans({ch: "'" for ch in "\"'“”„‟‘’‚‛«»`´"})


def normalize_ws(text: str) -> str:
    """NFC, whitespace runs collapsed to one space, ends stripped."""
    return _WS.sub(" ", unicodedata.normalize("NFC", text)).strip()


def fold_quote_marks(text: str) -> str:
    """Every quote mark replaced by ' (same length, so positions still point into the original)."""
    return text.translate(_QUOTE_MARKS)


MatchProblem = Literal["not_found", "cuts_word", "drops_negation"]

# Characters that join two word pieces into one word: "don't", "non-profit".
_JOINERS = frozenset("'-‐")
_NEGATORS_EN = (
    "not|no|never|hardly|barely|scarcely|without|nor|neither|cannot|cant|dont|doesnt|didnt|isnt|arent|wasnt"
    "|werent|wont|wouldnt|shouldnt|couldnt|havent|hasnt|hadnt|aint|nicht|kein|keine|keinen|nie|niemals"
    "|pas|jamais|sans|nunca|sin|nem|não"
)
# The word right before a quote (only spaces between), on quote-mark-folded text: "not ", "don't ".
_NEGATION_BEFORE = re.compile(rf"(?:(?<![\w'])(?:{_NEGATORS_EN})|\w+n't) +$", re.IGNORECASE)
_NEGATORS_CJK = frozenset("不没沒别別非未无無莫勿甭")
# Two-character negations whose second character is not a negator by itself ("没有问题", "不太满意").
_NEGATIONS_CJK_2 = frozenset({"没有", "沒有", "不太", "不是", "不够", "不夠", "不会", "不會", "不能", "不算", "不怎"})


def _is_cjk(ch: str) -> bool:
    return (
        "\u3040" <= ch <= "\u30ff"  # kana
        or "\u3400" <= ch <= "\u4dbf"
        or "\u4e00" <= ch <= "\u9fff"
        or "\uf900" <= ch <= "\ufaff"
        or "\U00020000" <= ch <= "\U0002ffff"
    )


def _word_class(ch: str) -> str | None:
    """"cjk", "word" (a letter, digit or mark of a spaced script) or None (space, punctuation)."""
    if _is_cjk(ch):
        return "cjk"
    if ch.isalnum() or ch == "_" or unicodedata.category(ch).startswith("M"):
        return "word"
    return None


def _is_boundary(text: str, i: int) -> bool:
    """True when a quote may start or end at position `i` of `text` (see the module docstring)."""
    if i <= 0 or i >= len(text):
        return True
    left, right = _word_class(text[i - 1]), _word_class(text[i])
    if left is not None and left == right:
        return False  # inside a word, or inside a CJK run
    # A joiner between two word pieces belongs to the word: cutting on either side of it cuts the word.
    if text[i] in _JOINERS and left == "word" and i + 1 < len(text) and _word_class(text[i + 1]) == "word":
        return False
    return not (text[i - 1] in _JOINERS and right == "word" and i >= 2 and _word_class(text[i - 2]) == "word")


def _drops_negation(folded: str, start: int) -> bool:
    """True when a negator sits right before position `start` of the quote-mark-folded text."""
    before = folded[:start]
    if before[-1:] in _NEGATORS_CJK or before[-2:] in _NEGATIONS_CJK_2:
        return True
    return _NEGATION_BEFORE.search(before) is not None


@dataclass(frozen=True)
class VerbatimMatch:
    """Where `match_verbatim` found a quote: the source's own span, or the reason it did not."""

    span: str | None
    problem: MatchProblem | None


def match_verbatim(quote: str, source_normalized: str) -> VerbatimMatch:
    """The source's own text for `quote` (both already `normalize_ws`-ed), or why there is none.

    Case-sensitive; quote marks match loosely and the span carries the source's marks; the span must start
    and end at word (CJK: clause) boundaries and not drop a negation before it. When no occurrence passes,
    `problem` is "drops_negation" if one dropped a negation, else "cuts_word"; "not_found" if none exists.
    """
    if not quote:
        return VerbatimMatch(None, "not_found")
    folded_source, folded_quote = fold_quote_marks(source_normalized), fold_quote_marks(quote)
    problem: MatchProblem = "not_found"
    start = folded_source.find(folded_quote)
    while start >= 0:
        end = start + len(quote)
        if _drops_negation(folded_source, start):
            problem = "drops_negation"
        elif not (_is_boundary(folded_source, start) and _is_boundary(folded_source, end)):
            problem = "cuts_word" if problem == "not_found" else problem
        else:
            return VerbatimMatch(source_normalized[start:end], None)
        start = folded_source.find(folded_quote, start + 1)
    return VerbatimMatch(None, problem)


def find_verbatim(quote: str, source_normalized: str) -> str | None:
    """The source's own text for `quote` by `match_verbatim`'s rules; None when it does not match."""
    return match_verbatim(quote, source_normalized).span


def is_verbatim(quote: str, source: str) -> bool:
    """True when the (non-empty) `quote` is in `source` by `match_verbatim`'s rules; raw strings in."""
    return find_verbatim(normalize_ws(quote), normalize_ws(source)) is not None


def name_key(name: str) -> str:
    """A persona name as compared for duplicates: case, accents and spacing ignored."""
    key = unicodedata.normalize("NFKD", normalize_ws(name)).casefold()
    return "".join(ch for ch in key if not unicodedata.combining(ch))


@dataclass(frozen=True)
class SourceText:
    """One stored text as quote matching sees it: its words, its author and its segment.

    `normalized` is what quotes are matched against; it is computed once, on first use.
    """

    text: str
    user_id: str
    segment_id: int
    text_id: str = ""

    @cached_property
    def normalized(self) -> str:
        return normalize_ws(self.text)
