"""The ci eval suite on slices of ../shared/data, built by the real product: SegmentPipeline for the
segments and PersonaWriter on the embedded llama.cpp backend for the personas. Every threshold in
evals/suites/ci.toml must hold; this is the gate that stops a change from quietly making segments or
personas worse. Slow (several minutes on 2 cores) but part of CI.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from persona_llm.evaluation.build import SuiteBuilder
from persona_llm.evaluation.runner import run_suite
from persona_llm.evaluation.suite import load_suite
from persona_llm.llm.client import LLMSettings, open_chat_model
from persona_llm.personas.writer import PersonaWriter

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
