"""The prompt of one brief (or one messaging row) and its response model.

The prompt reuses the persona writer's machinery (`persona_llm.personas.prompting`): the same text
selection within a token budget measured with the served model's tokenizer, the same short text ids
("t3") and numbered quotable sentences ("[t3.2]"), the same language choice. What it adds is the
audience block (the persona as the persona writer kept it, after its gates), the goal and the channel.

The response model is the agent's output_schema (a `BriefDraft` subclass) with, per prompt:
- the `text_ids` of every cited claim turned into an enum of the texts shown (reference mode), so a
  backend with schema decoding can only cite a text of this segment;
- `quote_ids`, an enum of the numbered sentences (reference mode: a quote is a real sentence by
  construction), or `quotes` copied as text for backends without schema decoding (gated all the same).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from typing import Any, Literal, get_args, get_origin

import pandas as pd
from pydantic import BaseModel, Field, create_model

from persona_llm.errors import ConfigError
from persona_llm.personas.prompting import (
    AgentPrompt,
    RenderedPrompt,
    TokenCounter,
    attribute_lines,
    output_language,
    select_texts,
)
from persona_llm.personas.quoting import QuoteMode, QuoteUnit, mark_units, number_units, quote_ids_field
from persona_llm.schema.briefs import BriefDraft, CitedClaim
from persona_llm.schema.personas import DraftQuote, Persona
from persona_llm.schema.segments import Segment


def _render(
    agent: AgentPrompt,
    *,
    persona: Persona,
    segment: Segment,
    goal: str,
    channel: str | None,
    n_segments: int,
    language_name: str,
    texts: Sequence[Any],
    units: Sequence[QuoteUnit],
    quote_mode: QuoteMode,
    schema_json: str,
) -> list[dict[str, str]]:
    system = agent.templates.system.render(
        role=agent.role, output_language=language_name, quote_mode=quote_mode, schema_json=schema_json
    )
    by_text: dict[str, list[QuoteUnit]] = {}
    for u in units:
        by_text.setdefault(u.text_id, []).append(u)
    languages = ", ".join(f"{k} {v * 100:.0f}%" for k, v in sorted(segment.languages.items(), key=lambda kv: -kv[1]))
    user = agent.templates.user.render(
        goal=goal,
        channel=channel or "",
        persona=persona,
        segment=segment,
        n_segments=n_segments,
        languages=languages,
        keywords=", ".join(k.term for k in segment.keywords[:12]),
        attribute_lines=attribute_lines(segment),
        texts=[{"id": t.ref, "text": mark_units(t.text, by_text.get(t.text_id, [])) if units else t.text} for t in texts],
        output_language=language_name,
        quote_mode=quote_mode,
    )
    return [{"role": "system", "content": system.strip()}, {"role": "user", "content": user.strip()}]


def build_brief_prompt(
    agent: AgentPrompt,
    *,
    persona: Persona,
    segment: Segment,
    segment_texts: pd.DataFrame,
    count_tokens: TokenCounter,
    goal: str,
    channel: str | None,
    n_segments: int,
    language: str = "auto",
    max_context: int = 4096,
    completion_tokens: int = 1500,
    text_token_budget: int = 1200,
    max_text_tokens: int = 120,
    max_texts: int = 16,
    quote_mode: QuoteMode = "reference",
    response_schema: dict[str, Any] | None = None,
    seed: int = 0,
) -> RenderedPrompt:
    """Render the brief prompt with as many of the segment's texts as fit (representatives first).

    `language` "auto" writes in the persona's language. `response_schema` is shown in the prompt for
    backends that cannot enforce it (None: not shown)."""
    code, name = output_language(segment, persona.language if language == "auto" else language)
    schema_json = json.dumps(response_schema, ensure_ascii=False) if response_schema else ""
    kwargs: dict[str, Any] = {
        "persona": persona, "segment": segment, "goal": goal, "channel": channel, "n_segments": n_segments,
        "language_name": name, "quote_mode": quote_mode, "schema_json": schema_json,
    }  # fmt: skip
    empty = _render(agent, texts=[], units=[], **kwargs)
    fixed = sum(count_tokens(m["content"]) for m in empty) + 64  # + chat-template role markers
    room = max_context - completion_tokens - fixed
    if room < 100:
        raise ConfigError(
            f"the model's context ({max_context} tokens) leaves no room for texts after the instructions "
            f"({fixed}) and the reply ({completion_tokens}); use a larger context or fewer max tokens"
        )
    budget = min(text_token_budget, room)
    if quote_mode == "reference":
        budget = int(budget * 0.85)  # room for the "[t3.2] " sentence markers added after selection
    texts = select_texts(
        segment, segment_texts, count_tokens, budget_tokens=budget, max_text_tokens=max_text_tokens,
        max_texts=max_texts, seed=seed,
    )  # fmt: skip
    units = number_units(texts) if quote_mode == "reference" else []
    messages = _render(agent, texts=texts, units=units, **kwargs)
    inputs_sha = hashlib.sha256(json.dumps(messages, ensure_ascii=False, sort_keys=True).encode("utf-8")).hexdigest()
    return RenderedPrompt(
        messages=messages,
        prompt_version=agent.templates.version,
        template_sha256=agent.templates.sha256,
        inputs_sha256=inputs_sha,
        texts=texts,
        language_code=code,
        language_name=name,
        fixed_tokens=fixed,
        text_tokens=sum(count_tokens(f"[{t.ref}] {t.text}") + 1 for t in texts),
        quote_mode=quote_mode,
        units=units,
    )


def _with_enum_ids(annotation: Any, claim_model: type[CitedClaim]) -> Any:
    """`annotation` (CitedClaim or list[CitedClaim]) with the claim model swapped for `claim_model`."""
    if get_origin(annotation) is list and get_args(annotation) and issubclass(get_args(annotation)[0], CitedClaim):
        return list[claim_model]  # type: ignore[valid-type]
    if isinstance(annotation, type) and issubclass(annotation, CitedClaim):
        return claim_model
    raise ConfigError(f"a cited field must be a CitedClaim or a list of them, not {annotation!r}")


def brief_response_model(core: type[BriefDraft], prompt: RenderedPrompt) -> type[BaseModel]:
    """The response model of one prompt: `core` (the agent's output_schema) plus its quote field, with
    the cited claims' text ids an enum of the prompt's texts in reference mode (see the module doc)."""
    fields: dict[str, Any] = {}
    validators: dict[str, Any] = {}
    if prompt.quote_mode == "reference" and prompt.texts:
        base_ids = CitedClaim.model_fields["text_ids"]
        ids: Any = list[Literal[tuple(t.ref for t in prompt.texts)]]  # type: ignore[misc]
        claim = create_model("CitedClaimFromTexts", __base__=CitedClaim, text_ids=(ids, copy.copy(base_ids)))
        for name in core.CITED:
            info = core.model_fields[name]
            fields[name] = (_with_enum_ids(info.annotation, claim), copy.copy(info))
    if prompt.quote_mode == "reference" and prompt.units:
        annotation, field, validators = quote_ids_field(
            [u.ref for u in prompt.units],
            min_quotes=core.MIN_QUOTES,
            max_quotes=core.MAX_QUOTES,
            description=f"ids of numbered sentences shown as [t3.2]: {core.QUOTES_DESCRIPTION}",
        )
        fields["quote_ids"] = (annotation, field)
    else:
        fields["quotes"] = (
            list[DraftQuote],
            Field(min_length=core.MIN_QUOTES, max_length=core.MAX_QUOTES, description=core.QUOTES_DESCRIPTION),
        )
    return create_model(f"{core.__name__}Response", __base__=core, __validators__=validators, **fields)
