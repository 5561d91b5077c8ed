"""Persona models: what the LLM is asked to fill (`PersonaDraft`) and what we store (`Persona`).

Two models on purpose (as in instructor): the *draft* is the response schema sent to the model, so it
holds only what the model can know from the prompt, and every list and string is bounded
(`maxItems`/`maxLength`) because a JSON schema alone does not stop a small model from rambling until the
token limit. The stored `Persona` adds what we know better than the model: ids, share and counts,
verified quotes (with their user), and provenance including every gate decision.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from persona_llm.schema.sentences import split_sentences

PERSONA_SCHEMA_VERSION = "3"  # 2: confidence computed from evidence; statement support in provenance; 3: version

# Bounds shared by the draft and the stored persona: the stored one must accept every valid draft.
MIN_QUOTES = 3
MAX_QUOTES = 5
QUOTE_MAX_CHARS = 300
#: Longest quote the model may propose. Without a tighter bound than stored quotes have, the 1.5B model
#: copied whole texts up to the limit and drifted from the source on the way.
DRAFT_QUOTE_MAX_CHARS = 200
NAME_MAX_CHARS = 60

Short = Annotated[str, StringConstraints(min_length=1, max_length=80, strip_whitespace=True)]
Sentence = Annotated[str, StringConstraints(min_length=1, max_length=160, strip_whitespace=True)]

Confidence = Literal["low", "medium", "high"]
EstimateConfidence = Literal["unknown", "low", "medium", "high"]
Sentiment = Literal["positive", "mixed", "neutral", "negative"]


class _Strict(BaseModel):
    # additionalProperties: false in the schema, so constrained decoding cannot add stray keys.
    model_config = ConfigDict(extra="forbid")


class DemographicEstimate(_Strict):
    """An estimate, never a fact: a value with the evidence that supports it and how sure we are.

    `source` says where the support comes from: "attribute" (an attribute column summary in the prompt),
    "texts" (what members wrote, cited by text id) or "none" (then value must be "unknown").
    """

    value: str = Field(max_length=60, description='the estimate, or "unknown" if the data does not say')
    confidence: EstimateConfidence = Field(description='"unknown" when value is "unknown"')
    source: Literal["attribute", "texts", "none"]
    evidence: str = Field(default="", max_length=200, description="why: the attribute share or what the texts say")
    text_ids: list[str] = Field(default_factory=list, max_length=3, description="ids of supporting texts")

    @model_validator(mode="after")
    def _unknown_is_consistent(self) -> DemographicEstimate:
        is_unknown = self.value.strip().lower() in {"", "unknown", "未知"}
        if is_unknown or self.source == "none":
            # An unsupported guess is turned into an honest "unknown" rather than rejected: re-asking a
            # small model for evidence it does not have only invites invention.
            self.value, self.confidence, self.source = "unknown", "unknown", "none"
            self.text_ids = []
        elif self.confidence == "unknown":
            self.confidence = "low"
        return self

    @classmethod
    def unknown(cls, evidence: str = "") -> DemographicEstimate:
        return cls(value="unknown", confidence="unknown", source="none", evidence=evidence)


class Demographics(_Strict):
    age_group: DemographicEstimate
    gender: DemographicEstimate
    location: DemographicEstimate
    occupation: DemographicEstimate


class Recommendations(_Strict):
    messages: list[Sentence] = Field(min_length=1, max_length=3, description="messages that would land")
    offers: list[Sentence] = Field(default_factory=list, max_length=3)
    channels: list[Short] = Field(default_factory=list, max_length=3, description="where to reach them")


#: What "3-4 sentences" is held to: a two-word summary ("Tech Enthusiast") is not a narrative.
SUMMARY_MIN_SENTENCES, SUMMARY_MAX_SENTENCES = 2, 6  # 6: abbreviations ("U.S.") split
SUMMARY_MIN_WORDS, SUMMARY_MIN_CJK_CHARS = 25, 50


def summary_length_problem(summary: str) -> str:
    """Why `summary` is not the 3-4 sentence narrative asked for ("" when it is; 2-5 sentences allowed)."""
    text = summary.strip()
    sentences = split_sentences(text)
    cjk = sum(1 for ch in text if "\u3040" <= ch <= "\u9fff")
    if cjk >= len(text) / 3:
        if cjk < SUMMARY_MIN_CJK_CHARS:
            return f"summary has {cjk} characters; write 3-4 sentences (at least {SUMMARY_MIN_CJK_CHARS} characters)"
    elif len(text.split()) < SUMMARY_MIN_WORDS:
        return f"summary has {len(text.split())} words; write 3-4 sentences (at least {SUMMARY_MIN_WORDS} words)"
    if not SUMMARY_MIN_SENTENCES <= len(sentences) <= SUMMARY_MAX_SENTENCES:
        return f"summary has {len(sentences)} sentence(s); write 3-4 sentences"
    return ""


#: The business's voice ("Our team of experienced technicians specializes in..."): a persona describes
#: customers; written as "we" / "our" / "us" it reads as an advertisement, or speaks for a group the
#: texts never said they were. ("US", the country, is upper case and not matched.)
_BUSINESS_VOICE = re.compile(r"\b(?:[Ww]e|[Oo]urs?|us)\b")  # "we're": the apostrophe ends "we"


def voice_problem(text: str, field: str) -> str:
    """Why `text` (a persona's `field`) is not written about the customers in the third person ("" if it is)."""
    found = _BUSINESS_VOICE.search(text)
    if found is None:
        return ""
    return (
        f"{field} says {found.group(0)!r}: describe the customers in the third person (they, their), "
        "not as a business or an advertisement"
    )


class DraftQuote(_Strict):
    text_id: str = Field(max_length=64, description="the id shown with the text, e.g. t123")
    text: str = Field(min_length=1, max_length=DRAFT_QUOTE_MAX_CHARS, description="copied exactly from that text, no edits")


class DraftCore(_Strict):
    """What the LLM writes for one segment apart from its quotes (field order = generation order).

    Two response models extend it: `PersonaDraft` (quotes copied as text, then gated) and, per prompt,
    `persona_llm.personas.quoting.reference_draft_model` (quotes chosen by sentence id)."""

    name: str = Field(min_length=1, max_length=NAME_MAX_CHARS, description="a memorable persona name")
    tagline: str = Field(min_length=1, max_length=140, description="one line")
    summary: str = Field(min_length=60, max_length=700, description="3-4 sentence narrative")
    demographics: Demographics
    interests: list[Short] = Field(min_length=1, max_length=6)
    goals: list[Sentence] = Field(min_length=1, max_length=4)
    pain_points: list[Sentence] = Field(min_length=1, max_length=4)
    motivations: list[Sentence] = Field(default_factory=list, max_length=3)
    purchase_triggers: list[Sentence] = Field(default_factory=list, max_length=3)
    objections: list[Sentence] = Field(default_factory=list, max_length=3)
    preferred_channels: list[Short] = Field(default_factory=list, max_length=4)
    tone_of_voice: str = Field(max_length=160, description="how to talk to them")
    sentiment: Sentiment
    # Not generated: the segment's own keywords (c-TF-IDF) are what the pipeline already knows; asking the
    # model to restate them cost tokens on every persona. A reply that sends them anyway is not refused.
    keywords: SkipJsonSchema[list[str] | None] = None
    recommendations: Recommendations
    # Not asked for (not in the schema the model sees): confidence is computed from evidence
    # (persona_llm.personas.support.evidence_confidence). A model that sends one anyway is not refused;
    # its value is kept in provenance.model_confidence for comparison.
    confidence: SkipJsonSchema[Confidence | None] = None

    @field_validator("summary")
    @classmethod
    def _summary_is_a_narrative(cls, value: str) -> str:
        problem = summary_length_problem(value) or voice_problem(value, "summary")
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("tagline")
    @classmethod
    def _tagline_describes_customers(cls, value: str) -> str:
        problem = voice_problem(value, "tagline")
        if problem:
            raise ValueError(problem)
        return value


class CompactEstimate(DemographicEstimate):
    evidence: str = Field(default="", max_length=80, description="why, in a few words")
    text_ids: list[str] = Field(default_factory=list, max_length=2, description="ids of supporting texts")


class CompactDemographics(Demographics):
    age_group: CompactEstimate
    gender: CompactEstimate
    location: CompactEstimate
    occupation: CompactEstimate


class CompactRecommendations(Recommendations):
    messages: list[Sentence] = Field(min_length=1, max_length=2, description="messages that would land")
    offers: list[Sentence] = Field(default_factory=list, max_length=2)
    channels: list[Short] = Field(default_factory=list, max_length=2, description="where to reach them")


class CompactDraftCore(DraftCore):
    """DraftCore with shorter bounds on the fields that cost the most tokens (measured: demographics and
    recommendations, ~140 completion tokens each of ~600): estimates' evidence 80 characters and 2 text
    ids, 2 messages, offers and channels. Used by agents/persona_writer_compact.toml; what it does to
    time and quality is in bench/results (bench_personas.py --variants new,compact)."""

    demographics: CompactDemographics
    recommendations: CompactRecommendations


DemographicField = Literal["age_group", "gender", "location", "occupation"]


class DemographicHint(_Strict):
    """One thing the texts themselves say about who the customers are, with the texts that say it."""

    field: DemographicField
    value: str = Field(min_length=1, max_length=60, description="the age, gender, place or job as the texts state it")
    text_ids: list[str] = Field(min_length=1, max_length=2, description="ids of the texts that say it")


class HintsDraftCore(DraftCore):
    """DraftCore without the four estimate objects: the model lists only what the texts say
    (`demographic_hints`, usually none), and the pipeline builds the estimates (writer: hints become
    text-sourced estimates for the gate; attribute columns with a majority are turned into estimates by
    code, `gates.attribute_estimate`). Why: on segments whose texts say nothing about age or gender the
    model still spent ~130 completion tokens per persona writing four "unknown" objects (measured in
    bench_personas), and an attribute share is something the pipeline computes exactly. Used by
    agents/persona_writer_hints.toml."""

    # Not generated (not in the schema the model sees); filled from demographic_hints by the writer.
    demographics: SkipJsonSchema[Demographics | None] = None  # type: ignore[assignment]
    demographic_hints: list[DemographicHint] = Field(
        default_factory=list,
        max_length=4,
        description="only what the texts say about age, gender, location or occupation; [] when they do not",
    )


class PersonaDraft(DraftCore):
    """The response model with quotes copied as text (`quote_mode="verbatim"`), and the form every draft
    takes before the gates (quotes chosen by id are copied into it)."""

    quotes: list[DraftQuote] = Field(min_length=MIN_QUOTES, max_length=MAX_QUOTES)


class Quote(_Strict):
    """A verified quote: verbatim (after whitespace normalisation) in source text `text_id`."""

    text_id: str
    user_id: str
    text: str = Field(max_length=QUOTE_MAX_CHARS)


# cuts_word / drops_negation: the words occur in the text, but only as part of a word (CJK: of a clause) or
# right after a negation the quote leaves out (persona_llm.common.textmatch). over_limit: a valid quote
# beyond the persona's quote limit.
RemovalReason = Literal[
    "not_verbatim",
    "cuts_word",
    "drops_negation",
    "wrong_text_id",
    "not_in_segment",
    "duplicate",
    "too_short",
    "over_limit",
]


class QuoteRemoval(_Strict):
    text_id: str
    text: str
    reason: RemovalReason
    attempt: int = Field(description="1-based generation attempt that produced the quote")


class EstimateRemoval(_Strict):
    field: str
    value: str
    reason: str


class DistinctnessCheck(_Strict):
    other_persona_id: str
    similarity: float
    threshold: float
    regenerated: bool


class StatementCheck(_Strict):
    """One statement of a persona checked against its segment's texts (persona_llm.personas.support)."""

    field: str
    text: str
    supported: bool
    similarity: float = Field(
        description="mean cosine to the segment's nearest 20% of texts (at least 3), rescaled above chance"
    )
    best_segment_similarity: float = Field(description="the same for the run's best-fitting segment")
    text_ids: list[str] = Field(default_factory=list, description="the segment's nearest texts")
    reason: str = Field(
        default="", description="why it is unsupported when a rule other than similarity decided (an accusation)"
    )


class Provenance(_Strict):
    run_id: str
    data_sha256: str = Field(description="input_sha256 of the run manifest")
    segment_sha256: str = Field(description="hash of the prompt inputs; the cache key's data part")
    backend: str
    model: str
    prompt_version: str
    prompt_sha256: str
    # Defaulted: personas written before it was recorded were all written by the default agent.
    agent: str = Field(default="persona_writer", description="the agent definition that wrote it: a name in agents/ or a .toml path")
    quote_mode: str = Field(default="verbatim", description="reference: quotes chosen by sentence id; verbatim: copied as text")
    schema_version: str = PERSONA_SCHEMA_VERSION
    language: str
    generated_at: str = Field(description="ISO 8601 UTC")
    attempts: int = Field(description="generation calls made, including re-asks")
    from_cache: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    quotes_proposed: int = Field(default=0, description="quotes the model proposed across all attempts")
    quotes_removed: list[QuoteRemoval] = Field(default_factory=list)
    estimates_removed: list[EstimateRemoval] = Field(default_factory=list)
    distinctness: list[DistinctnessCheck] = Field(default_factory=list)
    statements: list[StatementCheck] = Field(
        default_factory=list, description="every statement the persona makes, checked against its texts"
    )
    statements_removed: list[StatementCheck] = Field(
        default_factory=list, description="unsupported list items taken out of the persona"
    )
    support_share: float | None = Field(
        default=None, description="share of the statements the model wrote that its segment's texts support"
    )
    confidence_basis: str = Field(default="", description="the evidence the confidence was computed from")
    model_confidence: str | None = Field(default=None, description="what the model said, if it said anything")
    warnings: list[str] = Field(default_factory=list)


class Persona(_Strict):
    """A stored persona (`personas.json` is a list of these)."""

    persona_id: str = Field(
        description="stable: minted from the data hash and the segment's members when the segment first appears, "
        "then kept by every refresh while the segment lives (persona_llm.refresh)"
    )
    # Defaulted, so personas written before versions existed (schema 2) still load, as version 1.
    version: int = Field(default=1, ge=1, description="1, then +1 each time a refresh regenerates this persona")
    segment_id: int
    run_id: str
    language: str
    user_count: int
    share: float = Field(description="share of segmented users")
    n_texts: int
    name: str = Field(max_length=NAME_MAX_CHARS)
    tagline: str = Field(max_length=140)
    summary: str = Field(max_length=700)
    demographics: Demographics
    interests: list[str] = Field(max_length=6)
    goals: list[str] = Field(max_length=4)
    pain_points: list[str] = Field(max_length=4)
    motivations: list[str] = Field(max_length=3)
    purchase_triggers: list[str] = Field(max_length=3)
    objections: list[str] = Field(max_length=3)
    preferred_channels: list[str] = Field(max_length=4)
    tone_of_voice: str = Field(max_length=160)
    sentiment: Sentiment
    keywords: list[str] = Field(max_length=8, description="the segment's top keywords (from the pipeline, not the model)")
    quotes: list[Quote] = Field(max_length=MAX_QUOTES, description="only quotes that passed the gate")
    recommendations: Recommendations
    confidence: Confidence = Field(description="computed from evidence (support share, quotes, cohesion), not the model's word")
    provenance: Provenance

    @classmethod
    def from_draft(
        cls,
        draft: PersonaDraft,
        *,
        persona_id: str,
        segment_id: int,
        run_id: str,
        language: str,
        version: int = 1,
        user_count: int,
        share: float,
        n_texts: int,
        quotes: list[Quote],
        provenance: Provenance,
        confidence: Confidence,
        keywords: list[str],
    ) -> Persona:
        fields = draft.model_dump(exclude={"quotes", "confidence", "keywords"})
        return cls(
            persona_id=persona_id,
            version=version,
            segment_id=segment_id,
            run_id=run_id,
            language=language,
            user_count=user_count,
            share=share,
            n_texts=n_texts,
            quotes=quotes,
            provenance=provenance,
            confidence=confidence,
            keywords=keywords[:8],
            **fields,
        )

    def embedding_text(self) -> str:
        """What the distinctness gate and the store embed: the persona's substance, not its name."""
        parts = [
            self.tagline,
            self.summary,
            "; ".join(self.interests),
            "; ".join(self.goals),
            "; ".join(self.pain_points),
            "; ".join(self.keywords),
        ]
        return "\n".join(p for p in parts if p)


def draft_json_schema() -> dict[str, Any]:
    """The JSON schema sent as `response_format` (and shown to models without schema decoding)."""
    return PersonaDraft.model_json_schema()


def persona_list_schema() -> dict[str, Any]:
    schema = TypeAdapter(list[Persona]).json_schema()
    schema["title"] = "personas.json"
    schema["$comment"] = f"persona-llm persona schema version {PERSONA_SCHEMA_VERSION}"
    return schema


def export_json_schema(path: str | Path) -> Path:
    """Write the JSON Schema of `personas.json` (a list of Persona) to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(persona_list_schema(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


#: The one parser of a personas.json list (RunDir reads runs with it).
PERSONA_LIST: TypeAdapter[list[Persona]] = TypeAdapter(list[Persona])


def load_personas(path: str | Path) -> list[Persona]:
    return PERSONA_LIST.validate_json(Path(path).read_bytes())
