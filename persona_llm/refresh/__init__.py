"""Refresh a workspace with new data (stable ids, only what changed regenerated, a diff, atomic publish),
and forget users.

    data.py      new rows against the published texts: added, changed, removed, duplicates; embedding
    matching.py  segments before and after: Hungarian matching, splits, merges, drift, emerging groups
    lineage.py   personas kept, regenerated (same id, new version), added or retired; quote re-verification
    stages.py    stage objects that let SegmentPipeline write a refreshed run from finished work
    workflow.py  `refresh`: the steps, the gates, the report, the publish
    forget.py    `forget`: a user's texts, vectors, store records and quotes out of every run and the caches
"""

from persona_llm.refresh.forget import ForgetReport, forget
from persona_llm.refresh.workflow import (
    EXIT_BAD_INPUT,
    EXIT_CODES,
    EXIT_LOCKED,
    DriftThresholds,
    RefreshResult,
    refresh,
)
from persona_llm.schema.refresh import RefreshDiff

__all__ = [
    "EXIT_BAD_INPUT", "EXIT_CODES", "EXIT_LOCKED", "DriftThresholds", "ForgetReport", "RefreshDiff", "RefreshResult",
    "forget", "refresh",
]  # fmt: skip
