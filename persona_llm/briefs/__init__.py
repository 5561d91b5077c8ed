"""Strategist briefs on request: campaign briefs, day-in-the-life narratives and messaging matrices for
the personas of a run, held to the persona rules (citations exist and belong to the segment, quotes
verbatim, claims supported by the texts, numbers the run's, confidence from evidence).

    from persona_llm.briefs import BriefWriter, render_brief
    brief = BriefWriter().write(run, persona_id="p0-1a2b3c4d5e", goal="launch of the annual plan")
    print(render_brief(brief, "md"))
"""

from persona_llm.briefs.render import render_brief
from persona_llm.briefs.writer import KIND_AGENTS, BriefWriter, brief_id, select_personas
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
    "Brief",
    "BriefKind",
    "BriefWriter",
    "MessageRow",
    "MessagingMatrix",
    "NarrativeBrief",
    "brief_id",
    "parse_brief",
    "render_brief",
    "select_personas",
]
