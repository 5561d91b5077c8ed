"""The persona gates and the eval must judge the same input the same way.

The quote gate (personas/gates.py) decides which quotes a persona keeps; the grounding eval
(evaluation/metrics.py) later checks that they are verbatim. The estimate gate decides which demographic
estimates survive; the claims eval (evaluation/claims.py) checks them against the segment's members.
If the two sides disagree, a run can pass its own gates and fail its evaluation, or the other way round.

These tests use only the gate and eval entry points (not the shared helpers behind them), so they also
pin what the code did before the helpers were shared: there the gate skipped Unicode NFC and the eval
did not fold quote marks; the gate did not read "under 30" or "retirees", the claims eval did not read
"40多岁" or map "women" onto an "f"/"m" column.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pytest

from persona_llm.evaluation import claims as C
from persona_llm.evaluation import metrics as M
from persona_llm.personas.gates import TextIndex, check_estimates, ground_quotes
from persona_llm.schema.personas import DemographicEstimate, Demographics, DraftQuote, Persona
from persona_llm.schema.segments import (
    CategoricalSummary,
    CategoryShare,
    NumericSummary,
    Segment,
    SegmentQuality,
)

CASES = Path(__file__).resolve().parents[1] / "evals" / "cases"


def _persona(quotes: Sequence[tuple[str, str, str]] = (), age: str = "unknown", gender: str = "unknown") -> Persona:
    """A stored persona of segment 0 (from evals/cases/persona.json) with these quotes and estimates."""
    data = json.loads((CASES / "persona.json").read_text(encoding="utf-8"))
    data.update(persona_id="p0", segment_id=0, quotes=[{"text_id": t, "user_id": u, "text": q} for t, u, q in quotes])
    for field, value in (("age_group", age), ("gender", gender)):
        data["demographics"][field] = {
            "value": value,
            "confidence": "medium",
            "source": "attribute",
            "evidence": "",
            "text_ids": [],
        }
    return Persona.model_validate(data)


# ---------------------------------------------------------------------------------------------------
# Quotes
# ---------------------------------------------------------------------------------------------------

_CAFE = "Le café était vraiment trop cher pour nous cette année"
_NFC, _NFD = unicodedata.normalize("NFC", _CAFE), unicodedata.normalize("NFD", _CAFE)
_SKATE = "I renew my skate deck every summer, no matter the price."

# (quote, source, verbatim?). The gate strips quote marks a model wraps around a whole quote before
# matching; that is cleaning a draft, not matching, so no case here is wrapped.
QUOTE_CASES = {
    "exact": ("I renew my skate deck every summer", _SKATE, True),
    "whitespace differs": ("I renew my  skate deck\nevery summer", "I renew my skate\tdeck every  summer.", True),
    "NFC quote, NFD source": (_NFC, _NFD, True),
    "NFD quote, NFC source": (_NFD, _NFC, True),
    "straight quote marks, curly source": (
        'She said "never again" about the deluxe model',
        "She said “never again” about the deluxe model.",
        True,
    ),
    "curly apostrophe, straight source": ("I don’t buy the deluxe model anymore", "I don't buy the deluxe model anymore.", True),
    "case differs": ("i renew my skate deck every summer", _SKATE, False),
    "a word changed": ("I renew my bike deck every summer", _SKATE, False),
    "words left out": ("I renew my deck every summer", _SKATE, False),
    "chinese, exact": ("宝宝用了这款纸尿裤以后再也没有红屁股了", "说真的，宝宝用了这款纸尿裤以后再也没有红屁股了！", True),
    "chinese, invented": ("这款奶粉是我用过最好的东西", "说真的，宝宝用了这款纸尿裤以后再也没有红屁股了！", False),
    # A quote starts and ends at word boundaries (CJK: clause boundaries) and keeps the negation before it.
    "a whole sentence": ("The delivery was late again.", "Nice box. The delivery was late again. Shame.", True),
    "a clause after a comma": ("but the delivery was late again", "Nice box, but the delivery was late again.", True),
    "at the very start": ("Nice box but the delivery was late", "Nice box but the delivery was late again.", True),
    "un- cut off": ("happy with delivery times", "I am unhappy with delivery times.", False),
    "un- cut off, mid-sentence": ("reliable support team", "They have an unreliable support team and slow refunds.", False),
    "do not dropped": ("like this product at all", "I do not like this product at all", False),
    "don't dropped (curly apostrophe)": ("like this product at all", "I don’t like this product at all.", False),
    "never dropped": ("buying from this shop again", "I am never buying from this shop again.", False),
    "n't cut in half": ("t like this product at all", "I don't like this product at all.", False),
    "non- cut off": ("refundable tickets are a scam", "Honestly non-refundable tickets are a scam.", False),
    "the same words again without the negation": (
        "happy with delivery times",
        "Not happy with delivery times at first, now happy with delivery times.",
        True,
    ),
    "chinese, 不 dropped": ("满意这次的购物体验", "我不满意这次的购物体验。", False),
    "chinese, 没 dropped": ("有问题出现过的商品", "用了一个月，没有问题出现过的商品，很满意。", False),
    "chinese, half a clause": ("这款纸尿裤以后再也没有红屁股了", "说真的，宝宝用了这款纸尿裤以后再也没有红屁股了！", False),
    "chinese, a clause after a comma": ("等了一个星期奶粉才到", "物流太慢了，等了一个星期奶粉才到，差点断粮。", True),
}


def _gate_keeps(quote: str, source: str) -> list[str]:
    index = TextIndex([("t1", "u1", 0, source)])
    return [q.text for q in ground_quotes([DraftQuote(text_id="t1", text=quote)], 0, index).kept]


def _eval_verifies(quote: str, source: str) -> bool:
    rows = M.quote_checks([_persona([("t1", "u1", quote)])], {"t1": M.SourceText(source, "u1", 0)})
    return bool(rows[0]["verbatim"])


@pytest.mark.parametrize(("quote", "source", "verbatim"), list(QUOTE_CASES.values()), ids=list(QUOTE_CASES))
def test_quote_gate_and_grounding_eval_agree(quote: str, source: str, verbatim: bool) -> None:
    kept = _gate_keeps(quote, source)
    assert bool(kept) is verbatim, "quote gate"
    assert _eval_verifies(quote, source) is verbatim, "grounding eval"
    # What the gate stores (the source's own span) is what the eval then checks.
    assert all(_eval_verifies(q, source) for q in kept)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("un- cut off", "cuts_word"),
        ("un- cut off, mid-sentence", "cuts_word"),
        ("n't cut in half", "cuts_word"),
        ("non- cut off", "cuts_word"),
        ("chinese, half a clause", "cuts_word"),
        ("do not dropped", "drops_negation"),
        ("don't dropped (curly apostrophe)", "drops_negation"),
        ("never dropped", "drops_negation"),
        ("chinese, 不 dropped", "drops_negation"),
        ("chinese, 没 dropped", "drops_negation"),
    ],
)
def test_gate_records_why_a_fragment_is_not_evidence(case: str, reason: str) -> None:
    quote, source, _ = QUOTE_CASES[case]
    result = ground_quotes([DraftQuote(text_id="t1", text=quote)], 0, TextIndex([("t1", "u1", 0, source)]))
    assert [r.reason for r in result.removed] == [reason]


def test_quotes_over_the_limit_are_recorded_and_counted_as_dropped() -> None:
    """Valid quotes beyond max_quotes are removals ("over_limit"), so quotes_dropped_share counts them."""
    sources = [f"Text number {k} says the delivery was late again." for k in range(7)]
    index = TextIndex([(f"t{k}", "u1", 0, text) for k, text in enumerate(sources)])
    drafts = [DraftQuote(text_id=f"t{k}", text=text) for k, text in enumerate(sources)]
    result = ground_quotes(drafts, 0, index, max_quotes=5)
    assert len(result.kept) == 5 and [(r.text_id, r.reason) for r in result.removed] == [
        ("t5", "over_limit"),
        ("t6", "over_limit"),
    ]
    persona = _persona([(q.text_id, q.user_id, q.text) for q in result.kept])
    persona.provenance.quotes_proposed = len(drafts)
    persona.provenance.quotes_removed = result.removed
    metrics = M.grounding_metrics([persona], {f"t{k}": M.SourceText(t, "u1", 0) for k, t in enumerate(sources)})
    assert metrics["quotes_dropped"] == 2 and metrics["quotes_dropped_share"] == pytest.approx(2 / 7)
    assert metrics["quote_verified"] == 1.0


# ---------------------------------------------------------------------------------------------------
# Demographic estimates
# ---------------------------------------------------------------------------------------------------

AGES = [41, 43, 44, 45, 45, 46, 47, 48, 50, 52]  # median 45.5
GENDERS = ["f"] * 8 + ["m"] * 2  # f 80%


def _segment() -> Segment:
    return Segment(
        segment_id=0,
        size=len(AGES),
        share=1.0,
        n_texts=len(AGES),
        keywords=[],
        representative_text_ids=[],
        representatives=[],
        attributes={
            "age": NumericSummary(count=len(AGES), mean=sum(AGES) / len(AGES), median=45.5, overall_mean=40.0),
            "gender": CategoricalSummary(
                count=len(GENDERS),
                top=[CategoryShare(value="f", share=0.8, overall_share=0.5), CategoryShare(value="m", share=0.2, overall_share=0.5)],
            ),
        },
        quality=SegmentQuality(mean_probability=0.9, cohesion=0.5),
    )


def _gate_keeps_estimate(field: str, value: str) -> bool:
    unknown = DemographicEstimate.unknown()
    parts = {"age_group": unknown, "gender": unknown, "location": unknown, "occupation": unknown}
    parts[field] = DemographicEstimate(value=value, confidence="medium", source="attribute", evidence="model")
    fixed, _ = check_estimates(Demographics(**parts), _segment(), TextIndex([]))
    return str(getattr(fixed, field).value) != "unknown"


def _eval_status(field: str, value: str) -> str:
    members = pd.DataFrame(
        {"user_id": [f"u{i}" for i in range(len(AGES))], "segment_id": 0, "age": AGES, "gender": GENDERS}
    )
    persona = _persona(**{"age" if field == "age_group" else "gender": value})
    (check,) = [c for c in C.check_claims([persona], members) if c.field == field]
    return check.status


ESTIMATE_CASES = [
    ("age_group", "40-49", True),
    ("age_group", "students", False),  # median 45.5
    ("age_group", "digital natives", False),  # names no age the column can check
    ("age_group", "40s", True),
    ("age_group", "over 40", True),
    ("age_group", "40多岁", True),
    ("age_group", "20-29", False),
    ("age_group", "20多岁", False),
    ("age_group", "under 30", False),
    ("age_group", "teenagers", False),
    ("age_group", "retirees", False),
    ("gender", "women", True),
    ("gender", "female", True),
    ("gender", "F", True),
    ("gender", "mostly women", True),
    ("gender", "ladies", True),
    ("gender", "女性", True),
    ("gender", "men", False),
    ("gender", "男性", False),
]


@pytest.mark.parametrize(("field", "value", "supported"), ESTIMATE_CASES)
def test_estimate_gate_and_claims_eval_agree(field: str, value: str, supported: bool) -> None:
    assert _gate_keeps_estimate(field, value) is supported, "estimate gate"
    assert (_eval_status(field, value) == "consistent") is supported, "claims eval"


# Claims drawn from texts (source "texts"): a cited text of the segment must name the claim, and the
# attribute column, where there is one, overrules the texts. Text t1 is segment 0's, t9 another segment's.
TEXT_ESTIMATE_CASES = [
    # (field, claim, cited text, kept by the gate / not failed by the eval)
    ("gender", "women", "As a mom of two I need quiet mornings.", True),
    ("gender", "men", "As a dad of two I need quiet mornings.", False),  # the column is 80% f
    ("gender", "men", "The grinder is loud.", False),  # no naming text: the column alone, which says no
    ("gender", "women", "The grinder is loud.", True),  # no naming text: the column alone, which says yes
    ("age_group", "40s", "I am 44 years old and tired of waiting.", True),
    ("age_group", "20s", "I am 24 years old and tired of waiting.", False),  # the median is 45.5
    ("occupation", "nurses", "I work night shifts as a nurse.", True),  # no occupation column
    ("occupation", "nurses", "I love my garden.", False),
    ("location", "Berlin", "OTHER SEGMENT: I live in Berlin.", False),
]


def _gate_keeps_text_estimate(field: str, value: str, text: str) -> bool:
    unknown = DemographicEstimate.unknown()
    parts = {"age_group": unknown, "gender": unknown, "location": unknown, "occupation": unknown}
    cited = "t9" if text.startswith("OTHER SEGMENT") else "t1"
    parts[field] = DemographicEstimate(value=value, confidence="medium", source="texts", text_ids=[cited])
    index = TextIndex([("t1", "u1", 0, text), ("t9", "u9", 1, text)])
    fixed, _ = check_estimates(Demographics(**parts), _segment(), index)
    return str(getattr(fixed, field).value) != "unknown"


def _eval_fails_text_claim(field: str, value: str, text: str) -> bool:
    members = pd.DataFrame(
        {"user_id": [f"u{i}" for i in range(len(AGES))], "segment_id": 0, "age": AGES, "gender": GENDERS}
    )
    persona = _persona()
    cited = "t9" if text.startswith("OTHER SEGMENT") else "t1"
    estimate = DemographicEstimate(value=value, confidence="medium", source="texts", text_ids=[cited])
    setattr(persona.demographics, field, estimate)
    sources = {"t1": M.SourceText(text, "u1", 0), "t9": M.SourceText(text, "u9", 1)}
    checks = [c for c in C.check_claims([persona], members, sources=sources) if c.field == field]
    return any(c.status in ("contradiction", "unsupported") for c in checks)


@pytest.mark.parametrize(("field", "value", "text", "kept"), TEXT_ESTIMATE_CASES)
def test_text_estimate_gate_and_claims_eval_agree(field: str, value: str, text: str, kept: bool) -> None:
    assert _gate_keeps_text_estimate(field, value, text) is kept, "estimate gate"
    assert _eval_fails_text_claim(field, value, text) is not kept, "claims eval"


def test_claims_eval_names_an_unsupported_text_claim() -> None:
    persona = _persona()
    persona.demographics.occupation = DemographicEstimate(
        value="nurses", confidence="medium", source="texts", text_ids=["t1"]
    )
    members = pd.DataFrame({"user_id": ["u1"], "segment_id": [0], "age": [40], "gender": ["f"]})
    checks = C.check_claims([persona], members, sources={"t1": M.SourceText("I love my garden.", "u1", 0)})
    assert [(c.field, c.status) for c in checks if c.field == "occupation"] == [("occupation", "unsupported")]
    assert C.claim_metrics(checks)["claims_unsupported"] == 1
