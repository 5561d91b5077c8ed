"""Reading ages and genders out of free text, for the estimate gate (personas/gates.py) and the claims
eval (evaluation/claims.py): both must read "in their 30s", "teens", "women" or "男性" the same way.

Ages become intervals: "23-27" -> (23, 27); "30s" / "thirties" / "30多岁" -> (30, 39); "late 20s" -> (26, 29);
"30+" / "over 30" -> (30, 100); "under 18" -> (0, 17); "aged 25" -> (25, 25); life stages ("teens",
"college students", "students", "retirees", "青少年") -> their usual span. A text may name several. "80后" is a birth
decade, not an age, and is not read as one.

Genders are "female" and "male", named by whole words and their synonyms (women, guys, mothers, 女性...);
the one-letter codes "f" and "m" count only as a whole value (an attribute column's "F"), since as a word
inside a sentence they are too often something else ("I'm").

Attribute columns are found by exact name (case-insensitive) in `ATTRIBUTE_COLUMNS`, a field's accepted
names in order of preference: a substring would read `page_views` or `message_count` as an age. Values are
compared as whole words (`mentions`): the country code "CO" is not in "Rural Mexico", nor the code "f" in
"prefer not to say". A demographic claim drawn from texts needs a cited text that names it
(`text_supports`): its gender or an overlapping age, or else every content word of the claim.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

Interval = tuple[float, float]

_RANGE = re.compile(r"(\d{1,2})\s*(?:-|–|—|to|~|至|到)\s*(\d{1,2})")
_DECADE = re.compile(r"(?:(early|mid|late)[- ]?)?(?<!\d)(\d)0\s*'?s\b", re.I)
_DECADE_ZH = re.compile(r"(?<!\d)(\d)0\s*(?:多|几)岁")  # 20多岁 / 30几岁: in one's twenties / thirties
_PLUS = re.compile(r"(\d{1,2})\s*\+|(?:over|above|older than|at least)\s+(\d{1,2})", re.I)
_UNDER = re.compile(r"(?:under|below|younger than|less than)\s+(\d{1,2})", re.I)
# "I'm 38 and ...", "I am 71, a retired postman": a bare number after "I am" is an age only where a
# clause ends after it ("I am 5 minutes away", "I'm 2 for 2" are not ages).
_SINGLE = re.compile(
    r"(?:aged?|age of)\s+(\d{1,2})\b|\b(\d{1,2})\s*(?:years? old|y/?o)\b|(\d{1,2})\s*岁"
    r"|\bi(?:'m| am)\s+(\d{1,2})(?=\s*(?:[,.;!]|\band\b|$))",
    re.I,
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
# Plain "students": school or university age; only when no school or college named says which.
_STUDENTS = (re.compile(r"\bstudents?\b"), re.compile(r"\b(?:school|college|universit(?:y|ies)|uni|undergrad)"))
_STUDENT_AGES: Interval = (12, 24)
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
    if _STUDENTS[0].search(s) and not _STUDENTS[1].search(s):
        found.append(_STUDENT_AGES)
    for phrase, (lo, hi) in _AGE_PHRASES_ZH:
        if phrase in s:
            found.append((float(lo), float(hi)))
    return found


def fits_age(age: float, intervals: Sequence[Interval], tolerance: float = 0.0) -> bool:
    """True when `age` lies in one of `intervals`, each widened by `tolerance` years on both sides."""
    return any(lo - tolerance <= age <= hi + tolerance for lo, hi in intervals)


#: Attribute values that say the value is not known ("indUnk": the blog corpus's unknown industry); the
#: persona gate and the claims eval skip them alike.
UNKNOWN_VALUES = frozenset({"", "unknown", "indunk", "n/a", "na", "none", "null", "nan", "未知"})

# Persona demographic field -> attribute column names that can support or check it, exact (compared
# case-insensitively), most specific first. Shared by the estimate gate and the claims eval.
ATTRIBUTE_COLUMNS: dict[str, tuple[str, ...]] = {
    "age_group": ("age_group", "age_range", "age_band", "age", "age_years", "年龄"),
    "gender": ("gender", "sex", "性别"),
    "occupation": ("occupation", "industry", "job", "profession", "职业", "行业"),
    "location": ("location", "country", "region", "city", "state", "地区", "城市"),
}


def attribute_columns(field: str, available: Iterable[str]) -> list[str]:
    """The columns of `available` that hold `field` by exact name, in `ATTRIBUTE_COLUMNS` order."""
    by_lower = {str(c).lower(): str(c) for c in available}
    return [by_lower[name] for name in ATTRIBUTE_COLUMNS.get(field, ()) if name in by_lower]


def _has_cjk(text: str) -> bool:
    return any("\u3040" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff" for ch in text)


def mentions(text: str, word: str) -> bool:
    """`word` (or phrase) in `text` as whole words, case-insensitive, a plural "s" allowed after a single
    ASCII word; a substring when `word` has Chinese or Japanese characters (no spaces to split on)."""
    word = word.strip()
    if not word:
        return False
    if _has_cjk(word):
        return word.lower() in text.lower()
    plural = "s?" if re.fullmatch(r"\w+", word, flags=re.ASCII) and len(word) > 1 else ""
    body = r"\s+".join(re.escape(part) for part in word.split())
    return re.search(rf"(?<![\w-]){body}{plural}(?![\w-])", text, flags=re.I) is not None


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


# Words that qualify a claim rather than name it: "mostly students", "people in Berlin".
_FILLER_WORDS = frozenset({
    "a", "an", "the", "of", "and", "or", "in", "at", "on", "from", "who", "are", "is", "with", "mostly", "mainly",
    "largely", "primarily", "predominantly", "likely", "probably", "possibly", "some", "many", "most", "people",
    "users", "customers",
})  # fmt: skip


def intervals_overlap(a: Sequence[Interval], b: Sequence[Interval]) -> bool:
    """True when some interval of `a` overlaps some interval of `b`."""
    return any(x[0] <= y[1] and y[0] <= x[1] for x in a for y in b)


def text_supports(field: str, claim: str, text: str) -> bool:
    """True when `text` names the demographic `claim` for `field` ("age_group", "gender", ...): the same
    gender (any synonym), an overlapping age, or else every content word of the claim as a whole word
    (a trailing plural "s" ignored, so "baristas" is supported by "barista")."""
    if field == "gender" and (gender := gender_of(claim)) is not None:
        return gender in genders_in(text)
    if field == "age_group" and (claimed := parse_age_intervals(claim)):
        return intervals_overlap(claimed, parse_age_intervals(text))
    words = [w for w in re.findall(r"\w+", claim.lower()) if w not in _FILLER_WORDS]
    stems = [w[:-1] if len(w) > 3 and w.endswith("s") and w.isascii() else w for w in words]
    return bool(stems) and all(mentions(text, stem) for stem in stems)


def attribute_value_matches(field: str, claim: str, value: str) -> bool:
    """True when the attribute value `value` is what `claim` names: the same gender for genders, an
    overlapping age range for age groups, otherwise the value as whole words in the claim."""
    if field == "gender" and (gender := gender_of(claim)) is not None:
        return gender_value(value) == gender
    if field == "age_group" and (claimed := parse_age_intervals(claim)) and (held := parse_age_intervals(value)):
        return intervals_overlap(claimed, held)
    return mentions(claim, value)
