"""Accusations: a persona may not call its members wrongdoers, or give them wrongdoing as a goal, unless
the members say so of themselves.

Why a rule of its own: the similarity test of `persona_llm.personas.support` asks whether a statement is
about what the segment's texts are about, not whether it is true of the people who wrote them. The ci
suite's 20 Newsgroups run (2026-12-01, Qwen2.5-Coder-1.5B) named the talk.politics.guns segment (posts
on the Waco siege, the FBI, gun laws) "Gun Criminals": "customers who order firearms to commit crimes
late at night", goal "commit crimes". Every statement was close to posts that discuss crime, so 13 of
16 passed and the persona read confidence "high". People who write about crime are not criminals.

The rule, by field (`accusation`):
- name: a label for wrongdoers (`LABELS`: criminals, thieves, scammers, terrorists, addicts, ...);
- tagline and summary sentences (a brief's insights and story): the members as the subject of such a
  label ("Gun criminals are customers who ...", "They are a group of thieves") or of a wrongdoing act
  (`ACTS`: "they ... commit crimes", "who break the law"), not what they say or fear of others ("they
  think the sellers are scammers", "they worry that stores steal data");
- goals, motivations, purchase triggers (the members' own aims): a label or an act, except after
  "about", "against", "from", "like", "who", ... ("protect their homes from thieves");
- interests: an act ("committing fraud"); a label there is a topic ("true crime", "criminals");
- pain points and objections: never (they are where victims' worries belong).

Such a statement is unsupported, whatever its similarity, unless at least `MIN_SELF_REPORTS` texts of the
segment say it of their writer ("I'm a recovering addict", "as an addict", "I stole"): a support group
of addicts may be called addicts. What it cannot catch: misattributions without those words ("deeply
passionate about gun control" for posters against it, a stance reversed), and labels outside the list.
English; Chinese labels in names and Chinese acts in aims only (who does what in a Chinese sentence is
not read); other languages are not checked by this rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: Labels for people who do wrong. Plural and singular; "hacker", "pirate" and "fanatic" are left out:
#: customers call themselves that ("sports fanatics") without confessing anything.
LABELS = (
    r"criminals?|felons?|crooks?|thief|thieves|fraudsters?|scammers?|swindlers?|con[ -]artists?|"
    r"terrorists?|extremists?|racists?|bigots?|misogynists?|addicts?|junkies?|drug[ -]dealers?|"
    r"predators?|abusers?|murderers?|killers?|rapists?|stalkers?|gangsters?|thugs?|vandals?|"
    r"smugglers?|shoplifters?|cheaters?|liars?|trolls?"
)
LABELS_ZH = r"罪犯|犯罪分子|骗子|小偷|窃贼|恐怖分子|瘾君子|吸毒者|毒贩|黑社会"
#: Wrongdoing as something the persona does or wants.
ACTS = (
    r"commit(?:s|ted|ting)?\s+(?:a\s+|any\s+|more\s+)?(?:crimes?|fraud|murders?|offen[cs]es?|felon(?:y|ies))|"
    r"(?:break|breaks|breaking|broke)\s+the\s+laws?|breaking\s+laws|"
    r"(?:steal|stealing|steals|stole|robbing|defraud(?:ing|ed)?|scamming|swindling|smuggl(?:e|ing|ed)|"
    r"shoplift(?:ing|ed)?|launder(?:ing|ed)?\s+money|evad(?:e|ing|ed)\s+taxe?s?)\b|"
    r"(?:kill|killing|killed|murder(?:ing|ed)?|hurt(?:ing)?|harm(?:ing|ed)?)\s+(?:people|others|someone|anyone)\b|"
    r"illegal(?:ly)?\s+(?:activit(?:y|ies)|acts?|drugs|weapons|firearms|guns)|(?:for|in)\s+a\s+crime\b"
)
ACTS_ZH = r"犯罪|违法|偷窃|诈骗|行骗"

_LABEL = re.compile(rf"(?<![\w-])(?:{LABELS})(?![\w-])", re.IGNORECASE)
_LABEL_ZH = re.compile(LABELS_ZH)
_ACT = re.compile(rf"\b(?:{ACTS})", re.IGNORECASE)
_ACT_ZH = re.compile(ACTS_ZH)
#: Words that, up to two words before a label or an act, make it what the persona fears, fights, suffers
#: or is mistaken for, or someone else's doing: "worried about scammers", "treated like criminals",
#: "protect their homes from thieves", "people who steal", "not criminals".
_NOT_OF_THEM = re.compile(
    r"\b(?:about|against|from|by|on|with|towards?|like|than|fear(?:s|ing)?|avoid(?:s|ing)?|"
    r"protect(?:s|ing|ion)?|report(?:s|ing)?|catch(?:es|ing)?|stop(?:s|ping)?|prevent(?:s|ing)?|"
    r"victims?|anti|not|never|no|who|that|which|whose|other)\s+(?:[\w-]+\s+){0,2}$",
    re.IGNORECASE,
)
_NOT_OF_THEM_ZH = re.compile(r"(?:被|防|止|免|反|打击|举报|担心|害怕)\S{0,2}$")
#: "I'm a recovering addict", "as an addict", "we are thieves"; "I stole", "we broke the law".
_SELF_LABEL = re.compile(
    rf"\b(?:i\s+am|i'm|im|i\s+was|i've\s+been|we\s+are|we're|as\s+an?)\s+(?:[\w-]+\s+){{0,2}}({LABELS})\b",
    re.IGNORECASE,
)
_SELF_ACT = re.compile(rf"\b(?:i|we)\s+(?:\w+\s+){{0,2}}(?:{ACTS})", re.IGNORECASE)
MIN_SELF_REPORTS = 3

#: Who a sentence of the narrative is about when it is about the members.
_SUBJECT = r"(?:they|these(?:\s+[\w-]+)?|this\s+[\w-]+|such\s+[\w-]+|members|customers|users|buyers|shoppers)"
#: Words between the members and an act that make it what they say or feel about someone else: "they
#: think sellers commit fraud", "they worry that stores steal data".
_REPORTED = re.compile(
    r"\b(?:think|thinks|worr(?:y|ies|ied)|fears?|feels?|believes?|says?|complain(?:s)?|suspects?|claims?|"
    r"accuses?|reports?|warns?|concerned|angry|upset|that|when|if)\b",
    re.IGNORECASE,
)
#: The sentence opens with the label as its subject ("Gun criminals are customers who ...") or says the
#: members are such people ("They are a group of thieves").
_LABEL_AS_SUBJECT = re.compile(rf"^\W*(?:[\w-]+\s+){{0,2}}({LABELS})\s+(?:are|is|were|was|who|that)\b", re.IGNORECASE)
_LABEL_AS_PREDICATE = re.compile(
    rf"^\W*{_SUBJECT}\s+(?:are|were|is|was|act\s+as|behave\s+like)\s+((?:[\w-]+\s+){{0,4}}?)({LABELS})(?![\w-])",
    re.IGNORECASE,
)
_ACT_OF_THEM = re.compile(rf"(?:^\W*{_SUBJECT}|\bwho)\s+((?:[\w'-]+\s+){{0,8}}?)({ACTS})", re.IGNORECASE)

#: Fields by what they say: the narrative's sentences, the members' own aims, and their interests.
_SENTENCES = frozenset({"tagline", "summary", "insights", "insight", "story"})
_AIMS = frozenset({"goals", "motivations", "purchase_triggers"})


def _first_of_them(pattern: re.Pattern[str], guard: re.Pattern[str], text: str) -> str | None:
    for match in pattern.finditer(text):
        if not guard.search(text[: match.start()]):
            return match.group(0)
    return None


def _in_sentence(text: str) -> str | None:
    subject = _LABEL_AS_SUBJECT.search(text)
    if subject:
        return subject.group(1)
    predicate = _LABEL_AS_PREDICATE.search(text)
    if predicate and not re.search(r"\b(?:not|never|no|like|than)\b", predicate.group(1), re.IGNORECASE):
        return predicate.group(2)
    for act in _ACT_OF_THEM.finditer(text):
        between = act.group(1)
        if not _REPORTED.search(between) and not _NOT_OF_THEM.search(between):
            return act.group(2)
    return None


def accusation(field: str, text: str) -> str | None:
    """The wrongdoing word (a label or an act) a statement of `field` pins on the persona's members, or
    None. Narrative sentences are read for the members as subject only (English); a Chinese label counts
    in a name, a Chinese act in an aim: telling who does what in a Chinese sentence is left undone."""
    if field == "name":
        found = _LABEL.search(text) or _LABEL_ZH.search(text)
        return found.group(0) if found else None
    if field in _SENTENCES:
        return _in_sentence(text)
    if field in _AIMS:
        label = _first_of_them(_LABEL, _NOT_OF_THEM, text)
        if label:
            return label
    if field in _AIMS or field == "interests":
        return _first_of_them(_ACT, _NOT_OF_THEM, text) or (
            _first_of_them(_ACT_ZH, _NOT_OF_THEM_ZH, text) if field in _AIMS else None
        )
    return None


def _label_key(word: str) -> str:
    """thieves/thief, con-artists/con artist: one key per label."""
    key = re.sub(r"[\s-]+", " ", word.casefold())
    return re.sub(r"s$", "", re.sub(r"ves$", "f", key))


def self_reports(word: str, texts: Iterable[str]) -> int:
    """How many of `texts` say `word` (a label, or any wrongdoing act) of their writer."""
    if _LABEL.fullmatch(word):
        key = _label_key(word)
        return sum(1 for t in texts if any(_label_key(m.group(1)) == key for m in _SELF_LABEL.finditer(t)))
    return sum(1 for t in texts if _SELF_ACT.search(t))


def unsupported_accusation(field: str, text: str, segment_texts: Iterable[str]) -> str | None:
    """Why the statement is unsupported whatever its similarity (its accusation, said of themselves by
    fewer than MIN_SELF_REPORTS texts of the segment), or None."""
    word = accusation(field, text)
    if word is None:
        return None
    if word.isascii() and self_reports(word, segment_texts) >= MIN_SELF_REPORTS:
        return None
    return f'calls its members "{word}": fewer than {MIN_SELF_REPORTS} texts of the segment say that of their writer'
