"""A campaign brief end to end with the real embedded model (llama.cpp + Qwen2.5-Coder-1.5B, the session's
shared server) on the small published workspace: whatever the model writes, the gates ran, and every
citation and quote the brief kept is valid, by the writer's record and by the eval's own check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from persona_llm.briefs import Brief, BriefWriter, render_brief
from persona_llm.common.textmatch import is_verbatim
from persona_llm.evaluation.runner import evaluate_run
from persona_llm.evaluation.suite import Suite
from persona_llm.runs.workspace import resolve_run
from tests.test_run_store import tree_digest


@pytest.mark.slow
def test_campaign_brief_with_the_embedded_model(embedded_chat: Any, persona_workspace: Path) -> None:
    run = resolve_run(persona_workspace)
    before = tree_digest(persona_workspace)
    # A small prompt (6 texts) keeps this to about a minute on 2 cores; everything else is the default path.
    writer = BriefWriter(chat=embedded_chat, text_token_budget=400, max_texts=6)
    brief = writer.write(persona_workspace, persona_id="0", goal="launch of the annual plan", channel="email")
    assert isinstance(brief, Brief)
    prov = brief.provenance
    # The gates ran: quotes chosen by reference, every claim the model wrote checked against the texts.
    assert prov.quote_mode == "reference" and prov.agent == "brief_writer" and prov.quotes_proposed >= 1
    written = len(brief.audience_insights) + len(brief.objections) + len(prov.statements_removed)
    assert written >= 1 and len(prov.statements) == written
    assert prov.support_share is not None and brief.confidence in ("low", "medium", "high")
    # Every kept citation and quote is valid: real texts of segment 0, quotes verbatim.
    texts = run.load_texts().set_index("text_id")
    for claim in brief.audience_insights:
        assert claim.text_ids and all(int(texts.loc[t, "segment_id"]) == 0 for t in claim.text_ids)
    for q in brief.proof_points:
        assert int(texts.loc[q.text_id, "segment_id"]) == 0 and is_verbatim(q.text, texts.loc[q.text_id, "text"])
    segment = run.load_segments().get(0)
    assert (brief.audience.user_count, brief.audience.share) == (segment.size, segment.share)
    # The eval's independent check agrees (its lexical support is a separate, weaker reading: not asserted).
    report = evaluate_run(run, suite=Suite(name="briefs", metrics=["briefs"]), briefs=[brief], write=False)
    for name in ("brief_citation_valid", "brief_quote_verified", "brief_numbers_match"):
        assert report.metrics[name] in (1.0, None), (name, report.metrics[name])
    assert report.metrics["brief_claims_cited"] in (1.0, None)
    assert "# Campaign brief" in render_brief(brief, "md")
    assert tree_digest(persona_workspace) == before
    stats = writer.stats()
    print(f"\nreal brief: {stats} confidence {brief.confidence}; {len(brief.audience_insights)} insights kept, "
          f"{len(prov.statements_removed)} removed, {len(brief.proof_points)} proof points")  # fmt: skip
