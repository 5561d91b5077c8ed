"""The chat prompts (versioned templates in `prompts/chat/vN/`, named by agents/segment_chat.toml), the
tool results as the model reads them, and the JSON schemas its replies are decoded with.

The router step and the answer step share one system prompt (`system.j2`, both tasks) and differ in the
user message (`route_user.j2`, `answer_user.j2`): llama.cpp keeps the KV cache of the longest prefix a
request shares with the last one, so the system prompt and the history are processed once per
conversation, not twice per question (measured on 2 loaded cores: ~12 prompt tokens/s, so a 400-token
prefix is half a minute before the first answer token).

Tool results go into the answer prompt as short lines, not raw JSON: on a 2-core CPU every prompt token
costs time before the first answer token. Customer texts sit inside <data> ... </data>, shown as data
with their id and segment, so a text that reads like an instruction is still only a text.

The schemas are built per turn: the router may only name segments the run has, and the answer may only
cite the ids of texts the tools returned in this turn (an enum), so on a backend that decodes JSON schemas
an invented id cannot be written at all. The checks still run: other backends do not constrain.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from persona_llm.agents.definitions import AgentSpec
from persona_llm.chat.checks import Evidence
from persona_llm.chat.records import (
    AttributeBreakdown,
    AttributeColumn,
    DraftAnswer,
    MentionCounts,
    PersonaResult,
    Route,
    SearchResult,
    SegmentComparison,
    SegmentDetail,
    SegmentList,
    SegmentOverview,
    TextRef,
    ToolResult,
)
from persona_llm.errors import ConfigError

TEMPLATES = ("system.j2", "route_user.j2", "answer_user.j2", "agent.j2", "refusal.j2")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff]")

Message = tuple[str, str]


@dataclass(frozen=True)
class ChatPrompts:
    """The chat agent's templates; `sha256` covers all of them (provenance)."""

    version: str
    templates: dict[str, jinja2.Template]
    sha256: str

    @classmethod
    def load(cls, spec: AgentSpec) -> ChatPrompts:
        folder: Path = spec.prompt_dir()
        missing = [name for name in TEMPLATES if not (folder / name).is_file()]
        if missing:
            raise ConfigError(f"{folder}: the chat prompt needs {', '.join(missing)}")
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(folder)),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=False,
            autoescape=False,  # plain-text prompts
        )
        digest = hashlib.sha256()
        for name in TEMPLATES:
            digest.update((folder / name).read_bytes())
        return cls(spec.prompt, {name: env.get_template(name) for name in TEMPLATES}, digest.hexdigest())

    def render(self, name: str, **values: Any) -> str:
        return self.templates[name].render(**values).strip()

    def system(self, segment_ids: Sequence[int], columns: Sequence[str]) -> str:
        ids = list(segment_ids) or [0]
        return self.render(
            "system.j2",
            n_segments=len(segment_ids),
            segment_ids=ids,
            columns=list(columns),
            a=ids[0],
            b=ids[-1] if len(ids) > 1 else ids[0],
        )

    def refusal(self, question: str) -> str:
        return self.render("refusal.j2", chinese=bool(_CJK.search(question)))


# -- tool results as lines ----------------------------------------------------------------------------


def _pct(share: float) -> str:
    return f"{share * 100:.1f}%"


def _overview_line(o: SegmentOverview) -> str:
    persona = f'; persona: "{o.persona_name}"' if o.persona_name else ""
    return (
        f"Segment {o.segment_id}: {o.size} users ({_pct(o.share)} of users), {o.n_texts} texts; "
        f"keywords: {', '.join(o.keywords[:8])}{persona}"
    )


def _attribute_lines(columns: Sequence[AttributeColumn], segment_id: int) -> list[str]:
    lines = []
    for col in columns:
        if col.kind == "categorical":
            values = ", ".join(f"{v.value} {_pct(v.share)} (all users: {_pct(v.overall_share)})" for v in col.values[:5])
            lines.append(f"Segment {segment_id} {col.column}: {values}")
        elif col.mean is not None:
            lines.append(
                f"Segment {segment_id} {col.column}: mean {col.mean:.1f}, median {col.median:.1f} (all users: mean {col.overall_mean:.1f})"
            )
    return lines


def _text_lines(texts: Sequence[TextRef]) -> list[str]:
    if not texts:
        return []
    body = [f"[{t.text_id}] (segment {t.segment_id}) {' '.join(t.text.split())}" for t in texts]
    return ["<data>", *body, "</data>"]


def render_result(result: ToolResult) -> list[str]:
    """One tool result as prompt lines."""
    if isinstance(result, SegmentList):
        head = (
            f"The run: {result.n_users} users segmented, {result.n_assigned} in {len(result.segments)} segments "
            f"({_pct(result.coverage)}). Segments, largest first:"
        )
        return [head, *(_overview_line(o) for o in result.segments)]
    if isinstance(result, SegmentDetail):
        o = result.overview
        langs = ", ".join(f"{k} {_pct(v)}" for k, v in sorted(result.languages.items(), key=lambda kv: -kv[1])[:3])
        lines = [_overview_line(o)]
        if langs:
            lines.append(f"Segment {o.segment_id} languages: {langs}")
        # Attribute shares are left out here: a 1.5B model answered "what share of users is in segment
        # 3" with an attribute's share; attribute questions route to attribute_breakdown.
        lines.append(f"Texts near the centre of segment {o.segment_id}:")
        return lines + _text_lines(result.representatives)
    if isinstance(result, PersonaResult):
        lines = [_overview_line(result.overview)]
        p = result.persona
        if p is None:
            return lines + [f"No persona was written for segment {result.segment_id}."]
        lines += [
            f'Persona of segment {result.segment_id}: "{p.name}", {p.tagline}',
            f"Summary: {p.summary}",
            f"Interests: {'; '.join(p.interests)}",
            f"Goals: {'; '.join(p.goals)}",
            f"Pain points: {'; '.join(p.pain_points)}",
            f"Confidence: {p.confidence}",
        ]
        if p.quotes:
            lines.append("The persona's quotes, with the text each is from:")
        return lines + _text_lines(p.quotes)
    if isinstance(result, SearchResult):
        where = f"segment {result.segment_id}" if result.segment_id is not None else "all segments"
        head = f'Texts nearest in meaning to "{result.query}" ({where}):'
        return [head, *(_text_lines(result.hits) or ["(none)"])]
    if isinstance(result, SegmentComparison):
        lines = [_overview_line(result.a), _overview_line(result.b)]
        lines.append(f"Keywords of both: {', '.join(result.shared_keywords) or 'none'}")
        lines.append(f"Only segment {result.a.segment_id}: {', '.join(result.only_a) or 'none'}")
        lines.append(f"Only segment {result.b.segment_id}: {', '.join(result.only_b) or 'none'}")
        lines += _attribute_lines(result.attributes_a, result.a.segment_id)
        return lines + _attribute_lines(result.attributes_b, result.b.segment_id)
    if isinstance(result, AttributeBreakdown):
        return _attribute_lines(result.columns, result.segment_id) or [f"Segment {result.segment_id} has no attribute columns."]
    if isinstance(result, MentionCounts):
        counts = "; ".join(
            f"segment {m.segment_id}: {m.texts_mentioning} of {m.n_texts} texts ({_pct(m.share_of_texts)})" for m in result.segments
        )
        lines = [f'Texts that mention "{result.term}", most first: {counts}']
        if result.examples:
            lines.append("Some of them:")
        return lines + _text_lines(result.examples)
    return [result.model_dump_json(exclude_none=True)]


def render_evidence(evidence: Evidence) -> str:
    lines: list[str] = []
    for result in evidence.results:
        lines += render_result(result)
    lines += [f"Lookup failed: {e}" for e in evidence.errors]
    return "\n".join(lines) or "(no tool results)"


# -- schemas the replies are decoded with -------------------------------------------------------------


def _all_required(schema: dict[str, Any]) -> dict[str, Any]:
    """Every property required: grammar-based decoders may otherwise skip a field, and the order of
    `properties` is the order the model writes them (the answer first, so it streams first)."""
    schema["required"] = list(schema.get("properties", {}))
    for sub in schema.get("$defs", {}).values():
        _all_required(sub)
    return schema


def route_schema(segment_ids: Sequence[int]) -> dict[str, Any]:
    schema = _all_required(copy.deepcopy(Route.model_json_schema()))
    items: dict[str, Any] = {"type": "integer"}
    if segment_ids:
        items["enum"] = sorted(int(i) for i in segment_ids)
    schema["properties"]["segment_ids"]["items"] = items
    return schema


def answer_schema(
    citable: Sequence[str], segment_ids: Sequence[int], *, with_out_of_scope: bool, min_quotes: int = 0
) -> dict[str, Any]:
    """DraftAnswer's schema with citations and quote ids limited to `citable`, and at least `min_quotes`
    quotes. Without `with_out_of_scope` (the router strategy) the answer step cannot refuse: only the
    router, which reads the question and never the texts, decides what is out of scope."""
    schema = copy.deepcopy(DraftAnswer.model_json_schema())
    if not with_out_of_scope:
        schema["properties"].pop("out_of_scope", None)
    quote = schema["$defs"]["DraftQuote"]
    if citable:
        ids = sorted(set(citable))
        schema["properties"]["citations"]["items"] = {"type": "string", "enum": ids}
        quote["properties"]["text_id"] = {"type": "string", "enum": ids}
        if min_quotes:
            schema["properties"]["quotes"]["minItems"] = min_quotes
    else:
        schema["properties"]["citations"]["maxItems"] = 0
        schema["properties"]["quotes"]["maxItems"] = 0
    if segment_ids:
        quote["properties"]["segment_id"] = {"type": "integer", "enum": sorted(int(i) for i in segment_ids)}
    return _all_required(schema)


def response_format(name: str, schema: dict[str, Any], mode: str) -> dict[str, Any] | None:
    """The OpenAI `response_format` for a structured mode ("json_schema", "json_object", "prompt")."""
    if mode == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}
    if mode == "json_object":
        return {"type": "json_object"}
    return None
