"""Brief grounding as the eval measures it, independently of the brief writer's gates.

A brief is checked against the run it addresses (the same rules as personas, `persona_llm.evaluation.
metrics` and `narrative`):
- every claim (audience insight, story sentence, messaging insight) cites texts, and every cited id is a
  text of the run that belongs to the audience's segment (`brief_claims_cited`, `brief_citation_valid`);
- every quote (proof point) is verbatim in the text it cites, by the shared matcher
  (`persona_llm.common.textmatch`), and that text is the segment's (`brief_quote_verified`);
- every claim is lexically supported by its segment (`LexicalSupport`: a content word in 5% of the
  segment's texts and more typical of it than of the rest of the run), a check independent of the
  writer's embedding gate (`brief_support_lexical`);
- the audience's numbers (size, share, text count) are the run's, and its persona is the segment's
  (`brief_numbers_match`);
- optionally, an LLM judge rates usefulness 1-5 (`brief_usefulness`), and rates the same brief once more
  shown with another segment's persona as its audience (`brief_usefulness_mismatched`): a judge that
  does not rate the mismatch lower is not reading the audience, so its scores say little.

A brief is requested on demand and written where its reader wants it (`persona-llm brief --out`), not
into the run, so the eval takes brief files (`persona-llm eval RUN --brief FILE`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from persona_llm.common.textmatch import SourceText, is_verbatim
from persona_llm.errors import InputError
from persona_llm.evaluation.narrative import LexicalSupport
from persona_llm.personas.prompting import AgentPrompt
from persona_llm.schema.briefs import Brief, BriefPart, MessagingMatrix, NarrativeBrief, parse_brief
from persona_llm.schema.personas import Persona
from persona_llm.schema.segments import SegmentSet

AnyBrief = Brief | NarrativeBrief | MessagingMatrix
Message = dict[str, str]
JUDGE_AGENT = "brief_judge"


def load_briefs(paths: Sequence[str | Path]) -> list[AnyBrief]:
    """Brief JSON files (`persona-llm brief --format json`); a bad one is a one-line error naming it."""
    briefs: list[AnyBrief] = []
    for path in map(Path, paths):
        try:
            briefs.append(parse_brief(path.read_bytes()))
        except FileNotFoundError as exc:
            raise InputError("no such brief file", path=str(path)) from exc
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(file)"
            raise InputError(f"not a brief (write one with --format json): field {where!r}: {first['msg']}", path=str(path)) from exc
    return briefs


# -- grounding ----------------------------------------------------------------------------------------


def _parts(briefs: Sequence[AnyBrief]) -> list[tuple[AnyBrief, BriefPart]]:
    return [(b, part) for b in briefs for part in b.parts()]


def claim_rows(
    briefs: Sequence[AnyBrief], sources: Mapping[str, SourceText], lexical: LexicalSupport | None
) -> list[dict[str, Any]]:
    """One record per claim: its citations (each exists and is in the audience's segment), and whether
    its segment's words support it (None without the texts' lexical index)."""
    rows = []
    for brief, part in _parts(briefs):
        sid = part.audience.segment_id
        claims: list[tuple[str, str, list[str] | None]] = [(f, s.text, list(s.text_ids)) for f, s in part.cited]
        claims += [(f, text, None) for f, text in part.checked]  # checked, not cited (objections)
        for field_name, text, ids in claims:
            valid = [t for t in ids or [] if t in sources and sources[t].segment_id == sid]
            rows.append(
                {
                    "brief_id": brief.brief_id,
                    "segment_id": sid,
                    "field": field_name,
                    "claim": text,
                    "cited": ids,
                    "invalid_citations": [t for t in ids or [] if t not in valid],
                    "citations_valid": None if ids is None else bool(ids) and len(valid) == len(ids),
                    "lexically_supported": None if lexical is None else lexical.supports(sid, text),
                }
            )
    return rows


def quote_rows(briefs: Sequence[AnyBrief], sources: Mapping[str, SourceText]) -> list[dict[str, Any]]:
    """One record per quote: verbatim in the text it cites, that text in the audience's segment, same user."""
    rows = []
    for brief, part in _parts(briefs):
        for q in part.quotes:
            src = sources.get(q.text_id)
            rows.append(
                {
                    "brief_id": brief.brief_id,
                    "segment_id": part.audience.segment_id,
                    "text_id": q.text_id,
                    "quote": q.text,
                    "verbatim": src is not None and is_verbatim(q.text, src.text),
                    "in_segment": src is not None and src.segment_id == part.audience.segment_id,
                    "same_user": src is not None and src.user_id == q.user_id,
                }
            )
    return rows


def audience_rows(
    briefs: Sequence[AnyBrief], segments: SegmentSet, personas: Sequence[Persona]
) -> list[dict[str, Any]]:
    """One record per audience: are its persona, size, share and text count the run's?"""
    by_id = {p.persona_id: p for p in personas}
    rows = []
    for brief, part in _parts(briefs):
        a = part.audience
        problems = []
        persona = by_id.get(a.persona_id)
        if persona is None:
            problems.append(f"persona {a.persona_id} is not in the run")
        elif persona.segment_id != a.segment_id:
            problems.append(f"persona {a.persona_id} is segment {persona.segment_id}'s, not {a.segment_id}'s")
        try:
            seg = segments.get(a.segment_id)
        except KeyError:
            problems.append(f"no segment {a.segment_id} in the run")
        else:
            for name, stated, actual in (
                ("user_count", a.user_count, seg.size),
                ("share", a.share, seg.share),
                ("n_texts", a.n_texts, seg.n_texts),
            ):
                if not np.isclose(float(stated), float(actual), rtol=0, atol=1e-9):
                    problems.append(f"{name} {stated} but the run has {actual}")
        rows.append({"brief_id": brief.brief_id, "segment_id": a.segment_id, "matches": not problems, "problems": problems})
    return rows


def _share(values: Sequence[Any]) -> float | None:
    known = [bool(v) for v in values if v is not None]
    return sum(known) / len(known) if known else None


def brief_grounding_metrics(
    claims: Sequence[dict[str, Any]], quotes: Sequence[dict[str, Any]], audiences: Sequence[dict[str, Any]]
) -> dict[str, float | None]:
    """brief_claims, brief_claims_cited, brief_citation_valid, brief_quote_verified,
    brief_support_lexical, brief_numbers_match (see METRICS)."""
    cited = [r for r in claims if r["cited"] is not None]
    ids = [t not in r["invalid_citations"] for r in cited for t in r["cited"]]
    ids += [r["in_segment"] and r["same_user"] for r in quotes]
    return {
        "brief_claims": float(len(claims)),
        "brief_claims_cited": _share([r["citations_valid"] for r in cited]),
        "brief_citation_valid": _share(ids),
        "brief_quote_verified": _share([r["verbatim"] and r["in_segment"] for r in quotes]),
        "brief_support_lexical": _share([r["lexically_supported"] for r in claims]),
        "brief_numbers_match": _share([r["matches"] for r in audiences]),
    }


# -- usefulness ---------------------------------------------------------------------------------------


class UsefulnessRating(BaseModel):
    """The brief judge's answer (agents/brief_judge.toml output_schema)."""

    score: int = Field(ge=1, le=5, description="1 not useful .. 5 specific, on goal, actionable")
    reason: str = Field(default="", max_length=400)


def _brief_text(brief: AnyBrief) -> str:
    """The brief as the judge reads it: its Markdown without the provenance footer."""
    from persona_llm.briefs.render import render_brief

    text = render_brief(brief, "md")
    return text.split("\n---\n")[0].split("\n<sub>")[0].strip()


class BriefJudge:
    """Rates a brief 1-5 for an audience and a goal, by the brief_judge agent (role, prompt, output model).

    `model`: a ChatModel (its `generate_structured`) or a callable `messages -> reply text` (tests)."""

    def __init__(self, model: Any, *, agent: str | Path = JUDGE_AGENT) -> None:
        self.model = model
        self.agent = agent

    def messages(self, brief: AnyBrief, audience: Persona, prompt: AgentPrompt | None = None) -> list[Message]:
        prompt = prompt or AgentPrompt.load(self.agent, expects=UsefulnessRating)
        system = prompt.templates.system.render(role=prompt.role)
        user = prompt.templates.user.render(goal=brief.goal, audience=audience, brief=_brief_text(brief))
        return [{"role": "system", "content": system.strip()}, {"role": "user", "content": user.strip()}]

    def rate(self, brief: AnyBrief, audience: Persona) -> tuple[UsefulnessRating | None, str]:
        """(rating, "") or (None, why the judge gave none)."""
        prompt = AgentPrompt.load(self.agent, expects=UsefulnessRating)
        messages = self.messages(brief, audience, prompt)
        model_type = prompt.output_model
        try:
            if hasattr(self.model, "generate_structured"):
                value = self.model.generate_structured(messages, model_type, tag="brief judge").value
            else:
                match = re.search(r"\{.*\}", str(self.model(messages)), flags=re.S)
                if match is None:
                    return None, "no JSON object in the judge's reply"
                value = model_type.model_validate(json.loads(match.group(0)))
        except (ValueError, ValidationError) as exc:
            return None, str(exc)[:200]
        except Exception as exc:  # noqa: BLE001 - a backend failure must not lose the grounding metrics
            return None, f"judge failed: {exc}"[:200]
        return UsefulnessRating.model_validate(value.model_dump()), ""


def usefulness(
    briefs: Sequence[AnyBrief], personas: Sequence[Persona], judge: BriefJudge
) -> tuple[dict[str, float | None], list[dict[str, Any]]]:
    """The judge's mean rating of each brief for its own audience, and (where the run has another
    persona) for the persona least like it (fewest shared keywords) as a control."""
    by_id = {p.persona_id: p for p in personas}
    records: list[dict[str, Any]] = []
    for brief in briefs:
        own_ids = [part.audience.persona_id for part in brief.parts()]
        own = by_id.get(own_ids[0])
        if own is None:
            records.append({"brief_id": brief.brief_id, "audience": own_ids[0], "mismatched": False, "score": None,
                            "reason": "the brief's persona is not in the run"})  # fmt: skip
            continue
        keywords = {k.casefold() for k in own.keywords}
        others = [p for p in personas if p.persona_id not in own_ids]
        audiences: list[tuple[Persona, bool]] = [(own, False)]
        if others:
            other = min(others, key=lambda o: (len(keywords & {k.casefold() for k in o.keywords}), o.segment_id))
            audiences.append((other, True))
        for audience, mismatched in audiences:
            rating, why = judge.rate(brief, audience)
            records.append(
                {"brief_id": brief.brief_id, "audience": audience.persona_id, "mismatched": mismatched,
                 "score": rating.score if rating else None, "reason": rating.reason if rating else why}
            )  # fmt: skip

    def mean(mismatched: bool) -> float | None:
        scores = [r["score"] for r in records if r["mismatched"] is mismatched and r["score"] is not None]
        return float(np.mean(scores)) if scores else None

    return {
        "brief_usefulness": mean(False),
        "brief_usefulness_mismatched": mean(True),
        "brief_judge_errors": float(sum(r["score"] is None for r in records)),
    }, records

