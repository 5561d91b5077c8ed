"""The persona gates and the eval must judge the same input the same way.

The quote gate (personas/gates.py) decides which quotes a persona keeps; the grounding eval
(evaluation/metrics.py) later checks that they are verbatim. If the two disagree, a run can pass its own
gate and fail its evaluation, or the other way round.

These tests use only the gate and eval entry points (not the shared helpers behind them), so they also
pin what the code did before the helpers were shared: there the gate skipped Unicode NFC and the eval
did not fold quote marks.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import pytest

from persona_llm.evaluation import metrics as M
from persona_llm.personas.gates import TextIndex, ground_quotes
from persona_llm.schema.personas import DraftQuote, Persona

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
