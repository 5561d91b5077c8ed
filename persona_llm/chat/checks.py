"""Checks every chat answer passes before it is shown, and what is cut when it does not.

An answer may only say what the tools showed in its turn (`Evidence`):

* citations: each cited id is a text a tool returned in this turn (so it exists, and it is from the
  segment the tool was asked about); an id written inline as "[t12]" counts too;
* quotes: verbatim in the text they cite, by the persona writer's own gate (`ground_quotes`, over the
  shared matcher in `persona_llm.common.textmatch`), and that text is in the segment the quote names;
  words the answer puts in quote marks must be verbatim in one of the turn's texts;
* grounded words: a sentence's content words (the lexical rule of `persona_llm.common.terms`, quotes
  left out) must mostly occur in what the tools returned this turn or in the question, words about the
  run itself ("segment", "users", "share", "texts" ...) aside. Numbers and quotes are not the only way
  to say something false: a poem about autumn, a World Cup result or a product the texts never name
  passes every check above. This one cannot catch a false sentence written in the evidence's own words
  ("they hate hockey" over hockey posts), and it misses paraphrase (a true sentence in other words is
  re-asked, then removed);
* about the data: a sentence must say whose words or which part of the run it reports: it names the
  run's data (segments, customers, texts, "they say", a persona's name, an attribute column: the
  reference words of `persona_llm.chat.scope`), cites a text or quotes one, or carries on from a
  sentence that did ("It has 20 users."). "The Houston Astros won the 2018 football World Cup." passes
  the grounded-words check when baseball posts and the question hold its words; as a claim about the
  world it is not something the run can support, and is re-asked as what the texts say, or removed.
  A sentence copied word for word from a text the answer cites is the data itself and passes. It
  cannot tell a world claim that names the data ("customers know the Astros won") from a report;
* figures: any other number of 2+ digits (money, a year, a measure: "$100 per customer") must occur in
  what the tools returned this turn or in the question: a small model invents figures;
* numbers: a count of users or texts, or a percentage, must equal a number of the run (segment sizes,
  shares and text counts, totals) or one a tool stated this turn (mention counts, attribute shares), as
  written to its own precision ("33%" and "33.3%" for 0.3333, not "35%"). A number is held to the
  segments in context: those the sentence names, else the last ones an earlier sentence named, else
  those the question names; their numbers and the run's totals pass, another segment's do not. A number
  that only holds with words (an attribute value's share, a word's mention count) needs one of those
  words in the sentence. Segments an answer names must exist.

`SegmentChat` re-asks once with the problems; what still fails is removed by `apply_removals`, which
says so at the end of the answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from persona_llm.chat.records import (
    QUOTE_MAX_CHARS,
    ChatQuote,
    Citation,
    DraftAnswer,
    Fact,
    FactKind,
    Removal,
    TextRef,
    ToolResult,
)
from persona_llm.chat.scope import run_references
from persona_llm.common.terms import content_terms
from persona_llm.common.textmatch import find_verbatim, normalize_ws
from persona_llm.personas.gates import TextIndex, ground_quotes
from persona_llm.schema.personas import DraftQuote as PersonaDraftQuote
from persona_llm.schema.segments import SegmentSet
from persona_llm.schema.sentences import spans

CHECKS = ("citations", "quotes", "numbers", "segments", "grounded words", "about the data")

#: Share of a sentence's content words that must occur in the turn's evidence or the question.
GROUNDED_MIN_SHARE = 0.5
# Words about the run itself, which an answer may use whatever the tools returned (stems of
# `content_terms`: first 5 letters; CJK bigrams).
_RUN_WORDS_EN = """segment segments cluster clusters group groups user users customer customers member members people
    person text texts post posts review reviews message messages comment comments share shares percent
    percentage total largest large larger smallest small smaller biggest big size sizes count counts number
    numbers talk talks talked mention mentions mentioned mentioning keyword keywords word words topic topics
    compare compared comparison differ differs different difference similar both together respectively
    answer answers question questions data dataset run tool tools result results shown show shows found
    find say says said write writes wrote written quote quotes quoted cite cites cited persona personas
    name named called describe described description attribute attributes column columns value values
    top most least ranked rank first second third each every none nothing another others rest overall
    hold holds held contain contains account accounts represent represents include includes
    thing things list listed lists above below many several various lot lots kind kinds"""
_RUN_WORDS = frozenset(w[:5] for w in _RUN_WORDS_EN.split()) | frozenset({"细分", "用户", "客户", "文本", "评论", "帖子", "关键", "键词", "占比", "比例", "最大", "最小", "数据", "人数", "话题", "群体", "客群", "分群"})
# CJK function characters: a bigram with one of them ("户的", "占用") is grammar, not content.
_CJK_FUNCTION = frozenset("的了是在有和与占个这那们也都就而及其为对从到被把比中上下约共各每些")
# A sentence that opens with one of these carries on from the sentence before it ("It has 20 users.").
_CONTINUATION = re.compile(
    r"^\W*(?:it|its|it's|this|that|these|those|both|he|she|his|her|one|another|others|some|most|many|few|all|each|"
    r"also|and|but|however|while|whereas|in contrast|similarly|likewise|for example|for instance|such as|"
    r"overall|in short|in addition|meanwhile)\b|^\W*(?:它|他|她|这|那|该|其|两者|此外|另外|同时|但|而|其中|例如|比如|总之|大多|多数|一些|有的)",
    re.IGNORECASE,
)
_NEGATED_ABSENCE = re.compile(r"\b(?:no|not|none|nothing|never|n't)\b|没有|不", re.IGNORECASE)

#: Why a quote failed, in words a re-ask and a reader understand (ground_quotes' reasons).
_QUOTE_REASONS = {
    "not_verbatim": "is not word for word in the text it cites",
    "cuts_word": "cuts a word of its text in half",
    "drops_negation": "leaves out a negation that comes right before it in the text",
    "wrong_text_id": "is in another text than the one it cites",
    "not_in_segment": "cites a text from another segment than the one it names",
    "too_short": "is too short to be evidence (under 3 words)",
    "duplicate": "repeats another quote",
    "over_limit": "is one quote too many",
}


@dataclass
class Evidence:
    """What the tools returned in one turn: the results in order, and the errors they gave the model."""

    results: list[ToolResult] = field(default_factory=list)
    tools_called: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, tool: str, result: ToolResult) -> None:
        self.tools_called.append(tool)
        self.results.append(result)

    def texts(self) -> dict[str, TextRef]:
        """Citable texts by id, first showing wins."""
        out: dict[str, TextRef] = {}
        for result in self.results:
            for ref in result.texts():
                out.setdefault(ref.text_id, ref)
        return out

    def facts(self) -> list[Fact]:
        return [f for r in self.results for f in r.facts()]


def run_facts(segments: SegmentSet) -> list[Fact]:
    """The run's own numbers: every segment's users, share and texts, the totals and the coverage."""
    facts = [
        Fact(kind="users", value=segments.n_users, label="users segmented"),
        Fact(kind="users", value=segments.n_assigned, label="users in a segment"),
        Fact(kind="share", value=round(segments.coverage * 100, 6), label="coverage"),
        Fact(kind="share", value=round(segments.noise_share * 100, 6), label="unassigned"),
        Fact(kind="segments", value=len(segments.segments), label="segments"),
    ]
    for s in segments.segments:
        facts += [
            Fact(kind="users", value=s.size, segment_id=s.segment_id, label=f"segment {s.segment_id} users"),
            Fact(kind="share", value=round(s.share * 100, 6), segment_id=s.segment_id, label=f"segment {s.segment_id} share"),
            Fact(kind="texts", value=s.n_texts, segment_id=s.segment_id, label=f"segment {s.segment_id} texts"),
        ]
    return facts


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a draft: which part (`kind`, `item`) and why (`reason`)."""

    kind: Literal["citation", "quote", "sentence"]
    item: str
    reason: str

    def message(self) -> str:
        what = {"citation": "citation", "quote": "quote", "sentence": "sentence"}[self.kind]
        return f"{what} {self.item!r}: {self.reason}"


# -- finding segments, numbers and quoted words in an answer -----------------------------------------

_SEGMENT_MENTION = re.compile(r"(?:\bsegments?|\bcluster|细分|分群|群体|客群)\s*#?\s*(\d+)", re.IGNORECASE)
_AFTER_SEGMENT_WORD = re.compile(r"(?:\bsegments?|\bcluster|细分|分群|群体|客群)\s*#?\s*$", re.IGNORECASE)
_SEGMENT_LIST = re.compile(r"\bsegments\s+(\d+(?:\s*(?:,|and|&|or|和|与)\s*\d+)+)", re.IGNORECASE)
_PERCENT = re.compile(r"(?<![\d.,])(\d{1,3}(?:[.,]\d+)?)\s*(?:%|％|\s?percent\b|\s?per cent\b)|百分之\s*(\d{1,3}(?:\.\d+)?)")
_USER_UNITS = r"users?|customers?|people|members?|persons?|authors?|bloggers?|respondents?|reviewers?|位用户|名用户|个用户|位|名|人"
_TEXT_UNITS = r"texts?|posts?|reviews?|messages?|comments?|条|篇"
_COUNT = re.compile(
    rf"(?<![\d.,])(\d{{1,3}}(?:,\d{{3}})+|\d+)\s*(?:({_USER_UNITS})|({_TEXT_UNITS})|(segments?|个细分|个群体))(?![A-Za-z])",
    re.IGNORECASE,
)
# Words an answer puts in quote marks: straight, curly, CJK corner brackets.
_QUOTED = re.compile(r"\"([^\"]{8,400})\"|“([^”]{8,400})”|「([^」]{4,400})」|『([^』]{4,400})』")
_INLINE_CITATION = re.compile(r"\[\s*([A-Za-z0-9_.:\-]{1,64})\s*\]")


def split_sentences(text: str) -> list[str]:
    """Every sentence of an answer, in order, by the project's one sentence rule; unlike
    `persona_llm.schema.sentences.split_sentences` no short fragment is dropped, because removals rebuild
    the answer from what is kept."""
    return [text[a:b] for a, b in spans(text)]


def segments_named(sentence: str) -> set[int]:
    found = {int(m.group(1)) for m in _SEGMENT_MENTION.finditer(sentence)}
    for m in _SEGMENT_LIST.finditer(sentence):
        found |= {int(x) for x in re.findall(r"\d+", m.group(1))}
    return found


def quoted_spans(text: str) -> list[str]:
    """Words the text puts in quote marks (3+ words, or 4+ CJK characters)."""
    spans = []
    for m in _QUOTED.finditer(text):
        span = next(g for g in m.groups() if g is not None).strip()
        if len(span.split()) >= 3 or sum(1 for ch in span if "\u3400" <= ch <= "\u9fff") >= 4:
            spans.append(span)
    return spans


def _strip_quoted(text: str) -> str:
    return _QUOTED.sub(" ", text)


def numbers_in(sentence: str) -> list[tuple[FactKind, float, int, str]]:
    """(kind, value, decimals, as written) of each checkable number outside quote marks."""
    body = _strip_quoted(sentence)
    found: list[tuple[FactKind, float, int, str]] = []
    for m in _PERCENT.finditer(body):
        raw = m.group(1) or m.group(2)
        number = raw.replace(",", ".")
        decimals = len(number.split(".")[1]) if "." in number else 0
        found.append(("share", float(number), decimals, m.group(0).strip()))
    for m in _COUNT.finditer(body):
        if _AFTER_SEGMENT_WORD.search(body[: m.start()]):
            continue  # "segment 2 users" names segment 2, it does not count 2 users
        value = float(m.group(1).replace(",", ""))
        kind: FactKind = "users" if m.group(2) else "texts" if m.group(3) else "segments"
        found.append((kind, value, 0, m.group(0).strip()))
    return found


def _matches(value: float, decimals: int, fact: Fact) -> bool:
    return abs(value - fact.value) <= 0.5 * 10 ** (-decimals) + 1e-9


# -- the checker -------------------------------------------------------------------------------------


class AnswerChecker:
    """Checks drafts against one run. `texts` is the run's text index (`TextIndex.from_frame`), `facts`
    the run's own numbers (`run_facts`), `segment_ids` the run's segments."""

    def __init__(
        self, texts: TextIndex, facts: Sequence[Fact], segment_ids: Iterable[int], run_names: Iterable[str] = ()
    ) -> None:
        self.texts = texts
        self.facts = list(facts)
        self.segment_ids = set(segment_ids)
        self.run_names = [n for n in run_names if n and n.strip()]  # attribute columns, persona names

    def problems(self, draft: DraftAnswer, evidence: Evidence, question: str = "") -> list[Problem]:
        """Everything in `draft` that the turn's evidence and the run do not support; `question` gives
        the segments a sentence that names none is about."""
        citable = evidence.texts()
        problems: list[Problem] = []
        for text_id in draft.citations:
            reason = self._citation_problem(_bare_id(text_id), citable)
            if reason:
                problems.append(Problem("citation", text_id, reason))
        for m in _INLINE_CITATION.finditer(draft.answer):
            reason = self._citation_problem(m.group(1), citable) if _looks_like_id(m.group(1), citable, self.texts) else None
            if reason:
                problems.append(Problem("citation", m.group(1), reason))
        for quote in draft.quotes:
            reason = self._quote_problem(quote.text_id, quote.segment_id, quote.text, citable)
            if reason:
                problems.append(Problem("quote", quote.text, reason))
        facts = self.facts + evidence.facts()
        sources = [self.texts.by_id[t].normalized for t in citable if t in self.texts.by_id]
        shown_text = evidence_text(evidence, question)  # serialised once for both lookups below
        grounded = content_terms(shown_text)
        # The run's counts may be written bare ("14 of 140"); its shares only with a percent sign.
        shown = evidence_numbers(shown_text) | {str(int(f.value)) for f in facts if f.kind in ("users", "texts", "segments")}
        context = segments_named(question)
        previous_about_data = False
        cited = [self.texts.by_id[t].normalized for t in {_bare_id(c) for c in draft.citations} | {_bare_id(q.text_id) for q in draft.quotes} if t in citable and t in self.texts.by_id]
        for sentence in split_sentences(draft.answer):
            context = segments_named(sentence) or context
            pasted = len(sentence.split()) >= 3 and any(find_verbatim(normalize_ws(sentence), src) is not None for src in cited)
            not_about_data = None if pasted else not_about_the_data(sentence, previous_about_data, self.run_names)
            previous_about_data = not_about_data is None
            reason = (
                self._sentence_problem(sentence, facts, sources, context, shown)
                or ungrounded_words(sentence, grounded)
                or not_about_data
            )
            if reason:
                problems.append(Problem("sentence", sentence, reason))
        return problems

    def _citation_problem(self, text_id: str, citable: dict[str, TextRef]) -> str | None:
        if text_id in citable:
            return None
        if text_id not in self.texts.by_id:
            return "no text of the run has this id"
        return "not among the texts the tools returned for this question"

    def _quote_problem(self, text_id: str, segment_id: int, text: str, citable: dict[str, TextRef]) -> str | None:
        text_id = _bare_id(text_id)
        if text_id not in citable:
            return self._citation_problem(text_id, citable)
        if len(text) > QUOTE_MAX_CHARS:
            return f"is longer than {QUOTE_MAX_CHARS} characters: quote a shorter part"
        result = ground_quotes(
            [PersonaDraftQuote.model_construct(text_id=text_id, text=text)], segment_id, self.texts, max_quotes=10
        )
        if result.kept:
            return None
        reason = result.removed[0].reason
        if reason == "not_in_segment":
            actual = self.texts.by_id[text_id].segment_id
            return f"text {text_id} is in segment {actual}, not segment {segment_id}"
        return _QUOTE_REASONS.get(reason, reason)

    def _sentence_problem(
        self, sentence: str, facts: list[Fact], sources: list[str], context: set[int], shown_numbers: set[str]
    ) -> str | None:
        unknown = sorted(segments_named(sentence) - self.segment_ids)
        if unknown:
            return f"names segment {unknown[0]}, which this run does not have"
        words = sentence.casefold()
        for kind, value, decimals, written in numbers_in(sentence):
            kinds = {"share", "percent"} if kind == "share" else {kind}
            candidates = [
                f
                for f in facts
                if f.kind in kinds
                and (not f.terms or any(t.casefold() in words for t in f.terms if t))
                # Segments in context: their numbers or the run's totals, not another segment's.
                and (not context or f.segment_id is None or f.segment_id in context)
            ]
            if not any(_matches(value, decimals, f) for f in candidates):
                about = f" for segment {', '.join(map(str, sorted(context)))}" if context and kind != "segments" else ""
                return f"states {written!r}, which is not a number of this run{about}"
        for written in other_numbers(sentence):
            if written not in shown_numbers:
                return f"states {written!r}, a figure that nothing the tools returned for this question contains"
        for span in quoted_spans(sentence):
            needle = normalize_ws(span)
            if not any(find_verbatim(needle, src) is not None for src in sources):
                return f"puts {span[:80]!r} in quote marks, but no text shown for this question says it word for word"
        return None

    # -- what a reader sees ------------------------------------------------------------------------

    def citations(self, text_ids: Iterable[str]) -> list[Citation]:
        out, seen = [], set()
        for raw in text_ids:
            text_id = _bare_id(raw)
            src = self.texts.by_id.get(text_id)
            if src is None or text_id in seen:
                continue
            seen.add(text_id)
            out.append(Citation(text_id=text_id, segment_id=src.segment_id, text=src.text))
        return out

    def kept_quote(self, text_id: str, segment_id: int, text: str) -> ChatQuote | None:
        """The quote as its source writes it (the gate keeps the source's own span), or None."""
        if len(text) > QUOTE_MAX_CHARS:
            return None
        draft = PersonaDraftQuote.model_construct(text_id=_bare_id(text_id), text=text)
        result = ground_quotes([draft], segment_id, self.texts, max_quotes=10)
        if not result.kept:
            return None
        return ChatQuote(text_id=result.kept[0].text_id, segment_id=segment_id, text=result.kept[0].text)


# Figures other than the counts and shares above: money, years, measures, plain numbers of 2+ digits.
_FIGURE = re.compile(r"(?<![\w.,])([$€£¥]\s?)?(\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\w.,]*\d)")
_MONEY_AFTER = re.compile(r"^\s*(?:dollars?|euros?|pounds?|yuan|usd|eur|gbp|rmb|元|块|美元|欧元)", re.IGNORECASE)
_MONEY = re.compile(r"[$€£¥]\s?(\d{1,3}(?:,\d{3})+|\d+)|(\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?\s*(?:dollars?|euros?|pounds?|yuan|usd|eur|gbp|rmb|元|块|美元|欧元)", re.IGNORECASE)


def other_numbers(sentence: str) -> list[str]:
    """Figures in `sentence` (outside quote marks, not a segment's id, not a checked count or share) as
    bare digits, money marked with a leading "$": "$100" and "100 dollars" -> "$100", "1,200" -> "1200".
    One-digit numbers are left alone ("2 segments")."""
    body = _INLINE_CITATION.sub(" ", _strip_quoted(sentence))
    checked = {m.span() for m in (*_PERCENT.finditer(body), *_COUNT.finditer(body))}
    named = {str(i) for i in segments_named(body)}
    out = []
    for m in _FIGURE.finditer(body):
        digits = m.group(2).replace(",", "")
        inside_checked = any(a <= m.start(2) < b for a, b in checked)
        if len(digits) < 2 or inside_checked or digits in named or _AFTER_SEGMENT_WORD.search(body[: m.start()]):
            continue
        money = bool(m.group(1)) or bool(_MONEY_AFTER.match(body[m.end() :]))
        out.append(f"${digits}" if money else digits)
    return out


def evidence_text(evidence: Evidence, question: str = "") -> str:
    """Everything the tools returned this turn (texts, keywords, persona fields, tool errors) and the
    question, as one text: what an answer may talk about."""
    parts = [question, *evidence.errors]
    parts += [json.dumps(r.model_dump(mode="json"), ensure_ascii=False) for r in evidence.results]
    return "\n".join(parts)


def evidence_numbers(text: str) -> set[str]:
    """Every run of digits in `text` (`evidence_text`; "1,200" as "1200"), and every sum of money there
    as "$<digits>" (a count of 100 users does not make "$100" shown)."""
    found = {m.replace(",", "") for m in re.findall(r"\d{1,3}(?:,\d{3})+|\d+", text)}
    found |= {"$" + (m.group(1) or m.group(2)).replace(",", "") for m in _MONEY.finditer(text)}
    return found


def _claim_body(sentence: str) -> str:
    """The sentence without its quoted words and inline citations: what it claims in its own words."""
    return _INLINE_CITATION.sub(" ", _strip_quoted(sentence))


def _claim_terms(body: str) -> set[str]:
    """The content words of a claim body (`_claim_body`), words about the run and CJK grammar bigrams
    left out."""
    return {t for t in content_terms(body) - _RUN_WORDS if not _CJK_FUNCTION.intersection(t)}


def ungrounded_words(sentence: str, grounded: set[str]) -> str | None:
    """Why `sentence` is not grounded in `grounded` (the content words of `evidence_text`), or None when it is: under
    `GROUNDED_MIN_SHARE` of its content words (quoted words, inline citations and words about the run
    aside) occur there. A sentence that says the data lacks something ("no text mentions prices") is
    left alone when its only foreign word is what it says is missing."""
    body = _claim_body(sentence)
    terms = _claim_terms(body)
    if not terms:
        return None
    missing = sorted(terms - grounded)
    if len(missing) <= (1 - GROUNDED_MIN_SHARE) * len(terms):
        return None
    if len(missing) == 1 and _NEGATED_ABSENCE.search(body):
        return None
    return (
        f"uses words that nothing the tools returned for this question contains ({', '.join(missing[:5])}): "
        "say only what the tool results show"
    )


def not_about_the_data(sentence: str, previous_about_data: bool, run_names: Iterable[str] = ()) -> str | None:
    """Why `sentence` reads as a claim about the world rather than a report of the run's data, or None
    (the "about the data" rule in this module's docstring). `run_names`: attribute columns and persona
    names, which count as naming the data."""
    if _INLINE_CITATION.search(sentence) or quoted_spans(sentence):
        return None
    names = list(run_names)
    folded = sentence.casefold()
    if run_references(sentence, (n for n in names if " " not in n.strip())) or any(
        n.casefold() in folded for n in names if " " in n.strip()
    ):
        return None
    if previous_about_data and _CONTINUATION.search(sentence):
        return None
    if not _claim_terms(_claim_body(sentence)):
        return None  # nothing to claim ("Yes.", "Segment 0.")
    return (
        "states something as a fact about the world, not as what the run's data shows: say which segment's "
        "customers or texts say it (for example 'texts in segment 2 say ...'), or leave it out"
    )


def apply_removals(draft: DraftAnswer, problems: Sequence[Problem]) -> tuple[DraftAnswer, list[Removal]]:
    """The draft without what `problems` name, and a note at its end saying what went and why."""
    bad_citations = {_bare_id(p.item) for p in problems if p.kind == "citation"}
    bad_quotes = {p.item for p in problems if p.kind == "quote"}
    bad_sentences = {p.item for p in problems if p.kind == "sentence"}
    removals = [Removal(kind=p.kind, item=p.item[:300], reason=p.reason) for p in problems]
    kept = [s for s in split_sentences(draft.answer) if s not in bad_sentences]
    answer = " ".join(kept)
    for text_id in bad_citations:
        answer = re.sub(rf"\s*\[\s*{re.escape(text_id)}\s*\]", "", answer)
    answer = answer.strip()
    if not answer:
        answer = "I could not write an answer that the run's data supports."
    parts = []
    n_sent, n_quote, n_cite = len(bad_sentences), len(bad_quotes), len(bad_citations)
    if n_sent:
        parts.append(f"{n_sent} sentence{'s' if n_sent > 1 else ''} the data does not support")
    if n_quote:
        parts.append(f"{n_quote} quote{'s' if n_quote > 1 else ''} not found word for word in {'their' if n_quote > 1 else 'its'} text")
    if n_cite:
        parts.append(f"{n_cite} citation{'s' if n_cite > 1 else ''} of texts not shown for this question")
    if parts:
        answer += f"\n\n(Removed after checking: {'; '.join(parts)}.)"
    cleaned = DraftAnswer.model_construct(
        answer=answer,
        citations=[c for c in draft.citations if _bare_id(c) not in bad_citations],
        quotes=[q for q in draft.quotes if q.text not in bad_quotes],
        out_of_scope=draft.out_of_scope,
    )
    return cleaned, removals


def _bare_id(text_id: str) -> str:
    return text_id.strip().strip("[]").strip()


def _looks_like_id(token: str, citable: dict[str, TextRef], texts: TextIndex) -> bool:
    """Is "[token]" in an answer meant as a citation? Only if it is shaped like the run's ids (it is
    one, or shares their form), so "[sic]" or "[1]" in prose is left alone."""
    if token in citable or token in texts.by_id:
        return True
    sample = next(iter(texts.by_id), "")
    shape = re.sub(r"\d+", "0", sample)
    return bool(sample) and re.sub(r"\d+", "0", token) == shape and any(ch.isdigit() for ch in token)
