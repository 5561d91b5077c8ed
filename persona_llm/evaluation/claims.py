"""Check personas' demographic estimates against attribute columns, conservatively.

A claim ("13-17", "teenagers", "high school students", "in their 30s", "women") is mapped to the *set* of
values of a column's vocabulary it is compatible with (e.g. {"13-17"} for the blog set's `age_group`).

    status        when                                                         counts as
    consistent    the claim maps to exactly one value and it is the majority    pass
    contradiction the mapped values exclude the segment's majority, or an age    fail
                  claim lies outside every bucket (e.g. "19-22" against the blog set)
    vague         several values, the majority among them (e.g. "mixed")        not a pass
    unmapped      nothing recognisable (e.g. "digital natives")                 not a pass
    unknown       the persona itself said "unknown"                             not a pass (honest)

"Majority" includes near-ties (within 5 points of the top share, `tie_tolerance`). Ages are mapped
through intervals (a claim "30s" is 30-39, which overlaps only the bucket "33-48"); other
columns through the value itself as whole words and, for genders, the synonyms the estimate gate reads too
(women -> female; both read ages, genders and column names through `persona_llm.common.demographics`).
Unmappable never passes.

A claim the persona draws from texts (source "texts") is judged as the estimate gate judges it: the
attribute column overrules texts (a contradiction stays one), and otherwise it needs a cited text of its
segment that names it (`text_supports`), else it is

    unsupported   no cited text of the segment names it, and no column says it   fail

(with a column that makes it consistent it is consistent, as the gate then keeps it on the column's word).
A texts claim with no column for its field and a naming text is not listed: there is nothing to compare.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from persona_llm.common.demographics import (
    ATTRIBUTE_COLUMNS,
    UNKNOWN_VALUES,
    Interval,
    fits_age,
    gender_value,
    genders_in,
    mentions,
    parse_age_intervals,
    text_supports,
)
from persona_llm.common.textmatch import SourceText

if TYPE_CHECKING:
    from persona_llm.schema.personas import DemographicEstimate, Persona

ClaimStatus = Literal["consistent", "contradiction", "vague", "unmapped", "unknown", "unsupported"]

# Persona demographic field -> attribute column names it can be checked against (first present wins);
# the estimate gate's list, so both look at the same column.
FIELD_COLUMNS: dict[str, tuple[str, ...]] = ATTRIBUTE_COLUMNS

_ALL_WORDS = re.compile(r"\b(?:mixed|both|balanced|all genders|any gender|even split|either)\b", re.I)


@dataclass(frozen=True)
class ClaimCheck:
    persona_id: str
    segment_id: int
    field: str
    column: str
    claim: str
    mapped: tuple[str, ...]
    majority: tuple[str, ...]
    majority_share: float
    claimed_share: float
    status: ClaimStatus
    #: would a persona that claims the value most users hold (over every segment: one constant guess) be
    #: consistent here; the baseline a writer's right claims must beat
    constant_right: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "persona_id": self.persona_id,
            "segment_id": self.segment_id,
            "field": self.field,
            "column": self.column,
            "claim": self.claim,
            "mapped": list(self.mapped),
            "majority": list(self.majority),
            "majority_share": self.majority_share,
            "claimed_share": self.claimed_share,
            "status": self.status,
            "constant_right": self.constant_right,
        }


# ---------------------------------------------------------------------------------------------------
# Mapping a claim to a vocabulary
# ---------------------------------------------------------------------------------------------------

def vocabulary_intervals(values: Iterable[str]) -> dict[str, Interval] | None:
    """Each vocabulary value as an age interval ("13-17" -> 13..17, "65+" -> 65..100); None if any fails."""
    out: dict[str, Interval] = {}
    for v in values:
        ivs = parse_age_intervals(str(v))
        if len(ivs) != 1:
            return None
        out[str(v)] = ivs[0]
    return out or None


def _overlaps(a: Interval, b: Interval) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def map_claim(claim: str, vocabulary: Sequence[str], *, age: bool = False) -> tuple[str, ...]:
    """Vocabulary values compatible with `claim` (sorted); () when nothing maps (then it is not a pass)."""
    vocab = sorted({str(v) for v in vocabulary})
    text = claim.strip()
    if not text or text.lower() == "unknown":
        return ()
    if age:
        buckets = vocabulary_intervals(vocab)
        claimed = parse_age_intervals(text)
        if buckets is not None:
            return tuple(v for v in vocab if any(_overlaps(iv, buckets[v]) for iv in claimed))
    # A value that is a gender word or code ("female", "F") also matches the claim's synonyms ("women").
    named = genders_in(text)
    gender_values = {v: g for v in vocab if (g := gender_value(v)) is not None}
    hits = {v for v in vocab if mentions(text, v) or gender_values.get(v) in named}
    if _ALL_WORDS.search(text) and len(set(gender_values.values())) >= 2:
        hits.update(gender_values)
    return tuple(sorted(hits))


# ---------------------------------------------------------------------------------------------------
# Checking claims against segments
# ---------------------------------------------------------------------------------------------------


def user_attribute(frame: pd.DataFrame, column: str, user_col: str = "user_id") -> pd.Series:
    """One value per user: the most frequent non-null value of `column` among the user's rows."""
    sub = frame[[user_col, column]].dropna()
    sub = sub.assign(**{column: sub[column].astype(str)})
    counts = sub.groupby([user_col, column]).size().reset_index(name="n")
    counts = counts.sort_values([user_col, "n", column], ascending=[True, False, True])
    return counts.drop_duplicates(user_col).set_index(user_col)[column]


def majority_values(distribution: Mapping[str, float], tie_tolerance: float = 0.0) -> set[str]:
    """Values whose share is within `tie_tolerance` of the top share (the majority, near-ties included)."""
    top = max(distribution.values())
    return {v for v, s in distribution.items() if s >= top - tie_tolerance - 1e-9}


def classify_claim(
    mapped: Sequence[str], distribution: Mapping[str, float], tie_tolerance: float = 0.0
) -> ClaimStatus:
    """consistent / contradiction / vague / unmapped for a mapped claim and a segment's value shares."""
    if not mapped:
        return "unmapped"
    if not distribution:
        return "unmapped"
    majority = majority_values(distribution, tie_tolerance)
    if not majority & set(mapped):
        return "contradiction"
    return "consistent" if len(mapped) == 1 else "vague"


def resolve_columns(
    available: Iterable[str], field_columns: Mapping[str, Sequence[str]] | None = None
) -> dict[str, str]:
    """Persona demographic field -> the attribute column to check it against (first candidate present)."""
    cols = {c.lower(): c for c in available}
    out: dict[str, str] = {}
    for field, candidates in (field_columns or FIELD_COLUMNS).items():
        for cand in candidates:
            if cand.lower() in cols:
                out[field] = cols[cand.lower()]
                break
    return out


def _numeric_status(claim: str, ages: pd.Series, tolerance: float) -> tuple[ClaimStatus, tuple[str, ...]]:
    ivs = parse_age_intervals(claim)
    if not ivs:
        return "unmapped", ()
    ok = fits_age(float(ages.median()), ivs, tolerance)
    label = tuple(f"{lo:g}-{hi:g}" for lo, hi in ivs)
    if not ok:
        return "contradiction", label
    return ("consistent" if len(ivs) == 1 else "vague"), label


def check_claims(
    personas: Sequence[Persona],
    users: pd.DataFrame,
    *,
    field_columns: Mapping[str, Sequence[str]] | None = None,
    age_tolerance: float = 2.0,
    tie_tolerance: float = 0.05,
    sources: Mapping[str, SourceText] | None = None,
) -> list[ClaimCheck]:
    """Each persona's demographic estimates vs its segment's members; users: user_id, segment_id, attrs.

    A value within `tie_tolerance` of the top share counts as majority too (a 45/42 split has two);
    a numeric age column is checked by the segment median, +- `age_tolerance` years. With `sources`
    (text id -> text), claims drawn from texts must also be named by a cited text (module docstring).
    """
    available = [c for c in users.columns if c not in {"user_id", "segment_id"}]
    columns = resolve_columns(available, field_columns)
    # every user's known values per column, once: the constant guess is read from them
    everyone = {column: _known(users[column]) for column in set(columns.values())}
    checks: list[ClaimCheck] = []
    for persona in personas:
        members = users[users["segment_id"] == persona.segment_id]
        for field, est in persona.demographics:
            named = _named_by_texts(persona, field, est, sources)
            column = columns.get(field)
            if column is None:
                if named is False:
                    checks.append(_unsupported(persona, field, est.value))
                continue
            values = _known(members[column])
            if not len(values):
                if named is False:
                    checks.append(_unsupported(persona, field, est.value))
                continue
            is_age = field == "age_group"
            numeric = is_age and pd.api.types.is_numeric_dtype(values)
            claim = est.value
            if numeric:
                constant_right = abs(float(values.median()) - float(everyone[column].median())) <= age_tolerance
                dist: dict[str, float] = {}
                majority: tuple[str, ...] = (f"median {float(values.median()):g}",)
                majority_share = claimed_share = float("nan")
                if est.value == "unknown":
                    status: ClaimStatus = "unknown"
                    mapped: tuple[str, ...] = ()
                else:
                    status, mapped = _numeric_status(claim, values.astype(float), age_tolerance)
                    claimed_share = float(
                        np.mean([fits_age(a, parse_age_intervals(claim)) for a in values])
                    )
            else:
                shares = values.astype(str).value_counts(normalize=True)
                dist = {str(k): float(v) for k, v in shares.items()}
                vocab = [
                    v
                    for v in sorted(users[column].dropna().astype(str).unique())
                    if v.strip().lower() not in UNKNOWN_VALUES
                ]
                top = max(dist.values())
                majority = tuple(sorted(majority_values(dist, tie_tolerance)))
                most_held = everyone[column].astype(str).value_counts().index[0]
                constant_right = most_held in majority
                majority_share = top
                if est.value == "unknown":
                    status, mapped = "unknown", ()
                else:
                    mapped = map_claim(claim, vocab, age=is_age)
                    status = classify_claim(mapped, dist, tie_tolerance)
                    if is_age and not mapped and vocabulary_intervals(vocab) and parse_age_intervals(claim):
                        status = "contradiction"  # an age we understood that no member's group covers
                claimed_share = float(sum(dist.get(v, 0.0) for v in mapped))
            if named is False and status not in ("consistent", "contradiction"):
                status = "unsupported"  # the gate would have judged it on the column alone, and dropped it
            checks.append(
                ClaimCheck(
                    persona_id=persona.persona_id,
                    segment_id=persona.segment_id,
                    field=field,
                    column=column,
                    claim=claim,
                    mapped=mapped,
                    majority=majority,
                    majority_share=majority_share,
                    claimed_share=claimed_share,
                    status=status,
                    constant_right=constant_right,
                )
            )
    return checks


def _known(column: pd.Series) -> pd.Series:
    """A column's values less missing and "unknown"-like ones (numbers kept as numbers)."""
    values = column.dropna()
    if not pd.api.types.is_numeric_dtype(values):
        values = values[~values.astype(str).str.strip().str.lower().isin(UNKNOWN_VALUES)]
    return values


def _named_by_texts(
    persona: Persona, field: str, est: DemographicEstimate, sources: Mapping[str, SourceText] | None
) -> bool | None:
    """For a claim drawn from texts: does a cited text of the persona's segment name it? None otherwise."""
    if sources is None or est.source != "texts" or est.value == "unknown":
        return None
    cited = [sources[t] for t in est.text_ids if t in sources and sources[t].segment_id == persona.segment_id]
    return any(text_supports(field, est.value, src.text) for src in cited)


def _unsupported(persona: Persona, field: str, claim: str) -> ClaimCheck:
    nan = float("nan")
    return ClaimCheck(
        persona_id=persona.persona_id,
        segment_id=persona.segment_id,
        field=field,
        column="",
        claim=claim,
        mapped=(),
        majority=(),
        majority_share=nan,
        claimed_share=nan,
        status="unsupported",
    )


def claim_metrics(checks: Sequence[ClaimCheck]) -> dict[str, float]:
    """Counts of checked, consistent, unknown-ish (unknown/vague/unmapped), contradicting and unsupported
    claims, and two shares over the claims compared with a column: right ones (`claims_right_share`; a
    persona that says "unknown" everywhere scores 0) and what one constant guess, the value most users
    hold, would get right on the same fields and segments (`claims_constant_share`)."""
    status = Counter(c.status for c in checks)
    with_column = [c for c in checks if c.column]
    n = len(with_column)
    return {
        "claims_right_share": sum(c.status == "consistent" for c in with_column) / n if n else float("nan"),
        "claims_constant_share": sum(c.constant_right for c in with_column) / n if n else float("nan"),
        "claims_checked": float(len(checks)),
        "claims_consistent": float(status["consistent"]),
        "claims_unknown": float(status["unknown"] + status["vague"] + status["unmapped"]),
        "contradictions": float(status["contradiction"]),
        "claims_unsupported": float(status["unsupported"]),
    }
