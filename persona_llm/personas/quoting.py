"""Quote by reference: the prompt shows each text split into numbered sentences or clauses ("[t3.2]"),
the response schema's quote field is an enum of exactly those ids, and the writer copies the sentence.

Why: a small model asked to copy quotes paraphrases, merges and cuts them ("happy with delivery" out
of "unhappy with delivery"); on one blog run 12 of 14 proposed quotes were not verbatim and a persona
took 3 attempts and 10,022 prompt tokens. With constrained decoding (llama.cpp and vLLM turn the JSON
schema into a grammar) the model can only choose an id that exists, writes ~4 tokens instead of 50-200,
and a quote can never be a fragment: every unit starts and ends at a sentence or clause boundary and is
offered only if the grounding gate's own rules accept it in its text (`match_verbatim`: word boundaries,
no negation left out). The gate still runs on the copied sentences, so both modes are checked alike.
Free-text quotes stay available (`quote_mode="verbatim"`) for backends without schema decoding.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, create_model, field_validator

from persona_llm.common.textmatch import match_verbatim, normalize_ws
from persona_llm.schema.personas import DRAFT_QUOTE_MAX_CHARS, MAX_QUOTES, MIN_QUOTES, DraftCore, PersonaDraft
from persona_llm.schema.sentences import UNIT_END, spans

QuoteMode = Literal["reference", "verbatim"]

#: Shortest and longest unit offered: the gate's minimum (15 characters and 3 words; CJK 6 characters)
#: with a margin, and the draft quote limit.
MIN_WORDS, MAX_WORDS, MIN_CJK_CHARS = 4, 40, 8
_CLAUSE_END = re.compile(r"(?<=[,;:])\s+(?=\S)|(?<=[，；：])")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff]")


def _size_ok(unit: str) -> bool:
    cjk = len(_CJK.findall(unit))
    if cjk >= len(unit) / 3:
        return cjk >= MIN_CJK_CHARS and len(unit) <= DRAFT_QUOTE_MAX_CHARS
    words = len(unit.split())
    return MIN_WORDS <= words <= MAX_WORDS and len(unit) <= DRAFT_QUOTE_MAX_CHARS


def quotable_units(text: str, *, truncated: bool = False) -> list[str]:
    """The sentences of `text` (whitespace-normalised) that can be quoted whole; a sentence over 40 words
    is offered as its clauses instead. Each unit is a substring of the text that the grounding gate
    accepts (`match_verbatim`); a unit cut off by prompt truncation (the last one of a truncated text)
    is not offered."""
    norm = normalize_ws(text)
    units: list[str] = []
    sentences = spans(norm, UNIT_END)
    if truncated and sentences:
        sentences = sentences[:-1]
    for a, b in sentences:
        sentence = norm[a:b]
        parts = [sentence] if _size_ok(sentence) else [sentence[c:d] for c, d in spans(sentence, _CLAUSE_END)]
        for unit in parts:
            if not _size_ok(unit):
                continue
            match = match_verbatim(unit, norm)
            if match.span is not None:
                units.append(unit)
    return units


@dataclass(frozen=True)
class QuoteUnit:
    ref: str  # "t3.2": shown to the model and allowed by the schema
    text_id: str  # the real text id
    text: str  # copied verbatim from the text


def number_units(texts: Sequence[Any]) -> list[QuoteUnit]:
    """Units of prompt texts (objects with .ref, .text_id, .text, .truncated), numbered "<ref>.<k>"."""
    out: list[QuoteUnit] = []
    for t in texts:
        for k, unit in enumerate(quotable_units(t.text.removesuffix(" …"), truncated=t.truncated), 1):
            out.append(QuoteUnit(ref=f"{t.ref}.{k}", text_id=t.text_id, text=unit))
    return out


def mark_units(text: str, units: Sequence[QuoteUnit]) -> str:
    """`text` with "[t3.k] " inserted before each of its units (the prompt's view of a text)."""
    out, pos = [], 0
    for u in units:
        at = text.find(u.text, pos)
        if at < 0:
            continue
        out.append(text[pos:at])
        out.append(f"[{u.ref}] ")
        pos = at
    out.append(text[pos:])
    return "".join(out)


def quote_ids_field(
    refs: Sequence[str], *, min_quotes: int, max_quotes: int, description: str
) -> tuple[Any, Any, dict[str, Any]]:
    """(annotation, Field, validators) of a `quote_ids` field: a list of distinct ids from `refs` (an
    enum in the JSON schema), at least min(min_quotes, len(refs)). A repeated id is dropped (the sentence
    is quoted once); too few distinct ids left is a validation error, re-asked like any other. Shared by
    the persona and the brief response models."""
    if not refs:
        raise ValueError("no quotable sentence: use quote_mode='verbatim' for this prompt")
    choice = Literal[tuple(refs)]  # type: ignore[valid-type]
    least = min(min_quotes, len(refs))

    def distinct(cls: type, ids: Any) -> Any:
        # Why drop, not reject: the small model, re-asked, repeated an id three times over and a 25-persona
        # rebuild lost a persona to it (bench/results/2026-11-30-refresh.md); a repeat says nothing false.
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return ids  # the schema's own errors
        once = list(dict.fromkeys(ids))
        if len(once) < len(ids) and len(once) < least:
            raise ValueError(f"quote_ids repeat an id: give {least} different ids; choose different sentences")
        return once

    field = Field(min_length=least, max_length=max_quotes, description=description)
    validators: dict[str, Any] = {
        "_distinct": field_validator("quote_ids", mode="before")(classmethod(distinct))
    }
    return list[choice], field, validators  # type: ignore[valid-type]


def reference_draft_model(refs: Sequence[str], base: type[DraftCore] = DraftCore) -> type[DraftCore]:
    """The response model of one prompt: `base` (the agent's output_schema) with `quote_ids`, an enum of
    exactly `refs`: at least min(MIN_QUOTES, len(refs)) and at most MAX_QUOTES distinct ids."""
    annotation, field, validators = quote_ids_field(
        refs,
        min_quotes=MIN_QUOTES,
        max_quotes=MAX_QUOTES,
        description="ids of whole sentences shown as [t3.2] that best show who these customers are; "
        "from different texts where possible",
    )
    model = create_model(
        "PersonaDraftByReference",
        __base__=base,
        __validators__=validators,  # type: ignore[arg-type]
        quote_ids=(annotation, field),
    )
    return model


def verbatim_draft_model(base: type[DraftCore] = DraftCore) -> type[DraftCore]:
    """The response model with quotes copied as text: PersonaDraft itself for the default `base`, else
    `base` (a subclass of DraftCore named by the agent's output_schema) with PersonaDraft's quotes field."""
    if base is DraftCore or issubclass(base, PersonaDraft):
        return PersonaDraft if base is DraftCore else base
    quotes = PersonaDraft.model_fields["quotes"]
    annotation: Any = quotes.annotation
    return create_model(f"{base.__name__}WithQuotes", __base__=base, quotes=(annotation, copy.copy(quotes)))
