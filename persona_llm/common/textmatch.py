"""Text matching shared by the quote gate (personas/gates.py) and the grounding eval (evaluation/metrics.py).

A quote the gate keeps must be one the eval verifies, and the other way round, so both match through
the functions here and nowhere else:

* `normalize_ws`: Unicode NFC, then every whitespace run becomes one space, ends stripped. NFC is the
  stricter-correct choice: "é" as one code point and as "e" + combining accent are the same text to a
  reader, and texts from different systems mix both forms, so a quote must not fail (or pass) on the
  encoding alone. Before this module the gate skipped NFC while the eval applied it.
* `find_verbatim` / `is_verbatim`: the quote occurs in the source after that normalisation,
  case-sensitively, with quote marks folded (" ' “ ” « » ... all match each other). Small models writing
  JSON swap " for ' and straight for curly marks; the gate then keeps the source's own span, so a kept
  quote is the source's text. Nothing else is loosened: a different word, a different case or a missing
  piece is not verbatim.

Cleaning a model's draft (quote marks or ellipses wrapped around it) is the gate's business, not matching.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cached_property

_WS = re.compile(r"\s+")

# One mark for every quote mark; str.maketrans maps one character to one, so offsets survive folding.
_QUOTE_MARKS = str.maketrans({ch: "'" for ch in "\"'“”„‟‘’‚‛«»`´"})


def normalize_ws(text: str) -> str:
    """NFC, whitespace runs collapsed to one space, ends stripped."""
    return _WS.sub(" ", unicodedata.normalize("NFC", text)).strip()


def fold_quote_marks(text: str) -> str:
    """Every quote mark replaced by ' (same length, so positions still point into the original)."""
    return text.translate(_QUOTE_MARKS)


def find_verbatim(quote: str, source_normalized: str) -> str | None:
    """The source's own text for `quote`, both already `normalize_ws`-ed; None when it is not there.

    Case-sensitive; quote marks match loosely, and the span returned carries the source's marks.
    """
    if not quote:
        return None
    if quote in source_normalized:
        return quote
    start = fold_quote_marks(source_normalized).find(fold_quote_marks(quote))
    return source_normalized[start : start + len(quote)] if start >= 0 else None


def is_verbatim(quote: str, source: str) -> bool:
    """True when the (non-empty) `quote` is in `source` by `find_verbatim`'s rules; raw strings in."""
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
