"""Agent definitions load, point at prompts and output models that exist, and bad ones are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from persona_llm.agents.definitions import list_agents, load_agent
from persona_llm.errors import ConfigError
from persona_llm.evaluation.judge import JudgeResponse, build_messages
from persona_llm.schema.personas import DraftCore


def test_bundled_agents_load_and_resolve() -> None:
    agents = {a.name: a for a in list_agents()}
    assert {"persona_writer", "persona_judge"} <= set(agents)
    assert agents["persona_writer"].output_model() is DraftCore
    assert agents["persona_judge"].output_model() is JudgeResponse
    assert (agents["persona_writer"].prompt_dir() / "system.j2").is_file()


def test_judge_prompt_comes_from_the_agent_and_is_v1s_text() -> None:
    spec = load_agent("persona_judge")
    messages = build_messages(["goal: saves money"], ["I always look for coupons"])
    assert messages[0]["content"].startswith(spec.role) and spec.prompt == "judge/v2"
    # The role opens the message; with the shipped role the judge sends exactly what judge/v1 sent.
    v1 = (spec.prompt_dir().parent / "v1" / "system.txt").read_text(encoding="utf-8").strip()
    assert messages[0]["content"] == v1
    assert messages[1]["content"] == "Texts:\n[1] I always look for coupons\n\nClaims:\n1. goal: saves money"


def _write(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(body, encoding="utf-8")
    return path


GOOD = '''name = "helper"
role = "An analyst who answers questions about segments from the store only."
prompt = "persona/v1"
tools = ["search_texts"]
output_schema = "persona_llm.evaluation.judge:JudgeResponse"
'''


def test_tools_must_be_available(tmp_path: Path) -> None:
    path = _write(tmp_path, "helper", GOOD)
    assert load_agent(path, available_tools={"search_texts"}).tools == ("search_texts",)
    with pytest.raises(ConfigError, match="search_texts"):
        load_agent(path, available_tools={"get_segment"})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (GOOD.replace('prompt = "persona/v1"', 'prompt = "nope/v9"'), "prompt folder"),
        (GOOD.replace("judge:JudgeResponse", "judge:NoSuchModel"), "not importable"),
        (GOOD.replace("judge:JudgeResponse", "judge:judge_metrics"), "not a Pydantic model"),
        (GOOD + 'colour = "red"\n', "colour"),
        (GOOD.replace('name = "helper"', 'name = "other"'), "file is named"),
        ("name = ", "not valid TOML"),
    ],
)
def test_bad_definitions_name_the_file_and_field(tmp_path: Path, body: str, message: str) -> None:
    path = _write(tmp_path, "helper", body)
    with pytest.raises(ConfigError, match=message) as info:
        load_agent(path)
    assert str(path) in str(info.value)


def test_unknown_agent_name() -> None:
    with pytest.raises(ConfigError, match="no such agent"):
        load_agent("does_not_exist")


def test_the_compact_writer_tightens_the_costly_fields_and_still_makes_personas() -> None:
    from persona_llm.personas.quoting import reference_draft_model
    from persona_llm.schema.personas import CompactDraftCore, Demographics, Recommendations

    spec = load_agent("persona_writer_compact")
    assert spec.output_model() is CompactDraftCore and issubclass(CompactDraftCore, DraftCore)
    schema = reference_draft_model(["t1.1", "t2.1", "t3.1"], CompactDraftCore).model_json_schema()
    defs = schema["$defs"]
    assert defs["CompactRecommendations"]["properties"]["messages"]["maxItems"] == 2
    assert defs["CompactEstimate"]["properties"]["evidence"]["maxLength"] == 80
    estimate = {"value": "unknown", "confidence": "unknown", "source": "none"}
    draft = {
        "name": "Night Gardener", "tagline": "Grows food after work",
        "summary": "They garden after work in small plots. They fight slugs and wet compost. "
        "They want cheap fixes that work overnight. They share tips with neighbours.",
        "demographics": {k: estimate for k in ("age_group", "gender", "location", "occupation")},
        "interests": ["vegetables"], "goals": ["Keep slugs off lettuce"], "pain_points": ["Slugs eat the lettuce"],
        "tone_of_voice": "plain", "sentiment": "mixed", "quote_ids": ["t1.1", "t2.1", "t3.1"],
        "recommendations": {"messages": ["Protect your lettuce tonight", "Compost without the smell"]},
    }  # fmt: skip
    model = reference_draft_model(["t1.1", "t2.1", "t3.1"], CompactDraftCore)
    value = model.model_validate(draft)
    assert isinstance(value.demographics, Demographics) and isinstance(value.recommendations, Recommendations)
    too_many = {**draft, "recommendations": {"messages": ["a b c", "d e f", "g h i"]}}
    with pytest.raises(ValueError, match="at most 2"):
        model.model_validate(too_many)
