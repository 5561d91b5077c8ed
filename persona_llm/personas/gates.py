"""The two gates a persona passes before it is stored.

Grounding: a quote survives only if it is verbatim (by `persona_llm.common.textmatch`, the rules the
grounding eval checks with too) in the text whose id it cites, and that text belongs to the persona's
segment. Small models paraphrase, merge and invent "quotes"; a quote is evidence only if a reader can
find it. Demographic estimates get the same treatment: a "texts" estimate needs a cited text of the segment
that names it and no attribute column that contradicts it, and an "attribute" estimate needs an attribute
column (by exact name) that supports it (ages, genders and values read as the claims eval reads them,
`persona_llm.common.demographics`); otherwise the estimate becomes "unknown".
Every removal is recorded.

Distinctness: personas are embedded; a pair above a cosine threshold is flagged so the writer can
regenerate one of them with the other shown as "different from".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from persona_llm.common.demographics import (
    UNKNOWN_VALUES,
    attribute_columns,
    attribute_value_matches,
    fits_age,
    gender_of,
    gender_value,
    parse_age_intervals,
    text_supports,
)
from persona_llm.common.textmatch import (
    SourceText,
    find_verbatim,
    fold_quote_marks,
    match_verbatim,
    name_key,
    normalize_ws,
)
from persona_llm.common.vectors import pairwise_cosine
from persona_llm.schema.personas import (
    DemographicEstimate,
    Demographics,
    DraftQuote,
    EstimateRemoval,
    Quote,
    QuoteRemoval,
    RemovalReason,
)
from persona_llm.schema.segments import CategoricalSummary, NumericSummary, Segment

# Quote marks and ellipses a model wraps around a quote are not part of it.
_WRAPPERS = "\"'“”‘’「」『』«»"
_ELLIPSES = ("…", "...")


def _strip_wrappers(quote: str) -> str:
    q = normalize_ws(quote)
    for _ in range(3):
        before = q
        for e in _ELLIPSES:
            q = q.removeprefix(e).removesuffix(e).strip()
        if len(q) >= 2 and q[0] in _WRAPPERS and q[-1] in _WRAPPERS:
            q = q[1:-1].strip()
        if q == before:
            break
    return q


def _long_enough(quote: str, min_chars: int, min_words: int) -> bool:
    # Chinese and Japanese have no spaces: count characters there, words elsewhere.
    cjk = sum(1 for ch in quote if "\u3040" <= ch <= "\u9fff")
    if cjk >= len(quote) / 3:
        return cjk >= max(6, min_chars // 3)
    return len(quote) >= min_chars and len(quote.split()) >= min_words


class TextIndex:
    """All texts of a run by id (from texts.parquet), each with its normalised copy for matching."""

    def __init__(self, rows: Iterable[tuple[str, str, int, str]]) -> None:
        self.by_id: dict[str, SourceText] = {}
        self.by_segment: dict[int, list[SourceText]] = {}
        for text_id, user_id, segment_id, text in rows:
            src = SourceText(text=str(text), user_id=str(user_id), segment_id=int(segment_id), text_id=str(text_id))
            self.by_id[src.text_id] = src
            self.by_segment.setdefault(src.segment_id, []).append(src)

    @classmethod
    def from_frame(cls, texts: Any) -> TextIndex:
        """From a texts frame with text_id, user_id, segment_id, text columns."""
        return cls(
            zip(
                texts["text_id"].astype(str),
                texts["user_id"].astype(str),
                texts["segment_id"].fillna(-1).astype(int),
                texts["text"].astype(str),
                strict=True,
            )
        )

    def segment_size(self, segment_id: int) -> int:
        return len(self.by_segment.get(segment_id, []))


@dataclass
class GroundingResult:
    kept: list[Quote] = field(default_factory=list)
    removed: list[QuoteRemoval] = field(default_factory=list)


def ground_quotes(
    quotes: Sequence[DraftQuote],
    segment_id: int,
    index: TextIndex,
    *,
    attempt: int = 1,
    already_kept: Sequence[Quote] = (),
    max_quotes: int = 5,
    min_chars: int = 15,
    min_words: int = 3,
) -> GroundingResult:
    """Keep the quotes that are verbatim in the cited text of this segment; record why every other goes
    (a valid quote beyond `max_quotes`, counting `already_kept`, goes as "over_limit")."""
    result = GroundingResult()
    def dedupe_key(text: str) -> str:
        return fold_quote_marks(normalize_ws(text)).lower()

    seen = {dedupe_key(q.text) for q in already_kept}
    for draft in quotes:
        quote = _strip_wrappers(draft.text)
        text_id = draft.text_id.strip().strip("[]")
        reason: RemovalReason | None = None
        source = index.by_id.get(text_id)
        match = match_verbatim(quote, source.normalized) if source is not None and quote else None
        if not quote or not _long_enough(quote, min_chars, min_words):
            reason = "too_short"
        elif dedupe_key(quote) in seen:
            reason = "duplicate"
        elif source is not None and source.segment_id == segment_id and match is not None and match.span is not None:
            quote = match.span
        elif any(find_verbatim(quote, s.normalized) is not None for s in index.by_segment.get(segment_id, [])):
            reason = "wrong_text_id"  # verbatim, but not in the text it cites: the citation is wrong
        elif source is not None and source.segment_id != segment_id:
            reason = "not_in_segment"
        elif match is not None and match.problem in ("cuts_word", "drops_negation"):
            reason = match.problem  # the words are there, but the fragment does not say what the text says
        else:
            reason = "not_verbatim"
        if reason is None and len(result.kept) + len(already_kept) >= max_quotes:
            reason = "over_limit"
        if reason is None and source is not None:
            # Several quotes from one text are allowed but a second text is better evidence.
            seen.add(dedupe_key(quote))
            result.kept.append(Quote(text_id=text_id, user_id=source.user_id, text=quote))
        else:
            result.removed.append(
                QuoteRemoval(text_id=draft.text_id, text=draft.text[:300], reason=reason or "not_verbatim", attempt=attempt)
            )
    return result


def cap_quotes(kept: Sequence[Quote], max_quotes: int, *, attempt: int) -> GroundingResult:
    """The first `max_quotes` of `kept`; the rest recorded as "over_limit" removals, never dropped silently."""
    return GroundingResult(
        kept=list(kept[:max_quotes]),
        removed=[
            QuoteRemoval(text_id=q.text_id, text=q.text[:300], reason="over_limit", attempt=attempt)
            for q in kept[max_quotes:]
        ],
    )


# A value within this many points of the top share is a majority too (the claims eval's tie_tolerance).
TIE_TOLERANCE = 0.05
DEMOGRAPHIC_FIELDS = tuple(Demographics.model_fields)  # age_group, gender, location, occupation


def _summaries(field_name: str, segment: Segment) -> list[tuple[str, Any]]:
    """The segment's attribute summaries for this field, by exact column name (ATTRIBUTE_COLUMNS order)."""
    return [(a, segment.attributes[a]) for a in attribute_columns(field_name, segment.attributes)]


def _numeric_line(attr: str, summary: NumericSummary) -> str:
    return f"{attr}: median {summary.median:.1f}, mean {summary.mean:.1f} (all {summary.overall_mean:.1f})"


def _categorical_line(attr: str, summary: CategoricalSummary) -> str:
    return f"{attr}: " + ", ".join(f"{c.value} {c.share * 100:.0f}%" for c in summary.top[:4])


def _attribute_verdict(field_name: str, est: DemographicEstimate, summaries: list[tuple[str, Any]]) -> tuple[str, str]:
    """(reason to drop or "", evidence line) for an estimate that claims an attribute as its source."""
    for attr, summary in summaries:
        if isinstance(summary, NumericSummary):
            if field_name != "age_group":
                continue  # only ages are numbers here; a numeric code column cannot check a place or a job
            line = _numeric_line(attr, summary)
            ages = parse_age_intervals(est.value)
            if not ages:
                # "retirees" or "students" are read as ages; a phrase that names none cannot be checked.
                return f"{attr} is numeric and {est.value!r} names no age", line
            if not fits_age(summary.median, ages, tolerance=1.0):
                return f"{attr} median {summary.median:.1f} is outside {est.value}", line
            return "", line
        if isinstance(summary, CategoricalSummary):
            line = _categorical_line(attr, summary)
            for c in summary.top:
                if attribute_value_matches(field_name, est.value, c.value):
                    if c.share <= 0.5:
                        return f"{attr} shows no majority for it ({c.value} {c.share * 100:.0f}%)", line
                    return "", line
            return f"{attr} has no value matching it", line
    return "no attribute column supports it", ""


def _attribute_contradiction(field_name: str, est: DemographicEstimate, summaries: list[tuple[str, Any]]) -> str:
    """Why the segment's attribute column contradicts `est`, or "" when it does not (or cannot tell).

    Contradicted: a numeric age median outside the claimed ages; a categorical column whose majority
    (near-ties included) holds none of the claimed values, while the claim does name a value of the
    column's kind (a gender, an age range, or one of its values).
    """
    for attr, summary in summaries:
        if isinstance(summary, NumericSummary):
            if field_name != "age_group":
                continue
            ages = parse_age_intervals(est.value)
            if ages and not fits_age(summary.median, ages, tolerance=1.0):
                return f"{attr} median {summary.median:.1f} is outside {est.value}"
            return ""
        if isinstance(summary, CategoricalSummary) and summary.top:
            top = max(c.share for c in summary.top)
            claimed = [c for c in summary.top if attribute_value_matches(field_name, est.value, c.value)]
            names_a_kind = bool(claimed) or (
                field_name == "gender"
                and gender_of(est.value) is not None
                and any(gender_value(c.value) for c in summary.top)
            )
            if names_a_kind and all(c.share < top - TIE_TOLERANCE - 1e-9 for c in claimed):
                return f"{attr} majority contradicts it ({_categorical_line(attr, summary).split(': ', 1)[1]})"
            return ""
    return ""


def check_estimates(
    demographics: Demographics, segment: Segment, index: TextIndex
) -> tuple[Demographics, list[EstimateRemoval]]:
    """Demote unsupported demographic estimates to "unknown" and record why.

    "texts": a cited text of this segment must name the claim (`text_supports`: its gender, an
    overlapping age, its words); texts alone give at most "medium"; and the field's attribute column, where
    there is one, overrules texts: a claim its majority contradicts goes. A claim no cited text names is
    judged by the attribute column alone, when there is one; without one, it stands only where at least
    half the members name it in their own texts (`stated_by_members`, never for gender), citing those.
    "attribute": an attribute column must fit the field (by exact name, `ATTRIBUTE_COLUMNS`), and its summary
    must agree (a categorical value held by more than half the segment; an age range containing the median).
    The attribute summary becomes the evidence, so the reader sees the numbers rather than the model's paraphrase.
    """
    removals: list[EstimateRemoval] = []
    fixed: dict[str, DemographicEstimate] = {}
    segment_texts = {s.text_id: s for s in index.by_segment.get(segment.segment_id, [])}
    for name in DEMOGRAPHIC_FIELDS:
        est: DemographicEstimate = getattr(demographics, name)
        if est.source == "none":
            fixed[name] = est
            continue
        reason = ""
        summaries = _summaries(name, segment)
        if est.source == "texts":
            cited = [t.strip("[] ") for t in est.text_ids if t.strip("[] ") in segment_texts]
            supporting = [t for t in cited if text_supports(name, est.value, segment_texts[t].text)]
            stated = [] if supporting or summaries else stated_by_members(name, est.value, segment_texts.values())
            if not supporting and summaries:
                # No cited text names it, but an attribute column may still carry the claim: judge it there.
                est = est.model_copy(update={"source": "attribute", "text_ids": []})
            elif not supporting and stated:
                # The model named the value but cited nothing that says it (the 1.5B model mostly cites
                # nothing); at least half the members say it themselves, so the gate cites them.
                est = _cited_by_gate(est, stated, segment_texts.values())
            elif not supporting:
                reason = "no cited text of this segment names it" if cited else "cites no text of this segment"
            elif contradiction := _attribute_contradiction(name, est, summaries):
                reason = contradiction  # what members are (the column) overrules what a few of them wrote
            else:
                est = est.model_copy(update={"text_ids": supporting})
                if est.confidence == "high":
                    removals.append(EstimateRemoval(field=name, value=est.value, reason="confidence capped at medium"))
                    est = est.model_copy(update={"confidence": "medium"})
        if est.source == "attribute" and not summaries and (stated := stated_by_members(name, est.value, segment_texts.values())):
            # "attribute" with no attribute column in the data: the source is mislabelled (seen: "nurse",
            # "attribute", where every member writes "as a nurse"); the members' own texts judge it.
            est = _cited_by_gate(est, stated, segment_texts.values())
        if est.source == "attribute":
            reason, line = _attribute_verdict(name, est, summaries)
            if not reason and line:
                est = est.model_copy(update={"evidence": line[:200], "text_ids": []})
        if reason:
            removals.append(EstimateRemoval(field=name, value=est.value, reason=reason))
            est = DemographicEstimate.unknown(evidence=f"removed: {reason}")
        fixed[name] = est
    return Demographics(**fixed), removals


#: `stated_by_members`: the share of a segment's members (and the fewest) whose own texts must name a
#: value for the gate to cite them in place of the model.
STATED_SHARE, MIN_STATED_USERS = 0.5, 3
#: Fields the gate never finds texts for: texts name other people's gender far more than the writer's
#: own ("my mom", "my boyfriend"), so a share of members using a gendered word says nothing of them.
NOT_STATED_FIELDS = frozenset({"gender"})


def stated_by_members(field_name: str, value: str, texts: Iterable[SourceText]) -> list[str]:
    """Ids of texts naming `value` for `field_name` (`text_supports`), one per member, when at least
    STATED_SHARE of the segment's members (and MIN_STATED_USERS) have such a text; else []. What the
    segment says of itself, found without the model's citations: "nurse" where most members write "as a
    nurse", "65+" where most write their age or that they are retired."""
    if field_name in NOT_STATED_FIELDS:
        return []
    texts = list(texts)
    users = {t.user_id for t in texts}
    first: dict[str, str] = {}
    for t in texts:
        if t.user_id not in first and text_supports(field_name, value, t.text):
            first[t.user_id] = t.text_id
    if len(first) < max(MIN_STATED_USERS, STATED_SHARE * len(users)):
        return []
    return list(first.values())


def _cited_by_gate(est: DemographicEstimate, stated: list[str], texts: Iterable[SourceText]) -> DemographicEstimate:
    """`est` as a text-sourced estimate citing `stated` (from `stated_by_members`), at most "medium"."""
    n_users = len({t.user_id for t in texts})
    return est.model_copy(
        update={
            "source": "texts",
            "text_ids": stated[:3],
            "evidence": f"named in texts of {len(stated)} of {n_users} members (cited by the gate, not the model)",
            "confidence": "medium" if est.confidence == "high" else est.confidence,
        }
    )


#: A computed categorical estimate is "high" at this share of the segment or more, else "medium".
HIGH_SHARE = 0.75


def estimates_from_hints(hints: Iterable[Any]) -> Demographics:
    """The model's demographic hints (what the texts say, with the texts' ids) as text-sourced estimates,
    the first hint per field; every other field "unknown". `check_estimates` then judges them as it
    judges any text-sourced estimate (a cited text must name it; at most "medium")."""
    by_field: dict[str, DemographicEstimate] = {}
    for hint in hints:
        if hint.field in by_field or hint.value.strip().lower() in UNKNOWN_VALUES:
            continue
        by_field[hint.field] = DemographicEstimate(
            value=hint.value,
            confidence="medium" if len(hint.text_ids) > 1 else "low",
            source="texts",
            evidence="stated in the cited texts",
            text_ids=list(hint.text_ids),
        )
    return Demographics(**{name: by_field.get(name) or DemographicEstimate.unknown() for name in DEMOGRAPHIC_FIELDS})


def attribute_estimate(field_name: str, segment: Segment) -> DemographicEstimate | None:
    """The estimate the segment's attribute column for `field_name` makes by itself, with no model: a
    categorical value held by more than half the members ("high" from 75%), or the median of a numeric age
    column ("median age 34", "medium": a median says nothing of the spread). "unknown" with the column's
    shares as evidence when no value has a majority; None when the segment has no such column."""
    for attr, summary in _summaries(field_name, segment):
        if isinstance(summary, NumericSummary):
            if field_name != "age_group":
                continue  # a numeric code column cannot say a place or a job
            return DemographicEstimate(
                value=f"median age {summary.median:.0f}",
                confidence="medium",
                source="attribute",
                evidence=_numeric_line(attr, summary)[:200],
            )
        if isinstance(summary, CategoricalSummary) and summary.top:
            line = _categorical_line(attr, summary)[:200]
            top = max(summary.top, key=lambda c: c.share)
            if top.share <= 0.5:
                return DemographicEstimate.unknown(evidence=f"no majority: {line}")
            if top.value.strip().lower() in UNKNOWN_VALUES:
                return DemographicEstimate.unknown(evidence=f"most members' value is unknown: {line}")
            value = (gender_value(top.value) if field_name == "gender" else None) or top.value
            return DemographicEstimate(
                value=value[:60],
                confidence="high" if top.share >= HIGH_SHARE else "medium",
                source="attribute",
                evidence=line,
            )
    return None


def fill_from_attributes(demographics: Demographics, segment: Segment) -> Demographics:
    """`demographics` with every field the segment's attribute columns speak to replaced by the column's own
    estimate (`attribute_estimate`): a column covers every member, a text names a few. Fields without a
    column keep what they had (text-sourced estimates that passed `check_estimates`, or "unknown")."""
    fixed = {name: attribute_estimate(name, segment) or getattr(demographics, name) for name in DEMOGRAPHIC_FIELDS}
    return Demographics(**fixed)


class Embedder(Protocol):
    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class SimilarPair:
    first: int
    second: int
    similarity: float


def similar_pairs(
    embeddings: np.ndarray, threshold: float, names: Sequence[str] | None = None
) -> list[SimilarPair]:
    """Pairs (i < j) with cosine similarity above `threshold`, or with the same name (`names`), most
    similar first: two personas called the same are duplicates to a reader whatever the vectors say."""
    sims = pairwise_cosine(embeddings)
    n = sims.shape[0]
    keys = [name_key(x) for x in names] if names is not None else None
    pairs = [
        SimilarPair(i, j, float(sims[i, j]))
        for i in range(n)
        for j in range(i + 1, n)
        if sims[i, j] > threshold or (keys is not None and keys[i] == keys[j])
    ]
    return sorted(pairs, key=lambda p: -p.similarity)


def max_pairwise_similarity(embeddings: np.ndarray) -> float | None:
    if len(embeddings) < 2:
        return None
    sims = pairwise_cosine(embeddings)
    np.fill_diagonal(sims, -np.inf)
    return float(sims.max())


def choose_to_regenerate(pairs: Sequence[SimilarPair], sizes: Mapping[int, int]) -> list[tuple[int, int, float]]:
    """For each too-similar pair, regenerate the smaller segment's persona (the larger one keeps its
    claim to the shared theme), each persona at most once: (index to redo, index to differ from, sim)."""
    redo: list[tuple[int, int, float]] = []
    taken: set[int] = set()
    for pair in pairs:
        small, large = (
            (pair.first, pair.second) if sizes[pair.first] <= sizes[pair.second] else (pair.second, pair.first)
        )
        if small in taken:
            continue
        taken.add(small)
        redo.append((small, large, pair.similarity))
    return redo
