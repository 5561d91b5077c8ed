"""Evaluation of runs: pure metrics, suite files with thresholds, and a runner that writes eval.json.

from persona_llm.evaluation import evaluate_run, load_suite, check_thresholds
report = evaluate_run("runs/x", labels="age_group", suite=load_suite("evals/suites/ci.toml"))
"""

from persona_llm.evaluation.metrics import METRICS
from persona_llm.evaluation.runner import (
    EvalReport,
    Failure,
    SuiteResult,
    check_thresholds,
    eval_section_html,
    evaluate_run,
    load_report,
    run_suite,
    write_bench_report,
)
from persona_llm.evaluation.suite import DataSet, Suite, load_dataset, load_suite

__all__ = [
    "METRICS",
    "DataSet",
    "EvalReport",
    "Failure",
    "Suite",
    "SuiteResult",
    "check_thresholds",
    "eval_section_html",
    "evaluate_run",
    "load_dataset",
    "load_report",
    "load_suite",
    "run_suite",
    "write_bench_report",
]
