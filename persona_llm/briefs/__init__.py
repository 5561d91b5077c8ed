"""Strategist briefs on request: campaign briefs, day-in-the-life narratives and messaging matrices for
the personas of a run, held to the persona rules (citations exist and belong to the segment, quotes
verbatim, claims supported by the texts, numbers the run's, confidence from evidence).

    from persona_llm.briefs import BriefWriter, render_brief
    brief = BriefWriter().write(run, persona_id="p0-1a2b3c4d5e", goal="launch of the annual plan")
    print(render_brief(brief, "md"))
    batch = BriefWriter(settings).write_many(run, "all", goal="annual plan")   # one brief per persona
    batch.briefs, batch.failures                                              # persona id -> brief / reason
"""

from persona_llm.briefs.render import render_brief
from persona_llm.briefs.writer import (
    KIND_AGENTS,
    SINGLE_AUDIENCE_KINDS,
    BriefBatch,
    BriefExecutor,
    BriefOutcome,
    BriefRequest,
    BriefWriter,
    brief_id,
    select_each,
    select_personas,
    write_brief_outcome,
)
from persona_llm.schema.briefs import (
    Brief,
    BriefKind,
    MessageRow,
    MessagingMatrix,
    NarrativeBrief,
    parse_brief,
)

__all__ = [
    "KIND_AGENTS",
    "SINGLE_AUDIENCE_KINDS",
    "Brief",
    "BriefBatch",
    "BriefExecutor",
    "BriefKind",
    "BriefOutcome",
    "BriefRequest",
    "BriefWriter",
    "MessageRow",
    "MessagingMatrix",
    "NarrativeBrief",
    "brief_id",
    "parse_brief",
    "render_brief",
    "select_each",
    "select_personas",
    "write_brief_outcome",
]
