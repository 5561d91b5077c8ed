"""Reading ages and genders out of free text, for the estimate gate (personas/gates.py) and the claims
eval (evaluation/claims.py): both must read "in their 30s", "teens", "women" or "男性" the same way.

Ages become intervals: "23-27" -> (23, 27); "30s" / "thirties" / "30多岁" -> (30, 39); "late 20s" -> (26, 29);
"30+" / "over 30" -> (30, 100); "under 18" -> (0, 17); "aged 25" -> (25, 25); life stages ("teens",
"college students", "retirees", "青少年") -> their usual span. A text may name several. "80后" is a birth
decade, not an age, and is not read as one.

Genders are "female" and "male", named by whole words and their synonyms (women, guys, mothers, 女性...);
the one-letter codes "f" and "m" count only as a whole value (an attribute column's "F"), since as a word
inside a sentence they are too often something else ("I'm").
"""

from __future__ import annotations

import re
from collections.abc import Sequence

Interval = tuple[float, float]

_RANGE = re.compile(r"(\d{1,2})\s*(?:-|–|—|to|~|至|到)\s*(\d{1,2})")
_DECADE = re.compile(r"(?:(early|mid|late)[- ]?)?(?<!\d)(\d)0\s*'?s\b", re.I)
_DECADE_ZH = re.compile(r"(?<!\d)(\d)0\s*(?:多|几)岁")  # 20多岁 / 30几岁: in one's twenties / thirties
_PLUS = re.compile(r"(\d{1,2})\s*\+|(?:over|above|older than|at least)\s+(\d{1,2})", re.I)
_UNDER = re.compile(r"(?:under|below|younger than|less than)\s+(\d{1,2})", re.I)
_SINGLE = re.compile(
    r"(?:aged?|age of)\s+(\d{1,2})\b|\b(\d{1,2})\s*(?:years? old|y/?o)\b|(\d{1,2})\s*岁", re.I
)

_NUMBER_WORDS: dict[str, Interval] = {
    "twenties": (20, 29),
    "thirties": (30, 39),
    "forties": (40, 49),
    "fifties": (50, 59),
    "sixties": (60, 69),
    "seventies": (70, 79),
}

# Phrases -> age interval. Matched as whole words, case-insensitive.
_AGE_PHRASES: list[tuple[str, Interval]] = [
    (r"middle[- ]school|junior high", (11, 14)),
    (r"high[- ]school|secondary school|teen(?:age)?s?|teenagers?|adolescents?|youths?|minors", (13, 18)),
    (r"college|undergrad(?:uate)?s?|university students?|uni students?|freshm[ae]n", (18, 22)),
    (r"young adults?", (18, 29)),
    (r"twenty[- ]?somethings?", (20, 29)),
    (r"thirty[- ]?somethings?", (30, 39)),
    (r"forty[- ]?somethings?", (40, 49)),
    (r"middle[- ]aged", (40, 60)),
    (r"retirees?|retired|seniors?|elderly|pensioners?", (60, 100)),
    (r"children|kids", (0, 12)),
]
# Chinese has no word boundaries: these match as substrings.
_AGE_PHRASES_ZH: list[tuple[str, Interval]] = [("青少年", (13, 18))]

GENDER_WORDS: dict[str, tuple[str, ...]] = {
    "female": (
        "female", "females", "woman", "women", "girl", "girls", "lady", "ladies", "mother", "mothers",
        "mom", "moms", "mum", "mums", "feminine", "女", "女性",
    ),
    "male": (
        "male", "males", "man", "men", "boy", "boys", "guy", "guys", "gentleman", "gentlemen", "father",
        "fathers", "dad", "dads", "masculine", "男", "男性",
    ),
}  # fmt: skip
_GENDER_CODES = {"f": "female", "m": "male"}


def parse_age_intervals(text: str) -> list[Interval]:
    """Age intervals named in `text`: ranges, decades (early/mid/late), "18+", "under 18", life stages."""
    s = text.lower()
    found: list[Interval] = []
    for m in _RANGE.finditer(s):
        lo, hi = float(m.group(1)), float(m.group(2))
        if lo <= hi:
            found.append((lo, hi))
    s_wo_ranges = _RANGE.sub(" ", s)
    for m in _DECADE.finditer(s_wo_ranges):
        base = float(m.group(2)) * 10
        part = (m.group(1) or "").lower()
        lo, hi = {"early": (base, base + 3), "mid": (base + 3, base + 6), "late": (base + 6, base + 9)}.get(
            part, (base, base + 9)
        )
        found.append((lo, hi))
    for m in _DECADE_ZH.finditer(s_wo_ranges):
        base = float(m.group(1)) * 10
        found.append((base, base + 9))
    s_wo_decades = _DECADE_ZH.sub(" ", s_wo_ranges)  # "20多岁" is a decade, not the single age 20
    for m in _PLUS.finditer(s_wo_decades):
        found.append((float(m.group(1) or m.group(2)), 100.0))
    for m in _UNDER.finditer(s_wo_decades):
        found.append((0.0, float(m.group(1)) - 1))
    for m in _SINGLE.finditer(s_wo_decades):
        age = float(next(g for g in m.groups() if g))
        found.append((age, age))
    for word, (lo, hi) in _NUMBER_WORDS.items():
        if re.search(rf"\b{word}\b", s):
            found.append((float(lo), float(hi)))
    for pattern, (lo, hi) in _AGE_PHRASES:
        if re.search(rf"\b(?:{pattern})\b", s):
            found.append((float(lo), float(hi)))
    for phrase, (lo, hi) in _AGE_PHRASES_ZH:
        if phrase in s:
            found.append((float(lo), float(hi)))
    return found


def fits_age(age: float, intervals: Sequence[Interval], tolerance: float = 0.0) -> bool:
    """True when `age` lies in one of `intervals`, each widened by `tolerance` years on both sides."""
    return any(lo - tolerance <= age <= hi + tolerance for lo, hi in intervals)


def mentions(text: str, word: str) -> bool:
    """`word` in `text`: a whole word (plural "s" allowed) when it is ASCII, a substring otherwise."""
    if re.fullmatch(r"\w+", word, flags=re.ASCII):
        plural = "s?" if len(word) > 1 else ""
        return re.search(rf"(?<![\w-]){re.escape(word)}{plural}(?![\w-])", text, flags=re.I) is not None
    return word.lower() in text.lower()


def genders_in(text: str) -> set[str]:
    """The genders ("female", "male") `text` names; "female" does not count as naming "male"."""
    code = _GENDER_CODES.get(text.strip().lower())
    if code is not None:
        return {code}
    return {gender for gender, words in GENDER_WORDS.items() if any(mentions(text, w) for w in words)}


def gender_of(value: str) -> str | None:
    """The one gender `value` names; None when it names none or both ("men and women")."""
    named = genders_in(value)
    return next(iter(named)) if len(named) == 1 else None


def gender_value(value: str) -> str | None:
    """The gender an attribute value stands for when the whole value is a gender word or code ("F",
    "Women", "女性"); None otherwise, so a place such as "Isle of Man" is not read as a gender."""
    v = value.strip().lower()
    if v in _GENDER_CODES:
        return _GENDER_CODES[v]
    return next((g for g, words in GENDER_WORDS.items() if v in words), None)
