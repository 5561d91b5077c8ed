"""Agent definitions drive the writers at run time: changing a field of an agent file changes what is sent
(role: the system message; prompt: the templates; output_schema: the response schema) or is refused
(tools the writer cannot offer, an output model of the wrong kind, a prompt that never reads the role).
The persona writer's prompt is byte-for-byte the one it sent before roles came from its agent file."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

from persona_llm.agents.definitions import list_agents
from persona_llm.errors import ConfigError
from persona_llm.personas.prompting import AgentPrompt, PromptTemplates
from persona_llm.personas.writer import PersonaWriteError
from persona_llm.resource_paths import resource_root
from persona_llm.runs.rundir import RunDir
from persona_llm.runs.workspace import resolve_run
from persona_llm.schema.briefs import CampaignDraft, CitedClaim
from persona_llm.schema.personas import DraftCore, Short
from tests.fake_openai import FakeOpenAIServer
from tests.test_briefs import campaign, reply_with, supported_insight
from tests.test_briefs import writer as brief_writer
from tests.test_persona_gates import by_segment, chat_for, draft_for, make_run_dir
from tests.test_persona_gates import writer as persona_writer


class TwoInterestsDraft(DraftCore):
    """A persona output_schema that allows two interests (a subclass may tighten the draft)."""

    interests: list[Short] = Field(min_length=1, max_length=2)


class OneInsightDraft(CampaignDraft):
    insights: list[CitedClaim] = Field(min_length=1, max_length=1)


#: sha256 of the persona/v3 system prompt (English) as sent before the role came from the agent file.
V3_SYSTEM_SHA256 = {
    "reference": "5ff83acbb78a800fef0f8f3a37cbff456a5b7c780dea0aee3387285e6a9e8654",
    "verbatim": "ddf6fef3b3e14236b26df3f1261c45e7f09a0ed040b593321147a4d273ae11ac",
}


def agent_file(tmp_path: Path, name: str, **changes: str) -> Path:
    """A copy of the bundled agents/<name>.toml with `field = value` lines replaced."""
    lines = (resource_root("agents") / f"{name}.toml").read_text(encoding="utf-8").splitlines()
    out = []
    for line in lines:
        key = line.split("=", 1)[0].strip()
        out.append(f"{key} = {changes[key]}" if key in changes and "=" in line and not line.startswith("#") else line)
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


def test_every_agent_file_loads_and_reads_its_role() -> None:
    agents = {a.name: a for a in list_agents()}
    ours = ("persona_writer", "persona_judge", "brief_writer", "narrative_writer", "messaging_writer", "brief_judge")
    assert set(ours) <= set(agents)
    for name in ours:
        spec = agents[name]
        assert "role" in PromptTemplates.load(spec.prompt).system_variables, name


@pytest.mark.parametrize("quote_mode", ["reference", "verbatim"])
def test_persona_prompt_is_unchanged_by_taking_the_role_from_the_agent(quote_mode: str) -> None:
    agent = AgentPrompt.load("persona_writer", expects=DraftCore)
    v3 = PromptTemplates.load("persona/v3")
    system = v3.system.render(role=agent.role, output_language="English", schema_json="", quote_mode=quote_mode)
    assert hashlib.sha256(system.strip().encode()).hexdigest() == V3_SYSTEM_SHA256[quote_mode]
    # v4, the agent's prompt now, is v3 with rules 6 and 7 on the third person and nothing else
    v4 = agent.templates.system.render(role=agent.role, output_language="English", schema_json="", quote_mode=quote_mode)
    changed = [(a, b) for a, b in zip(system.strip().splitlines(), v4.strip().splitlines(), strict=True) if a != b]
    assert [a[:2] for a, _ in changed] == ["6.", "7."] and all("third person" in b or "never" in b for _, b in changed)


@pytest.fixture()
def persona_run(tmp_path: Path) -> Path:
    return make_run_dir(tmp_path / "run")


def _persona_request(run: Path, failure: str = "", **writer_kw: Any) -> dict[str, Any]:
    """The first request the persona writer sends for segment 0 (the scripted draft has 3 interests)."""
    with FakeOpenAIServer(default=by_segment(lambda sid: draft_for(sid))) as server:
        if failure:
            with pytest.raises(PersonaWriteError, match=failure):
                persona_writer(chat_for(server), **writer_kw).write(run, [0])
        else:
            persona_writer(chat_for(server), **writer_kw).write(run, [0])
        return server.requests[0]


def test_persona_writer_sends_the_agent_files_role_and_output_schema(persona_run: Path, tmp_path: Path) -> None:
    default = _persona_request(persona_run)
    assert default["messages"][0]["content"].startswith("You are a marketing strategist. You write one customer persona")
    role = '"""You are a careful analyst of coffee drinkers. You write one persona from evidence only."""'
    changed = _persona_request(persona_run, agent=agent_file(tmp_path, "persona_writer", role=role))
    assert changed["messages"][0]["content"].startswith("You are a careful analyst of coffee drinkers.")
    assert changed["messages"][0]["content"].split("Rules:")[1] == default["messages"][0]["content"].split("Rules:")[1]
    schema = '"tests.test_brief_agents:TwoInterestsDraft"'
    # The scripted reply's 3 interests break the agent's tighter schema: validated against it, re-asked, refused.
    tight = _persona_request(
        persona_run, "at most 2 items", agent=agent_file(tmp_path, "persona_writer", output_schema=schema)
    )
    props = tight["response_format"]["json_schema"]["schema"]["properties"]
    assert props["interests"]["maxItems"] == 2 and "quotes" in props
    assert default["response_format"]["json_schema"]["schema"]["properties"]["interests"]["maxItems"] == 6


def test_persona_writer_prompt_comes_from_the_agent_file(
    persona_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts = tmp_path / "prompts"
    shutil.copytree(resource_root("prompts"), prompts)
    v9 = prompts / "persona" / "v9"
    shutil.copytree(prompts / "persona" / "v3", v9)
    system = (v9 / "system.j2").read_text(encoding="utf-8")
    (v9 / "system.j2").write_text(system.replace("Rules:", "Rules (v9):"), encoding="utf-8")
    monkeypatch.setenv("PERSONA_LLM_PROMPTS", str(prompts))
    sent = _persona_request(persona_run, agent=agent_file(tmp_path, "persona_writer", prompt='"persona/v9"'))
    assert "Rules (v9):" in sent["messages"][0]["content"]
    # persona/v2 predates roles: as an agent's own prompt it is refused, since the role would not be sent.
    with pytest.raises(ConfigError, match="never reads"):
        _persona_request(persona_run, agent=agent_file(tmp_path, "persona_writer", prompt='"persona/v2"'))


def test_agent_files_are_checked_before_any_call(persona_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs tools that are not available: search_texts"):
        _persona_request(persona_run, agent=agent_file(tmp_path, "persona_writer", tools='["search_texts"]'))
    with pytest.raises(ConfigError, match="must be DraftCore or a subclass"):
        _persona_request(
            persona_run, agent=agent_file(tmp_path, "persona_writer", output_schema='"persona_llm.schema.briefs:CampaignDraft"')
        )


@pytest.fixture(scope="module")
def run(persona_workspace: Path) -> RunDir:
    return resolve_run(persona_workspace)


def test_brief_writer_sends_the_agent_files_role_prompt_and_output_schema(run: RunDir, tmp_path: Path) -> None:
    make = lambda sid, texts: campaign([supported_insight(texts)])  # noqa: E731

    def request(**agents: Path) -> dict[str, Any]:
        with FakeOpenAIServer(default=reply_with(make)) as server:
            brief_writer(chat_for(server), None, check_support=False, agents=agents).write(
                run, persona_id="0", goal="annual plan"
            )
            return server.requests[0]

    default = request()
    role = '"""You are a copywriter for a coffee roaster. You write briefs from evidence only."""'
    changed = request(campaign=agent_file(tmp_path, "brief_writer", role=role))
    assert default["messages"][0]["content"].startswith("You are a marketing strategist. You write a campaign brief")
    assert changed["messages"][0]["content"].startswith("You are a copywriter for a coffee roaster.")
    one = request(campaign=agent_file(tmp_path, "brief_writer", output_schema='"tests.test_brief_agents:OneInsightDraft"'))
    assert one["response_format"]["json_schema"]["name"] == "OneInsightDraftResponse"
    assert one["response_format"]["json_schema"]["schema"]["properties"]["insights"]["maxItems"] == 1
    assert default["response_format"]["json_schema"]["schema"]["properties"]["insights"]["maxItems"] == 3
    narrative_prompt = request(campaign=agent_file(tmp_path, "brief_writer", prompt='"brief/narrative/v1"'))
    assert "story: 3 to 7 sentences" in narrative_prompt["messages"][0]["content"]
    with pytest.raises(ConfigError, match="must be CampaignDraft"):
        request(campaign=agent_file(tmp_path, "brief_writer", output_schema='"persona_llm.schema.briefs:NarrativeDraft"'))
    with pytest.raises(ConfigError, match="needs tools"):
        request(campaign=agent_file(tmp_path, "brief_writer", tools='["search_texts"]'))
