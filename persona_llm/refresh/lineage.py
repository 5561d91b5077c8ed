"""Personas across a refresh: which are kept, regenerated, added or retired, under which id and version.

The rule (one threshold, `persona_threshold`, on a segment's membership churn = 1 - Jaccard of its
users before and after):
    churn below the threshold     kept: the same persona, same id and version, with the segment's new
                                  size and keywords, and every quote re-verified against the current
                                  texts (a quote whose text was removed, changed or left the segment is
                                  dropped, the persona flagged and its confidence recomputed)
    churn at or above it          regenerated under the same id as version + 1; the previous version
                                  goes to the run's persona history
    a new segment                 a new persona (a new id, version 1) when the workspace writes personas
                                  for every segment, or when it is at least as large as the smallest
                                  segment that has one
    a retired segment             its persona goes to the history as retired
Only regenerated and new personas cost model calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from persona_llm.personas.gates import TextIndex, ground_quotes
from persona_llm.personas.support import evidence_confidence
from persona_llm.schema.personas import MIN_QUOTES, DraftQuote, Persona
from persona_llm.schema.refresh import LineageEntry, PersonaChange, PersonaLineage, PersonaVersion, QuoteChange
from persona_llm.schema.segments import SegmentSet

#: Persona fields that say who the persona is; the rest (ids, run, version, provenance) is bookkeeping.
_COMPARED = [f for f in Persona.model_fields if f not in ("persona_id", "version", "run_id", "provenance", "quotes")]


@dataclass
class PersonaPlan:
    keep: dict[int, Persona] = field(default_factory=dict)  # segment id -> the persona carried over
    regenerate: dict[int, Persona] = field(default_factory=dict)  # segment id -> the version it replaces
    add: list[int] = field(default_factory=list)  # new segments that get a persona
    retire: dict[int, Persona] = field(default_factory=dict)  # gone segments' personas
    churn: dict[int, float] = field(default_factory=dict)
    lineage: PersonaLineage = field(default_factory=PersonaLineage)

    @property
    def to_write(self) -> list[int]:
        return sorted([*self.regenerate, *self.add])


def segment_churn(before: set[str], after: set[str]) -> float:
    """1 - Jaccard of a segment's users before and after (0: the same users; 1: none in common)."""
    union = before | after
    return 1.0 - len(before & after) / len(union) if union else 0.0


def plan_personas(
    parent_personas: list[Persona],
    old_members: Mapping[int, set[str]],
    new_members: Mapping[int, set[str]],
    *,
    threshold: float,
    next_segment_id: int,
) -> PersonaPlan:
    """Decide each persona's fate by the module's rule; `new_members` is keyed by stable segment id."""
    plan = PersonaPlan()
    by_segment = {p.segment_id: p for p in parent_personas}
    covered_all = bool(old_members) and set(old_members) <= set(by_segment)
    smallest = min((p.user_count for p in parent_personas), default=0)
    for sid in sorted(new_members):
        persona = by_segment.get(sid)
        if sid in old_members:
            churn = segment_churn(old_members[sid], new_members[sid])
            plan.churn[sid] = round(churn, 4)
            if persona is None:
                continue
            if churn < threshold:
                plan.keep[sid] = persona
                plan.lineage.segments[sid] = LineageEntry(persona_id=persona.persona_id, version=persona.version)
            else:
                plan.regenerate[sid] = persona
                plan.lineage.segments[sid] = LineageEntry(persona_id=persona.persona_id, version=persona.version + 1)
        elif parent_personas and (covered_all or len(new_members[sid]) >= smallest):
            plan.add.append(sid)
    plan.retire = {sid: p for sid, p in by_segment.items() if sid not in new_members}
    known = [next_segment_id, *(s + 1 for s in old_members), *(s + 1 for s in new_members)]
    plan.lineage.next_segment_id = max(known)
    return plan


def carry_persona(
    persona: Persona, segment_set: SegmentSet, index: TextIndex, *, run_id: str, median_cohesion: float | None
) -> tuple[Persona, list[QuoteChange]]:
    """`persona` for the refreshed run: the segment's new counts and keywords, quotes re-verified with
    the project's one quote matcher; returns it with the quotes that were dropped and why."""
    segment = segment_set.get(persona.segment_id)
    drafts = [DraftQuote.model_construct(text_id=q.text_id, text=q.text) for q in persona.quotes]
    checked = ground_quotes(drafts, persona.segment_id, index, max_quotes=len(drafts) or 1)
    dropped = [
        QuoteChange(text_id=r.text_id, text=r.text, reason=_why_dropped(r.reason, r.text_id, index))
        for r in checked.removed
    ]
    update: dict[str, object] = {
        "run_id": run_id,
        "user_count": segment.size,
        "share": segment.share,
        "n_texts": segment.n_texts,
        "keywords": [k.term for k in segment.keywords[:8]],
        "quotes": checked.kept,
    }
    carried = persona.model_copy(update=update, deep=True)
    if dropped:
        prov = carried.provenance
        for d in dropped:
            prov.warnings.append(f"refresh {run_id}: quote from text {d.text_id} dropped: {d.reason}")
        ratio = segment.quality.cohesion / median_cohesion if median_cohesion else None
        carried.confidence, prov.confidence_basis = evidence_confidence(
            prov.statements, quotes_kept=len(checked.kept), quotes_proposed=prov.quotes_proposed,
            min_quotes=MIN_QUOTES, cohesion_ratio=ratio,
        )  # fmt: skip
    return carried, dropped


def _why_dropped(reason: str, text_id: str, index: TextIndex) -> str:
    if text_id not in index.by_id:
        return "its text was removed"
    if reason == "not_in_segment":
        return "its author is in another segment now"
    return f"no longer in its text ({reason.replace('_', ' ')}): the text changed"


def verify_quotes(personas: list[Persona], index: TextIndex) -> list[str]:
    """Every quote of `personas` that is not verbatim in a text of its persona's segment (the publish gate)."""
    bad = []
    for p in personas:
        drafts = [DraftQuote.model_construct(text_id=q.text_id, text=q.text) for q in p.quotes]
        result = ground_quotes(drafts, p.segment_id, index, max_quotes=len(drafts) or 1)
        bad += [f"{p.persona_id}: {r.text_id} ({r.reason})" for r in result.removed]
    return bad


def compare(before: Persona, after: Persona) -> tuple[list[str], list[QuoteChange], list[QuoteChange]]:
    """(fields that changed, quotes added, quotes removed) from one version of a persona to the next."""
    a, b = before.model_dump(mode="json"), after.model_dump(mode="json")
    fields = [f for f in _COMPARED if a.get(f) != b.get(f)]
    old_q = {(q.text_id, q.text) for q in before.quotes}
    new_q = {(q.text_id, q.text) for q in after.quotes}
    added = [QuoteChange(text_id=t, text=x) for t, x in sorted(new_q - old_q)]
    removed = [QuoteChange(text_id=t, text=x) for t, x in sorted(old_q - new_q)]
    return fields, added, removed


def persona_changes(
    plan: PersonaPlan,
    final: Mapping[int, Persona],
    dropped: Mapping[int, list[QuoteChange]],
    failed: Mapping[int, str],
) -> list[PersonaChange]:
    """The diff's persona section."""
    out: list[PersonaChange] = []
    for sid, old in sorted(plan.keep.items()):
        new = final[sid]
        fields, _, _ = compare(old, new)
        out.append(
            PersonaChange(
                persona_id=new.persona_id, segment_id=sid, name=new.name, action="kept",
                version_before=old.version, version_after=new.version, churn=plan.churn.get(sid),
                fields_changed=fields, quotes_removed=list(dropped.get(sid, [])),
                flags=[f"{len(dropped[sid])} quote(s) dropped: their texts were removed or changed"] if dropped.get(sid) else [],
            )  # fmt: skip
        )
    for sid, old in sorted(plan.regenerate.items()):
        if sid in failed or sid not in final:
            out.append(
                PersonaChange(
                    persona_id=old.persona_id, segment_id=sid, name=old.name, action="failed",
                    version_before=old.version, churn=plan.churn.get(sid), flags=[failed.get(sid, "not written")],
                )  # fmt: skip
            )
            continue
        new = final[sid]
        fields, added, removed = compare(old, new)
        out.append(
            PersonaChange(
                persona_id=new.persona_id, segment_id=sid, name=new.name, action="regenerated",
                version_before=old.version, version_after=new.version, churn=plan.churn.get(sid),
                fields_changed=fields, quotes_added=added, quotes_removed=removed,
            )  # fmt: skip
        )
    for sid in plan.add:
        if sid in failed or sid not in final:
            out.append(
                PersonaChange(persona_id="", segment_id=sid, name="", action="failed", flags=[failed.get(sid, "not written")])
            )
            continue
        new = final[sid]
        out.append(
            PersonaChange(
                persona_id=new.persona_id, segment_id=sid, name=new.name, action="added", version_after=new.version,
                quotes_added=[QuoteChange(text_id=q.text_id, text=q.text) for q in new.quotes],
            )  # fmt: skip
        )
    for sid, old in sorted(plan.retire.items()):
        out.append(
            PersonaChange(
                persona_id=old.persona_id, segment_id=sid, name=old.name, action="retired", version_before=old.version
            )
        )
    return out


def history_after(
    previous: list[PersonaVersion], plan: PersonaPlan, written: Mapping[int, Persona], run_name: str
) -> list[PersonaVersion]:
    """The parent's history plus the versions this refresh replaced (regenerated) or retired."""
    out = list(previous)
    for sid, old in sorted(plan.regenerate.items()):
        if sid in written:
            out.append(PersonaVersion(persona=old, replaced_in_run=run_name, reason="regenerated"))
    for _sid, old in sorted(plan.retire.items()):
        out.append(PersonaVersion(persona=old, replaced_in_run=run_name, reason="retired"))
    return out
