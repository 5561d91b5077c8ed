"""Demographic hints (agents/persona_writer_hints.toml): the model lists only what the texts say about
who the customers are, and the pipeline builds the four estimates: hints are gated like any text-sourced
estimate, and attribute columns with a majority become estimates by code."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from persona_llm.agents.definitions import load_agent
from persona_llm.common.demographics import fits_age, parse_age_intervals
from persona_llm.evaluation.claims import check_claims
from persona_llm.personas.gates import TextIndex, attribute_estimate, check_estimates, estimates_from_hints
from persona_llm.personas.quoting import reference_draft_model
from persona_llm.schema.personas import DemographicHint, HintsDraftCore
from tests.fake_openai import FakeOpenAIServer
from tests.test_persona_gates import _categorical, _numeric, _segment_with, chat_for, draft_for, make_run_dir, writer


@pytest.mark.parametrize(
    ("field", "attributes", "value", "confidence"),
    [
        ("gender", {"gender": _categorical(("F", 0.8), ("M", 0.2))}, "female", "high"),  # a code, read as a gender
        ("gender", {"sex": _categorical(("male", 0.6), ("female", 0.4))}, "male", "medium"),
        ("gender", {"gender": _categorical(("f", 0.5), ("m", 0.5))}, "unknown", "unknown"),  # no majority
        ("occupation", {"occupation": _categorical(("indUnk", 0.7), ("Student", 0.3))}, "unknown", "unknown"),
        ("occupation", {"occupation": _categorical(("Student", 0.55), ("Arts", 0.45))}, "Student", "medium"),
        ("age_group", {"age": _numeric(34.4)}, "median age 34", "medium"),
        ("location", {"age": _numeric(34.4)}, None, None),  # a numeric column cannot say a place
        ("location", {}, None, None),
    ],
)
def test_an_attribute_column_makes_its_own_estimate(
    field: str, attributes: dict[str, Any], value: str | None, confidence: str | None
) -> None:
    est = attribute_estimate(field, _segment_with(attributes))
    if value is None:
        assert est is None
        return
    assert est is not None and (est.value, est.confidence) == (value, confidence)
    if value == "unknown":
        assert est.source == "none" and est.evidence  # the shares are shown, not hidden
    else:
        assert est.source == "attribute"
        # What the gate and the claims eval read it as: the same column agrees with the computed value.
        fixed, removed = check_estimates(_with(field, est), _segment_with(attributes), TextIndex([]))
        assert getattr(fixed, field).value == value and not removed


def test_a_computed_median_age_reads_as_that_age() -> None:
    ages = parse_age_intervals("median age 34")
    assert fits_age(34, ages) and not fits_age(40, ages)


def _with(field: str, est: Any) -> Any:
    from persona_llm.schema.personas import DemographicEstimate, Demographics

    parts = {k: DemographicEstimate.unknown() for k in ("age_group", "gender", "location", "occupation")}
    return Demographics(**{**parts, field: est})


def test_hints_become_text_estimates_that_the_gate_judges() -> None:
    hints = [
        DemographicHint(field="occupation", value="nurse", text_ids=["a", "b"]),
        DemographicHint(field="occupation", value="teacher", text_ids=["b"]),  # the first hint per field counts
        DemographicHint(field="location", value="unknown", text_ids=["a"]),  # "unknown" is no hint
        DemographicHint(field="age_group", value="retirees", text_ids=["a"]),
    ]
    demographics = estimates_from_hints(hints)
    assert demographics.occupation.value == "nurse" and demographics.occupation.source == "texts"
    assert demographics.occupation.confidence == "medium"  # two texts
    assert demographics.location.value == "unknown" and demographics.gender.value == "unknown"
    index = TextIndex([
        ("a", "u1", 0, "Night shifts on the ward again; as a nurse I live on coffee."),
        ("b", "u2", 0, "Nurse here, twelve hour shifts."),
    ])  # fmt: skip
    fixed, removed = check_estimates(demographics, _segment_with({}), index)
    assert fixed.occupation.value == "nurse" and fixed.occupation.text_ids == ["a", "b"]
    # The case the gate must catch: a hint whose cited text does not say it is not kept.
    assert fixed.age_group.value == "unknown"
    assert [r.field for r in removed] == ["age_group"]


def test_the_hints_schema_has_no_estimate_objects_to_write() -> None:
    spec = load_agent("persona_writer_hints")
    assert spec.output_model() is HintsDraftCore
    schema = reference_draft_model(["t1.1", "t2.1", "t3.1"], HintsDraftCore).model_json_schema()
    assert "demographics" not in schema["properties"] and "demographics" not in schema.get("required", [])
    assert schema["properties"]["demographic_hints"]["maxItems"] == 4
    assert "demographic_hints" not in schema.get("required", [])  # an empty list may be left out


def _ref_of(user_prompt: str, sentence_start: str) -> str:
    match = re.search(r"\[(t\d+)\] (?:\[t\d+\.\d+\] )?" + re.escape(sentence_start), user_prompt)
    assert match, user_prompt
    return match.group(1)


def test_the_writer_builds_estimates_from_hints_and_columns(tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path / "run")

    def reply(request: dict[str, Any]) -> dict[str, Any]:
        schema = request["response_format"]["json_schema"]["schema"]
        assert "demographics" not in schema["properties"]
        user = request["messages"][1]["content"]
        segment_id = int(re.search(r"Segment (\d+) of", user).group(1))  # type: ignore[union-attr]
        body = {k: v for k, v in draft_for(segment_id).items() if k not in ("quotes", "confidence", "demographics")}
        body["quote_ids"] = schema["properties"]["quote_ids"]["items"]["enum"][:3]
        if segment_id == 0:
            beginners = _ref_of(user, "Setting up the espresso machine")
            body["demographic_hints"] = [
                {"field": "occupation", "value": "beginners", "text_ids": [beginners]},
                {"field": "location", "value": "Paris", "text_ids": [beginners]},  # no text says Paris
                {"field": "gender", "value": "women", "text_ids": [beginners]},  # the column has no majority
            ]
        return {"content": json.dumps(body)}

    with FakeOpenAIServer(default=reply) as server:
        personas = writer(chat_for(server), quote_mode="reference", agent="persona_writer_hints").write(run_dir)
    system = server.requests[0]["messages"][0]["content"]
    assert "demographic_hints" in system and 'source "attribute"' not in system
    by_segment = {p.segment_id: p for p in personas}
    assert {p.provenance.agent for p in personas} == {"persona_writer_hints"}
    first = by_segment[0].demographics
    assert (first.occupation.value, first.occupation.source, first.occupation.text_ids) == (
        "beginners", "texts", ["u03-t0"],
    )  # fmt: skip
    assert first.location.value == "unknown"
    assert first.gender.value == "unknown" and "no majority" in first.gender.evidence  # 2 of 4 women
    assert first.age_group.value == "median age 36" and first.age_group.source == "attribute"
    # Segment 1: 2 of 3 men; segment 2: all women. Computed, though the model wrote no hint.
    assert (by_segment[1].demographics.gender.value, by_segment[1].demographics.gender.confidence) == ("male", "medium")
    assert (by_segment[2].demographics.gender.value, by_segment[2].demographics.gender.confidence) == ("female", "high")
    # The claims eval, reading the members' own rows, finds every computed estimate consistent.
    users = pd.read_parquet(run_dir / "texts.parquet").groupby("user_id")[["segment_id", "age", "gender"]].first()
    checks = check_claims(personas, users.reset_index())
    computed = {(c.segment_id, c.field): c.status for c in checks if c.status != "unknown"}
    assert computed == {(0, "age_group"): "consistent", (1, "age_group"): "consistent", (2, "age_group"): "consistent",
                        (1, "gender"): "consistent", (2, "gender"): "consistent"}  # fmt: skip
