"""The brief grounding eval: each metric catches the case it exists for (a brief citing another segment's
text, a paraphrased "quote", an insight its segment's texts do not support, an audience whose numbers are
not the run's), the judge's usefulness rating has its mismatched-audience control, and `persona-llm eval
--brief FILE` reports them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from persona_llm.cli import app
from persona_llm.errors import InputError
from persona_llm.evaluation.brief_eval import BriefJudge, load_briefs
from persona_llm.evaluation.runner import evaluate_run
from persona_llm.runs.rundir import RunDir
from persona_llm.runs.workspace import resolve_run
from persona_llm.schema.briefs import Brief, CitedStatement
from tests.conftest import copy_workspace
from tests.fake_openai import FakeOpenAIServer
from tests.test_briefs import campaign, chat_for, reply_with, supported_insight, writer

GROUPS_OFF = ["labels", "internal", "grounding", "claims", "narrative", "distinctness", "representativeness",
              "stability", "judge", "privacy"]  # fmt: skip


@pytest.fixture(scope="module")
def run(persona_workspace: Path) -> RunDir:
    return resolve_run(persona_workspace)


@pytest.fixture(scope="module")
def brief(run: RunDir) -> Brief:
    """A campaign brief of segment 0 that passed the writer's gates (scripted server, no support check:
    the eval must judge it on its own)."""
    make = lambda sid, texts: campaign([supported_insight(texts, 0), supported_insight(texts, 2)])  # noqa: E731
    with FakeOpenAIServer(default=reply_with(make)) as server:
        result = writer(chat_for(server), None, check_support=False).write(run, persona_id="0", goal="annual plan")
    assert isinstance(result, Brief) and len(result.audience_insights) == 2 and len(result.proof_points) == 2
    return result


def briefs_only(run: RunDir, briefs: list[Any], judge: Any = None) -> dict[str, Any]:
    from persona_llm.evaluation.suite import Suite

    suite = Suite(name="briefs", metrics=["briefs"])
    report = evaluate_run(run, suite=suite, briefs=briefs, judge=judge, write=False)
    return {"metrics": report.metrics, "details": report.details.get("briefs", {}), "skipped": report.skipped}


def test_a_grounded_brief_scores_full_marks(run: RunDir, brief: Brief) -> None:
    got = briefs_only(run, [brief])["metrics"]
    assert got["brief_claims"] == 3  # two insights and one objection
    for name in ("brief_claims_cited", "brief_citation_valid", "brief_quote_verified", "brief_numbers_match"):
        assert got[name] == 1.0, name
    assert got["brief_support_lexical"] is not None and got["brief_support_lexical"] >= 2 / 3


def test_citing_another_segments_text_is_caught(run: RunDir, brief: Brief) -> None:
    other = str(run.segment_texts(1)["text_id"].iloc[0])
    first = brief.audience_insights[0]
    bad = brief.model_copy(
        update={"audience_insights": [CitedStatement(text=first.text, text_ids=[other]), *brief.audience_insights[1:]]}
    )
    got = briefs_only(run, [bad])
    assert got["metrics"]["brief_claims_cited"] == 0.5 and got["metrics"]["brief_citation_valid"] < 1.0
    assert got["details"]["failed_claims"][0]["invalid_citations"] == [other]


def test_a_paraphrased_quote_is_caught(run: RunDir, brief: Brief) -> None:
    q = brief.proof_points[0]
    paraphrased = q.model_copy(update={"text": q.text.replace("and", "plus", 1).replace("the", "my", 1)})
    assert paraphrased.text != q.text
    bad = brief.model_copy(update={"proof_points": [paraphrased, *brief.proof_points[1:]]})
    got = briefs_only(run, [bad])
    assert got["metrics"]["brief_quote_verified"] == 0.5
    assert got["details"]["failed_quotes"][0]["quote"] == paraphrased.text


def test_an_insight_the_texts_do_not_support_is_caught(run: RunDir, brief: Brief) -> None:
    invented = CitedStatement(text="They trade cryptocurrency on the stock exchange.", text_ids=brief.audience_insights[0].text_ids)
    good = briefs_only(run, [brief])["metrics"]["brief_support_lexical"]
    bad = brief.model_copy(update={"audience_insights": [*brief.audience_insights, invented]})
    got = briefs_only(run, [bad])
    assert got["metrics"]["brief_support_lexical"] < good
    assert any(r["claim"] == invented.text and r["lexically_supported"] is False for r in got["details"]["failed_claims"])
    assert got["metrics"]["brief_claims_cited"] == 1.0  # its citations are valid: only the support check catches it


def test_audience_numbers_must_be_the_runs(run: RunDir, brief: Brief) -> None:
    wrong = brief.model_copy(update={"audience": brief.audience.model_copy(update={"user_count": brief.audience.user_count + 5})})
    got = briefs_only(run, [brief, wrong])
    assert got["metrics"]["brief_numbers_match"] == 0.5
    assert "user_count" in got["details"]["audience_mismatches"][0]["problems"][0]


def test_usefulness_is_read_with_its_mismatched_audience_control(run: RunDir, brief: Brief) -> None:
    """A judge that reads the audience rates the brief lower for another segment's persona; a failed
    rating is counted, not averaged in."""
    own_name = next(p.name for p in run.load_personas() if p.segment_id == 0)
    seen: list[list[dict[str, str]]] = []

    def judge(messages: list[dict[str, str]]) -> str:
        seen.append(messages)
        own = f'Audience: "{own_name}"' in messages[1]["content"]
        return json.dumps({"score": 5 if own else 2, "reason": "reads the audience"})

    got = briefs_only(run, [brief], judge=judge)["metrics"]
    assert got["brief_usefulness"] == 5.0 and got["brief_usefulness_mismatched"] == 2.0 and got["brief_judge_errors"] == 0
    assert seen[0][0]["content"].startswith("You review marketing briefs")  # the brief_judge agent's role
    assert "Key message" in seen[0][1]["content"] and "Evidence:" not in seen[0][1]["content"]
    broken = briefs_only(run, [brief], judge=lambda messages: "no idea")["metrics"]
    assert broken["brief_usefulness"] is None and broken["brief_judge_errors"] == 2
    assert "usefulness not rated" in briefs_only(run, [brief])["skipped"]["briefs"]
    assert BriefJudge(judge).messages(brief, run.load_personas()[0])[0]["role"] == "system"


def test_eval_cli_checks_brief_files(persona_workspace: Path, brief: Brief, tmp_path: Path) -> None:
    ws = copy_workspace(persona_workspace, tmp_path / "ws")  # eval writes eval.json into the run
    path = tmp_path / "brief.json"
    path.write_text(brief.model_dump_json(), encoding="utf-8")
    result = CliRunner().invoke(app, ["eval", str(ws), "--brief", str(path), "--no-stability", "--no-embed", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["metrics"]["brief_quote_verified"] == 1.0 and report["details"]["briefs"]["briefs"][0]["kind"] == "campaign"
    bad = tmp_path / "bad.json"
    bad.write_text('{"kind": "campaign"}', encoding="utf-8")
    with pytest.raises(InputError, match=r"bad\.json.*not a brief"):
        load_briefs([bad])
    failed = CliRunner().invoke(app, ["eval", str(ws), "--brief", str(tmp_path / "none.json"), "--no-stability"])
    assert failed.exit_code == 2 and "no such brief file" in failed.output
