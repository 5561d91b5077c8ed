"""Narrative support as the eval measures it: a lexical check, independent of the writer's gate.

The writer drops statements its embedding test (persona_llm.personas.support) finds unsupported, so
re-running that test here would score 100% by construction. This module reads words instead: a
statement is **lexically supported** by its segment when one of its content words (lower-cased, 3+
letters, not a stop word, compared by its first 5 letters so "programmer"/"programming" meet; Chinese and
Japanese by character bigrams) occurs in at least `min_share` (5%) of the segment's texts, and at least
`min_texts` (2), **and** in a larger share of the segment's texts than of the rest of the run's texts.
The 5%: in a large generic segment nearly any word occurs in two texts (the ci blog run's 552-text
daily-life segment "supported" 14 of 17 "Tech Enthusiast" statements at 2 texts, 1 of 17 at 5%, while
20NG's and the Chinese reviews' personas kept 13-17 of 13-17). It misses paraphrase ("computers" vs
"PC"), so it reads lower than the truth for good personas; what it catches is a persona whose words
appear nowhere in its segment, or are more typical of another segment: the "Tech Enthusiast" named for
a segment about packing and phone calls.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pandas as pd

from persona_llm.common.terms import content_terms
from persona_llm.schema.personas import Persona
from persona_llm.schema.sentences import split_sentences

#: Fields read statement by statement (the summary sentence by sentence).
FIELDS: tuple[str, ...] = ("name", "tagline", "summary", "interests", "goals", "pain_points")
def statements(persona: Persona) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for field in FIELDS:
        value = getattr(persona, field)
        if field == "summary":
            out.extend((field, s) for s in split_sentences(value))
        elif isinstance(value, str):
            out.append((field, value))
        else:
            out.extend((field, v) for v in value)
    return [(f, s) for f, s in out if s.strip()]


@dataclass
class LexicalSupport:
    """Document frequencies of content terms per segment and in the whole run."""

    segment_df: dict[int, dict[str, int]]
    segment_n: dict[int, int]
    total_df: dict[str, int]
    total_n: int
    min_texts: int = 2
    min_share: float = 0.05

    @classmethod
    def from_texts(cls, texts: pd.DataFrame, *, min_texts: int = 2, min_share: float = 0.05) -> LexicalSupport:
        """From a frame with `segment_id` and `text` (noise texts count in the run, not in a segment)."""
        segment_df: dict[int, dict[str, int]] = {}
        segment_n: dict[int, int] = {}
        total_df: dict[str, int] = {}
        for sid, text in zip(texts["segment_id"].fillna(-1).astype(int), texts["text"].astype(str), strict=True):
            terms = content_terms(text)
            for t in terms:
                total_df[t] = total_df.get(t, 0) + 1
            if sid >= 0:
                seg = segment_df.setdefault(int(sid), {})
                segment_n[int(sid)] = segment_n.get(int(sid), 0) + 1
                for t in terms:
                    seg[t] = seg.get(t, 0) + 1
        return cls(segment_df, segment_n, total_df, len(texts), min_texts, min_share)

    def supports(self, segment_id: int, statement: str) -> bool:
        seg = self.segment_df.get(segment_id, {})
        n_seg = self.segment_n.get(segment_id, 0)
        n_rest = self.total_n - n_seg
        needed = max(self.min_texts, math.ceil(self.min_share * n_seg))
        for term in content_terms(statement):
            in_seg = seg.get(term, 0)
            if in_seg < needed:
                continue
            in_rest = self.total_df.get(term, 0) - in_seg
            if n_rest == 0 or in_seg / n_seg >= in_rest / n_rest:
                return True
        return False

    def check(self, personas: Iterable[Persona]) -> list[dict[str, object]]:
        return [
            {"persona_id": p.persona_id, "field": f, "statement": s, "supported": self.supports(p.segment_id, s)}
            for p in personas
            for f, s in statements(p)
        ]


def narrative_metrics(rows: Sequence[dict[str, object]], personas: Sequence[Persona]) -> dict[str, float | None]:
    """statement_support_lexical: share of all checked statements lexically supported;
    statement_support_lexical_min: the lowest persona's share; persona_low_confidence_share: personas
    the writer marked low confidence (from evidence); statement_support_writer: mean share the writer's
    own gate recorded (what the model wrote, before unsupported items were dropped; not a check)."""
    by_persona: dict[str, list[bool]] = {}
    for r in rows:
        by_persona.setdefault(str(r["persona_id"]), []).append(bool(r["supported"]))
    shares = [sum(v) / len(v) for v in by_persona.values() if v]
    recorded = [p.provenance.support_share for p in personas if p.provenance.support_share is not None]
    return {
        "statement_support_lexical": sum(bool(r["supported"]) for r in rows) / len(rows) if rows else None,
        "statement_support_lexical_min": min(shares) if shares else None,
        "persona_low_confidence_share": (
            sum(p.confidence == "low" for p in personas) / len(personas) if personas else None
        ),
        "statement_support_writer": sum(recorded) / len(recorded) if recorded else None,
    }
