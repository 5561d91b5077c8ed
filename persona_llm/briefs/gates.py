"""The gates a brief passes, the same rules personas are held to (`persona_llm.personas.gates` and
`support`), applied to what a brief says about its audience.

- **Citations.** Every text id a claim cites must be a text of the run and of the audience's segment
  (`TextIndex`, as the quote gate); with the run's text vectors at hand, a cited text must also be
  closer to the claim than random texts of the run are to each other (chance level, the scale the
  support check uses): a citation picked at random from the enum is not evidence. Bad citations are
  removed and recorded; a claim left with none is removed.
- **Numbers.** A number in a claim must be one of the run's numbers shown to the model (the segment's
  size, share, text count, attribute statistics) or written in the texts the claim cites; anywhere in a
  brief, a number of customers or a share of them ("40% of customers") must be the run's. The first is
  a gate (the claim is removed); the second is the `check` of the structured call, so the model is
  re-asked with the run's real numbers (`audience_number_problems`).
- **Support.** Each claim is checked with the persona writer's narrative support check
  (`SupportIndex`): close to a fair part of the segment's texts and not much closer to another segment.
  Unsupported claims are removed and recorded.
- **Quotes** go through the persona quote gate itself (`persona_llm.personas.gates.ground_quotes`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

import numpy as np
from pydantic import BaseModel

from persona_llm.personas.gates import TextIndex
from persona_llm.personas.support import SupportIndex
from persona_llm.schema.briefs import BriefDraft, CitationRemoval, StatementRemoval
from persona_llm.schema.personas import StatementCheck
from persona_llm.schema.segments import CategoricalSummary, NumericSummary, Segment

# A number as written: "1,250", "33.5", "40" (not part of a word or an id such as "t3").
_NUMBER = re.compile(r"(?<![\w.,])(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(?![\w])(\s*(?:%|percent\b|per cent\b))?")
_AUDIENCE_NOUNS = (
    r"customers?|users?|buyers?|shoppers?|members?|people|clients?|subscribers?|respondents?|readers?|fans|"
    r"consumers?|owners?|runners?|gardeners?|drinkers?|parents|households?|visitors?"
)
# "40% of customers", "40 percent of our users", "40% of this segment", "40% of them".
_SHARE_CLAIM = re.compile(
    r"(?<![\w.])(\d+(?:\.\d+)?)\s*(?:%|percent|per cent)\s+of\s+(?:(?:the|our|all|these|this|those|its)\s+)?"
    rf"(?:\w+\s+)?(?:{_AUDIENCE_NOUNS}|segment|audience|them|group)\b",
    re.IGNORECASE,
)
# "120 customers", "1,200 active users".
_COUNT_CLAIM = re.compile(rf"(?<![\w.])(\d{{1,3}}(?:,\d{{3}})+|\d+)\s+(?:\w+\s+)?(?:{_AUDIENCE_NOUNS})\b", re.IGNORECASE)


def _value(whole: str, decimals: str | None) -> tuple[float, int]:
    digits = whole.replace(",", "")
    return (float(f"{digits}.{decimals}") if decimals else float(digits)), len(decimals or "")


def numbers_in(text: str) -> list[tuple[str, float, int, bool]]:
    """(as written, value, decimals, is a percentage) for every number in `text`."""
    out = []
    for m in _NUMBER.finditer(text):
        value, decimals = _value(m.group(1), m.group(2))
        out.append((m.group(0).strip(), value, decimals, bool(m.group(3))))
    return out


def _same(claimed: float, decimals: int, actual: float) -> bool:
    """`claimed`, written with `decimals` decimals, is `actual` rounded (33 or 33.3 for 33.33)."""
    return abs(round(actual, decimals) - claimed) < 10 ** (-decimals) / 2 + 1e-9


@dataclass(frozen=True)
class RunNumbers:
    """The numbers of one segment that a brief prompt shows: what a brief may state about it."""

    size: int
    share: float
    n_texts: int
    counts: frozenset[float] = frozenset()
    percents: frozenset[float] = frozenset()
    values: frozenset[float] = frozenset()

    @classmethod
    def of(cls, segment: Segment, n_segments: int) -> RunNumbers:
        counts = {float(segment.size), float(segment.n_texts), float(n_segments), float(segment.segment_id)}
        percents = {segment.share * 100}
        values: set[float] = set()
        for summary in segment.attributes.values():
            counts.add(float(summary.count))
            if isinstance(summary, NumericSummary):
                values |= {summary.mean, summary.median, summary.overall_mean}
            elif isinstance(summary, CategoricalSummary):
                for c in summary.top:
                    percents |= {c.share * 100, c.overall_share * 100}
        return cls(segment.size, segment.share, segment.n_texts, frozenset(counts), frozenset(percents), frozenset(values))

    def allows(self, value: float, decimals: int, percent: bool) -> bool:
        pool = self.percents if percent else self.counts | self.values | self.percents
        return any(_same(value, decimals, actual) for actual in pool)

    def describe(self) -> str:
        return f"this segment has {self.size} customers ({self.share * 100:.1f}% of all) and {self.n_texts} texts"


def audience_number_problems(draft: BaseModel, numbers: RunNumbers) -> list[str]:
    """Shares and counts of customers anywhere in a draft that are not the run's (the structured call's
    `check`: the model is re-asked with these)."""
    problems: list[str] = []
    for text in _strings(draft.model_dump()):
        for m in _SHARE_CLAIM.finditer(text):
            whole, _, decimals_part = m.group(1).partition(".")
            value, decimals = _value(whole, decimals_part or None)
            if not numbers.allows(value, decimals, percent=True):
                problems.append(f'"{m.group(0)}" is not a share of this audience: {numbers.describe()}')
        for m in _COUNT_CLAIM.finditer(text):
            value, decimals = _value(m.group(1), None)
            if not numbers.allows(value, decimals, percent=False):
                problems.append(f'"{m.group(0)}" is not a number of this audience: {numbers.describe()}')
    return problems[:6]


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            if k not in ("quote_ids", "quotes", "text_ids"):
                yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


# -- claims -----------------------------------------------------------------------------------------


@dataclass
class Claim:
    """One statement of a draft about its customers: a cited claim (`cited`) or another checked
    statement (an objection). `text_ids` are real text ids (short ids mapped back)."""

    field: str
    position: int
    text: str
    text_ids: list[str] = dataclass_field(default_factory=list)
    cited: bool = True


def draft_claims(draft: BriefDraft, real_id: Any) -> list[Claim]:
    """The claims of a draft, in reading order; `real_id(short) -> real text id`."""
    claims: list[Claim] = []
    for name in type(draft).CITED:
        value = getattr(draft, name)
        items = value if isinstance(value, list) else [value]
        for k, item in enumerate(items):
            ids = list(dict.fromkeys(real_id(t) for t in item.text_ids))
            claims.append(Claim(name, k, item.text, ids, cited=True))
    for name in type(draft).CHECKED:
        for k, item in enumerate(getattr(draft, name)):
            claims.append(Claim(name, k, getattr(item, "objection", item), [], cited=False))
    return claims


@dataclass
class ClaimVerdicts:
    """What the gates decided for each claim of a draft."""

    kept: dict[tuple[str, int], list[str]] = dataclass_field(default_factory=dict)  # (field, position) -> valid ids
    checks: list[StatementCheck] = dataclass_field(default_factory=list)
    removed: list[StatementRemoval] = dataclass_field(default_factory=list)
    citations_removed: list[CitationRemoval] = dataclass_field(default_factory=list)
    numbers_checked: int = 0
    support_checked: bool = False

    def keeps(self, field_name: str, position: int) -> bool:
        return (field_name, position) in self.kept


def check_claims(
    claims: Sequence[Claim],
    *,
    segment_id: int,
    index: TextIndex,
    numbers: RunNumbers,
    support: SupportIndex | None,
    vectors: np.ndarray | None,
    min_citation_similarity: float = 0.0,
) -> ClaimVerdicts:
    """Run the citation, number and support gates on `claims` (see the module doc). `vectors`: the
    claims embedded with the run's embedder (row-aligned), or None when `support` is None."""
    verdicts = ClaimVerdicts(support_checked=support is not None)
    checks: list[StatementCheck] = []
    if support is not None and vectors is not None and claims:
        checks = support.check(segment_id, [(c.field, c.text) for c in claims], vectors)
    verdicts.checks = checks
    for i, claim in enumerate(claims):
        in_segment: list[str] = []  # texts that exist and belong to the segment
        valid: list[str] = []  # ... and are related to the claim
        for tid in claim.text_ids:
            source = index.by_id.get(tid)
            reason = None
            if source is None:
                reason = "unknown_text"
            elif source.segment_id != segment_id:
                reason = "not_in_segment"
            else:
                in_segment.append(tid)
                if support is not None and vectors is not None:
                    text_vector = support.text_vectors([tid]).get(tid)
                    if text_vector is not None and support.rescale(float(vectors[i] @ text_vector)) < min_citation_similarity:
                        reason = "unrelated"
            if reason is None:
                valid.append(tid)
            else:
                verdicts.citations_removed.append(
                    CitationRemoval(field=claim.field, statement=claim.text[:200], text_id=tid, reason=reason)  # type: ignore[arg-type]
                )
        cited_numbers = [n for tid in valid for n in numbers_in(index.by_id[tid].text)]
        stray = []
        for written, value, decimals, percent in numbers_in(claim.text):
            verdicts.numbers_checked += 1
            in_texts = any(_same(value, decimals, v) for _, v, _, _ in cited_numbers)
            if not (numbers.allows(value, decimals, percent) or in_texts):
                stray.append(written)
        # One reason per removed claim, the most basic first: it cites nothing of its segment; the texts
        # do not support it; the texts it cites are unrelated to it; it states a number from nowhere.
        unsupported = bool(checks) and not checks[i].supported
        if claim.cited and not in_segment:
            reason, detail = "no_valid_citation", f"cited {', '.join(claim.text_ids) or 'nothing'}: no text of this segment"
        elif unsupported:
            reason = "unsupported"
            detail = f"similarity {checks[i].similarity:.2f}, best segment {checks[i].best_segment_similarity:.2f}"
        elif claim.cited and not valid:
            reason, detail = "no_valid_citation", f"cited {', '.join(claim.text_ids)}: unrelated to the claim"
        elif stray:
            reason = "number_not_in_run"
            detail = f"{', '.join(stray)}: not a number of the run or of the cited texts; {numbers.describe()}"
        else:
            verdicts.kept[(claim.field, claim.position)] = valid
            continue
        verdicts.removed.append(StatementRemoval(field=claim.field, text=claim.text[:300], reason=reason, detail=detail))  # type: ignore[arg-type]
    return verdicts


def support_feedback(verdicts: ClaimVerdicts) -> str:
    """The re-ask message when most of a draft's claims fail the gates."""
    lines = [f'- {r.field}: "{r.text[:140]}" ({r.reason.replace("_", " ")})' for r in verdicts.removed][:10]
    return (
        "These statements are not supported by the texts of this segment (nothing in the texts says so, it "
        "describes another group better, or it cites the wrong texts):\n" + "\n".join(lines) + "\n"
        "Write them again from what the texts between <texts> and </texts> actually say, each citing the ids "
        "of the texts that show it. Reply again with the complete corrected JSON object only."
    )
